//! One journal row as the request path hands it over: plain values, formatted by the writer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::metrics::{MethodLabel, Outcome};
use crate::types::TierName;

/// One answered request.
#[derive(Debug, Clone)]
pub struct Row {
    /// When the response head was ready.
    pub at: SystemTime,
    pub method: MethodLabel,
    /// The cache key (`host/path?query`, then any ` h:` and ` u:` parts), or `host/path?query`
    /// from the request when it was never keyed (refused, or not a cacheable method).
    pub url: Arc<str>,
    /// The route template (the matching rule's path, or `other`).
    pub route: Arc<str>,
    pub status: u16,
    /// What the cache did, in tierd's own terms (the `cache_status` column).
    pub outcome: Outcome,
    /// Sent to the origin without a lookup (a rule's bypass, a body, a range).
    pub bypassed: bool,
    /// The tier whose entry answered.
    pub tier: Option<TierName>,
    /// Body bytes sent (as declared by the response; 0 for a 304, a HEAD or a streamed body).
    pub bytes: u64,
    /// How long the origin (or the application's handler) took, when it was asked.
    pub origin: Option<Duration>,
    /// From arrival to the response head.
    pub total: Duration,
    /// The freshness lifetime of the entry served or stored.
    pub ttl: Option<Duration>,
    /// The client's address, hashed with the journal's salt by the writer (never stored).
    pub peer: Option<IpAddr>,
    /// The request carried a per-user scope value.
    pub user_scoped: bool,
    /// Served from an entry a warming job stored.
    pub warmed: bool,
    /// Imported from an access log (`tierd import-log`): which line; `None` for live requests.
    pub import_key: Option<u64>,
}

/// The `outcome` column: what happened to a request, in the journal's coarse terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum JournalOutcome {
    /// A fresh entry answered.
    Hit,
    /// A stale entry answered (while revalidating, on an origin error, over the origin quota).
    Stale,
    /// The origin answered and the response was stored (or shared with coalesced requests).
    Miss,
    /// A stale entry was validated by the origin (304) and served.
    Revalidated,
    /// Sent to the origin without a lookup (a rule's bypass, a request body, a range).
    Bypass,
    /// The origin answered and nothing was stored (uncacheable, or not a cacheable method).
    Pass,
    /// Refused before the origin: a rate limit (429) or request hardening (4xx).
    Refused,
    /// tierd answered with an error of its own (502, 504).
    Error,
    /// A warming job's fetch (no client waiting).
    Warm,
}

impl JournalOutcome {
    /// Every outcome, in code order (the `outcome` column stores the index).
    pub const ALL: [JournalOutcome; 9] = [
        JournalOutcome::Hit,
        JournalOutcome::Stale,
        JournalOutcome::Miss,
        JournalOutcome::Revalidated,
        JournalOutcome::Bypass,
        JournalOutcome::Pass,
        JournalOutcome::Refused,
        JournalOutcome::Error,
        JournalOutcome::Warm,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The journal outcome of a request the cache answered with `o`.
    pub fn of(o: Outcome, bypassed: bool) -> JournalOutcome {
        match o {
            Outcome::Hit => JournalOutcome::Hit,
            Outcome::StaleWhileRevalidate | Outcome::StaleIfError | Outcome::StaleOriginLimited => {
                JournalOutcome::Stale
            }
            Outcome::Miss | Outcome::Collapsed => JournalOutcome::Miss,
            Outcome::Revalidated => JournalOutcome::Revalidated,
            Outcome::Pass if bypassed => JournalOutcome::Bypass,
            Outcome::Pass => JournalOutcome::Pass,
            Outcome::RateLimited | Outcome::Rejected => JournalOutcome::Refused,
            Outcome::Error => JournalOutcome::Error,
        }
    }
}

/// Splits a cache key into host and target (`/path?query`), leaving out the ` h:` (keyed
/// headers) and ` u:` (per-user scope) parts; the user value, if any, is returned third.
pub fn split_key(key: &str) -> (&str, &str, Option<&str>) {
    // Most keys are the plain URL: one byte search, and the rest only when there is one.
    let (url, rest) = match key.find(' ') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    let user = if rest.is_empty() {
        None
    } else {
        rest.find(" u:").map(|i| &rest[i + 3..])
    };
    match url.find('/') {
        Some(i) => (&url[..i], &url[i..], user),
        None => (url, "/", user),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_host_target_and_user() {
        assert_eq!(split_key("a.example/x?q=1"), ("a.example", "/x?q=1", None));
        assert_eq!(
            split_key("a.example/x h:accept=json u:alice"),
            ("a.example", "/x", Some("alice"))
        );
        assert_eq!(split_key("a.example/"), ("a.example", "/", None));
        assert_eq!(split_key("nohost"), ("nohost", "/", None));
    }

    #[test]
    fn outcomes_map_to_the_journal_terms() {
        assert_eq!(
            JournalOutcome::of(Outcome::Collapsed, false),
            JournalOutcome::Miss
        );
        assert_eq!(
            JournalOutcome::of(Outcome::Pass, true),
            JournalOutcome::Bypass
        );
        assert_eq!(
            JournalOutcome::of(Outcome::Pass, false),
            JournalOutcome::Pass
        );
        assert_eq!(
            JournalOutcome::of(Outcome::StaleIfError, false),
            JournalOutcome::Stale
        );
        assert_eq!(
            JournalOutcome::of(Outcome::RateLimited, false),
            JournalOutcome::Refused
        );
        assert_eq!(JournalOutcome::Revalidated.as_str(), "revalidated");
    }

    /// The journal stores each enum as its discriminant and its view names them by position in
    /// `ALL`: the two must agree.
    #[test]
    fn codes_are_positions_in_all() {
        use crate::metrics::MethodLabel;
        for (i, o) in JournalOutcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
        for (i, m) in MethodLabel::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
        }
        for (i, t) in TierName::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i);
        }
    }
}
