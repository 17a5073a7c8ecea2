//! `Vary` (RFC 9111 §4.1): which request headers select among stored responses.

#[cfg(test)]
use actix_web::http::header::HeaderValue;
use actix_web::http::header::{HeaderMap, HeaderName};
use bytes::{BufMut, Bytes, BytesMut};

/// A parsed `Vary` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary`, or an empty one: one response serves every request.
    None,
    /// `Vary: *`: a stored response can never be selected.
    Star,
    /// The request headers that select the response (lower-case, de-duplicated).
    Headers(Vec<HeaderName>),
    /// A member that is not a valid field name.
    Malformed,
}

impl Vary {
    /// Parses every `Vary` line of a response.
    pub fn parse(headers: &HeaderMap) -> Vary {
        let mut names: Vec<HeaderName> = Vec::new();
        for line in headers.get_all(actix_web::http::header::VARY) {
            for member in line.as_bytes().split(|&b| b == b',') {
                let m = member.trim_ascii();
                if m.is_empty() {
                    continue;
                }
                if m == b"*" {
                    return Vary::Star;
                }
                match HeaderName::from_bytes(m) {
                    Ok(n) => {
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                    Err(_) => return Vary::Malformed,
                }
            }
        }
        if names.is_empty() {
            Vary::None
        } else {
            Vary::Headers(names)
        }
    }
}

/// The normalised value of one request header for `Vary` matching: all lines joined with `,`,
/// whitespace around list members removed (§4.1 allows such normalisation). `None` if absent.
pub fn normalized_value(headers: &HeaderMap, name: &HeaderName) -> Option<Bytes> {
    let mut out = BytesMut::new();
    let mut any = false;
    for line in headers.get_all(name) {
        any = true;
        for member in line.as_bytes().split(|&b| b == b',') {
            let m = member.trim_ascii();
            if m.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.put_u8(b',');
            }
            out.extend_from_slice(m);
        }
    }
    any.then(|| out.freeze())
}

/// The selecting request-header values captured when a response was stored.
pub type VaryValues = Box<[(HeaderName, Option<Bytes>)]>;

/// Captures the request's values of the headers named by `names`.
pub fn capture(names: &[HeaderName], request: &HeaderMap) -> VaryValues {
    names
        .iter()
        // Copied to their exact size: a stored value holds no spare capacity.
        .map(|n| {
            let v = normalized_value(request, n).map(|b| Bytes::copy_from_slice(&b));
            (n.clone(), v)
        })
        .collect()
}

/// The bytes the captured values hold (names and values).
pub fn captured_bytes(stored: &[(HeaderName, Option<Bytes>)]) -> usize {
    stored
        .iter()
        .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, Bytes::len))
        .sum()
}

/// True when `request` presents the same selecting header values as `stored` (§4.1).
pub fn matches(stored: &[(HeaderName, Option<Bytes>)], request: &HeaderMap) -> bool {
    stored
        .iter()
        .all(|(name, value)| normalized_value(request, name) == *value)
}

/// Renders stored selecting values for display (admin inspection, logs).
pub fn describe(stored: &[(HeaderName, Option<Bytes>)]) -> Vec<(String, Option<String>)> {
    stored
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), value(v));
        }
        h
    }

    // RFC 9111 §4.1: Vary parsing, `*` never matches, malformed names are flagged.
    #[test]
    fn parse_vary() {
        assert_eq!(Vary::parse(&hm(&[])), Vary::None);
        assert_eq!(Vary::parse(&hm(&[("vary", " , ")])), Vary::None);
        assert_eq!(
            Vary::parse(&hm(&[("vary", "Accept-Encoding, accept-encoding")])),
            Vary::Headers(vec![HeaderName::from_static("accept-encoding")])
        );
        assert_eq!(
            Vary::parse(&hm(&[("vary", "accept"), ("vary", "*")])),
            Vary::Star
        );
        assert_eq!(Vary::parse(&hm(&[("vary", "a b")])), Vary::Malformed);
    }

    // RFC 9111 §4.1: normalised matching (whitespace, line folding), absent vs empty.
    #[test]
    fn matching() {
        let names = [HeaderName::from_static("accept-encoding")];
        let stored = capture(&names, &hm(&[("accept-encoding", "gzip, br")]));
        assert!(matches(&stored, &hm(&[("accept-encoding", "gzip,br")])));
        assert!(matches(
            &stored,
            &hm(&[("accept-encoding", "gzip"), ("accept-encoding", "br")])
        ));
        assert!(!matches(&stored, &hm(&[("accept-encoding", "br, gzip")])));
        assert!(!matches(&stored, &hm(&[])));
        let absent = capture(&names, &hm(&[]));
        assert!(matches(&absent, &hm(&[])));
        assert!(!matches(&absent, &hm(&[("accept-encoding", "")])));
    }
}
