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

/// What the cache layer did with a request, left in the request's extensions.
#[derive(Clone)]
pub struct Served {
    pub outcome: Outcome,
    /// The tier whose entry answered (hits, stale serves, revalidations).
    pub tier: Option<TierName>,
    /// The counters of the rule that matched (its template is the `route` label).
    pub counters: Arc<RouteCounters>,
}

/// Histogram buckets for operations that can take from tens of microseconds (an L1 hit) to
/// seconds (a slow origin).
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// The `route` label of requests no rule matched.
pub const OTHER_ROUTE: &str = "other";

/// What the cache did with a request; feeds the `cache_status` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fresh response from storage.
    Hit,
    /// Stale response from storage while a background refresh runs.
    StaleWhileRevalidate,
    /// Stale response from storage because the origin failed.
    StaleIfError,
    /// Waited for another request's fetch and shared its stored response.
    Collapsed,
    /// Fetched from the origin and stored.
    Miss,
    /// Stale entry validated by the origin with a 304.
    Revalidated,
    /// Fetched from the origin, not stored (uncacheable, bypass, method).
    Pass,
    /// tierd answered with an error of its own (502, 504).
    Error,
    /// Stale response from storage because the origin quota was spent.
    StaleOriginLimited,
    /// Refused with 429 by a client, rule or origin quota.
    RateLimited,
    /// Refused by request hardening (414, 431, 413, 408) before reaching the cache.
    Rejected,
}

impl Outcome {
    pub const COUNT: usize = 11;
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Hit,
        Outcome::StaleWhileRevalidate,
        Outcome::StaleIfError,
        Outcome::Collapsed,
        Outcome::Miss,
        Outcome::Revalidated,
        Outcome::Pass,
        Outcome::Error,
        Outcome::StaleOriginLimited,
        Outcome::RateLimited,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::StaleWhileRevalidate => "stale_while_revalidate",
            Outcome::StaleIfError => "stale_if_error",
            Outcome::Collapsed => "collapsed",
            Outcome::Miss => "miss",
            Outcome::Revalidated => "revalidated",
            Outcome::Pass => "pass",
            Outcome::Error => "error",
            Outcome::StaleOriginLimited => "stale_origin_limited",
            Outcome::RateLimited => "rate_limited",
            Outcome::Rejected => "rejected",
        }
    }

    /// Whether the body came from storage (the origin sent nothing, or only a 304).
    pub fn from_cache(self) -> bool {
        matches!(
            self,
            Outcome::Hit
                | Outcome::StaleWhileRevalidate
                | Outcome::StaleIfError
                | Outcome::Collapsed
                | Outcome::Revalidated
                | Outcome::StaleOriginLimited
        )
    }
}

/// A request method as a bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodLabel {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

impl MethodLabel {
    pub const COUNT: usize = 8;

    pub fn of(m: &Method) -> MethodLabel {
        match *m {
            Method::GET => MethodLabel::Get,
            Method::HEAD => MethodLabel::Head,
            Method::POST => MethodLabel::Post,
            Method::PUT => MethodLabel::Put,
            Method::PATCH => MethodLabel::Patch,
            Method::DELETE => MethodLabel::Delete,
            Method::OPTIONS => MethodLabel::Options,
            _ => MethodLabel::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "GET",
            MethodLabel::Head => "HEAD",
            MethodLabel::Post => "POST",
            MethodLabel::Put => "PUT",
            MethodLabel::Patch => "PATCH",
            MethodLabel::Delete => "DELETE",
            MethodLabel::Options => "OPTIONS",
            MethodLabel::Other => "other",
        }
    }
}

/// A response status as a bounded label: `1xx` … `5xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl StatusClass {
    pub const COUNT: usize = 5;

    pub fn of(status: u16) -> StatusClass {
        match status {
            0..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }
}

/// Why an entry left a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionCause {
    Expired,
    Size,
    Explicit,
    Replaced,
}

impl EvictionCause {
    pub const ALL: [EvictionCause; 4] = [
        EvictionCause::Expired,
        EvictionCause::Size,
        EvictionCause::Explicit,
        EvictionCause::Replaced,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionCause::Expired => "expired",
            EvictionCause::Size => "size",
            EvictionCause::Explicit => "explicit",
            EvictionCause::Replaced => "replaced",
        }
    }
}

