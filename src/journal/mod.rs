//! The access journal: one row per answered request in a DuckDB table, written off the request
//! path, and the analytics read from it.
//!
//! ```text
//! request ─▶ Observe (answered) ─▶ Journal::record ─▶ bounded queue ─▶ writer thread
//!                                   (never waits: a full queue drops    (DuckDB appender,
//!                                    the row and counts it)              batches, retention)
//! ```
//! The request path hashes the URL where the request is keyed ([`Journal::url`]), describes the
//! answer in a [`Row`], and [`Journal::record`] packs it into the stored row's numbers and hands
//! it over with a non-blocking `try_send`: nothing is allocated per request, so nothing is
//! freed on another thread, and a URL's text travels only the first time a worker thread sees
//! it. The writer thread appends batches through a DuckDB appender, deletes
//! rows past the retention and, past `max_bytes`, the oldest rows; on shutdown it writes what is
//! queued before it stops.
//!
//! The journal has its own DuckDB file (by default beside the L3 file): the L3 file's size cap
//! and compaction count every byte in it, so journal rows there would evict cache entries.

#[cfg(feature = "duckdb")]
mod analytics;
#[cfg(feature = "duckdb")]
pub mod import;
mod metrics;
#[cfg(feature = "duckdb")]
pub mod report;
mod row;
#[cfg(feature = "duckdb")]
mod schema;
pub mod sequences;
pub mod text;
#[cfg(feature = "duckdb")]
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(feature = "duckdb")]
pub use analytics::{
    advise, open_read_only, query_table, ByTier, HourRow, MissRow, RouteRow, Summary, TableOut,
    TtlAdvice, Window, SUMMARY_TOP,
};
pub use metrics::JournalMetrics;
use row::Entry;
pub use row::{split_key, JournalOutcome, JournalUrl, Row, UrlRef};
#[cfg(feature = "duckdb")]
pub use schema::SCHEMA_DOC;
#[cfg(feature = "duckdb")]
pub use writer::export_parquet;

/// The summary over the `window` ending at `now`, from a connection to a journal file.
#[cfg(feature = "duckdb")]
pub fn summary_at(
    conn: &duckdb::Connection,
    window: Window,
    now: std::time::SystemTime,
) -> Result<Summary, JournalError> {
    analytics::summary(conn, window, now)
}

/// Default `[journal] retention_days`.
pub const DEFAULT_RETENTION_DAYS: u32 = 14;
/// Default `[journal] queue_capacity`: rows waiting for the writer.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// Default `[journal] max_bytes`: the file (with its WAL) is kept under this.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// What the journal needs to run.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The DuckDB file; its directory is created if missing.
    pub path: PathBuf,
    /// This node's name in every row (`node` column).
    pub node: String,
    /// Rows older than this are deleted.
    pub retention: Duration,
    /// The share of requests journaled, 0 < sample <= 1.
    pub sample: f64,
    /// Rows waiting for the writer; beyond it rows are dropped and counted.
    pub queue_capacity: usize,
    /// Past this size (file and WAL) the oldest rows are deleted.
    pub max_bytes: u64,
}

impl JournalOptions {
    /// The defaults for a journal in `path`.
    pub fn new(path: impl Into<PathBuf>) -> JournalOptions {
        JournalOptions {
            path: path.into(),
            node: default_node(),
            retention: Duration::from_secs(u64::from(DEFAULT_RETENTION_DAYS) * 86_400),
            sample: 1.0,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// The machine's host name (`/etc/hostname`, else `$HOSTNAME`), else `tierd`.
pub fn default_node() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "tierd".to_owned())
}

/// A message to the writer thread.
#[cfg_attr(not(feature = "duckdb"), allow(dead_code))]
#[allow(clippy::large_enum_variant)] // rows inline: no allocation per request, no cross-thread free
pub(crate) enum Msg {
    Row(Entry),
    /// Write everything queued before this, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Write everything queued before this, answer, and stop.
    Stop(tokio::sync::oneshot::Sender<()>),
    /// Write everything queued before this, enforce retention and the size cap, then answer.
    Housekeep(tokio::sync::oneshot::Sender<()>),
}

/// The journal: a handle the request path records into. Cheap to share (`Arc`).
pub struct Journal {
    tx: crossbeam_channel::Sender<Msg>,
    clock: Arc<dyn crate::clock::Clock>,
    metrics: Arc<JournalMetrics>,
    /// `sample` scaled to `u64`: a request is journaled when a random `u64` is below it.
    sample_below: Option<u64>,
    /// The client-hash salt.
    salt: u64,
    /// The URL texts the writer has: a thread's record of the texts it sent counts only while
    /// this is the generation it saw ([`forget_urls`]).
    urls_generation: Arc<AtomicU64>,
    options: JournalOptions,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// A connection to clone for queries (the writer owns its own and replaces this one when
    /// it reopens the file; `None` while the file cannot be opened).
    #[cfg(feature = "duckdb")]
    reader: Arc<Mutex<Option<duckdb::Connection>>>,
}

/// URL hashes a thread sent the text of, past which it forgets them all (and sends each again
/// once): at most about a megabyte per thread.
const MAX_SENT_URLS: usize = 1 << 16;

/// The URLs whose text this thread sent to a journal's writer, in that journal's generation.
#[derive(Default)]
struct SentUrls {
    generation: u64,
    urls: std::collections::HashSet<u64, foldhash::fast::RandomState>,
}

thread_local! {
    static SENT: std::cell::RefCell<SentUrls> = std::cell::RefCell::new(SentUrls::default());
}

/// Generations are unique in the process (journals never share one), so a thread switching
/// journals starts over.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// Tells every thread that the writer may lack URL texts they sent (a failed write, a dropped
/// row, URLs deleted with their last rows): each sends its URLs' texts again.
pub(crate) fn forget_urls(generation: &AtomicU64) {
    generation.store(next_generation(), Ordering::Relaxed);
}

/// Why the journal could not start.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal file {path}: {message}")]
    Open { path: String, message: String },
    #[error("journal query: {0}")]
    Query(String),
    #[error("journal: the writer is gone")]
    Closed,
    #[error("journal: the file is not open (see the log and tierd_journal_failed)")]
    Unavailable,
    #[error("journal query took longer than {0:?}")]
    Timeout(Duration),
}

