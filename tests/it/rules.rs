//! `[[rules]]` over real HTTP: state-dependent TTLs, per-status TTLs, selective caching, key
//! composition, per-user scope, tags, invalidation on mutations, the admin purge / entry /
//! reload API, and bad input. Tier-spanning purges run against a real `redis-server` and a
//! real DuckDB file.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::redis::RedisServer;
use common::{
    admin_post_at, client, metric_at, rules, send, send_body, written_at, Harness, Reply, Resp,
};
use tierd::config::Settings;

const TOKEN: &str = "s3cret-token";

fn is_hit(r: &Resp) -> bool {
    r.cache_status().contains("; hit")
}

/// A read call on the admin API with the token (required once one is configured).
async fn admin_get(h: &Harness, path: &str) -> Resp {
    h.send(
        h.client
            .get(h.admin_url(path))
            .insert_header(("authorization", format!("Bearer {TOKEN}"))),
    )
    .await
}

async fn admin_post(h: &Harness, path: &str, token: Option<&str>, body: &str) -> Resp {
    admin_post_at(h.gw.admin_addr, path, token, body).await
}

fn json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

const ASSESSMENTS: &str = r#"
[[rules]]
name = "assessment"
path = "/api/assessments/{id}"
ttl_by_field = { pointer = "/status", values = { in_progress = 60, completed = 300, failed = 0 } }
tags = ["assessment:{id}"]

[[rules]]
name = "assessment-write"
path = "/api/assessments/{id}"
methods = ["PUT", "DELETE"]
invalidate = { tags = ["assessment:{id}"], paths = ["/api/dashboard/overview"], prefixes = ["/api/reports/{id}/"] }

[[rules]]
name = "dashboard"
path = "/api/dashboard/overview"
ttl_seconds = 60
refresh_query_params = ["force_refresh"]

[[rules]]
name = "reports"
path = "/api/reports/{id}/{*rest}"
ttl_seconds = 600
"#;

