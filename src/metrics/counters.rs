//! Metric children resolved once: per tier, and per route.

use super::*;

/// One tier's metric children, resolved once.
pub struct TierMetrics {
    pub(super) enabled: bool,
    pub(super) lookups: Vec<IntCounter>,
    pub(super) faults: Vec<IntCounter>,
    pub(super) writes: Vec<IntCounter>,
    pub(super) evictions: Vec<IntCounter>,
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
    pub(super) enabled: bool,
    pub(super) route: Arc<str>,
    pub(super) vec: IntCounterVec,
    pub(super) children: Box<[OnceLock<IntCounter>]>,
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
