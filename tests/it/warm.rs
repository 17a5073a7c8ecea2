//! Predictive warming through a real gateway: the journal's popular URLs warmed by a pass
//! (dry run, on demand, at start from the tiers), what follows a request fetched before the
//! client asks, the privacy rules, the budget's backoff, and the used/wasted accounting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tierd::clock::{Clock, ManualClock};
use tierd::config::Settings;
use tierd::server::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, eventually, metric_at, metric_reaches, with_l3, Origin, Reply};

const TOKEN: &str = "warm-token";
const HOST: &str = "warm.test";

fn origin_reply(req: &actix_web::HttpRequest, _: u64) -> Reply {
    let p = req.path();
    match p {
        "/fail" => Reply::ok("down").status(503),
        "/nostore" => Reply::ok("nostore").cc("no-store"),
        p if p.starts_with("/private/") => Reply::ok("mine").cc("max-age=60"),
        p if p.starts_with("/items/") => Reply::ok(format!("body of {p}")).cc("max-age=60"),
        _ => Reply::ok("other").cc("max-age=60"),
    }
}

fn settings(origin: &Origin, dir: &std::path::Path) -> Settings {
    let mut s = common::settings_for(origin.addr);
    with_l3(&mut s, &dir.join("l3.duckdb"));
    s.admin.token = TOKEN.into();
    s.rules = common::rules(
        r#"
        [[rules]]
        path = "/items/{id}"
        ttl_seconds = 60
        [[rules]]
        path = "/items/{id}/reviews"
        ttl_seconds = 60
        [[rules]]
        path = "/private/{id}"
        ttl_seconds = 60
        key = { user = "authorization" }
        "#,
    );
    s.warming.enabled = true;
    s.warming.on_start = false;
    s.warming.predict = false;
    s.warming.model_refresh_seconds = 1;
    s
}

/// A GET for `path` on the test host, from the loopback address `ip` (the journal tells
/// clients apart by address); the raw answer.
async fn get_from(ip: [u8; 4], addr: SocketAddr, path: &str, headers: &str) -> String {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((ip, 0))).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answered")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn cache_status(raw: &str) -> String {
    raw.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("cache-status")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default()
}

