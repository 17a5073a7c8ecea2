//! Request headers an origin may honour but the cache does not key on. An origin that reads
//! `X-Original-URL` (a rewrite), `X-HTTP-Method-Override` (another method) or `X-Forwarded-Host`
//! (a host for its links) answers differently for the same key, and the answer is then stored
//! for everyone: cache poisoning with one header. Such headers are removed from every request
//! before anything past the cache sees it:
//!
//! - the names in `cache.strip_request_headers` ([`DEFAULT_STRIP`] unless configured);
//! - every name with an underscore (`X_Forwarded_Host`: some servers read `_` as `-`), unless
//!   `cache.drop_underscore_headers = false` (nginx drops them too, `underscores_in_headers off`);
//! - `Forwarded`, `X-Forwarded-Host` and `X-Forwarded-Proto` unless the peer is one of the
//!   trusted proxies (`rate_limit.trusted_proxies`): the gateway writes its own.
//!
//! A header a rule keys on (`key.headers`) is kept: its values already select distinct entries.

use std::net::IpAddr;

use actix_web::http::header::{HeaderMap, HeaderName};

use crate::http::cidr::Cidr;

/// The headers removed by default: rewrites, method overrides and forwarding claims that
/// frameworks (Symfony, Laravel, Rails, IIS, Spring, Express middleware) are known to honour.
pub const DEFAULT_STRIP: [&str; 16] = [
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-url-scheme",
    "front-end-https",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-http-destinationurl",
];

/// Forwarding claims honoured only from trusted proxies.
const FORWARDING: [&str; 3] = ["forwarded", "x-forwarded-host", "x-forwarded-proto"];

/// Why a header was removed; the `reason` label of `tierd_request_headers_stripped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Stripped {
    /// Named in `cache.strip_request_headers`.
    Listed,
    /// The name has an underscore.
    Underscore,
    /// A forwarding claim from a peer that is not a trusted proxy.
    #[strum(serialize = "untrusted_forwarding")]
    Untrusted,
}

impl Stripped {
    pub const ALL: [Stripped; 3] = [Stripped::Listed, Stripped::Underscore, Stripped::Untrusted];

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The rules above, built once from the config.
#[derive(Debug, Clone)]
pub struct Hygiene {
    strip: Vec<HeaderName>,
    drop_underscores: bool,
    trusted: Vec<Cidr>,
    forwarding: [HeaderName; 3],
}

impl Default for Hygiene {
    fn default() -> Self {
        let strip = DEFAULT_STRIP.map(HeaderName::from_static).to_vec();
        Hygiene::new(strip, true, Vec::new())
    }
}

impl Hygiene {
    pub fn new(strip: Vec<HeaderName>, drop_underscores: bool, trusted: Vec<Cidr>) -> Self {
        Hygiene {
            strip,
            drop_underscores,
            trusted,
            forwarding: FORWARDING.map(HeaderName::from_static),
        }
    }

    /// Whether `peer` is a trusted proxy.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted.iter().any(|c| c.contains(ip)))
    }

    fn reason(&self, name: &HeaderName, trusted: bool) -> Option<Stripped> {
        if self.drop_underscores && name.as_str().contains('_') {
            Some(Stripped::Underscore)
        } else if self.strip.contains(name) {
            Some(Stripped::Listed)
        } else if !trusted && self.forwarding.contains(name) {
            Some(Stripped::Untrusted)
        } else {
            None
        }
    }

    /// Removes the headers above from `headers`, except those in `keyed`; calls `removed` once
    /// per removed name.
    pub fn apply(
        &self,
        headers: &mut HeaderMap,
        peer: Option<IpAddr>,
        keyed: &[HeaderName],
        mut removed: impl FnMut(&HeaderName, Stripped),
    ) {
        let trusted = self.trusts(peer);
        let mut doomed: Vec<HeaderName> = Vec::new();
        for name in headers.keys() {
            if let Some(why) = self.reason(name, trusted) {
                if !keyed.contains(name) && !doomed.contains(name) {
                    removed(name, why);
                    doomed.push(name.clone());
                }
            }
        }
        for name in doomed {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.as_str().to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn strips_listed_underscored_and_untrusted_forwarding_headers() {
        let hy = Hygiene::new(
            DEFAULT_STRIP.map(HeaderName::from_static).to_vec(),
            true,
            vec![Cidr::parse("10.0.0.0/8").unwrap()],
        );
        let request = [
            ("x-original-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("x_forwarded_host", "evil.test"),
            ("forwarded", "host=evil.test"),
            ("x-forwarded-host", "evil.test"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "1.2.3.4"),
            ("accept", "text/html"),
            ("x-user", "alice"),
        ];
        let mut seen = Vec::new();
        let mut h = map(&request);
        hy.apply(
            &mut h,
            Some("203.0.113.9".parse().unwrap()),
            &[],
            |n, why| seen.push((n.as_str().to_owned(), why)),
        );
        assert_eq!(names(&h), ["accept", "x-forwarded-for", "x-user"]);
        assert!(seen.contains(&("x_forwarded_host".into(), Stripped::Underscore)));
        assert!(seen.contains(&("x-original-url".into(), Stripped::Listed)));
        assert!(seen.contains(&("forwarded".into(), Stripped::Untrusted)));
        // A trusted proxy's forwarding claims stay; the listed headers still go.
        let mut h = map(&request);
        hy.apply(&mut h, Some("10.1.2.3".parse().unwrap()), &[], |_, _| {});
        assert_eq!(
            names(&h),
            [
                "accept",
                "forwarded",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-user"
            ]
        );
    }

    #[test]
    fn keeps_what_a_rule_keys_on_and_what_the_config_allows() {
        let mut h = map(&[("x-original-url", "/a"), ("x_tenant", "t1")]);
        Hygiene::default().apply(
            &mut h,
            None,
            &[HeaderName::from_static("x-original-url")],
            |_, _| {},
        );
        assert_eq!(names(&h), ["x-original-url"]);
        let mut h = map(&[("x-original-url", "/a"), ("x_tenant", "t1")]);
        Hygiene::new(Vec::new(), false, Vec::new()).apply(&mut h, None, &[], |_, _| {});
        assert_eq!(names(&h), ["x-original-url", "x_tenant"]);
    }
}
