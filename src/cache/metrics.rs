//! The cache layer's metrics, registered by the cache into the registry it is given: what the
//! response cache did besides serving (304s, collapsed and background fetches, responses not
//! stored, invalidations by unsafe methods), its forwards to the origin, and purges on every
//! node (`tierd_purges_total`, the pub/sub bus's lag and messages, L1 resyncs).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::metrics::{reg, OriginError, LATENCY_BUCKETS};
use crate::types::TierName;

/// The response cache's metrics and its origin's.
pub struct CacheMetrics {
    enabled: bool,
    not_modified: IntCounter,
    /// Requests sent to the origin.
    pub origin_requests: IntCounter,
    origin_errors: Vec<IntCounter>,
    /// Time from sending a request to the origin to its response head.
    pub origin_latency: Histogram,
    /// The gateway's requests sent to the origin and not yet answered (to the response head).
    pub origin_in_flight: IntGauge,
    /// Pooled origin connections the gateway may hold (per worker, times workers).
    pub origin_connections_max: IntGauge,
    /// Background refreshes that did not store a fresh response (origin failure, an answer
    /// that may not be stored).
    pub background_refresh_failures: IntCounter,
    /// Requests that waited on another request's origin fetch.
    pub coalesced_waiters: IntCounter,
    /// Waiters whose leader's fetch outlasted their wait, by result (stale, gateway_timeout).
    pub coalesce_timeouts: IntCounterVec,
    /// Background refreshes started for stale-while-revalidate.
    pub background_refreshes: IntCounter,
    not_stored: IntCounterVec,
    /// URIs invalidated by unsafe methods.
    pub invalidations: IntCounter,
}

impl CacheMetrics {
    /// Creates the metrics and registers them in `r`; with `enabled` false the per-request
    /// 304 count is skipped (`[metrics] enabled = false`).
    pub fn register(r: &Registry, enabled: bool) -> CacheMetrics {
        let origin_errors_vec = reg(
            r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_origin_errors_total",
                    "Origin requests that failed, by kind (connect, timeout, protocol, body, 5xx)",
                ),
                &["kind"],
            )
            .expect("static metric definition"),
        );
        let m = CacheMetrics {
            enabled,
            not_modified: reg(
                r,
                IntCounter::new("tierd_not_modified_total", "304 responses sent to clients")
                    .expect("static metric definition"),
            ),
            origin_requests: reg(
                r,
                IntCounter::new("tierd_origin_requests_total", "Requests sent to the origin")
                    .expect("static metric definition"),
            ),
            origin_errors: OriginError::ALL
                .iter()
                .map(|k| origin_errors_vec.with_label_values(&[k.as_str()]))
                .collect(),
            origin_latency: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tierd_origin_request_duration_seconds",
                        "Time from sending a request to the origin to its response head",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("static metric definition"),
            ),
            origin_in_flight: reg(
                r,
                IntGauge::new(
                    "tierd_origin_requests_in_flight",
                    "Requests the gateway sent to the origin and has no response head for yet",
                )
                .expect("static metric definition"),
            ),
            origin_connections_max: reg(
                r,
                IntGauge::new(
                    "tierd_origin_connections_max",
                    "Origin connections the gateway may hold (upstream.max_connections per \
                     worker, times workers); 0 in the library",
                )
                .expect("static metric definition"),
            ),
            background_refresh_failures: reg(
                r,
                IntCounter::new(
                    "tierd_background_refresh_failures_total",
                    "Background refreshes (stale-while-revalidate) that stored nothing: the \
                     origin failed or answered what may not be stored",
                )
                .expect("static metric definition"),
            ),
            coalesced_waiters: reg(
                r,
                IntCounter::new(
                    "tierd_coalesced_waiters_total",
                    "Requests that waited on another request's origin fetch",
                )
                .expect("static metric definition"),
            ),
            coalesce_timeouts: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_coalesce_timeouts_total",
                        "Requests that stopped waiting on another request's slow origin fetch, \
                         by result (stale: served a stale copy; gateway_timeout: answered 504)",
                    ),
                    &["result"],
                )
                .expect("static metric definition"),
            ),
            background_refreshes: reg(
                r,
                IntCounter::new(
                    "tierd_background_refreshes_total",
                    "Background refreshes started for stale-while-revalidate",
                )
                .expect("static metric definition"),
            ),
            not_stored: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_not_stored_total",
                        "Origin responses not stored, by reason",
                    ),
                    &["reason"],
                )
                .expect("static metric definition"),
            ),
            invalidations: reg(
                r,
                IntCounter::new(
                    "tierd_invalidations_total",
                    "URIs invalidated by unsafe methods",
                )
                .expect("static metric definition"),
            ),
        };
        // Every bounded combination exists from the start, so `rate()` and `increase()` in
        // dashboards and alerts read 0 instead of nothing before the first event.
        for r in ["stale", "gateway_timeout"] {
            m.coalesce_timeouts.with_label_values(&[r]);
        }
        m
    }

    /// Counts a 304 sent to a client.
    #[inline]
    pub fn not_modified(&self) {
        if self.enabled {
            self.not_modified.inc();
        }
    }

    /// Counts an origin request that failed.
    pub fn origin_error(&self, k: OriginError) {
        self.origin_errors[k as usize].inc();
    }

    /// Counts an origin response not stored, by reason.
    pub fn not_stored(&self, reason: &'static str) {
        self.not_stored.with_label_values(&[reason]).inc();
    }
}