/// Kinds of origin failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginError {
    Connect,
    Timeout,
    Protocol,
    Body,
    /// The origin answered with a 5xx status.
    Status5xx,
}

impl OriginError {
    pub const ALL: [OriginError; 5] = [
        OriginError::Connect,
        OriginError::Timeout,
        OriginError::Protocol,
        OriginError::Body,
        OriginError::Status5xx,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            OriginError::Connect => "connect",
            OriginError::Timeout => "timeout",
            OriginError::Protocol => "protocol",
            OriginError::Body => "body",
            OriginError::Status5xx => "5xx",
        }
    }

    /// The `Cache-Status` detail of an error response tierd makes because of this failure.
    pub fn cache_status_detail(self) -> &'static str {
        match self {
            OriginError::Connect => "origin-unreachable",
            OriginError::Timeout => "origin-timeout",
            OriginError::Protocol => "origin-protocol-error",
            OriginError::Body => "origin-body-error",
            OriginError::Status5xx => "origin-error",
        }
    }
}

/// A lookup's result in one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh entry.
    Hit,
    /// An entry past its freshness lifetime (served stale, revalidated or refetched).
    Stale,
    Miss,
    /// The tier failed or was skipped (timeout, open circuit, undecodable record): a miss.
    Error,
}

impl Lookup {
    pub const ALL: [Lookup; 4] = [Lookup::Hit, Lookup::Stale, Lookup::Miss, Lookup::Error];
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Stale => "stale",
            Lookup::Miss => "miss",
            Lookup::Error => "error",
        }
    }
}

/// Why a tier operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierFault {
    Timeout,
    Unavailable,
    CircuitOpen,
    Decode,
}

impl TierFault {
    pub const ALL: [TierFault; 4] = [
        TierFault::Timeout,
        TierFault::Unavailable,
        TierFault::CircuitOpen,
        TierFault::Decode,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TierFault::Timeout => "timeout",
            TierFault::Unavailable => "unavailable",
            TierFault::CircuitOpen => "circuit_open",
            TierFault::Decode => "decode",
        }
    }
}

/// What became of a write accepted for a lower tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The tier's queue was full; the write was refused before being accepted.
    QueueFull,
    /// Accepted, then the tier failed to store it.
    Failed,
}

impl WriteOutcome {
    pub const ALL: [WriteOutcome; 3] = [
        WriteOutcome::Written,
        WriteOutcome::QueueFull,
        WriteOutcome::Failed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            WriteOutcome::Written => "written",
            WriteOutcome::QueueFull => "queue_full",
            WriteOutcome::Failed => "failed",
        }
    }
}

/// One tier's metric children, resolved once.
pub struct TierMetrics {
    enabled: bool,
    lookups: Vec<IntCounter>,
    faults: Vec<IntCounter>,
    writes: Vec<IntCounter>,
    evictions: Vec<IntCounter>,
    pub promotions: IntCounter,
    pub queue_depth: IntGauge,
    pub circuit_open: IntGauge,
    /// 1 while a configured tier is failed: could not start, or is being reopened.
    pub failed: IntGauge,
    /// The tier's size on disk (L3: the DuckDB file and its WAL).
    pub file_bytes: IntGauge,
    pub entries: IntGauge,
    pub bytes: IntGauge,
    get_seconds: Histogram,
    put_seconds: Histogram,
    delete_seconds: Histogram,
}

impl TierMetrics {
    #[inline]
    pub fn lookup(&self, l: Lookup) {
        if self.enabled {
            self.lookups[l as usize].inc();
        }
    }
    pub fn fault(&self, f: TierFault) {
        self.faults[f as usize].inc();
    }
    pub fn writes(&self, w: WriteOutcome, n: u64) {
        self.writes[w as usize].inc_by(n);
    }
    pub fn evicted(&self, c: EvictionCause, n: u64) {
        self.evictions[c as usize].inc_by(n);
    }

    /// Starts timing an operation (`None` with metrics off: no clock read on the hot path).
    #[inline]
    pub fn timer(&self) -> Option<Instant> {
        self.enabled.then(Instant::now)
    }

