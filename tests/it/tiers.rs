//! The three tiers together, against a real `redis-server` and real DuckDB files: promotion,
//! expiry per tier, persistence across restarts, two nodes sharing Redis, and faults.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use common::{
    client, eventually, free_port, metric_at, send, settings_for, sigterm, spawn_tierd, wait_up,
    written_at, Origin, Reply, Resp,
};
use tierd::clock::ManualClock;
use tierd::config::Settings;
use tierd::server::Gateway;

/// An origin that answers every path with a body naming the path and the hit number.
async fn origin(clock: &Arc<ManualClock>, cc: &'static str) -> Origin {
    Origin::start(clock.clone(), move |req, n| {
        Reply::ok(format!("{} #{n}", req.path())).cc(cc)
    })
    .await
}

fn l2(s: &mut Settings, redis: &RedisServer) {
    common::with_l2(s, redis.url());
    s.tiers.l2.circuit_open_ms = 200;
}

fn l3(s: &mut Settings, path: &Path) {
    common::with_l3(s, path);
}

async fn start(
    origin: &Origin,
    clock: &Arc<ManualClock>,
    tweak: impl FnOnce(&mut Settings),
) -> Gateway {
    let mut s = settings_for(origin.addr);
    tweak(&mut s);
    Gateway::start(&s, clock.clone(), None)
        .await
        .expect("gateway")
}

/// Every node is reached under one public host name, as behind a load balancer (the cache key
/// includes the host).
const HOST: &str = "api.test";

async fn get(gw: &Gateway, path: &str) -> Resp {
    send(
        client()
            .get(format!("http://{}{}", gw.addr, path))
            .insert_header(("host", HOST)),
    )
    .await
}

async fn admin(gw: &Gateway, path: &str) -> String {
    send(client().get(format!("http://{}{}", gw.admin_addr, path)))
        .await
        .text()
}

async fn written(gw: &Gateway, tier: &str, n: u64) {
    written_at(gw.admin_addr, tier, n).await
}

fn detail(r: &Resp) -> String {
    r.detail()
}

