//! The journal's file and its writer thread: schema, batched appends, retention, the size cap,
//! and the Parquet export.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use duckdb::{params, Connection};
use tokio::sync::oneshot;

use super::row::{micros, split_key, Entry};
use super::schema::{migrate, view_sql, SCHEMA, SCHEMA_VERSION};
use super::{forget_urls, JournalError, JournalMetrics, JournalOptions, Msg};
use crate::clock::Clock;
use crate::log_limit::{LogLimit, DEFAULT_LOG_INTERVAL};
use std::sync::atomic::AtomicU64;

/// Rows appended per batch at most: one DuckDB row group. An append this large is written
/// straight into the file's blocks (DuckDB's optimistic write) instead of once into the WAL
/// and again at the checkpoint, which halves the writer's work under load.
const BATCH: usize = 122_880;
/// How long the writer lets rows gather into a batch (a flush, a stop or a full batch ends it
/// sooner): long enough that under load a batch is a full row group (122,880 rows fill in 2.5 s
/// at 50,000 requests/s); a crash (not a SIGTERM, which drains) loses at most this much of the
/// journal.
const LINGER: Duration = Duration::from_secs(5);
/// How often the writer takes what is queued while it lingers: the queue only has to hold
/// this long's worth of rows.
const TICK: Duration = Duration::from_millis(20);
/// How often retention and the size cap are enforced.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);
/// The share of rows deleted at once when the file is over its cap, in percent.
const SIZE_TRIM_PERCENT: u32 = 10;

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
    // No file but its own, no extension: the node's SQL endpoint (/_tierd/analytics/sql) runs
    // on this database, and nothing it does needs more. One thread: with a second, DuckDB's
    // calling thread polls its task queue while the other works, and the writer's share of the
    // CPU is a fifth higher (0.99 against 0.80 µs a request, `scripts/bench-journal.sh`); the
    // summaries scan a file of at most `max_bytes` and do not need it.
    let config = duckdb::Config::default()
        .threads(1)
        .and_then(|c| c.max_memory("256MB"))
        .and_then(|c| c.enable_external_access(false))
        .and_then(|c| c.enable_autoload_extension(false))
        .map_err(|e| fail(&e))?;
    let conn = Connection::open_with_flags(&o.path, config).map_err(|e| fail(&e))?;
    conn.execute_batch(SCHEMA).map_err(|e| fail(&e))?;
    migrate(&conn).map_err(|e| fail(&format!("converting it to schema {SCHEMA_VERSION}: {e}")))?;
    conn.execute_batch(&view_sql()).map_err(|e| fail(&e))?;
    conn.execute(
        "INSERT OR REPLACE INTO journal_meta VALUES ('node', ?), ('sample', ?)",
        params![o.node, o.sample.to_string()],
    )
    .map_err(|e| fail(&e))?;
    Ok(conn)
}

/// The route templates already coded.
fn load_routes(conn: &Connection) -> duckdb::Result<RouteCodes> {
    let mut st = conn.prepare("SELECT route, id FROM journal_routes")?;
    let rows = st.query_map([], |r| {
        Ok((Arc::from(r.get::<_, String>(0)?.as_str()), r.get(1)?))
    })?;
    rows.collect()
}

/// Deletes the URLs no row points to any more (after rows were deleted).
fn forget_orphans(conn: &Connection) {
    if let Err(e) = conn.execute_batch(
        "DELETE FROM journal_urls WHERE hash NOT IN (SELECT DISTINCT url FROM journal_rows)",
    ) {
        tracing::warn!(error = %e, "journal: deleting unused URLs failed");
    }
}

/// Route templates and their codes (a fast hasher: the writer looks one up per row).
type RouteCodes = std::collections::HashMap<Arc<str>, u32, foldhash::fast::RandomState>;

/// URL hashes the writer remembers as written; past this it forgets them all (and writes each
/// text it is sent again once, a no-op for the file).
const MAX_KNOWN_URLS: usize = 1 << 20;

/// Rows gathered for one append, column by column as `journal_rows` stores them (about 70
/// bytes a row), taken from the queue as they come.
#[derive(Default)]
pub(super) struct Batch {
    ts: Vec<i64>,
    url: Vec<u64>,
    /// Until the append: an index into `routes`.
    route: Vec<u32>,
    key_hash: Vec<u64>,
    codes: Vec<u32>,
    bytes: Vec<u64>,
    origin_us: Vec<u32>,
    total_us: Vec<u32>,
    ttl_s: Vec<i32>,
    client: Vec<u64>,
    import_key: Vec<u64>,
    /// The routes of this batch's rows (coded at the append).
    routes: Vec<Arc<str>>,
    route_index: RouteCodes,
    /// URL texts the file may not have: (hash, `host/path?query`).
    urls: Vec<(u64, Arc<str>)>,
}

