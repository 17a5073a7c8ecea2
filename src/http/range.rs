//! Byte ranges (RFC 9110 §14): which part of a full response a `Range` request gets, and
//! whether its `If-Range` still holds.

use super::conditional::ETag;
use super::freshness::parse_http_date;

/// What a `Range` field asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// Not a valid `bytes` range set (or another unit): ignored, the full response (§14.2).
    Ignore,
    /// More than one range: the full response, which §14.2 allows instead of multipart.
    Whole,
    /// One satisfiable range: bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Nothing of it lies within the representation: 416 (§15.5.17).
    Unsatisfiable,
}

/// Evaluates `Range` (§14.1.1: `bytes=a-b`, `a-`, `-n`) against a representation of `len`
/// bytes.
pub fn evaluate(range: &[u8], len: u64) -> Ranged {
    let Some(set) = strip_unit(range.trim_ascii()) else {
        return Ranged::Ignore;
    };
    let mut specs = set
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|s| !s.is_empty());
    let Some(first) = specs.next() else {
        return Ranged::Ignore;
    };
    let Some(spec) = Spec::parse(first) else {
        return Ranged::Ignore;
    };
    let mut more = false;
    for other in specs {
        if Spec::parse(other).is_none() {
            return Ranged::Ignore;
        }
        more = true;
    }
    if more {
        return Ranged::Whole;
    }
    if len == 0 {
        // Nothing can be named in an empty representation; its whole (empty) self serves.
        return Ranged::Whole;
    }
    match spec {
        Spec::From(start, end) => {
            if start >= len {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part {
                    start,
                    end: end.map_or(len - 1, |e| e.min(len - 1)),
                }
            }
        }
        Spec::Suffix(0) => Ranged::Unsatisfiable,
        Spec::Suffix(n) => Ranged::Part {
            start: len.saturating_sub(n),
            end: len - 1,
        },
    }
}

fn strip_unit(v: &[u8]) -> Option<&[u8]> {
    let eq = v.iter().position(|&b| b == b'=')?;
    v[..eq]
        .trim_ascii()
        .eq_ignore_ascii_case(b"bytes")
        .then(|| &v[eq + 1..])
}

enum Spec {
    /// `first-pos "-" [ last-pos ]`
    From(u64, Option<u64>),
    /// `"-" suffix-length`
    Suffix(u64),
}

impl Spec {
    fn parse(s: &[u8]) -> Option<Spec> {
        let dash = s.iter().position(|&b| b == b'-')?;
        let (a, b) = (&s[..dash], &s[dash + 1..]);
        match (digits(a), digits(b)) {
            (Some(start), Some(end)) if end >= start => Some(Spec::From(start, Some(end))),
            (Some(start), None) if b.is_empty() => Some(Spec::From(start, None)),
            (None, Some(n)) if a.is_empty() => Some(Spec::Suffix(n)),
            _ => None,
        }
    }
}

fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Beyond u64 is beyond any representation: saturate rather than refuse.
    Some(std::str::from_utf8(s).ok()?.parse().unwrap_or(u64::MAX))
}

/// Whether `If-Range` (§13.1.5) holds for a response with these validators: an entity tag
/// must be strong and equal the response's strong `ETag`; a date must equal its
/// `Last-Modified`. Anything else does not hold, and the full response is sent.
pub fn if_range_holds(if_range: &[u8], etag: Option<&[u8]>, last_modified: Option<&[u8]>) -> bool {
    let v = if_range.trim_ascii();
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        return match (ETag::parse(v), etag.and_then(ETag::parse)) {
            (Some(wanted), Some(have)) => wanted.strong_eq(&have),
            _ => false,
        };
    }
    match (parse_http_date(v), last_modified.and_then(parse_http_date)) {
        (Some(wanted), Some(have)) => wanted == have,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        let p = |start, end| Ranged::Part { start, end };
        assert_eq!(evaluate(b"bytes=0-3", 10), p(0, 3));
        assert_eq!(evaluate(b"bytes=5-", 10), p(5, 9));
        assert_eq!(evaluate(b"bytes=-3", 10), p(7, 9));
        assert_eq!(
            evaluate(b"bytes=-30", 10),
            p(0, 9),
            "a suffix longer than it: all"
        );
        assert_eq!(evaluate(b"bytes=8-100", 10), p(8, 9), "clipped to the end");
        assert_eq!(evaluate(b"Bytes = 0-0", 10), p(0, 0));
        assert_eq!(evaluate(b"bytes=0-99999999999999999999999", 10), p(0, 9));
    }

    #[test]
    fn unsatisfiable_ignored_and_multiple() {
        assert_eq!(evaluate(b"bytes=10-", 10), Ranged::Unsatisfiable);
        assert_eq!(evaluate(b"bytes=10-20", 10), Ranged::Unsatisfiable);
        assert_eq!(evaluate(b"bytes=-0", 10), Ranged::Unsatisfiable);
        for bad in [
            "bytes=5-2",
            "bytes=",
            "bytes=a-b",
            "items=0-3",
            "bytes 0-3",
            "bytes=-",
            "bytes=1-2-3",
            "bytes=0-1,x",
        ] {
            assert_eq!(evaluate(bad.as_bytes(), 10), Ranged::Ignore, "{bad}");
        }
        assert_eq!(evaluate(b"bytes=0-1, 4-5", 10), Ranged::Whole);
        assert_eq!(evaluate(b"bytes=0-1", 0), Ranged::Whole);
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let lm = b"Tue, 01 Dec 2026 10:00:00 GMT";
        assert!(if_range_holds(b"\"v1\"", Some(b"\"v1\""), None));
        assert!(!if_range_holds(b"\"v1\"", Some(b"\"v2\""), None));
        assert!(
            !if_range_holds(b"W/\"v1\"", Some(b"W/\"v1\""), None),
            "weak never"
        );
        assert!(!if_range_holds(b"\"v1\"", Some(b"W/\"v1\""), None));
        assert!(!if_range_holds(b"\"v1\"", None, Some(lm)));
        assert!(if_range_holds(lm, None, Some(lm)));
        assert!(!if_range_holds(
            b"Tue, 01 Dec 2026 10:00:01 GMT",
            None,
            Some(lm)
        ));
        assert!(!if_range_holds(b"garbage", Some(b"\"v1\""), Some(lm)));
    }
}