#[actix_web::test]
async fn l3_survives_restarts_with_correct_age_and_hits_are_promoted_to_l1_and_l2() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("l3/tierd.duckdb");
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock, "max-age=600").await;

    let a = start(&origin, &clock, |s| {
        l2(s, &redis);
        l3(s, &file);
    })
    .await;
    let first = get(&a, "/report").await;
    assert_eq!(first.text(), "/report #1");
    written(&a, "l2", 1).await;
    written(&a, "l3", 1).await;
    a.stop(true).await;

    // Redis loses everything; the next tierd process finds the entry in the DuckDB file.
    redis.flushall();
    clock.advance(Duration::from_secs(40));
    let b = start(&origin, &clock, |s| {
        l2(s, &redis);
        l3(s, &file);
    })
    .await;
    let r = get(&b, "/report").await;
    assert_eq!(r.text(), "/report #1", "served from L3, not the origin");
    assert_eq!(detail(&r), "l3", "{}", r.cache_status());
    assert_eq!(r.age(), Some(40), "Age counts the time spent in storage");
    assert_eq!(origin.hits(), 1);

    // Promoted into L1 ...
    let r = get(&b, "/report").await;
    assert_eq!(detail(&r), "l1", "{}", r.cache_status());
    // ... and into L2, where a node without L3 finds it.
    written(&b, "l2", 1).await;
    let c = start(&origin, &clock, |s| l2(s, &redis)).await;
    let r = get(&c, "/report").await;
    assert_eq!(detail(&r), "l2", "{}", r.cache_status());
    assert_eq!(r.age(), Some(40));
    assert_eq!(origin.hits(), 1);
    assert_eq!(
        metric_at(
            b.admin_addr,
            "tierd_tier_promotions_total",
            &[("tier", "l3")]
        )
        .await,
        1.0
    );
    b.stop(true).await;
    c.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn a_restarted_node_and_a_second_node_serve_from_shared_l2() {
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock, "max-age=600").await;
    let a = start(&origin, &clock, |s| l2(s, &redis)).await;
    let b = start(&origin, &clock, |s| l2(s, &redis)).await;

    assert_eq!(get(&a, "/shared").await.text(), "/shared #1");
    written(&a, "l2", 1).await;
    clock.advance(Duration::from_secs(5));
    let r = get(&b, "/shared").await;
    assert_eq!(r.text(), "/shared #1");
    assert_eq!(detail(&r), "l2", "{}", r.cache_status());
    assert_eq!(r.age(), Some(5));

    // A restarted node starts with an empty L1 and finds the entry in Redis.
    a.stop(true).await;
    let a2 = start(&origin, &clock, |s| l2(s, &redis)).await;
    let r = get(&a2, "/shared").await;
    assert_eq!(detail(&r), "l2", "{}", r.cache_status());
    assert_eq!(origin.hits(), 1);

    // Redis keys carry the prefix, the format version and a TTL.
    let keys = redis.cli(&["KEYS", "tierd:v2:*"]).unwrap();
    assert!(keys.starts_with("tierd:v2:"), "{keys}");
    let ttl: i64 = redis.cli(&["PTTL", &keys]).unwrap().parse().unwrap();
    assert!(ttl > 0, "every key expires in Redis too: {ttl}");

    // An unsafe method on one node removes the entry from Redis for every node.
    let put = send(
        client()
            .put(format!("http://{}/shared", b.addr))
            .insert_header(("host", HOST)),
    )
    .await;
    assert!(put.status < 500);
    assert_eq!(redis.records(), 0);
    a2.stop(true).await;
    b.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn each_tier_expires_entries_at_its_own_cap() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cap.duckdb");
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock, "max-age=1000").await;
    let caps = |s: &mut Settings| {
        l2(s, &redis);
        l3(s, &file);
        s.tiers.l2.max_ttl_seconds = 5;
        s.tiers.l3.max_ttl_seconds = 20;
    };
    let a = start(&origin, &clock, caps).await;
    get(&a, "/capped").await;
    written(&a, "l2", 1).await;
    written(&a, "l3", 1).await;
    // L1 keeps the entry for its whole lifetime.
    clock.advance(Duration::from_secs(6));
    assert_eq!(detail(&get(&a, "/capped").await), "l1");
    a.stop(true).await;

    // Past L2's cap, not L3's: a fresh node finds it in L3.
    let b = start(&origin, &clock, caps).await;
    let r = get(&b, "/capped").await;
    assert_eq!(detail(&r), "l3", "{}", r.cache_status());
    assert_eq!(r.age(), Some(6));
    b.stop(true).await;

    // Past both caps: a fresh node goes to the origin.
    clock.advance(Duration::from_secs(15));
    let c = start(&origin, &clock, caps).await;
    let r = get(&c, "/capped").await;
    assert_eq!(r.text(), "/capped #2", "{}", r.cache_status());
    c.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn redis_killed_under_load_costs_nothing_and_l2_resumes_without_restart() {
    let mut redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock, "max-age=600").await;
    let a = start(&origin, &clock, |s| l2(s, &redis)).await;
    let b = start(&origin, &clock, |s| l2(s, &redis)).await;

    let load = {
        let addr = a.addr;
        actix_web::rt::spawn(async move {
            let c = client();
            let mut statuses = Vec::new();
            for i in 0..400 {
                let r = send(c.get(format!("http://{addr}/load/{}", i % 100))).await;
                statuses.push(r.status);
            }
            statuses
        })
    };
    // Kill Redis once the load is under way.
    let mut seen = false;
    for _ in 0..1000 {
        let written = metric_at(
            a.admin_addr,
            "tierd_tier_writes_total",
            &[("tier", "l2"), ("outcome", "written")],
        )
        .await;
        if written >= 10.0 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(seen, "load reached L2 before the kill");
    redis.kill();
    let statuses = load.await.unwrap();
    assert_eq!(statuses.len(), 400);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every request answered 200 while Redis was down: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    assert!(
        metric_at(a.admin_addr, "tierd_tier_errors_total", &[("tier", "l2")]).await > 0.0,
        "the outage was seen"
    );

    // Redis comes back on the same port: node A stores into it again and node B reads from it,
    // with neither restarted.
    redis.restart();
    let mut resumed = false;
    for i in 0..200 {
        let path = format!("/resume/{i}");
        get(&a, &path).await;
        let stored = eventually(Duration::from_millis(500), async || redis.records() > 0).await;
        if stored && detail(&get(&b, &path).await) == "l2" {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "L2 hits resumed after Redis came back");
    a.stop(true).await;
    b.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn a_hung_redis_opens_the_circuit_so_requests_stop_waiting() {
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock, "max-age=600").await;
    let a = start(&origin, &clock, |s| {
        l2(s, &redis);
        s.tiers.l2.command_timeout_ms = 100;
        s.tiers.l2.circuit_failure_threshold = 3;
        s.tiers.l2.circuit_open_ms = 60_000;
    })
    .await;
    assert_eq!(get(&a, "/warm").await.status, 200);
    written(&a, "l2", 1).await;

    redis.pause();
    // One at a time until the circuit opens, then a burst.
    for i in 0..10 {
        assert_eq!(get(&a, &format!("/hung/{i}")).await.status, 200);
    }
    let c = client();
    let requests = (10..70).map(|i| send(c.get(format!("http://{}/hung/{i}", a.addr))));
    let results = futures_util::future::join_all(requests).await;
    assert!(results.iter().all(|r| r.status == 200));
    let stats = admin(&a, "/_tierd/stats").await;
    assert!(stats.contains("\"circuit\":\"open\""), "{stats}");
    // Only the requests before the circuit opened waited for a timeout; the rest failed fast.
    let timeouts = metric_at(
        a.admin_addr,
        "tierd_tier_errors_total",
        &[("tier", "l2"), ("kind", "timeout")],
    )
    .await;
    let fast = metric_at(
        a.admin_addr,
        "tierd_tier_errors_total",
        &[("tier", "l2"), ("kind", "circuit_open")],
    )
    .await;
    // Requests go one at a time, and the writer sends one batch at a time: while the circuit is
    // closed at most one lookup and one write batch wait on the paused Redis together. So the
    // third consecutive timeout opens the circuit with at most one more command waiting: 3 or 4.
    assert!((3.0..=4.0).contains(&timeouts), "timeouts: {timeouts}");
    assert!(fast >= 60.0, "lookups that failed fast: {fast}");
    redis.resume();
    a.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn an_unusable_duckdb_file_disables_l3_and_tierd_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.duckdb");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let under_a_file = blocker.join("tierd.duckdb");

    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock, "max-age=600").await;
    for path in [&garbage, &under_a_file] {
        let a = start(&origin, &clock, |s| l3(s, path)).await;
        let stats = admin(&a, "/_tierd/stats").await;
        let tiers: serde_json::Value = serde_json::from_str(&stats).unwrap();
        assert!(
            tiers["tiers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["tier"] != "l3"),
            "L3 left out: {stats}"
        );
        // ...and reported failed, not silently absent.
        let ready: serde_json::Value = serde_json::from_str(&admin(&a, "/readyz").await).unwrap();
        assert_eq!(ready["status"], "degraded", "{ready}");
        let l3 = ready["tiers"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["tier"] == "l3"))
            .unwrap_or_else(|| panic!("l3 in /readyz: {ready}"));
        assert_eq!((&l3["ok"], &l3["state"]), (&false.into(), &"failed".into()));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            l3["error"].as_str().unwrap_or_default().contains(name),
            "{l3}"
        );
        let before = origin.hits();
        assert_eq!(get(&a, "/still").await.status, 200);
        assert_eq!(detail(&get(&a, "/still").await), "l1");
        assert_eq!(origin.hits(), before + 1);
        a.stop(true).await;
    }
    // The unusable file was not touched.
    assert_eq!(std::fs::read(&garbage).unwrap(), vec![0x5a; 64 * 1024]);
    origin.stop().await;
}

