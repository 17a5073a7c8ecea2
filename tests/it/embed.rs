//! The library as its users write it: `examples/embed.rs` compiled into this test, served on a
//! real socket and driven over HTTP as its header says; then the builder, the one middleware on
//! a resource, a handler's `CacheDirective`, and the builder's errors.

use actix_web::{test as actix_test, web, App, HttpResponse};
use tierd::{Cache, CacheDirective, Rules, Selector};

use crate::common::{self, external::free_port, scrape::metric_at, Resp};

#[path = "../../examples/embed.rs"]
#[allow(dead_code)]
mod example;

async fn get(addr: &str, path: &str) -> Resp {
    common::send(common::client().get(format!("http://{addr}{path}"))).await
}

async fn put(addr: &str, path: &str, body: &str) -> Resp {
    common::send_body(
        common::client()
            .put(format!("http://{addr}{path}"))
            .insert_header(("content-type", "application/json")),
        body.to_owned(),
    )
    .await
}

/// The `ttl=` of a `Cache-Status` hit.
fn ttl(r: &Resp) -> i64 {
    r.ttl()
        .unwrap_or_else(|| panic!("no ttl in {}", r.cache_status()))
}

#[actix_web::test]
async fn the_embed_example_serves_items_stats_purges_and_metrics_as_documented() {
    let addr = format!("127.0.0.1:{}", free_port());
    let (server, cache) = example::start(&addr).expect("example starts");
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let lookups = || metric_at(sock, "embed_item_lookups_total", &[]);

    // An item in progress: looked up once, then served from L1 for 60 s.
    let first = get(&addr, "/items/7").await;
    assert_eq!(first.status, 200);
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    assert_eq!(first.text(), r#"{"id":7,"status":"in_progress"}"#);
    let hit = get(&addr, "/items/7").await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert!((55..=60).contains(&ttl(&hit)), "{}", hit.cache_status());
    assert_eq!(hit.body, first.body);
    assert_eq!(lookups().await, 1.0);

    // Stats: five concurrent callers, one computation.
    let five = futures_util::future::join_all((0..5).map(|_| get(&addr, "/stats"))).await;
    for r in &five {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-computations").as_deref(), Some("1"), "{r:?}");
        assert_eq!(r.text(), r#"{"items":1,"completed":0}"#);
    }

    // A PUT purges the item (the rule) and the statistic (the handler).
    let put = put(&addr, "/items/7", r#"{"status":"completed"}"#).await;
    assert_eq!(put.status, 200);
    let after = get(&addr, "/items/7").await;
    assert!(
        !after.cache_status().contains("hit"),
        "{}",
        after.cache_status()
    );
    assert_eq!(after.text(), r#"{"id":7,"status":"completed"}"#);
    assert_eq!(lookups().await, 2.0);
    let completed = get(&addr, "/items/7").await;
    assert!(
        completed.cache_status().contains("hit"),
        "{}",
        completed.cache_status()
    );
    assert!(
        (295..=300).contains(&ttl(&completed)),
        "{}",
        completed.cache_status()
    );
    let stats = get(&addr, "/stats").await;
    assert_eq!(stats.header("x-computations").as_deref(), Some("2"));
    assert_eq!(stats.text(), r#"{"items":1,"completed":1}"#);

    // tierd's metrics and the app's own on one page; the admin scope mounted at /_tierd.
    assert!(
        metric_at(
            sock,
            "tierd_requests_total",
            &[("route", "/items/{id}"), ("cache_status", "hit")]
        )
        .await
            >= 2.0
    );
    let admin = get(&addr, "/_tierd/stats").await;
    assert_eq!(admin.status, 200);
    assert!(
        admin.text().contains(r#""name":"item""#),
        "{}",
        admin.text()
    );
    let refused = common::send_body(
        common::client().post(format!("http://{addr}/_tierd/purge")),
        r#"{"tag":"item:7"}"#.into(),
    )
    .await;
    assert_eq!(refused.status, 403, "purge without a token is refused");
    assert!(get(&addr, "/items/7").await.cache_status().contains("hit"));

    handle.stop(true).await;
    cache.shutdown().await;
}

async fn tagged(id: web::Path<u32>) -> HttpResponse {
    // No Cache-Control: only the directive makes it storable.
    let mut res = HttpResponse::Ok().body(format!("item {id}"));
    CacheDirective::secs(30)
        .tag(format!("d:{id}"))
        .apply(&mut res);
    res
}

async fn never() -> HttpResponse {
    let mut res = HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=60"))
        .body("volatile");
    CacheDirective::no_store().apply(&mut res);
    res
}

/// A handler's directive gives a TTL and tags to a response with no caching headers, and keeps
/// a cacheable one out of the store; the one middleware wraps a single resource.
#[actix_web::test]
async fn a_handlers_directive_sets_ttl_and_tags_or_forbids_storing() {
    let cache = Cache::builder().build().expect("cache");
    let app = actix_test::init_service(
        App::new()
            .service(
                web::resource("/tagged/{id}")
                    .wrap(cache.middleware())
                    .route(web::get().to(tagged)),
            )
            .service(
                web::resource("/never")
                    .wrap(cache.middleware())
                    .route(web::get().to(never)),
            ),
    )
    .await;
    let status = |res: &actix_web::dev::ServiceResponse| {
        res.headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    // A test request has no Host unless given one; the cache answers those 400 (RFC 9112 §3.2).
    let get = |path: &str| {
        actix_test::TestRequest::get()
            .uri(path)
            .insert_header(("host", "app.test"))
            .to_request()
    };

    let miss = actix_test::call_service(&app, get("/tagged/1")).await;
    assert!(
        status(&miss).contains("stored"),
        "{} {:?}",
        status(&miss),
        miss.response()
    );
    let hit = actix_test::call_service(&app, get("/tagged/1")).await;
    assert!(status(&hit).contains("hit; ttl=30"), "{}", status(&hit));
    assert!(
        hit.response()
            .extensions()
            .get::<CacheDirective>()
            .is_none(),
        "the directive is taken off the response"
    );

    let purged = cache.invalidate(Selector::tag("d:1")).await.expect("purge");
    assert_eq!(purged.l1, 1);
    assert_eq!((purged.l2, purged.l3), (None, None));
    let again = actix_test::call_service(&app, get("/tagged/1")).await;
    assert!(status(&again).contains("stored"), "{}", status(&again));

    for _ in 0..2 {
        let res = actix_test::call_service(&app, get("/never")).await;
        assert!(
            !status(&res).contains("stored") && !status(&res).contains("hit"),
            "{}",
            status(&res)
        );
    }
    let text = cache.render_metrics();
    let handler = common::scrape::Scrape::from_text(text)
        .sum("tierd_not_stored_total", &[("reason", "handler")]);
    assert_eq!(handler, 2.0);
}

/// Bad rules fail at build time naming the rule and the key; a cache builds without a runtime
/// and without any file or environment.
#[test]
fn the_builder_reports_bad_rules_and_needs_nothing_else() {
    let err = Rules::from_toml_str("[[rules]]\npath = \"/a\"\nttl_seconds = -1\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("rules[0]") && text.contains("ttl_seconds"),
        "{text}"
    );
    let err = Rules::from_toml_str("[[rules]]\npath = \"/a\"\nttl_secs = 5\n").unwrap_err();
    assert!(err.to_string().contains("ttl_secs"), "{err}");

    let err = Cache::builder()
        .l1_max_bytes(1 << 20)
        .build()
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("cache.max_body_bytes") && text.contains("tiers.l1.max_bytes"),
        "{text}"
    );
    let cache = Cache::builder()
        .l1_max_bytes(1 << 20)
        .max_body_bytes(256 << 10)
        .build()
        .expect("cache");
    assert!(cache.render_metrics().contains("tierd_build_info"));
}

async fn me(req: actix_web::HttpRequest, what: web::Path<String>) -> HttpResponse {
    let who = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned();
    HttpResponse::Ok().body(format!("{what} of {who}"))
}

async fn catalog() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "max-age=300"))
        .body("catalog")
}

/// The management calls from the library, in an application with routes on a real socket and
/// with Redis and DuckDB behind it: `contains` finds a user's entry only with that user's
/// value, `purge_user` removes that user's entries from every tier and leaves the others,
/// `purge_all` empties every tier; the mounted admin scope answers `HEAD entry` the same.
#[actix_web::test]
async fn purge_user_purge_all_and_contains_from_an_app_with_routes() {
    use tierd::Lookup;
    let redis = common::redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = Rules::from_toml_str(
        "[[rules]]\npath = \"/me/{what}\"\nkey = { user = \"authorization\" }\nttl_seconds = 600\n",
    )
    .expect("rules");
    let cache = Cache::builder()
        .rules(rules)
        .redis(redis.url())
        .duckdb(dir.path().join("app.duckdb"))
        .admin_token("app-token")
        .build()
        .expect("cache");
    let addr = format!("127.0.0.1:{}", free_port());
    let c = cache.clone();
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .service(web::scope("/_tierd").configure(c.admin()))
            .service(
                web::scope("")
                    .wrap(c.middleware())
                    .route("/me/{what}", web::get().to(me))
                    .route("/catalog", web::get().to(catalog)),
            )
    })
    .workers(1)
    .bind(&addr)
    .expect("bind")
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let as_user = |path: &str, user: &str| {
        common::send(
            common::client()
                .get(format!("http://{addr}{path}"))
                .insert_header(("authorization", user.to_owned())),
        )
    };
    for (path, user) in [
        ("/me/profile", "Bearer alice"),
        ("/me/orders", "Bearer alice"),
        ("/me/profile", "Bearer bob"),
    ] {
        let r = as_user(path, user).await;
        assert_eq!(r.text(), format!("{} of {user}", &path[4..]));
    }
    assert_eq!(get(&addr, "/catalog").await.text(), "catalog");
    let written = async |tier: &str| {
        common::eventually(std::time::Duration::from_secs(10), async || {
            common::scrape::Scrape::from_text(cache.render_metrics()).sum(
                "tierd_tier_writes_total",
                &[("tier", tier), ("outcome", "written")],
            ) >= 4.0
        })
        .await
    };
    assert!(
        written("l2").await && written("l3").await,
        "four writes to L2 and L3"
    );

    let url = |path: &str| format!("http://{addr}{path}");
    let contains = async |lookup: Lookup| cache.contains(lookup).await.expect("contains");
    assert!(contains(Lookup::new(url("/me/profile")).user("Bearer alice")).await);
    assert!(contains(Lookup::new(url("/me/profile")).user(" Bearer bob ")).await);
    assert!(!contains(Lookup::new(url("/me/profile")).user("Bearer carol")).await);
    assert!(!contains(Lookup::new(url("/me/profile"))).await);
    assert!(contains(url("/catalog").into()).await);
    assert!(!contains(url("/nothing").into()).await);
    let err = cache.contains("/catalog").await.unwrap_err();
    assert!(err.to_string().contains("must be absolute"), "{err}");
    let err = cache
        .contains(Lookup::new(url("/catalog")).user("Bearer alice"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no rule matches"), "{err}");
    let head = async |query: String| {
        common::send(
            common::client()
                .head(format!("http://{addr}/_tierd/entry?{query}"))
                .insert_header(("authorization", "Bearer app-token")),
        )
        .await
        .status
    };
    let alice_profile = format!("url=http://{addr}/me/profile&user=Bearer%20alice");
    assert_eq!(head(alice_profile.clone()).await, 200);

    let purged = cache.purge_user("Bearer alice").await.expect("purge_user");
    assert_eq!(
        (purged.l1, purged.l2, purged.l3),
        (2, Some(2), Some(2)),
        "{purged:?}"
    );
    assert!(!contains(Lookup::new(url("/me/profile")).user("Bearer alice")).await);
    assert!(!contains(Lookup::new(url("/me/orders")).user("Bearer alice")).await);
    assert!(contains(Lookup::new(url("/me/profile")).user("Bearer bob")).await);
    assert!(contains(url("/catalog").into()).await);
    assert_eq!(head(alice_profile).await, 404);
    assert_eq!(redis.records(), 2);

    let purged = cache.purge_all().await.expect("purge_all");
    assert_eq!(
        (purged.l1, purged.l2, purged.l3),
        (2, Some(2), Some(2)),
        "{purged:?}"
    );
    assert!(!contains(Lookup::new(url("/me/profile")).user("Bearer bob")).await);
    assert!(!contains(url("/catalog").into()).await);
    assert_eq!(redis.records(), 0);
    // The application goes on: served again from its handler, and stored again.
    let r = as_user("/me/profile", "Bearer bob").await;
    assert!(r.cache_status().contains("stored"), "{}", r.cache_status());
    handle.stop(true).await;
    cache.shutdown().await;
}
