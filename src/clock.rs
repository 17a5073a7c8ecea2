//! Time behind a trait, so that freshness tests move a clock instead of sleeping.
//!
//! Every cache decision takes `now` from a [`Clock`]; the gateway uses [`SystemClock`], tests use
//! [`ManualClock`] and advance it explicitly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time (HTTP dates are wall-clock, second resolution).
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The real system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; for tests.
///
/// ```
/// use std::time::Duration;
/// use tierd::clock::{Clock, ManualClock};
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(clock.now().duration_since(t0).unwrap(), Duration::from_secs(30));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    micros_since_epoch: AtomicU64,
}

impl ManualClock {
    /// A manual clock starting at the current system time, truncated to whole seconds.
    pub fn new() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Self {
            micros_since_epoch: AtomicU64::new(secs * 1_000_000),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.micros_since_epoch
            .fetch_add(by.as_micros() as u64, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.micros_since_epoch.load(Ordering::SeqCst))
    }
}

/// Whole seconds from `earlier` to `later`, zero if `later` is not after `earlier`.
#[inline]
pub fn secs_between(earlier: SystemTime, later: SystemTime) -> u64 {
    later
        .duration_since(earlier)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
