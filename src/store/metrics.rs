//! The tiers' metrics, registered by the store: per tier, lookups, faults, writes, evictions,
//! promotions, queue depth, circuit and failure state, sizes and operation latency.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::metrics::{reg, EvictionCause, Lookup, TierFault, WriteOutcome, LATENCY_BUCKETS};
use crate::types::TierName;
use std::time::Instant;

/// One tier's metric children, resolved once.
pub struct TierMetrics {
    pub(super) enabled: bool,
    pub(super) lookups: Vec<IntCounter>,
    pub(super) faults: Vec<IntCounter>,
    pub(super) writes: Vec<IntCounter>,
    pub(crate) evictions: Vec<IntCounter>,
    pub promotions: IntCounter,
    pub queue_depth: IntGauge,
    pub circuit_open: IntGauge,
    /// 1 while a configured tier is failed: could not start, or is being reopened.
    pub failed: IntGauge,
    /// The tier's size on disk (L3: the DuckDB file and its WAL).
    pub file_bytes: IntGauge,
    pub entries: IntGauge,
    pub bytes: IntGauge,
    pub(super) get_seconds: Histogram,
    pub(super) put_seconds: Histogram,
    pub(super) delete_seconds: Histogram,
}

impl TierMetrics {
    #[inline]
    pub fn lookup(&self, l: Lookup) {
        if self.enabled {
            self.lookups[l as usize].inc();
        }
    }
    /// Lookups with result `l` since start (0 with per-request metrics off).
    pub fn lookups(&self, l: Lookup) -> u64 {
        self.lookups[l as usize].get()
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

/// Every tier's metrics, and the size gauges a tier that cannot count its entries leaves out.
pub struct StoreMetrics {
    tiers: [TierMetrics; 3],
    size_vecs: [IntGaugeVec; 2],
    /// Set at each scrape, for configured tiers only (see [`StoreMetrics::report`]).
    up: IntGaugeVec,
    max_bytes: IntGaugeVec,
    queue_capacity: IntGaugeVec,
    connections: IntGaugeVec,
    connections_max: IntGaugeVec,
    in_flight: IntGaugeVec,
    /// L3 files rewritten to reclaim the space of deleted rows.
    pub l3_compactions: IntCounter,
}

impl StoreMetrics {
    /// Creates the tiers' metrics and registers them in `r`; with `enabled` false the
    /// per-request recording is skipped (see [`Metrics::with_recording`](crate::metrics::Metrics::with_recording)).
    pub fn register(r: &Registry, enabled: bool) -> StoreMetrics {
        let evictions = reg(
            r,
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
            r,
            IntGaugeVec::new(
                Opts::new("tierd_tier_entries", "Entries held by a tier"),
                &["tier"],
            )
            .expect("static metric definition"),
        );
        let bytes = reg(
            r,
            IntGaugeVec::new(
                Opts::new("tierd_tier_bytes", "Bytes held by a tier"),
                &["tier"],
            )
            .expect("static metric definition"),
        );
        let lookups = reg(
            r,
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
            r,
            IntCounterVec::new(
                Opts::new("tierd_tier_errors_total", "Failed tier operations, by kind"),
                &["tier", "kind"],
            )
            .expect("static metric definition"),
        );
        let writes = reg(
            r,
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
            r,
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
            r,
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
            r,
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
            r,
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
            r,
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
            r,
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
        let gauge = |name: &str, help: &str| {
            reg(
                r,
                IntGaugeVec::new(Opts::new(name, help), &["tier"])
                    .expect("static metric definition"),
            )
        };
        let up = gauge(
            "tierd_tier_up",
            "1 while a configured tier serves; 0 while it is failed (could not start, or is \
             being reopened), unreachable, or its circuit breaker is open. Tiers not configured \
             are not exported",
        );
        let max_bytes = gauge(
            "tierd_tier_max_bytes",
            "The size a tier evicts to stay under (tiers.l1.max_bytes, tiers.l3.max_bytes); \
             compare with tierd_tier_bytes",
        );
        let queue_capacity = gauge(
            "tierd_tier_queue_capacity",
            "Writes a tier's queue holds at most (tiers.*.queue_capacity); compare with \
             tierd_tier_queue_depth",
        );
        let connections = gauge(
            "tierd_tier_connections",
            "Connections a tier holds open to its server (L2: Redis)",
        );
        let connections_max = gauge(
            "tierd_tier_connections_max",
            "Connections a tier may open to its server (tiers.l2.pool_size)",
        );
        let in_flight = gauge(
            "tierd_tier_operations_in_flight",
            "Operations sent to a tier's server and not yet answered or timed out",
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
        StoreMetrics {
            size_vecs: [entries.clone(), bytes.clone()],
            up,
            max_bytes,
            queue_capacity,
            connections,
            connections_max,
            in_flight,
            tiers: [tier(TierName::L1), tier(TierName::L2), tier(TierName::L3)],
            l3_compactions: reg(
                r,
                IntCounter::new(
                    "tierd_l3_compactions_total",
                    "L3 files rewritten because deleted rows' space took the file past 1.5x \
                     tiers.l3.max_bytes",
                )
                .expect("static metric definition"),
            ),
        }
    }

    /// One tier's metrics.
    #[inline]
    pub fn tier(&self, t: TierName) -> &TierMetrics {
        &self.tiers[t as usize]
    }

    /// Sets the gauges read at a scrape from the tiers' reports (`failed`: configured tiers
    /// that could not start).
    pub fn report(&self, reports: &[crate::store::TierReport], failed: &[(TierName, String)]) {
        let set = |v: &IntGaugeVec, t: TierName, n: u64| {
            v.with_label_values(&[t.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        for r in reports {
            let open = r.circuit == Some(crate::store::CircuitState::Open);
            set(&self.up, r.name, u64::from(r.healthy && !open));
            if let Some(m) = r.max_bytes {
                set(&self.max_bytes, r.name, m);
            }
            if r.queue_capacity > 0 {
                set(&self.queue_capacity, r.name, r.queue_capacity as u64);
            }
            if let Some(p) = r.pool {
                set(&self.connections, r.name, p.open as u64);
                set(&self.connections_max, r.name, p.max as u64);
            }
        }
        for (t, _) in failed {
            set(&self.up, *t, 0);
        }
    }

    /// The gauge of `t`'s operations waiting on its server, for the tier to count them itself.
    pub fn operations_in_flight(&self, t: TierName) -> prometheus::IntGauge {
        self.in_flight.with_label_values(&[t.as_str()])
    }

    /// Stops exporting `t`'s entries and bytes.
    pub fn size_unknown(&self, t: TierName) {
        for v in &self.size_vecs {
            let _ = v.remove_label_values(&[t.as_str()]);
        }
    }
}
