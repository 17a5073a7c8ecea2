//! The origin comes first: warm fetches share a budget of requests per second (paced, with
//! jitter) and concurrency, pause while clients' own origin fetches are many, back off when the
//! origin fails or slows down, and, for the triggers that follow traffic (prediction), stay
//! under a share of the clients' origin traffic.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Skip;

/// The budget's settings.
#[derive(Debug, Clone)]
pub struct BudgetOptions {
    /// Warm fetches per second at most (all triggers together).
    pub rate_per_second: f64,
    /// Warm fetches in flight at most.
    pub concurrency: usize,
    /// Prediction fetches over the last minute stay under this share of the clients' origin
    /// fetches (plus one second's worth of `rate_per_second`).
    pub origin_share: f64,
    /// Warming waits while more client fetches than this are in flight to the origin.
    pub yield_above: usize,
    /// A warm fetch slower than this counts as the origin slowing down (backoff).
    pub slow: Duration,
    /// The longest backoff.
    pub backoff_max: Duration,
}

impl Default for BudgetOptions {
    fn default() -> Self {
        BudgetOptions {
            rate_per_second: 20.0,
            concurrency: 4,
            origin_share: 0.5,
            yield_above: 32,
            slow: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
        }
    }
}

struct Backoff {
    until: Option<Instant>,
    step: Duration,
}

/// Per-second deltas of origin fetches over the last minute: (clients', the warmer's that
/// follow traffic).
struct Window {
    slots: [(u64, u64); 60],
    at: usize,
    last: Option<(u64, u64, u64)>,
}

/// The shared budget.
pub struct Budget {
    opts: BudgetOptions,
    sem: Arc<Semaphore>,
    next: Mutex<Instant>,
    backoff: Mutex<Backoff>,
    window: Mutex<Window>,
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64())
}

impl Budget {
    pub fn new(opts: BudgetOptions) -> Budget {
        Budget {
            sem: Arc::new(Semaphore::new(opts.concurrency.max(1))),
            next: Mutex::new(Instant::now()),
            backoff: Mutex::new(Backoff {
                until: None,
                step: Duration::ZERO,
            }),
            window: Mutex::new(Window {
                slots: [(0, 0); 60],
                at: 0,
                last: None,
            }),
            opts,
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.opts.rate_per_second.max(0.001))
    }

    /// Warm fetches in flight now.
    pub fn in_flight(&self) -> usize {
        self.opts.concurrency.max(1) - self.sem.available_permits()
    }

    /// Whether clients' origin fetches in flight (`flights` counts the warmer's too) exceed
    /// the yield threshold.
    pub fn busy(&self, flights: usize) -> bool {
        flights.saturating_sub(self.in_flight()) > self.opts.yield_above
    }

    fn backing_off(&self, now: Instant) -> Option<Instant> {
        let b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        b.until.filter(|u| *u > now)
    }

