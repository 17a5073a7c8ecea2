//! Freshness lifetime and age (RFC 9111 §4.2). Pure functions of their inputs and `now`.

use std::time::SystemTime;

use super::cache_control::{CacheControl, Delta, MAX_DELTA_SECONDS};
use crate::clock::secs_between;

/// Status codes that are heuristically cacheable (RFC 9110 §15.1).
pub fn is_heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// How heuristic freshness is computed when the origin gives no explicit lifetime (§4.2.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heuristic {
    /// Percentage of `Date - Last-Modified` to use (RFC 9111 suggests 10).
    pub percent: u64,
    /// Upper bound of a heuristic lifetime, in seconds.
    pub max_seconds: u64,
}

impl Default for Heuristic {
    fn default() -> Self {
        Heuristic {
            percent: 10,
            max_seconds: 86_400,
        }
    }
}

/// The state of a message's `Expires` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expires {
    Absent,
    /// Unparseable or repeated: the response is already stale (§5.3).
    Invalid,
    At(SystemTime),
}

/// Where a freshness lifetime came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// From `s-maxage`, `max-age` or `Expires`.
    Explicit(u64),
    /// Computed from `Last-Modified` (§4.2.2).
    Heuristic(u64),
    /// No freshness information at all.
    None,
}

impl Lifetime {
    pub fn secs(self) -> u64 {
        match self {
            Lifetime::Explicit(s) | Lifetime::Heuristic(s) => s,
            Lifetime::None => 0,
        }
    }
    pub fn is_explicit(self) -> bool {
        matches!(self, Lifetime::Explicit(_))
    }
}

/// The response facts freshness depends on.
#[derive(Debug, Clone, Copy)]
pub struct FreshnessInputs<'a> {
    /// The effective directives for this cache (after `Surrogate-Control` / `CDN-Cache-Control`).
    pub cc: &'a CacheControl,
    pub expires: Expires,
    pub date: Option<SystemTime>,
    pub last_modified: Option<SystemTime>,
    pub status: u16,
}

/// The freshness lifetime for a shared cache (§4.2.1): `s-maxage`, else `max-age`, else
/// `Expires - Date`, else heuristic. `response_time` stands in for a missing `Date`.
pub fn freshness_lifetime(
    input: &FreshnessInputs<'_>,
    heuristic: Heuristic,
    response_time: SystemTime,
) -> Lifetime {
    if let Some(d) = input.cc.s_maxage {
        return Lifetime::Explicit(d.secs_or_zero());
    }
    if let Some(d) = input.cc.max_age {
        return Lifetime::Explicit(d.secs_or_zero());
    }
    let date = input.date.unwrap_or(response_time);
    match input.expires {
        Expires::Invalid => return Lifetime::Explicit(0),
        Expires::At(at) => {
            return Lifetime::Explicit(secs_between(date, at).min(MAX_DELTA_SECONDS))
        }
        Expires::Absent => {}
    }
    if is_heuristically_cacheable(input.status) || input.cc.public {
        if let Some(lm) = input.last_modified {
            let since = secs_between(lm, date);
            let secs = (since.saturating_mul(heuristic.percent) / 100).min(heuristic.max_seconds);
            return Lifetime::Heuristic(secs);
        }
    }
    Lifetime::None
}

/// The corrected initial age of a response when it was received (§4.2.3).
pub fn corrected_initial_age(
    age_header: Option<u64>,
    date: Option<SystemTime>,
    request_time: SystemTime,
    response_time: SystemTime,
) -> u64 {
    let apparent_age = date.map(|d| secs_between(d, response_time)).unwrap_or(0);
    let response_delay = secs_between(request_time, response_time);
    let corrected_age_value = age_header.unwrap_or(0).saturating_add(response_delay);
    apparent_age.max(corrected_age_value).min(MAX_DELTA_SECONDS)
}

/// The current age of a stored response (§4.2.3).
#[inline]
pub fn current_age(corrected_initial_age: u64, response_time: SystemTime, now: SystemTime) -> u64 {
    corrected_initial_age
        .saturating_add(secs_between(response_time, now))
        .min(MAX_DELTA_SECONDS)
}

/// Remaining freshness in seconds: positive while fresh, zero or negative once stale.
#[inline]
pub fn ttl(lifetime: u64, age: u64) -> i64 {
    lifetime as i64 - age as i64
}

/// Parses the `Expires` header lines (§5.3): several lines or an invalid date mean stale.
pub fn parse_expires<'a, I: IntoIterator<Item = &'a [u8]>>(lines: I) -> Expires {
    let mut it = lines.into_iter();
    match (it.next(), it.next()) {
        (None, _) => Expires::Absent,
        (Some(v), None) => match parse_http_date(v) {
            Some(t) => Expires::At(t),
            None => Expires::Invalid,
        },
        (Some(_), Some(_)) => Expires::Invalid,
    }
}

/// Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime); `None` if invalid.
pub fn parse_http_date(v: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(v).ok()?;
    httpdate::parse_http_date(s.trim()).ok()
}

/// Parses `Age` (§5.1): a non-negative integer; invalid values are ignored.
pub fn parse_age(v: &[u8]) -> Option<u64> {
    match super::cache_control::parse_delta_bytes(v) {
        Delta::Valid(s) => Some(s),
        Delta::Invalid => None,
    }
}

/// A response's `Age` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeField {
    Absent,
    Valid(u64),
    /// Not a non-negative integer (`old`, `-5`, `1.5`, empty).
    Invalid,
}

