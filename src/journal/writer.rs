//! The journal's file and its writer thread: schema, batched appends, retention, the size cap,
//! and the Parquet export.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use duckdb::{params, Connection};
use tokio::sync::oneshot;

use super::row::split_key;
use super::schema::{codes, migrate, view_sql, SCHEMA, SCHEMA_VERSION};
use super::{JournalError, JournalMetrics, JournalOptions, JournalOutcome, Msg, Row};
use crate::clock::Clock;
use crate::log_limit::{LogLimit, DEFAULT_LOG_INTERVAL};
use std::net::IpAddr;

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
    // on this database, and nothing it does needs more.
    let config = duckdb::Config::default()
        .threads(2)
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
/// again once, a no-op for the file).
const MAX_KNOWN_URLS: usize = 1 << 20;

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
        &self,
        rx: &Receiver<Msg>,
        batch: &mut Vec<Row>,
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
        &self,
        m: Msg,
        batch: &mut Vec<Row>,
        acks: &mut Vec<oneshot::Sender<()>>,
        stop: &mut Option<oneshot::Sender<()>>,
    ) {
        match m {
            Msg::Row(r) => batch.push(r),
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

/// The client's hash: its per-user scope value if any, else its address, keyed with `salt`.
fn client_hash(user: Option<&str>, peer: Option<IpAddr>, salt: u64) -> u64 {
    use xxhash_rust::xxh3::xxh3_64_with_seed as h;
    match (user, peer) {
        (Some(u), _) => h(u.as_bytes(), salt),
        (None, Some(IpAddr::V4(a))) => h(&a.octets(), salt),
        (None, Some(IpAddr::V6(a))) => h(&a.octets(), salt),
        (None, None) => 0,
    }
}

impl Writer {
    /// Appends `rows` as one Arrow batch (column by column: no per-value conversions), after
    /// the URLs and routes not written before.
    pub(super) fn append(&mut self, rows: &[Row]) -> duckdb::Result<()> {
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
        let n = rows.len();
        let (mut new_hash, mut new_host, mut new_target) =
            (Vec::new(), StringBuilder::new(), StringBuilder::new());
        let mut ts = Vec::with_capacity(n);
        let mut url = Vec::with_capacity(n);
        let mut route = Vec::with_capacity(n);
        let mut key_hash = Vec::with_capacity(n);
        let mut code = Vec::with_capacity(n);
        let mut bytes = Vec::with_capacity(n);
        let mut origin_us = Vec::with_capacity(n);
        let mut total_us = Vec::with_capacity(n);
        let mut ttl_s = Vec::with_capacity(n);
        let mut client = Vec::with_capacity(n);
        let mut import_key = Vec::with_capacity(n);
        if self.known_urls.len() > MAX_KNOWN_URLS {
            self.known_urls.clear();
        }
        let us = |d: Duration| d.as_micros().min(u128::from(u32::MAX - 1)) as u32;
        for r in rows {
            let (h, t, user) = split_key(&r.url);
            let plain = &r.url[..h.len() + t.len()];
            let u = xxhash_rust::xxh3::xxh3_64(plain.as_bytes());
            if self.known_urls.insert(u) {
                new_hash.push(u);
                new_host.append_value(h);
                new_target.append_value(t);
            }
            url.push(u);
            let id = match self.routes.get(&r.route) {
                Some(c) => *c,
                None => {
                    let id = code_of(conn, "journal_routes", "route", &r.route)?;
                    self.routes.insert(r.route.clone(), id);
                    id
                }
            };
            route.push(id);
            ts.push(micros(r.at));
            // The cache key is the plain URL unless it carries keyed headers or a user scope.
            key_hash.push(if plain.len() == r.url.len() {
                0
            } else {
                crate::store::key_hash(&r.url)
            });
            let o = JournalOutcome::of(r.outcome, r.bypassed);
            let tier = match r.tier {
                Some(t) => t as u32 + 1,
                None if r.origin.is_some()
                    && matches!(
                        o,
                        JournalOutcome::Miss | JournalOutcome::Pass | JournalOutcome::Bypass
                    ) =>
                {
                    4
                }
                None => 0,
            };
            let shared = !r.user_scoped
                && matches!(
                    o,
                    JournalOutcome::Hit
                        | JournalOutcome::Stale
                        | JournalOutcome::Miss
                        | JournalOutcome::Revalidated
                );
            code.push(
                codes::put(codes::STATUS, u32::from(r.status))
                    | codes::put(codes::METHOD, r.method as u32)
                    | codes::put(codes::OUTCOME, o as u32)
                    | codes::put(codes::CACHE_STATUS, r.outcome as u32)
                    | codes::put(codes::TIER, tier)
                    | codes::put(codes::SOURCE, u32::from(r.import_key.is_some()))
                    | codes::put(codes::USER_SCOPED, u32::from(r.user_scoped))
                    | codes::put(codes::SHARED, u32::from(shared))
                    | codes::put(codes::WARMED, u32::from(r.warmed)),
            );
            bytes.push(r.bytes);
            origin_us.push(r.origin.map_or(0, |d| us(d).saturating_add(1)));
            total_us.push(us(r.total));
            ttl_s.push(
                r.ttl
                    .map_or(-1, |d| d.as_secs().min(i32::MAX as u64) as i32),
            );
            client.push(client_hash(user, r.peer, self.salt));
            import_key.push(r.import_key.unwrap_or(0));
        }
        let to_err = |e: duckdb::arrow::error::ArrowError| {
            duckdb::Error::InvalidParameterName(e.to_string())
        };
        if !new_hash.is_empty() {
            let batch = RecordBatch::try_from_iter([
                ("hash", Arc::new(UInt64Array::from(new_hash)) as ArrayRef),
                ("host", Arc::new(new_host.finish()) as ArrayRef),
                ("target", Arc::new(new_target.finish()) as ArrayRef),
            ])
            .map_err(to_err)?;
            let mut app = conn.appender("journal_urls_new")?;
            app.append_record_batch(batch)?;
            app.flush()?;
            drop(app);
            conn.execute_batch(
                "INSERT OR IGNORE INTO journal_urls SELECT * FROM journal_urls_new;
                 DELETE FROM journal_urls_new;",
            )?;
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(ts)),
            Arc::new(UInt64Array::from(url)),
            Arc::new(UInt32Array::from(route)),
            Arc::new(UInt64Array::from(key_hash)),
            Arc::new(UInt32Array::from(code)),
            Arc::new(UInt64Array::from(bytes)),
            Arc::new(UInt32Array::from(origin_us)),
            Arc::new(UInt32Array::from(total_us)),
            Arc::new(Int32Array::from(ttl_s)),
            Arc::new(UInt64Array::from(client)),
            Arc::new(UInt64Array::from(import_key)),
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
