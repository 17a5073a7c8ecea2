//! L3: a DuckDB file, large and persistent (it survives tierd and Redis restarts).
//!
//! DuckDB is fast at scans and bulk loads and slow at single-row writes (an autocommit upsert
//! costs milliseconds), so:
//! - writes are queued and applied by one dedicated thread in batches: rows go through an
//!   `Appender` into a staging table, then one `INSERT OR REPLACE` merges the batch, all in one
//!   transaction (a crash leaves the previous state, never half a batch);
//! - reads run on blocking threads, each on its own cloned connection, with a timeout;
//! - the access times that drive LRU eviction are buffered by readers and written by the writer
//!   once a second;
//! - past `max_bytes`, expired entries go first, then the least recently used.
//!
//! Entries are keyed by a 64-bit xxh3 hash of the cache key; the key itself is stored and checked,
//! so a hash collision is a miss, not a wrong answer.
//!
//! DuckDB invalidates a database after a fatal error (a checkpoint that fails on a full disk, a
//! WAL it cannot remove, a damaged block): every later statement fails until the database is
//! opened again. The writer notices (in its own statements or through a reader's), logs one
//! ERROR line, closes every connection and reopens the file with backoff; meanwhile reads are
//! misses without touching DuckDB, writes are dropped and counted, and `/readyz` shows L3
//! degraded. Once the cause is gone the tier comes back on its own, WAL replayed.

mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use duckdb::{params, Connection, OptionalExt};
use tokio::sync::{mpsc, oneshot};

use crate::cache::codec::millis;
use crate::clock::Clock;
use crate::log_limit::{LogLimit, DEFAULT_LOG_INTERVAL};
use crate::metrics::{EvictionCause, Metrics, WriteOutcome};
use crate::selector::Selector;
use crate::store::queue::{Finished, Op, Record, WriteQueue};
use crate::store::{Tier, TierError, TierName, TierStats};
use crate::store::{
    DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_DUCK_MEMORY_LIMIT_BYTES, DEFAULT_DUCK_THREADS,
    DEFAULT_QUEUE_MAX_BYTES,
};
use writer::*;

/// The table layout this build reads and writes.
pub const SCHEMA_VERSION: &str = "2";
/// Operations taken per write batch.
const WRITE_BATCH: usize = 32768;
/// How often buffered access times are written and the size cap is checked when idle.
const TICK: Duration = Duration::from_secs(1);
/// How often expired rows are deleted even under the size cap.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);
/// Access times buffered between ticks; more are dropped (they only steer eviction).
const MAX_TOUCHES: usize = 65_536;
/// Per-row bookkeeping counted against `max_bytes` besides key and record.
const ROW_OVERHEAD: u64 = 48;
/// Eviction frees down to this share of `max_bytes`, so the cap is not hit on every batch.
const LOW_WATER_PERCENT: u64 = 90;

const META: &str = "
CREATE TABLE IF NOT EXISTS tierd_meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
INSERT OR IGNORE INTO tierd_meta VALUES ('schema', '2');
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    key_hash    UBIGINT PRIMARY KEY,
    cache_key   VARCHAR NOT NULL,
    expires_at  UBIGINT NOT NULL,  -- ms since the Unix epoch: stop serving after this
    last_access UBIGINT NOT NULL,  -- ms since the Unix epoch: LRU order
    size        UBIGINT NOT NULL,  -- bytes counted against max_bytes
    value       BLOB NOT NULL,     -- the record (cache::codec)
    tags        VARCHAR NOT NULL DEFAULT ''  -- purge index: each tag between newlines
);
";

/// Schema 1 had no tags column: add it, indexing every row by its path (its origin tags are
/// only indexed once the entry is written again).
const MIGRATE_1_TO_2: &str = r"
ALTER TABLE entries ADD COLUMN tags VARCHAR DEFAULT '';
UPDATE entries SET tags = chr(10) || 'path:' || regexp_extract(cache_key, '^[^/ ]*(/[^? ]*)', 1) || chr(10);
UPDATE tierd_meta SET value = '2' WHERE name = 'schema';
";