    /// Observes a lookup started at `t`.
    #[inline]
    pub fn observe_get(&self, t: Option<Instant>) {
        if let Some(t) = t {
            self.get_seconds.observe(t.elapsed().as_secs_f64());
        }
    }

    /// Observes a write (for L2 and L3: one batch) started at `t`.
    #[inline]
    pub fn observe_put(&self, t: Option<Instant>) {
        if let Some(t) = t {
            self.put_seconds.observe(t.elapsed().as_secs_f64());
        }
    }

    /// Observes a removal (a purge) started at `t`.
    #[inline]
    pub fn observe_delete(&self, t: Option<Instant>) {
        if let Some(t) = t {
            self.delete_seconds.observe(t.elapsed().as_secs_f64());
        }
    }
}

/// The request counters of one route: one child per (cache status, method, status class),
/// created on first use so only the combinations seen are exported.
pub struct RouteCounters {
    enabled: bool,
    route: Arc<str>,
    vec: IntCounterVec,
    children: Box<[OnceLock<IntCounter>]>,
}

impl RouteCounters {
    /// The `route` label.
    pub fn route(&self) -> &str {
        &self.route
    }

    #[inline]
    pub fn count(&self, o: Outcome, m: MethodLabel, s: StatusClass) {
        if !self.enabled {
            return;
        }
        let i = (o as usize * MethodLabel::COUNT + m as usize) * StatusClass::COUNT + s as usize;
        self.children[i]
            .get_or_init(|| {
                self.vec
                    .with_label_values(&[&*self.route, m.as_str(), s.as_str(), o.as_str()])
            })
            .inc();
    }
}

