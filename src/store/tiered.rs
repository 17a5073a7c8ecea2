//! The composition of tiers, fastest first.

use std::sync::Arc;

use super::{MemoryTier, Tier, TierName, TierStats};
use crate::cache::entry::Slot;

/// L1 plus any lower tiers. L1 is held by its concrete type because it is on every request's
/// path and needs no boxed future; lower tiers go through the [`Tier`] trait.
pub struct TieredStore {
    l1: MemoryTier,
    lower: Vec<Arc<dyn Tier>>,
}

impl TieredStore {
    pub fn new(l1: MemoryTier) -> Self {
        TieredStore {
            l1,
            lower: Vec::new(),
        }
    }

    /// The L1 tier.
    pub fn l1(&self) -> &MemoryTier {
        &self.l1
    }

    /// The slot for `key` from L1.
    #[inline]
    pub fn get_l1(&self, key: &str) -> Option<Arc<Slot>> {
        self.l1.get_now(key)
    }

    /// Looks `key` up in the tiers below L1, fastest first; a failing tier counts as a miss.
    /// A hit is copied into L1.
    pub async fn get_lower(&self, key: &str) -> Option<(Arc<Slot>, TierName)> {
        for tier in &self.lower {
            match tier.get(key).await {
                Ok(Some(slot)) => {
                    self.l1.put_now(key, slot.clone());
                    return Some((slot, tier.name()));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(tier = tier.name().as_str(), error = %e, "tier lookup failed; treated as a miss")
                }
            }
        }
        None
    }

    /// Whether any tier below L1 is configured.
    pub fn has_lower(&self) -> bool {
        !self.lower.is_empty()
    }

    /// Atomically updates the slot under `key` in L1.
    pub fn update(&self, key: &str, f: impl FnOnce(Option<&Arc<Slot>>) -> Option<Arc<Slot>>) {
        self.l1.update(key, f);
    }

    /// Removes `key` from every tier.
    pub async fn delete(&self, key: &str) {
        self.l1.delete_now(key);
        for tier in &self.lower {
            if let Err(e) = tier.delete(key).await {
                tracing::warn!(tier = tier.name().as_str(), error = %e, "tier delete failed");
            }
        }
    }

    /// Per-tier sizes.
    pub fn stats(&self) -> Vec<(TierName, TierStats)> {
        std::iter::once((TierName::L1, self.l1.stats()))
            .chain(self.lower.iter().map(|t| (t.name(), t.stats())))
            .collect()
    }
}
