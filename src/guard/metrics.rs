//! Request hygiene's metrics, registered by the guard: requests refused before the cache, by
//! reason, and request headers removed before forwarding, by reason.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::http::hygiene::Stripped;
use crate::metrics::reg;
use crate::types::Rejection;

/// `tierd_requests_rejected_total` and `tierd_request_headers_stripped_total`.
pub struct GuardMetrics {
    /// Requests refused by request hardening, by reason.
    pub rejected: IntCounterVec,
    headers_stripped: Vec<IntCounter>,
}

impl GuardMetrics {
    /// Creates the metrics and registers them in `r`, every reason present from the start.
    pub fn register(r: &Registry) -> GuardMetrics {
        let stripped = reg(
            r,
            IntCounterVec::new(
                Opts::new(
                    "tierd_request_headers_stripped_total",
                    "Request headers removed before forwarding (listed in \
                     cache.strip_request_headers, underscore in the name, or a forwarding \
                     claim from an untrusted peer), by reason",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
        );
        let m = GuardMetrics {
            rejected: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tierd_requests_rejected_total",
                        "Requests refused by request hardening, by reason",
                    ),
                    &["reason"],
                )
                .expect("static metric definition"),
            ),
            headers_stripped: Stripped::ALL
                .iter()
                .map(|s| stripped.with_label_values(&[s.as_str()]))
                .collect(),
        };
        for r in Rejection::ALL {
            m.rejected.with_label_values(&[r.as_str()]);
        }
        m
    }

    /// Counts one request header removed by [`crate::http::hygiene`].
    #[inline]
    pub fn headers_stripped(&self, why: Stripped) {
        self.headers_stripped[why as usize].inc();
    }
}
