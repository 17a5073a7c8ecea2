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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use duckdb::{params, Connection, OptionalExt};
use tokio::sync::{mpsc, oneshot};

use super::queue::{Finished, Op, Record, WriteQueue};
use super::{Tier, TierError, TierName, TierStats};
use super::{
    DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_DUCK_MEMORY_LIMIT_BYTES, DEFAULT_DUCK_THREADS,
    DEFAULT_QUEUE_MAX_BYTES,
};
use crate::cache::codec::millis;
use crate::clock::Clock;
use crate::log_limit::{LogLimit, DEFAULT_LOG_INTERVAL};
use crate::metrics::{EvictionCause, Metrics, WriteOutcome};
use crate::selector::Selector;

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

/// The final operation on one key within a batch.
enum Final {
    Put(String, Record),
    Delete,
}

type Ack = oneshot::Sender<Result<(), TierError>>;

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    opts: DuckOptions,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    max_bytes: u64,
    last_expire: Instant,
    last_checkpoint: Instant,
    /// Written since the last checkpoint.
    dirty: bool,
    /// The file's size after the last compaction (0: none yet).
    compacted_size: u64,
    /// The shared counts include estimates since the last exact count.
    estimated: bool,
    /// Set while the database is invalidated and being reopened.
    outage: Option<Outage>,
    /// For the group-commit wait (a timed receive on the queue).
    rt: tokio::runtime::Handle,
}

/// An invalidated database being reopened.
struct Outage {
    since: Instant,
    next_try: Instant,
    backoff: Duration,
    /// Writes dropped meanwhile.
    dropped: u64,
}

/// Batch failures repeat while the cause lasts: one line per interval.
static BATCH_FAILED: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);

