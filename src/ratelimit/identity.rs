//! Who a request comes from: the key its buckets are found under.
//!
//! The peer address by default; the client named in `X-Forwarded-For` (or `Forwarded`, RFC
//! 7239, when the proxies write that) when the peer is a trusted proxy; the value of an
//! API-key header when one is configured and present.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::HttpRequest;

use crate::http::cidr::mask;
pub use crate::http::cidr::Cidr;
use crate::http::forwarded;

/// Longest `X-Forwarded-For` chain walked; a longer one is cut at this many hops from the right.
const MAX_FORWARDED_HOPS: usize = 32;

/// The header trusted proxies name the client in (`rate_limit.client_header`). One only: a
/// proxy that writes one passes the other through as the client sent it, so reading both
/// would let a client choose its own identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ClientHeader {
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239's `for=` parameters.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// How a client was identified; the `key_kind` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum KeyKind {
    /// The TCP peer's address.
    Ip,
    /// An address from `X-Forwarded-For` or `Forwarded`, given by a trusted proxy.
    Forwarded,
    /// The API-key header.
    ApiKey,
    /// One bucket for the whole node (the origin quota with `per = "node"`).
    Node,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A bucket's key. API keys are kept as a seeded hash: the secret is never stored or logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    /// The address masked to the configured prefix.
    V6(u128),
    Api(u64),
    Node,
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(a) => write!(f, "{}", Ipv4Addr::from(*a)),
            ClientKey::V6(a) => write!(f, "{}", Ipv6Addr::from(*a)),
            ClientKey::Api(h) => write!(f, "api-key#{h:016x}"),
            ClientKey::Node => f.write_str("node"),
        }
    }
}

/// A request's client, as found by [`Identity::of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId {
    pub key: ClientKey,
    pub kind: KeyKind,
}

/// How clients are identified; built once from `[rate_limit]`.
#[derive(Debug, Clone)]
pub struct Identity {
    trusted: Vec<Cidr>,
    header: ClientHeader,
    api_key: Option<HeaderName>,
    ipv6_prefix_bits: u8,
    seed: u64,
}

impl Default for Identity {
    fn default() -> Self {
        Identity::new(Vec::new(), None, 64)
    }
}

impl Identity {
    pub fn new(trusted: Vec<Cidr>, api_key: Option<HeaderName>, ipv6_prefix_bits: u8) -> Self {
        Identity {
            trusted,
            header: ClientHeader::default(),
            api_key,
            ipv6_prefix_bits: ipv6_prefix_bits.clamp(1, 128),
            // Per process, so nobody can pick API keys that collide with someone else's.
            seed: fastrand::u64(..),
        }
    }

    /// Reads the client from `header` when the peer is a trusted proxy.
    pub fn with_client_header(mut self, header: ClientHeader) -> Self {
        self.header = header;
        self
    }

    /// The client `req` comes from.
    pub fn of(&self, req: &HttpRequest) -> ClientId {
        self.resolve(req.peer_addr().map(|a| a.ip()), req.headers())
    }