#[actix_web::test]
async fn foreign_bytes_in_redis_are_a_miss_not_an_error() {
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock, "max-age=600").await;
    let a = start(&origin, &clock, |s| l2(s, &redis)).await;
    get(&a, "/victim").await;
    written(&a, "l2", 1).await;
    let key = redis.cli(&["KEYS", "tierd:v2:*"]).unwrap();
    assert_eq!(
        redis.cli(&["SET", &key, "not a tierd record"]).as_deref(),
        Some("OK")
    );
    let b = start(&origin, &clock, |s| l2(s, &redis)).await;
    let r = get(&b, "/victim").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "/victim #2", "refetched from the origin");
    assert_eq!(
        metric_at(
            b.admin_addr,
            "tierd_tier_errors_total",
            &[("tier", "l2"), ("kind", "decode")]
        )
        .await,
        1.0
    );
    a.stop(true).await;
    b.stop(true).await;
    origin.stop().await;
}

#[test]
fn sigterm_drains_queued_writes_into_l2_and_l3() {
    use std::sync::atomic::{AtomicU8, Ordering};
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drain.duckdb");
    let sys = actix_web::rt::System::new();
    let clock = Arc::new(ManualClock::new());
    // `no-cache` with a validator: stored, and revalidated on every request from L1, so the
    // second round stores new versions without looking anything up in Redis.
    let round = Arc::new(AtomicU8::new(1));
    let r = round.clone();
    let origin = sys.block_on(Origin::start(clock.clone(), move |req, n| {
        let round = r.load(Ordering::SeqCst);
        Reply::ok(format!("{} round-{round}", req.path()))
            .cc("no-cache")
            .header("etag", &format!("\"{n}\""))
    }));

    let (port, admin_port) = (free_port(), free_port());
    let admin = format!("127.0.0.1:{admin_port}");
    let url = redis.url();
    let path = file.display().to_string();
    let mut child = spawn_tierd(
        port,
        &origin,
        &[
            ("TIERD__ADMIN__LISTEN", &admin),
            ("TIERD__TIERS__L2__ENABLED", "true"),
            ("TIERD__TIERS__L2__URL", &url),
            // Longer than Redis stays paused below.
            ("TIERD__TIERS__L2__COMMAND_TIMEOUT_MS", "30000"),
            ("TIERD__TIERS__L3__ENABLED", "true"),
            ("TIERD__TIERS__L3__PATH", &path),
            // Group commit longer than the test: L3's writes stay queued until the drain.
            ("TIERD__TIERS__L3__COMMIT_LINGER_MS", "60000"),
        ],
    );
    let n = 50;
    let admin: std::net::SocketAddr = admin.parse().unwrap();
    let l2_written = || async move {
        metric_at(
            admin,
            "tierd_tier_writes_total",
            &[("tier", "l2"), ("outcome", "written")],
        )
        .await
    };
    sys.block_on(async {
        wait_up(port).await;
        let c = client();
        let get_all = || {
            futures_util::future::join_all(
                (0..n).map(|i| send(c.get(format!("http://127.0.0.1:{port}/drain/{i}")))),
            )
        };
        assert!(get_all().await.iter().all(|r| r.status == 200));
        let all_stored = async {
            while l2_written().await < n as f64 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all_stored)
            .await
            .expect("round 1 reached Redis");

        // Redis stops answering; round 2's writes are accepted and stay queued.
        redis.pause();
        round.store(2, Ordering::SeqCst);
        let second = get_all().await;
        assert!(second.iter().all(|r| r.text().ends_with("round-2")));
        assert_eq!(l2_written().await, n as f64, "round 2 is still queued");
        let l3 = [("tier", "l3"), ("outcome", "written")];
        assert_eq!(
            metric_at(admin, "tierd_tier_writes_total", &l3).await,
            0.0,
            "both rounds are still queued for L3"
        );
    });

    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // tierd must not exit while writes it accepted are queued. Give it time to (wrongly) exit,
    // then let Redis answer; a draining tierd finishes whatever that time is.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut exited_early = false;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            exited_early = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    redis.resume();
    let status = child.wait().unwrap();
    assert!(!exited_early, "tierd exited with writes still queued");
    assert!(status.success(), "clean exit: {status}");
    for i in 0..n {
        let key = format!("tierd:v2:127.0.0.1:{port}/drain/{i}");
        let value = redis.cli(&["GET", &key]).unwrap_or_default();
        assert!(value.contains("round-2"), "{key} holds the queued version");
    }
    // Round 1 wrote a row for every key already: only round 2's contents prove the drain.
    let conn = duckdb::Connection::open(&file).expect("open l3 file");
    let mut stmt = conn
        .prepare("SELECT cache_key, value FROM entries")
        .expect("query");
    let rows: Vec<(String, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("row");
    assert_eq!(rows.len() as u64, n);
    for (key, value) in &rows {
        assert!(
            value.windows(7).any(|w| w == b"round-2"),
            "{key} holds the queued version in L3"
        );
    }
    sys.block_on(origin.stop());
}

#[test]
fn a_duckdb_file_locked_by_another_process_disables_l3_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("locked.duckdb");
    let sys = actix_web::rt::System::new();
    let clock = Arc::new(ManualClock::new());
    let origin = sys.block_on(origin(&clock, "max-age=600"));
    let port = free_port();
    // Another tierd process holds the file.
    let path = file.display().to_string();
    let mut holder = spawn_tierd(
        port,
        &origin,
        &[
            ("TIERD__TIERS__L3__ENABLED", "true"),
            ("TIERD__TIERS__L3__PATH", &path),
        ],
    );
    sys.block_on(async {
        wait_up(port).await;
        // It opens its tiers before it binds, so listening means it holds the file.
        assert!(holder.try_wait().unwrap().is_none(), "the holder runs");
        let a = start(&origin, &clock, |s| l3(s, &file)).await;
        let stats = admin(&a, "/_tierd/stats").await;
        let tiers: serde_json::Value = serde_json::from_str(&stats).unwrap();
        assert!(
            tiers["tiers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["tier"] != "l3"),
            "L3 left out: {stats}"
        );
        let ready: serde_json::Value = serde_json::from_str(&admin(&a, "/readyz").await).unwrap();
        let l3 = ready["tiers"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["tier"] == "l3"))
            .unwrap_or_else(|| panic!("l3 in /readyz: {ready}"));
        assert_eq!((&l3["ok"], &l3["state"]), (&false.into(), &"failed".into()));
        assert_eq!(get(&a, "/locked").await.status, 200);
        assert_eq!(detail(&get(&a, "/locked").await), "l1");
        a.stop(true).await;
    });
    assert!(sigterm(&mut holder).success());
    sys.block_on(origin.stop());
}

