//! L1: an in-process moka cache bounded by bytes, with per-entry expiry.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Expiry;

use super::TierStats;
use crate::cache::entry::Slot;
use crate::metrics::{EvictionCause, Metrics};
use crate::selector::{path_tag, user_tag, KeyParts, Selector};

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

/// Tag -> keys of the entries carrying it. Entries add themselves when stored and leave when
/// evicted or removed; a replaced entry's old tags may linger, so a purge checks the slot it
/// finds still carries the tag.
#[derive(Default)]
struct TagIndex {
    map: Mutex<HashMap<String, HashSet<String>>>,
}

impl TagIndex {
    fn add(&self, key: &str, tags: &[String]) {
        let Ok(mut map) = self.map.lock() else { return };
        for t in tags {
            if let Some(keys) = map.get_mut(t.as_str()) {
                if !keys.contains(key) {
                    keys.insert(key.to_owned());
                }
            } else {
                map.insert(t.clone(), HashSet::from([key.to_owned()]));
            }
        }
    }

    fn remove(&self, key: &str, tags: &[String]) {
        let Ok(mut map) = self.map.lock() else { return };
        for t in tags {
            if let Some(keys) = map.get_mut(t.as_str()) {
                keys.remove(key);
                if keys.is_empty() {
                    map.remove(t.as_str());
                }
            }
        }
    }

    fn keys(&self, tag: &str) -> Vec<String> {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(tag).map(|k| k.iter().cloned().collect()))
            .unwrap_or_default()
    }

    fn tags(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// The tags an entry stored under `key` is indexed by: its variants' tags, its path tag and,
/// when the key is scoped to a user, its user tag.
pub fn slot_tags(key: &str, slot: &Slot) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    if let Some(parts) = KeyParts::parse(key) {
        tags.push(path_tag(parts.path));
        if let Some(user) = parts.user {
            tags.push(user_tag(user));
        }
    }
    for v in slot.variants.iter() {
        for t in v.tags.iter() {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
    }
    tags
}

/// moka's own bookkeeping per entry and the key's `String`.
const KEY_OVERHEAD_BYTES: u64 = 160;
/// One key in one tag's set of the tag index (hash-set slot, `String`).
const INDEX_ENTRY_OVERHEAD_BYTES: u64 = 64;

/// Everything an entry holds in L1: its variants (bodies, headers, `Vary` values, tags), its
/// key, and its copies in the tag index (the key once per tag, the implicit ones included).
fn weigh(key: &str, slot: &Slot) -> u32 {
    let key_len = key.len() as u64;
    let user_scoped = KeyParts::parse(key).is_some_and(|p| p.user.is_some());
    let tags = u64::from(slot.tag_count) + 1 + u64::from(user_scoped);
    let index = tags * (key_len + INDEX_ENTRY_OVERHEAD_BYTES) + u64::from(slot.tag_bytes) + key_len;
    let total = u64::from(slot.weight) + key_len + KEY_OVERHEAD_BYTES + index;
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// The in-process tier. Reads are synchronous and lock-free on the hit path.
#[derive(Clone)]
pub struct MemoryTier {
    cache: Cache<String, Arc<Slot>>,
    index: Arc<TagIndex>,
}

impl MemoryTier {
    /// A tier holding at most `max_bytes` (keys, headers and bodies weighed), counting evictions
    /// into `metrics`.
    pub fn new(max_bytes: u64, metrics: Arc<Metrics>) -> Self {
        let index = Arc::new(TagIndex::default());
        let listener_index = index.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Arc<Slot>| weigh(k, v))
            .expire_after(SlotExpiry)
            .eviction_listener(move |k: Arc<String>, v: Arc<Slot>, cause| {
                // A replacement keeps the key; the new slot indexed itself when stored.
                if cause != RemovalCause::Replaced {
                    listener_index.remove(&k, &slot_tags(&k, &v));
                }
                metrics.l1_eviction(match cause {
                    RemovalCause::Expired => EvictionCause::Expired,
                    RemovalCause::Size => EvictionCause::Size,
                    RemovalCause::Explicit => EvictionCause::Explicit,
                    RemovalCause::Replaced => EvictionCause::Replaced,
                })
            })
            .build();
        MemoryTier { cache, index }
    }

    /// The slot under `key`.
    #[inline]
    pub fn get_now(&self, key: &str) -> Option<Arc<Slot>> {
        self.cache.get(key)
    }

    /// Stores a slot.
    pub fn put_now(&self, key: &str, slot: Arc<Slot>) {
        self.index.add(key, &slot_tags(key, &slot));
        self.cache.insert(key.to_owned(), slot);
    }

    /// Atomically replaces the slot under `key` with `f(current)`; `None` removes it.
    pub fn update(&self, key: &str, f: impl FnOnce(Option<&Arc<Slot>>) -> Option<Arc<Slot>>) {
        use moka::ops::compute::Op;
        let mut stored = None;
        let _ = self
            .cache
            .entry(key.to_owned())
            .and_compute_with(|current| match f(current.as_ref().map(|e| e.value())) {
                Some(slot) => {
                    stored = Some(slot.clone());
                    Op::Put(slot)
                }
                None => Op::Remove,
            });
        if let Some(slot) = stored {
            self.index.add(key, &slot_tags(key, &slot));
        }
    }

    pub fn delete_now(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }

    /// Runs pending maintenance (expiry, eviction), so counts are exact; for tests and stats.
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }

    /// Removes every entry `selector` selects; the number removed.
    pub fn purge(&self, selector: &Selector) -> u64 {
        if *selector == Selector::All {
            self.cache.run_pending_tasks();
            let held = self.cache.entry_count();
            self.clear();
            return held;
        }
        let mut removed = 0;
        match selector.index_tag() {
            Some(tag) => {
                for key in self.index.keys(&tag) {
                    if !selector.matches_key(&key) {
                        // Another query or host of the same path: not selected, still indexed.
                        continue;
                    }
                    let carries = self
                        .cache
                        .get(&key)
                        .is_some_and(|slot| slot_tags(&key, &slot).contains(&tag));
                    if !carries {
                        // Gone or re-tagged since it was indexed.
                        self.index.remove(&key, std::slice::from_ref(&tag));
                    } else if self.cache.remove(&key).is_some() {
                        removed += 1;
                    }
                }
            }
            None => {
                let keys: Vec<Arc<String>> = self
                    .cache
                    .iter()
                    .filter(|(k, _)| selector.matches_key(k))
                    .map(|(k, _)| k)
                    .collect();
                for k in keys {
                    if self.cache.remove(k.as_str()).is_some() {
                        removed += 1;
                    }
                }
            }
        }
        removed
    }

    /// Drops every entry (after missed invalidations).
    pub fn clear(&self) {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
    }

    /// Current entry count and weighted bytes.
    pub fn stats(&self) -> TierStats {
        TierStats {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
        }
    }

    /// The weighted size it evicts to stay under (`tiers.l1.max_bytes`).
    pub fn max_bytes(&self) -> Option<u64> {
        self.cache.policy().max_capacity()
    }

    /// Distinct tags indexed (for stats).
    pub fn indexed_tags(&self) -> usize {
        self.index.tags()
    }
}