impl Batch {
    pub(super) fn len(&self) -> usize {
        self.ts.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    fn clear(&mut self) {
        *self = Batch::default();
    }

    /// The index of `route` in `routes` (the last one's, mostly: the same `Arc`).
    fn route(&mut self, route: Arc<str>) -> u32 {
        if let Some(last) = self.routes.last() {
            if Arc::ptr_eq(last, &route) {
                return (self.routes.len() - 1) as u32;
            }
        }
        if let Some(i) = self.route_index.get(&route) {
            return *i;
        }
        let i = self.routes.len() as u32;
        self.route_index.insert(route.clone(), i);
        self.routes.push(route);
        i
    }
}

/// The code of `value` in the dimension table `table` (`id`, `column`), added if new: the
/// route templates the rows point to.
fn code_of<T: duckdb::types::FromSql>(
    conn: &Connection,
    table: &str,
    column: &str,
    value: &str,
) -> duckdb::Result<T> {
    conn.execute(
        &format!(
            "INSERT INTO {table} SELECT (SELECT coalesce(max(id) + 1, 0) FROM {table}), ?
             WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {column} = ?)"
        ),
        params![value, value],
    )?;
    conn.query_row(
        &format!("SELECT id FROM {table} WHERE {column} = ?"),
        params![value],
        |r| r.get(0),
    )
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
            fail(&"a running tierd holds it: ask the node instead (tierd report or sql with --admin URL)")
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

/// The writer thread's state.
pub(super) struct Writer {
    conn: Option<Connection>,
    /// The connection queries clone, replaced on every (re)open.
    reader: Arc<std::sync::Mutex<Option<Connection>>>,
    o: JournalOptions,
    clock: Arc<dyn Clock>,
    metrics: Arc<JournalMetrics>,
    salt: u64,
    /// See [`forget_urls`]: bumped whenever URL texts the threads sent may be missing.
    urls_generation: Arc<AtomicU64>,
    last_housekeeping: Option<Instant>,
    reopen_at: Option<Instant>,
    reopen_wait: Duration,
    /// URL hashes known to be in `journal_urls` (cleared past [`MAX_KNOWN_URLS`]).
    known_urls: std::collections::HashSet<u64, foldhash::fast::RandomState>,
    /// Route templates and their codes in `journal_routes`.
    routes: RouteCodes,
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
        urls_generation: Arc<AtomicU64>,
    ) -> Writer {
        Writer {
            conn: None,
            reader,
            o,
            clock,
            metrics,
            salt,
            urls_generation,
            last_housekeeping: None,
            reopen_at: None,
            reopen_wait: Duration::from_secs(1),
            housekeep_now: std::cell::Cell::new(false),
            known_urls: Default::default(),
            routes: Default::default(),
        }
    }

    /// A writer for `tierd import-log`: the file opened now, or the error.
    pub(super) fn for_import(o: &JournalOptions) -> Result<Writer, JournalError> {
        let salt = salt(&o.path).map_err(|e| JournalError::Open {
            path: o.path.display().to_string(),
            message: format!("salt file: {e}"),
        })?;
        let conn = open(o)?;
        let routes = load_routes(&conn).map_err(|e| JournalError::Query(e.to_string()))?;
        let registry = prometheus::Registry::new();
        let mut w = Writer::new(
            Arc::new(std::sync::Mutex::new(None)),
            o.clone(),
            Arc::new(crate::clock::SystemClock),
            Arc::new(JournalMetrics::register(&registry)),
            salt,
            Arc::new(AtomicU64::new(0)),
        );
        w.conn = Some(conn);
        w.routes = routes;
        Ok(w)
    }

    /// The `import_key` of every imported row.
    pub(super) fn imported_keys(&self) -> Result<std::collections::HashSet<u64>, JournalError> {
        let q = |e: duckdb::Error| JournalError::Query(e.to_string());
        let Some(conn) = &self.conn else {
            return Err(JournalError::Unavailable);
        };
        let mut st = conn
            .prepare("SELECT import_key FROM journal_rows WHERE import_key <> 0")
            .map_err(q)?;
        let keys = st.query_map([], |r| r.get::<_, u64>(0)).map_err(q)?;
        keys.collect::<duckdb::Result<_>>().map_err(q)
    }

