//! Prometheus metrics: one [`Metrics`] struct per app state, registered into its own registry
//! (no globals, so tests can build many gateways in one process).
//!
//! Label values are bounded enums; the hot path touches pre-resolved children only.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix_web::http::Method;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::types::TierName;

mod counters;
mod labels;
mod registry;

pub use crate::store::TierMetrics;
pub use counters::RouteCounters;
pub use labels::*;
pub use registry::{reg, LATENCY_BUCKETS};

/// What the cache layer did with a request, left in the request's extensions.
#[derive(Clone)]
pub struct Served {
    pub outcome: Outcome,
    /// The tier whose entry answered (hits, stale serves, revalidations).
    pub tier: Option<TierName>,
    /// The counters of the rule that matched (its template is the `route` label).
    pub counters: Arc<RouteCounters>,
}

/// The `route` label of requests no rule matched.
pub const OTHER_ROUTE: &str = "other";

/// All of tierd's metrics.
pub struct Metrics {
    enabled: bool,
    /// The tiers' metrics (the store registers them).
    pub store: crate::store::StoreMetrics,
    registry: Registry,
    requests_vec: IntCounterVec,
    request_seconds: Vec<Histogram>,
    /// Body bytes sent to clients: `[from cache, from the origin]`.
    response_bytes: [IntCounter; 2],
    stale_served: [IntCounter; 3],
    pub purges: IntCounterVec,
    pub purged_entries: IntCounterVec,
    pub invalidation_lag: Histogram,
    pub invalidation_messages: IntCounterVec,
    /// Whole-L1 clears because cross-node invalidations may have been missed, by reason
    /// (resubscribed, backlog).
    pub l1_resyncs: IntCounterVec,
    pub rule_reloads: IntCounterVec,
    pub rules_loaded: IntGauge,
    not_modified: IntCounter,
    pub origin_requests: IntCounter,
    origin_errors: Vec<IntCounter>,
    pub origin_latency: Histogram,
    pub coalesced_waiters: IntCounter,
    /// Waiters whose leader's fetch outlasted their wait, by result (stale, gateway_timeout).
    pub coalesce_timeouts: IntCounterVec,
    pub background_refreshes: IntCounter,
    not_stored: IntCounterVec,
    pub invalidations: IntCounter,
    /// L3 files rewritten to reclaim the space of deleted rows.
    pub l3_compactions: IntCounter,
    /// The rate limiter's own metrics (it registers them).
    pub rate_limit: crate::ratelimit::RateLimitMetrics,
    /// Requests refused by request hardening, by reason.
    pub rejected: IntCounterVec,
    /// Request headers removed before forwarding, by reason (see [`crate::http::hygiene`]).
    headers_stripped: Vec<IntCounter>,
}

impl Metrics {
    /// Creates and registers every metric, recording on.
    pub fn new() -> Self {
        Self::with_recording(true)
    }

