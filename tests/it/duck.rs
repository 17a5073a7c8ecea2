//! The DuckDB tier on its own, on real files: ordering of queued writes, the size cap (expired
//! entries first, then least recently used), purge by prefix, and files it must refuse.

use std::path::Path;

use crate::common::scrape::Scrape;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tierd::cache::codec::millis;
use tierd::clock::{Clock, ManualClock};
use tierd::metrics::Metrics;
use tierd::policy::{path_tag, Selector};
use tierd::store::{DuckOptions, DuckTier, Record, StoreRuntime, Tier};

const ROW: usize = 8 * 1024;

fn options(path: &Path, max_bytes: u64) -> DuckOptions {
    DuckOptions {
        queue_capacity: 10_000,
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(30),
        ..DuckOptions::new(path, max_bytes)
    }
}

fn record(clock: &ManualClock, byte: u8, ttl_secs: u64, tags: Vec<String>) -> Record {
    let ttl = Duration::from_secs(ttl_secs);
    Record {
        bytes: Bytes::from(vec![byte; ROW]),
        expires_at_ms: millis(clock.now() + ttl),
        ttl,
        tags: tags.into(),
    }
}

/// Keys look like the cache's: a host, then the test's name as the path.
fn k(name: &str) -> String {
    format!("h/{name}")
}

struct Fixture {
    rt: StoreRuntime,
    clock: Arc<ManualClock>,
    metrics: Arc<Metrics>,
    tier: Arc<DuckTier>,
}

impl Fixture {
    fn open(path: &Path, max_bytes: u64) -> Fixture {
        Self::open_with(options(path, max_bytes))
    }

    fn open_with(opts: DuckOptions) -> Fixture {
        let rt = StoreRuntime::new(2).unwrap();
        let clock = Arc::new(ManualClock::new());
        let metrics = Arc::new(Metrics::new());
        let tier =
            DuckTier::open(&opts, clock.clone(), metrics.clone(), &rt.handle()).expect("open");
        Fixture {
            rt,
            clock,
            metrics,
            tier: Arc::new(tier),
        }
    }

    fn put(&self, key: &str, byte: u8, ttl_secs: u64) {
        self.put_tagged(key, byte, ttl_secs, &[]);
    }

    fn put_tagged(&self, key: &str, byte: u8, ttl_secs: u64, tags: &[&str]) {
        let mut all = vec![path_tag(&format!("/{key}"))];
        all.extend(tags.iter().map(|t| t.to_string()));
        self.tier
            .put(k(key), record(&self.clock, byte, ttl_secs, all))
            .expect("accepted");
    }

    fn purge(&self, selector: Selector) -> u64 {
        let t = self.tier.clone();
        self.rt
            .handle()
            .block_on(async move { t.purge(&selector).await })
            .expect("purge")
    }

    fn get(&self, key: &str) -> Option<Bytes> {
        let t = self.tier.clone();
        let k = k(key);
        self.rt
            .handle()
            .block_on(async move { t.get(&k).await })
            .expect("get")
    }

    /// A delete waits until everything queued before it is applied: a barrier.
    fn delete(&self, key: &str) {
        let t = self.tier.clone();
        let k = k(key);
        self.rt
            .handle()
            .block_on(async move { t.delete(&k).await })
            .expect("delete");
    }

    fn close(self) {
        let t = self.tier.clone();
        self.rt.handle().block_on(async move { t.close().await });
    }
}

#[test]
fn queued_writes_apply_in_order_and_reads_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::open(&dir.path().join("order.duckdb"), 1 << 30);
    for i in 0..500 {
        f.put(&format!("k{i}"), (i % 251) as u8, 600);
    }
    f.put("then-deleted", 1, 600);
    f.delete("then-deleted");
    f.delete("deleted-then-put");
    f.put("deleted-then-put", 9, 600);
    f.put("twice", 1, 600);
    f.put("twice", 2, 600);
    f.delete("barrier");
    assert_eq!(f.get("then-deleted"), None);
    assert_eq!(f.get("deleted-then-put").unwrap()[0], 9);
    assert_eq!(f.get("twice").unwrap()[0], 2, "the last write wins");
    assert_eq!(f.get("k7").unwrap(), Bytes::from(vec![7u8; ROW]));
    assert_eq!(f.get("never"), None);
    let stats = f.tier.stats().unwrap();
    assert_eq!(stats.entries, 502);

    let purged = f.purge(Selector::Prefix {
        host: None,
        prefix: "/k1".into(),
    });
    // k1, k10..k19, k100..k199
    assert_eq!(purged, 1 + 10 + 100);
    assert_eq!(f.get("k150"), None);
    assert!(f.get("k250").is_some());
    // Another host's prefix selects nothing here.
    let other = Selector::Prefix {
        host: Some("other".into()),
        prefix: "/k2".into(),
    };
    assert_eq!(f.purge(other), 0);
    assert!(f.get("k250").is_some());

    // Tags select whole tags only, and a URL selects its path's entries.
    f.put_tagged("a", 1, 600, &["assessment:1", "all"]);
    f.put_tagged("b", 1, 600, &["assessment:10", "all"]);
    f.put_tagged("c", 1, 600, &["other"]);
    assert_eq!(f.purge(Selector::Tag("assessment:1".into())), 1);
    assert_eq!((f.get("a"), f.get("b").is_some()), (None, true));
    assert_eq!(f.purge(Selector::Tag("all".into())), 1);
    assert_eq!(f.get("b"), None);
    let url = Selector::Url {
        host: Some("h".into()),
        path: "/c".into(),
        query: None,
    };
    assert_eq!(f.purge(url), 1);
    assert_eq!(f.get("c"), None);
    f.close();
}

