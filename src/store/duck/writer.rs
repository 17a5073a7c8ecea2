//! The L3 writer: one thread that applies the write queue to the DuckDB file in batches,
//! expires and evicts rows, checkpoints, compacts the file, and reopens it after a failure.

use super::*;

/// The final operation on one key within a batch.
pub(super) enum Final {
    Put(String, Record),
    Delete,
}

pub(super) type Ack = oneshot::Sender<Result<(), TierError>>;

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) pool: Arc<Pool>,
    pub(super) opts: DuckOptions,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) max_bytes: u64,
    pub(super) last_expire: Instant,
    pub(super) last_checkpoint: Instant,
    /// Written since the last checkpoint.
    pub(super) dirty: bool,
    /// The file's size after the last compaction (0: none yet).
    pub(super) compacted_size: u64,
    /// The shared counts include estimates since the last exact count.
    pub(super) estimated: bool,
    /// Set while the database is invalidated and being reopened.
    pub(super) outage: Option<Outage>,
    /// For the group-commit wait (a timed receive on the queue).
    pub(super) rt: tokio::runtime::Handle,
}

/// An invalidated database being reopened.
pub(super) struct Outage {
    pub(super) since: Instant,
    pub(super) next_try: Instant,
    pub(super) backoff: Duration,
    /// Writes dropped meanwhile.
    pub(super) dropped: u64,
}

/// Batch failures repeat while the cause lasts: one line per interval.
pub(super) static BATCH_FAILED: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);

impl Writer {
    /// Runs on its own thread (no async runtime needed) until the queue is closed and drained.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Op>, finished: Finished) {
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
    pub(super) fn linger(
        &self,
        rx: &mut mpsc::Receiver<Op>,
        batch: &mut Vec<Op>,
        mut bytes: usize,
    ) {
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
    pub(super) fn check_fatal(&mut self, e: &dyn std::fmt::Display) -> bool {
        let msg = e.to_string();
        if self.outage.is_none() && is_fatal(&msg) {
            self.invalidated(&msg);
        }
        self.outage.is_some()
    }

    /// DuckDB invalidated the database: one ERROR line, every connection closed, lookups fail
    /// fast, and the file is reopened with backoff.
    pub(super) fn invalidated(&mut self, error: &str) {
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
    pub(super) fn close_connections(&mut self) {
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
    pub(super) fn drop_batch(&mut self, batch: &mut Vec<Op>) {
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
    pub(super) fn open_again(&mut self) -> Result<u64, TierError> {
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
    pub(super) fn try_reopen(&mut self) {
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
    pub(super) fn apply(&mut self, batch: &mut Vec<Op>) -> bool {
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

    pub(super) fn commit(&mut self, pending: &mut HashMap<u64, Final>, acks: &mut Vec<Ack>) {
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

    pub(super) fn write_batch(
        &mut self,
        pending: &HashMap<u64, Final>,
        now: u64,
    ) -> duckdb::Result<()> {
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

    /// Deletes the rows `selector` selects: candidates by SQL (the tag index, or the prefix or
    /// user scope in the key), then the exact match on the parsed key.
    pub(super) fn purge(&mut self, selector: &Selector) -> duckdb::Result<u64> {
        if *selector == Selector::All {
            let n = self.conn.execute("DELETE FROM entries", [])?;
            return Ok(n as u64);
        }
        let candidates: Vec<(u64, String)> = {
            let (sql, arg) = match selector {
                // By the key rather than the tags, so rows written before keys' user scopes
                // were indexed as tags are found too (the scan costs the same).
                Selector::User(digest) => (
                    "SELECT key_hash, cache_key FROM entries WHERE contains(cache_key, ?)",
                    format!(" u:{digest}"),
                ),
                Selector::Prefix { prefix, .. } => (
                    "SELECT key_hash, cache_key FROM entries WHERE contains(cache_key, ?)",
                    prefix.clone(),
                ),
                _ => match selector.index_tag() {
                    Some(tag) => (
                        "SELECT key_hash, cache_key FROM entries WHERE contains(tags, ?)",
                        format!("\n{tag}\n"),
                    ),
                    None => return Ok(0),
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

    pub(super) fn recount(&mut self) {
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
    pub(super) fn tick(&mut self) {
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
    pub(super) fn checkpoint_if_due(&mut self) {
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
    pub(super) fn file_bytes(&self) -> u64 {
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        size(&self.opts.path) + size(&wal_path(&self.opts.path))
    }

    /// Past `COMPACT_AT_PERCENT` of `max_bytes` on disk, rewrites the live rows into a fresh
    /// file and swaps it in. Not again before the file has grown a quarter past what the last
    /// compaction left (rows whose storage outweighs their counted size would loop otherwise).
    pub(super) fn compact_if_bloated(&mut self) {
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
                self.metrics.store.l3_compactions.inc();
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
    pub(super) fn compact(&mut self) -> Result<(), TierError> {
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

    pub(super) fn flush_touches(&mut self) {
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

    pub(super) fn write_touches(&mut self, touches: &[(u64, u64)]) -> duckdb::Result<()> {
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

    pub(super) fn delete_expired(&mut self) -> u64 {
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
    pub(super) fn enforce_cap(&mut self) {
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
