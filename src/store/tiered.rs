//! The composition of tiers, fastest first.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::memory::slot_tags;
use super::queue::Record;
use super::{MemoryTier, Tier, TierError, TierName, TierReport};
use crate::cache::codec::{self, millis};
use crate::cache::entry::Slot;
use crate::clock::Clock;
use crate::log_limit::{LogLimit, DEFAULT_LOG_INTERVAL};

/// Deletes fail per request while a tier is down: one line per interval.
static DELETE_FAILED: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
use crate::metrics::{Lookup, Metrics, TierFault, WriteOutcome};
use crate::selector::Selector;

/// The tokio runtime the lower tiers' I/O runs on: Redis connections, write workers, DuckDB reads.
///
/// It is separate from the HTTP workers' runtimes so that connections and queued writes outlive
/// the listeners: a graceful shutdown stops the listeners first, then drains the queues here.
pub struct StoreRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl StoreRuntime {
    /// A runtime with `threads` worker threads.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(16)
            .thread_name("tierd-store")
            .enable_all()
            .build()?;
        Ok(StoreRuntime { rt: Some(rt) })
    }

    /// A handle for spawning onto the runtime.
    pub fn handle(&self) -> tokio::runtime::Handle {
        match &self.rt {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("the runtime is only taken in drop"),
        }
    }
}

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        // Dropping a runtime from async code panics; the queues were drained by `close` already.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A set of tiers (a rule's `tiers`); L1 is always in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierSet(u8);

impl TierSet {
    /// Every tier.
    pub const ALL: TierSet = TierSet(0b111);

    /// The set of `tiers`, plus L1.
    pub fn of(tiers: &[TierName]) -> TierSet {
        TierSet(tiers.iter().fold(1, |m, t| m | 1 << *t as u8))
    }

    #[inline]
    pub fn contains(self, t: TierName) -> bool {
        self.0 & (1 << t as u8) != 0
    }
}

/// Recent purges, so a fetch that started before a purge does not store what the purge meant
/// to remove (its response may predate the change the purge announces).
pub struct PurgeLog {
    epoch: AtomicU64,
    recent: Mutex<VecDeque<(u64, Selector)>>,
}

/// Purges remembered; a fetch that outlives more than this many purges does not store.
const PURGE_LOG_LEN: usize = 1024;

impl Default for PurgeLog {
    fn default() -> Self {
        PurgeLog {
            epoch: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(64)),
        }
    }
}

impl PurgeLog {
    /// The current epoch; pass it to [`selects_since`](Self::selects_since) later.
    #[inline]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn record(&self, selector: &Selector) {
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        if recent.len() == PURGE_LOG_LEN {
            recent.pop_front();
        }
        recent.push_back((epoch, selector.clone()));
    }

    /// Whether a purge since `epoch` selects an entry stored under `key` with `tags`.
    pub fn selects_since(&self, epoch: u64, key: &str, tags: &[String]) -> bool {
        if self.epoch() == epoch {
            return false;
        }
        let Ok(recent) = self.recent.lock() else {
            return true;
        };
        match recent.front() {
            // Older purges were forgotten: assume the worst.
            Some((oldest, _)) if *oldest > epoch + 1 => return true,
            None => return true,
            _ => {}
        }
        recent
            .iter()
            .filter(|(e, _)| *e > epoch)
            .any(|(_, sel)| match sel {
                Selector::Tag(t) => tags.contains(t),
                other => other.matches_key(key),
            })
    }
}

struct Lower {
    tier: Arc<dyn Tier>,
    /// Longest a record stays in this tier, whatever its own lifetime.
    max_ttl: Duration,
}

/// L1 plus any lower tiers. L1 is held by its concrete type because it is on every request's
/// path and needs no boxed future; lower tiers go through the [`Tier`] trait on the
/// [`StoreRuntime`].
pub struct TieredStore {
    l1: MemoryTier,
    lower: Vec<Lower>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    rt: Option<StoreRuntime>,
    purges: PurgeLog,
    /// Configured tiers that could not start.
    failed: Vec<(TierName, String)>,
}

