//! Metric children resolved once: per tier, and per route.

use super::*;

/// The request counters of one route: one child per (cache status, method, status class),
/// created on first use so only the combinations seen are exported.
pub struct RouteCounters {
    pub(super) enabled: bool,
    pub(super) route: Arc<str>,
    pub(super) vec: IntCounterVec,
    pub(super) children: Box<[OnceLock<IntCounter>]>,
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
}
