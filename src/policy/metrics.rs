//! The rules' metrics, registered by the policy layer: how many rules are in force and how
//! their reloads went.

use std::time::SystemTime;

use prometheus::{Gauge, IntCounterVec, IntGauge, Opts, Registry};

use crate::metrics::reg;

/// `tierd_rules`, `tierd_rule_reloads_total` and the state of the last config load, named as
/// Prometheus and Alertmanager name theirs.
pub struct RuleMetrics {
    /// Rule reloads, by result (ok, rejected).
    pub reloads: IntCounterVec,
    /// Rules in force.
    pub loaded: IntGauge,
    /// 1 when the last load of the config (at start, or a reload) was applied, 0 when the last
    /// reload was rejected: stays 0 until a reload succeeds, however long ago it failed.
    last_successful: IntGauge,
    /// When the config was last loaded successfully (Unix seconds).
    last_success: Gauge,
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
            last_successful: reg(
                r,
                IntGauge::new(
                    "tierd_config_last_reload_successful",
                    "1 when the last config load (at start or a reload) was applied, 0 when the \
                     last reload was rejected",
                )
                .expect("static metric definition"),
            ),
            last_success: reg(
                r,
                Gauge::new(
                    "tierd_config_last_reload_success_timestamp_seconds",
                    "When the config was last loaded successfully (at start or a reload), Unix \
                     seconds",
                )
                .expect("static metric definition"),
            ),
        };
        for r in ["ok", "rejected"] {
            m.reloads.with_label_values(&[r]);
        }
        // The metrics are created with the config that was just loaded.
        m.loaded_ok();
        m
    }

    /// A config load (at start or a reload) was applied.
    pub fn loaded_ok(&self) {
        self.last_successful.set(1);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.set(now);
    }

    /// A reload was rejected; the previous config stays in force.
    pub fn reload_rejected(&self) {
        self.last_successful.set(0);
        self.reloads.with_label_values(&["rejected"]).inc();
    }
}
