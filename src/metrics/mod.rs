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
    /// The cache key as the journal takes it, when a journal records requests.
    pub key: crate::journal::JournalUrl,
    /// The freshness lifetime of the entry served or stored.
    pub ttl: Option<std::time::Duration>,
    /// The request carried a per-user scope value: its answer is stored privately.
    pub private: bool,
    /// Sent to the origin without looking in the cache (a rule's bypass, a body, a range).
    pub bypassed: bool,
    /// The request was one of the warmer's fetches (not a client's).
    pub warm_fetch: bool,
    /// Served from an entry a warm fetch stored.
    pub warmed: bool,
}

impl Served {
    /// What a layer that answered on its own (a refusal) did: no key, entry or lifetime.
    pub fn answered(outcome: Outcome, counters: Arc<RouteCounters>) -> Served {
        Served {
            outcome,
            tier: None,
            counters,
            key: crate::journal::JournalUrl::NotKeyed,
            ttl: None,
            private: false,
            bypassed: false,
            warm_fetch: false,
            warmed: false,
        }
    }
}

/// How long the inner service (the origin, or an application's handlers) took to answer a
/// request, left in its extensions by the cache layer.
#[derive(Clone, Copy, Debug)]
pub struct OriginTime(pub std::time::Duration);

/// A gauge incremented while this guard lives (a request in flight, an open connection).
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    /// Increments `g` until the guard is dropped.
    pub fn new(g: IntGauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `route` label of requests no rule matched.
pub const OTHER_ROUTE: &str = "other";

/// All of tierd's metrics, in one registry: the request metrics (recorded by the observe
/// layer) are defined here; every other component registers its own and is composed here.
pub struct Metrics {
    enabled: bool,
    registry: Registry,
    requests_vec: IntCounterVec,
    request_seconds: HistogramVec,
    /// Requests the observe layer has begun and not yet answered (to the response head).
    in_flight: IntGauge,
    /// Client connections open on the gateway's listener.
    connections: IntGauge,
    connections_max: IntGauge,
    /// Body bytes sent to clients: `[from cache, from the origin]`.
    response_bytes: [IntCounter; 2],
    stale_served: [IntCounter; 3],
    /// The tiers' metrics (the store registers them).
    pub store: crate::store::StoreMetrics,
    /// The response cache's and its origin's (the cache registers them).
    pub cache: crate::cache::CacheMetrics,
    /// Purges and the cross-node invalidation bus (the cache registers them).
    pub invalidation: crate::cache::InvalidationMetrics,
    /// The rules' (the policy layer registers them).
    pub rules: crate::policy::RuleMetrics,
    /// The rate limiter's (it registers them).
    pub rate_limit: crate::ratelimit::RateLimitMetrics,
    /// Request hygiene's (the guard registers them).
    pub guard: crate::guard::GuardMetrics,
    /// The access journal's (it registers them; zeros while it is off).
    pub journal: Arc<crate::journal::JournalMetrics>,
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
        let request_seconds = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "tierd_request_duration_seconds",
                    "Time from a request's arrival to its response head, by route template and \
                     cache status",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route", "cache_status"],
            )
            .expect("static metric definition"),
        );
        let in_flight = reg(
            &r,
            IntGauge::new(
                "tierd_requests_in_flight",
                "Requests received and not yet answered (to the response head)",
            )
            .expect("static metric definition"),
        );
        let connections_max = reg(
            &r,
            IntGauge::new(
                "tierd_connections_max",
                "Client connections the gateway's listener accepts at most (server.max_connections \
                 per worker, times workers)",
            )
            .expect("static metric definition"),
        );
        let connections = reg(
            &r,
            IntGauge::new(
                "tierd_connections_open",
                "Client connections open on the gateway's listener (the library's app counts none)",
            )
            .expect("static metric definition"),
        );
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
                &["version", "revision", "rustc", "duckdb"],
            )
            .expect("static metric definition"),
        );
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                env!("TIERD_GIT_REVISION"),
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
        Metrics {
            enabled,
            requests_vec,
            request_seconds,
            in_flight,
            connections,
            connections_max,
            response_bytes,
            stale_served,
            store: crate::store::StoreMetrics::register(&r, enabled),
            cache: crate::cache::CacheMetrics::register(&r, enabled),
            invalidation: crate::cache::InvalidationMetrics::register(&r),
            rules: crate::policy::RuleMetrics::register(&r),
            rate_limit: crate::ratelimit::RateLimitMetrics::register(&r),
            guard: crate::guard::GuardMetrics::register(&r),
            journal: Arc::new(crate::journal::JournalMetrics::register(&r)),
            registry: r,
        }
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
            seconds_vec: self.request_seconds.clone(),
            seconds: (0..Outcome::COUNT).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Records one answered request of `route`: its latency to the response head and the body
    /// bytes sent.
    #[inline]
    pub fn observe_request(
        &self,
        o: Outcome,
        route: &RouteCounters,
        started: Instant,
        body_bytes: u64,
    ) {
        if !self.enabled {
            return;
        }
        route.seconds(o).observe(started.elapsed().as_secs_f64());
        self.response_bytes[usize::from(!o.from_cache())].inc_by(body_bytes);
        match o {
            Outcome::StaleWhileRevalidate => self.stale_served[0].inc(),
            Outcome::StaleIfError => self.stale_served[1].inc(),
            Outcome::StaleOriginLimited => self.stale_served[2].inc(),
            _ => {}
        }
    }

    /// Requests answered with `o` since start, over every route (0 with per-request metrics
    /// off). Reads every route's histogram: for `/_tierd/stats`, not the request path.
    pub fn answered(&self, o: Outcome) -> u64 {
        use prometheus::core::Collector;
        self.request_seconds
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "cache_status" && l.value() == o.as_str())
            })
            .map(|m| m.get_histogram().get_sample_count())
            .sum()
    }

    /// Counts a request begun; the guard counts it answered when dropped.
    #[inline]
    pub fn begin_request(&self) -> Option<GaugeGuard> {
        self.enabled
            .then(|| GaugeGuard::new(self.in_flight.clone()))
    }

    /// Sets the gateway's connection capacity.
    pub fn set_connections_max(&self, n: i64) {
        self.connections_max.set(n);
    }

    /// Counts a client connection opened; the guard counts it closed when dropped.
    pub fn open_connection(&self) -> GaugeGuard {
        GaugeGuard::new(self.connections.clone())
    }

    /// Counts body bytes sent after the response head (streamed bodies).
    pub fn add_response_bytes(&self, from_cache: bool, n: u64) {
        if self.enabled {
            self.response_bytes[usize::from(!from_cache)].inc_by(n);
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

    /// The registry every metric is registered in; `/metrics` renders it whole, so metrics an
    /// application registers here appear there too.
    pub fn registry(&self) -> &Registry {
        &self.registry
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