const STAGING: &str = "
CREATE TEMP TABLE staging (key_hash UBIGINT, cache_key VARCHAR, expires_at UBIGINT,
                           last_access UBIGINT, size UBIGINT, value BLOB, tags VARCHAR);
CREATE TEMP TABLE staging_del (key_hash UBIGINT);
CREATE TEMP TABLE staging_touch (key_hash UBIGINT, ts UBIGINT);
";

/// Record bytes one write batch takes at most (besides `WRITE_BATCH` operations).
const BATCH_MAX_BYTES: usize = 48 * 1024 * 1024;
/// DuckDB folds its WAL into the file once the WAL passes this (its default is 16 MB). Each
/// checkpoint costs time in proportion to the table (its key index is written whole), so at a
/// million rows a 16 MB WAL spent more time checkpointing than writing (27k rows/s against 52k
/// with 256 MB, `cargo bench --bench tiers`). The WAL counts against the file's size, so it is
/// an eighth of `max_bytes`, between these bounds; the writer still checkpoints on its interval.
const WAL_MIN_BYTES: u64 = 16 * 1024 * 1024;
const WAL_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The WAL size past which DuckDB checkpoints, for a tier of `max_bytes`.
fn wal_threshold(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(WAL_MIN_BYTES, WAL_MAX_BYTES)
}

/// The file (with its WAL) may grow to this share of `max_bytes`, in percent, before it is
/// compacted: DuckDB reuses little of the space deleted rows leave behind.
const COMPACT_AT_PERCENT: u64 = 150;
/// The first wait before reopening an invalidated database; doubled per failure up to the max.
const REOPEN_FIRST: Duration = Duration::from_secs(1);
const REOPEN_MAX: Duration = Duration::from_secs(30);

/// Where the file is and how big it may grow.
#[derive(Debug, Clone)]
pub struct DuckOptions {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub queue_capacity: usize,
    /// Record bytes the write queue may hold.
    pub queue_max_bytes: usize,
    pub read_timeout: Duration,
    /// How long a delete or purge waits behind queued writes.
    pub write_timeout: Duration,
    /// DuckDB `threads`.
    pub threads: usize,
    /// DuckDB `memory_limit`, in bytes.
    pub memory_limit_bytes: u64,
    /// See [`DEFAULT_CHECKPOINT_INTERVAL`].
    pub checkpoint_interval: Duration,
    /// Group commit: how long the writer waits for more writes before committing a batch
    /// (zero: at once). A delete or purge, or the queue closing, ends the wait.
    pub commit_linger: Duration,
}

impl DuckOptions {
    /// Options for the file at `path` with the defaults for everything else.
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64) -> Self {
        DuckOptions {
            path: path.into(),
            max_bytes,
            queue_capacity: 100_000,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            read_timeout: Duration::from_millis(100),
            write_timeout: Duration::from_secs(5),
            threads: DEFAULT_DUCK_THREADS,
            memory_limit_bytes: DEFAULT_DUCK_MEMORY_LIMIT_BYTES,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            commit_linger: Duration::ZERO,
        }
    }
}

/// The tier's health, as `/readyz` reports it.
const HEALTHY: u8 = 0;
const REOPENING: u8 = 1;

struct Shared {
    entries: AtomicU64,
    bytes: AtomicU64,
    touches: Mutex<Vec<(u64, u64)>>,
    /// HEALTHY or REOPENING.
    health: AtomicU8,
    /// A reader saw DuckDB's fatal error; the writer reopens.
    fatal: AtomicBool,
    /// Bumped at each reopen: connections of an older generation are not reused.
    generation: AtomicU64,
    /// Reads holding a connection right now (a reopen waits for them).
    active_reads: AtomicUsize,
}

/// The connections readers clone from and reuse, replaced whole on reopen.
struct Pool {
    /// Kept to clone new reader connections from; taken at close so the file is released.
    origin: Mutex<Option<Connection>>,
    /// Idle reader connections (clones of `origin`) and their generation.
    idle: Mutex<Vec<(u64, Connection)>>,
}

