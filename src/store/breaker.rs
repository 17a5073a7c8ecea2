//! A circuit breaker for a remote tier: after `threshold` consecutive failures the tier is
//! skipped (fail fast, no waiting on timeouts) for `open_for`; then one probe is let through, and
//! its result closes the circuit or opens it again.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The breaker's state, for stats and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What the caller of [`Breaker::record`] should log, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Opened,
    Closed,
}

#[derive(Debug)]
pub struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    /// Nanoseconds after `epoch` at which an open circuit lets a probe through.
    retry_at: AtomicU64,
    epoch: Instant,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            retry_at: AtomicU64::new(0),
            epoch: Instant::now(),
            threshold: threshold.max(1),
            open_for,
        }
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether an operation may go to the tier now. In the open state, the first caller after
    /// the cool-down becomes the probe; everyone else keeps failing fast until it reports.
    pub fn allow(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN => {
                self.nanos() >= self.retry_at.load(Ordering::Acquire)
                    && self
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
            }
            _ => false,
        }
    }

    /// Reports an allowed operation's result.
    pub fn record(&self, ok: bool) -> Transition {
        if ok {
            self.failures.store(0, Ordering::Release);
            if self.state.swap(CLOSED, Ordering::AcqRel) != CLOSED {
                return Transition::Closed;
            }
            return Transition::None;
        }
        let state = self.state.load(Ordering::Acquire);
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if state == HALF_OPEN || (state == CLOSED && failures >= self.threshold) {
            let open_for = u64::try_from(self.open_for.as_nanos()).unwrap_or(u64::MAX);
            self.retry_at
                .store(self.nanos().saturating_add(open_for), Ordering::Release);
            if self.state.swap(OPEN, Ordering::AcqRel) == CLOSED {
                return Transition::Opened;
            }
        }
        Transition::None
    }

    pub fn state(&self) -> CircuitState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => CircuitState::Closed,
            OPEN => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_fails_fast() {
        let b = Breaker::new(3, Duration::from_secs(3600));
        for _ in 0..2 {
            assert!(b.allow());
            assert_eq!(b.record(false), Transition::None);
        }
        assert!(b.allow());
        assert_eq!(b.record(false), Transition::Opened);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(
            !b.allow(),
            "open circuit lets nothing through during the cool-down"
        );
    }

    #[test]
    fn success_resets_the_failure_count() {
        let b = Breaker::new(2, Duration::from_secs(3600));
        b.record(false);
        b.record(true);
        b.record(false);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn one_probe_after_cool_down_then_close_or_reopen() {
        let b = Breaker::new(1, Duration::ZERO);
        assert_eq!(b.record(false), Transition::Opened);
        assert!(b.allow(), "cool-down over: the first caller probes");
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(!b.allow(), "only one probe at a time");
        assert_eq!(b.record(false), Transition::None);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.allow());
        assert_eq!(b.record(true), Transition::Closed);
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.allow());
    }
}
