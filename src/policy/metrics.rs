//! The rules' metrics, registered by the policy layer: how many rules are in force and how
//! their reloads went.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use crate::metrics::reg;

/// `tierd_rules` and `tierd_rule_reloads_total`.
pub struct RuleMetrics {
    /// Rule reloads, by result (ok, rejected).
    pub reloads: IntCounterVec,
    /// Rules in force.
    pub loaded: IntGauge,
}

impl RuleMetrics {
    /// Creates the metrics and registers them in `r`, both reload results present from the start.
    pub fn register(r: &Registry) -> RuleMetrics {
        let m = RuleMetrics {
            reloads: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_rule_reloads_total",
                        "Rule reloads, by result (ok, rejected)",
                    ),
                    &["result"],
                )
                .expect("static metric definition"),
            ),
            loaded: reg(
                r,
                IntGauge::new("tierd_rules", "Rules in force").expect("static metric definition"),
            ),
        };
        for r in ["ok", "rejected"] {
            m.reloads.with_label_values(&[r]);
        }
        m
    }
}
