//! L1: an in-process moka cache bounded by bytes, with per-entry expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Expiry;

use super::TierStats;
use crate::cache::entry::Slot;
use crate::metrics::{EvictionCause, Metrics};

struct SlotExpiry;

impl Expiry<String, Arc<Slot>> for SlotExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Slot>,
        _at: Instant,
    ) -> Option<Duration> {
        Some(value.keep_for)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Slot>,
        _at: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.keep_for)
    }
}

/// The in-process tier. Reads are synchronous and lock-free on the hit path.
#[derive(Clone)]
pub struct MemoryTier {
    cache: Cache<String, Arc<Slot>>,
}

impl MemoryTier {
    /// A tier holding at most `max_bytes` (keys, headers and bodies weighed), counting evictions
    /// into `metrics`.
    pub fn new(max_bytes: u64, metrics: Arc<Metrics>) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Arc<Slot>| v.weight.saturating_add(k.len() as u32))
            .expire_after(SlotExpiry)
            .support_invalidation_closures()
            .eviction_listener(move |_k, _v, cause| {
                metrics.l1_eviction(match cause {
                    RemovalCause::Expired => EvictionCause::Expired,
                    RemovalCause::Size => EvictionCause::Size,
                    RemovalCause::Explicit => EvictionCause::Explicit,
                    RemovalCause::Replaced => EvictionCause::Replaced,
                })
            })
            .build();
        MemoryTier { cache }
    }

    /// The slot under `key`.
    #[inline]
    pub fn get_now(&self, key: &str) -> Option<Arc<Slot>> {
        self.cache.get(key)
    }

    /// Stores a slot.
    pub fn put_now(&self, key: &str, slot: Arc<Slot>) {
        self.cache.insert(key.to_owned(), slot);
    }

    /// Atomically replaces the slot under `key` with `f(current)`; `None` removes it.
    pub fn update(&self, key: &str, f: impl FnOnce(Option<&Arc<Slot>>) -> Option<Arc<Slot>>) {
        use moka::ops::compute::Op;
        let _ = self
            .cache
            .entry(key.to_owned())
            .and_compute_with(|current| match f(current.as_ref().map(|e| e.value())) {
                Some(slot) => Op::Put(slot),
                None => Op::Remove,
            });
    }

    pub fn delete_now(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }

    /// Runs pending maintenance (expiry, eviction), so counts are exact; for tests and stats.
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }

    /// Removes every key starting with `prefix`; the number removed.
    pub fn purge_prefix(&self, prefix: &str) -> u64 {
        let prefix = prefix.to_owned();
        let before = self.cache.entry_count();
        if let Err(e) = self
            .cache
            .invalidate_entries_if(move |k, _| k.starts_with(&prefix))
        {
            tracing::error!(tier = "l1", error = %e, "prefix purge refused");
        }
        self.cache.run_pending_tasks();
        before.saturating_sub(self.cache.entry_count())
    }

    /// Current entry count and weighted bytes.
    pub fn stats(&self) -> TierStats {
        TierStats {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
        }
    }
}