impl TieredStore {
    /// A store with L1 only.
    pub fn new(l1: MemoryTier, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        TieredStore {
            l1,
            lower: Vec::new(),
            clock,
            metrics,
            rt: None,
            purges: PurgeLog::default(),
            failed: Vec::new(),
        }
    }

    /// Gives the store the runtime its lower tiers' I/O runs on (needed before `with_tier`).
    pub fn with_runtime(mut self, rt: StoreRuntime) -> Self {
        self.rt = Some(rt);
        self
    }

    /// Adds the next slower tier; records stay in it `max_ttl` at most.
    pub fn with_tier(mut self, tier: Arc<dyn Tier>, max_ttl: Duration) -> Self {
        self.lower.push(Lower { tier, max_ttl });
        self
    }

    /// The L1 tier.
    pub fn l1(&self) -> &MemoryTier {
        &self.l1
    }

    /// The tier called `name`, when it is configured below L1.
    pub fn tier(&self, name: TierName) -> Option<&Arc<dyn Tier>> {
        self.lower
            .iter()
            .find(|l| l.tier.name() == name)
            .map(|l| &l.tier)
    }

    /// The slot for `key` from L1. The caller counts the lookup's outcome (it alone knows
    /// whether the variant it needs is there, and fresh).
    #[inline]
    pub fn get_l1(&self, key: &str) -> Option<Arc<Slot>> {
        let tm = self.metrics.tier(TierName::L1);
        let t = tm.timer();
        let slot = self.l1.get_now(key);
        tm.observe_get(t);
        slot
    }

    /// Whether any tier below L1 is configured.
    pub fn has_lower(&self) -> bool {
        !self.lower.is_empty()
    }

