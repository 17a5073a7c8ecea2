//! Conditional requests (RFC 9110 §13): entity-tag comparison and precondition evaluation.
//!
//! Evaluated by tierd against the response it is about to send (stored or freshly fetched), so a
//! client's `If-None-Match` gets a 304 from the cache even when the origin never saw the condition.

use std::time::SystemTime;

use actix_web::http::header::{self, HeaderMap};

use super::freshness::parse_http_date;

/// A parsed entity tag: `weak` and the opaque-tag without its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ETag<'a> {
    pub weak: bool,
    pub opaque: &'a [u8],
}

impl<'a> ETag<'a> {
    /// Parses one entity-tag (`"xyz"` or `W/"xyz"`); `None` if malformed.
    pub fn parse(v: &'a [u8]) -> Option<Self> {
        let v = trim(v);
        let (weak, rest) = match v {
            [b'W', b'/', rest @ ..] => (true, rest),
            _ => (false, v),
        };
        match rest {
            [b'"', inner @ .., b'"'] if is_etagc(inner) => Some(ETag {
                weak,
                opaque: inner,
            }),
            _ => None,
        }
    }

    /// Weak comparison (RFC 9110 §8.8.3.2): opaque tags equal, weakness ignored.
    pub fn weak_eq(&self, other: &ETag<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// Strong comparison: both strong and equal.
    pub fn strong_eq(&self, other: &ETag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

fn is_etagc(s: &[u8]) -> bool {
    s.iter()
        .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [f, r @ ..] = s {
        if f.is_ascii_whitespace() {
            s = r
        } else {
            break;
        }
    }
    while let [r @ .., l] = s {
        if l.is_ascii_whitespace() {
            s = r
        } else {
            break;
        }
    }
    s
}

/// An `If-Match` / `If-None-Match` field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagList<'a> {
    Any,
    Tags(Vec<ETag<'a>>),
}

impl<'a> TagList<'a> {
    /// Parses every line of the header; `None` if any member is malformed (the header is then
    /// ignored, as if absent).
    pub fn parse<I: IntoIterator<Item = &'a [u8]>>(lines: I) -> Option<Self> {
        let mut tags = Vec::new();
        let mut any = false;
        for line in lines {
            for member in split_tags(line)? {
                let m = trim(member);
                if m.is_empty() {
                    continue;
                }
                if m == b"*" {
                    any = true;
                } else {
                    tags.push(ETag::parse(m)?);
                }
            }
        }
        match (any, tags.is_empty()) {
            (true, true) => Some(TagList::Any),
            (false, false) => Some(TagList::Tags(tags)),
            // "*" mixed with tags, or an empty list: malformed.
            _ => None,
        }
    }
}

/// Splits a list on commas outside quotes; `None` on an unterminated quote.
fn split_tags(line: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    for (i, &b) in line.iter().enumerate() {
        match b {
            b'"' => in_quote = !in_quote,
            b',' if !in_quote => {
                out.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quote {
        return None;
    }
    out.push(&line[start..]);
    Some(out)
}

/// The result of evaluating a request's preconditions against a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Send the response as it is.
    Proceed,
    /// Answer 304 Not Modified.
    NotModified,
    /// Answer 412 Precondition Failed.
    Failed,
}

/// The validators of the selected representation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Validators<'a> {
    pub etag: Option<ETag<'a>>,
    pub last_modified: Option<SystemTime>,
}

/// True when the request carries any precondition header tierd evaluates.
#[inline]
pub fn has_preconditions(headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_NONE_MATCH)
        || headers.contains_key(header::IF_MODIFIED_SINCE)
        || headers.contains_key(header::IF_MATCH)
        || headers.contains_key(header::IF_UNMODIFIED_SINCE)
}

/// A copy of just the precondition headers of a request.
pub fn preconditions_of(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
    ] {
        for v in headers.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

fn lines<'h>(headers: &'h HeaderMap, name: &header::HeaderName) -> impl Iterator<Item = &'h [u8]> {
    headers.get_all(name).map(|v| v.as_bytes())
}

fn single_date(headers: &HeaderMap, name: &header::HeaderName) -> Option<SystemTime> {
    let mut it = headers.get_all(name);
    let first = it.next()?;
    if it.next().is_some() {
        return None;
    }
    parse_http_date(first.as_bytes())
}

/// Evaluates preconditions in the order of RFC 9110 §13.2.2 for a GET or HEAD whose selected
/// representation has `v` (the response is a 2xx). Malformed headers are ignored.
pub fn evaluate(headers: &HeaderMap, v: Validators<'_>, now: SystemTime) -> Precondition {
    // Step 1: If-Match (strong comparison).
    if headers.contains_key(header::IF_MATCH) {
        if let Some(list) = TagList::parse(lines(headers, &header::IF_MATCH)) {
            let ok = match (&list, v.etag) {
                (TagList::Any, _) => true,
                (TagList::Tags(tags), Some(current)) => tags.iter().any(|t| t.strong_eq(&current)),
                (TagList::Tags(_), None) => false,
            };
            if !ok {
                return Precondition::Failed;
            }
        }
    } else if let (Some(ius), Some(lm)) = (
        single_date(headers, &header::IF_UNMODIFIED_SINCE),
        v.last_modified,
    ) {
        // Step 2: If-Unmodified-Since.
        if lm > ius {
            return Precondition::Failed;
        }
    }
    // Step 3: If-None-Match (weak comparison) takes precedence over If-Modified-Since.
    if headers.contains_key(header::IF_NONE_MATCH) {
        if let Some(list) = TagList::parse(lines(headers, &header::IF_NONE_MATCH)) {
            let matched = match (&list, v.etag) {
                (TagList::Any, _) => true,
                (TagList::Tags(tags), Some(current)) => tags.iter().any(|t| t.weak_eq(&current)),
                (TagList::Tags(_), None) => false,
            };
            return if matched {
                Precondition::NotModified
            } else {
                Precondition::Proceed
            };
        }
        // Malformed If-None-Match: ignored, and If-Modified-Since is not consulted either,
        // because the client did send an entity-tag condition (§13.1.3).
        return Precondition::Proceed;
    }
    // Step 4: If-Modified-Since, only with a valid date not in the future.
    if let (Some(ims), Some(lm)) = (
        single_date(headers, &header::IF_MODIFIED_SINCE),
        v.last_modified,
    ) {
        if ims <= now && lm <= ims {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};
    use std::time::{Duration, UNIX_EPOCH};

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn date(s: u64) -> String {
        httpdate::fmt_http_date(t(s))
    }

    // RFC 9110 §8.8.3.2: weak comparison for If-None-Match.
    #[test]
    fn etag_comparison() {
        let strong = ETag::parse(b"\"a\"").unwrap();
        let weak = ETag::parse(b"W/\"a\"").unwrap();
        assert!(weak.weak_eq(&strong) && strong.weak_eq(&weak));
        assert!(!weak.strong_eq(&strong));
        assert!(strong.strong_eq(&strong));
        for bad in [&b"a"[..], b"\"a", b"W/a", b"w/\"a\"", b"\"a\"b\"", b""] {
            assert_eq!(ETag::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    // RFC 9110 §13.1.2 and §13.2.2: If-None-Match lists, "*", precedence over If-Modified-Since.
    #[test]
    fn if_none_match_table() {
        let e = ETag::parse(b"\"v1\"").unwrap();
        let v = Validators {
            etag: Some(e),
            last_modified: Some(t(1000)),
        };
        let now = t(5000);
        let table: &[(&[(&str, &str)], Precondition)] = &[
            (&[("if-none-match", "\"v1\"")], Precondition::NotModified),
            (&[("if-none-match", "W/\"v1\"")], Precondition::NotModified),
            (
                &[("if-none-match", "\"v0\", \"v1\"")],
                Precondition::NotModified,
            ),
            (
                &[("if-none-match", "\"v0\""), ("if-none-match", "\"v1\"")],
                Precondition::NotModified,
            ),
            (&[("if-none-match", "*")], Precondition::NotModified),
            (&[("if-none-match", "\"v2\"")], Precondition::Proceed),
            // INM wins over a matching IMS.
            (
                &[
                    ("if-none-match", "\"v2\""),
                    ("if-modified-since", &date(2000)),
                ],
                Precondition::Proceed,
            ),
            // Garbage INM is ignored, and does not fall back to IMS.
            (&[("if-none-match", "garbage")], Precondition::Proceed),
            (
                &[("if-none-match", "\"unterminated")],
                Precondition::Proceed,
            ),
            (&[("if-none-match", "*, \"v1\"")], Precondition::Proceed),
            (
                &[("if-modified-since", &date(1000))],
                Precondition::NotModified,
            ),
            (&[("if-modified-since", &date(999))], Precondition::Proceed),
            (&[("if-modified-since", "yesterday")], Precondition::Proceed),
            // A date in the future is invalid (§13.1.3).
            (&[("if-modified-since", &date(9000))], Precondition::Proceed),
            (&[("if-match", "\"v1\"")], Precondition::Proceed),
            (&[("if-match", "W/\"v1\"")], Precondition::Failed),
            (&[("if-match", "*")], Precondition::Proceed),
            (&[("if-unmodified-since", &date(999))], Precondition::Failed),
            (
                &[("if-unmodified-since", &date(1000))],
                Precondition::Proceed,
            ),
        ];
        for (headers, want) in table {
            assert_eq!(evaluate(&hm(headers), v, now), *want, "{headers:?}");
        }
    }

    #[test]
    fn no_validators_never_304_except_star() {
        let v = Validators::default();
        assert_eq!(
            evaluate(&hm(&[("if-none-match", "\"a\"")]), v, t(10)),
            Precondition::Proceed
        );
        assert_eq!(
            evaluate(&hm(&[("if-none-match", "*")]), v, t(10)),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(&hm(&[("if-modified-since", &date(5))]), v, t(10)),
            Precondition::Proceed
        );
    }
}
