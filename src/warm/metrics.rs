//! The warmer's metrics: what its fetches did, by trigger; what it did not fetch, by reason;
//! and whether what it stored was used.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::{Skip, Trigger, WarmOutcome};
use crate::metrics::reg;

/// The warmer's metrics, registered whether warming is on or not (zeros while it is off), so
/// dashboards and alerts always find them.
pub struct WarmMetrics {
    fetches: IntCounterVec,
    skipped: IntCounterVec,
    /// Warmed entries served to a client at least once.
    pub used: IntCounter,
    /// Warmed entries that expired (or were evicted) before any client was served them.
    pub wasted: IntCounter,
    /// Transitions the next-request model holds.
    pub model_transitions: IntGauge,
    /// Unix time of the last completed pass.
    pub last_pass: IntGauge,
}

impl WarmMetrics {
    /// Creates the metrics in `r`, every label set pre-registered.
    pub fn register(r: &Registry) -> WarmMetrics {
        let fetches = reg(
            r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_warm_fetches_total",
                    "Warm fetches, by trigger (start, schedule, predict, refresh, purge, demand) and outcome (fetched, revalidated, from_tier, fresh, not_stored, failed)",
                ),
                &["trigger", "outcome"],
            )
            .expect("static metric definition"),
        );
        let skipped = reg(
            r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_warm_skipped_total",
                    "Candidates the warmer did not fetch, by reason (budget, backoff, busy, leased, queue_full, deadline)",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
        );
        for t in Trigger::ALL {
            for o in WarmOutcome::ALL {
                fetches.with_label_values(&[t.as_str(), o.as_str()]);
            }
        }
        for s in Skip::ALL {
            skipped.with_label_values(&[s.as_str()]);
        }
        WarmMetrics {
            fetches,
            skipped,
            used: reg(
                r,
                IntCounter::new(
                    "tierd_warm_used_total",
                    "Warmed entries a client was served at least once",
                )
                .expect("static metric definition"),
            ),
            wasted: reg(
                r,
                IntCounter::new(
                    "tierd_warm_wasted_total",
                    "Warmed entries that expired or were evicted before any client was served them",
                )
                .expect("static metric definition"),
            ),
            model_transitions: reg(
                r,
                IntGauge::new(
                    "tierd_warm_model_transitions",
                    "Next-request predictions the warmer's model holds (by URL and by route template)",
                )
                .expect("static metric definition"),
            ),
            last_pass: reg(
                r,
                IntGauge::new(
                    "tierd_warm_last_pass_timestamp_seconds",
                    "Unix time the last warm pass finished (0: none yet)",
                )
                .expect("static metric definition"),
            ),
        }
    }

    pub(super) fn fetched(&self, t: Trigger, o: WarmOutcome) {
        self.fetches
            .with_label_values(&[t.as_str(), o.as_str()])
            .inc();
    }

    pub(super) fn skipped(&self, s: Skip) {
        self.skipped.with_label_values(&[s.as_str()]).inc();
    }

    /// Fetches the warmer sent to the origin so far (fetched or revalidated) for `triggers`.
    pub(super) fn origin_fetches(&self, triggers: &[Trigger]) -> u64 {
        triggers
            .iter()
            .map(|t| {
                self.fetches
                    .with_label_values(&[t.as_str(), WarmOutcome::Fetched.as_str()])
                    .get()
                    + self
                        .fetches
                        .with_label_values(&[t.as_str(), WarmOutcome::Revalidated.as_str()])
                        .get()
            })
            .sum()
    }
}