/// An origin whose assessments have a status the test sets; everything else echoes the path
/// and the hit number. No cache headers: the rules decide.
async fn assessments(tweak: impl FnOnce(&mut Settings)) -> (Harness, Arc<Mutex<String>>) {
    let status = Arc::new(Mutex::new("in_progress".to_owned()));
    let s = status.clone();
    let h = Harness::with(
        move |req, n| {
            if req.path().starts_with("/api/assessments/") {
                let st = s.lock().unwrap().clone();
                Reply::ok(format!(r#"{{"id":1,"status":"{st}","n":{n}}}"#))
                    .header("content-type", "application/json")
            } else {
                Reply::ok(format!("{} #{n}", req.path()))
            }
        },
        |s| {
            s.rules = rules(ASSESSMENTS);
            s.admin.token = TOKEN.into();
            tweak(s);
        },
    )
    .await;
    (h, status)
}

#[actix_web::test]
async fn the_ttl_follows_the_status_field_of_the_body() {
    let (h, status) = assessments(|_| {}).await;
    let first = h.get("/api/assessments/1").await;
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    let hit = h.get("/api/assessments/1").await;
    assert!(is_hit(&hit));
    assert_eq!(
        hit.ttl(),
        Some(60),
        "in_progress: 60 s ({})",
        hit.cache_status()
    );

    // Expired after 60 s; the origin now says completed: 300 s.
    *status.lock().unwrap() = "completed".into();
    h.advance(61);
    let refetched = h.get("/api/assessments/1").await;
    assert!(!is_hit(&refetched), "{}", refetched.cache_status());
    assert!(refetched.text().contains("completed"));
    let hit = h.get("/api/assessments/1").await;
    assert_eq!(
        hit.ttl(),
        Some(300),
        "completed: 300 s ({})",
        hit.cache_status()
    );

    // failed = 0: never stored, every request reaches the origin.
    *status.lock().unwrap() = "failed".into();
    h.get("/api/assessments/2").await;
    let again = h.get("/api/assessments/2").await;
    assert!(!is_hit(&again), "{}", again.cache_status());
    assert!(!again.cache_status().contains("stored"));
    assert_eq!(h.origin.hits(), 4);
    h.stop().await;
}

#[actix_web::test]
async fn per_status_ttls_cache_errors_briefly() {
    let h = Harness::with(
        |req, n| {
            if req.path() == "/missing" {
                Reply::ok(format!("gone #{n}")).status(404)
            } else {
                Reply::ok(format!("boom #{n}")).status(503)
            }
        },
        |s| {
            s.rules = rules(
                r#"[[rules]]
                   path = "/{*any}"
                   ttl_seconds = 300
                   ttl_by_status = { 404 = 10, 503 = 0 }"#,
            )
        },
    )
    .await;
    h.get("/missing").await;
    let hit = h.get("/missing").await;
    assert!(is_hit(&hit), "{}", hit.cache_status());
    assert_eq!(hit.ttl(), Some(10));
    h.advance(11);
    assert_eq!(h.get("/missing").await.text(), "gone #2");
    h.get("/down").await;
    assert_eq!(
        h.get("/down").await.text(),
        "boom #4",
        "503 = 0: not stored"
    );
    h.stop().await;
}

#[actix_web::test]
async fn filtered_requests_are_never_served_from_the_cache() {
    let h = Harness::with(
        |req, n| Reply::ok(format!("{} #{n}", req.uri())).cc("max-age=120"),
        |s| {
            s.rules = rules(
                r#"[[rules]]
                   path = "/api/recommendations/{id}"
                   bypass_query_params = ["category", "min_score"]
                   bypass_headers = ["x-preview"]"#,
            )
        },
    )
    .await;
    assert_eq!(
        h.get("/api/recommendations/1").await.text(),
        "/api/recommendations/1 #1"
    );
    for i in 0..3 {
        let r = h.get("/api/recommendations/1?category=cost").await;
        assert!(
            r.cache_status().contains("fwd=bypass"),
            "{}",
            r.cache_status()
        );
        assert_eq!(
            r.text(),
            format!("/api/recommendations/1?category=cost #{}", i + 2)
        );
    }
    let r = h
        .get_with("/api/recommendations/1", &[("x-preview", "1")])
        .await;
    assert!(r.cache_status().contains("fwd=bypass"));
    // The unfiltered entry was never replaced by a filtered answer.
    let plain = h.get("/api/recommendations/1").await;
    assert!(is_hit(&plain));
    assert_eq!(plain.text(), "/api/recommendations/1 #1");
    h.stop().await;
}

#[actix_web::test]
async fn force_refresh_refetches_and_replaces_the_entry() {
    let (h, _) = assessments(|_| {}).await;
    assert_eq!(
        h.get("/api/dashboard/overview").await.text(),
        "/api/dashboard/overview #1"
    );
    let hit = h.get("/api/dashboard/overview").await;
    assert_eq!(
        hit.ttl(),
        Some(60),
        "ttl_seconds = 60 without any origin header"
    );
    let forced = h.get("/api/dashboard/overview?force_refresh=true").await;
    assert_eq!(forced.text(), "/api/dashboard/overview #2");
    let after = h.get("/api/dashboard/overview").await;
    assert!(is_hit(&after));
    assert_eq!(
        after.text(),
        "/api/dashboard/overview #2",
        "the refresh replaced the entry"
    );
    h.stop().await;
}

#[actix_web::test]
async fn client_no_cache_is_honoured_unless_the_rule_says_otherwise() {
    let h = Harness::with(
        |req, n| Reply::ok(format!("{} #{n}", req.path())).cc("max-age=60"),
        |s| {
            s.rules = rules(
                r#"[[rules]]
                   path = "/firm"
                   respect_client_no_cache = false
                   [[rules]]
                   path = "/{*rest}""#,
            )
        },
    )
    .await;
    for p in ["/firm", "/soft"] {
        h.get(p).await;
    }
    let firm = h.get_with("/firm", &[("cache-control", "no-cache")]).await;
    assert!(is_hit(&firm), "{}", firm.cache_status());
    let soft = h.get_with("/soft", &[("cache-control", "no-cache")]).await;
    assert_eq!(soft.text(), "/soft #3");
    h.stop().await;
}

#[actix_web::test]
async fn keys_ignore_and_sort_query_parameters_and_vary_on_listed_headers() {
    let h = Harness::with(
        |req, n| Reply::ok(format!("{} #{n}", req.uri())).cc("max-age=60"),
        |s| {
            s.rules = rules(
                r#"[[rules]]
                   path = "/search"
                   key = { ignore_query_params = ["utm_*"], sort_query_params = true, headers = ["accept-language"] }"#,
            )
        },
    )
    .await;
    let first = h
        .get_with("/search?b=2&a=1&utm_source=x", &[("accept-language", "fr")])
        .await;
    assert_eq!(first.text(), "/search?b=2&a=1&utm_source=x #1");
    let same = h
        .get_with("/search?a=1&utm_medium=y&b=2", &[("accept-language", "fr")])
        .await;
    assert!(is_hit(&same), "{}", same.cache_status());
    let other_lang = h
        .get_with("/search?a=1&b=2", &[("accept-language", "de")])
        .await;
    assert!(!is_hit(&other_lang));
    assert_eq!(h.origin.hits(), 2);
    h.stop().await;
}

#[actix_web::test]
async fn users_never_see_each_others_private_entries() {
    let h = Harness::with(
        |req, n| {
            let who = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap_or("?").to_owned())
                .unwrap_or_else(|| "anonymous".into());
            Reply::ok(format!("profile of {who} #{n}")).cc("public, max-age=60")
        },
        |s| {
            s.rules = rules(
                r#"[[rules]]
                   path = "/api/me"
                   key = { user = "authorization" }"#,
            )
        },
    )
    .await;
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    let a1 = h.get_with("/api/me", &alice).await;
    assert_eq!(a1.text(), "profile of Bearer alice #1");
    let cc = a1.header("cache-control").unwrap_or_default();
    assert!(
        cc.starts_with("private") && !cc.contains("public"),
        "downstream caches must not share it: {cc}"
    );
    let b1 = h.get_with("/api/me", &bob).await;
    assert_eq!(b1.text(), "profile of Bearer bob #2");
    let a2 = h.get_with("/api/me", &alice).await;
    assert!(is_hit(&a2));
    assert_eq!(a2.text(), "profile of Bearer alice #1");
    let b2 = h.get_with("/api/me", &bob).await;
    assert!(is_hit(&b2));
    assert_eq!(b2.text(), "profile of Bearer bob #2");
    let anon = h.get("/api/me").await;
    assert_eq!(anon.text(), "profile of anonymous #3");
    h.stop().await;
}

/// Settings with L2 on `redis` and L3 in `dir`.
fn tiers(s: &mut Settings, redis: &RedisServer, dir: &std::path::Path) {
    common::with_l2(s, redis.url());
    common::with_l3(s, &dir.join("rules.duckdb"));
}

async fn written(h: &Harness, tier: &str, n: u64) {
    written_at(h.gw.admin_addr, tier, n).await
}

#[actix_web::test]
async fn a_purge_by_tag_removes_the_entry_from_l1_l2_and_l3() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = assessments(|s| tiers(s, &redis, dir.path())).await;
    for id in [7, 8] {
        h.get(&format!("/api/assessments/{id}")).await;
    }
    written(&h, "l2", 2).await;
    written(&h, "l3", 2).await;
    let url = format!("http://{}/api/assessments/7", h.gw.addr);
    let entry = admin_get(&h, &format!("/_tierd/entry?url={url}")).await;
    let e = json(&entry);
    assert_eq!(entry.status, 200, "{e}");
    for t in ["l1", "l2", "l3"] {
        assert_eq!(e["tiers"][t][0]["tags"][0], "assessment:7", "{t}: {e}");
        assert!(e["tiers"][t][0]["ttl_seconds"].as_i64().unwrap() > 0);
    }

    let r = admin_post(
        &h,
        "/_tierd/purge",
        Some(TOKEN),
        r#"{"tag": "assessment:7"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = json(&r);
    assert_eq!(
        p["purged"],
        serde_json::json!({"l1": 1, "l2": 1, "l3": 1}),
        "{p}"
    );
    let entry = admin_get(&h, &format!("/_tierd/entry?url={url}")).await;
    assert_eq!(entry.status, 404, "{}", entry.text());
    assert_eq!(redis.count("tierd:v2:*assessments/7"), 0);
    assert_eq!(
        redis.count("tierd:v2:*assessments/8"),
        1,
        "the other assessment stays"
    );
    let again = h.get("/api/assessments/7").await;
    assert!(!is_hit(&again), "{}", again.cache_status());
    assert!(is_hit(&h.get("/api/assessments/8").await));
    h.stop().await;
}

#[actix_web::test]
async fn a_successful_mutation_invalidates_its_tags_paths_and_prefixes_everywhere() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = assessments(|s| tiers(s, &redis, dir.path())).await;
    let warm = [
        "/api/assessments/5",
        "/api/assessments/6",
        "/api/dashboard/overview",
        "/api/reports/5/weekly",
        "/api/reports/5/monthly?page=2",
        "/api/reports/6/weekly",
    ];
    for p in warm {
        h.get(p).await;
        assert!(is_hit(&h.get(p).await), "{p}");
    }
    written(&h, "l3", warm.len() as u64).await;
    let put = send_body(
        h.client.put(h.url("/api/assessments/5")),
        r#"{"status":"completed"}"#.into(),
    )
    .await;
    assert_eq!(put.status, 200);
    // Gone from L2 (before anything refetches them); the others stay.
    let in_l2 = |path: &str| redis.count(&format!("tierd:v2:*{path}"));
    let removed = common::eventually(Duration::from_secs(5), async || {
        [
            "/api/assessments/5",
            "/api/dashboard/overview",
            "/api/reports/5/weekly",
            "/api/reports/5/monthly?page=2",
        ]
        .iter()
        .all(|p| in_l2(p) == 0)
    })
    .await;
    assert!(removed, "the invalidated entries left L2");
    for kept in ["/api/assessments/6", "/api/reports/6/weekly"] {
        assert_eq!(in_l2(kept), 1, "{kept} stays in L2");
    }
    for gone in [
        "/api/assessments/5",
        "/api/dashboard/overview",
        "/api/reports/5/weekly",
        "/api/reports/5/monthly?page=2",
    ] {
        let r = h.get(gone).await;
        assert!(
            !is_hit(&r),
            "{gone} should have been invalidated: {}",
            r.cache_status()
        );
    }
    for kept in ["/api/assessments/6", "/api/reports/6/weekly"] {
        assert!(is_hit(&h.get(kept).await), "{kept} should be kept");
    }
    assert_eq!(
        metric_at(h.gw.admin_addr, "tierd_purges_total", &[("source", "rule")]).await,
        3.0,
        "one tag, one path, one prefix"
    );
    h.stop().await;
}

