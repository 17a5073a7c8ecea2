//! The product run the way operators and embedders run it: for a while with Redis on, with
//! faults injected, under a slow origin, and embedded in a routed actix-web app. Each test here
//! names a defect found that way and fails if it comes back.

use crate::common;

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::redis::RedisServer;
use common::{Harness, Reply};
use tierd::cache::{CacheHeaders, ResponseCache};
use tierd::clock::ManualClock;

/// Subscribers on the invalidation channel of `redis`.
fn subscribers(redis: &RedisServer) -> u64 {
    redis
        .cli(&["PUBSUB", "NUMSUB", "tierd:invalidate"])
        .and_then(|s| s.lines().nth(1).and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

async fn gateway_on(redis_url: String) -> Harness {
    Harness::with(
        |req, n| Reply::ok(format!("{} #{n}", req.path())).cc("max-age=600"),
        move |s| common::with_l2(s, redis_url),
    )
    .await
}

/// Issue: with L2 on, the subscription's keep-alive PING was answered (in subscribed mode) with
/// an array that was not parsed, so the subscription was dropped and L1 wiped every 5 s. A
/// gateway on a real Redis, RESP2 and RESP3, runs for 16 s (three keep-alive rounds): the entry
/// stored at the start is still served from L1, L1 was never cleared, and a purge published
/// by another node at the end still arrives.
#[actix_web::test]
async fn a_healthy_subscription_keeps_l1_for_resp2_and_resp3() {
    let (r2, r3) = (RedisServer::start(), RedisServer::start());
    let h2 = gateway_on(r2.url()).await;
    let h3 = gateway_on(format!("{}?protocol=resp3", r3.url())).await;
    for (h, r) in [(&h2, &r2), (&h3, &r3)] {
        assert!(
            common::eventually(Duration::from_secs(5), async || subscribers(r) == 1).await,
            "the gateway subscribed"
        );
        assert_eq!(h.get("/hot").await.text(), "/hot #1");
        assert_eq!(h.get("/hot").await.detail(), "l1");
    }
    tokio::time::sleep(Duration::from_secs(16)).await;
    for (name, h, r) in [("resp2", &h2, &r2), ("resp3", &h3, &r3)] {
        let res = h.get("/hot").await;
        assert_eq!(res.text(), "/hot #1", "{name}: served from storage");
        assert_eq!(res.detail(), "l1", "{name}: still in L1 after 16 s");
        let cleared = common::metric_at(h.gw.admin_addr, "tierd_l1_resyncs_total", &[]).await;
        assert_eq!(cleared, 0.0, "{name}: L1 never cleared");
        assert_eq!(subscribers(r), 1, "{name}: still subscribed");
        // Another node's purge still arrives on the same subscription. That node has purged
        // the shared L2 before publishing, as tierd does.
        r.flushall();
        let wire = r#"{"v":1,"node":"other","sent_us":0,"selector":{"kind":"prefix","value":{"host":null,"prefix":"/hot"}}}"#;
        r.cli(&["PUBLISH", "tierd:invalidate", wire]).unwrap();
        let purged = common::eventually(Duration::from_secs(5), async || {
            h.gw.state.store.l1().sync();
            h.gw.state.store.l1().stats().entries == 0
        })
        .await;
        assert!(purged, "{name}: a remote purge still removes the L1 entry");
        assert_eq!(h.get("/hot").await.text(), "/hot #2", "{name}");
    }
    h2.stop().await;
    h3.stop().await;
}

/// When the subscription really is lost (Redis drops the connection), invalidations may have
/// been missed in between: the gateway subscribes again and clears L1, once, counted as
/// `resubscribed`; the entry then comes from L2.
#[actix_web::test]
async fn a_lost_subscription_is_restored_and_l1_cleared_once() {
    let r = RedisServer::start();
    let h = gateway_on(r.url()).await;
    assert!(
        common::eventually(Duration::from_secs(5), async || subscribers(&r) == 1).await,
        "the gateway subscribed"
    );
    assert_eq!(h.get("/hot").await.text(), "/hot #1");
    common::written_at(h.gw.admin_addr, "l2", 1).await;
    assert_eq!(h.get("/hot").await.detail(), "l1");
    let resyncs = async || {
        common::metric_at(
            h.gw.admin_addr,
            "tierd_l1_resyncs_total",
            &[("reason", "resubscribed")],
        )
        .await
    };
    assert_eq!(resyncs().await, 0.0);
    let killed = r.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    assert_eq!(killed, "1", "one subscription connection dropped");
    let restored = common::eventually(Duration::from_secs(10), async || {
        subscribers(&r) == 1 && resyncs().await == 1.0
    })
    .await;
    assert!(restored, "subscribed again, L1 cleared once");
    let after = h.get("/hot").await;
    assert_eq!(after.text(), "/hot #1");
    assert_eq!(after.detail(), "l2", "L1 was cleared; L2 still had it");
    assert_eq!(h.origin.hits(), 1);
    h.stop().await;
}

/// An application with routes, embedding the cache the way the README shows, at one level.
#[derive(Clone, Copy, Debug)]
enum Level {
    App,
    Scope,
    Resource,
}

struct EmbeddedApp {
    addr: std::net::SocketAddr,
    clock: Arc<ManualClock>,
    calls: Arc<AtomicU64>,
    handle: actix_web::dev::ServerHandle,
    state: Arc<tierd::cache::CacheState>,
    /// Holds `/slow/{id}` until opened.
    slow: common::Gate,
}

async fn item(path: web::Path<u32>, calls: web::Data<AtomicU64>) -> HttpResponse {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    HttpResponse::Ok()
        .insert_header(("cache-control", "max-age=60, stale-while-revalidate=60"))
        .body(format!("item {} call {n}", path.into_inner()))
}

async fn slow_item(
    path: web::Path<u32>,
    calls: web::Data<AtomicU64>,
    gate: web::Data<common::Gate>,
) -> HttpResponse {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    gate.passed().await;
    HttpResponse::Ok()
        .insert_header(("cache-control", "max-age=60"))
        .body(format!("slow {} call {n}", path.into_inner()))
}

async fn update(calls: web::Data<AtomicU64>) -> HttpResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    HttpResponse::NoContent().finish()
}

async fn boom() -> HttpResponse {
    panic!("a handler bug")
}

impl EmbeddedApp {
    async fn start(level: Level) -> EmbeddedApp {
        let clock = Arc::new(ManualClock::new());
        let mut settings = tierd::config::Settings::default();
        settings.tiers.l2.enabled = false;
        settings.tiers.l3.enabled = false;
        let state = tierd::Cache::builder()
            .settings(settings.clone())
            .clock(clock.clone())
            .build()
            .unwrap()
            .state()
            .clone();
        let calls = web::Data::new(AtomicU64::new(0));
        let counter = calls.clone().into_inner();
        let (st, data) = (state.clone(), calls.clone());
        let slow = common::Gate::new();
        let gate = web::Data::new(slow.clone());
        fn routes(cfg: &mut web::ServiceConfig) {
            cfg.route("/items/{id}", web::get().to(item))
                .route("/items/{id}", web::put().to(update))
                .route("/slow/{id}", web::get().to(slow_item))
                .route("/boom", web::get().to(boom));
        }
        macro_rules! serve {
            ($app:expr) => {{
                let srv = HttpServer::new($app)
                    .workers(1)
                    .disable_signals()
                    .bind("127.0.0.1:0")
                    .unwrap();
                (srv.addrs()[0], srv.run())
            }};
        }
        let (addr, server) = match level {
            // The README's recipe: the whole app, its router included, inside the cache.
            Level::App => serve!(move || {
                App::new()
                    .app_data(data.clone())
                    .app_data(gate.clone())
                    .wrap(ResponseCache::new(st.clone()))
                    .wrap(CacheHeaders::new(st.clock.clone()))
                    // An application middleware that awaits after the response is built (an
                    // async audit log, say): the response's copy of the request lives on.
                    .wrap(actix_web::middleware::from_fn(
                        |req, next: actix_web::middleware::Next<_>| async move {
                            let res = next.call(req).await?;
                            tokio::task::yield_now().await;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            Ok::<_, actix_web::Error>(res)
                        },
                    ))
                    .service(web::scope("/app").configure(routes))
            }),
            Level::Scope => serve!(move || {
                App::new()
                    .app_data(data.clone())
                    .app_data(gate.clone())
                    .service(
                        web::scope("/app")
                            .wrap(ResponseCache::new(st.clone()))
                            .wrap(CacheHeaders::new(st.clock.clone()))
                            .configure(routes),
                    )
            }),
            Level::Resource => serve!(move || {
                let cache = ResponseCache::new(st.clone());
                let headers = CacheHeaders::new(st.clock.clone());
                App::new()
                    .app_data(data.clone())
                    .app_data(gate.clone())
                    .service(
                        web::scope("/app")
                            .service(
                                web::resource("/items/{id}")
                                    .route(web::get().to(item))
                                    .route(web::put().to(update))
                                    .wrap(cache.clone())
                                    .wrap(headers.clone()),
                            )
                            .service(
                                web::resource("/slow/{id}")
                                    .route(web::get().to(slow_item))
                                    .wrap(cache.clone())
                                    .wrap(headers.clone()),
                            )
                            .service(
                                web::resource("/boom")
                                    .route(web::get().to(boom))
                                    .wrap(cache)
                                    .wrap(headers),
                            ),
                    )
            }),
        };
        let handle = server.handle();
        actix_web::rt::spawn(server);
        EmbeddedApp {
            addr,
            clock,
            calls: counter,
            handle,
            state,
            slow,
        }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> common::Resp {
        let url = format!("http://{}{path}", self.addr);
        let mut req = common::client().request(method.parse().unwrap(), url);
        for h in headers {
            req = req.insert_header(*h);
        }
        common::send(req).await
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Issue: wrapping an app (or scope) that has routes answered every request 502, because the
/// middleware kept a copy of the request while actix's router needed it to itself; a
/// panicking handler gave a gateway's 502. At each level: a miss reaches the routed handler
/// with its path parameter, a hit is served from L1, a conditional request gets 304, a PUT
/// invalidates, a stale-while-revalidate hit refreshes through the router in the background,
/// concurrent misses coalesce into one handler call, and a panicking handler gives 500 while
/// the app keeps serving.
#[actix_web::test]
async fn the_cache_works_wrapped_around_an_app_a_scope_and_a_resource() {
    for level in [Level::App, Level::Scope, Level::Resource] {
        let app = EmbeddedApp::start(level).await;
        let miss = app.send("GET", "/app/items/7", &[]).await;
        assert_eq!(miss.status, 200, "{level:?}: {}", miss.text());
        assert_eq!(miss.text(), "item 7 call 1", "{level:?}");
        assert_eq!(
            miss.cache_status(),
            "tierd; fwd=uri-miss; fwd-status=200; stored"
        );

        let hit = app.send("GET", "/app/items/7", &[]).await;
        assert_eq!(
            (hit.text().as_str(), hit.detail().as_str()),
            ("item 7 call 1", "l1")
        );
        let etag = hit.header("etag").expect("an ETag");
        let not_modified = app
            .send("GET", "/app/items/7", &[("if-none-match", &etag)])
            .await;
        assert_eq!(not_modified.status, 304, "{level:?}");
        assert_eq!(
            app.calls(),
            1,
            "{level:?}: hits and 304s never reach the handler"
        );

        let put = app.send("PUT", "/app/items/7", &[]).await;
        assert_eq!(put.status, 204, "{level:?}");
        let refetched = app.send("GET", "/app/items/7", &[]).await;
        assert_eq!(
            refetched.text(),
            "item 7 call 3",
            "{level:?}: the PUT invalidated"
        );

        // Stale within stale-while-revalidate: served at once, refreshed through the router.
        app.clock.advance(Duration::from_secs(61));
        let stale = app.send("GET", "/app/items/7", &[]).await;
        assert_eq!(stale.text(), "item 7 call 3", "{level:?}");
        assert!(
            stale.cache_status().contains("ttl=-1"),
            "{}",
            stale.cache_status()
        );
        let refreshed = common::eventually(Duration::from_secs(5), async || app.calls() == 4).await;
        assert!(
            refreshed,
            "{level:?}: the background refresh reached the handler"
        );
        let mut fresh = String::new();
        common::eventually(Duration::from_secs(5), async || {
            fresh = app.send("GET", "/app/items/7", &[]).await.text();
            fresh == "item 7 call 4"
        })
        .await;
        assert_eq!(fresh, "item 7 call 4", "{level:?}: the refresh was stored");

        // Twenty misses for one key: the handler is held until the other nineteen wait on the
        // first one's call.
        let before = app.calls();
        let waiting_before = app.state.metrics.cache.coalesced_waiters.get();
        let url = format!("http://{}/app/slow/1", app.addr);
        let concurrent = actix_web::rt::spawn(futures_util::future::join_all(
            (0..20).map(move |_| common::send(common::client().get(url.clone()))),
        ));
        let joined = common::eventually(Duration::from_secs(5), async || {
            app.calls() == before + 1
                && app.state.metrics.cache.coalesced_waiters.get() == waiting_before + 19
        })
        .await;
        assert!(joined, "{level:?}: one handler call, nineteen waiters");
        app.slow.open();
        for r in concurrent.await.unwrap() {
            assert_eq!(r.text(), format!("slow 1 call {}", before + 1), "{level:?}");
        }
        assert_eq!(
            app.calls(),
            before + 1,
            "{level:?}: one handler call for 20 misses"
        );

        let boom = app.send("GET", "/app/boom", &[]).await;
        assert_eq!(boom.status, 500, "{level:?}");
        assert_eq!(
            boom.text(),
            "Internal Server Error\n",
            "{level:?}: an opaque body"
        );
        let after = app.send("GET", "/app/items/7", &[]).await;
        assert_eq!(after.status, 200, "{level:?}: still serving after a panic");
        app.handle.stop(false).await;
    }
}

/// Issue: with the origin slower than `coalesce_timeout_ms`, every waiter gave up and fetched
/// the key itself (200 clients, 200 origin requests). Now exactly one origin request is made
/// however slow the origin: without a stored copy every client waits for that one fetch; with
/// a stale copy, waiters past the coalesce timeout are served it (`detail=origin-slow`) while
/// the one fetch completes and is stored.
#[actix_web::test]
async fn a_slow_origin_gets_one_request_per_key_however_many_wait() {
    let h = Harness::with(
        |req, n| {
            Reply::ok(format!("{} #{n}", req.path()))
                .cc("max-age=60")
                .delay_ms(1_500)
        },
        |s| {
            s.cache.coalesce_timeout_ms = 200;
            s.upstream.timeout_ms = 4_000;
        },
    )
    .await;
    let cold = (0..200).map(|_| h.get("/hot"));
    let answers = futures_util::future::join_all(cold).await;
    assert_eq!(h.origin.hits(), 1, "one origin request for 200 clients");
    let mut collapsed = 0;
    for r in &answers {
        assert_eq!((r.status, r.text().as_str()), (200, "/hot #1"));
        collapsed += usize::from(r.cache_status().contains("collapsed"));
    }
    assert_eq!(collapsed, 199, "every other client waited for the leader");
    let waited = common::metric_at(h.gw.admin_addr, "tierd_coalesced_waiters_total", &[]).await;
    assert_eq!(waited, 199.0);

    // Stale now (no stale-while-revalidate): the leader revalidates, slowly; the others get
    // the stale copy once the coalesce timeout passes, and nobody else goes to the origin.
    h.advance(61);
    let started = std::time::Instant::now();
    let stale = (0..50).map(|_| h.get("/hot"));
    let answers = futures_util::future::join_all(stale).await;
    assert_eq!(h.origin.hits(), 2, "one revalidation for 50 clients");
    let slow: Vec<_> = answers
        .iter()
        .filter(|r| r.cache_status() == "tierd; hit; ttl=-1; detail=origin-slow")
        .collect();
    assert_eq!(
        slow.len(),
        49,
        "waiters served stale past the coalesce timeout"
    );
    assert!(slow
        .iter()
        .all(|r| r.text() == "/hot #1" && r.age() == Some(61)));
    let led: Vec<_> = answers.iter().filter(|r| r.text() == "/hot #2").collect();
    assert_eq!(led.len(), 1, "the leader waited for the origin");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "one slow fetch, not fifty"
    );
    let served_stale = common::metric_at(
        h.gw.admin_addr,
        "tierd_coalesce_timeouts_total",
        &[("result", "stale")],
    )
    .await;
    assert_eq!(served_stale, 49.0);
    assert_eq!(
        h.get("/hot").await.text(),
        "/hot #2",
        "the fetch was stored"
    );
    h.stop().await;
}

/// A `must-revalidate` entry is never served stale to a waiter; an origin that does not
/// answer in time gives every waiter the leader's 504, with a `Cache-Status` saying why, and
/// still one origin request.
#[actix_web::test]
async fn waiters_on_a_hanging_origin_share_its_504() {
    let h = Harness::with(
        |req, n| {
            let r = Reply::ok(format!("{} #{n}", req.path())).cc("max-age=60, must-revalidate");
            if n == 1 {
                r
            } else {
                r.delay_ms(5_000)
            }
        },
        |s| {
            s.cache.coalesce_timeout_ms = 100;
            s.upstream.timeout_ms = 700;
        },
    )
    .await;
    assert_eq!(h.get("/mr").await.text(), "/mr #1");
    h.advance(61);
    let answers = futures_util::future::join_all((0..20).map(|_| h.get("/mr"))).await;
    assert_eq!(h.origin.hits(), 2, "one origin request for 20 clients");
    for r in &answers {
        assert_eq!(r.status, 504, "{}", r.cache_status());
        assert_eq!(r.text(), "Gateway Timeout\n");
        let cs = r.cache_status();
        assert!(
            cs == "tierd; fwd=stale; detail=stale-must-revalidate"
                || cs == "tierd; fwd=stale; collapsed; detail=stale-must-revalidate",
            "{cs}"
        );
    }
    h.stop().await;
}

/// A small filesystem of its own (tmpfs; the test command runs as root), so the disk can fill
/// up under a running tierd without touching the machine's. Unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}M"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Fills the disk, leaving `slack` bytes free.
    fn fill_leaving(&self, slack: u64) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(slack)).unwrap();
    }

    fn free(&self) {
        std::fs::remove_file(self.path("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The `state` of `tier` in `/readyz`.
async fn tier_state(admin: u16, tier: &str) -> String {
    let text = common::send(common::client().get(format!("http://127.0.0.1:{admin}/readyz")))
        .await
        .text();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["tiers"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tier"] == tier))
        .map(|t| t["state"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("{tier} not in /readyz: {text}"))
}

async fn until_state(admin: u16, tier: &str, want: &str, within: Duration) -> bool {
    common::eventually(within, async || tier_state(admin, tier).await == want).await
}

/// Issue: a checkpoint that fails (here: the disk fills up) makes DuckDB invalidate the
/// database; tierd then failed every L3 read and write until restarted, logged two WARN lines
/// per batch, and `/readyz` said L3 was fine. Now the binary, with L3 on a small disk: the
/// disk fills, the next checkpoint fails, `/readyz` shows L3 reopening with one ERROR line,
/// requests are still answered (never a 5xx), and once space is freed L3 reopens on its own;
/// after a restart on the same file, entries written before and after the outage are served
/// from L3.
#[actix_web::test]
async fn a_database_duckdb_invalidated_is_reopened_once_the_disk_has_room() {
    let disk = SmallDisk::mount(24);
    let clock = Arc::new(ManualClock::new());
    let origin = common::Origin::start(clock, |req, _| {
        Reply::ok(vec![b'x'; 8 * 1024])
            .cc("max-age=3600")
            .header("x-path", req.path())
            .no_date()
    })
    .await;
    let db = disk.path("l3.duckdb").display().to_string();
    // The log goes beside the small disk, not on it (it fills up), and is removed with the test.
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("tierd.log");
    let start = |port: u16, admin: u16| {
        let mut cmd = common::tierd_command();
        cmd.arg("serve")
            .env("TIERD__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("TIERD__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
            .env("TIERD__UPSTREAM__URL", format!("http://{}", origin.addr))
            .env("TIERD__LOG__LEVEL", "info")
            .env("TIERD__TIERS__L3__ENABLED", "true")
            .env("TIERD__TIERS__L3__PATH", &db)
            .env("TIERD__TIERS__L3__CHECKPOINT_INTERVAL_SECONDS", "1")
            .env("TIERD__JOURNAL__ENABLED", "true")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::null());
        common::Proc(cmd.spawn().expect("tierd binary"))
    };
    let get = |port: u16, path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        async move { common::send(common::client().get(url)).await }
    };
    let (port, admin) = (common::free_port(), common::free_port());
    let mut node = start(port, admin);
    common::wait_up(port).await;
    for i in 0..10 {
        assert_eq!(get(port, &format!("/before/{i}")).await.status, 200);
    }
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    common::written_at(admin_addr, "l3", 10).await;
    assert_eq!(tier_state(admin, "l3").await, "ok");

    // Room for the WAL to grow a little, not for the checkpoint to write a new block.
    disk.fill_leaving(96 * 1024);
    let mut i = 0;
    let invalidated = loop {
        if tier_state(admin, "l3").await == "reopening" {
            break true;
        }
        if i == 400 {
            break false;
        }
        let r = get(port, &format!("/during/{i}")).await;
        assert_eq!(r.status, 200, "requests are answered while L3 fails");
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(invalidated, "a failed checkpoint puts L3 in 'reopening'");
    let failed = common::metric_at(admin_addr, "tierd_tier_failed", &[("tier", "l3")]).await;
    assert_eq!(failed, 1.0);
    let up = common::metric_at(admin_addr, "tierd_tier_up", &[("tier", "l3")]).await;
    assert_eq!(up, 0.0, "tierd_tier_up says L3 is down while it reopens");
    // Misses while L3 is out reach the origin and are answered; nothing blocks.
    for j in 0..50 {
        let r = get(port, &format!("/outage/{j}")).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(get(port, "/before/3").await.detail(), "l1");
    // The journal holds rows for a few seconds to write them in large batches; the summary
    // writes what it holds first, which on a full disk fails: those rows are dropped, counted.
    common::send(common::client().get(format!("http://{admin_addr}/_tierd/analytics/summary")))
        .await;
    assert!(
        common::metric_at(
            admin_addr,
            "tierd_journal_rows_total",
            &[("outcome", "dropped")]
        )
        .await
            > 0.0,
        "rows the journal could not write while the disk was full are counted as dropped"
    );

    disk.free();
    assert!(
        until_state(admin, "l3", "ok", Duration::from_secs(20)).await,
        "L3 reopened on its own once the disk had room"
    );
    assert_eq!(
        common::metric_at(admin_addr, "tierd_tier_failed", &[("tier", "l3")]).await,
        0.0
    );
    assert_eq!(
        common::metric_at(admin_addr, "tierd_tier_up", &[("tier", "l3")]).await,
        1.0
    );
    assert_eq!(get(port, "/after/1").await.status, 200);
    // The journal writes again now.
    let journal_back = common::eventually(Duration::from_secs(20), async || {
        get(port, "/after/2").await;
        common::metric_at(admin_addr, "tierd_journal_failed", &[]).await == 0.0
    })
    .await;
    assert!(
        journal_back,
        "the journal reopened its file once the disk had room"
    );
    let written = common::metric_at(
        admin_addr,
        "tierd_tier_writes_total",
        &[("tier", "l3"), ("outcome", "written")],
    )
    .await;
    common::written_at(admin_addr, "l3", written as u64).await;
    assert!(common::sigterm(&mut node).success());

    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    // One ERROR line per component the full disk stopped: L3, and the journal (its own file
    // on the same disk), each rate-limited rather than one per failed write.
    let (journal_errors, errors): (Vec<&str>, Vec<&str>) = text
        .lines()
        .filter(|l| l.contains("ERROR"))
        .partition(|l| l.contains("journal"));
    assert_eq!(
        errors.len(),
        1,
        "one ERROR line for the L3 outage: {errors:#?}"
    );
    assert!(errors[0].contains("invalidated"), "{}", errors[0]);
    assert!(
        (1..=2).contains(&journal_errors.len()),
        "the journal's outage logged once or twice: {journal_errors:#?}"
    );
    let warns = text.lines().filter(|l| l.contains("WARN")).count();
    assert!(
        warns <= 10,
        "the outage does not flood the log ({warns} WARN lines):\n{text}"
    );
    assert!(text.contains("L3 reopened"), "{text}");

    // The file is whole: a new process serves what was written before and after the outage.
    let mut node = start(port, admin);
    common::wait_up(port).await;
    for path in ["/before/3", "/after/1"] {
        let r = get(port, path).await;
        assert_eq!((r.status, r.detail().as_str()), (200, "l3"), "{path}");
    }
    assert!(common::sigterm(&mut node).success());
    origin.stop().await;
}

/// One keep-alive client: sequential requests for unique paths on one connection, until the
/// connection ends. Returns the paths answered in full.
async fn keep_alive_client(addr: std::net::SocketAddr, id: usize, hot: bool) -> Ended {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut answered = Vec::new();
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return Ended {
            answered,
            unanswered: false,
        };
    };
    let mut buf = Vec::new();
    for n in 0.. {
        let path = if hot {
            format!("/hot{id}")
        } else {
            format!("/c{id}/{n}")
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            return Ended {
                answered,
                unanswered: false,
            };
        }
        // Read one response: head, then Content-Length bytes.
        let complete = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    buf.drain(..end + 4 + len);
                    break Some(head.contains("connection: close"));
                }
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break None,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        match complete {
            Some(close) => {
                answered.push(path);
                if close {
                    return Ended {
                        answered,
                        unanswered: false,
                    };
                }
            }
            None => {
                return Ended {
                    answered,
                    unanswered: true,
                }
            }
        }
    }
    Ended {
        answered,
        unanswered: false,
    }
}

/// How a keep-alive client's connection ended.
struct Ended {
    answered: Vec<String>,
    /// The connection ended with a request written and no response read.
    unanswered: bool,
}

/// Issue: on SIGTERM, requests already sent on kept-alive connections were dropped unanswered
/// (8-10 per run): a connection between two requests was closed while the client's next one
/// was on its way. 64 keep-alive clients keep sending (half on hits, half on misses the origin
/// sees); SIGTERM arrives mid-stream. Every connection ends right after a response marked
/// `Connection: close`, never with a request in flight, and every request the origin received
/// was answered.
#[actix_web::test]
async fn sigterm_answers_every_request_it_received_on_kept_alive_connections() {
    let clock = Arc::new(ManualClock::new());
    let origin = common::Origin::start(clock, |req, _| {
        Reply::ok(req.path().to_owned())
            .cc("max-age=600")
            .delay_ms(3)
    })
    .await;
    let port = common::free_port();
    let mut node = common::spawn_tierd(port, &origin, &[]);
    common::wait_up(port).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let clients: Vec<_> = (0..64)
        .map(|id| actix_web::rt::spawn(keep_alive_client(addr, id, id % 2 == 0)))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let term = std::time::Instant::now();
    common::signal(&node, "-TERM");
    let mut answered = std::collections::HashSet::new();
    let mut unanswered = 0;
    for c in clients {
        let ended = c.await.unwrap();
        unanswered += usize::from(ended.unanswered);
        answered.extend(ended.answered);
    }
    assert_eq!(
        unanswered, 0,
        "connections closed with a request in flight (tierd closes only after a response \
         marked Connection: close)"
    );
    let status = node.wait().unwrap();
    assert!(status.success());
    assert!(term.elapsed() < Duration::from_secs(8), "drained promptly");
    let received: Vec<String> = origin
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(_, uri, _)| uri.clone())
        .collect();
    assert!(
        received.len() > 100,
        "load before the signal: {}",
        received.len()
    );
    let dropped: Vec<&String> = received.iter().filter(|p| !answered.contains(*p)).collect();
    assert!(
        dropped.is_empty(),
        "received by the origin, never answered: {dropped:?}"
    );
    origin.stop().await;
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Issue: L1 weighed only bodies and response headers, so variants selected by large request
/// headers (`Vary: User-Agent`) held far more than `tiers.l1.max_bytes`. 600 variants with a
/// 2,000-byte `User-Agent` each: the weight L1 reports covers at least the values it holds.
#[actix_web::test]
async fn l1_weighs_the_request_header_values_its_variants_keep() {
    let h = Harness::with(
        |_, _| {
            Reply::ok(vec![b'b'; 100])
                .cc("max-age=600")
                .header("vary", "user-agent")
        },
        |s| s.tiers.l1.max_bytes = 64 << 20,
    )
    .await;
    for i in 0..600 {
        let ua = format!("{i:04}{}", "u".repeat(1_996));
        let r = h
            .get_with(&format!("/v/{}", i % 30), &[("user-agent", &ua)])
            .await;
        assert_eq!(r.status, 200);
    }
    let l1 = h.gw.state.store.l1();
    l1.sync();
    let stats = l1.stats();
    assert_eq!(stats.entries, 30, "30 URLs, 20 variants each");
    let held = 600 * (2_000 + 100);
    assert!(
        stats.bytes >= held,
        "L1 weighs {} bytes for at least {held} bytes of bodies and Vary values",
        stats.bytes
    );
    h.stop().await;
}

/// Issue: with an 8 MiB L1 and an origin that varies on `Cookie` and `User-Agent` (15 KB
/// values), 6,000 variants were weighed at 3.3 MB while the process grew by 236 MB. The binary,
/// the same traffic: such variants are not stored (`vary_too_large`), and resident memory grows
/// by well under the L1 budget.
#[actix_web::test]
async fn huge_vary_values_do_not_grow_memory_past_the_l1_budget() {
    let clock = Arc::new(ManualClock::new());
    let origin = common::Origin::start(clock, |_, _| {
        Reply::ok(vec![b'b'; 512])
            .cc("max-age=600")
            .header("vary", "cookie, user-agent")
    })
    .await;
    let port = common::free_port();
    let admin = common::free_port();
    let mut node = common::spawn_tierd(
        port,
        &origin,
        &[
            ("TIERD__ADMIN__LISTEN", &format!("127.0.0.1:{admin}")),
            ("TIERD__TIERS__L1__MAX_BYTES", "8388608"),
            ("TIERD__SERVER__MAX_HEADER_BYTES", "65536"),
        ],
    );
    common::wait_up(port).await;
    let url = |i: usize| format!("http://127.0.0.1:{port}/p/{i}");
    // Warm up the connection pools and allocator before the baseline.
    for i in 0..200 {
        common::send(common::client().get(url(i))).await;
    }
    let before = rss(node.id());
    let big = |c: char, i: usize| format!("{i:06}{}", c.to_string().repeat(15_000));
    let client = common::client();
    for chunk in (0..6_000).collect::<Vec<_>>().chunks(50) {
        let sends = chunk.iter().map(|&i| {
            let req = client
                .get(url(i))
                .insert_header(("cookie", format!("s={}", big('c', i))))
                .insert_header(("user-agent", big('u', i)));
            common::send(req)
        });
        for r in futures_util::future::join_all(sends).await {
            assert_eq!(r.status, 200);
        }
    }
    let grown = rss(node.id()).saturating_sub(before);
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let refused = common::metric_at(
        admin_addr,
        "tierd_not_stored_total",
        &[("reason", "vary_too_large")],
    )
    .await;
    assert_eq!(refused, 6_000.0);
    assert!(
        grown < 24 << 20,
        "resident memory grew by {} MiB for an 8 MiB L1",
        grown >> 20
    );
    assert!(common::sigterm(&mut node).success());
    origin.stop().await;
}

/// Issue: with Redis down at startup and no traffic, tierd logged "Redis unreachable" while
/// `/readyz` listed L2 as `ok` (the breaker only opens on failed commands, and there were none).
/// Now a periodic PING keeps L2's state known: `unreachable` (status `degraded`) while Redis is
/// down, `ok` again once it answers, with no request sent.
#[actix_web::test]
async fn readyz_reports_an_unreachable_redis_without_traffic_and_its_return() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let (port, admin) = (common::free_port(), common::free_port());
    let mut cmd = common::tierd_command();
    cmd.arg("serve")
        .env("TIERD__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("TIERD__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .env("TIERD__UPSTREAM__URL", "http://127.0.0.1:9")
        .env("TIERD__TIERS__L2__ENABLED", "true")
        .env("TIERD__TIERS__L2__URL", &url)
        .env("TIERD__TIERS__L3__ENABLED", "false")
        .env("TIERD__DEMO_ORIGIN__ENABLED", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _node = common::Proc(cmd.spawn().expect("tierd binary"));
    common::wait_up(admin).await;
    // `unreachable` after the first failed PING; `circuit_open` once enough have failed.
    let down = common::eventually(Duration::from_secs(15), async || {
        matches!(
            tier_state(admin, "l2").await.as_str(),
            "unreachable" | "circuit_open"
        )
    })
    .await;
    assert!(
        down,
        "L2 never reported down: {}",
        tier_state(admin, "l2").await
    );
    let status = common::send(common::client().get(format!("http://127.0.0.1:{admin}/readyz")))
        .await
        .text();
    assert!(status.contains("\"status\":\"degraded\""), "{status}");
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let up =
        |addr| async move { common::metric_at(addr, "tierd_tier_up", &[("tier", "l2")]).await };
    assert_eq!(up(admin_addr).await, 0.0, "tierd_tier_up says L2 is down");
    redis.restart();
    assert!(
        until_state(admin, "l2", "ok", Duration::from_secs(15)).await,
        "L2 never came back: {}",
        tier_state(admin, "l2").await
    );
    assert_eq!(up(admin_addr).await, 1.0, "and up again");
}