/// The DuckDB tier.
pub struct DuckTier {
    pool: Arc<Pool>,
    shared: Arc<Shared>,
    queue: WriteQueue,
    clock: Arc<dyn Clock>,
    read_timeout: Duration,
    write_timeout: Duration,
    max_bytes: u64,
}

/// The hash rows are keyed by.
pub fn key_hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

fn db_err(e: duckdb::Error) -> TierError {
    TierError::Unavailable(e.to_string())
}

/// DuckDB's error for a database it has invalidated (and for the fatal error that does it):
/// nothing works on this instance any more; it must be opened again.
fn is_fatal(msg: &str) -> bool {
    msg.contains("FATAL Error") || msg.contains("database has been invalidated")
}

/// Opens (or creates) the file, checks it is tierd's and migrates it; the connection and the
/// entry count and bytes it holds.
fn open_db(opts: &DuckOptions) -> Result<(Connection, u64, u64), TierError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        TierError::Unavailable(format!("{what} {}: {e}", opts.path.display()))
    };
    if let Some(dir) = opts.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail("cannot create the directory of", &e))?;
    }
    let config = duckdb::Config::default()
        .threads(opts.threads.max(1) as i64)
        .and_then(|c| c.max_memory(&format!("{}B", opts.memory_limit_bytes)))
        .and_then(|c| c.enable_autoload_extension(false))
        .and_then(|c| {
            c.with(
                "checkpoint_threshold",
                format!("{}B", wal_threshold(opts.max_bytes)),
            )
        })
        .map_err(|e| fail("cannot configure", &e))?;
    let conn =
        Connection::open_with_flags(&opts.path, config).map_err(|e| fail("cannot open", &e))?;
    let tables: Vec<String> = conn
        .prepare("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<duckdb::Result<Vec<_>>>()
        })
        .map_err(|e| fail("cannot read", &e))?;
    if !tables.is_empty() && !tables.iter().any(|t| t == "tierd_meta") {
        return Err(TierError::Unavailable(format!(
            "{} is a DuckDB file of another program (tables: {}); point tiers.l3.path at a file of tierd's own",
            opts.path.display(),
            tables.join(", ")
        )));
    }
    conn.execute_batch(META)
        .map_err(|e| fail("cannot create tables in", &e))?;
    let read_version = |conn: &Connection| -> Result<String, TierError> {
        conn.query_row(
            "SELECT value FROM tierd_meta WHERE name = 'schema'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| fail("cannot read the schema version of", &e))
    };
    let mut version = read_version(&conn)?;
    if version == "1" {
        conn.execute_batch(&format!("BEGIN TRANSACTION;{MIGRATE_1_TO_2}COMMIT;"))
            .map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                fail("cannot migrate (schema 1 to 2)", &e)
            })?;
        tracing::info!(tier = "l3", path = %opts.path.display(), "schema migrated from 1 to 2");
        version = read_version(&conn)?;
    }
    if version != SCHEMA_VERSION {
        return Err(TierError::Unavailable(format!(
            "{} has schema version {version}; this build uses {SCHEMA_VERSION} (point tiers.l3.path at a new file)",
            opts.path.display()
        )));
    }
    conn.execute_batch(SCHEMA)
        .map_err(|e| fail("cannot create tables in", &e))?;
    let (entries, bytes) = count(&conn).map_err(|e| fail("cannot read", &e))?;
    Ok((conn, entries, bytes))
}

/// The writer's own connection to the database `origin` belongs to, with its staging tables.
fn writer_connection(origin: &Connection, opts: &DuckOptions) -> Result<Connection, TierError> {
    let conn = origin
        .try_clone()
        .map_err(|e| TierError::Unavailable(format!("cannot open {}: {e}", opts.path.display())))?;
    conn.execute_batch(STAGING).map_err(|e| {
        TierError::Unavailable(format!(
            "cannot create staging tables for {}: {e}",
            opts.path.display()
        ))
    })?;
    Ok(conn)
}

