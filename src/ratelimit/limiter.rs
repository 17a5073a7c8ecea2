//! One quota's buckets: governor's GCRA over a client table with a hard size bound.
//!
//! governor decides; this module stores. The store is a [`DashMap`] of GCRA states with a cap:
//! a flood of distinct clients (spoofed addresses, random API keys) cannot grow it past
//! `max_clients`. New clients beyond the cap share one overflow bucket until the periodic
//! cleanup drops buckets that are back at their full burst. Known clients keep their own.

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus::IntCounter;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use dashmap::DashMap;
use governor::clock::Reference;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use super::identity::ClientKey;
use crate::clock::Clock;

/// tierd's [`Clock`] as governor's: nanoseconds since the epoch. Tests move a manual clock
/// instead of sleeping. (Wall-clock time: a clock stepped backwards only delays refills.)
#[derive(Clone)]
pub struct GovClock(Arc<dyn Clock>);

impl governor::clock::Clock for GovClock {
    type Instant = Nanos;

    #[inline]
    fn now(&self) -> Nanos {
        let d = self.0.now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Nanos::new(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// One GCRA state: the theoretical arrival time, in [`GovClock`] nanoseconds (0: never used).
#[derive(Default)]
struct Cell(AtomicU64);

impl Cell {
    fn measure_and_replace<T, F, E>(&self, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut prev = self.0.load(Ordering::Acquire);
        loop {
            let (out, next) = f(NonZeroU64::new(prev).map(|n| Nanos::new(n.get())))?;
            match self.0.compare_exchange_weak(
                prev,
                next.as_u64(),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(out),
                Err(current) => prev = current,
            }
        }
    }
}

/// The client table: at most `cap` buckets, plus one shared by the clients that did not fit.
pub struct BoundedStore {
    // foldhash: fast for small keys, and seeded per map so keys cannot be chosen to collide.
    map: DashMap<ClientKey, Cell, foldhash::fast::RandomState>,
    len: AtomicUsize,
    cap: usize,
    overflow: Cell,
    overflowed: IntCounter,
}

impl BoundedStore {
    fn new(cap: usize, overflowed: IntCounter) -> Self {
        BoundedStore {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            len: AtomicUsize::new(0),
            cap: cap.max(1),
            overflow: Cell::default(),
            overflowed,
        }
    }
}

impl StateStore for BoundedStore {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(cell) = self.map.get(key) {
            return cell.measure_and_replace(f);
        }
        // Racing inserts may pass the check together: the table can exceed the cap by at most
        // the number of worker threads.
        if self.len.load(Ordering::Relaxed) >= self.cap {
            self.overflowed.inc();
            return self.overflow.measure_and_replace(f);
        }
        let cell = self.map.entry(*key).or_insert_with(|| {
            self.len.fetch_add(1, Ordering::Relaxed);
            Cell::default()
        });
        cell.measure_and_replace(f)
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = drop_below.as_u64();
        self.map.retain(|_, cell| {
            let keep = cell.0.load(Ordering::Relaxed) > drop_below;
            if !keep {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
        if self.overflow.0.load(Ordering::Relaxed) <= drop_below {
            self.overflow.0.store(0, Ordering::Relaxed);
        }
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A quota: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaSpec {
    pub requests_per_second: f64,
    pub burst: u32,
}

impl QuotaSpec {
    /// Time to earn one request back.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.requests_per_second).max(Duration::from_nanos(1))
    }
}

/// What a client past its quota is told: the 429's `Retry-After` and `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// `RateLimit-Limit`: the burst.
    pub limit: u32,
    /// Until one more request is allowed.
    pub retry_after: Duration,
    /// Until the whole burst is available again (`RateLimit-Reset`).
    pub reset: Duration,
}

/// One quota's buckets, keyed by client.
pub struct Limiter {
    gov: RateLimiter<ClientKey, BoundedStore, GovClock, NoOpMiddleware<Nanos>>,
    spec: QuotaSpec,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("spec", &self.spec).finish()
    }
}

impl Limiter {
    /// Buckets for `spec`, tracking at most `max_clients` clients; `overflowed` counts the
    /// requests checked against the shared overflow bucket.
    pub fn new(
        spec: QuotaSpec,
        clock: Arc<dyn Clock>,
        max_clients: usize,
        overflowed: IntCounter,
    ) -> Limiter {
        let burst = NonZeroU32::new(spec.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(spec.period())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        let store = BoundedStore::new(max_clients, overflowed);
        Limiter {
            gov: RateLimiter::new(quota, store, GovClock(clock)),
            spec,
        }
    }

    pub fn spec(&self) -> QuotaSpec {
        self.spec
    }

    /// Spends one request of `key`'s quota, or says how long to wait.
    #[inline]
    pub fn check(&self, key: &ClientKey) -> Result<(), Denial> {
        self.gov.check_key(key).map_err(|not_until| {
            use governor::clock::Clock as _;
            let now = self.gov.clock().now();
            let retry_after = not_until.wait_time_from(now);
            let earliest = not_until.earliest_possible();
            // One request is back at `earliest`; the rest of the burst one period apart.
            let full =
                earliest + Nanos::from(self.spec.period() * self.spec.burst.saturating_sub(1));
            let reset = Duration::from_nanos(full.duration_since(now).as_u64());
            Denial {
                limit: self.spec.burst,
                retry_after,
                reset: reset.max(retry_after),
            }
        })
    }

    /// Drops the buckets that are back at their full burst (indistinguishable from new ones).
    pub fn cleanup(&self) {
        self.gov.retain_recent();
        self.gov.shrink_to_fit();
    }

    /// Clients with a bucket.
    pub fn clients(&self) -> usize {
        self.gov.len()
    }
}

/// A rate and a burst, validated.
pub fn check_quota(key: &str, requests_per_second: f64, burst: u32) -> Result<(), String> {
    if !(requests_per_second.is_finite() && requests_per_second > 0.0 && requests_per_second <= 1e9)
    {
        return Err(format!(
            "{key}.requests_per_second = {requests_per_second}: use a number above 0 \
             (fractions allowed, e.g. 0.5 for one request every 2 s)"
        ));
    }
    if burst == 0 {
        return Err(format!(
            "{key}.burst = 0: use at least 1 (requests allowed at once)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limiter(rps: f64, burst: u32, cap: usize) -> (Limiter, Arc<ManualClock>) {
        let (l, clock, _) = counted(rps, burst, cap);
        (l, clock)
    }

    /// A limiter, its clock and its overflow counter.
    fn counted(rps: f64, burst: u32, cap: usize) -> (Limiter, Arc<ManualClock>, IntCounter) {
        let clock = Arc::new(ManualClock::new());
        let overflowed = IntCounter::new("overflow", "test").unwrap();
        let l = Limiter::new(
            QuotaSpec {
                requests_per_second: rps,
                burst,
            },
            clock.clone(),
            cap,
            overflowed.clone(),
        );
        (l, clock, overflowed)
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let (l, clock) = limiter(2.0, 3, 100);
        let k = ClientKey::V4(1);
        for _ in 0..3 {
            assert!(l.check(&k).is_ok());
        }
        let d = l.check(&k).unwrap_err();
        assert_eq!(d.limit, 3);
        assert_eq!(d.retry_after, Duration::from_millis(500));
        assert_eq!(d.reset, Duration::from_millis(1500));
        clock.advance(Duration::from_millis(499));
        assert!(l.check(&k).is_err());
        clock.advance(Duration::from_millis(1));
        assert!(l.check(&k).is_ok());
        assert!(l.check(&k).is_err());
        // Other clients are untouched.
        assert!(l.check(&ClientKey::V4(2)).is_ok());
    }

    #[test]
    fn fractional_rates() {
        let (l, clock) = limiter(0.5, 1, 100);
        let k = ClientKey::Api(7);
        assert!(l.check(&k).is_ok());
        assert_eq!(l.check(&k).unwrap_err().retry_after, Duration::from_secs(2));
        clock.advance(Duration::from_secs(2));
        assert!(l.check(&k).is_ok());
    }

    #[test]
    fn the_table_is_bounded_and_cleanup_empties_it() {
        let (l, clock, overflowed) = counted(10.0, 2, 100);
        for i in 0..1000 {
            let _ = l.check(&ClientKey::V4(i));
        }
        assert_eq!(l.clients(), 100);
        assert_eq!(overflowed.get(), 900);
        // The clients beyond the cap share one bucket: its burst of 2 is long spent.
        assert!(l.check(&ClientKey::V4(5000)).is_err());
        // Known clients keep their own bucket.
        assert!(l.check(&ClientKey::V4(3)).is_ok());
        clock.advance(Duration::from_secs(1));
        l.cleanup();
        assert_eq!(l.clients(), 0);
        assert!(l.check(&ClientKey::V4(5000)).is_ok());
        assert_eq!(l.clients(), 1);
    }

    #[test]
    fn cleanup_keeps_clients_that_are_still_paying_back() {
        let (l, clock) = limiter(1.0, 5, 100);
        for _ in 0..5 {
            l.check(&ClientKey::V4(1)).unwrap();
        }
        l.check(&ClientKey::V4(2)).unwrap();
        clock.advance(Duration::from_secs(2));
        l.cleanup();
        // Client 2 is back at its full burst; client 1 still owes 3 s.
        assert_eq!(l.clients(), 1);
        assert!(l.check(&ClientKey::V4(1)).is_ok());
        assert!(l.check(&ClientKey::V4(1)).is_ok());
        assert!(l.check(&ClientKey::V4(1)).is_err());
    }
}