impl Writer {
    /// Runs on its own thread (no async runtime needed) until the queue is closed and drained.
    fn run(mut self, mut rx: mpsc::Receiver<Op>, finished: Finished) {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        let mut last_tick = Instant::now();
        while rx.blocking_recv_many(&mut batch, 256) > 0 {
            // Up to WRITE_BATCH operations, and no more than BATCH_MAX_BYTES of records.
            let mut bytes: usize = batch.iter().map(Op::bytes).sum();
            while batch.len() < WRITE_BATCH && bytes < BATCH_MAX_BYTES {
                match rx.try_recv() {
                    Ok(op) => {
                        bytes += op.bytes();
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            self.linger(&mut rx, &mut batch, bytes);
            if self.outage.is_none() && self.shared.fatal.load(Ordering::Acquire) {
                self.invalidated("a lookup failed on the invalidated database");
            }
            if self.outage.is_some() {
                self.drop_batch(&mut batch);
                self.try_reopen();
                continue;
            }
            let ticked = self.apply(&mut batch);
            if ticked || last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.tick();
            }
        }
        if self.outage.is_none() {
            self.tick();
            if let Err(e) = self.conn.execute_batch("CHECKPOINT") {
                tracing::warn!(tier = "l3", error = %e, "checkpoint at shutdown failed; the WAL will be replayed at next start");
            }
        }
        drop(self);
        drop(finished);
    }

    /// Group commit: waits up to `commit_linger` for more operations to join `batch`, unless it
    /// is full, holds a delete or purge (someone waits on those), or the queue closes.
    fn linger(&self, rx: &mut mpsc::Receiver<Op>, batch: &mut Vec<Op>, mut bytes: usize) {
        let awaited = |op: &Op| matches!(op, Op::Delete { .. } | Op::Purge { .. });
        if self.opts.commit_linger.is_zero() || batch.iter().any(awaited) {
            return;
        }
        let deadline = Instant::now() + self.opts.commit_linger;
        while batch.len() < WRITE_BATCH && bytes < BATCH_MAX_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // Built inside `block_on`: a timer needs the runtime's context.
            match self
                .rt
                .block_on(async { tokio::time::timeout(left, rx.recv()).await })
            {
                Ok(Some(op)) => {
                    let stop = awaited(&op);
                    bytes += op.bytes();
                    batch.push(op);
                    if stop {
                        return;
                    }
                }
                // Closed (shutdown: commit now) or the wait is over.
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Notes a failed statement: DuckDB's fatal error starts an outage. True when it was one.
    fn check_fatal(&mut self, e: &dyn std::fmt::Display) -> bool {
        let msg = e.to_string();
        if self.outage.is_none() && is_fatal(&msg) {
            self.invalidated(&msg);
        }
        self.outage.is_some()
    }

    /// DuckDB invalidated the database: one ERROR line, every connection closed, lookups fail
    /// fast, and the file is reopened with backoff.
    fn invalidated(&mut self, error: &str) {
        self.shared.health.store(REOPENING, Ordering::Release);
        self.metrics.tier(TierName::L3).failed.set(1);
        tracing::error!(tier = "l3", path = %self.opts.path.display(), error = %error,
            "DuckDB invalidated the database (a fatal error, such as a checkpoint failing on a full disk); \
             L3 lookups are misses and writes are dropped until it is reopened, retried with backoff");
        self.close_connections();
        let now = Instant::now();
        self.outage = Some(Outage {
            since: now,
            next_try: now + REOPEN_FIRST,
            backoff: REOPEN_FIRST,
            dropped: 0,
        });
    }

    /// Closes this writer's and the readers' connections, so the invalidated instance is gone
    /// before the file is opened again (two instances must never share a file).
    fn close_connections(&mut self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        self.pool.close();
        match Connection::open_in_memory() {
            Ok(placeholder) => drop(std::mem::replace(&mut self.conn, placeholder)),
            Err(e) => {
                tracing::warn!(tier = "l3", error = %e, "cannot close the writer's connection")
            }
        }
        // Lookups already running hold clones; they fail fast on an invalidated database.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.active_reads.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// During an outage: writes are dropped (and counted), deletes and purges answered as
    /// failed (the other tiers already applied them).
    fn drop_batch(&mut self, batch: &mut Vec<Op>) {
        let tm = self.metrics.tier(TierName::L3);
        let mut dropped = 0;
        for op in batch.drain(..) {
            match op {
                Op::Put { .. } => dropped += 1,
                Op::Delete { done, .. } => {
                    let _ = done.send(Err(TierError::Unavailable("l3 is being reopened".into())));
                }
                Op::Purge { done, .. } => {
                    let _ = done.send(Err(TierError::Unavailable("l3 is being reopened".into())));
                }
                Op::Tick => {}
            }
        }
        tm.writes(WriteOutcome::Failed, dropped);
        if let Some(o) = &mut self.outage {
            o.dropped += dropped;
        }
    }

    /// Opens the file again (every connection was closed) and serves from it; its entry count.
    fn open_again(&mut self) -> Result<u64, TierError> {
        let (origin, writer, entries, bytes) =
            open_db(&self.opts).and_then(|(origin, entries, bytes)| {
                let writer = writer_connection(&origin, &self.opts)?;
                Ok((origin, writer, entries, bytes))
            })?;
        self.conn = writer;
        if let Ok(mut o) = self.pool.origin.lock() {
            *o = Some(origin);
        }
        self.shared.entries.store(entries, Ordering::Relaxed);
        self.shared.bytes.store(bytes, Ordering::Relaxed);
        self.shared.fatal.store(false, Ordering::Release);
        self.shared.health.store(HEALTHY, Ordering::Release);
        Ok(entries)
    }

    /// Reopens the file when the backoff allows; success ends the outage.
    fn try_reopen(&mut self) {
        let Some(outage) = &mut self.outage else {
            return;
        };
        if Instant::now() < outage.next_try {
            return;
        }
        let reopened = self.open_again();
        let Some(outage) = &mut self.outage else {
            return;
        };
        match reopened {
            Ok(entries) => {
                self.metrics.tier(TierName::L3).failed.set(0);
                tracing::info!(tier = "l3", path = %self.opts.path.display(),
                    outage_ms = outage.since.elapsed().as_millis() as u64,
                    dropped_writes = outage.dropped, entries, "L3 reopened");
                self.outage = None;
            }
            Err(e) => {
                tracing::warn!(tier = "l3", error = %e, retry_in_ms = outage.backoff.as_millis() as u64,
                    "L3 not reopened yet");
                outage.next_try = Instant::now() + outage.backoff;
                outage.backoff = (outage.backoff * 2).min(REOPEN_MAX);
                // The attempt may have left a half-open instance behind: gone before the next.
                self.pool.close();
            }
        }
    }

    /// Applies a batch; true when it held a housekeeping tick.
    fn apply(&mut self, batch: &mut Vec<Op>) -> bool {
        let mut pending: HashMap<u64, Final> = HashMap::new();
        let mut acks: Vec<Ack> = Vec::new();
        let mut ticked = false;
        let mut ops = std::mem::take(batch).into_iter();
        while let Some(op) = ops.next() {
            match op {
                Op::Tick => ticked = true,
                Op::Put { key, record, .. } => {
                    pending.insert(key_hash(&key), Final::Put(key, record));
                }
                Op::Delete { key, done } => {
                    pending.insert(key_hash(&key), Final::Delete);
                    acks.push(done);
                }
                Op::Purge { selector, done } => {
                    self.commit(&mut pending, &mut acks);
                    let r = if self.outage.is_some() {
                        Err(TierError::Unavailable("l3 is being reopened".into()))
                    } else {
                        let r = self.purge(&selector).map_err(db_err);
                        if let Err(e) = &r {
                            let _ = self.conn.execute_batch("ROLLBACK");
                            self.check_fatal(e);
                        }
                        self.dirty = true;
                        r
                    };
                    let _ = done.send(r);
                    if self.outage.is_some() {
                        let mut rest: Vec<Op> = ops.collect();
                        self.drop_batch(&mut rest);
                        return ticked;
                    }
                    self.recount();
                }
            }
        }
        self.commit(&mut pending, &mut acks);
        ticked
    }

    fn commit(&mut self, pending: &mut HashMap<u64, Final>, acks: &mut Vec<Ack>) {
        if pending.is_empty() && acks.is_empty() {
            return;
        }
        // Access times first, so the size cap below sees them.
        self.flush_touches();
        let metrics = self.metrics.clone();
        let tm = metrics.tier(TierName::L3);
        let started = tm.timer();
        let puts = pending
            .values()
            .filter(|f| matches!(f, Final::Put(..)))
            .count() as u64;
        let now = millis(self.clock.now());
        let result = self.write_batch(pending, now).map_err(|e| e.to_string());
        tm.observe_put(started);
        match &result {
            Ok(()) => tm.writes(WriteOutcome::Written, puts),
            Err(e) => {
                tm.writes(WriteOutcome::Failed, puts);
                let _ = self.conn.execute_batch("ROLLBACK");
                if !self.check_fatal(e) {
                    if let Some(occurrences) = BATCH_FAILED.check() {
                        tracing::warn!(tier = "l3", error = %e, entries = puts, occurrences, "write batch failed; rolled back");
                    }
                }
            }
        }
        self.dirty = true;
        if self.outage.is_some() {
            pending.clear();
            for a in acks.drain(..) {
                let _ = a.send(Err(TierError::Unavailable("l3 is being reopened".into())));
            }
            return;
        }
        if acks.is_empty() && result.is_ok() {
            // Counting scans the whole table; during bulk writes add the new rows' sizes instead
            // (an over-estimate when rows are replaced) and count exactly on each tick or when
            // the estimate crosses the cap.
            let added: u64 = pending
                .values()
                .map(|f| match f {
                    Final::Put(key, r) => row_size(key, r),
                    Final::Delete => 0,
                })
                .sum();
            self.shared.entries.fetch_add(puts, Ordering::Relaxed);
            self.shared.bytes.fetch_add(added, Ordering::Relaxed);
            self.estimated = true;
        } else {
            self.recount();
        }
        pending.clear();
        if self.shared.bytes.load(Ordering::Relaxed) > self.max_bytes {
            self.enforce_cap();
        }
        // DuckDB may have checkpointed on its own (its WAL passed 16 MB) and grown the file.
        self.compact_if_bloated();
        // Acknowledged last: whoever waited on a delete sees the tier as the batch left it.
        for a in acks.drain(..) {
            let _ = a.send(result.clone().map_err(TierError::Unavailable));
        }
    }

    fn write_batch(&mut self, pending: &HashMap<u64, Final>, now: u64) -> duckdb::Result<()> {
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        {
            let mut app = self
                .conn
                .appender_to_catalog_and_db("staging", "temp", "main")?;
            for (hash, f) in pending {
                if let Final::Put(key, r) = f {
                    let size = row_size(key, r);
                    app.append_row(params![
                        hash,
                        key,
                        r.expires_at_ms,
                        now,
                        size,
                        &r.bytes[..],
                        tag_text(&r.tags)
                    ])?;
                }
            }
            app.flush()?;
        }
        // The delete joins the whole table against the staging table, so it only runs when
        // the batch holds a delete (most batches are only puts).
        if pending.values().any(|f| matches!(f, Final::Delete)) {
            let mut del = self
                .conn
                .appender_to_catalog_and_db("staging_del", "temp", "main")?;
            for (hash, f) in pending {
                if let Final::Delete = f {
                    del.append_row(params![hash])?;
                }
            }
            del.flush()?;
            drop(del);
            self.conn.execute_batch(
                "DELETE FROM entries WHERE key_hash IN (SELECT key_hash FROM temp.staging_del);
                 DELETE FROM temp.staging_del;",
            )?;
        }
        self.conn.execute_batch(
            "INSERT OR REPLACE INTO entries SELECT * FROM temp.staging;
             DELETE FROM temp.staging;
             COMMIT;",
        )
    }

    /// Deletes the rows `selector` selects: candidates by SQL (the tag index, or the prefix
    /// anywhere in the key), then the exact match on the parsed key.
    fn purge(&mut self, selector: &Selector) -> duckdb::Result<u64> {
        let candidates: Vec<(u64, String)> = {
            let (sql, arg) = match selector.index_tag() {
                Some(tag) => (
                    "SELECT key_hash, cache_key FROM entries WHERE contains(tags, ?)",
                    format!("\n{tag}\n"),
                ),
                None => match selector {
                    Selector::Prefix { prefix, .. } => (
                        "SELECT key_hash, cache_key FROM entries WHERE contains(cache_key, ?)",
                        prefix.clone(),
                    ),
                    _ => return Ok(0),
                },
            };
            let mut st = self.conn.prepare(sql)?;
            let rows = st.query_map(params![arg], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<duckdb::Result<_>>()?
        };
        let hashes: Vec<u64> = candidates
            .into_iter()
            .filter(|(_, k)| selector.matches_key(k))
            .map(|(h, _)| h)
            .collect();
        if hashes.is_empty() {
            return Ok(0);
        }
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        {
            let mut del = self
                .conn
                .appender_to_catalog_and_db("staging_del", "temp", "main")?;
            for h in &hashes {
                del.append_row(params![h])?;
            }
            del.flush()?;
        }
        let n = self.conn.execute(
            "DELETE FROM entries WHERE key_hash IN (SELECT key_hash FROM temp.staging_del)",
            [],
        )?;
        self.conn
            .execute_batch("DELETE FROM temp.staging_del; COMMIT;")?;
        Ok(n as u64)
    }

    fn recount(&mut self) {
        if self.outage.is_some() {
            return;
        }
        self.estimated = false;
        match count(&self.conn) {
            Ok((entries, bytes)) => {
                self.shared.entries.store(entries, Ordering::Relaxed);
                self.shared.bytes.store(bytes, Ordering::Relaxed);
            }
            Err(e) => {
                if !self.check_fatal(&e) {
                    tracing::warn!(tier = "l3", error = %e, "cannot count entries");
                }
            }
        }
    }

    /// Writes buffered access times; deletes expired rows now and then; checkpoints.
    fn tick(&mut self) {
        if self.outage.is_some() {
            self.try_reopen();
            return;
        }
        self.checkpoint_if_due();
        if self.outage.is_some() {
            return;
        }
        self.compact_if_bloated();
        if self.outage.is_some() {
            return;
        }
        self.flush_touches();
        if self.estimated {
            self.recount();
        }
        if self.last_expire.elapsed() >= EXPIRE_EVERY {
            self.last_expire = Instant::now();
            self.delete_expired();
            self.recount();
        }
        if self.shared.bytes.load(Ordering::Relaxed) > self.max_bytes {
            self.enforce_cap();
        }
    }

    /// Folds the WAL into the file every `checkpoint_interval` when anything was written, so
    /// the WAL stays small and the space of deleted rows is reused instead of growing the file.
    fn checkpoint_if_due(&mut self) {
        if !self.dirty || self.last_checkpoint.elapsed() < self.opts.checkpoint_interval {
            return;
        }
        self.last_checkpoint = Instant::now();
        self.dirty = false;
        if let Err(e) = self.conn.execute_batch("CHECKPOINT") {
            if !self.check_fatal(&e) {
                tracing::warn!(tier = "l3", error = %e, "checkpoint failed; retried at the next interval");
                self.dirty = true;
            }
        }
    }

    /// The file's size on disk, WAL included.
    fn file_bytes(&self) -> u64 {
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        size(&self.opts.path) + size(&wal_path(&self.opts.path))
    }

    /// Past `COMPACT_AT_PERCENT` of `max_bytes` on disk, rewrites the live rows into a fresh
    /// file and swaps it in. Not again before the file has grown a quarter past what the last
    /// compaction left (rows whose storage outweighs their counted size would loop otherwise).
    fn compact_if_bloated(&mut self) {
        let file = self.file_bytes();
        let metrics = self.metrics.clone();
        let tm = metrics.tier(TierName::L3);
        tm.file_bytes.set(i64::try_from(file).unwrap_or(i64::MAX));
        let limit = self.max_bytes.saturating_mul(COMPACT_AT_PERCENT) / 100;
        if file <= limit || file <= self.compacted_size.saturating_mul(5) / 4 {
            return;
        }
        let started = Instant::now();
        match self.compact() {
            Ok(()) => {
                self.compacted_size = self.file_bytes();
                tm.file_bytes
                    .set(i64::try_from(self.compacted_size).unwrap_or(i64::MAX));
                self.metrics.l3_compactions.inc();
                tracing::info!(
                    tier = "l3",
                    before = file,
                    after = self.compacted_size,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "L3 file compacted"
                );
                if self.compacted_size > limit {
                    tracing::warn!(tier = "l3", size = self.compacted_size, max_bytes = self.max_bytes,
                        "L3 file still over 1.5x tiers.l3.max_bytes after compaction (rows take more room than counted); lower tiers.l3.max_bytes");
                }
            }
            Err(e) => {
                // Not again until the file grows further; the WARN says why.
                self.compacted_size = file;
                tracing::warn!(tier = "l3", error = %e, "L3 compaction failed; the file keeps its size");
            }
        }
    }

    /// Copies the live rows into `<file>.compact`, closes every connection, moves the copy over
    /// the file and opens it. Lookups fail fast meanwhile; writes wait in the queue.
    fn compact(&mut self) -> Result<(), TierError> {
        let path = self.opts.path.clone();
        let tmp = compact_path(&path);
        for p in [&tmp, &wal_path(&tmp)] {
            let _ = std::fs::remove_file(p);
        }
        self.conn.execute_batch("CHECKPOINT").map_err(db_err)?;
        let main: String = self
            .conn
            .query_row("SELECT current_database()", [], |r| r.get(0))
            .map_err(db_err)?;
        let quoted = tmp.display().to_string().replace('\'', "''");
        let main = main.replace('"', "\"\"");
        let copy = format!(
            "ATTACH '{quoted}' AS tierd_compact;
             USE tierd_compact;
             {META}
             {SCHEMA}
             USE \"{main}\";
             DELETE FROM tierd_compact.tierd_meta;
             INSERT INTO tierd_compact.tierd_meta SELECT * FROM \"{main}\".tierd_meta;
             INSERT INTO tierd_compact.entries SELECT * FROM \"{main}\".entries;
             CHECKPOINT tierd_compact;
             DETACH tierd_compact;"
        );
        if let Err(e) = self.conn.execute_batch(&copy) {
            let _ = self.conn.execute_batch(&format!(
                "USE \"{main}\"; DETACH DATABASE IF EXISTS tierd_compact;"
            ));
            let _ = std::fs::remove_file(&tmp);
            self.check_fatal(&e);
            return Err(db_err(e));
        }
        self.shared.health.store(REOPENING, Ordering::Release);
        self.close_connections();
        let swapped = std::fs::rename(&tmp, &path).map_err(|e| {
            TierError::Unavailable(format!(
                "cannot move {} over {}: {e}",
                tmp.display(),
                path.display()
            ))
        });
        let _ = std::fs::remove_file(wal_path(&path));
        // Reopened whether or not the move worked: the old file is whole either way.
        match self.open_again() {
            Ok(_) => swapped,
            Err(e) => {
                self.invalidated(&format!("reopening after compaction failed: {e}"));
                Err(e)
            }
        }
    }

    fn flush_touches(&mut self) {
        let touches = self
            .shared
            .touches
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        if !touches.is_empty() {
            if let Err(e) = self.write_touches(&touches) {
                let _ = self.conn.execute_batch("ROLLBACK");
                tracing::debug!(tier = "l3", error = %e, "access times not recorded");
            }
        }
    }

    fn write_touches(&mut self, touches: &[(u64, u64)]) -> duckdb::Result<()> {
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        {
            let mut app = self
                .conn
                .appender_to_catalog_and_db("staging_touch", "temp", "main")?;
            for (h, ts) in touches {
                app.append_row(params![h, ts])?;
            }
            app.flush()?;
        }
        self.conn.execute_batch(
            "UPDATE entries SET last_access = t.ts
               FROM (SELECT key_hash, max(ts) AS ts FROM temp.staging_touch GROUP BY key_hash) t
              WHERE entries.key_hash = t.key_hash AND entries.last_access < t.ts;
             DELETE FROM temp.staging_touch;
             COMMIT;",
        )
    }

    fn delete_expired(&mut self) -> u64 {
        let now = millis(self.clock.now());
        match self
            .conn
            .execute("DELETE FROM entries WHERE expires_at <= ?", params![now])
        {
            Ok(n) => {
                self.metrics
                    .tier(TierName::L3)
                    .evicted(EvictionCause::Expired, n as u64);
                n as u64
            }
            Err(e) => {
                if !self.check_fatal(&e) {
                    tracing::warn!(tier = "l3", error = %e, "cannot delete expired entries");
                }
                0
            }
        }
    }

    /// Over `max_bytes`: expired entries first, then the least recently used, down to the low
    /// water mark.
    fn enforce_cap(&mut self) {
        self.delete_expired();
        self.recount();
        let bytes = self.shared.bytes.load(Ordering::Relaxed);
        if bytes <= self.max_bytes {
            return;
        }
        let target = self.max_bytes / 100 * LOW_WATER_PERCENT;
        let excess = bytes.saturating_sub(target);
        let r = self.conn.execute(
            "DELETE FROM entries WHERE key_hash IN (
                SELECT key_hash FROM (
                    SELECT key_hash, size,
                           sum(size) OVER (ORDER BY last_access, key_hash
                                           ROWS UNBOUNDED PRECEDING) AS cum
                      FROM entries)
                 WHERE cum - size < ?)",
            params![excess],
        );
        match r {
            Ok(n) => self
                .metrics
                .tier(TierName::L3)
                .evicted(EvictionCause::Size, n as u64),
            Err(e) => {
                if !self.check_fatal(&e) {
                    tracing::warn!(tier = "l3", error = %e, "size-cap eviction failed");
                }
            }
        }
        self.recount();
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
