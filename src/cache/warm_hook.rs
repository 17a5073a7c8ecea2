//! The warmer's seam in the cache: how the cache knows a request is one of the warmer's own
//! fetches, and tells the warmer what clients ask for and are served.
//!
//! A warm fetch is an ordinary HTTP request to tierd's own listener (as Varnish operators warm
//! with requests that force a miss), so it goes through every rule, key, tier and storage
//! decision a client's request goes through. It carries [`WARM_HEADER`] with the warmer's
//! secret; the cache removes that header from every request (the origin never sees it),
//! exempts a genuine one from client rate limits and request metrics, journals it as outcome
//! `warm`, and answers it with [`WARM_RESULT_HEADER`] saying what it did.

/// The request header a warm fetch carries: the warmer's per-process secret, then
/// `; refresh` when the fetch must go to the origin even for a fresh entry (refresh-ahead).
pub const WARM_HEADER: &str = "tierd-warm";
/// The response header that tells the warmer what its fetch did:
/// `outcome=<cache status>; tier=<tier>; ttl=<seconds>` (tier and ttl when known).
pub const WARM_RESULT_HEADER: &str = "tierd-warm-result";

/// In a request's extensions: the request is one of the warmer's fetches.
#[derive(Debug, Clone, Copy)]
pub struct WarmFetch {
    /// Revalidate (or fetch) even a fresh entry.
    pub refresh: bool,
}

/// A [`WARM_HEADER`] value: the secret, and whether it asks for a refresh.
pub fn parse_marker(value: &[u8]) -> (&[u8], bool) {
    match value.iter().position(|&b| b == b';') {
        Some(i) => {
            let rest = &value[i + 1..];
            (
                trim(&value[..i]),
                trim(rest).eq_ignore_ascii_case(b"refresh"),
            )
        }
        None => (trim(value), false),
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// The warmer, as the cache calls it. Every method runs on the request path: it must not block.
pub trait WarmHook: Send + Sync + 'static {
    /// Whether a [`WARM_HEADER`] value is this warmer's secret.
    fn is_own(&self, marker: &[u8]) -> bool;
    /// A client asked for `key` (a GET) on the rule whose template is `route` (`other` when no
    /// rule matched): the warmer may fetch what usually follows it.
    fn requested(&self, key: &str, route: &str);
    /// A client was served `key` from a stored entry: true when a warm fetch stored that entry
    /// (the journal marks the request; the first one counts the warm fetch as used).
    fn served_entry(&self, key: &str) -> bool;
    /// Something was purged on this node: rules with `warm_after_purge` have their hot URLs
    /// fetched again.
    fn purged(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_a_secret_and_maybe_a_refresh() {
        assert_eq!(parse_marker(b"abc"), (&b"abc"[..], false));
        assert_eq!(parse_marker(b" abc ; refresh "), (&b"abc"[..], true));
        assert_eq!(parse_marker(b"abc;REFRESH"), (&b"abc"[..], true));
        assert_eq!(parse_marker(b"abc; refresh; more"), (&b"abc"[..], false));
        assert_eq!(parse_marker(b";"), (&b""[..], false));
        assert_eq!(parse_marker(b""), (&b""[..], false));
        assert_eq!(parse_marker(b"   "), (&b""[..], false));
    }
}