#[actix_web::test]
async fn l2_on_a_redis_cluster_is_shared_by_two_nodes() {
    let nodes = RedisServer::cluster();
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock, "max-age=600").await;
    let cluster = |s: &mut Settings| {
        s.tiers.l2.enabled = true;
        s.tiers.l2.urls = urls.clone();
        s.tiers.l2.command_timeout_ms = 2_000;
    };
    let a = start(&origin, &clock, cluster).await;
    let b = start(&origin, &clock, cluster).await;
    // Enough keys that they land on every master.
    for i in 0..30 {
        get(&a, &format!("/c/{i}")).await;
    }
    written(&a, "l2", 30).await;
    let per_node: Vec<u64> = nodes.iter().map(RedisServer::records).collect();
    assert_eq!(per_node.iter().sum::<u64>(), 30, "{per_node:?}");
    assert!(
        per_node.iter().all(|n| *n > 0),
        "spread over the masters: {per_node:?}"
    );
    for i in 0..30 {
        let r = get(&b, &format!("/c/{i}")).await;
        assert_eq!(detail(&r), "l2", "{}", r.cache_status());
    }
    assert_eq!(origin.hits(), 30);
    // Invalidation reaches the node that owns the key.
    let put = send(
        client()
            .put(format!("http://{}/c/3", a.addr))
            .insert_header(("host", HOST)),
    )
    .await;
    assert!(put.status < 500);
    let per_node: Vec<u64> = nodes.iter().map(RedisServer::records).collect();
    assert_eq!(per_node.iter().sum::<u64>(), 29);
    a.stop(true).await;
    b.stop(true).await;
    origin.stop().await;
}

