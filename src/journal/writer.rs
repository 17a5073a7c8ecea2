//! The journal's file and its writer thread: schema, batched appends, retention, the size cap,
//! and the Parquet export.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use duckdb::types::{TimeUnit, Value};
use duckdb::{params, Connection};
use tokio::sync::oneshot;

use super::row::split_key;
use super::{JournalError, JournalMetrics, JournalOptions, JournalOutcome, Msg, Row};
use crate::clock::Clock;
use crate::log_limit::{LogLimit, DEFAULT_LOG_INTERVAL};

/// Rows appended per batch at most.
const BATCH: usize = 16_384;
/// How long the writer waits for more rows to join a batch (a flush ends the wait).
const LINGER: Duration = Duration::from_millis(100);
/// How often retention and the size cap are enforced.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);
/// The share of rows deleted at once when the file is over its cap, in percent.
const SIZE_TRIM_PERCENT: u32 = 10;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal_meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
INSERT OR IGNORE INTO journal_meta VALUES ('schema', '1');
CREATE TABLE IF NOT EXISTS journal (
    ts              TIMESTAMP NOT NULL,
    node            VARCHAR NOT NULL,
    method          VARCHAR NOT NULL,
    host            VARCHAR NOT NULL,
    target          VARCHAR NOT NULL,
    route           VARCHAR NOT NULL,
    key_hash        UBIGINT NOT NULL,
    status          USMALLINT NOT NULL,
    outcome         VARCHAR NOT NULL,
    cache_status    VARCHAR NOT NULL,
    tier            VARCHAR,
    bytes           UBIGINT NOT NULL,
    origin_ms       DOUBLE,
    total_ms        DOUBLE NOT NULL,
    ttl_s           INTEGER,
    client          UBIGINT NOT NULL,
    user_scoped     BOOLEAN NOT NULL,
    shared_storable BOOLEAN NOT NULL,
    warmed          BOOLEAN NOT NULL,
    source          VARCHAR NOT NULL,
    import_key      UBIGINT
);
";