    /// Folds the WAL into the file.
    pub(super) fn checkpoint(&self) {
        if let Some(c) = &self.conn {
            if let Err(e) = c.execute_batch("CHECKPOINT") {
                tracing::warn!(error = %e, "journal checkpoint failed");
            }
        }
    }

    /// The client-hash salt (for rows made here: `tierd import-log`).
    pub(super) fn salt_value(&self) -> u64 {
        self.salt
    }

    /// Runs until told to stop (or every sender is gone), writing what was queued before.
    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        self.connection();
        let mut batch = Batch::default();
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
            // Everything already queued joins (a flush must see every row sent before it); then,
            // unless someone waits, the rows of the next moment too: one larger append costs
            // less than many small ones (and no clock is read per row).
            self.drain(&rx, &mut batch, &mut acks, &mut stop);
            let until = Instant::now() + LINGER;
            while stop.is_none()
                && acks.is_empty()
                && !batch.is_empty()
                && batch.len() < BATCH
                && Instant::now() < until
            {
                std::thread::sleep(TICK);
                self.drain(&rx, &mut batch, &mut acks, &mut stop);
            }
            self.metrics.queue_depth.set(rx.len() as i64);
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
                    }
                }
                self.metrics.queue_depth.set(0);
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

    /// Takes what is queued, up to a batch.
    fn drain(
        &mut self,
        rx: &Receiver<Msg>,
        batch: &mut Batch,
        acks: &mut Vec<oneshot::Sender<()>>,
        stop: &mut Option<oneshot::Sender<()>>,
    ) {
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => self.take(m, batch, acks, stop),
                Err(_) => break,
            }
        }
    }

    fn take(
        &mut self,
        m: Msg,
        batch: &mut Batch,
        acks: &mut Vec<oneshot::Sender<()>>,
        stop: &mut Option<oneshot::Sender<()>>,
    ) {
        match m {
            Msg::Row(e) => self.push(e, batch),
            Msg::Flush(a) => acks.push(a),
            Msg::Stop(a) => *stop = Some(a),
            Msg::Housekeep(a) => {
                self.housekeep_now.set(true);
                acks.push(a);
            }
        }
    }

    /// Adds `e` to `batch`.
    pub(super) fn push(&mut self, e: Entry, batch: &mut Batch) {
        if let Some(text) = e.text {
            if self.known_urls.len() > MAX_KNOWN_URLS {
                self.known_urls.clear();
            }
            if self.known_urls.insert(e.url) {
                batch.urls.push((e.url, text));
            }
        }
        let route = batch.route(e.route);
        batch.route.push(route);
        batch.ts.push(e.ts_us);
        batch.url.push(e.url);
        batch.key_hash.push(e.key_hash);
        batch.codes.push(e.codes);
        batch.bytes.push(e.bytes);
        batch.origin_us.push(e.origin_us);
        batch.total_us.push(e.total_us);
        batch.ttl_s.push(e.ttl_s);
        batch.client.push(e.client);
        batch.import_key.push(e.import_key);
    }

    /// Appends `batch` (emptied whatever happens); a failure drops it, counted and logged.
    fn write(&mut self, batch: &mut Batch) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let started = Instant::now();
        self.connection();
        let result = match self.conn.is_some() {
            true => self.append(batch),
            false => Err(duckdb::Error::InvalidParameterName(
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
                // The URL texts of the batch may be lost with it: the threads send them again.
                self.known_urls.clear();
                forget_urls(&self.urls_generation);
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
                    self.known_urls.clear();
                    self.routes = load_routes(&c).unwrap_or_default();
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
        let mut orphaned = false;
        match conn.execute(
            "DELETE FROM journal_rows WHERE ts < make_timestamp(?)",
            params![cutoff],
        ) {
            Ok(n) if n > 0 => {
                metrics
                    .deleted
                    .with_label_values(&["retention"])
                    .inc_by(n as u64);
                tracing::info!(rows = n, "journal rows past the retention deleted");
                forget_orphans(conn);
                orphaned = true;
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
                "DELETE FROM journal_rows WHERE ts <= (SELECT quantile_disc(ts, ?) FROM journal_rows)",
                params![f64::from(SIZE_TRIM_PERCENT) / 100.0],
            );
            match trimmed {
                Ok(n) => {
                    metrics
                        .deleted
                        .with_label_values(&["size"])
                        .inc_by(n as u64);
                    forget_orphans(conn);
                    orphaned = true;
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
        if orphaned {
            // URLs deleted with their last rows: a thread that sees one again sends its text.
            self.known_urls.clear();
            forget_urls(&self.urls_generation);
        }
    }
}

impl Writer {
    /// Appends `batch` as one Arrow batch (its columns as they are: no per-value conversion),
    /// after the routes and URL texts not written before; leaves `batch` empty.
    pub(super) fn append(&mut self, batch: &mut Batch) -> duckdb::Result<()> {
        use duckdb::arrow::array::{
            ArrayRef, Int32Array, StringBuilder, TimestampMicrosecondArray, UInt32Array,
            UInt64Array,
        };
        use duckdb::arrow::record_batch::RecordBatch;
        let Some(conn) = self.conn.as_ref() else {
            return Err(duckdb::Error::InvalidParameterName(
                "the journal file is not open".into(),
            ));
        };
        let b = std::mem::take(batch);
        let mut codes = Vec::with_capacity(b.routes.len());
        for r in &b.routes {
            codes.push(match self.routes.get(r) {
                Some(c) => *c,
                None => {
                    let id = code_of(conn, "journal_routes", "route", r)?;
                    self.routes.insert(r.clone(), id);
                    id
                }
            });
        }
        let mut route = b.route;
        if codes.iter().enumerate().any(|(i, c)| *c != i as u32) {
            for r in &mut route {
                *r = codes[*r as usize];
            }
        }
        let to_err = |e: duckdb::arrow::error::ArrowError| {
            duckdb::Error::InvalidParameterName(e.to_string())
        };
        if !b.urls.is_empty() {
            let (mut hash, mut host, mut target) = (
                Vec::with_capacity(b.urls.len()),
                StringBuilder::new(),
                StringBuilder::new(),
            );
            for (u, text) in &b.urls {
                let (h, t, _) = split_key(text);
                hash.push(*u);
                host.append_value(h);
                target.append_value(t);
            }
            let batch = RecordBatch::try_from_iter([
                ("hash", Arc::new(UInt64Array::from(hash)) as ArrayRef),
                ("host", Arc::new(host.finish()) as ArrayRef),
                ("target", Arc::new(target.finish()) as ArrayRef),
            ])
            .map_err(to_err)?;
            let mut app = conn.appender("journal_urls_new")?;
            app.append_record_batch(batch)?;
            app.flush()?;
            drop(app);
            conn.execute_batch(
                "INSERT OR IGNORE INTO journal_urls
                   SELECT hash, any_value(host), any_value(target) FROM journal_urls_new GROUP BY hash;
                 DELETE FROM journal_urls_new;",
            )?;
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(b.ts)),
            Arc::new(UInt64Array::from(b.url)),
            Arc::new(UInt32Array::from(route)),
            Arc::new(UInt64Array::from(b.key_hash)),
            Arc::new(UInt32Array::from(b.codes)),
            Arc::new(UInt64Array::from(b.bytes)),
            Arc::new(UInt32Array::from(b.origin_us)),
            Arc::new(UInt32Array::from(b.total_us)),
            Arc::new(Int32Array::from(b.ttl_s)),
            Arc::new(UInt64Array::from(b.client)),
            Arc::new(UInt64Array::from(b.import_key)),
        ];
        let batch = RecordBatch::try_from_iter(COLUMNS.into_iter().zip(columns)).map_err(to_err)?;
        let mut app = conn.appender("journal_rows")?;
        app.append_record_batch(batch)?;
        app.flush()
    }
}

/// `journal_rows`' columns, in order.
const COLUMNS: [&str; 11] = [
    "ts",
    "url",
    "route",
    "key_hash",
    "codes",
    "bytes",
    "origin_us",
    "total_us",
    "ttl_s",
    "client",
    "import_key",
];

/// Writes the rows since `since` (UTC midnight of that date) as Parquet files partitioned by
/// day (`date=YYYY-MM-DD/`) under `dir`; returns the rows written.
pub fn export_parquet(conn: &Connection, since: &str, dir: &Path) -> Result<u64, JournalError> {
    let d = dir.to_string_lossy().replace('\'', "''");
    let sql = format!(
        "COPY (SELECT * EXCLUDE (seq), strftime(ts, '%Y-%m-%d') AS date FROM journal \
         WHERE ts >= CAST(? AS DATE)) TO '{d}' \
         (FORMAT PARQUET, PARTITION_BY (date), OVERWRITE_OR_IGNORE, FILENAME_PATTERN 'part-{{uuid}}')"
    );
    conn.execute(&sql, params![since])
        .map(|n| n as u64)
        .map_err(|e| JournalError::Query(e.to_string()))
}
