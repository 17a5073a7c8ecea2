//! One journal row: as the request path describes it ([`Row`]), and as it travels to the writer
//! ([`Entry`]: the numbers of the stored row, hashed and packed on the request path, so that
//! nothing per request is allocated on one thread and freed on another).

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
    /// from the request when it was never keyed (refused, or not a cacheable method), hashed:
    /// [`Journal::url`](super::Journal::url), or [`UrlRef::with_text`].
    pub url: UrlRef,
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
    /// The client's address, hashed with the journal's salt (never stored).
    pub peer: Option<IpAddr>,
    /// The request carried a per-user scope value.
    pub user_scoped: bool,
    /// The warmer's own fetch (outcome `warm`), not a client's request.
    pub warm_fetch: bool,
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
    let (url, user) = url_and_user(key);
    match memchr::memchr(b'/', url.as_bytes()) {
        Some(i) => (&url[..i], &url[i..], user),
        None => (url, "/", user),
    }
}

/// A cache key's `host/path?query` and its per-user scope value, if any: one SIMD byte search
/// for most keys (the plain URL), the rest only when there is one.
fn url_and_user(key: &str) -> (&str, Option<&str>) {
    match memchr::memchr(b' ', key.as_bytes()) {
        None => (key, None),
        Some(i) => {
            let rest = &key[i..];
            let user = memchr::memmem::find(rest.as_bytes(), b" u:").map(|j| &rest[j + 3..]);
            (&key[..i], user)
        }
    }
}

/// Microseconds since the Unix epoch (0 before it), in u64 arithmetic (`as_micros` is u128).
pub(super) fn micros(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| {
        d.as_secs() as i64 * 1_000_000 + i64::from(d.subsec_micros())
    })
}

/// A request's URL as the journal takes it: hashed where the request is answered, with its
/// text only when the writer may not have it yet (the texts are kept once, in `journal_urls`).
#[derive(Debug, Clone)]
pub struct UrlRef {
    /// xxh3 of `host/path?query`.
    pub(super) url: u64,
    /// xxh3 of the whole cache key when it is more than the URL (keyed headers, a user
    /// scope), else 0.
    pub(super) key_hash: u64,
    /// The per-user scope value hashed with the salt (the client, instead of its address).
    pub(super) user: Option<u64>,
    /// `host/path?query`, for the writer's URL table.
    pub(super) text: Option<Arc<str>>,
}

impl UrlRef {
    /// `key` (a cache key, or `host/path?query`) with its text, hashed with `salt` (the
    /// journal's: see [`Journal::url`](super::Journal::url), which leaves out a text this
    /// thread already sent).
    pub fn with_text(key: &str, salt: u64) -> UrlRef {
        UrlRef::of(key, salt, |_| true)
    }

    /// `key` hashed; its text kept when `send(url hash)` says so. On the request path: no
    /// host/target split, which only the writer needs (for new texts).
    pub(super) fn of(key: &str, salt: u64, send: impl FnOnce(u64) -> bool) -> UrlRef {
        let (plain, user) = url_and_user(key);
        let url = xxhash_rust::xxh3::xxh3_64(plain.as_bytes());
        UrlRef {
            url,
            // The cache key is the plain URL unless it carries keyed headers or a user scope.
            key_hash: if plain.len() == key.len() {
                0
            } else {
                xxhash_rust::xxh3::xxh3_64(key.as_bytes())
            },
            user: user.map(|u| xxhash_rust::xxh3::xxh3_64_with_seed(u.as_bytes(), salt)),
            text: send(url).then(|| Arc::from(plain)),
        }
    }
}

/// What the cache layer noted for the journal about a request it keyed.
#[derive(Debug, Clone, Default)]
pub enum JournalUrl {
    /// Not keyed (refused before, or not a cacheable method): the row takes the URL from the
    /// request.
    #[default]
    NotKeyed,
    /// Left out by `[journal] sample`.
    NotSampled,
    Url(UrlRef),
}

/// The bit fields of `journal_rows.codes`, lowest bit first: (shift, width).
pub(super) mod codes {
    pub const STATUS: (u32, u32) = (0, 10);
    pub const METHOD: (u32, u32) = (10, 4);
    pub const OUTCOME: (u32, u32) = (14, 4);
    pub const CACHE_STATUS: (u32, u32) = (18, 4);
    /// The tier code plus one; 0 for none.
    pub const TIER: (u32, u32) = (22, 3);
    pub const SOURCE: (u32, u32) = (25, 1);
    pub const USER_SCOPED: (u32, u32) = (26, 1);
    pub const SHARED: (u32, u32) = (27, 1);
    pub const WARMED: (u32, u32) = (28, 1);

    /// `value` placed in `field` (masked to its width).
    pub fn put(field: (u32, u32), value: u32) -> u32 {
        (value & ((1 << field.1) - 1)) << field.0
    }

    /// SQL reading `field` out of the `codes` column of `r`.
    #[cfg(feature = "duckdb")]
    pub fn sql(field: (u32, u32)) -> String {
        format!("((r.codes >> {}) & {})", field.0, (1u32 << field.1) - 1)
    }
}

/// One row on its way to the writer: the stored row's numbers (see `schema::ROWS_TABLE`), the
/// route (coded by the writer) and, the first time, the URL's text. About half the size of a
/// [`Row`], and nothing in it was allocated for this request.
#[derive(Debug)]
#[cfg_attr(not(feature = "duckdb"), allow(dead_code))] // read by the writer
pub(crate) struct Entry {
    pub(super) ts_us: i64,
    pub(super) url: u64,
    pub(super) key_hash: u64,
    pub(super) client: u64,
    pub(super) bytes: u64,
    pub(super) import_key: u64,
    pub(super) codes: u32,
    pub(super) origin_us: u32,
    pub(super) total_us: u32,
    pub(super) ttl_s: i32,
    pub(super) route: Arc<str>,
    pub(super) text: Option<Arc<str>>,
}

