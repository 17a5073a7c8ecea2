//! Rate-limited log lines: a WARN that can repeat per request or per batch (an origin that is
//! down, a tier that fails every write) is written at most once per interval, with the number
//! of occurrences it stands for, so an outage cannot flood the log.
//!
//! ```
//! use std::time::Duration;
//! use tierd::log_limit::LogLimit;
//!
//! static ORIGIN_FAILED: LogLimit = LogLimit::new(Duration::from_secs(5));
//! if let Some(occurrences) = ORIGIN_FAILED.check() {
//!     tracing::warn!(occurrences, "origin request failed");
//! }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The default interval between two lines of one kind.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(5);

fn since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    // +1: zero means "never written".
    start.elapsed().as_millis() as u64 + 1
}

/// One kind of log line, written at most once per interval. Lock-free; usually a `static`.
pub struct LogLimit {
    interval_ms: u64,
    /// When the last line was written (ms since the first use, +1), 0 for never.
    last: AtomicU64,
    /// Occurrences since the last line, that one included.
    pending: AtomicU64,
}

impl LogLimit {
    /// A limit of one line per `interval`.
    pub const fn new(interval: Duration) -> Self {
        LogLimit {
            interval_ms: interval.as_millis() as u64,
            last: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence. `Some(n)` when a line should be written now, `n` being the
    /// occurrences it stands for (this one and those suppressed since the previous line).
    pub fn check(&self) -> Option<u64> {
        self.check_at(since_start())
    }

    fn check_at(&self, now: u64) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval_ms {
            return None;
        }
        // One caller wins the slot; the others stay counted for the next line.
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(DEFAULT_LOG_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_carrying_the_suppressed_count() {
        let l = LogLimit::new(Duration::from_secs(5));
        assert_eq!(
            l.check_at(1_000),
            Some(1),
            "the first occurrence is written"
        );
        for t in [1_001, 2_000, 5_999] {
            assert_eq!(l.check_at(t), None, "suppressed at {t}");
        }
        assert_eq!(l.check_at(6_000), Some(4), "the next line stands for four");
        assert_eq!(l.check_at(6_001), None);
        assert_eq!(l.check_at(60_000), Some(2));
    }
}