    /// The client of a request from `peer` with `headers`.
    pub fn resolve(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> ClientId {
        if let Some(name) = &self.api_key {
            if let Some(v) = headers.get(name).filter(|v| !v.is_empty()) {
                return ClientId {
                    key: ClientKey::Api(xxhash_rust::xxh3::xxh3_64_with_seed(
                        v.as_bytes(),
                        self.seed,
                    )),
                    kind: KeyKind::ApiKey,
                };
            }
        }
        let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let (ip, kind) = if self.is_trusted(peer) {
            match self.forwarded_client(headers) {
                Some(ip) => (ip, KeyKind::Forwarded),
                None => (peer, KeyKind::Ip),
            }
        } else {
            (peer, KeyKind::Ip)
        };
        ClientId {
            key: self.key_of(ip),
            kind,
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// Walks `X-Forwarded-For` (or `Forwarded`'s `for=`) from the right (the hop nearest to
    /// us) past trusted proxies: the first untrusted address is the client. Addresses left of
    /// it were written by the client itself and prove nothing. A chain of trusted proxies only
    /// yields its left-most address; an entry that does not parse (or `for=unknown`, an
    /// obfuscated `_name`) ends the walk at the last good one.
    fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        match self.header {
            ClientHeader::XForwardedFor => {
                let values: Vec<&[u8]> = headers
                    .get_all("x-forwarded-for")
                    .map(|v| v.as_bytes())
                    .collect();
                self.walk(
                    values
                        .iter()
                        .rev()
                        .flat_map(|v| v.rsplit(|b| *b == b','))
                        .map(parse_hop),
                )
            }
            ClientHeader::Forwarded => {
                let mut elements: Vec<Option<IpAddr>> = Vec::new();
                for v in headers.get_all("forwarded") {
                    forwarded::for_each_for(v.as_bytes(), |node| {
                        elements.push(node.and_then(parse_forwarded_node))
                    });
                }
                self.walk(elements.into_iter().rev())
            }
        }
    }

    fn walk(&self, hops: impl Iterator<Item = Option<IpAddr>>) -> Option<IpAddr> {
        let mut client = None;
        for hop in hops.take(MAX_FORWARDED_HOPS) {
            let Some(ip) = hop else { break };
            client = Some(ip);
            if !self.is_trusted(ip) {
                break;
            }
        }
        client
    }

    fn key_of(&self, ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(a) => ClientKey::V4(u32::from(a)),
            v6 => match mask(v6, self.ipv6_prefix_bits) {
                IpAddr::V6(a) => ClientKey::V6(u128::from(a)),
                IpAddr::V4(a) => ClientKey::V4(u32::from(a)),
            },
        }
    }
}

/// A `Forwarded` node (RFC 7239 §6), unquoted: `192.0.2.60`, `192.0.2.60:80`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`. `unknown` and obfuscated names (`_hidden`) name no
/// address.
fn parse_forwarded_node(node: Vec<u8>) -> Option<IpAddr> {
    let s = std::str::from_utf8(&node).ok()?;
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':').is_some()) {
            return None;
        }
        return ip.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let host = s.split_once(':').map_or(s, |(h, _)| h);
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_hop(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn identity(trusted: &[&str]) -> Identity {
        Identity::new(
            trusted.iter().map(|c| Cidr::parse(c).unwrap()).collect(),
            Some(HeaderName::from_static("x-api-key")),
            64,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_static(n),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn untrusted_peers_are_keyed_by_address_whatever_they_claim() {
        let id = identity(&["10.0.0.0/8"]);
        let got = id.resolve(
            ip("203.0.113.5"),
            &headers(&[("x-forwarded-for", "1.1.1.1")]),
        );
        assert_eq!(
            got.key,
            ClientKey::V4(u32::from(Ipv4Addr::new(203, 0, 113, 5)))
        );
        assert_eq!(got.kind, KeyKind::Ip);
    }

    #[test]
    fn trusted_proxies_name_the_right_most_untrusted_hop() {
        let id = identity(&["10.0.0.0/8", "192.168.1.1"]);
        // The client prepended a lie; the proxies appended what they saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.9, 192.168.1.1")]);
        let got = id.resolve(ip("10.0.0.2"), &h);
        assert_eq!(
            got.key,
            ClientKey::V4(u32::from(Ipv4Addr::new(198, 51, 100, 9)))
        );
        assert_eq!(got.kind, KeyKind::Forwarded);
        // Split over two header lines, with a port and an IPv6 hop in brackets.
        let h = headers(&[
            ("x-forwarded-for", "[2001:db8::1]:443"),
            ("x-forwarded-for", "10.9.9.9:8080"),
        ]);
        let got = id.resolve(ip("10.0.0.2"), &h);
        assert_eq!(
            got.key,
            ClientKey::V6(u128::from("2001:db8::".parse::<Ipv6Addr>().unwrap()))
        );
        // Garbage ends the walk at the last good hop.
        let h = headers(&[("x-forwarded-for", "198.51.100.9, junk, 10.1.1.1")]);
        assert_eq!(
            id.resolve(ip("10.0.0.2"), &h).key,
            ClientKey::V4(u32::from(Ipv4Addr::new(10, 1, 1, 1)))
        );
        // No header: the proxy itself.
        let got = id.resolve(ip("10.0.0.2"), &HeaderMap::new());
        assert_eq!(
            (got.kind, got.key),
            (KeyKind::Ip, ClientKey::V4(0x0A00_0002))
        );
    }

    #[test]
    fn forwarded_names_the_client_when_the_proxies_write_it() {
        let id = identity(&["10.0.0.0/8"]).with_client_header(ClientHeader::Forwarded);
        let v4 = |a, b, c, d| ClientKey::V4(u32::from(Ipv4Addr::new(a, b, c, d)));
        // The client's own element, then the proxies' (one with a port, quoted).
        let h = headers(&[(
            "forwarded",
            r#"for=6.6.6.6, for=198.51.100.9;proto=https, for="10.2.2.2:8080";by=10.0.0.2"#,
        )]);
        let got = id.resolve(ip("10.0.0.2"), &h);
        assert_eq!(
            (got.kind, got.key),
            (KeyKind::Forwarded, v4(198, 51, 100, 9))
        );
        // IPv6 in brackets, over two lines.
        let h = headers(&[
            ("forwarded", r#"for="[2001:db8::1]:4711""#),
            ("forwarded", "for=10.3.3.3"),
        ]);
        assert_eq!(
            id.resolve(ip("10.0.0.2"), &h).key,
            ClientKey::V6(u128::from("2001:db8::".parse::<Ipv6Addr>().unwrap()))
        );
        // `unknown`, an obfuscated name or an element without `for` end the walk.
        for stop in ["for=unknown", "for=_hidden", "proto=http"] {
            let h = headers(&[(
                "forwarded",
                &format!("for=198.51.100.9, {stop}, for=10.4.4.4"),
            )]);
            assert_eq!(
                id.resolve(ip("10.0.0.2"), &h).key,
                v4(10, 4, 4, 4),
                "{stop}"
            );
        }
        // X-Forwarded-For is not read when the proxies write Forwarded: a client could set it.
        let h = headers(&[("x-forwarded-for", "198.51.100.9")]);
        let got = id.resolve(ip("10.0.0.2"), &h);
        assert_eq!((got.kind, got.key), (KeyKind::Ip, v4(10, 0, 0, 2)));
        // And the other way round.
        let xff = identity(&["10.0.0.0/8"]);
        let h = headers(&[("forwarded", "for=198.51.100.9")]);
        assert_eq!(xff.resolve(ip("10.0.0.2"), &h).kind, KeyKind::Ip);
    }

    #[test]
    fn ipv6_clients_share_their_prefix() {
        let id = identity(&[]);
        let a = id.resolve(ip("2001:db8:1:2::10"), &HeaderMap::new());
        let b = id.resolve(ip("2001:db8:1:2:ffff::1"), &HeaderMap::new());
        let c = id.resolve(ip("2001:db8:1:3::10"), &HeaderMap::new());
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key);
        let mapped = id.resolve(ip("::ffff:192.0.2.1"), &HeaderMap::new());
        assert_eq!(mapped.key, ClientKey::V4(0xC000_0201));
    }

    #[test]
    fn api_keys_are_hashed_and_win_over_addresses() {
        let id = identity(&[]);
        let a = id.resolve(ip("192.0.2.1"), &headers(&[("x-api-key", "secret-a")]));
        let b = id.resolve(ip("192.0.2.1"), &headers(&[("x-api-key", "secret-b")]));
        let a2 = id.resolve(ip("192.0.2.99"), &headers(&[("x-api-key", "secret-a")]));
        assert_eq!(a.kind, KeyKind::ApiKey);
        assert_ne!(a.key, b.key);
        assert_eq!(a.key, a2.key);
        assert!(!a.key.to_string().contains("secret"));
        let none = id.resolve(ip("192.0.2.1"), &headers(&[("x-api-key", "")]));
        assert_eq!(none.kind, KeyKind::Ip);
    }
}