#[test]
fn two_tierd_processes_share_one_redis() {
    let redis = RedisServer::start();
    let sys = actix_web::rt::System::new();
    let clock = Arc::new(ManualClock::new());
    let origin = sys.block_on(origin(&clock, "max-age=600"));
    let url = redis.url();
    let l2_env = [
        ("TIERD__TIERS__L2__ENABLED", "true"),
        ("TIERD__TIERS__L2__URL", url.as_str()),
        ("TIERD__TIERS__L2__COMMAND_TIMEOUT_MS", "1000"),
    ];
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = spawn_tierd(port_a, &origin, &l2_env);
    let mut b = spawn_tierd(port_b, &origin, &l2_env);
    sys.block_on(async {
        wait_up(port_a).await;
        wait_up(port_b).await;
        let via = |port: u16| {
            send(
                client()
                    .get(format!("http://127.0.0.1:{port}/two-processes"))
                    .insert_header(("host", HOST)),
            )
        };
        let first = via(port_a).await;
        assert_eq!(first.text(), "/two-processes #1");
        let stored = eventually(Duration::from_secs(10), async || redis.records() == 1).await;
        assert!(stored, "A wrote the entry to Redis");
        let r = via(port_b).await;
        assert_eq!(r.text(), "/two-processes #1");
        assert_eq!(detail(&r), "l2", "{}", r.cache_status());
        assert_eq!(origin.hits(), 1);
    });
    assert!(sigterm(&mut a).success());
    assert!(sigterm(&mut b).success());
    sys.block_on(origin.stop());
}

