//! Metric children resolved once: per tier, and per route.

use super::*;

/// The request counters of one route: one child per (cache status, method, status class),
/// and one latency histogram per cache status, created on first use so only the combinations
/// seen are exported.
pub struct RouteCounters {
    pub(super) enabled: bool,
    pub(super) route: Arc<str>,
    pub(super) vec: IntCounterVec,
    pub(super) children: Box<[OnceLock<IntCounter>]>,
    pub(super) seconds_vec: HistogramVec,
    pub(super) seconds: Box<[OnceLock<Histogram>]>,
}

impl RouteCounters {
    /// The `route` label, shared.
    pub fn route_arc(&self) -> Arc<str> {
        self.route.clone()
    }

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

    /// The latency histogram of this route's requests answered with `o`.
    #[inline]
    pub(super) fn seconds(&self, o: Outcome) -> &Histogram {
        self.seconds[o as usize].get_or_init(|| {
            self.seconds_vec
                .with_label_values(&[&*self.route, o.as_str()])
        })
    }
}