/// All of tierd's metrics.
pub struct Metrics {
    enabled: bool,
    tiers: [TierMetrics; 3],
    registry: Registry,
    size_vecs: [IntGaugeVec; 2],
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
    /// 429s, by route, quota (client, rule, origin) and key kind; never the key itself.
    pub rate_limited: IntCounterVec,
    /// Requests a dry-run quota would have refused (let through), by route, quota and key kind.
    pub rate_limit_dry_run: IntCounterVec,
    /// Clients with a bucket, by quota (set by the limiter's housekeeping).
    pub rate_limit_clients: IntGaugeVec,
    /// Requests of new clients checked against the shared overflow bucket because the
    /// table of clients was full, by quota.
    pub rate_limit_overflow: IntCounterVec,
    /// Requests refused by request hardening, by reason.
    pub rejected: IntCounterVec,
    /// Request headers removed before forwarding, by reason (see [`crate::http::hygiene`]).
    headers_stripped: Vec<IntCounter>,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are static and unique, so registration cannot fail; keep going if it somehow does.
    if let Err(e) = r.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    c
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
        let evictions = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_tier_evictions_total",
                    "Entries removed from a tier, by cause",
                ),
                &["tier", "cause"],
            )
            .expect("static metric definition"),
        );
        let entries = reg(
            &r,
            IntGaugeVec::new(
                Opts::new("tierd_tier_entries", "Entries held by a tier"),
                &["tier"],
            )
            .expect("static metric definition"),
        );
        let bytes = reg(
            &r,
            IntGaugeVec::new(
                Opts::new("tierd_tier_bytes", "Bytes held by a tier"),
                &["tier"],
            )
            .expect("static metric definition"),
        );
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
        let lookups = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_tier_lookups_total",
                    "Lookups in a tier, by outcome: hit (fresh), stale, miss, error (a failed \
                     or skipped tier, a miss for the request)",
                ),
                &["tier", "outcome"],
            )
            .expect("static metric definition"),
        );
        let faults = reg(
            &r,
            IntCounterVec::new(
                Opts::new("tierd_tier_errors_total", "Failed tier operations, by kind"),
                &["tier", "kind"],
            )
            .expect("static metric definition"),
        );
        let writes = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_tier_writes_total",
                    "Writes to a tier below L1, by outcome",
                ),
                &["tier", "outcome"],
            )
            .expect("static metric definition"),
        );
        let promotions = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_tier_promotions_total",
                    "Hits in a tier copied into the faster tiers, by the tier that answered",
                ),
                &["tier"],
            )
            .expect("static metric definition"),
        );
        let queue_depth = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "tierd_tier_queue_depth",
                    "Writes accepted for a tier and not yet stored",
                ),
                &["tier"],
            )
            .expect("static metric definition"),
        );
        let circuit_open = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "tierd_tier_circuit_open",
                    "1 while a tier's circuit breaker is open (the tier is skipped)",
                ),
                &["tier"],
            )
            .expect("static metric definition"),
        );
        let failed = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "tierd_tier_failed",
                    "1 while a configured tier is failed: it could not start, or (L3) DuckDB \
                     invalidated the database and it is being reopened",
                ),
                &["tier"],
            )
            .expect("static metric definition"),
        );
        let file_bytes = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "tierd_tier_file_bytes",
                    "A tier's size on disk (L3: the DuckDB file with its WAL); compared with \
                     tierd_tier_bytes, the counted size of its entries",
                ),
                &["tier"],
            )
            .expect("static metric definition"),
        );
        let op_seconds = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "tierd_tier_operation_duration_seconds",
                    "Time taken by tier operations (get: one lookup; put: one entry in L1, one \
                     batch in L2 and L3; delete: one purge)",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["tier", "op"],
            )
            .expect("static metric definition"),
        );
        let tier = |t: TierName| {
            let n = t.as_str();
            TierMetrics {
                enabled,
                lookups: Lookup::ALL
                    .iter()
                    .map(|l| lookups.with_label_values(&[n, l.as_str()]))
                    .collect(),
                faults: TierFault::ALL
                    .iter()
                    .map(|f| faults.with_label_values(&[n, f.as_str()]))
                    .collect(),
                writes: WriteOutcome::ALL
                    .iter()
                    .map(|w| writes.with_label_values(&[n, w.as_str()]))
                    .collect(),
                evictions: EvictionCause::ALL
                    .iter()
                    .map(|c| evictions.with_label_values(&[n, c.as_str()]))
                    .collect(),
                promotions: promotions.with_label_values(&[n]),
                queue_depth: queue_depth.with_label_values(&[n]),
                circuit_open: circuit_open.with_label_values(&[n]),
                failed: failed.with_label_values(&[n]),
                file_bytes: file_bytes.with_label_values(&[n]),
                entries: entries.with_label_values(&[n]),
                bytes: bytes.with_label_values(&[n]),
                get_seconds: op_seconds.with_label_values(&[n, "get"]),
                put_seconds: op_seconds.with_label_values(&[n, "put"]),
                delete_seconds: op_seconds.with_label_values(&[n, "delete"]),
            }
        };
        let m = Metrics {
            size_vecs: [entries.clone(), bytes.clone()],
            enabled,
            tiers: [tier(TierName::L1), tier(TierName::L2), tier(TierName::L3)],
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
            rate_limited: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_rate_limited_total",
                        "Requests refused with 429, by route template, quota (client, rule, \
                         origin) and client key kind (ip, forwarded, api_key, node)",
                    ),
                    &["route", "quota", "key_kind"],
                )
                .expect("static metric definition"),
            ),
            rate_limit_dry_run: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_rate_limit_dry_run_total",
                        "Requests a quota in dry-run mode would have refused and let through, \
                         by route template, quota (client, rule, origin) and client key kind",
                    ),
                    &["route", "quota", "key_kind"],
                )
                .expect("static metric definition"),
            ),
            rate_limit_clients: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "tierd_rate_limit_clients",
                        "Clients with a rate-limit bucket, by quota (updated at each cleanup)",
                    ),
                    &["quota"],
                )
                .expect("static metric definition"),
            ),
            rate_limit_overflow: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_rate_limit_overflow_total",
                        "Requests of new clients checked against one shared bucket because the \
                         client table was full (rate_limit.max_clients), by quota",
                    ),
                    &["quota"],
                )
                .expect("static metric definition"),
            ),
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
        for q in ["client", "rule", "origin"] {
            m.rate_limit_clients.with_label_values(&[q]);
            m.rate_limit_overflow.with_label_values(&[q]);
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
        for v in &self.size_vecs {
            let _ = v.remove_label_values(&[t.as_str()]);
        }
    }

    /// One tier's metrics.
    #[inline]
    pub fn tier(&self, t: TierName) -> &TierMetrics {
        &self.tiers[t as usize]
    }

    #[inline]
    pub fn l1_eviction(&self, c: EvictionCause) {
        self.tiers[TierName::L1 as usize].evictions[c as usize].inc();
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
