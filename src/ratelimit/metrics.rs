//! The rate limiter's metrics, registered by the limiter into the registry it is given.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::QuotaKind;
use crate::metrics::reg;

/// 429s, dry-run refusals, tracked clients and overflow, by quota; never by client.
#[derive(Clone)]
pub struct RateLimitMetrics {
    /// 429s, by route, quota (client, rule, origin) and key kind; never the key itself.
    pub rate_limited: IntCounterVec,
    /// Requests a dry-run quota would have refused (let through), by route, quota and key kind.
    pub dry_run: IntCounterVec,
    /// Clients with a bucket, by quota (set by the limiter's housekeeping).
    pub clients: IntGaugeVec,
    /// Requests of new clients checked against the shared overflow bucket because the table
    /// of clients was full, by quota.
    pub overflow: IntCounterVec,
}

impl RateLimitMetrics {
    /// Creates the metrics and registers them in `r`, every quota's series present from the start.
    pub fn register(r: &Registry) -> RateLimitMetrics {
        let by_route = ["route", "quota", "key_kind"];
        let m = RateLimitMetrics {
            rate_limited: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_rate_limited_total",
                        "Requests refused with 429, by route template, quota (client, rule, \
                         origin) and client key kind (ip, forwarded, api_key, node)",
                    ),
                    &by_route,
                )
                .expect("static metric definition"),
            ),
            dry_run: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_rate_limit_dry_run_total",
                        "Requests a quota in dry-run mode would have refused and let through, \
                         by route template, quota (client, rule, origin) and client key kind",
                    ),
                    &by_route,
                )
                .expect("static metric definition"),
            ),
            clients: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "tierd_rate_limit_clients",
                        "Clients with a rate-limit bucket, by quota (updated at each cleanup)",
                    ),
                    &["quota"],
                )
                .expect("static metric definition"),
            ),
            overflow: reg(
                r,
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
        };
        for q in QuotaKind::ALL {
            m.clients.with_label_values(&[q.as_str()]);
            m.overflow.with_label_values(&[q.as_str()]);
        }
        m
    }
}
