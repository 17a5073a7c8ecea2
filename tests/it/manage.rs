//! The cache management API over real HTTP, with a real Redis (single server and Cluster) and
//! real DuckDB files: purging one user's entries, purging everything, and asking whether a key
//! is cached (`GET`/`HEAD /_tierd/entry` with `user=` and `header=`), on two nodes.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use common::{
    admin_post_at, client, eventually, rules, send, settings_for, written_at, Origin, Reply, Resp,
};
use serde_json::Value;
use tierd::clock::ManualClock;
use tierd::config::Settings;
use tierd::server::Gateway;
use tierd::store::TierName;

const TOKEN: &str = "manage-token";
const HOST: &str = "api.test";
const ALICE: &str = "Bearer alice-secret-token";
const BOB: &str = "Bearer bob-secret-token";

/// Per-user routes (`/me/...` by `Authorization`, `/orders` by `X-User-Id`), a route keyed by
/// `Accept-Language`, and shared routes.
const RULES: &str = r#"
[[rules]]
path = "/me/{what}"
key = { user = "authorization" }
ttl_seconds = 600

[[rules]]
path = "/orders"
key = { user = "header:X-User-Id" }
ttl_seconds = 600

[[rules]]
path = "/lang"
key = { headers = ["accept-language"] }
ttl_seconds = 600

[[rules]]
path = "/shared/{id}"
ttl_seconds = 600
"#;

/// An origin naming the path, the user and the language it answered for.
async fn origin(clock: &Arc<ManualClock>) -> Origin {
    Origin::start(clock.clone(), |req, n| {
        let h = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        Reply::ok(format!(
            "{} for {} / {} in {} #{n}",
            req.path(),
            h("authorization"),
            h("x-user-id"),
            h("accept-language")
        ))
    })
    .await
}