    /// Waits for a turn (backoff over, origin not busy, paced, a free slot); `Err` at
    /// `deadline`. `flights` says how many origin fetches are in flight.
    pub async fn acquire(
        &self,
        deadline: Instant,
        flights: impl Fn() -> usize,
    ) -> Result<OwnedSemaphorePermit, Skip> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Skip::Deadline);
            }
            if let Some(until) = self.backing_off(now) {
                tokio::time::sleep_until(until.min(deadline).into()).await;
                continue;
            }
            if self.busy(flights()) {
                tokio::time::sleep(Duration::from_millis(50).min(deadline - now)).await;
                continue;
            }
            let at = {
                let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                let at = (*next).max(now);
                *next = at + jitter(self.interval());
                at
            };
            if at >= deadline {
                return Err(Skip::Deadline);
            }
            tokio::time::sleep_until(at.into()).await;
            let left = deadline.saturating_duration_since(Instant::now());
            let permit = match tokio::time::timeout(left, self.sem.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => return Err(Skip::Deadline),
            };
            // A fetch that ended while this one waited for its slot may have started a backoff.
            if self.backing_off(Instant::now()).is_none() {
                return Ok(permit);
            }
        }
    }

    /// A turn now or never (predictions: worth nothing late).
    pub fn try_acquire(&self, flights: usize) -> Result<OwnedSemaphorePermit, Skip> {
        let now = Instant::now();
        if self.backing_off(now).is_some() {
            return Err(Skip::Backoff);
        }
        if self.busy(flights) {
            return Err(Skip::Busy);
        }
        if !self.share_allows() {
            return Err(Skip::Budget);
        }
        // Paced as a bucket of `concurrency` turns refilled at the rate (GCRA).
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let burst = self.interval() * (self.opts.concurrency.max(1) as u32 - 1);
        if *next > now + burst {
            return Err(Skip::Budget);
        }
        let permit = self
            .sem
            .clone()
            .try_acquire_owned()
            .map_err(|_| Skip::Budget)?;
        *next = (*next).max(now) + self.interval();
        Ok(permit)
    }

    /// A fetch answered: a failure or a slow answer backs off (doubling, jittered), a good one
    /// ends the backoff.
    pub fn outcome(&self, failed: bool, took: Duration) {
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if failed || took >= self.opts.slow {
            b.step = (b.step * 2)
                .max(Duration::from_secs(1))
                .min(self.opts.backoff_max);
            b.until = Some(Instant::now() + jitter(b.step));
        } else {
            b.step = Duration::ZERO;
            b.until = None;
        }
    }

    /// The backoff in force, if any.
    pub fn backoff_left(&self) -> Option<Duration> {
        let now = Instant::now();
        self.backing_off(now).map(|u| u - now)
    }

    /// Once a second: the origin fetch counters: all of them, the warmer's, and the warmer's
    /// for the triggers that follow traffic (prediction, refresh-ahead), which the share
    /// bounds (a pass is bounded by its size and the pace).
    pub fn sample(&self, origin_total: u64, warm_total: u64, following_total: u64) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((o, m, f)) = w.last {
            let warm = warm_total.saturating_sub(m);
            let clients = origin_total.saturating_sub(o).saturating_sub(warm);
            let at = w.at;
            w.slots[at] = (clients, following_total.saturating_sub(f));
            w.at = (at + 1) % 60;
        }
        w.last = Some((origin_total, warm_total, following_total));
    }

    fn share_allows(&self) -> bool {
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (clients, warm) = w
            .slots
            .iter()
            .fold((0u64, 0u64), |(c, m), (a, b)| (c + a, m + b));
        (warm as f64) < self.opts.origin_share * clients as f64 + self.opts.rate_per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(rate: f64, concurrency: usize) -> Budget {
        Budget::new(BudgetOptions {
            rate_per_second: rate,
            concurrency,
            origin_share: 0.5,
            yield_above: 2,
            ..BudgetOptions::default()
        })
    }

    #[tokio::test]
    async fn concurrency_and_pacing_bound_predictions() {
        let b = budget(1000.0, 2);
        let p1 = b.try_acquire(0).unwrap();
        let _p2 = b.try_acquire(0);
        assert_eq!(b.in_flight(), 2);
        assert_eq!(b.try_acquire(0).err(), Some(Skip::Budget));
        drop(p1);
        // Paced at 1/s with one slot: the first turn is free, the next is a second away.
        let slow = budget(1.0, 1);
        drop(slow.try_acquire(0).unwrap());
        assert_eq!(slow.try_acquire(0).err(), Some(Skip::Budget));
    }

    #[tokio::test]
    async fn clients_fetches_in_flight_make_warming_wait() {
        let b = budget(1000.0, 4);
        // 3 fetches in flight, none the warmer's: above yield_above = 2.
        assert_eq!(b.try_acquire(3).err(), Some(Skip::Busy));
        let deadline = Instant::now() + Duration::from_millis(200);
        assert_eq!(b.acquire(deadline, || 3).await.err(), Some(Skip::Deadline));
        let deadline = Instant::now() + Duration::from_millis(200);
        assert!(b.acquire(deadline, || 2).await.is_ok());
    }

    #[tokio::test]
    async fn failures_back_off_and_a_success_ends_it() {
        let b = budget(1000.0, 4);
        b.outcome(true, Duration::ZERO);
        let left = b.backoff_left().expect("backing off");
        assert!(left <= Duration::from_millis(1500), "{left:?}");
        assert_eq!(b.try_acquire(0).err(), Some(Skip::Backoff));
        b.outcome(false, Duration::from_millis(1));
        assert!(b.backoff_left().is_none());
        // A slow answer is a failure.
        b.outcome(false, Duration::from_secs(3));
        assert!(b.backoff_left().is_some());
    }

    #[tokio::test]
    async fn predictions_stay_under_a_share_of_the_clients_origin_traffic() {
        let b = Budget::new(BudgetOptions {
            rate_per_second: 1.0,
            concurrency: 100,
            origin_share: 0.5,
            ..BudgetOptions::default()
        });
        b.sample(0, 0, 0);
        // 10 client fetches, 5 predictions (counted in the origin total too): 5 < 0.5 * 10 + 1.
        b.sample(15, 5, 5);
        assert!(b.share_allows());
        // A pass of 100 does not count against predictions.
        b.sample(115, 105, 5);
        assert!(b.share_allows());
        b.sample(117, 107, 7);
        // 12 client fetches, 7 predictions: 7 >= 0.5 * 12 + 1.
        assert!(!b.share_allows());
    }
}
