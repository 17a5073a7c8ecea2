//! Registering a metric, and the latency buckets every histogram shares.

use prometheus::Registry;

/// Histogram buckets for operations that can take from microseconds (an L1 hit answers in
/// 10-50 µs) to seconds (a slow origin, up to the default 10 s upstream timeout), so neither end
/// falls into one bucket.
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Registers `c` in `r` and returns it.
pub fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are static and unique, so registration cannot fail; keep going if it somehow does.
    if let Err(e) = r.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    c
}