async fn node(
    origin: &Origin,
    clock: &Arc<ManualClock>,
    tweak: impl FnOnce(&mut Settings),
) -> Gateway {
    let mut s = settings_for(origin.addr);
    s.rules = rules(RULES);
    s.admin.token = TOKEN.into();
    tweak(&mut s);
    Gateway::start(&s, clock.clone(), None)
        .await
        .expect("gateway")
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut r = client()
        .get(format!("http://{}{path}", gw.addr))
        .insert_header(("host", HOST));
    for h in headers {
        r = r.insert_header(*h);
    }
    send(r).await
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/_tierd/entry`'s query for `path` on the public host, with `user=` and `header=` values.
fn entry_query(path: &str, user: Option<&str>, headers: &[&str]) -> String {
    let mut q = format!("url={}", enc(&format!("http://{HOST}{path}")));
    if let Some(u) = user {
        q.push_str(&format!("&user={}", enc(u)));
    }
    for h in headers {
        q.push_str(&format!("&header={}", enc(h)));
    }
    q
}

/// The status of `HEAD /_tierd/entry?<query>`, and the bytes after its head (none).
async fn head_entry(admin: SocketAddr, query: &str) -> (u16, usize) {
    let mut res = client()
        .head(format!("http://{admin}/_tierd/entry?{query}"))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .send()
        .await
        .expect("HEAD entry");
    let body = res.body().await.expect("body");
    (res.status().as_u16(), body.len())
}

async fn get_entry(admin: SocketAddr, query: &str) -> (u16, Value) {
    let r = send(
        client()
            .get(format!("http://{admin}/_tierd/entry?{query}"))
            .insert_header(("authorization", format!("Bearer {TOKEN}"))),
    )
    .await;
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(r.text())),
    )
}

async fn purge(admin: SocketAddr, body: &str) -> (u16, Value) {
    let r = admin_post_at(admin, "/_tierd/purge", Some(TOKEN), body).await;
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(r.text())),
    )
}

/// Whether `path` (for `user`) is held by some tier of `gw`, eventually `want`.
async fn held_becomes(gw: &Gateway, path: &str, user: Option<&str>, want: bool) -> bool {
    let q = entry_query(path, user, &[]);
    let want = if want { 200 } else { 404 };
    eventually(Duration::from_secs(5), async || {
        head_entry(gw.admin_addr, &q).await.0 == want
    })
    .await
}

fn l1_entries(gw: &Gateway) -> u64 {
    gw.state.store.l1().sync();
    gw.state.store.l1().stats().entries
}

fn l3_entries(gw: &Gateway) -> u64 {
    gw.state
        .store
        .tier(TierName::L3)
        .and_then(|t| t.stats())
        .map(|s| s.entries)
        .expect("L3 configured")
}

#[actix_web::test]
async fn a_user_purge_and_a_purge_all_reach_every_tier_of_both_nodes() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock).await;
    let tiers = |file: &str| {
        let (url, path) = (redis.url(), dir.path().join(file));
        move |s: &mut Settings| {
            common::with_l2(s, url);
            common::with_l3(s, &path);
        }
    };
    let a = node(&origin, &clock, tiers("a.duckdb")).await;
    let b = node(&origin, &clock, tiers("b.duckdb")).await;

    // A serves Alice two routes, Bob one, a shared entry and a header-keyed one; B serves Alice
    // a third route and her orders (keyed by X-User-Id), and Bob his.
    let alice = [("authorization", ALICE)];
    let bob = [("authorization", BOB)];
    for (gw, path, h) in [
        (&a, "/me/profile", &alice[..]),
        (&a, "/me/orders", &alice[..]),
        (&a, "/me/profile", &bob[..]),
        (&a, "/shared/1", &[][..]),
        (&a, "/lang", &[("accept-language", "fr")][..]),
        (&b, "/me/settings", &alice[..]),
        (&b, "/orders", &[("x-user-id", "alice-7")][..]),
        (&b, "/orders", &[("x-user-id", "bob-9")][..]),
    ] {
        let r = get(gw, path, h).await;
        assert_eq!(r.status, 200, "{path}");
    }
    written_at(a.admin_addr, "l2", 5).await;
    written_at(a.admin_addr, "l3", 5).await;
    written_at(b.admin_addr, "l2", 3).await;
    written_at(b.admin_addr, "l3", 3).await;
    assert_eq!(redis.records(), 8);

    // Lookups: a user-scoped entry is found with its user's value and only with it; a
    // header-keyed one with its header value; HEAD answers the status and no body.
    let profile = |user: Option<&str>| entry_query("/me/profile", user, &[]);
    assert_eq!(
        head_entry(a.admin_addr, &profile(Some(ALICE))).await,
        (200, 0)
    );
    assert_eq!(
        head_entry(a.admin_addr, &profile(Some(BOB))).await,
        (200, 0)
    );
    assert_eq!(
        head_entry(a.admin_addr, &profile(Some("Bearer carol"))).await,
        (404, 0)
    );
    assert_eq!(head_entry(a.admin_addr, &profile(None)).await, (404, 0));
    // B has it in L2 (shared) though it never served it.
    let (status, v) = get_entry(b.admin_addr, &profile(Some(ALICE))).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["tiers"]["l1"].is_null() && v["tiers"]["l2"].is_array(),
        "{v}"
    );
    assert!(v["tiers"]["l3"].is_null(), "B's own L3 never held it: {v}");
    assert!(
        !v.to_string().contains("alice-secret"),
        "the answer carries the digest, not the value: {v}"
    );
    let orders = entry_query("/orders", Some("alice-7"), &[]);
    assert_eq!(head_entry(b.admin_addr, &orders).await, (200, 0));
    let lang = |l: &str| entry_query("/lang", None, &[&format!("accept-language: {l}")]);
    assert_eq!(head_entry(a.admin_addr, &lang("fr")).await, (200, 0));
    assert_eq!(head_entry(a.admin_addr, &lang("de")).await, (404, 0));
    let (status, v) = get_entry(a.admin_addr, &lang("fr")).await;
    assert_eq!((status, v["route"].as_str()), (200, Some("/lang")), "{v}");
    assert_eq!(v["key"], "api.test/lang h:accept-language=fr");

    // Purge Alice (the Authorization scope) on A: her three /me entries go from L2, A's two
    // from A's L1 and L3; B drops its own copy from its L1 and L3 through the bus.
    let (status, v) = purge(a.admin_addr, &format!(r#"{{"user": "{ALICE}"}}"#)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["purged"],
        serde_json::json!({"l1": 2, "l2": 3, "l3": 2}),
        "{v}"
    );
    assert_eq!(v["selector"]["kind"], "user");
    assert!(!v.to_string().contains("alice-secret"), "{v}");
    for path in ["/me/profile", "/me/orders", "/me/settings"] {
        for gw in [&a, &b] {
            assert!(
                held_becomes(gw, path, Some(ALICE), false).await,
                "{path} still held for Alice"
            );
        }
    }
    // Everything else stays: Bob's, the shared entry, the header-keyed one, and the orders
    // scoped by another header (another user value).
    assert_eq!(head_entry(a.admin_addr, &profile(Some(BOB))).await.0, 200);
    assert_eq!(
        head_entry(b.admin_addr, &entry_query("/shared/1", None, &[]))
            .await
            .0,
        200
    );
    assert_eq!(head_entry(a.admin_addr, &lang("fr")).await.0, 200);
    assert_eq!(head_entry(b.admin_addr, &orders).await.0, 200);
    assert_eq!(redis.records(), 5);
    assert_eq!(
        redis.count("tierd:tags:user:*"),
        3,
        "Bob's, and both /orders users'"
    );
    assert_eq!(l3_entries(&b), 2, "B's L3 kept the orders");
    // Served again: a miss that goes to the origin (nothing stale survived anywhere).
    let hits = origin.hits();
    let r = get(&b, "/me/profile", &alice).await;
    assert!(
        r.cache_status().contains("fwd=uri-miss"),
        "{}",
        r.cache_status()
    );
    assert_eq!(origin.hits(), hits + 1);

    // The X-User-Id scope is purged by its value the same way.
    let (status, v) = purge(b.admin_addr, r#"{"user": "alice-7"}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["purged"]["l2"], 1, "{v}");
    assert_eq!(
        head_entry(b.admin_addr, &entry_query("/orders", Some("bob-9"), &[]))
            .await
            .0,
        200
    );
    assert_eq!(head_entry(b.admin_addr, &orders).await.0, 404);

    // Purge everything on B: every tier of both nodes is empty, and Redis holds no record and
    // no index set.
    written_at(b.admin_addr, "l2", 4).await;
    written_at(b.admin_addr, "l3", 4).await;
    let records = redis.records();
    assert!(records >= 5, "{records}");
    let (b_l1, b_l3) = (l1_entries(&b), l3_entries(&b));
    let (status, v) = purge(b.admin_addr, r#"{"all": true}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["purged"],
        serde_json::json!({"l1": b_l1, "l2": records, "l3": b_l3}),
        "{v}"
    );
    assert_eq!(redis.records(), 0);
    assert_eq!(redis.count("tierd:tags:*"), 0);
    let emptied = eventually(Duration::from_secs(5), async || {
        [&a, &b]
            .iter()
            .all(|gw| l1_entries(gw) == 0 && l3_entries(gw) == 0)
    })
    .await;
    assert!(
        emptied,
        "L1 and L3 of both nodes: a {}/{}, b {}/{}",
        l1_entries(&a),
        l3_entries(&a),
        l1_entries(&b),
        l3_entries(&b)
    );
    for gw in [&a, &b] {
        assert_eq!(head_entry(gw.admin_addr, &profile(Some(BOB))).await.0, 404);
        assert_eq!(head_entry(gw.admin_addr, &lang("fr")).await.0, 404);
        let (_, v) = get_entry(gw.admin_addr, &entry_query("/shared/1", None, &[])).await;
        assert_eq!(v["cached"], false, "{v}");
    }
    let hits = origin.hits();
    let r = get(&a, "/shared/1", &[]).await;
    assert_eq!(
        (origin.hits(), r.text()),
        (hits + 1, format!("/shared/1 for - / - in - #{}", hits + 1)),
        "{}",
        r.cache_status()
    );

    a.stop(true).await;
    b.stop(true).await;
    origin.stop().await;
}

/// Bad purge bodies and lookups get a 400 naming what to change, and change nothing.
#[actix_web::test]
async fn bad_purges_and_lookups_are_refused_with_the_reason() {
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock).await;
    let gw = node(&origin, &clock, |_| {}).await;
    get(&gw, "/me/profile", &[("authorization", ALICE)]).await;
    get(&gw, "/shared/1", &[]).await;
    for (body, says) in [
        (r#"{"all": false}"#, "all: send"),
        (r#"{"user": ""}"#, "user: give the value"),
        (r#"{"user": "   "}"#, "user: give the value"),
        (
            "{\"user\": \"a\\u0001b\"}",
            "user: not a valid header value",
        ),
        (r#"{"user": "x", "all": true}"#, "exactly one of"),
        (r#"{"all": "yes"}"#, "not a purge request"),
    ] {
        let (status, v) = purge(gw.admin_addr, body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(
            v["error"].as_str().unwrap_or_default().contains(says),
            "{body}: {v}"
        );
    }
    let long = format!(r#"{{"user": "{}"}}"#, "x".repeat(9 * 1024));
    assert_eq!(purge(gw.admin_addr, &long).await.0, 400);
    for (query, says) in [
        (
            entry_query("/shared/1", Some(ALICE), &[]),
            "has no key.user",
        ),
        (entry_query("/nowhere", Some(ALICE), &[]), "no rule matches"),
        (
            entry_query("/lang", None, &["accept-language"]),
            "give name: value",
        ),
        (
            entry_query("/lang", None, &["bad header: x"]),
            "not a header name",
        ),
        ("url=/me/profile".to_owned(), "must be absolute"),
        (
            format!("{}&bogus=1", entry_query("/shared/1", None, &[])),
            "unknown parameter",
        ),
        ("user=x".to_owned(), "give ?url="),
    ] {
        let (status, v) = get_entry(gw.admin_addr, &query).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert!(
            v["error"].as_str().unwrap_or_default().contains(says),
            "{query}: {v}"
        );
        assert_eq!(head_entry(gw.admin_addr, &query).await, (400, 0), "{query}");
    }
    // Raw and pipelined: each HEAD answer ends at its head (no body bytes to misframe the
    // next), and the connection goes on to the next request.
    let head = |q: &str| {
        format!("HEAD /_tierd/entry?{q} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
    };
    let pipelined = format!(
        "{}{}{}GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        head(&entry_query("/shared/1", None, &[])),
        head(&entry_query("/shared/2", None, &[])),
        head(&entry_query("/me/profile", Some(ALICE), &[])),
    );
    let out = common::raw(gw.admin_addr, pipelined.as_bytes(), Duration::from_secs(5)).await;
    let answers: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 4, "{out}");
    for (answer, status) in answers[..3].iter().zip(["200", "404", "200"]) {
        assert!(answer.starts_with(status), "{out}");
        assert!(
            answer.ends_with("\r\n\r\n"),
            "a HEAD answer has no body: {out}"
        );
    }
    assert!(answers[3].starts_with("200"), "{out}");
    // A URL over the limit, and bytes no header value may hold.
    let huge = format!("url=http://{HOST}/{}", "a".repeat(9 * 1024));
    assert_eq!(get_entry(gw.admin_addr, &huge).await.0, 400);
    let nul = format!("{}&user=a%00b", entry_query("/me/profile", None, &[]));
    let (status, v) = get_entry(gw.admin_addr, &nul).await;
    assert_eq!(status, 400, "{v}");

    // Without the token: refused, nothing purged.
    let r = admin_post_at(gw.admin_addr, "/_tierd/purge", None, r#"{"all": true}"#).await;
    assert_eq!(r.status, 401);
    let r = send(client().head(format!(
        "http://{}/_tierd/entry?{}",
        gw.admin_addr,
        entry_query("/shared/1", None, &[])
    )))
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(l1_entries(&gw), 2);
    gw.stop(true).await;
    origin.stop().await;
}

/// On Redis Cluster: a user purge goes through the per-user index (no `SCAN`), and purging
/// everything or a prefix scans every primary; both nodes stop serving what was purged.
#[actix_web::test]
async fn user_prefix_and_all_purges_work_on_a_redis_cluster() {
    let nodes = RedisServer::cluster();
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock).await;
    let cluster = |s: &mut Settings| {
        s.tiers.l2.enabled = true;
        s.tiers.l2.urls = urls.clone();
        s.tiers.l2.command_timeout_ms = 2_000;
    };
    let a = node(&origin, &clock, cluster).await;
    let b = node(&origin, &clock, cluster).await;
    let records = || nodes.iter().map(RedisServer::records).sum::<u64>();
    let alice = [("authorization", ALICE)];
    // Enough keys that they land on every primary.
    for i in 0..12 {
        get(&a, &format!("/me/{i}"), &alice).await;
        get(&a, &format!("/shared/{i}"), &[]).await;
        get(&a, &format!("/me/{i}"), &[("authorization", BOB)]).await;
    }
    written_at(a.admin_addr, "l2", 36).await;
    assert_eq!(records(), 36);
    assert!(
        nodes.iter().all(|n| n.records() > 0),
        "spread over the primaries"
    );

    let (status, v) = purge(a.admin_addr, &format!(r#"{{"user": "{ALICE}"}}"#)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["purged"], serde_json::json!({"l1": 12, "l2": 12}), "{v}");
    assert_eq!(records(), 24);
    assert!(held_becomes(&b, "/me/3", Some(BOB), true).await);
    assert!(held_becomes(&b, "/me/3", Some(ALICE), false).await);

    let (status, v) = purge(a.admin_addr, r#"{"prefix": "/shared/1"}"#).await;
    assert_eq!(status, 200, "{v}");
    // /shared/1, /shared/10, /shared/11
    assert_eq!(v["purged"]["l2"], 3, "{v}");
    assert_eq!(records(), 21);

    let (status, v) = purge(b.admin_addr, r#"{"all": true}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["purged"]["l2"], 21, "{v}");
    assert_eq!(records(), 0);
    let sets: u64 = nodes.iter().map(|n| n.count("tierd:tags:*")).sum();
    assert_eq!(sets, 0, "the tag and user sets went too");
    assert!(held_becomes(&a, "/me/3", Some(BOB), false).await);
    assert!(held_becomes(&a, "/shared/2", None, false).await);
    a.stop(true).await;
    b.stop(true).await;
    origin.stop().await;
}

/// The user value a purge names reaches neither the log (at `debug`, the most a production
/// node would run) nor the metrics: only its digest does.
#[actix_web::test]
async fn a_user_purge_logs_and_counts_the_digest_never_the_value() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = origin(&clock).await;
    let (port, admin) = (common::free_port(), common::free_port());
    let file = dir.path().join("tierd.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\
             [upstream]\nurl = \"http://{}\"\n[log]\nlevel = \"debug\"\n\
             [tiers.l2]\nenabled = true\nurl = \"{}\"\n[tiers.l3]\nenabled = true\npath = \"{}\"\n{RULES}",
            origin.addr,
            redis.url(),
            dir.path().join("l3.duckdb").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("tierd.log");
    let mut child = common::Proc(
        common::tierd_command()
            .args(["serve", "--config"])
            .arg(&file)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("tierd"),
    );
    common::wait_up(port).await;
    common::wait_up(admin).await;
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin));
    let r = send(
        client()
            .get(format!("http://127.0.0.1:{port}/me/profile"))
            .insert_header(("host", HOST))
            .insert_header(("authorization", ALICE)),
    )
    .await;
    assert_eq!(r.status, 200);
    written_at(admin_addr, "l2", 1).await;
    let (status, v) = purge(admin_addr, &format!(r#"{{"user": "{ALICE}"}}"#)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["purged"]["l2"], 1, "{v}");
    let digest = v["selector"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(digest.len(), 32, "{v}");
    let metrics = common::scrape(admin_addr).await.text;
    assert!(common::sigterm(&mut child).success());
    let logged = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(
        logged.contains("purged") && logged.contains(&digest),
        "the purge is logged with its digest:\n{logged}"
    );
    for text in [&logged, &metrics] {
        assert!(
            !text.contains("alice-secret"),
            "the user value leaked:\n{text}"
        );
    }
    assert!(
        metrics.contains(r#"tierd_purges_total{kind="user",source="admin"} 1"#),
        "{metrics}"
    );
    origin.stop().await;
}
