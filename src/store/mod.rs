//! Storage tiers, fastest first: L1 in process ([`MemoryTier`], moka), L2 Redis ([`RedisTier`]),
//! L3 DuckDB ([`DuckTier`]). [`TieredStore`] composes them.
//!
//! L1 holds decoded slots and is called directly on every request. The tiers below it implement
//! the small [`Tier`] trait over encoded records ([`crate::cache::codec`]); their writes go
//! through a bounded, ordered queue ([`queue`]) and never wait on the request path.

// The circuit breaker guards L2; a build without Redis has no use for most of it.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod breaker;
#[cfg(feature = "duckdb")]
mod duck;
mod memory;
mod metrics;
pub mod queue;
#[cfg(feature = "redis")]
mod redis;
mod tiered;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::selector::Selector;

pub use breaker::CircuitState;
#[cfg(feature = "duckdb")]
pub use duck::{key_hash, DuckOptions, DuckTier};
pub use memory::MemoryTier;
pub use metrics::{StoreMetrics, TierMetrics};
pub use queue::Record;
#[cfg(feature = "redis")]
pub use redis::{RedisOptions, RedisTier};
pub use tiered::{PurgeLog, StoreRuntime, TierSet, TieredStore};

/// DuckDB's worker threads for the tier (reads are single-row lookups; more threads only help
/// eviction scans).
pub const DEFAULT_DUCK_THREADS: usize = 2;
/// DuckDB's buffer memory: a cache's L3 wants a bounded, predictable footprint, not DuckDB's
/// default of 80% of RAM.
pub const DEFAULT_DUCK_MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;
/// How often the writer checkpoints (folds the WAL into the file, making the space of deleted
/// rows reusable), when anything was written since the last checkpoint.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Record bytes a tier's write queue holds at most (a tier that falls behind cannot grow memory
/// past it; further writes are dropped and counted).
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;

pub use crate::types::TierName;

/// A tier failed; the cache treats this as a miss, never as a client-facing error.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("tier operation timed out")]
    Timeout,
    #[error("tier unavailable: {0}")]
    Unavailable(String),
    #[error("circuit open: tier skipped")]
    CircuitOpen,
    #[error("write queue full")]
    QueueFull,
    #[error("tier closed")]
    Closed,
}

/// A point-in-time view of a tier's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    pub entries: u64,
    pub bytes: u64,
}

/// A tier's connections to its server (Redis).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open.
    pub open: usize,
    /// Connections the pool may open.
    pub max: usize,
}

/// What `/_tierd/stats` and `/metrics` report about one tier.
#[derive(Debug, Clone, Copy)]
pub struct TierReport {
    pub name: TierName,
    /// `None` for a tier that cannot count (Redis is shared with other nodes).
    pub stats: Option<TierStats>,
    /// The size the tier evicts to stay under, when it has one.
    pub max_bytes: Option<u64>,
    pub queue_depth: usize,
    /// Operations the write queue holds at most (0: no queue).
    pub queue_capacity: usize,
    /// Its connections, for a tier on a server.
    pub pool: Option<PoolStatus>,
    pub circuit: Option<CircuitState>,
    /// See [`Tier::healthy`].
    pub healthy: bool,
}

/// A storage tier below L1: a store of encoded records keyed by cache key.
#[async_trait]
pub trait Tier: Send + Sync + 'static {
    /// Which tier this is.
    fn name(&self) -> TierName;
    /// The record stored under `key`, if any. Whether it is still fresh enough to serve is the
    /// caller's decision (the record carries its expiry).
    async fn get(&self, key: &str) -> Result<Option<Bytes>, TierError>;
    /// Accepts `record` for storage under `key` without waiting; [`TierError::QueueFull`] when
    /// the queue is full (nothing was accepted).
    fn put(&self, key: String, record: Record) -> Result<(), TierError>;
    /// Removes `key` once every write accepted before it is applied, and waits for that.
    async fn delete(&self, key: &str) -> Result<(), TierError>;
    /// Removes every entry `selector` selects, ordered like `delete`; the number removed.
    async fn purge(&self, selector: &Selector) -> Result<u64, TierError>;
    /// Entry count and bytes held, when the tier knows them.
    fn stats(&self) -> Option<TierStats>;
    /// Writes accepted and not yet taken by the writer.
    fn queue_depth(&self) -> usize;
    /// Operations the write queue holds at most.
    fn queue_capacity(&self) -> usize;
    /// The size the tier evicts to stay under, if it has one.
    fn max_bytes(&self) -> Option<u64> {
        None
    }
    /// Its connections, for a tier on a server.
    fn pool(&self) -> Option<PoolStatus> {
        None
    }
    /// The circuit breaker's state, for tiers that have one.
    fn circuit(&self) -> Option<CircuitState> {
        None
    }
    /// False while the tier cannot serve at all and is recovering on its own (an invalidated
    /// DuckDB database being reopened).
    fn healthy(&self) -> bool {
        true
    }
    /// Stops accepting writes and returns once every accepted write is applied.
    async fn close(&self);
}