#[test]
fn over_the_cap_expired_entries_go_first_then_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 1024 * 1024;
    let f = Fixture::open(&dir.path().join("cap.duckdb"), cap);
    let row = |name: &str, i: usize| format!("{name}-{i}");
    for i in 0..40 {
        f.put(&row("old", i), 1, 10);
    }
    for i in 0..40 {
        f.put(&row("hot", i), 2, 1000);
    }
    f.delete("barrier");
    // The old entries expire; ten of the hot ones are read (more recently used than the rest).
    f.clock.advance(Duration::from_secs(20));
    for i in 0..10 {
        assert!(f.get(&row("hot", i)).is_some());
    }
    for i in 0..60 {
        f.put(&row("new", i), 3, 1000);
    }
    f.delete("barrier");
    let evicted = |cause: &str| {
        let labels = [("tier", "l3"), ("cause", cause)];
        Scrape::from_text(f.metrics.render()).sum("tierd_tier_evictions_total", &labels) as u64
    };
    assert_eq!(evicted("expired"), 40, "expired entries went first");
    assert_eq!(evicted("size"), 0, "that was enough");
    assert!((0..40).all(|i| f.get(&row("old", i)).is_none()));
    // (Reading the hot entries here would refresh their access times; count them instead.)
    assert_eq!(f.tier.stats().unwrap().entries, 40 + 60);

    // Over the cap again with nothing expired: the least recently used go, down to 90%.
    for i in 0..40 {
        f.put(&row("more", i), 4, 1000);
    }
    f.delete("barrier");
    let size_evicted = evicted("size");
    assert!(size_evicted > 0);
    // Eviction frees down to 90% when a batch crosses the cap; batches after it may fill up to
    // the cap again (how the writer splits the puts into batches is its own business).
    let stats = f.tier.stats().unwrap();
    assert!(stats.bytes <= cap, "{stats:?}");
    assert!(
        (0..10).all(|i| f.get(&row("hot", i)).is_some()),
        "recently read entries stay"
    );
    assert!((0..60).all(|i| f.get(&row("new", i)).is_some()));
    assert!((0..40).all(|i| f.get(&row("more", i)).is_some()));
    let gone = (10..40)
        .filter(|i| f.get(&row("hot", *i)).is_none())
        .count();
    assert_eq!(
        gone as u64, size_evicted,
        "only the least recently used went"
    );
    f.close();
}

#[test]
fn entries_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("persist.duckdb");
    let f = Fixture::open(&path, 1 << 30);
    f.put("kept", 5, 600);
    f.close();
    let g = Fixture::open(&path, 1 << 30);
    assert_eq!(g.get("kept").unwrap()[0], 5);
    assert_eq!(g.tier.stats().unwrap().entries, 1);
    g.close();
}

#[test]
fn a_file_with_another_schema_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.duckdb");
    {
        let conn = duckdb::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE tierd_meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
             INSERT INTO tierd_meta VALUES ('schema', '99');",
        )
        .unwrap();
    }
    let rt = StoreRuntime::new(1).unwrap();
    let err = DuckTier::open(
        &options(&path, 1 << 30),
        Arc::new(ManualClock::new()),
        Arc::new(Metrics::new()),
        &rt.handle(),
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("schema version 99"), "{err}");
    let conn = duckdb::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'entries'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        tables, 0,
        "nothing was created in a file tierd does not own"
    );
}

