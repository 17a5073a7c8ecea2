//! Header classification shared by the proxy and the cache.

use actix_web::http::header::{self, HeaderMap, HeaderName};

/// Headers that describe one connection and never cross a proxy (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// The extra hop-by-hop names a message lists in its `Connection` header.
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        for token in v.as_bytes().split(|&b| b == b',') {
            let t = token.trim_ascii();
            if t.is_empty() {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(t) {
                out.push(n);
            }
        }
    }
    out
}

/// Response headers tierd consumes and never forwards to the client.
pub fn is_surrogate_only(name: &HeaderName) -> bool {
    matches!(name.as_str(), "surrogate-control" | "surrogate-key")
}

/// A predicate for headers to drop when forwarding a message: hop-by-hop ones and those the
/// message's `Connection` header names.
pub struct HopByHop {
    listed: Vec<HeaderName>,
}

impl HopByHop {
    pub fn of(headers: &HeaderMap) -> Self {
        let listed = if headers.contains_key(header::CONNECTION) {
            connection_listed(headers)
        } else {
            Vec::new()
        };
        HopByHop { listed }
    }

    #[inline]
    pub fn drops(&self, name: &HeaderName) -> bool {
        is_hop_by_hop(name) || (!self.listed.is_empty() && self.listed.contains(name))
    }
}

/// Whether a request says it has a body: chunked, or a `Content-Length` above 0.
pub fn has_body(h: &HeaderMap) -> bool {
    h.contains_key(header::TRANSFER_ENCODING) || content_length(h).is_some_and(|n| n > 0)
}

/// The `Content-Length` a message declares, if it is a valid number.
pub fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    // RFC 9110 §7.6.1: Connection and the fields it names are hop-by-hop.
    #[test]
    fn hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret, bad name"),
        );
        let hop = HopByHop::of(&h);
        assert!(hop.drops(&HeaderName::from_static("x-secret")));
        assert!(hop.drops(&header::TRANSFER_ENCODING));
        assert!(hop.drops(&header::UPGRADE));
        assert!(!hop.drops(&header::CACHE_CONTROL));
    }
}