async fn warm(gw: &Gateway, query: &str) -> (u16, Value) {
    let r = common::admin_post_at(
        gw.admin_addr,
        &format!("/_tierd/warm{query}"),
        Some(TOKEN),
        "",
    )
    .await;
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

async fn status(gw: &Gateway) -> Value {
    let r = common::send(
        common::client()
            .get(format!("http://{}/_tierd/warm", gw.admin_addr))
            .insert_header(("authorization", format!("Bearer {TOKEN}"))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn origin_paths(origin: &Origin) -> Vec<String> {
    origin
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(_, uri, _)| uri.clone())
        .collect()
}

#[actix_web::test]
async fn a_pass_warms_the_popular_shared_urls_and_nothing_private() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let s = settings(&origin, dir.path());
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    let c1 = [127, 0, 0, 2];
    // /items/1 three times, /items/2 twice, /items/3 once (under min_requests = 2).
    for p in [
        "/items/1", "/items/1", "/items/1", "/items/2", "/items/2", "/items/3",
    ] {
        get_from(c1, gw.addr, p, "").await;
    }
    // A user-scoped URL, an uncacheable one, and one only ever asked for with credentials
    // (a shared cache does not store those): popular, never to be warmed.
    for _ in 0..3 {
        get_from(c1, gw.addr, "/private/7", "Authorization: Bearer alice\r\n").await;
        get_from(c1, gw.addr, "/nostore", "").await;
        get_from(c1, gw.addr, "/account", "Authorization: Bearer bob\r\n").await;
    }
    // A client's forged marker is removed and the request served as a client's.
    let forged = get_from(
        c1,
        gw.addr,
        "/items/9",
        "tierd-warm: 0123456789abcdef0123456789abcdef\r\n",
    )
    .await;
    assert!(
        !forged.to_ascii_lowercase().contains("tierd-warm-result"),
        "{forged}"
    );
    assert!(
        origin
            .requests
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, h)| !h.contains_key("tierd-warm")),
        "the origin never sees the marker"
    );
    let before = origin.hits();

    // The plan: most requested first; nothing fetched.
    let (st, plan) = warm(&gw, "?dry_run=true").await;
    assert_eq!(st, 200, "{plan}");
    let targets: Vec<&str> = plan["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["/items/1", "/items/2"], "{plan}");
    assert_eq!(plan["plan"][0]["host"], HOST);
    assert_eq!(plan["plan"][0]["source"], "popular");
    assert_eq!(origin.hits(), before, "a dry run fetches nothing");

    // Everything expires; a pass on demand fetches the two again, and only them.
    clock.advance(Duration::from_secs(120));
    let requests_before = metric_at(gw.admin_addr, "tierd_requests_total", &[]).await;
    let (st, summary) = warm(&gw, "?wait=true").await;
    assert_eq!(st, 200, "{summary}");
    assert_eq!(summary["planned"], 2, "{summary}");
    assert_eq!(summary["fetched"], 2, "{summary}");
    assert_eq!(summary["trigger"], "demand");
    let fetched: Vec<String> = origin_paths(&origin)[before as usize..].to_vec();
    assert_eq!(fetched, ["/items/1", "/items/2"]);
    // The warm fetches replayed the URL and nothing of any client's.
    for (_, _, h) in &origin.requests.lock().unwrap()[before as usize..] {
        assert!(!h.contains_key("authorization") && !h.contains_key("cookie"));
        assert!(!h.contains_key("tierd-warm"));
    }
    assert_eq!(
        metric_at(gw.admin_addr, "tierd_requests_total", &[]).await,
        requests_before,
        "warm fetches are not client requests"
    );
    assert_eq!(
        metric_at(
            gw.admin_addr,
            "tierd_warm_fetches_total",
            &[("trigger", "demand"), ("outcome", "fetched")]
        )
        .await,
        2.0
    );

    // A client now hits the warmed entry: used once, however often it is served.
    let hit = get_from([127, 0, 0, 3], gw.addr, "/items/1", "").await;
    assert!(cache_status(&hit).contains("hit"), "{hit}");
    get_from([127, 0, 0, 3], gw.addr, "/items/1", "").await;
    assert_eq!(
        metric_at(gw.admin_addr, "tierd_warm_used_total", &[]).await,
        1.0
    );
    // /items/2 expires unserved: wasted (the ledger is swept every second).
    clock.advance(Duration::from_secs(61));
    assert!(
        metric_reaches(
            gw.admin_addr,
            "tierd_warm_wasted_total",
            &[],
            1.0,
            Duration::from_secs(5)
        )
        .await
    );
    let shown = status(&gw).await;
    assert_eq!(shown["accounting"]["used"], 1, "{shown}");
    assert_eq!(shown["accounting"]["precision"], 0.5, "{shown}");
    assert_eq!(shown["last_runs"][0]["fetched"], 2, "{shown}");

    // The journal marks the warm fetches as such, and the request served from a warmed entry.
    let warm_rows = common::admin_post_at(
        gw.admin_addr,
        "/_tierd/analytics/sql",
        Some(TOKEN),
        r#"{"sql": "SELECT outcome, warmed, count(*) AS n FROM journal WHERE target = '/items/1' GROUP BY ALL ORDER BY ALL"}"#,
    )
    .await;
    let rows: Value = serde_json::from_slice(&warm_rows.body).unwrap();
    // Before warming: a miss and two hits; the warm fetch; the two hits on the warmed entry.
    assert_eq!(
        rows["rows"],
        serde_json::json!([
            ["hit", "false", "2"],
            ["hit", "true", "2"],
            ["miss", "false", "1"],
            ["warm", "false", "1"]
        ]),
        "{rows}"
    );

    // Without the token, no pass.
    let r = common::admin_post_at(gw.admin_addr, "/_tierd/warm", None, "").await;
    assert_eq!(r.status, 401);

    // Warm both again, then restart: the pass at start finds them fresh in L3 and promotes
    // them into L1 without asking the origin.
    let (_, again) = warm(&gw, "?wait=true").await;
    assert_eq!(again["fetched"], 2, "{again}");
    gw.stop(true).await;
    let mut s2 = s.clone();
    s2.warming.on_start = true;
    let hits = origin.hits();
    let gw = Gateway::start(&s2, clock.clone(), None).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || {
            status(&gw).await["last_runs"][0]["trigger"] == "start"
        })
        .await
    );
    let run = status(&gw).await["last_runs"][0].clone();
    assert_eq!(
        (run["planned"].as_u64(), run["from_tiers"].as_u64()),
        (Some(2), Some(2)),
        "{run}"
    );
    assert_eq!(origin.hits(), hits, "from the tiers: no origin request");
    let hit = get_from([127, 0, 0, 4], gw.addr, "/items/2", "").await;
    assert!(cache_status(&hit).contains("hit"), "{hit}");
    assert!(cache_status(&hit).contains("l1"), "promoted into L1: {hit}");
    gw.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn what_usually_follows_a_request_is_fetched_before_the_client_asks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let mut s = settings(&origin, dir.path());
    s.warming.predict = true;
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    // Eight clients each read an item, then its reviews (a route habit); five of them start
    // at /home and go to /items/1 first (a URL habit).
    for i in 1..=8u8 {
        let ip = [127, 0, 0, 10 + i];
        if i <= 5 {
            get_from(ip, gw.addr, "/home", "").await;
            get_from(ip, gw.addr, "/items/1", "").await;
        }
        get_from(ip, gw.addr, &format!("/items/{i}"), "").await;
        get_from(ip, gw.addr, &format!("/items/{i}/reviews"), "").await;
    }
    // The model is rebuilt every second from what the journal has written (rows reach the
    // file within 5 s).
    let template = |m: &Value| {
        m["model"]["strongest"].as_array().is_some_and(|a| {
            a.iter().any(|p| {
                p["by"] == "template"
                    && p["from"] == "/items/{id}"
                    && p["to"] == "/items/{id}/reviews"
            })
        })
    };
    let by_url = |m: &Value| {
        m["model"]["strongest"].as_array().is_some_and(|a| {
            a.iter().any(|p| {
                p["from"] == format!("{HOST}/home") && p["to"] == format!("{HOST}/items/1")
            })
        })
    };
    assert!(
        eventually(Duration::from_secs(20), async || {
            let m = status(&gw).await;
            template(&m) && by_url(&m)
        })
        .await,
        "{}",
        status(&gw).await
    );
    // An item no one has read yet: its reviews are fetched as soon as it is asked for.
    let client = [127, 0, 0, 50];
    get_from(client, gw.addr, "/items/99", "").await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            origin_paths(&origin)
                .iter()
                .any(|p| p == "/items/99/reviews")
        })
        .await,
        "{:?}",
        origin_paths(&origin)
    );
    assert!(
        metric_reaches(
            gw.admin_addr,
            "tierd_warm_fetches_total",
            &[("trigger", "predict"), ("outcome", "fetched")],
            1.0,
            Duration::from_secs(5)
        )
        .await
    );
    let next = get_from(client, gw.addr, "/items/99/reviews", "").await;
    assert!(cache_status(&next).contains("hit"), "{next}");
    assert_eq!(
        metric_at(gw.admin_addr, "tierd_warm_used_total", &[]).await,
        1.0
    );
    // By URL: once everything has expired, /home brings /items/1 back before it is asked for.
    clock.advance(Duration::from_secs(120));
    let before = origin.hits();
    get_from([127, 0, 0, 51], gw.addr, "/home", "").await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            origin_paths(&origin)[before as usize..]
                .iter()
                .any(|p| p == "/items/1")
        })
        .await,
        "{:?} {}",
        origin_paths(&origin),
        status(&gw).await
    );
    // Both predictions were fetched once, and the client that comes next is served the warm
    // copy.
    assert!(
        metric_reaches(
            gw.admin_addr,
            "tierd_warm_fetches_total",
            &[("trigger", "predict"), ("outcome", "fetched")],
            2.0,
            Duration::from_secs(5)
        )
        .await
    );
    let r = get_from([127, 0, 0, 51], gw.addr, "/items/1", "").await;
    assert!(cache_status(&r).contains("hit"), "{r}");
    assert_eq!(
        metric_at(gw.admin_addr, "tierd_warm_used_total", &[]).await,
        2.0
    );
    gw.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn a_failing_origin_makes_warming_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let mut s = settings(&origin, dir.path());
    s.warming.urls = vec![
        format!("http://{HOST}/fail"),
        format!("http://{HOST}/items/1"),
    ];
    // One at a time, so the second waits for the first's answer.
    s.warming.concurrency = 1;
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    let (st, summary) = warm(&gw, "?wait=true").await;
    assert_eq!(st, 200, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    // The 503 started a backoff: the next fetch waited for it to end (at least half a second,
    // the first step jittered) before it went.
    assert_eq!(summary["fetched"], 1, "{summary}");
    assert!(summary["duration_ms"].as_u64() >= Some(500), "{summary}");
    let shown = status(&gw).await;
    assert_eq!(
        shown["settings"]["urls"][0],
        format!("{HOST}/fail"),
        "{shown}"
    );
    assert_eq!(
        metric_at(
            gw.admin_addr,
            "tierd_warm_fetches_total",
            &[("outcome", "failed")]
        )
        .await,
        1.0
    );
    gw.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn two_nodes_on_one_redis_fetch_each_key_once() {
    let redis = common::redis::RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let node = |dir: &std::path::Path| {
        let mut s = settings(&origin, dir);
        common::with_l2(&mut s, format!("redis://127.0.0.1:{}", redis.port));
        s.warming.urls = (1..=5)
            .map(|i| format!("http://{HOST}/items/{i}"))
            .collect();
        s
    };
    let a = Gateway::start(&node(dir_a.path()), clock.clone(), None)
        .await
        .unwrap();
    let b = Gateway::start(&node(dir_b.path()), clock.clone(), None)
        .await
        .unwrap();
    let ((sa, ra), (sb, rb)) = tokio::join!(warm(&a, "?wait=true"), warm(&b, "?wait=true"));
    assert_eq!((sa, sb), (200, 200), "{ra} {rb}");
    let paths = origin_paths(&origin);
    for i in 1..=5 {
        let p = format!("/items/{i}");
        assert_eq!(
            paths.iter().filter(|x| **x == p).count(),
            1,
            "{p} fetched once: {paths:?} {ra} {rb}"
        );
    }
    let n = |r: &Value, k: &str| r[k].as_u64().unwrap_or(0);
    let leased = |r: &Value| r["skipped"]["leased"].as_u64().unwrap_or(0);
    assert_eq!(n(&ra, "fetched") + n(&rb, "fetched"), 5, "{ra} {rb}");
    assert_eq!(leased(&ra) + leased(&rb), 5, "{ra} {rb}");
    // Each node finds the other's in L2.
    for gw in [&a, &b] {
        for i in 1..=5 {
            let r = get_from([127, 0, 0, 9], gw.addr, &format!("/items/{i}"), "").await;
            assert!(cache_status(&r).contains("hit"), "{r}");
        }
    }
    assert_eq!(origin.hits(), 5);
    a.stop(true).await;
    b.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn schedules_refresh_ahead_and_purges_warm_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let mut s = settings(&origin, dir.path());
    s.warming.schedules = vec!["0 * * * *".into()];
    s.warming.refresh_threshold = 0.1;
    s.rules[0].warm_after_purge = true;
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    // /items/1 ten times in the hour: asked again within its 60 s lifetime with probability
    // 1 - e^(-10/3600 * 60) = 0.15, over the 0.1 threshold. /items/2 once: not hot.
    for _ in 0..10 {
        get_from([127, 0, 0, 2], gw.addr, "/items/1", "").await;
    }
    get_from([127, 0, 0, 2], gw.addr, "/items/2", "").await;
    assert!(
        eventually(Duration::from_secs(10), async || status(&gw).await
            ["hot_urls"]
            == 1)
        .await,
        "{}",
        status(&gw).await
    );
    let refreshes = async || {
        metric_at(
            gw.admin_addr,
            "tierd_warm_fetches_total",
            &[("trigger", "refresh")],
        )
        .await
    };
    // Refresh-ahead: nothing while the entry has more than a tenth of its lifetime left ...
    // (Two ticks seen after the move: a refresh the first had started would have landed.)
    for step in [50, 1] {
        clock.advance(Duration::from_secs(step));
        let now_ms = clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            eventually(Duration::from_secs(5), async || {
                status(&gw).await["last_tick_ms"].as_u64() >= Some(now_ms)
            })
            .await
        );
    }
    assert_eq!(refreshes().await, 0.0);
    // ... then, 5 s before it expires, it is fetched again.
    clock.advance(Duration::from_secs(4));
    assert!(eventually(Duration::from_secs(5), async || refreshes().await == 1.0).await);
    let hits = origin.hits();
    clock.advance(Duration::from_secs(10));
    let r = get_from([127, 0, 0, 3], gw.addr, "/items/1", "").await;
    assert!(
        cache_status(&r).contains("hit"),
        "past its first lifetime, still fresh: {r}"
    );
    assert_eq!(origin.hits(), hits);
    // /items/2 (not hot) was left to expire.
    let r = get_from([127, 0, 0, 3], gw.addr, "/items/2", "").await;
    assert!(!cache_status(&r).contains("hit"), "{r}");

    // A purge of /items/1: its rule says warm it again at once.
    let purged = common::admin_post_at(
        gw.admin_addr,
        "/_tierd/purge",
        Some(TOKEN),
        &format!(r#"{{"url": "http://{HOST}/items/1"}}"#),
    )
    .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert!(
        metric_reaches(
            gw.admin_addr,
            "tierd_warm_fetches_total",
            &[("trigger", "purge"), ("outcome", "fetched")],
            1.0,
            Duration::from_secs(5)
        )
        .await
    );
    let r = get_from([127, 0, 0, 3], gw.addr, "/items/1", "").await;
    assert!(cache_status(&r).contains("hit"), "{r}");

    // The hourly schedule: due once the clock crosses the hour.
    assert!(status(&gw).await["schedule"][0]["next_ms"].is_u64());
    clock.advance(Duration::from_secs(3600));
    assert!(
        eventually(Duration::from_secs(10), async || {
            status(&gw).await["last_runs"][0]["trigger"] == "schedule"
        })
        .await,
        "{}",
        status(&gw).await
    );
    gw.stop(true).await;
    origin.stop().await;
}

/// The library: an application with routes warms itself through its own listener.
#[actix_web::test]
async fn an_app_embedding_the_cache_warms_its_own_routes() {
    use actix_web::{web, App, HttpResponse, HttpServer};
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let cache = tierd::Cache::builder()
        .duckdb(dir.path().join("l3.duckdb"))
        .admin_token(TOKEN)
        .warming(tierd::WarmingConfig {
            enabled: true,
            on_start: false,
            urls: vec![format!("http://{HOST}/items/7")],
            ..Default::default()
        })
        .build()
        .unwrap();
    let (app_cache, counted) = (cache.clone(), calls.clone());
    let srv = HttpServer::new(move || {
        let c = counted.clone();
        App::new()
            .wrap(app_cache.middleware())
            .service(web::scope("/_tierd").configure(app_cache.admin()))
            .route(
                "/items/{id}",
                web::get().to(move || {
                    let c = c.clone();
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        HttpResponse::Ok()
                            .insert_header(("cache-control", "max-age=60"))
                            .body("item")
                    }
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = srv.addrs()[0];
    let server = srv.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    cache.start_warming(addr).unwrap();
    let r = common::send(
        common::client()
            .post(format!("http://{addr}/_tierd/warm?wait=true"))
            .insert_header(("authorization", format!("Bearer {TOKEN}"))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let summary: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(summary["fetched"], 1, "{summary}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let hit = get_from([127, 0, 0, 2], addr, "/items/7", "").await;
    assert!(cache_status(&hit).contains("hit"), "{hit}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the handler ran once, for the warm fetch"
    );
    handle.stop(true).await;
    cache.shutdown().await;
}