impl DuckTier {
    /// Opens (or creates) the file and starts the writer thread. Fails when the file is locked
    /// by another process, cannot be created, is not a DuckDB file or has another schema.
    pub fn open(
        opts: &DuckOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        rt: &tokio::runtime::Handle,
    ) -> Result<Self, TierError> {
        let (conn, entries, bytes) = open_db(opts)?;
        let shared = Arc::new(Shared {
            entries: AtomicU64::new(entries),
            bytes: AtomicU64::new(bytes),
            touches: Mutex::new(Vec::new()),
            health: AtomicU8::new(HEALTHY),
            fatal: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            active_reads: AtomicUsize::new(0),
        });
        let writer_conn = writer_connection(&conn, opts)?;
        let pool = Arc::new(Pool {
            origin: Mutex::new(Some(conn)),
            idle: Mutex::new(Vec::new()),
        });
        metrics.tier(TierName::L3).failed.set(0);
        let (queue, rx, finished) = WriteQueue::new(opts.queue_capacity, opts.queue_max_bytes);
        let writer = Writer {
            conn: writer_conn,
            shared: shared.clone(),
            pool: pool.clone(),
            opts: opts.clone(),
            clock: clock.clone(),
            metrics,
            max_bytes: opts.max_bytes,
            last_expire: Instant::now(),
            last_checkpoint: Instant::now(),
            dirty: false,
            compacted_size: 0,
            estimated: false,
            outage: None,
            rt: rt.clone(),
        };
        std::thread::Builder::new()
            .name("tierd-l3-writer".into())
            .spawn(move || writer.run(rx, finished))
            .map_err(|e| {
                TierError::Unavailable(format!(
                    "cannot start the writer thread for {}: {e}",
                    opts.path.display()
                ))
            })?;
        if let Some(weak) = queue.weak() {
            // Housekeeping ticks; the ticker holds no strong sender, so closing the queue ends it.
            rt.spawn(async move {
                let mut every = tokio::time::interval(TICK);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    every.tick().await;
                    match weak.upgrade() {
                        Some(tx) => {
                            let _ = tx.try_send(Op::Tick);
                        }
                        None => break,
                    }
                }
            });
        }
        Ok(DuckTier {
            pool,
            shared,
            queue,
            clock,
            read_timeout: opts.read_timeout,
            write_timeout: opts.write_timeout,
            max_bytes: opts.max_bytes,
        })
    }
}

/// The `tags` column: each tag between newlines, so `contains(tags, '\n' || tag || '\n')`
/// matches whole tags only (tags never hold whitespace).
fn tag_text(tags: &[String]) -> String {
    if tags.is_empty() {
        return String::new();
    }
    let mut out = String::with_capacity(tags.iter().map(|t| t.len() + 1).sum::<usize>() + 1);
    out.push('\n');
    for t in tags {
        out.push_str(t);
        out.push('\n');
    }
    out
}

/// What one row counts against `max_bytes`.
fn row_size(key: &str, r: &Record) -> u64 {
    r.bytes.len() as u64 + key.len() as u64 + ROW_OVERHEAD
}