    /// Creates and registers every metric. With `enabled` false the per-request recording
    /// (request counters and latency, tier lookups and their timing, bytes served) is skipped:
    /// `[metrics] enabled = false`, and the baseline of the metrics-cost benchmark.
    pub fn with_recording(enabled: bool) -> Self {
        let r = Registry::new();
        let requests_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_requests_total",
                    "Requests answered by the gateway, by route template (the matching rule's \
                     path, or \"other\"), method, status class and cache status",
                ),
                &["route", "method", "status_class", "cache_status"],
            )
            .expect("static metric definition"),
        );
        let request_vec = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "tierd_request_duration_seconds",
                    "Time from a request's arrival to its response head, by cache status",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["cache_status"],
            )
            .expect("static metric definition"),
        );
        let request_seconds = Outcome::ALL
            .iter()
            .map(|o| request_vec.with_label_values(&[o.as_str()]))
            .collect();
        let bytes_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_response_bytes_total",
                    "Body bytes sent to clients, by source: cache (hits, stale, collapsed, \
                     revalidated) or origin (misses and passes)",
                ),
                &["source"],
            )
            .expect("static metric definition"),
        );
        let response_bytes = [
            bytes_vec.with_label_values(&["cache"]),
            bytes_vec.with_label_values(&["origin"]),
        ];
        let stale_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_stale_served_total",
                    "Stale responses served, by reason (while_revalidate, if_error, \
                     origin_limited)",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
        );
        let stale_served = [
            stale_vec.with_label_values(&["while_revalidate"]),
            stale_vec.with_label_values(&["if_error"]),
            stale_vec.with_label_values(&["origin_limited"]),
        ];
        let build_info = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "tierd_build_info",
                    "Always 1; the labels say which tierd build is running",
                ),
                &["version", "rustc", "duckdb"],
            )
            .expect("static metric definition"),
        );
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                env!("TIERD_RUSTC_VERSION"),
                env!("TIERD_DUCKDB_VERSION"),
            ])
            .set(1);
        #[cfg(target_os = "linux")]
        if let Err(e) = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::error!(error = %e, "process metrics registration failed");
        }
        let origin_errors_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_origin_errors_total",
                    "Origin requests that failed, by kind (connect, timeout, protocol, body, 5xx)",
                ),
                &["kind"],
            )
            .expect("static metric definition"),
        );
        let origin_errors = OriginError::ALL
            .iter()
            .map(|k| origin_errors_vec.with_label_values(&[k.as_str()]))
            .collect();
        let not_stored = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_not_stored_total",
                    "Origin responses not stored, by reason",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
        );
        let store = crate::store::StoreMetrics::register(&r, enabled);
        let m = Metrics {
            enabled,
            store,
            requests_vec,
            request_seconds,
            response_bytes,
            stale_served,
            purges: reg(
                &r,
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
                &r,
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
                &r,
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
                &r,
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
                &r,
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
            rule_reloads: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_rule_reloads_total",
                        "Rule reloads, by result (ok, rejected)",
                    ),
                    &["result"],
                )
                .expect("static metric definition"),
            ),
            rules_loaded: reg(
                &r,
                IntGauge::new("tierd_rules", "Rules in force").expect("static metric definition"),
            ),
            not_modified: reg(
                &r,
                IntCounter::new("tierd_not_modified_total", "304 responses sent to clients")
                    .expect("static metric definition"),
            ),
            origin_requests: reg(
                &r,
                IntCounter::new("tierd_origin_requests_total", "Requests sent to the origin")
                    .expect("static metric definition"),
            ),
            origin_errors,
            origin_latency: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tierd_origin_request_duration_seconds",
                        "Time from sending a request to the origin to its response head",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("static metric definition"),
            ),
            coalesced_waiters: reg(
                &r,
                IntCounter::new(
                    "tierd_coalesced_waiters_total",
                    "Requests that waited on another request's origin fetch",
                )
                .expect("static metric definition"),
            ),
            coalesce_timeouts: reg(
                &r,
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
                &r,
                IntCounter::new(
                    "tierd_background_refreshes_total",
                    "Background refreshes started for stale-while-revalidate",
                )
                .expect("static metric definition"),
            ),
            not_stored,
            l3_compactions: reg(
                &r,
                IntCounter::new(
                    "tierd_l3_compactions_total",
                    "L3 files rewritten because deleted rows' space took the file past 1.5x \
                     tiers.l3.max_bytes",
                )
                .expect("static metric definition"),
            ),
            invalidations: reg(
                &r,
                IntCounter::new(
                    "tierd_invalidations_total",
                    "URIs invalidated by unsafe methods",
                )
                .expect("static metric definition"),
            ),
            rate_limit: crate::ratelimit::RateLimitMetrics::register(&r),
            rejected: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_requests_rejected_total",
                        "Requests refused by request hardening, by reason",
                    ),
                    &["reason"],
                )
                .expect("static metric definition"),
            ),
            headers_stripped: {
                let v = reg(
                    &r,
                    IntCounterVec::new(
                        Opts::new(
                            "tierd_request_headers_stripped_total",
                            "Request headers removed before forwarding (listed in \
                             cache.strip_request_headers, underscore in the name, or a \
                             forwarding claim from an untrusted peer), by reason",
                        ),
                        &["reason"],
                    )
                    .expect("static metric definition"),
                );
                crate::http::hygiene::Stripped::ALL
                    .iter()
                    .map(|s| v.with_label_values(&[s.as_str()]))
                    .collect()
            },
            registry: r,
        };
        // Every bounded combination exists from the start, so `rate()` and `increase()` in
        // dashboards and alerts read 0 instead of nothing before the first event.
        for kind in ["tag", "url", "prefix"] {
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
        for r in ["stale", "gateway_timeout"] {
            m.coalesce_timeouts.with_label_values(&[r]);
        }
        for r in ["resubscribed", "backlog"] {
            m.l1_resyncs.with_label_values(&[r]);
        }
        for r in ["ok", "rejected"] {
            m.rule_reloads.with_label_values(&[r]);
        }
        for r in crate::types::Rejection::ALL {
            m.rejected.with_label_values(&[r.as_str()]);
        }
        m
    }

    /// Counts one request header removed by [`crate::http::hygiene`].
    #[inline]
    pub fn headers_stripped(&self, why: crate::http::hygiene::Stripped) {
        self.headers_stripped[why as usize].inc();
    }

    /// Whether per-request recording is on (`[metrics] enabled`).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The request counters of `route` (a rule's template, or [`OTHER_ROUTE`]).
    pub fn route_counters(&self, route: &str) -> RouteCounters {
        RouteCounters {
            enabled: self.enabled,
            route: route.into(),
            vec: self.requests_vec.clone(),
            children: (0..Outcome::COUNT * MethodLabel::COUNT * StatusClass::COUNT)
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// Records one answered request: its latency to the response head and the body bytes sent.
    #[inline]
    pub fn observe_request(&self, o: Outcome, started: Instant, body_bytes: u64) {
        if !self.enabled {
            return;
        }
        self.request_seconds[o as usize].observe(started.elapsed().as_secs_f64());
        self.response_bytes[usize::from(!o.from_cache())].inc_by(body_bytes);
        match o {
            Outcome::StaleWhileRevalidate => self.stale_served[0].inc(),
            Outcome::StaleIfError => self.stale_served[1].inc(),
            Outcome::StaleOriginLimited => self.stale_served[2].inc(),
            _ => {}
        }
    }

    /// Counts body bytes sent after the response head (streamed bodies).
    pub fn add_response_bytes(&self, from_cache: bool, n: u64) {
        if self.enabled {
            self.response_bytes[usize::from(!from_cache)].inc_by(n);
        }
    }

    /// Counts a 304 sent to a client.
    #[inline]
    pub fn not_modified(&self) {
        if self.enabled {
            self.not_modified.inc();
        }
    }

    /// Stops exporting `t`'s entries and bytes: a tier that cannot count them (Redis shares
    /// its keyspace; its size comes from redis_exporter) exports nothing rather than a 0.
    pub fn size_unknown(&self, t: TierName) {
        self.store.size_unknown(t);
    }

    /// One tier's metrics.
    #[inline]
    pub fn tier(&self, t: TierName) -> &TierMetrics {
        self.store.tier(t)
    }

    #[inline]
    pub fn l1_eviction(&self, c: EvictionCause) {
        self.store.tier(TierName::L1).evictions[c as usize].inc();
    }

    pub fn origin_error(&self, k: OriginError) {
        self.origin_errors[k as usize].inc();
    }

    /// The registry every metric is registered in; `/metrics` renders it whole, so metrics an
    /// application registers here appear there too.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn not_stored(&self, reason: &'static str) {
        self.not_stored.with_label_values(&[reason]).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
