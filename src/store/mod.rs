//! Storage tiers. Each tier implements the small [`Tier`] trait; [`TieredStore`] composes them,
//! fastest first. This build has L1 (moka, in process); L2 (Redis) and L3 (DuckDB) plug into the
//! same trait.

mod memory;
mod tiered;

use std::sync::Arc;

use async_trait::async_trait;

pub use memory::MemoryTier;
pub use tiered::TieredStore;

use crate::cache::entry::Slot;

/// A storage tier's name; the same string is the `tier` metric label and `Cache-Status` detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierName {
    L1,
    L2,
    L3,
}

impl TierName {
    pub fn as_str(self) -> &'static str {
        match self {
            TierName::L1 => "l1",
            TierName::L2 => "l2",
            TierName::L3 => "l3",
        }
    }
}

/// A tier failed; the cache treats this as a miss, never as a client-facing error.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("tier operation timed out")]
    Timeout,
    #[error("tier unavailable: {0}")]
    Unavailable(String),
    #[error("stored entry could not be decoded: {0}")]
    Decode(String),
}

/// A point-in-time view of a tier's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    pub entries: u64,
    pub bytes: u64,
}

/// One storage tier. Keys are cache keys; values are the whole [`Slot`] of a URI's variants.
#[async_trait]
pub trait Tier: Send + Sync + 'static {
    /// Which tier this is.
    fn name(&self) -> TierName;
    /// The slot stored under `key`, if any (expired entries are not returned).
    async fn get(&self, key: &str) -> Result<Option<Arc<Slot>>, TierError>;
    /// Stores `slot` under `key`, kept for `slot.keep_for` at most.
    async fn put(&self, key: &str, slot: Arc<Slot>) -> Result<(), TierError>;
    /// Removes `key`; true if something was removed.
    async fn delete(&self, key: &str) -> Result<bool, TierError>;
    /// Removes every key starting with `prefix` (a literal prefix); the number removed, when known.
    async fn purge_prefix(&self, prefix: &str) -> Result<u64, TierError>;
    /// Current entry count and bytes.
    fn stats(&self) -> TierStats;
}