/// The `journal` table's columns, for the README and `tierd sql --schema`.
pub const SCHEMA_DOC: &str = "\
column           type       meaning
ts               TIMESTAMP  when the request was answered (UTC, the response head)
node             VARCHAR    the node that answered ([journal] node, default the host name)
method           VARCHAR    GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or other
host             VARCHAR    the host, as keyed (lowercase, default port dropped)
target           VARCHAR    path and query, as keyed (a rule's key_query applied)
route            VARCHAR    the route template (the matching rule's path, or other)
key_hash         UBIGINT    xxh3 of the cache key (the same hash the L3 tier uses)
status           USMALLINT  the status sent to the client
outcome          VARCHAR    hit, stale, miss, revalidated, bypass, pass, refused, error, warm
cache_status     VARCHAR    tierd's finer outcome (the tierd_requests_total cache_status label)
tier             VARCHAR    l1, l2 or l3 (an entry answered), origin (the origin's body), or NULL
bytes            UBIGINT    body bytes sent (0 for 304, HEAD and streamed bodies)
origin_ms        DOUBLE     time the origin took, NULL when it was not asked
total_ms         DOUBLE     time from arrival to the response head
ttl_s            INTEGER    freshness lifetime of the entry served or stored, NULL when none
client           UBIGINT    salted hash of the client (its per-user scope value, else its address)
user_scoped      BOOLEAN    the request carried a per-user scope value
shared_storable  BOOLEAN    the answer was stored or served from a shared (not per-user) entry
warmed           BOOLEAN    served from an entry a warming job stored
source           VARCHAR    live (answered by this node) or import (tierd import-log)
import_key       UBIGINT    for imported rows: which log line (re-imports are skipped)
";

/// Opens (or creates) the journal file.
pub(super) fn open(o: &JournalOptions) -> Result<Connection, JournalError> {
    let fail = |e: &dyn std::fmt::Display| JournalError::Open {
        path: o.path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = o.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(&format!("cannot create its directory: {e}")))?;
    }
    let config = duckdb::Config::default()
        .threads(2)
        .and_then(|c| c.max_memory("256MB"))
        .map_err(|e| fail(&e))?;
    let conn = Connection::open_with_flags(&o.path, config).map_err(|e| fail(&e))?;
    conn.execute_batch(SCHEMA).map_err(|e| fail(&e))?;
    Ok(conn)
}

/// Opens `path` read-only for queries (no node may hold it).
pub(super) fn open_read_only_at(path: &Path) -> Result<Connection, JournalError> {
    let fail = |e: &dyn std::fmt::Display| JournalError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if !path.is_file() {
        return Err(fail(
            &"no such file (is [journal] on, and is this its path?)",
        ));
    }
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .map_err(|e| fail(&e))?;
    Connection::open_with_flags(path, config).map_err(|e| {
        let text = e.to_string();
        if text.contains("lock") {
            fail(&"a running tierd holds it: ask the node instead (--admin URL)")
        } else {
            fail(&text)
        }
    })
}

/// The client-hash salt: 8 random bytes in `<journal>.salt` (mode 0600), created on first
/// open. It stays out of the database so that nobody reading the journal can reverse the
/// hashes by trying every address; delete the file to unlink the history from new rows.
pub(super) fn salt(journal: &Path) -> std::io::Result<u64> {
    let mut p = journal.as_os_str().to_owned();
    p.push(".salt");
    let p = PathBuf::from(p);
    if let Ok(text) = std::fs::read_to_string(&p) {
        if let Ok(v) = u64::from_str_radix(text.trim(), 16) {
            return Ok(v);
        }
    }
    let v = fastrand::u64(..);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&p)?;
    writeln!(f, "{v:016x}")?;
    f.sync_all()?;
    Ok(v)
}

/// The file's size with its WAL.
fn file_bytes(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push(".wal");
    [path.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The writer thread's state.
pub(super) struct Writer {
    conn: Option<Connection>,
    /// The connection queries clone, replaced on every (re)open.
    reader: Arc<std::sync::Mutex<Option<Connection>>>,
    o: JournalOptions,
    clock: Arc<dyn Clock>,
    metrics: Arc<JournalMetrics>,
    salt: u64,
    last_housekeeping: Option<Instant>,
    reopen_at: Option<Instant>,
    reopen_wait: Duration,
    /// A caller asked for housekeeping now ([`Msg::Housekeep`]).
    housekeep_now: std::cell::Cell<bool>,
}

impl Writer {
    pub(super) fn new(
        reader: Arc<std::sync::Mutex<Option<Connection>>>,
        o: JournalOptions,
        clock: Arc<dyn Clock>,
        metrics: Arc<JournalMetrics>,
        salt: u64,
    ) -> Writer {
        Writer {
            conn: None,
            reader,
            o,
            clock,
            metrics,
            salt,
            last_housekeeping: None,
            reopen_at: None,
            reopen_wait: Duration::from_secs(1),
            housekeep_now: std::cell::Cell::new(false),
        }
    }

    /// Runs until told to stop (or every sender is gone), writing what was queued before.
    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        self.connection();
        let mut batch: Vec<Row> = Vec::with_capacity(1024);
        let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let mut stop = None;
            match rx.recv_timeout(HOUSEKEEPING_EVERY.min(Duration::from_secs(1))) {
                Ok(m) => self.take(m, &mut batch, &mut acks, &mut stop),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write(&mut batch);
                    return;
                }
            }
            // Gather more rows for a while, unless someone waits for them.
            let deadline = Instant::now() + LINGER;
            while stop.is_none() && acks.is_empty() && batch.len() < BATCH && !batch.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(m) => self.take(m, &mut batch, &mut acks, &mut stop),
                    Err(_) => break,
                }
            }
            // Everything already queued joins (a flush must see every row sent before it).
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => self.take(m, &mut batch, &mut acks, &mut stop),
                    Err(_) => break,
                }
            }
            self.write(&mut batch);
            if self.housekeep_now.take() {
                self.housekeeping();
            }
            for a in acks.drain(..) {
                let _ = a.send(());
            }
            if let Some(ack) = stop {
                // Rows queued after the stop are not written.
                let mut late = 0;
                while let Ok(m) = rx.try_recv() {
                    if let Msg::Row(_) = m {
                        late += 1;
                        self.metrics.queue_depth.dec();
                    }
                }
                self.metrics.dropped(late);
                if let Some(c) = self.conn.take() {
                    if let Err(e) = c.execute_batch("CHECKPOINT") {
                        tracing::warn!(error = %e, "journal checkpoint at close failed");
                    }
                }
                let _ = ack.send(());
                tracing::info!(path = %self.o.path.display(), "journal closed");
                return;
            }
            if self
                .last_housekeeping
                .is_none_or(|t| t.elapsed() >= HOUSEKEEPING_EVERY)
            {
                self.housekeeping();
            }
        }
    }

    fn take(
        &self,
        m: Msg,
        batch: &mut Vec<Row>,
        acks: &mut Vec<oneshot::Sender<()>>,
        stop: &mut Option<oneshot::Sender<()>>,
    ) {
        match m {
            Msg::Row(r) => {
                self.metrics.queue_depth.dec();
                batch.push(*r);
            }
            Msg::Flush(a) => acks.push(a),
            Msg::Stop(a) => *stop = Some(a),
            Msg::Housekeep(a) => {
                self.housekeep_now.set(true);
                acks.push(a);
            }
        }
    }

    /// Appends `batch` (emptied whatever happens); a failure drops it, counted and logged.
    fn write(&mut self, batch: &mut Vec<Row>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let started = Instant::now();
        let (node, salt) = (self.o.node.clone(), self.salt);
        let result = match self.connection() {
            Some(conn) => append(conn, batch, &node, salt),
            None => Err(duckdb::Error::InvalidParameterName(
                "the journal file is not open".into(),
            )),
        };
        batch.clear();
        match result {
            Ok(()) => {
                self.metrics.written(n);
                self.metrics
                    .write_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.metrics.dropped(n);
                static FAILED: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                if let Some(occurrences) = FAILED.check() {
                    tracing::error!(error = %e, rows = n, occurrences, path = %self.o.path.display(),
                        "journal write failed; rows dropped (the file is reopened)");
                }
                self.conn = None;
                self.metrics.failed.set(1);
                if let Ok(mut slot) = self.reader.lock() {
                    *slot = None;
                }
            }
        }
    }

    /// The open connection, reopening the file (with backoff) after a failure.
    fn connection(&mut self) -> Option<&Connection> {
        if self.conn.is_none() && self.reopen_at.is_none_or(|t| Instant::now() >= t) {
            match open(&self.o).and_then(|c| {
                let r = c
                    .try_clone()
                    .map_err(|e| JournalError::Query(e.to_string()))?;
                Ok((c, r))
            }) {
                Ok((c, r)) => {
                    if self.reopen_at.is_some() {
                        tracing::info!(path = %self.o.path.display(), "journal file open again");
                    }
                    self.conn = Some(c);
                    if let Ok(mut slot) = self.reader.lock() {
                        *slot = Some(r);
                    }
                    self.metrics.failed.set(0);
                    self.reopen_at = None;
                    self.reopen_wait = Duration::from_secs(1);
                }
                Err(e) => {
                    self.metrics.failed.set(1);
                    static REOPEN: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                    if let Some(occurrences) = REOPEN.check() {
                        tracing::error!(error = %e, occurrences, retry_in_s = self.reopen_wait.as_secs(),
                            "journal file cannot be opened; rows are dropped (and counted) until it can");
                    }
                    self.reopen_at = Some(Instant::now() + self.reopen_wait);
                    self.reopen_wait = (self.reopen_wait * 2).min(Duration::from_secs(30));
                }
            }
        }
        self.conn.as_ref()
    }

    /// Deletes rows past the retention, then the oldest rows while the file is over its cap.
    fn housekeeping(&mut self) {
        self.last_housekeeping = Some(Instant::now());
        let cutoff = micros(self.clock.now()) - self.o.retention.as_micros() as i64;
        let max_bytes = self.o.max_bytes;
        let path = self.o.path.clone();
        let metrics = self.metrics.clone();
        let Some(conn) = self.connection() else {
            return;
        };
        match conn.execute(
            "DELETE FROM journal WHERE ts < make_timestamp(?)",
            params![cutoff],
        ) {
            Ok(n) if n > 0 => {
                metrics
                    .deleted
                    .with_label_values(&["retention"])
                    .inc_by(n as u64);
                tracing::info!(rows = n, "journal rows past the retention deleted");
                let _ = conn.execute_batch("CHECKPOINT");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "journal retention failed"),
        }
        let size = file_bytes(&path);
        metrics.file_bytes.set(size as i64);
        if size > max_bytes {
            // DuckDB reuses the blocks of deleted rows after a checkpoint, so the file stops
            // growing rather than shrinking.
            let trimmed = conn.execute(
                "DELETE FROM journal WHERE ts <= (SELECT quantile_disc(ts, ?) FROM journal)",
                params![f64::from(SIZE_TRIM_PERCENT) / 100.0],
            );
            match trimmed {
                Ok(n) => {
                    metrics
                        .deleted
                        .with_label_values(&["size"])
                        .inc_by(n as u64);
                    tracing::warn!(
                        rows = n,
                        file_bytes = size,
                        max_bytes,
                        "journal over journal.max_bytes: oldest rows deleted"
                    );
                    let _ = conn.execute_batch("CHECKPOINT");
                }
                Err(e) => tracing::warn!(error = %e, "journal size cap failed"),
            }
        }
    }
}