/// With Redis down: `/healthz` stays ok; `/readyz` stays ready but says `degraded`, with L2's
/// circuit open; requests are still answered (from L1 and the origin); a purge answers 502 (L2
/// could not apply it, so the caller must retry) and still purges L1.
#[actix_web::test]
async fn with_redis_down_the_node_is_degraded_serves_and_a_purge_answers_502() {
    let mut redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock, "max-age=600").await;
    let gw = start(&origin, &clock, |s| {
        l2(s, &redis);
        s.tiers.l2.command_timeout_ms = 200;
        // Once open, it stays open for the test.
        s.tiers.l2.circuit_open_ms = 60_000;
        s.admin.token = "t".into();
    })
    .await;
    let readyz = async |gw: &Gateway| -> serde_json::Value {
        serde_json::from_str(&admin(gw, "/readyz").await).expect("readyz json")
    };
    let l2_state = |v: &serde_json::Value| {
        v["tiers"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["tier"] == "l2"))
            .map(|t| {
                (
                    t["state"].as_str().unwrap_or("").to_owned(),
                    t["circuit"].clone(),
                )
            })
            .expect("l2 in /readyz")
    };
    assert_eq!(get(&gw, "/kept").await.status, 200);
    written(&gw, "l2", 1).await;
    let v = readyz(&gw).await;
    assert_eq!(
        (v["ready"].clone(), v["status"].clone()),
        (true.into(), "ok".into())
    );
    assert_eq!(l2_state(&v), ("ok".into(), "closed".into()));

    redis.kill();
    // Misses try L2 and fail; the breaker opens.
    let mut i = 0;
    let opened = common::eventually(Duration::from_secs(10), async || {
        i += 1;
        let r = get(&gw, &format!("/down/{i}")).await;
        assert_eq!(r.status, 200, "served while Redis is down");
        l2_state(&readyz(&gw).await).1 == "open"
    })
    .await;
    assert!(opened, "L2's circuit opened");
    let v = readyz(&gw).await;
    assert_eq!(v["ready"], true, "degraded, still ready: {v}");
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(l2_state(&v).0, "circuit_open");
    assert_eq!(admin(&gw, "/healthz").await, "ok\n");
    let hit = get(&gw, "/kept").await;
    assert_eq!(hit.detail(), "l1", "L1 still serves");

    let purged = common::admin_post_at(
        gw.admin_addr,
        "/_tierd/purge",
        Some("t"),
        r#"{"url":"http://api.test/kept"}"#,
    )
    .await;
    assert_eq!(purged.status, 502, "{}", purged.text());
    let body: serde_json::Value = serde_json::from_slice(&purged.body).unwrap();
    assert_eq!(body["purged"]["l1"], 1, "{body}");
    assert!(body["errors"]["l2"].is_string(), "{body}");
    assert!(
        get(&gw, "/kept")
            .await
            .cache_status()
            .contains("fwd=uri-miss"),
        "purged from L1 all the same"
    );
    gw.stop(true).await;
    origin.stop().await;
}

/// `tierd_tier_operations_in_flight{tier="l2"}` counts the commands waiting on a hung Redis, and
/// counts them out once they time out.
#[actix_web::test]
async fn redis_commands_waiting_on_a_hung_redis_are_in_flight_until_they_time_out() {
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock, "max-age=600").await;
    let a = start(&origin, &clock, |s| {
        l2(s, &redis);
        s.tiers.l2.command_timeout_ms = 1_500;
        s.tiers.l2.circuit_failure_threshold = 100;
    })
    .await;
    assert_eq!(get(&a, "/warm").await.status, 200);
    written(&a, "l2", 1).await;
    let in_flight = || async {
        metric_at(
            a.admin_addr,
            "tierd_tier_operations_in_flight",
            &[("tier", "l2")],
        )
        .await
    };
    assert_eq!(in_flight().await, 0.0);

    redis.pause();
    let url = format!("http://{}/hung", a.addr);
    let waiting = actix_web::rt::spawn(async move { send(client().get(url)).await });
    assert!(
        eventually(Duration::from_secs(5), async || in_flight().await >= 1.0).await,
        "the lookup waiting on the paused Redis is in flight"
    );
    // The lookup times out, the origin answers; the write of its response times out too.
    assert_eq!(waiting.await.unwrap().status, 200);
    assert!(
        eventually(Duration::from_secs(10), async || in_flight().await == 0.0).await,
        "counted out after the timeouts: {}",
        in_flight().await
    );
    redis.resume();
    a.stop(true).await;
    origin.stop().await;
}