impl Journal {
    /// Starts the journal's writer thread, which opens (or creates) the file. A file that
    /// cannot be opened (a full disk, no permission, another process holding it) does not stop
    /// anything: the writer logs it, drops rows (counted) and retries with backoff, and
    /// `tierd_journal_failed` is 1 meanwhile. Only a thread that cannot start is an error.
    #[cfg(feature = "duckdb")]
    pub fn open(
        options: JournalOptions,
        clock: Arc<dyn crate::clock::Clock>,
        metrics: Arc<JournalMetrics>,
    ) -> Result<Arc<Journal>, JournalError> {
        let (tx, rx) = crossbeam_channel::bounded(options.queue_capacity.max(1));
        metrics
            .queue_capacity
            .set(i64::try_from(options.queue_capacity.max(1)).unwrap_or(i64::MAX));
        let salt = match writer::salt(&options.path) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, path = %options.path.display(),
                    "journal salt file unusable; client hashes use a salt for this run only");
                fastrand::u64(..)
            }
        };
        let sample_below =
            (options.sample < 1.0).then_some((options.sample * u64::MAX as f64) as u64);
        let reader = Arc::new(Mutex::new(None));
        let urls_generation = Arc::new(AtomicU64::new(next_generation()));
        let w = writer::Writer::new(
            reader.clone(),
            options.clone(),
            clock.clone(),
            metrics.clone(),
            salt,
            urls_generation.clone(),
        );
        let handle = std::thread::Builder::new()
            .name("tierd-journal".into())
            .spawn(move || w.run(rx))
            .map_err(|e| JournalError::Open {
                path: options.path.display().to_string(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        tracing::info!(path = %options.path.display(), node = %options.node,
            retention_days = options.retention.as_secs() / 86_400, sample = options.sample,
            "journal started");
        Ok(Arc::new(Journal {
            tx,
            clock,
            metrics,
            sample_below,
            salt,
            urls_generation,
            options,
            writer: Mutex::new(Some(handle)),
            reader,
        }))
    }

    /// The URL of a request to journal, from its cache key (or `host/path?query`); `None`
    /// when the request is not sampled (`[journal] sample`). Its text is left out when this
    /// thread already sent it to the writer.
    #[inline]
    pub fn url(&self, key: &str) -> Option<UrlRef> {
        if let Some(below) = self.sample_below {
            if fastrand::u64(..) >= below {
                return None;
            }
        }
        let generation = self.urls_generation.load(Ordering::Relaxed);
        Some(UrlRef::of(key, self.salt, |hash| {
            SENT.with(|s| {
                let mut s = s.borrow_mut();
                if s.generation != generation || s.urls.len() >= MAX_SENT_URLS {
                    s.urls.clear();
                    s.generation = generation;
                }
                s.urls.insert(hash)
            })
        }))
    }

    /// Queues one row; never waits. A full queue drops the row and counts it.
    #[inline]
    pub fn record(&self, row: Row) {
        let entry = Entry::of(row, self.salt);
        if let Err(e) = self.tx.try_send(Msg::Row(entry)) {
            self.metrics.dropped(1);
            if let Msg::Row(Entry { text: Some(_), .. }) = e.into_inner() {
                // That text never reaches the writer: every thread sends its URLs' again.
                forget_urls(&self.urls_generation);
            }
        }
    }

    /// The time rows are stamped with.
    #[inline]
    pub fn now(&self) -> std::time::SystemTime {
        self.clock.now()
    }

    /// The journal's own metrics (rows written and dropped, the file's state).
    pub fn metrics(&self) -> &JournalMetrics {
        &self.metrics
    }

    /// What the journal was opened with.
    pub fn options(&self) -> &JournalOptions {
        &self.options
    }

    /// Waits until every row queued before this call is written (at most `timeout`).
    pub async fn flush(&self, timeout: Duration) -> Result<(), JournalError> {
        self.ask(Msg::Flush, timeout).await
    }

    /// Writes what is queued, then deletes rows past the retention and, over `max_bytes`,
    /// the oldest (the writer does this on its own every minute).
    pub async fn housekeeping(&self) -> Result<(), JournalError> {
        self.ask(Msg::Housekeep, Duration::from_secs(30)).await
    }

    async fn ask(
        &self,
        msg: fn(tokio::sync::oneshot::Sender<()>) -> Msg,
        timeout: Duration,
    ) -> Result<(), JournalError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        let tx = self.tx.clone();
        let sent = tokio::task::spawn_blocking(move || tx.send_timeout(msg(ack), timeout).is_ok())
            .await
            .unwrap_or(false);
        if !sent {
            return Err(JournalError::Closed);
        }
        match tokio::time::timeout(timeout, done).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(JournalError::Closed),
            Err(_) => Err(JournalError::Timeout(timeout)),
        }
    }

    /// The analytics summary over the last `window`, after writing what is queued.
    ///
    /// (For a file no node holds, see [`summary_at`].)
    #[cfg(feature = "duckdb")]
    pub async fn summary(
        &self,
        window: Window,
        now: std::time::SystemTime,
    ) -> Result<Summary, JournalError> {
        const LIMIT: Duration = Duration::from_secs(10);
        self.flush(LIMIT).await?;
        let conn = self.clone_reader()?;
        let ran = tokio::task::spawn_blocking(move || analytics::summary(&conn, window, now));
        match tokio::time::timeout(LIMIT, ran).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(JournalError::Query("the query thread failed".into())),
            Err(_) => Err(JournalError::Timeout(LIMIT)),
        }
    }

    /// Runs one read-only query over the journal after writing what is queued: at most
    /// `limit` rows, for at most 10 s (then it is interrupted). DuckDB's parser must find
    /// exactly one query expression (no DDL, DML, `COPY`, `SET`, `ATTACH`, no second
    /// statement), it runs in a read-only transaction, and the database is opened without
    /// access to any other file or extension.
    #[cfg(feature = "duckdb")]
    pub async fn query(&self, sql: &str, limit: usize) -> Result<TableOut, JournalError> {
        const LIMIT: Duration = Duration::from_secs(10);
        let sql = sql.trim().to_owned();
        if sql.trim_end_matches(';').trim().is_empty() {
            return Err(JournalError::Query("the query is empty".into()));
        }
        self.flush(LIMIT).await?;
        let conn = self.clone_reader()?;
        let interrupt = conn.interrupt_handle();
        let ran =
            tokio::task::spawn_blocking(move || analytics::query_read_only(&conn, &sql, limit));
        match tokio::time::timeout(LIMIT, ran).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(JournalError::Query("the query thread failed".into())),
            Err(_) => {
                interrupt.interrupt();
                Err(JournalError::Timeout(LIMIT))
            }
        }
    }

    /// Runs `f` on a read connection to the journal, on a blocking thread, for at most `limit`
    /// (then the query is interrupted); after writing what is queued when `flush`.
    #[cfg(feature = "duckdb")]
    pub async fn read<T, F>(&self, flush: bool, limit: Duration, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&duckdb::Connection) -> Result<T, JournalError> + Send + 'static,
    {
        if flush {
            self.flush(limit).await?;
        }
        let conn = self.clone_reader()?;
        let interrupt = conn.interrupt_handle();
        let ran = tokio::task::spawn_blocking(move || f(&conn));
        match tokio::time::timeout(limit, ran).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(JournalError::Query("the query thread failed".into())),
            Err(_) => {
                interrupt.interrupt();
                Err(JournalError::Timeout(limit))
            }
        }
    }

    #[cfg(feature = "duckdb")]
    fn clone_reader(&self) -> Result<duckdb::Connection, JournalError> {
        let guard = self.reader.lock().map_err(|_| JournalError::Closed)?;
        match guard.as_ref() {
            Some(c) => c
                .try_clone()
                .map_err(|e| JournalError::Query(e.to_string())),
            None => Err(JournalError::Unavailable),
        }
    }

    /// Writes what is queued and stops the writer (SIGTERM, `Cache::shutdown`); rows recorded
    /// later are dropped and counted. Waits at most 30 s for the writer.
    pub async fn close(&self) {
        const LIMIT: Duration = Duration::from_secs(30);
        let Some(handle) = self.writer.lock().ok().and_then(|mut h| h.take()) else {
            return;
        };
        let (ack, done) = tokio::sync::oneshot::channel();
        let tx = self.tx.clone();
        let sent =
            tokio::task::spawn_blocking(move || tx.send_timeout(Msg::Stop(ack), LIMIT).is_ok())
                .await
                .unwrap_or(false);
        if sent && matches!(tokio::time::timeout(LIMIT, done).await, Ok(Ok(()))) {
            // The writer has answered and is returning: the join is immediate.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        } else {
            tracing::error!(path = %self.options.path.display(), "journal writer did not stop in time; queued rows may be lost");
        }
        #[cfg(feature = "duckdb")]
        if let Ok(mut r) = self.reader.lock() {
            r.take();
        }
    }
}
