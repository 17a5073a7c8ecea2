//! Content codings tierd compresses with, and whether a client's `Accept-Encoding` (RFC 9110
//! §12.5.3) admits one.

use actix_web::http::header::{self, HeaderMap};

/// A content coding tierd can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Coding {
    Gzip,
    Br,
}

impl Coding {
    /// The coding's name in `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Br => "br",
        }
    }

    /// The compression levels the coding takes.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Coding::Gzip => 1..=9,
            Coding::Br => 0..=11,
        }
    }
}

/// Whether the request's `Accept-Encoding` admits `coding`: named with a weight above 0, or
/// `*` above 0 while the coding is not refused by name. No field admits nothing but identity
/// (a client that says nothing gets what it can surely read).
pub fn accepts(request: &HeaderMap, coding: Coding) -> bool {
    let name = coding.as_str().as_bytes();
    let mut named = None;
    let mut star = None;
    for line in request.get_all(header::ACCEPT_ENCODING) {
        for member in line.as_bytes().split(|&b| b == b',') {
            let mut parts = member.split(|&b| b == b';');
            let token = parts.next().unwrap_or_default().trim_ascii();
            let mut weight_ok = true;
            for param in parts {
                let param = param.trim_ascii();
                if let Some(q) = param
                    .strip_prefix(b"q=")
                    .or_else(|| param.strip_prefix(b"Q="))
                {
                    weight_ok = positive_weight(q);
                }
            }
            if token.eq_ignore_ascii_case(name)
                || (coding == Coding::Gzip && token.eq_ignore_ascii_case(b"x-gzip"))
            {
                named = Some(named.unwrap_or(false) || weight_ok);
            } else if token == b"*" {
                star = Some(weight_ok);
            }
        }
    }
    named.or(star).unwrap_or(false)
}

/// A qvalue (`0`, `0.000` .. `1`) that is above zero; a malformed one counts as zero.
fn positive_weight(q: &[u8]) -> bool {
    let q = q.trim_ascii();
    match q.split_first() {
        Some((b'1', rest)) => rest.is_empty() || rest.starts_with(b"."),
        Some((b'0', rest)) => match rest.split_first() {
            None => false,
            Some((b'.', digits)) => {
                digits.len() <= 3
                    && digits.iter().all(u8::is_ascii_digit)
                    && digits.iter().any(|&d| d != b'0')
            }
            Some(_) => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn ae(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn negotiation() {
        use Coding::*;
        assert!(!accepts(&ae(&[]), Gzip), "no field: identity");
        assert!(accepts(&ae(&["gzip, deflate, br"]), Gzip));
        assert!(accepts(&ae(&["gzip, deflate, br"]), Br));
        assert!(!accepts(&ae(&["deflate"]), Gzip));
        assert!(accepts(&ae(&["GZIP;q=0.5"]), Gzip));
        assert!(!accepts(&ae(&["gzip;q=0"]), Gzip));
        assert!(!accepts(&ae(&["gzip;q=0.000"]), Gzip));
        assert!(accepts(&ae(&["gzip;q=0.001"]), Gzip));
        assert!(accepts(&ae(&["*"]), Br));
        assert!(!accepts(&ae(&["*, br;q=0"]), Br), "refused by name");
        assert!(!accepts(&ae(&["*;q=0"]), Gzip));
        assert!(accepts(&ae(&["identity", "x-gzip"]), Gzip));
        assert!(!accepts(&ae(&["gzip;q=abc"]), Gzip), "malformed weight");
        assert!(!accepts(&ae(&[""]), Gzip));
    }
}
