//! The warmer's seam in the cache: how the cache knows a request is one of the warmer's own
//! fetches, and tells the warmer what clients ask for and are served.
//!
//! A warm fetch is an ordinary HTTP request to tierd's own listener (as Varnish operators warm
//! with requests that force a miss), so it goes through every rule, key, tier and storage
//! decision a client's request goes through. It carries [`WARM_HEADER`] with the warmer's
//! secret; the cache removes that header from every request (the origin never sees it),
//! exempts a genuine one from client rate limits and request metrics, journals it as outcome
//! `warm`, and answers it with [`WARM_RESULT_HEADER`] saying what it did.

/// The request header a warm fetch carries, with the warmer's per-process secret.
pub const WARM_HEADER: &str = "tierd-warm";
/// The response header that tells the warmer what its fetch did:
/// `outcome=<cache status>; tier=<tier>; ttl=<seconds>` (tier and ttl when known).
pub const WARM_RESULT_HEADER: &str = "tierd-warm-result";

/// In a request's extensions: the request is one of the warmer's fetches.
#[derive(Debug, Clone, Copy)]
pub struct WarmFetch;

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
}