#[actix_web::test]
async fn a_failed_mutation_invalidates_nothing() {
    let h = Harness::with(
        |req, n| {
            if req.method() == "PUT" {
                Reply::ok("no").status(409)
            } else {
                Reply::ok(format!("{} #{n}", req.path())).cc("max-age=60")
            }
        },
        |s| {
            s.rules = rules(
                r#"[[rules]]
                   path = "/a/{id}"
                   methods = ["PUT"]
                   invalidate = { paths = ["/list"] }"#,
            )
        },
    )
    .await;
    h.get("/list").await;
    let put = send_body(h.client.put(h.url("/a/1")), String::new()).await;
    assert_eq!(put.status, 409);
    assert!(is_hit(&h.get("/list").await));
    h.stop().await;
}

#[actix_web::test]
async fn mutating_admin_calls_need_the_token_and_bad_input_purges_nothing() {
    let (h, _) = assessments(|_| {}).await;
    h.get("/api/assessments/3").await;
    let still_cached = || async { is_hit(&h.get("/api/assessments/3").await) };

    let none = admin_post(&h, "/_tierd/purge", None, r#"{"tag":"assessment:3"}"#).await;
    assert_eq!(none.status, 401);
    assert!(none
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with("Bearer"));
    let wrong = admin_post(
        &h,
        "/_tierd/purge",
        Some("nope"),
        r#"{"tag":"assessment:3"}"#,
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(json(&wrong)["error"].as_str().unwrap().contains("token"));
    assert!(still_cached().await);

    let enormous = format!(r#"{{"prefix":"/{}"}}"#, "a".repeat(5000));
    let long_url = format!(r#"{{"url":"/{}"}}"#, "a".repeat(9000));
    let huge_body = format!(r#"{{"tag":"{}"}}"#, "x".repeat(70_000));
    for (body, status, says) in [
        ("not json", 400, "not a purge request"),
        ("{}", 400, "exactly one"),
        (r#"{"tag":"a","url":"/b"}"#, 400, "exactly one"),
        (r#"{"tag":"has space"}"#, 400, "tag:"),
        (r#"{"regex":".*"}"#, 400, "not a purge request"),
        (r#"{"prefix":""}"#, 400, "empty"),
        (r#"{"prefix":"api"}"#, 400, "neither a path"),
        (enormous.as_str(), 400, "at most 1024"),
        (long_url.as_str(), 400, "at most 8192"),
        (huge_body.as_str(), 413, "bytes"),
    ] {
        let r = admin_post(&h, "/_tierd/purge", Some(TOKEN), body).await;
        assert_eq!(
            r.status,
            status,
            "{}: {}",
            &body[..body.len().min(40)],
            r.text()
        );
        let msg = json(&r)["error"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains(says), "{msg}");
        assert!(
            still_cached().await,
            "nothing purged by {}",
            &body[..body.len().min(40)]
        );
    }
    // A prefix is literal: regex characters match nothing here.
    let r = admin_post(
        &h,
        "/_tierd/purge",
        Some(TOKEN),
        r#"{"prefix":"/api/assessments/.*"}"#,
    )
    .await;
    assert_eq!(json(&r)["purged"]["l1"], 0);
    assert!(still_cached().await);
    let r = admin_post(
        &h,
        "/_tierd/purge",
        Some(TOKEN),
        r#"{"url":"/api/assessments/3"}"#,
    )
    .await;
    assert_eq!(json(&r)["purged"]["l1"], 1, "{}", r.text());
    assert!(!still_cached().await);

    // Without a configured token, mutating calls are refused outright.
    let open = Harness::with(|_, _| Reply::ok("x"), |_| {}).await;
    let r = admin_post(&open, "/_tierd/purge", Some(""), r#"{"tag":"a"}"#).await;
    assert_eq!(r.status, 403);
    assert!(json(&r)["error"].as_str().unwrap().contains("admin.token"));
    let r = admin_post(&open, "/_tierd/reload", Some("anything"), "").await;
    assert_eq!(r.status, 403);
    open.stop().await;
    h.stop().await;
}

#[actix_web::test]
async fn a_broken_reload_keeps_the_old_rules_and_a_good_one_applies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tierd.toml");
    let clock = Arc::new(tierd::clock::ManualClock::new());
    let origin = common::Origin::start(clock.clone(), |req, n| {
        Reply::ok(format!("{} #{n}", req.path())).cc("max-age=5")
    })
    .await;
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n[upstream]\nurl = \"http://{}\"\n",
        origin.addr
    );
    let write = |rules: &str| std::fs::write(&file, format!("{base}{rules}")).unwrap();
    write("[[rules]]\nname = \"long\"\npath = \"/x\"\nttl_seconds = 100\n");
    let settings = Settings::load(Some(&file)).unwrap();
    let gw = tierd::server::Gateway::start(&settings, clock.clone(), Some(file.clone()))
        .await
        .unwrap();
    let get = |p: &'static str| {
        let url = format!("http://{}{p}", gw.addr);
        async move { send(client().get(url)).await }
    };
    let reload = || {
        let url = format!("http://{}/_tierd/reload", gw.admin_addr);
        async move {
            send(
                client()
                    .post(url)
                    .insert_header(("authorization", format!("Bearer {TOKEN}"))),
            )
            .await
        }
    };
    get("/x").await;
    assert_eq!(get("/x").await.ttl(), Some(100));

    write("[[rules]]\nname = \"long\"\npath = \"/x\"\nttl_seconds = -3\n");
    let r = reload().await;
    assert_eq!(r.status, 422);
    let msg = json(&r)["error"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("rules[0] (\"long\")") && msg.contains("ttl_seconds"),
        "{msg}"
    );
    write("[[rules]]\nname = \"typo\"\npath = \"/x\"\nttl_secs = 3\n");
    let r = reload().await;
    assert_eq!(r.status, 422);
    assert!(
        json(&r)["error"].as_str().unwrap().contains("ttl_secs"),
        "{}",
        r.text()
    );
    // Still the old rule.
    clock.advance(Duration::from_secs(10));
    let r = get("/x").await;
    assert!(is_hit(&r), "old rules in force: {}", r.cache_status());

    write("[[rules]]\nname = \"short\"\npath = \"/x\"\nttl_seconds = 7\n[[rules]]\npath = \"/y\"\npass = true\n");
    let r = reload().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["rules"], 2);
    assert_eq!(
        json(&r)["restart_required"],
        serde_json::json!([]),
        "only rules changed"
    );
    clock.advance(Duration::from_secs(100));
    get("/x").await;
    assert_eq!(get("/x").await.ttl(), Some(7));
    let y = get("/y").await;
    assert!(y.cache_status().contains("fwd=bypass"));

    // Keys outside the rules are named: they apply at the next start, not now.
    std::fs::write(
        &file,
        format!("{base}[cache]\nmax_body_bytes = \"1MiB\"\n[[rules]]\nname = \"short\"\npath = \"/x\"\nttl_seconds = 7\n"),
    )
    .unwrap();
    let r = reload().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["rules"], 1);
    assert_eq!(
        json(&r)["restart_required"],
        serde_json::json!(["cache.max_body_bytes"])
    );
    gw.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn requests_count_under_their_route_template() {
    let (h, _) = assessments(|_| {}).await;
    h.get("/api/assessments/1").await;
    h.get("/api/assessments/2").await;
    h.get("/api/assessments/2").await;
    h.get("/elsewhere").await;
    let route = "/api/assessments/{id}";
    assert_eq!(
        metric_at(
            h.gw.admin_addr,
            "tierd_requests_total",
            &[("route", route), ("cache_status", "miss")]
        )
        .await,
        2.0
    );
    assert_eq!(
        metric_at(
            h.gw.admin_addr,
            "tierd_requests_total",
            &[("route", route), ("cache_status", "hit")]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric_at(
            h.gw.admin_addr,
            "tierd_requests_total",
            &[("route", "other")]
        )
        .await,
        1.0
    );
    h.stop().await;
}

#[actix_web::test]
async fn a_response_fetched_across_a_purge_is_not_stored() {
    // The origin holds /slow answers for 1 s; the purge runs while the fetch is in flight.
    let h = Harness::with(
        |req, n| {
            let r = Reply::ok(format!("{} #{n}", req.path()));
            if req.path().starts_with("/slow/") {
                r.delay_ms(1000)
            } else {
                r
            }
        },
        |s| {
            s.rules =
                rules("[[rules]]\npath = \"/slow/{id}\"\nttl_seconds = 60\ntags = [\"slow:{id}\"]");
            s.admin.token = TOKEN.into();
        },
    )
    .await;
    let url = h.url("/slow/1");
    let fetch = actix_web::rt::spawn(async move { send(client().get(url)).await });
    let in_flight = common::eventually(Duration::from_secs(5), async || {
        h.origin.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    assert!(in_flight);
    let r = admin_post(&h, "/_tierd/purge", Some(TOKEN), r#"{"tag":"slow:1"}"#).await;
    assert_eq!(r.status, 200);
    let first = fetch.await.unwrap();
    assert_eq!(first.text(), "/slow/1 #1");
    assert!(
        !first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    assert_eq!(
        metric_at(
            h.gw.admin_addr,
            "tierd_not_stored_total",
            &[("reason", "purged_during_fetch")]
        )
        .await,
        1.0
    );
    // A fetch that starts after the purge is stored as usual.
    assert_eq!(h.get("/slow/1").await.text(), "/slow/1 #2");
    assert!(is_hit(&h.get("/slow/1").await));
    h.stop().await;
}

#[actix_web::test]
async fn a_rule_keeps_its_entries_in_the_tiers_it_names() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::with(
        |req, n| Reply::ok(format!("{} #{n}", req.path())).cc("max-age=600"),
        |s| {
            tiers(s, &redis, dir.path());
            s.rules = rules(
                r#"[[rules]]
                   path = "/volatile/{id}"
                   tiers = ["l1"]
                   [[rules]]
                   path = "/shared/{id}"
                   tiers = ["l1", "l2"]"#,
            );
        },
    )
    .await;
    h.get("/volatile/1").await;
    h.get("/shared/1").await;
    h.get("/everywhere").await;
    written(&h, "l2", 2).await;
    written(&h, "l3", 1).await;
    assert_eq!(
        redis.count("tierd:v2:*/volatile/1"),
        0,
        "l1 only: not in Redis"
    );
    assert_eq!(redis.count("tierd:v2:*/shared/1"), 1);
    assert_eq!(redis.count("tierd:v2:*/everywhere"), 1);
    let hr = &h;
    let entry = |p: &str| {
        let url = format!("/_tierd/entry?url=http://{}{p}", hr.gw.addr);
        async move { json(&admin_get(hr, &url).await) }
    };
    let v = entry("/volatile/1").await;
    assert!(
        v["tiers"]["l1"].is_array() && v["tiers"]["l2"].is_null() && v["tiers"]["l3"].is_null(),
        "{v}"
    );
    let s = entry("/shared/1").await;
    assert!(
        s["tiers"]["l2"].is_array() && s["tiers"]["l3"].is_null(),
        "{s}"
    );
    let e = entry("/everywhere").await;
    assert!(e["tiers"]["l3"].is_array(), "{e}");
    assert_eq!(
        metric_at(
            h.gw.admin_addr,
            "tierd_tier_writes_total",
            &[("tier", "l3"), ("outcome", "written")]
        )
        .await,
        1.0
    );
    h.stop().await;
}

#[actix_web::test]
async fn a_head_that_freshens_a_stored_get_keeps_the_rule_ttl() {
    let h = Harness::with(
        |req, _| {
            Reply::ok(format!("{} body", req.path()))
                .cc("max-age=5")
                .header("etag", "\"v1\"")
        },
        |s| s.rules = rules("[[rules]]\npath = \"/h\"\nttl_seconds = 100"),
    )
    .await;
    h.get("/h").await;
    assert_eq!(h.get("/h").await.ttl(), Some(100));
    h.advance(101);
    let head = h.send(h.client.head(h.url("/h"))).await;
    assert_eq!(head.status, 200);
    let after = h.get("/h").await;
    assert!(is_hit(&after), "{}", after.cache_status());
    assert_eq!(
        after.ttl(),
        Some(100),
        "the rule's TTL, not the origin's max-age=5"
    );
    h.stop().await;
}

/// A rule's stale windows apply to responses that name none: `stale_while_revalidate_seconds`
/// serves the stored answer while one background refresh runs; `stale_if_error_seconds` serves
/// it when the origin fails. Past either window the client waits for (or gets) the origin.
#[actix_web::test]
async fn rule_stale_windows_apply_to_responses_that_name_none() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let down = failing.clone();
    let h = Harness::with(
        move |req, n| {
            if req.path().starts_with("/sie") && down.load(std::sync::atomic::Ordering::SeqCst) {
                Reply::ok("down").status(503)
            } else {
                Reply::ok(format!("{} #{n}", req.path()))
            }
        },
        |s| {
            s.rules = common::rules(
                r#"
                [[rules]]
                path = "/swr/{id}"
                ttl_seconds = 10
                stale_while_revalidate_seconds = 30

                [[rules]]
                path = "/sie/{id}"
                ttl_seconds = 10
                stale_if_error_seconds = 30
                "#,
            );
        },
    )
    .await;
    assert_eq!(h.get("/swr/1").await.text(), "/swr/1 #1");
    assert_eq!(h.get("/sie/1").await.text(), "/sie/1 #2");
    h.advance(15);
    // Within the while-revalidate window: the stored answer at once, and one refresh.
    let stale = h.get("/swr/1").await;
    assert_eq!(stale.text(), "/swr/1 #1");
    assert!(
        stale.cache_status().starts_with("tierd; hit; ttl=-5"),
        "{}",
        stale.cache_status()
    );
    assert!(
        h.get_until("/swr/1", "/swr/1 #3").await.is_some(),
        "refreshed"
    );
    // Within the if-error window: the origin fails, the stored answer is served.
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let on_error = h.get("/sie/1").await;
    assert_eq!(
        (on_error.status, on_error.text().as_str()),
        (200, "/sie/1 #2")
    );
    assert!(
        on_error.cache_status().contains("fwd-status=503"),
        "{}",
        on_error.cache_status()
    );
    // Past the windows (10 + 30 s; the refreshed /swr entry is from t=15): no stale answer.
    h.advance(45);
    let past = h.get("/sie/1").await;
    assert_eq!((past.status, past.text().as_str()), (503, "down"));
    let hits = h.origin.hits();
    let waited = h.get("/swr/1").await;
    assert_eq!(h.origin.hits(), hits + 1);
    assert!(
        waited.cache_status().contains("fwd=stale") && waited.cache_status().contains("stored"),
        "fetched in the foreground: {}",
        waited.cache_status()
    );
    h.stop().await;
}