fn count(conn: &Connection) -> duckdb::Result<(u64, u64)> {
    conn.query_row(
        "SELECT count(*)::UBIGINT, coalesce(sum(size), 0)::UBIGINT FROM entries",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

#[async_trait]
impl Tier for DuckTier {
    fn name(&self) -> TierName {
        TierName::L3
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, TierError> {
        if self.shared.health.load(Ordering::Acquire) != HEALTHY {
            return Err(TierError::Unavailable("l3 is being reopened".into()));
        }
        let key = key.to_owned();
        let pool = self.pool.clone();
        let shared = self.shared.clone();
        let now = millis(self.clock.now());
        let read = tokio::task::spawn_blocking(move || {
            shared.active_reads.fetch_add(1, Ordering::AcqRel);
            let out = read_row(&pool, &shared, &key, now);
            shared.active_reads.fetch_sub(1, Ordering::AcqRel);
            if let Err(TierError::Unavailable(msg)) = &out {
                if is_fatal(msg) {
                    shared.fatal.store(true, Ordering::Release);
                }
            }
            out
        });
        match tokio::time::timeout(self.read_timeout, read).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(TierError::Unavailable(e.to_string())),
            Err(_) => Err(TierError::Timeout),
        }
    }

    fn put(&self, key: String, record: Record) -> Result<(), TierError> {
        self.queue.put(key, record)
    }

    async fn delete(&self, key: &str) -> Result<(), TierError> {
        let key = key.to_owned();
        self.queue
            .request(self.write_timeout, |done| Op::Delete { key, done })
            .await
    }

    async fn purge(&self, selector: &Selector) -> Result<u64, TierError> {
        let selector = selector.clone();
        self.queue
            .request(self.write_timeout, |done| Op::Purge { selector, done })
            .await
    }

    fn stats(&self) -> Option<TierStats> {
        Some(TierStats {
            entries: self.shared.entries.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
        })
    }

    fn queue_depth(&self) -> usize {
        self.queue.depth()
    }

    fn queue_capacity(&self) -> usize {
        self.queue.capacity()
    }

    fn max_bytes(&self) -> Option<u64> {
        Some(self.max_bytes)
    }

    fn healthy(&self) -> bool {
        self.shared.health.load(Ordering::Acquire) == HEALTHY
    }

    async fn close(&self) {
        self.queue.close().await;
        // The writer has checkpointed and dropped its connection; drop ours so the file is
        // released when the store goes away.
        self.pool.close();
    }
}

impl Pool {
    /// Drops every connection this tier holds to the database.
    fn close(&self) {
        if let Ok(mut r) = self.idle.lock() {
            r.clear();
        }
        if let Ok(mut o) = self.origin.lock() {
            o.take();
        }
    }
}

fn wal_path(path: &std::path::Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

fn compact_path(path: &std::path::Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".compact");
    PathBuf::from(p)
}

/// One lookup on a reader connection (an idle one of the current generation, else a new clone).
fn read_row(pool: &Pool, shared: &Shared, key: &str, now: u64) -> Result<Option<Bytes>, TierError> {
    let generation = shared.generation.load(Ordering::Acquire);
    let idle = pool.idle.lock().ok().and_then(|mut r| r.pop());
    let conn = match idle {
        Some((g, c)) if g == generation => c,
        _ => pool
            .origin
            .lock()
            .map_err(|_| TierError::Unavailable("l3 connection lock poisoned".into()))?
            .as_ref()
            .ok_or(TierError::Unavailable("l3 is being reopened".into()))?
            .try_clone()
            .map_err(db_err)?,
    };
    let hash = key_hash(key);
    let row: Option<(String, Vec<u8>)> = {
        let mut st = conn
            .prepare_cached("SELECT cache_key, value FROM entries WHERE key_hash = ?")
            .map_err(db_err)?;
        st.query_row(params![hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db_err)?
    };
    // A connection of an older generation (the database was reopened meanwhile) is dropped.
    if shared.generation.load(Ordering::Acquire) == generation {
        if let Ok(mut r) = pool.idle.lock() {
            r.push((generation, conn));
        }
    }
    match row {
        Some((k, v)) if k == key => {
            if let Ok(mut t) = shared.touches.lock() {
                if t.len() < MAX_TOUCHES {
                    t.push((hash, now));
                }
            }
            Ok(Some(Bytes::from(v)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_threshold_follows_max_bytes_within_its_bounds() {
        assert_eq!(wal_threshold(1024 * 1024), WAL_MIN_BYTES);
        assert_eq!(wal_threshold(1024 * 1024 * 1024), 128 * 1024 * 1024);
        assert_eq!(wal_threshold(u64::MAX), WAL_MAX_BYTES);
    }

    #[test]
    fn an_opened_database_checkpoints_at_the_tiers_wal_threshold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = DuckOptions::new(dir.path().join("t.duckdb"), 1024 * 1024 * 1024);
        let (conn, _, _) = open_db(&opts).expect("open");
        let setting: String = conn
            .query_row("SELECT current_setting('checkpoint_threshold')", [], |r| {
                r.get(0)
            })
            .expect("setting");
        // DuckDB prints sizes in binary units.
        assert_eq!(setting, "128.0 MiB");
    }
}