    async fn on_runtime<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, TierError>> + Send + 'static,
    ) -> Result<T, TierError> {
        match &self.rt {
            Some(rt) => rt
                .handle()
                .spawn(fut)
                .await
                .map_err(|e| TierError::Unavailable(e.to_string()))?,
            None => fut.await,
        }
    }

    /// The log of recent purges.
    pub fn purges(&self) -> &PurgeLog {
        &self.purges
    }

    /// Looks `key` up in the tiers below L1 that `tiers` holds, fastest first; a failing tier
    /// counts as a miss. A hit is copied into L1 and into the lower tiers faster than the one
    /// that answered, with its remaining keep time. The tiers that missed or failed are counted
    /// here; the caller counts the outcome in the tier that answered.
    pub async fn get_lower(&self, key: &str, tiers: TierSet) -> Option<(Arc<Slot>, TierName)> {
        for (i, lower) in self.lower.iter().enumerate() {
            let name = lower.tier.name();
            if !tiers.contains(name) {
                continue;
            }
            let tm = self.metrics.tier(name);
            let started = tm.timer();
            let tier = lower.tier.clone();
            let k = key.to_owned();
            let got = self.on_runtime(async move { tier.get(&k).await }).await;
            tm.observe_get(started);
            let record = match got {
                Ok(Some(r)) => r,
                Ok(None) => {
                    tm.lookup(Lookup::Miss);
                    continue;
                }
                Err(e) => {
                    tm.lookup(Lookup::Error);
                    if !matches!(e, TierError::CircuitOpen) {
                        tracing::debug!(tier = name.as_str(), error = %e, "tier lookup failed; treated as a miss");
                    }
                    continue;
                }
            };
            let now = self.clock.now();
            let decoded = match codec::decode(record, now) {
                Ok(d) => d,
                Err(e) => {
                    tm.lookup(Lookup::Error);
                    tm.fault(TierFault::Decode);
                    static UNREADABLE: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                    if let Some(occurrences) = UNREADABLE.check() {
                        tracing::warn!(tier = name.as_str(), reason = e.as_str(), error = %e, occurrences, "stored record unreadable; treated as a miss");
                    }
                    continue;
                }
            };
            if decoded.tier_expires <= now {
                tm.lookup(Lookup::Miss);
                continue;
            }
            tm.promotions.inc();
            let slot = Arc::new(decoded.slot);
            self.l1.put_now(key, slot.clone());
            self.queue_writes(&self.lower[..i], tiers, key, &slot, decoded.keep_until, now);
            return Some((slot, name));
        }
        None
    }

    /// Atomically updates the slot under `key` in L1; the new slot is then queued for the lower
    /// tiers in `tiers` (a removal is applied to them all).
    pub fn update(
        &self,
        key: &str,
        tiers: TierSet,
        f: impl FnOnce(Option<&Arc<Slot>>) -> Option<Arc<Slot>>,
    ) {
        let mut result = None;
        let l1 = self.metrics.tier(TierName::L1);
        let t = l1.timer();
        self.l1.update(key, |current| {
            let next = f(current);
            result = Some(next.clone());
            next
        });
        l1.observe_put(t);
        if self.lower.is_empty() {
            return;
        }
        match result {
            Some(Some(slot)) => {
                let now = self.clock.now();
                self.queue_writes(&self.lower, tiers, key, &slot, now + slot.keep_for, now);
            }
            Some(None) => {
                for lower in &self.lower {
                    let tier = lower.tier.clone();
                    let k = key.to_owned();
                    if let Some(rt) = &self.rt {
                        rt.handle().spawn(async move {
                            if let Err(e) = tier.delete(&k).await {
                                if let Some(occurrences) = DELETE_FAILED.check() {
                                    tracing::warn!(tier = tier.name().as_str(), error = %e, occurrences, "tier delete failed");
                                }
                            }
                        });
                    }
                }
            }
            None => {}
        }
    }

    /// Queues `slot` for each of `tiers`, each with its own TTL cap; tiers whose capped expiry is
    /// the same share one encoding.
    fn queue_writes(
        &self,
        lowers: &[Lower],
        tiers: TierSet,
        key: &str,
        slot: &Slot,
        keep_until: SystemTime,
        now: SystemTime,
    ) {
        let mut encoded: Option<(SystemTime, bytes::Bytes)> = None;
        let mut tags: Option<Arc<[String]>> = None;
        for lower in lowers {
            if !tiers.contains(lower.tier.name()) {
                continue;
            }
            let tags = tags
                .get_or_insert_with(|| slot_tags(key, slot).into())
                .clone();
            let expires = keep_until.min(now + lower.max_ttl);
            let bytes = match &encoded {
                Some((at, b)) if *at == expires => b.clone(),
                _ => {
                    let b = codec::encode(slot, keep_until, expires);
                    encoded = Some((expires, b.clone()));
                    b
                }
            };
            let record = Record {
                bytes,
                expires_at_ms: millis(expires),
                ttl: expires.duration_since(now).unwrap_or(Duration::ZERO),
                tags,
            };
            let name = lower.tier.name();
            if let Err(e) = lower.tier.put(key.to_owned(), record) {
                self.metrics.tier(name).writes(WriteOutcome::QueueFull, 1);
                tracing::debug!(tier = name.as_str(), error = %e, "write not accepted");
            }
        }
    }

    /// Removes `key` from every tier; returns once the lower tiers have applied it (or failed).
    pub async fn delete(&self, key: &str) {
        self.l1.delete_now(key);
        for lower in &self.lower {
            let tier = lower.tier.clone();
            let k = key.to_owned();
            if let Err(e) = self.on_runtime(async move { tier.delete(&k).await }).await {
                if let Some(occurrences) = DELETE_FAILED.check() {
                    tracing::warn!(tier = lower.tier.name().as_str(), error = %e, occurrences, "tier delete failed");
                }
            }
        }
    }

    /// Removes every entry `selector` selects from every tier; the number removed per tier.
    /// L1 is purged before this returns anything; the lower tiers apply it behind the writes
    /// they accepted before it.
    pub async fn purge(&self, selector: &Selector) -> Vec<(TierName, Result<u64, TierError>)> {
        self.purges.record(selector);
        let l1 = self.metrics.tier(TierName::L1);
        let t = l1.timer();
        let mut out = vec![(TierName::L1, Ok(self.l1.purge(selector)))];
        l1.observe_delete(t);
        for lower in &self.lower {
            let tier = lower.tier.clone();
            let sel = selector.clone();
            let tm = self.metrics.tier(lower.tier.name());
            let t = tm.timer();
            out.push((
                lower.tier.name(),
                self.on_runtime(async move { tier.purge(&sel).await }).await,
            ));
            tm.observe_delete(t);
        }
        for (tier, r) in &out {
            match r {
                Ok(n) => self
                    .metrics
                    .invalidation
                    .purged_entries
                    .with_label_values(&[tier.as_str()])
                    .inc_by(*n),
                Err(e) => {
                    tracing::warn!(tier = tier.as_str(), kind = selector.kind(), error = %e, "purge failed in this tier")
                }
            }
        }
        out
    }

    /// Looks `key` up in one tier only, without promoting (for inspection).
    pub async fn peek(
        &self,
        name: TierName,
        key: &str,
    ) -> Result<Option<codec::Decoded>, TierError> {
        if name == TierName::L1 {
            return Ok(self.l1.get_now(key).map(|slot| codec::Decoded {
                tier_expires: self.clock.now() + slot.keep_for,
                keep_until: self.clock.now() + slot.keep_for,
                slot: (*slot).clone(),
            }));
        }
        let Some(tier) = self.tier(name).cloned() else {
            return Ok(None);
        };
        let k = key.to_owned();
        let record = self.on_runtime(async move { tier.get(&k).await }).await?;
        let now = self.clock.now();
        Ok(record
            .and_then(|r| codec::decode(r, now).ok())
            .filter(|d| d.tier_expires > now))
    }

    /// Per-tier sizes, write-queue depths and circuit states.
    pub fn stats(&self) -> Vec<TierReport> {
        std::iter::once(TierReport {
            name: TierName::L1,
            stats: Some(self.l1.stats()),
            max_bytes: self.l1.max_bytes(),
            queue_depth: 0,
            queue_capacity: 0,
            pool: None,
            circuit: None,
            healthy: true,
        })
        .chain(self.lower.iter().map(|l| TierReport {
            name: l.tier.name(),
            stats: l.tier.stats(),
            max_bytes: l.tier.max_bytes(),
            queue_depth: l.tier.queue_depth(),
            queue_capacity: l.tier.queue_capacity(),
            pool: l.tier.pool(),
            circuit: l.tier.circuit(),
            healthy: l.tier.healthy(),
        }))
        .collect()
    }

    /// Tiers the configuration enables that could not start, with the reason (for `/readyz`).
    pub fn failed_tiers(&self) -> &[(TierName, String)] {
        &self.failed
    }

    /// Records that `tier` is configured but could not start.
    pub fn with_failed_tier(mut self, tier: TierName, reason: String) -> Self {
        self.metrics.tier(tier).failed.set(1);
        self.failed.push((tier, reason));
        self
    }

    /// Graceful shutdown: stops accepting lower-tier writes and waits until every accepted one
    /// is applied (or has failed against its tier).
    pub async fn close(&self) {
        for lower in &self.lower {
            let tier = lower.tier.clone();
            let name = tier.name();
            let depth = tier.queue_depth();
            let _ = self
                .on_runtime(async move {
                    tier.close().await;
                    Ok(())
                })
                .await;
            tracing::info!(tier = name.as_str(), drained = depth, "write queue drained");
        }
    }
}
