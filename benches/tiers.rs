//! Lower-tier benchmarks: L2 (a real `redis-server` started here) and L3 (a real DuckDB file)
//! hit latency p50/p99 and throughput through `TieredStore::get_lower` (lookup, decode and
//! promotion into L1, as a request does), L3 at 100k and 1M entries, batched L3 writes, and the
//! access journal's rows/s (record, append, until flushed and checkpointed) on one thread.
//!
//!   cargo bench --bench tiers                 # full run (1M entries takes a few minutes)
//!   TIERD_BENCH_L3_SIZES=100000 cargo bench --bench tiers
//!
//! Under `cargo test` it runs a small smoke version of the same code.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use bytes::Bytes;
use tierd::cache::codec;
use tierd::cache::entry::{CachedResponse, Slot};
use tierd::clock::{Clock, SystemClock};
use tierd::metrics::Metrics;
use tierd::store::{
    DuckOptions, DuckTier, MemoryTier, Record, RedisOptions, RedisTier, StoreRuntime, Tier,
    TierSet, TieredStore,
};

// The integration tests' Redis fixture and the port picker it needs, not their whole kit. The
// tests use every item; this bench only some, hence the allowances.
#[allow(dead_code)]
#[path = "../tests/it/common/external.rs"]
mod external;
#[allow(dead_code)]
#[path = "../tests/it/common/redis.rs"]
mod redis;
use external::free_port;

use redis::RedisServer;

const BODY: usize = 1024;

fn slot(i: usize, now: SystemTime) -> Slot {
    let body = format!("{{\"id\":{i},\"pad\":\"{}\"}}", "x".repeat(BODY - 20));
    let entry = CachedResponse {
        status: StatusCode::OK,
        headers: vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=3600"),
            ),
            (header::ETAG, HeaderValue::from_static("\"abc123\"")),
        ]
        .into_boxed_slice(),
        body: Bytes::from(body),
        response_time: now,
        initial_age: 0,
        lifetime: 3600,
        stale_while_revalidate: 0,
        stale_if_error: 0,
        no_cache: false,
        no_stale: false,
        etag: Some(HeaderValue::from_static("\"abc123\"")),
        origin_etag: true,
        last_modified: None,
        vary: Box::new([]),
        tags: Box::new([]),
        encoded: None,
    };
    Slot::single(
        Arc::new(entry),
        now,
        tierd::cache::entry::Retention {
            keep_stale: Duration::from_secs(3600),
            stale_on_error: Duration::from_secs(60),
        },
    )
}

fn record(i: usize, now: SystemTime) -> Record {
    let s = slot(i, now);
    let until = now + s.keep_for;
    Record {
        bytes: codec::encode(&s, until, until),
        expires_at_ms: codec::millis(until),
        ttl: s.keep_for,
        tags: Vec::new().into(),
    }
}

fn key(i: usize) -> String {
    format!("bench.example/api/items/{i}?page=1")
}

/// Queues `n` records, retrying when the queue is full, and waits until they are stored.
async fn fill(tier: &Arc<dyn Tier>, rt: &tokio::runtime::Handle, n: usize) -> f64 {
    let now = SystemTime::now();
    let started = Instant::now();
    for i in 0..n {
        let mut r = record(i, now);
        loop {
            match tier.put(key(i), r) {
                Ok(()) => break,
                Err(_) => {
                    r = record(i, now);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    let t = tier.clone();
    rt.spawn(async move { t.delete("barrier").await })
        .await
        .expect("join")
        .expect("barrier");
    n as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Sequential lookups of random keys: p50/p99. Then `concurrency` tasks for `secs`: lookups/s.
async fn measure(
    store: &Arc<TieredStore>,
    n: usize,
    lookups: usize,
    concurrency: usize,
    secs: u64,
) -> String {
    let mut lat = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let k = key(fastrand::usize(..n));
        let t = Instant::now();
        let hit = store.get_lower(&k, TierSet::ALL).await;
        lat.push(t.elapsed());
        assert!(hit.is_some(), "{k} missing");
    }
    lat.sort();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let store = store.clone();
            tokio::task::spawn_local(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let _ = store
                        .get_lower(&key(fastrand::usize(..n)), TierSet::ALL)
                        .await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    format!(
        "p50={:.1}us p99={:.1}us throughput={:.0}/s (concurrency {concurrency})",
        percentile(&lat, 0.5).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
        total as f64 / started.elapsed().as_secs_f64(),
    )
}

fn store_with(tier: Arc<dyn Tier>, rt: StoreRuntime, metrics: Arc<Metrics>) -> Arc<TieredStore> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // A tiny L1, so promotions do not turn the measured lookups into memory hits.
    let l1 = MemoryTier::new(1024 * 1024, metrics.clone());
    Arc::new(
        TieredStore::new(l1, clock, metrics)
            .with_runtime(rt)
            .with_tier(tier, Duration::from_secs(86_400)),
    )
}

async fn bench_l2(full: bool) {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("l2: redis-server not found; skipped");
        return;
    }
    let redis = RedisServer::start();
    let rt = StoreRuntime::new(2).expect("runtime");
    let handle = rt.handle();
    let metrics = Arc::new(Metrics::new());
    let opts = RedisOptions {
        urls: vec![redis.url()],
        cluster: false,
        ca_file: None,
        pool_size: 8,
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
        key_prefix: "bench".into(),
        queue_capacity: 10_000,
        queue_max_bytes: 1 << 30,
        failure_threshold: 5,
        open_for: Duration::from_secs(1),
        max_ttl: Duration::from_secs(3600),
    };
    let tier: Arc<dyn Tier> =
        Arc::new(RedisTier::new(&opts, metrics.clone(), &handle).expect("l2"));
    let n = if full { 100_000 } else { 1_000 };
    let rate = fill(&tier, &handle, n).await;
    let store = store_with(tier, rt, metrics);
    let (lookups, secs) = if full { (20_000, 5) } else { (200, 1) };
    println!("l2 entries={n} writes={rate:.0}/s");
    println!("l2 hit {}", measure(&store, n, lookups, 64, secs).await);
    store.close().await;
}

async fn bench_l3(full: bool) {
    let sizes: Vec<usize> = match std::env::var("TIERD_BENCH_L3_SIZES") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) if full => vec![100_000, 1_000_000],
        Err(_) => vec![2_000],
    };
    for n in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = StoreRuntime::new(2).expect("runtime");
        let handle = rt.handle();
        let metrics = Arc::new(Metrics::new());
        let opts = DuckOptions {
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(600),
            queue_max_bytes: usize::MAX,
            ..DuckOptions::new(dir.path().join("bench.duckdb"), u64::MAX)
        };
        let open = || -> Arc<dyn Tier> {
            Arc::new(
                DuckTier::open(&opts, Arc::new(SystemClock), metrics.clone(), &handle).expect("l3"),
            )
        };
        // Rows/s until they are in the file: the closing checkpoint (whatever the WAL still
        // holds) counts, so a setting that only defers work to the checkpoint cannot look fast.
        let started = Instant::now();
        let tier = open();
        let _ = fill(&tier, &handle, n).await;
        let t = tier.clone();
        handle
            .spawn(async move { t.close().await })
            .await
            .expect("join");
        drop(tier);
        let rate = n as f64 / started.elapsed().as_secs_f64();
        let file = std::fs::metadata(&opts.path).map(|m| m.len()).unwrap_or(0);
        println!(
            "l3 entries={n} batched writes={rate:.0}/s (checkpointed) file={:.0}MiB",
            file as f64 / 1048576.0
        );
        let tier = open();
        let store = store_with(tier, rt, metrics);
        let (lookups, secs) = if full { (20_000, 5) } else { (200, 1) };
        println!(
            "l3 entries={n} hit {}",
            measure(&store, n, lookups, 16, secs).await
        );
        store.close().await;
    }
}