/// Reads `Age` from its field lines (§5.1): a list, on one line or several, counts by its
/// first member; a first member that is not a non-negative integer makes the field invalid.
pub fn age_field<'a>(mut lines: impl Iterator<Item = &'a [u8]>) -> AgeField {
    let Some(first) = lines.next() else {
        return AgeField::Absent;
    };
    let member = first.split(|&b| b == b',').next().unwrap_or(first);
    match parse_age(member) {
        Some(secs) => AgeField::Valid(secs),
        None => AgeField::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn cc(s: &str) -> CacheControl {
        CacheControl::parse([s.as_bytes()])
    }

    fn lifetime(
        cc_s: &str,
        expires: Expires,
        date: Option<u64>,
        lm: Option<u64>,
        status: u16,
    ) -> Lifetime {
        let c = cc(cc_s);
        let input = FreshnessInputs {
            cc: &c,
            expires,
            date: date.map(t),
            last_modified: lm.map(t),
            status,
        };
        freshness_lifetime(&input, Heuristic::default(), t(1000))
    }

    // RFC 9111 §4.2.1: precedence s-maxage > max-age > Expires > heuristic.
    #[test]
    fn lifetime_precedence() {
        let table = [
            (
                "s-maxage=10, max-age=100",
                Expires::At(t(2000)),
                Lifetime::Explicit(10),
            ),
            ("max-age=100", Expires::At(t(2000)), Lifetime::Explicit(100)),
            ("", Expires::At(t(1600)), Lifetime::Explicit(600)),
            ("", Expires::At(t(10)), Lifetime::Explicit(0)),
            ("", Expires::Invalid, Lifetime::Explicit(0)),
            ("max-age=oops", Expires::Absent, Lifetime::Explicit(0)),
        ];
        for (c, e, want) in table {
            assert_eq!(lifetime(c, e, Some(1000), None, 200), want, "{c} {e:?}");
        }
    }

    // RFC 9111 §4.2.2: heuristic is 10% of Date - Last-Modified, capped, only for allowed statuses.
    #[test]
    fn heuristic_freshness() {
        assert_eq!(
            lifetime("", Expires::Absent, Some(1000), Some(0), 200),
            Lifetime::Heuristic(100)
        );
        assert_eq!(
            lifetime("", Expires::Absent, Some(1000), Some(0), 500),
            Lifetime::None
        );
        assert_eq!(
            lifetime("public", Expires::Absent, Some(1000), Some(0), 500),
            Lifetime::Heuristic(100)
        );
        assert_eq!(
            lifetime("", Expires::Absent, Some(1000), None, 200),
            Lifetime::None
        );
        // Capped at one day by default.
        let c = CacheControl::default();
        let input = FreshnessInputs {
            cc: &c,
            expires: Expires::Absent,
            date: Some(t(100 * 86_400)),
            last_modified: Some(t(0)),
            status: 200,
        };
        assert_eq!(
            freshness_lifetime(&input, Heuristic::default(), t(0)),
            Lifetime::Heuristic(86_400)
        );
    }

    // RFC 9111 §4.2.3: corrected initial age.
    #[test]
    fn age_calculation() {
        // Origin says Age: 30, request took 2 s, Date is 1 s before the response.
        assert_eq!(
            corrected_initial_age(Some(30), Some(t(999)), t(998), t(1000)),
            32
        );
        // Clock skew: Date far in the past dominates.
        assert_eq!(
            corrected_initial_age(None, Some(t(900)), t(1000), t(1000)),
            100
        );
        // Date in the future: apparent age is zero.
        assert_eq!(
            corrected_initial_age(None, Some(t(2000)), t(1000), t(1000)),
            0
        );
        assert_eq!(current_age(32, t(1000), t(1010)), 42);
        assert_eq!(current_age(32, t(1000), t(990)), 32);
        assert_eq!(ttl(60, 42), 18);
        assert_eq!(ttl(60, 63), -3);
    }

    // RFC 9111 §5.3: an invalid or repeated Expires means already expired.
    #[test]
    fn expires_parsing() {
        assert_eq!(parse_expires(std::iter::empty()), Expires::Absent);
        assert_eq!(parse_expires([&b"0"[..]]), Expires::Invalid);
        assert_eq!(
            parse_expires([&b"Thu, 01 Jan 1970 00:00:00 GMT"[..]]),
            Expires::At(UNIX_EPOCH)
        );
        assert_eq!(
            parse_expires([
                &b"Thu, 01 Jan 1970 00:00:00 GMT"[..],
                &b"Thu, 01 Jan 1970 00:00:00 GMT"[..]
            ]),
            Expires::Invalid
        );
        assert_eq!(parse_expires([&[0xff, 0x00][..]]), Expires::Invalid);
    }

    #[test]
    fn age_header_parsing() {
        assert_eq!(parse_age(b"30"), Some(30));
        assert_eq!(parse_age(b" 30 "), Some(30));
        assert_eq!(parse_age(b"-1"), None);
        assert_eq!(parse_age(b"x"), None);
        let field = |lines: &[&str]| age_field(lines.iter().map(|l| l.as_bytes()));
        assert_eq!(field(&[]), AgeField::Absent);
        assert_eq!(field(&["0, 7200"]), AgeField::Valid(0), "the first member");
        assert_eq!(field(&["7200,0"]), AgeField::Valid(7200));
        assert_eq!(
            field(&["10", "7200"]),
            AgeField::Valid(10),
            "the first line"
        );
        for bad in ["old, 0", "-7200", "7200.0", "abc", "", " , 5"] {
            assert_eq!(field(&[bad]), AgeField::Invalid, "{bad:?}");
        }
    }
}
