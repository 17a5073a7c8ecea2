//! What to do with a GET or HEAD once the tiers have answered: a pure function of the request's
//! facts and what the lookup found, with its table tests.

use crate::http::cache_status::Fwd;
use crate::http::storable::{self, RequestFacts, Reuse, StoredFacts};

/// The outcome of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Serve the stored response (fresh, or stale within what the client accepts; RFC 9111 §4.2).
    ServeFresh,
    /// Serve the stale response and revalidate it in the background (RFC 5861 §3).
    ServeStaleAndRefresh,
    /// Nothing usable is stored and the client forbade a forward: 504 (RFC 9111 §5.2.1.7).
    GatewayTimeout,
    /// Go to the origin; `Fwd` is the `Cache-Status` `fwd` parameter (RFC 9211 §2.2).
    Forward(Fwd),
}

/// What the tiers had for the request's key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lookup {
    /// The variant the request selects, with its age now.
    pub(super) found: Option<StoredFacts>,
    /// Something is stored under the key, even if no variant matched (`Vary`).
    pub(super) slot_seen: bool,
}

/// Decides from the request's facts, what was found, and whether the matched rule asks for a
/// refresh (its `refresh_query_params` are present).
pub(super) fn decide(req: &RequestFacts, lookup: Lookup, refresh: bool) -> Decision {
    if let Some(stored) = lookup.found {
        if !refresh {
            match storable::reuse(req, stored) {
                Reuse::Fresh => return Decision::ServeFresh,
                Reuse::StaleWhileRevalidate => return Decision::ServeStaleAndRefresh,
                Reuse::Forward => {}
            }
        }
    }
    if req.cc.only_if_cached {
        return Decision::GatewayTimeout;
    }
    Decision::Forward(match lookup.found {
        Some(_) if refresh || req.requires_validation() => Fwd::Request,
        Some(_) => Fwd::Stale,
        None if lookup.slot_seen => Fwd::VaryMiss,
        None => Fwd::UriMiss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    fn req(headers: &[(&str, &str)]) -> RequestFacts {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        RequestFacts::from_headers(&h)
    }

    fn stored(lifetime: u64, age: u64, swr: u64) -> StoredFacts {
        StoredFacts {
            lifetime,
            age,
            stale_while_revalidate: swr,
            no_cache: false,
            no_stale: false,
        }
    }

    fn found(s: StoredFacts) -> Lookup {
        Lookup {
            found: Some(s),
            slot_seen: true,
        }
    }

    const NOTHING: Lookup = Lookup {
        found: None,
        slot_seen: false,
    };

    #[test]
    fn decisions() {
        use Decision::*;
        let cases: Vec<(&str, RequestFacts, Lookup, bool, Decision)> = vec![
            // RFC 9111 §4.2: a fresh response is served.
            (
                "fresh",
                req(&[]),
                found(stored(60, 10, 0)),
                false,
                ServeFresh,
            ),
            // §4.2.4: stale, no stale window: validated with the origin.
            (
                "stale",
                req(&[]),
                found(stored(60, 61, 0)),
                false,
                Forward(Fwd::Stale),
            ),
            // RFC 5861 §3: stale within stale-while-revalidate: served, refreshed behind.
            (
                "swr",
                req(&[]),
                found(stored(60, 70, 30)),
                false,
                ServeStaleAndRefresh,
            ),
            (
                "past swr",
                req(&[]),
                found(stored(60, 100, 30)),
                false,
                Forward(Fwd::Stale),
            ),
            // §5.2.1.4: request no-cache: validate even a fresh response.
            (
                "no-cache",
                req(&[("cache-control", "no-cache")]),
                found(stored(60, 10, 0)),
                false,
                Forward(Fwd::Request),
            ),
            // §5.2.1.1: max-age=0 is the same.
            (
                "max-age=0",
                req(&[("cache-control", "max-age=0")]),
                found(stored(60, 10, 0)),
                false,
                Forward(Fwd::Request),
            ),
            // §5.2.1.2: max-stale accepts a stale response outright.
            (
                "max-stale",
                req(&[("cache-control", "max-stale=100")]),
                found(stored(60, 90, 0)),
                false,
                ServeFresh,
            ),
            // A rule's refresh parameter forwards whatever is stored.
            (
                "refresh",
                req(&[]),
                found(stored(60, 10, 0)),
                true,
                Forward(Fwd::Request),
            ),
            // RFC 9211 §2.2: nothing under the key, or no variant for this request.
            ("uri miss", req(&[]), NOTHING, false, Forward(Fwd::UriMiss)),
            (
                "vary miss",
                req(&[]),
                Lookup {
                    found: None,
                    slot_seen: true,
                },
                false,
                Forward(Fwd::VaryMiss),
            ),
            // §5.2.1.7: only-if-cached with nothing usable: 504, never a forward.
            (
                "only-if-cached miss",
                req(&[("cache-control", "only-if-cached")]),
                NOTHING,
                false,
                GatewayTimeout,
            ),
            (
                "only-if-cached stale",
                req(&[("cache-control", "only-if-cached")]),
                found(stored(60, 61, 0)),
                false,
                GatewayTimeout,
            ),
            (
                "only-if-cached fresh",
                req(&[("cache-control", "only-if-cached")]),
                found(stored(60, 1, 0)),
                false,
                ServeFresh,
            ),
        ];
        for (name, r, lookup, refresh, want) in cases {
            assert_eq!(decide(&r, lookup, refresh), want, "{name}");
        }
    }
}
