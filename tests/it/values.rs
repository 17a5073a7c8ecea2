//! The value cache (`get_or_compute`) through real tiers: single flight, TTLs, errors not stored,
//! invalidation by key, prefix and tag, a second node reading from Redis and hearing purges,
//! and a restart finding the value in the DuckDB file.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tierd::cache::{ValueCache, ValueOptions};
use tierd::clock::ManualClock;
use tierd::config::Settings;

use crate::common::{self, eventually, redis::RedisServer};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Stats {
    id: u32,
    total: u64,
}

fn l1_only() -> Settings {
    let mut s = Settings::default();
    s.tiers.l2.enabled = false;
    s.tiers.l3.enabled = false;
    s
}

fn values(
    settings: &Settings,
    clock: &Arc<ManualClock>,
) -> (ValueCache, Arc<tierd::cache::CacheState>) {
    let state = tierd::Cache::builder()
        .settings(settings.clone())
        .clock(clock.clone())
        .build()
        .expect("cache")
        .state()
        .clone();
    (ValueCache::new(state.clone()), state)
}

#[actix_web::test]
async fn five_concurrent_callers_share_one_computation_until_the_ttl_ends() {
    let clock = Arc::new(ManualClock::new());
    let (cache, _state) = values(&l1_only(), &clock);
    let runs = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let caller = |n: u64| {
        let (cache, runs, started) = (cache.clone(), runs.clone(), started.clone());
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            cache
                .get_or_compute("stats:7", ValueOptions::secs(60), || async move {
                    // Computes only once every caller is waiting (they all run in this task).
                    while started.load(Ordering::SeqCst) < 5 {
                        tokio::task::yield_now().await;
                    }
                    runs.fetch_add(1, Ordering::SeqCst);
                    Stats {
                        id: 7,
                        total: 100 + n,
                    }
                })
                .await
        }
    };
    let got = futures_util::future::join_all((0..5).map(caller)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one computation for five callers"
    );
    assert!(got.iter().all(|s| *s == got[0]), "{got:?}");

    // Within the TTL: stored. After it: computed again.
    clock.advance(Duration::from_secs(59));
    assert_eq!(cache.get::<Stats>("stats:7").await.as_ref(), Some(&got[0]));
    let again = caller(9).await;
    assert_eq!((runs.load(Ordering::SeqCst), &again), (1, &got[0]));
    clock.advance(Duration::from_secs(2));
    assert_eq!(cache.get::<Stats>("stats:7").await, None);
    let fresh = caller(9).await;
    assert_eq!((runs.load(Ordering::SeqCst), fresh.total), (2, 109));
}

#[actix_web::test]
async fn an_error_is_returned_and_never_stored() {
    let clock = Arc::new(ManualClock::new());
    let (cache, _state) = values(&l1_only(), &clock);
    let runs = AtomicUsize::new(0);
    let attempt = |fail: bool| {
        let runs = &runs;
        let cache = &cache;
        async move {
            cache
                .try_get_or_compute("report", Duration::from_secs(60), || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    if fail {
                        Err("origin down")
                    } else {
                        Ok(Stats { id: 1, total: 5 })
                    }
                })
                .await
        }
    };
    assert_eq!(attempt(true).await, Err("origin down"));
    assert_eq!(cache.get::<Stats>("report").await, None);
    assert_eq!(attempt(false).await, Ok(Stats { id: 1, total: 5 }));
    assert_eq!(
        attempt(true).await,
        Ok(Stats { id: 1, total: 5 }),
        "stored after success"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn values_are_invalidated_by_key_prefix_and_tag_and_a_changed_type_is_a_miss() {
    let clock = Arc::new(ManualClock::new());
    let (cache, _state) = values(&l1_only(), &clock);
    let put = |key: &str, tag: &str| {
        cache.insert(
            key,
            &Stats { id: 1, total: 1 },
            ValueOptions::secs(300).tag(tag),
        );
    };
    put("stats:1", "item:1");
    put("stats:1?raw", "item:1"); // not the key `stats:1` with a query
    put("stats:2", "item:2");
    put("dash:1", "item:1");
    put("dash:2", "item:2");
    let has = |key: &'static str| {
        let cache = cache.clone();
        async move { cache.get::<Stats>(key).await.is_some() }
    };
    assert!(has("stats:1").await && has("stats:1?raw").await);

    cache.invalidate("stats:1").await;
    assert!(!has("stats:1").await);
    assert!(has("stats:1?raw").await, "a key with `?` is its own key");
    cache.invalidate_prefix("stats:").await;
    assert!(!has("stats:1?raw").await && !has("stats:2").await);
    assert!(has("dash:1").await && has("dash:2").await);
    cache.invalidate_tag("item:2").await;
    assert!(has("dash:1").await && !has("dash:2").await);

    // The type changed between releases: a miss, computed and replaced.
    let n: u32 = cache
        .get_or_compute("dash:1", ValueOptions::secs(300), || async { 7 })
        .await;
    assert_eq!(n, 7);
    assert_eq!(cache.get::<u32>("dash:1").await, Some(7));
}

#[actix_web::test]
async fn a_second_node_reads_values_from_redis_and_hears_their_purge_and_l3_keeps_them() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let mut with_l3 = Settings::default();
    common::with_l2(&mut with_l3, redis.url());
    common::with_l3(&mut with_l3, &dir.path().join("values.duckdb"));
    let mut l2_only = Settings::default();
    common::with_l2(&mut l2_only, redis.url());
    l2_only.tiers.l3.enabled = false;

    let (a, state_a) = values(&with_l3, &clock);
    let (b, state_b) = values(&l2_only, &clock);
    let computed: Stats = a
        .get_or_compute(
            "stats:42",
            ValueOptions::secs(600).tag("item:42"),
            || async {
                Stats {
                    id: 42,
                    total: 4200,
                }
            },
        )
        .await;
    // Node B finds it in Redis once A's write is there, without computing.
    let found = eventually(Duration::from_secs(10), async || {
        b.get::<Stats>("stats:42").await.as_ref() == Some(&computed)
    })
    .await;
    assert!(found, "node B never read the value from L2");
    let computed_on_b = b
        .get_or_compute("stats:42", ValueOptions::secs(600), || async {
            Stats { id: 42, total: 0 }
        })
        .await;
    assert_eq!(computed_on_b, computed, "B computed instead of reading");

    // A purge by tag on A reaches B's L1 copy through pub/sub.
    a.invalidate_tag("item:42").await;
    let gone = eventually(Duration::from_secs(10), async || {
        b.get::<Stats>("stats:42").await.is_none()
    })
    .await;
    assert!(gone, "node B still serves the purged value");

    // Stored again on A, then A restarts with Redis emptied: the DuckDB file still has it.
    a.insert(
        "stats:43",
        &Stats { id: 43, total: 1 },
        Duration::from_secs(600),
    );
    let written = eventually(Duration::from_secs(10), async || {
        b.get::<Stats>("stats:43").await.is_some()
    })
    .await;
    assert!(written, "the write never reached L2");
    state_b.store.close().await;
    state_a.store.close().await;
    drop((a, b, state_a, state_b));
    redis.flushall();
    let mut l3_only = Settings::default();
    l3_only.tiers.l2.enabled = false;
    common::with_l3(&mut l3_only, &dir.path().join("values.duckdb"));
    let (restarted, state) = values(&l3_only, &clock);
    assert_eq!(
        restarted.get::<Stats>("stats:43").await,
        Some(Stats { id: 43, total: 1 })
    );
    state.store.close().await;
}