/// The journal's rows/s: `n` rows recorded as the request path does, in rounds of 100,000 that
/// the writer takes as it would under steady load (the queue as configured by default, rows
/// gathered while it lingers), until the writer has appended them all and closed the file (its
/// last checkpoint included); and the process's CPU time per row (run it on one core,
/// `taskset -c 1`, to see the writer's cost as the request path would feel it).
async fn bench_journal(full: bool) {
    use tierd::journal::{Journal, JournalMetrics, JournalOptions, Row};
    use tierd::metrics::{MethodLabel, Outcome};
    let n: usize = std::env::var("TIERD_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 2_000_000 } else { 20_000 });
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(JournalMetrics::register(&prometheus::Registry::new()));
    let mut o = JournalOptions::new(dir.path().join("journal.duckdb"));
    o.queue_capacity = 131_072;
    let cpu_before = cpu_seconds();
    let journal = Journal::open(o, Arc::new(SystemClock), metrics.clone()).expect("journal");
    let route: Arc<str> = Arc::from("/api/items/{id}");
    let urls: Vec<String> = (0..1000)
        .map(|i| format!("api.example/api/items/{i}?view=full"))
        .collect();
    let started = Instant::now();
    for i in 0..n {
        if i % 100_000 == 0 && i > 0 {
            journal.flush(Duration::from_secs(30)).await.expect("flush");
        }
        let Some(url) = journal.url(&urls[i % urls.len()]) else {
            continue;
        };
        journal.record(Row {
            at: SystemTime::now(),
            method: MethodLabel::Get,
            url,
            route: route.clone(),
            status: 200,
            outcome: if i % 10 == 0 {
                Outcome::Miss
            } else {
                Outcome::Hit
            },
            bypassed: false,
            tier: (i % 10 != 0).then_some(tierd::types::TierName::L1),
            bytes: 1024,
            origin: (i % 10 == 0).then_some(Duration::from_millis(12)),
            total: Duration::from_micros(150),
            ttl: Some(Duration::from_secs(300)),
            peer: Some(std::net::IpAddr::from([
                10,
                0,
                (i / 256 % 256) as u8,
                (i % 256) as u8,
            ])),
            user_scoped: false,
            warm_fetch: false,
            warmed: false,
            import_key: None,
        });
    }
    let recorded = started.elapsed();
    journal.close().await;
    let total = started.elapsed();
    let file = std::fs::metadata(dir.path().join("journal.duckdb"))
        .map(|m| m.len())
        .unwrap_or(0);
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "journal rows={n} record+write={:.0} ns/row cpu={:.0} ns/row (appends {:.0} ns/row) written={:.0} rows/s (until closed) dropped={} file={:.1} bytes/row",
        recorded.as_nanos() as f64 / n as f64,
        cpu * 1e9 / n as f64,
        metrics.write_seconds.get_sample_sum() * 1e9 / n as f64,
        metrics.written_total() as f64 / total.as_secs_f64(),
        metrics.dropped_total(),
        file as f64 / n as f64,
    );
}

/// User and system CPU seconds of this process so far (every thread).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields 14 and 15 (utime, stime) in clock ticks, counted after the command's ')'.
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    // `cargo bench --bench tiers -- journal` runs only the benches whose name holds a word given.
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| words.is_empty() || words.iter().any(|w| name.contains(w.as_str()));
    local.block_on(&rt, async {
        if run("journal") {
            bench_journal(full).await;
        }
        if run("l2") {
            bench_l2(full).await;
        }
        if run("l3") {
            bench_l3(full).await;
        }
    });
}