/// A schema-1 file (before tags) is migrated in place: its rows stay readable and can be
/// purged by their path.
#[test]
fn a_schema_1_file_is_migrated_and_its_rows_purge_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.duckdb");
    let clock = ManualClock::new();
    let far = millis(clock.now() + Duration::from_secs(600));
    {
        let conn = duckdb::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE tierd_meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
             INSERT INTO tierd_meta VALUES ('schema', '1');
             CREATE TABLE entries (key_hash UBIGINT PRIMARY KEY, cache_key VARCHAR NOT NULL,
                 expires_at UBIGINT NOT NULL, last_access UBIGINT NOT NULL,
                 size UBIGINT NOT NULL, value BLOB NOT NULL);",
        )
        .unwrap();
        for key in ["h/old?x=1", "h/old", "h/older"] {
            conn.execute(
                "INSERT INTO entries VALUES (?, ?, ?, 0, 10, ?)",
                duckdb::params![tierd::store::key_hash(key), key, far, &b"v"[..]],
            )
            .unwrap();
        }
    }
    let f = Fixture::open(&path, 1 << 30);
    assert_eq!(f.get("old?x=1").as_deref(), Some(&b"v"[..]));
    let purged = f.purge(Selector::Url {
        host: None,
        path: "/old".into(),
        query: None,
    });
    assert_eq!(purged, 2, "both queries of /old, not /older");
    assert!(f.get("older").is_some());
    f.close();
}

/// Issue: with churn under the size cap the file grew to 2.9x `max_bytes`: DuckDB's checkpoints
/// rewrite the rows around deleted ones into new blocks and reuse little of the old. 120 MiB of
/// 10 KiB rows through a 16 MiB cap (each wave evicts as much as it writes): without compaction
/// the file passes 3x the cap; with it, it is compacted whenever it passes 1.5x, the newest
/// rows read back, and it ends within 1.5x the cap.
#[test]
fn churn_under_the_cap_keeps_the_file_within_one_and_a_half_times_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("churn.duckdb");
    let cap: u64 = 16 << 20;
    let rt = StoreRuntime::new(2).unwrap();
    let clock = Arc::new(ManualClock::new());
    let metrics = Arc::new(Metrics::new());
    let opts = DuckOptions {
        queue_max_bytes: usize::MAX,
        ..options(&path, cap)
    };
    let tier =
        Arc::new(DuckTier::open(&opts, clock.clone(), metrics.clone(), &rt.handle()).unwrap());
    let f = Fixture {
        rt,
        clock,
        metrics,
        tier,
    };
    let size = || {
        let s = |p: std::path::PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        s(path.clone()) + s(dir.path().join("churn.duckdb.wal"))
    };
    let row = vec![7u8; 10 * 1024];
    for wave in 0..12 {
        for i in 0..1000 {
            let key = k(&format!("w{wave}-{i}"));
            let record = Record {
                bytes: Bytes::from(row.clone()),
                expires_at_ms: millis(f.clock.now() + Duration::from_secs(3600)),
                ttl: Duration::from_secs(3600),
                tags: vec![path_tag(&format!("/w{wave}-{i}"))].into(),
            };
            f.tier.put(key, record).expect("accepted");
        }
        f.delete("barrier");
        // Each wave is newer than the last, for LRU.
        f.clock.advance(Duration::from_secs(1));
    }
    let limit = cap * 3 / 2;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while size() > limit && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let compactions =
        Scrape::from_text(f.metrics.render()).sum("tierd_l3_compactions_total", &[]) as u64;
    assert!(compactions >= 1, "the file was compacted");
    assert!(
        size() <= limit,
        "file {} bytes against a cap of {cap} (limit {limit})",
        size()
    );
    assert_eq!(
        f.get("w11-999").unwrap().len(),
        10 * 1024,
        "newest rows survive"
    );
    let stats = f.tier.stats().unwrap();
    assert!(stats.bytes <= cap, "{stats:?}");
    f.close();
}

/// Group commit (`commit_linger`): queued writes wait to be committed together, and are not
/// in the file meanwhile; a delete (anything a caller waits on) ends the wait, applied after
/// every write queued before it.
#[test]
fn group_commit_holds_writes_until_a_delete_or_the_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("linger.duckdb");
    let f = Fixture::open_with(DuckOptions {
        commit_linger: Duration::from_secs(60),
        ..options(&path, 1 << 30)
    });
    let written = |f: &Fixture| {
        Scrape::from_text(f.metrics.render()).sum(
            "tierd_tier_writes_total",
            &[("tier", "l3"), ("outcome", "written")],
        )
    };
    for i in 0..5 {
        f.put(&format!("g{i}"), 7, 600);
    }
    assert!(f.get("g0").is_none(), "held, not yet in the file");
    assert_eq!(written(&f), 0.0);
    let started = std::time::Instant::now();
    f.delete("g4");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the delete ended the wait"
    );
    assert_eq!(written(&f), 4.0);
    for i in 0..4 {
        assert!(f.get(&format!("g{i}")).is_some(), "g{i} committed");
    }
    assert!(f.get("g4").is_none(), "the delete came after its put");
    // Writes held at close are committed by the close.
    f.put("late", 9, 600);
    f.close();
    let f = Fixture::open(&path, 1 << 30);
    assert!(f.get("late").is_some(), "committed at close");
    f.close();
}