/// Appends `rows` in one appender flush.
fn append(conn: &Connection, rows: &[Row], node: &str, salt: u64) -> duckdb::Result<()> {
    let mut app = conn.appender("journal")?;
    for r in rows {
        let (host, target, user) = split_key(&r.url);
        let key_hash = crate::store::key_hash(&r.url);
        let client = match (user, r.peer) {
            (Some(u), _) => xxhash_rust::xxh3::xxh3_64_with_seed(u.as_bytes(), salt),
            (None, Some(ip)) => {
                xxhash_rust::xxh3::xxh3_64_with_seed(ip.to_string().as_bytes(), salt)
            }
            (None, None) => 0,
        };
        let outcome = JournalOutcome::of(r.outcome, r.bypassed);
        let tier = match r.tier {
            Some(t) => Some(t.as_str()),
            None if r.origin.is_some()
                && matches!(
                    outcome,
                    JournalOutcome::Miss | JournalOutcome::Pass | JournalOutcome::Bypass
                ) =>
            {
                Some("origin")
            }
            None => None,
        };
        let shared = !r.user_scoped
            && matches!(
                outcome,
                JournalOutcome::Hit
                    | JournalOutcome::Stale
                    | JournalOutcome::Miss
                    | JournalOutcome::Revalidated
            );
        app.append_row(params![
            Value::Timestamp(TimeUnit::Microsecond, micros(r.at)),
            node,
            r.method.as_str(),
            host,
            target,
            &*r.route,
            key_hash,
            r.status,
            outcome.as_str(),
            r.outcome.as_str(),
            tier,
            r.bytes,
            r.origin.map(|d| d.as_secs_f64() * 1000.0),
            r.total.as_secs_f64() * 1000.0,
            r.ttl.map(|d| d.as_secs().min(i32::MAX as u64) as i32),
            client,
            r.user_scoped,
            shared,
            r.warmed,
            "live",
            Option::<u64>::None,
        ])?;
    }
    app.flush()
}

/// Writes the rows since `since` (UTC midnight of that date) as Parquet files partitioned by
/// day (`date=YYYY-MM-DD/`) under `dir`; returns the rows written.
pub fn export_parquet(conn: &Connection, since: &str, dir: &Path) -> Result<u64, JournalError> {
    let d = dir.to_string_lossy().replace('\'', "''");
    let sql = format!(
        "COPY (SELECT *, strftime(ts, '%Y-%m-%d') AS date FROM journal \
         WHERE ts >= CAST(? AS DATE)) TO '{d}' \
         (FORMAT PARQUET, PARTITION_BY (date), OVERWRITE_OR_IGNORE, FILENAME_PATTERN 'part-{{uuid}}')"
    );
    conn.execute(&sql, params![since])
        .map(|n| n as u64)
        .map_err(|e| JournalError::Query(e.to_string()))
}