impl Entry {
    /// `row` as stored, its client hashed with `salt`.
    pub(super) fn of(row: Row, salt: u64) -> Entry {
        // Whole microseconds in u64 arithmetic (`as_micros` is u128).
        let us = |d: Duration| {
            d.as_secs()
                .saturating_mul(1_000_000)
                .saturating_add(u64::from(d.subsec_micros()))
                .min(u64::from(u32::MAX - 1)) as u32
        };
        let o = if row.warm_fetch {
            JournalOutcome::Warm
        } else {
            JournalOutcome::of(row.outcome, row.bypassed)
        };
        let tier = match row.tier {
            Some(t) => t as u32 + 1,
            None if row.origin.is_some()
                && matches!(
                    o,
                    JournalOutcome::Miss | JournalOutcome::Pass | JournalOutcome::Bypass
                ) =>
            {
                4
            }
            None => 0,
        };
        let shared = !row.user_scoped
            && matches!(
                o,
                JournalOutcome::Hit
                    | JournalOutcome::Stale
                    | JournalOutcome::Miss
                    | JournalOutcome::Revalidated
            );
        let client = match (row.url.user, row.peer) {
            (Some(u), _) => u,
            (None, Some(IpAddr::V4(a))) => xxhash_rust::xxh3::xxh3_64_with_seed(&a.octets(), salt),
            (None, Some(IpAddr::V6(a))) => xxhash_rust::xxh3::xxh3_64_with_seed(&a.octets(), salt),
            (None, None) => 0,
        };
        Entry {
            ts_us: micros(row.at),
            url: row.url.url,
            key_hash: row.url.key_hash,
            client,
            bytes: row.bytes,
            import_key: row.import_key.unwrap_or(0),
            codes: codes::put(codes::STATUS, u32::from(row.status))
                | codes::put(codes::METHOD, row.method as u32)
                | codes::put(codes::OUTCOME, o as u32)
                | codes::put(codes::CACHE_STATUS, row.outcome as u32)
                | codes::put(codes::TIER, tier)
                | codes::put(codes::SOURCE, u32::from(row.import_key.is_some()))
                | codes::put(codes::USER_SCOPED, u32::from(row.user_scoped))
                | codes::put(codes::SHARED, u32::from(shared))
                | codes::put(codes::WARMED, u32::from(row.warmed)),
            origin_us: row.origin.map_or(0, |d| us(d).saturating_add(1)),
            total_us: us(row.total),
            ttl_s: row
                .ttl
                .map_or(-1, |d| d.as_secs().min(i32::MAX as u64) as i32),
            route: row.route,
            text: row.url.text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request path hashes what the writer used to: the plain URL, the whole key when it
    /// is more, and the user scope value (salted) instead of the address.
    #[test]
    fn urls_hash_the_plain_url_the_key_and_the_user() {
        use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
        let plain = UrlRef::with_text("a.example/x?q=1", 7);
        assert_eq!(plain.url, xxh3_64(b"a.example/x?q=1"));
        assert_eq!((plain.key_hash, plain.user), (0, None));
        assert_eq!(plain.text.as_deref(), Some("a.example/x?q=1"));

        let key = "a.example/x h:accept=json u:alice";
        let scoped = UrlRef::of(key, 7, |_| false);
        assert_eq!(scoped.url, xxh3_64(b"a.example/x"));
        assert_eq!(scoped.key_hash, xxh3_64(key.as_bytes()));
        assert_eq!(scoped.user, Some(xxh3_64_with_seed(b"alice", 7)));
        assert!(scoped.text.is_none());
        let headers_only = UrlRef::with_text("a.example/x h:accept=json", 7);
        assert_eq!(headers_only.user, None);
        assert_eq!(headers_only.text.as_deref(), Some("a.example/x"));
    }

    /// A row's client is its user's hash when it has one, else its address's, never the address.
    #[test]
    fn entries_hash_the_client_and_pack_the_codes() {
        let row = |url: UrlRef| Row {
            at: std::time::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            method: MethodLabel::Get,
            url,
            route: Arc::from("/x"),
            status: 200,
            outcome: Outcome::Hit,
            bypassed: false,
            tier: Some(TierName::L2),
            bytes: 10,
            origin: None,
            total: Duration::from_micros(1_500),
            ttl: Some(Duration::from_secs(60)),
            peer: Some(IpAddr::from([10, 0, 0, 1])),
            user_scoped: false,
            warm_fetch: false,
            warmed: false,
            import_key: None,
        };
        let e = Entry::of(row(UrlRef::with_text("a.example/x", 9)), 9);
        assert_eq!(e.ts_us, 1_700_000_000_123_456);
        assert_eq!(
            e.client,
            xxhash_rust::xxh3::xxh3_64_with_seed(&[10, 0, 0, 1], 9)
        );
        assert_eq!((e.origin_us, e.total_us, e.ttl_s), (0, 1_500, 60));
        assert_eq!(e.codes & 0x3ff, 200);
        assert_eq!((e.codes >> codes::TIER.0) & 7, TierName::L2 as u32 + 1);
        assert_eq!((e.codes >> codes::SHARED.0) & 1, 1);
        let scoped = Entry::of(row(UrlRef::with_text("a.example/x u:bob", 9)), 9);
        assert_eq!(
            scoped.client,
            xxhash_rust::xxh3::xxh3_64_with_seed(b"bob", 9)
        );
    }

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