/// Purges applied on this node, and the cross-node invalidation bus.
pub struct InvalidationMetrics {
    /// Purges applied on this node, by selector kind and source.
    pub purges: IntCounterVec,
    /// Entries removed by purges, by tier.
    pub purged_entries: IntCounterVec,
    /// Time from a purge on one node to its L1 removal on this node.
    pub invalidation_lag: Histogram,
    /// Invalidation messages on Redis pub/sub, by direction (published, received, rejected).
    pub invalidation_messages: IntCounterVec,
    /// Whole-L1 clears because cross-node invalidations may have been missed, by reason
    /// (resubscribed, backlog).
    pub l1_resyncs: IntCounterVec,
}

impl InvalidationMetrics {
    /// Creates the metrics and registers them in `r`, every bounded series present from the start.
    pub fn register(r: &Registry) -> InvalidationMetrics {
        let m = InvalidationMetrics {
            purges: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_purges_total",
                        "Purges applied on this node, by selector kind and source (admin, rule, \
                         method, remote: published by another node)",
                    ),
                    &["kind", "source"],
                )
                .expect("static metric definition"),
            ),
            purged_entries: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_purged_entries_total",
                        "Entries removed by purges, by tier",
                    ),
                    &["tier"],
                )
                .expect("static metric definition"),
            ),
            invalidation_lag: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tierd_invalidation_lag_seconds",
                        "Time from a purge on one node to its L1 removal on this node \
                         (publish to apply, across Redis pub/sub)",
                    )
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 1.0,
                    ]),
                )
                .expect("static metric definition"),
            ),
            invalidation_messages: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_invalidation_messages_total",
                        "Invalidation messages on Redis pub/sub, by direction (published, \
                         received, rejected)",
                    ),
                    &["direction"],
                )
                .expect("static metric definition"),
            ),
            l1_resyncs: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_l1_resyncs_total",
                        "L1 cleared whole because invalidations from other nodes may have been \
                         missed, by reason (resubscribed, backlog)",
                    ),
                    &["reason"],
                )
                .expect("static metric definition"),
            ),
        };
        for kind in ["tag", "url", "prefix", "user", "all"] {
            for source in ["admin", "rule", "method", "value", "remote"] {
                m.purges.with_label_values(&[kind, source]);
            }
        }
        for t in TierName::ALL {
            m.purged_entries.with_label_values(&[t.as_str()]);
        }
        for d in ["published", "received", "rejected"] {
            m.invalidation_messages.with_label_values(&[d]);
        }
        for r in ["resubscribed", "backlog"] {
            m.l1_resyncs.with_label_values(&[r]);
        }
        m
    }
}
