//! `/metrics` against real traffic: hits from each tier (L1, L2 from Redis, L3 from a DuckDB
//! file), misses, a 304, stale serves (while-revalidate, if-error), an origin 5xx, a mutation
//! and a purge; then every metric family is checked with its labels and its exact counts.

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use common::{
    admin_post_at, client, eventually, get_as, rules, scrape, send, settings_for, written_at,
    Origin, Reply, Resp,
};
use tierd::clock::ManualClock;
use tierd::config::Settings;
use tierd::server::Gateway;

const HOST: &str = "api.test";
const TOKEN: &str = "metrics-token";
const ITEMS: &str = r#"
[[rules]]
path = "/api/items/{id}"
methods = ["GET", "POST"]
ttl_seconds = 60
tags = ["item:{id}"]
"#;

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    get_as(gw, HOST, path, headers).await
}

fn tweak<'a>(
    s: &'a mut Settings,
    redis: Option<&RedisServer>,
    l3: Option<&std::path::Path>,
) -> &'a mut Settings {
    s.rules = rules(ITEMS);
    s.admin.token = TOKEN.into();
    if let Some(r) = redis {
        common::with_l2(s, r.url());
    }
    if let Some(p) = l3 {
        common::with_l3(s, p);
    }
    s
}

#[actix_web::test]
async fn every_metric_family_moves_with_the_traffic_that_causes_it() {
    let clock = Arc::new(ManualClock::new());
    let sie_calls = Arc::new(AtomicU64::new(0));
    let origin = Origin::start(clock.clone(), move |req, n| {
        let path = req.path();
        if let Some(id) = path.strip_prefix("/api/items/") {
            return Reply::ok(format!("item {id}"))
                .cc("max-age=60")
                .header("etag", &format!("\"v{id}\""));
        }
        match path {
            "/swr" => Reply::ok(format!("swr #{n}")).cc("max-age=1, stale-while-revalidate=100"),
            "/sie" if sie_calls.fetch_add(1, Ordering::SeqCst) > 0 => Reply::ok("down").status(500),
            "/sie" => Reply::ok("sie body").cc("max-age=1, stale-if-error=100"),
            _ => Reply::ok("other"),
        }
    })
    .await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let duck = dir.path().join("metrics.duckdb");

    // Fill L3 from one node and L2 from another, so the node under test finds each there.
    let mut s = settings_for(origin.addr);
    let c = Gateway::start(tweak(&mut s, None, Some(&duck)), clock.clone(), None)
        .await
        .unwrap();
    assert!(get(&c, "/api/items/3", &[])
        .await
        .cache_status()
        .contains("stored"));
    written_at(c.admin_addr, "l3", 1).await;
    c.stop(true).await;
    let mut s = settings_for(origin.addr);
    let a = Gateway::start(tweak(&mut s, Some(&redis), None), clock.clone(), None)
        .await
        .unwrap();
    assert!(get(&a, "/api/items/2", &[])
        .await
        .cache_status()
        .contains("stored"));
    written_at(a.admin_addr, "l2", 1).await;
    a.stop(true).await;
    let origin_before = origin.hits();

    let mut s = settings_for(origin.addr);
    let b = Gateway::start(
        tweak(&mut s, Some(&redis), Some(&duck)),
        clock.clone(),
        None,
    )
    .await
    .unwrap();
    let (mut from_cache, mut from_origin) = (0usize, 0usize);
    let r = get(&b, "/api/items/3", &[]).await;
    assert_eq!(r.detail(), "l3", "{}", r.cache_status());
    from_cache += r.body.len();
    let r = get(&b, "/api/items/2", &[]).await;
    assert_eq!(r.detail(), "l2", "{}", r.cache_status());
    from_cache += r.body.len();
    let r = get(&b, "/api/items/1", &[]).await;
    assert!(
        r.cache_status().contains("fwd=uri-miss"),
        "{}",
        r.cache_status()
    );
    from_origin += r.body.len();
    let r = get(&b, "/api/items/1", &[]).await;
    assert_eq!(r.detail(), "l1", "{}", r.cache_status());
    from_cache += r.body.len();
    let r = get(&b, "/api/items/1", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(r.status, 304);

    let first = get(&b, "/swr", &[]).await;
    from_origin += first.body.len();
    clock.advance(Duration::from_secs(5));
    let r = get(&b, "/swr", &[]).await;
    assert_eq!(r.text(), first.text(), "served stale while revalidating");
    from_cache += r.body.len();
    // The background refresh reaches the origin once; it is not a client request.
    assert!(
        eventually(Duration::from_secs(5), async || origin.hits()
            == origin_before + 3)
        .await,
        "background refresh"
    );

    let r = get(&b, "/sie", &[]).await;
    from_origin += r.body.len();
    clock.advance(Duration::from_secs(5));
    let r = get(&b, "/sie", &[]).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "sie body"),
        "served stale on error"
    );
    from_cache += r.body.len();

    let mut post = send(
        client()
            .post(format!("http://{}/api/items/1", b.addr))
            .insert_header(("host", HOST)),
    )
    .await;
    assert_eq!(post.status, 200);
    from_origin += std::mem::take(&mut post.body).len();

    let purged = admin_post_at(
        b.admin_addr,
        "/_tierd/purge",
        Some(TOKEN),
        r#"{"tag":"item:3"}"#,
    )
    .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    // Item 3's promotion, item 1, /swr and /sie, at least (a refresh may share a batch).
    written_at(b.admin_addr, "l2", 4).await;
    written_at(b.admin_addr, "l3", 3).await;

    let cpu_before = own_cpu_seconds();
    let m = scrape(b.admin_addr).await;
    let cpu_after = own_cpu_seconds();
    let text = &m.text;
    let route = "/api/items/{id}";

    // Gateway: requests by route, method, status class and cache status; nothing else.
    let req = "tierd_requests_total";
    let get_ok = [("method", "GET"), ("status_class", "2xx")];
    let by = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        get_ok.iter().chain(extra).copied().collect()
    };
    assert_eq!(
        m.sum(req, &by(&[("route", route), ("cache_status", "hit")])),
        3.0
    );
    assert_eq!(
        m.sum(req, &by(&[("route", route), ("cache_status", "miss")])),
        1.0
    );
    assert_eq!(
        m.sum(
            req,
            &[
                ("route", route),
                ("method", "GET"),
                ("status_class", "3xx"),
                ("cache_status", "hit")
            ]
        ),
        1.0,
        "the 304"
    );
    assert_eq!(
        m.sum(
            req,
            &[
                ("route", route),
                ("method", "POST"),
                ("status_class", "2xx"),
                ("cache_status", "pass")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.sum(req, &by(&[("route", "other"), ("cache_status", "miss")])),
        2.0
    );
    assert_eq!(
        m.sum(
            req,
            &by(&[
                ("route", "other"),
                ("cache_status", "stale_while_revalidate")
            ])
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            req,
            &by(&[("route", "other"), ("cache_status", "stale_if_error")])
        ),
        1.0
    );
    assert_eq!(
        m.sum(req, &[]),
        10.0,
        "one count per client request, none for the refresh"
    );
    assert_eq!(m.label_values(req, "route"), ["/api/items/{id}", "other"]);

    let dur = "tierd_request_duration_seconds_count";
    assert_eq!(m.sum(dur, &[("cache_status", "hit")]), 4.0);
    // Latency by route: the four hits are the item route's (l3, l2, l1 and the 304).
    assert_eq!(
        m.sum(dur, &[("route", route), ("cache_status", "hit")]),
        4.0
    );
    assert_eq!(m.label_values(dur, "route"), ["/api/items/{id}", "other"]);
    assert_eq!(m.sum(dur, &[("cache_status", "miss")]), 3.0);
    assert_eq!(m.sum(dur, &[]), 10.0);
    // Cumulative buckets: never decreasing, the last one is the count.
    let buckets: Vec<f64> = m
        .samples
        .iter()
        .filter(|s| s.name == "tierd_request_duration_seconds_bucket")
        .filter(|s| s.labels.get("cache_status").map(String::as_str) == Some("hit"))
        .map(|s| s.value)
        .collect();
    assert!(buckets.len() > 2, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(
        m.sum(
            "tierd_request_duration_seconds_bucket",
            &[("cache_status", "hit"), ("le", "+Inf")]
        ),
        4.0
    );
    assert_eq!(m.sum("tierd_not_modified_total", &[]), 1.0);
    let bytes = "tierd_response_bytes_total";
    assert_eq!(m.sum(bytes, &[("source", "cache")]), from_cache as f64);
    assert_eq!(m.sum(bytes, &[("source", "origin")]), from_origin as f64);

    // Tiers: lookups by outcome, promotions, timings, sizes, queues, breakers, errors.
    let look = "tierd_tier_lookups_total";
    for (tier, outcome, n) in [
        ("l1", "hit", 2.0),
        ("l1", "stale", 2.0),
        ("l1", "miss", 5.0),
        ("l2", "hit", 1.0),
        ("l2", "miss", 4.0),
        ("l3", "hit", 1.0),
        ("l3", "miss", 3.0),
    ] {
        assert_eq!(
            m.sum(look, &[("tier", tier), ("outcome", outcome)]),
            n,
            "{tier} {outcome}"
        );
    }
    assert_eq!(
        m.label_values(look, "outcome"),
        ["error", "hit", "miss", "stale"]
    );
    assert_eq!(m.sum("tierd_tier_promotions_total", &[("tier", "l2")]), 1.0);
    assert_eq!(m.sum("tierd_tier_promotions_total", &[("tier", "l3")]), 1.0);
    let ops = "tierd_tier_operation_duration_seconds_count";
    for tier in ["l1", "l2", "l3"] {
        for op in ["get", "put", "delete"] {
            assert!(
                m.sum(ops, &[("tier", tier), ("op", op)]) > 0.0,
                "{tier} {op}"
            );
        }
        assert_eq!(m.sum("tierd_tier_errors_total", &[("tier", tier)]), 0.0);
    }
    assert_eq!(
        m.label_values("tierd_tier_errors_total", "kind"),
        ["circuit_open", "decode", "timeout", "unavailable"]
    );
    assert_eq!(
        m.label_values("tierd_tier_evictions_total", "cause"),
        ["expired", "explicit", "replaced", "size"]
    );
    // Redis cannot count one prefix's keys cheaply: L2 exports no size rather than a wrong one.
    for family in ["tierd_tier_entries", "tierd_tier_bytes"] {
        assert_eq!(m.label_values(family, "tier"), ["l1", "l3"], "{family}");
        for tier in ["l1", "l3"] {
            assert!(m.sum(family, &[("tier", tier)]) > 0.0, "{family} {tier}");
        }
    }
    for tier in ["l2", "l3"] {
        assert_eq!(m.sum("tierd_tier_queue_depth", &[("tier", tier)]), 0.0);
        assert_eq!(m.sum("tierd_tier_circuit_open", &[("tier", tier)]), 0.0);
        assert_eq!(
            m.sum(
                "tierd_tier_writes_total",
                &[("tier", tier), ("outcome", "queue_full")]
            ),
            0.0
        );
        assert!(
            m.sum(
                "tierd_tier_writes_total",
                &[("tier", tier), ("outcome", "written")]
            ) >= 3.0
        );
    }

    // Origin: six requests (three misses, the refresh, the failing revalidation, the POST).
    assert_eq!(m.sum("tierd_origin_requests_total", &[]), 6.0);
    assert_eq!(
        m.sum("tierd_origin_request_duration_seconds_count", &[]),
        6.0
    );
    assert_eq!(m.sum("tierd_origin_errors_total", &[("kind", "5xx")]), 1.0);
    assert_eq!(m.sum("tierd_origin_errors_total", &[]), 1.0);
    assert_eq!(
        m.label_values("tierd_origin_errors_total", "kind"),
        ["5xx", "body", "connect", "protocol", "timeout", "tls"]
    );
    assert_eq!(
        m.sum(
            "tierd_stale_served_total",
            &[("reason", "while_revalidate")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("tierd_stale_served_total", &[("reason", "if_error")]),
        1.0
    );
    assert_eq!(m.sum("tierd_background_refreshes_total", &[]), 1.0);
    assert_eq!(m.sum("tierd_coalesced_waiters_total", &[]), 0.0);

    // Purges and invalidations.
    assert_eq!(
        m.sum(
            "tierd_purges_total",
            &[("kind", "tag"), ("source", "admin")]
        ),
        1.0
    );
    assert!(
        m.sum("tierd_purges_total", &[("source", "method")]) >= 1.0,
        "the POST"
    );
    for tier in ["l1", "l2", "l3"] {
        assert!(
            m.sum("tierd_purged_entries_total", &[("tier", tier)]) >= 1.0,
            "{tier}: item 3 was in every tier after its promotion"
        );
    }
    assert!(m.sum("tierd_invalidations_total", &[]) >= 1.0);
    assert_eq!(m.sum("tierd_invalidation_lag_seconds_count", &[]), 0.0);
    assert_eq!(
        m.sum("tierd_rule_reloads_total", &[("result", "rejected")]),
        0.0
    );
    assert_eq!(m.sum("tierd_rules", &[]), 1.0);

    // Build and process.
    assert_eq!(
        m.sum(
            "tierd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let revision = m.label_values("tierd_build_info", "revision");
    assert_eq!(revision.len(), 1, "{revision:?}");
    assert!(!revision[0].is_empty());

    // Saturation and state: every configured tier up, its capacities, Redis's connections.
    for tier in ["l1", "l2", "l3"] {
        assert_eq!(m.sum("tierd_tier_up", &[("tier", tier)]), 1.0, "{tier}");
    }
    assert!(m.sum("tierd_tier_max_bytes", &[("tier", "l1")]) > 0.0);
    assert!(m.sum("tierd_tier_max_bytes", &[("tier", "l3")]) > 0.0);
    assert!(
        !text.contains("tierd_tier_max_bytes{tier=\"l2\"}"),
        "Redis has no cap of tierd's"
    );
    for tier in ["l2", "l3"] {
        assert!(m.sum("tierd_tier_queue_capacity", &[("tier", tier)]) > 0.0);
    }
    assert!(m.sum("tierd_tier_connections", &[("tier", "l2")]) >= 1.0);
    assert!(
        m.sum("tierd_tier_connections", &[("tier", "l2")])
            <= m.sum("tierd_tier_connections_max", &[("tier", "l2")])
    );
    // A background PING or refresh may be under way: these are only exported here (the test
    // below follows the in-flight gauges through a held request).
    for family in [
        "tierd_tier_operations_in_flight{tier=\"l2\"}",
        "tierd_origin_requests_in_flight",
    ] {
        assert!(text.contains(family), "{family}");
    }
    assert_eq!(m.sum("tierd_requests_in_flight", &[]), 0.0);
    assert!(m.sum("tierd_connections_max", &[]) > 0.0);
    assert!(m.sum("tierd_origin_connections_max", &[]) > 0.0);
    assert_eq!(m.sum("tierd_config_last_reload_successful", &[]), 1.0);
    assert!(m.sum("tierd_config_last_reload_success_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(
        m.sum("tierd_background_refresh_failures_total", &[]),
        0.0,
        "the refresh stored its response"
    );
    assert!(m.sum("process_resident_memory_bytes", &[]) > 0.0);
    assert!(m.sum("process_open_fds", &[]) > 0.0);
    // The gateway runs in this process: the exported CPU time (whole seconds) is this process's.
    let cpu = m.sum("process_cpu_seconds_total", &[]);
    assert!(
        (cpu_before..=cpu_after).contains(&cpu),
        "{cpu} outside {cpu_before}..={cpu_after}"
    );

    // Bounded labels: no URL, key, host, tag or address ever appears.
    for leak in ["api.test", "/api/items/1", "item:3", "127.0.0.1", "/swr"] {
        assert!(!text.contains(leak), "{leak} leaked into /metrics");
    }
    for s in &m.samples {
        if s.name.starts_with("tierd_") {
            for (k, v) in &s.labels {
                assert!(
                    v.len() <= 32,
                    "unbounded-looking label {k}={v} on {}",
                    s.name
                );
            }
        }
    }
    b.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn metrics_off_records_nothing_and_serves_no_endpoint() {
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), |_, n| {
        Reply::ok(format!("#{n}")).cc("max-age=60")
    })
    .await;
    let mut s = settings_for(origin.addr);
    s.metrics.enabled = false;
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    assert_eq!(get(&gw, "/a", &[]).await.text(), "#1");
    assert_eq!(
        get(&gw, "/a", &[]).await.text(),
        "#1",
        "the cache still works"
    );
    let r = send(client().get(format!("http://{}/metrics", gw.admin_addr))).await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("[metrics] enabled"), "{}", r.text());
    gw.stop(true).await;
    origin.stop().await;
}

/// This process's CPU time (user + system) in whole seconds, from `/proc/self/stat`, as the
/// process collector counts it.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    let per_second: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (ticks / per_second) as f64
}

/// Every label value, as dashboards, alerts and `Cache-Status` readers know them: the strings are
/// derived from the enums' variant names, and a rename must not change them silently.
#[test]
fn label_values_are_the_ones_dashboards_and_alerts_use() {
    let cases: Vec<(&str, &str)> = vec![
        (tierd::cache::PurgeSource::Admin.as_str(), "admin"),
        (tierd::cache::PurgeSource::Rule.as_str(), "rule"),
        (tierd::cache::PurgeSource::Method.as_str(), "method"),
        (tierd::cache::PurgeSource::Value.as_str(), "value"),
        (tierd::http::cache_status::Fwd::Bypass.as_str(), "bypass"),
        (tierd::http::cache_status::Fwd::Method.as_str(), "method"),
        (tierd::http::cache_status::Fwd::UriMiss.as_str(), "uri-miss"),
        (
            tierd::http::cache_status::Fwd::VaryMiss.as_str(),
            "vary-miss",
        ),
        (tierd::http::cache_status::Fwd::Request.as_str(), "request"),
        (tierd::http::cache_status::Fwd::Stale.as_str(), "stale"),
        (tierd::http::hygiene::Stripped::Listed.as_str(), "listed"),
        (
            tierd::http::hygiene::Stripped::Underscore.as_str(),
            "underscore",
        ),
        (
            tierd::http::hygiene::Stripped::Untrusted.as_str(),
            "untrusted_forwarding",
        ),
        (
            tierd::http::storable::NotStorable::Status.as_str(),
            "status",
        ),
        (
            tierd::http::storable::NotStorable::RequestNoStore.as_str(),
            "request_no_store",
        ),
        (
            tierd::http::storable::NotStorable::NoStore.as_str(),
            "no_store",
        ),
        (
            tierd::http::storable::NotStorable::Private.as_str(),
            "private",
        ),
        (
            tierd::http::storable::NotStorable::Authorization.as_str(),
            "authorization",
        ),
        (
            tierd::http::storable::NotStorable::SetCookie.as_str(),
            "set_cookie",
        ),
        (
            tierd::http::storable::NotStorable::VaryStar.as_str(),
            "vary_star",
        ),
        (
            tierd::http::storable::NotStorable::VaryMalformed.as_str(),
            "vary_malformed",
        ),
        (
            tierd::http::storable::NotStorable::NoFreshness.as_str(),
            "no_freshness",
        ),
        (
            tierd::http::storable::NotStorable::TooLarge.as_str(),
            "too_large",
        ),
        (
            tierd::http::storable::NotStorable::Incomplete.as_str(),
            "incomplete",
        ),
        (
            tierd::http::storable::NotStorable::RuleTtlZero.as_str(),
            "rule_ttl_zero",
        ),
        (
            tierd::http::storable::NotStorable::PurgedDuringFetch.as_str(),
            "purged_during_fetch",
        ),
        (
            tierd::http::storable::NotStorable::VaryTooLarge.as_str(),
            "vary_too_large",
        ),
        (
            tierd::http::storable::NotStorable::CredentialedHeuristic.as_str(),
            "credentialed_heuristic",
        ),
        (
            tierd::http::storable::NotStorable::Handler.as_str(),
            "handler",
        ),
        (tierd::metrics::Outcome::Hit.as_str(), "hit"),
        (
            tierd::metrics::Outcome::StaleWhileRevalidate.as_str(),
            "stale_while_revalidate",
        ),
        (
            tierd::metrics::Outcome::StaleIfError.as_str(),
            "stale_if_error",
        ),
        (tierd::metrics::Outcome::Collapsed.as_str(), "collapsed"),
        (tierd::metrics::Outcome::Miss.as_str(), "miss"),
        (tierd::metrics::Outcome::Revalidated.as_str(), "revalidated"),
        (tierd::metrics::Outcome::Pass.as_str(), "pass"),
        (tierd::metrics::Outcome::Error.as_str(), "error"),
        (
            tierd::metrics::Outcome::StaleOriginLimited.as_str(),
            "stale_origin_limited",
        ),
        (
            tierd::metrics::Outcome::RateLimited.as_str(),
            "rate_limited",
        ),
        (tierd::metrics::Outcome::Rejected.as_str(), "rejected"),
        (tierd::metrics::MethodLabel::Get.as_str(), "GET"),
        (tierd::metrics::MethodLabel::Head.as_str(), "HEAD"),
        (tierd::metrics::MethodLabel::Post.as_str(), "POST"),
        (tierd::metrics::MethodLabel::Put.as_str(), "PUT"),
        (tierd::metrics::MethodLabel::Patch.as_str(), "PATCH"),
        (tierd::metrics::MethodLabel::Delete.as_str(), "DELETE"),
        (tierd::metrics::MethodLabel::Options.as_str(), "OPTIONS"),
        (tierd::metrics::MethodLabel::Other.as_str(), "other"),
        (tierd::metrics::StatusClass::Informational.as_str(), "1xx"),
        (tierd::metrics::StatusClass::Success.as_str(), "2xx"),
        (tierd::metrics::StatusClass::Redirection.as_str(), "3xx"),
        (tierd::metrics::StatusClass::ClientError.as_str(), "4xx"),
        (tierd::metrics::StatusClass::ServerError.as_str(), "5xx"),
        (tierd::metrics::EvictionCause::Expired.as_str(), "expired"),
        (tierd::metrics::EvictionCause::Size.as_str(), "size"),
        (tierd::metrics::EvictionCause::Explicit.as_str(), "explicit"),
        (tierd::metrics::EvictionCause::Replaced.as_str(), "replaced"),
        (tierd::metrics::OriginError::Connect.as_str(), "connect"),
        (tierd::metrics::OriginError::Timeout.as_str(), "timeout"),
        (tierd::metrics::OriginError::Protocol.as_str(), "protocol"),
        (tierd::metrics::OriginError::Body.as_str(), "body"),
        (tierd::metrics::OriginError::Status5xx.as_str(), "5xx"),
        (tierd::metrics::Lookup::Hit.as_str(), "hit"),
        (tierd::metrics::Lookup::Stale.as_str(), "stale"),
        (tierd::metrics::Lookup::Miss.as_str(), "miss"),
        (tierd::metrics::Lookup::Error.as_str(), "error"),
        (tierd::metrics::TierFault::Timeout.as_str(), "timeout"),
        (
            tierd::metrics::TierFault::Unavailable.as_str(),
            "unavailable",
        ),
        (
            tierd::metrics::TierFault::CircuitOpen.as_str(),
            "circuit_open",
        ),
        (tierd::metrics::TierFault::Decode.as_str(), "decode"),
        (tierd::metrics::WriteOutcome::Written.as_str(), "written"),
        (
            tierd::metrics::WriteOutcome::QueueFull.as_str(),
            "queue_full",
        ),
        (tierd::metrics::WriteOutcome::Failed.as_str(), "failed"),
        (tierd::policy::Bypass::Rule.as_str(), "rule"),
        (tierd::policy::Bypass::QueryParam.as_str(), "query_param"),
        (tierd::policy::Bypass::Header.as_str(), "header"),
        (tierd::ratelimit::KeyKind::Ip.as_str(), "ip"),
        (tierd::ratelimit::KeyKind::Forwarded.as_str(), "forwarded"),
        (tierd::ratelimit::KeyKind::ApiKey.as_str(), "api_key"),
        (tierd::ratelimit::KeyKind::Node.as_str(), "node"),
        (tierd::ratelimit::QuotaKind::Client.as_str(), "client"),
        (tierd::ratelimit::QuotaKind::Rule.as_str(), "rule"),
        (tierd::ratelimit::QuotaKind::Origin.as_str(), "origin"),
        (tierd::store::CircuitState::Closed.as_str(), "closed"),
        (tierd::store::CircuitState::Open.as_str(), "open"),
        (tierd::store::CircuitState::HalfOpen.as_str(), "half_open"),
        (tierd::types::TierName::L1.as_str(), "l1"),
        (tierd::types::TierName::L2.as_str(), "l2"),
        (tierd::types::TierName::L3.as_str(), "l3"),
        (tierd::types::Rejection::UriTooLong.as_str(), "uri_too_long"),
        (
            tierd::types::Rejection::TooManyHeaders.as_str(),
            "too_many_headers",
        ),
        (
            tierd::types::Rejection::HeadersTooLarge.as_str(),
            "headers_too_large",
        ),
        (
            tierd::types::Rejection::BodyTooLarge.as_str(),
            "body_too_large",
        ),
        (
            tierd::types::Rejection::BodyTimeout.as_str(),
            "body_timeout",
        ),
        (tierd::types::Rejection::BadHost.as_str(), "bad_host"),
        (tierd::types::Rejection::BadBody.as_str(), "bad_body"),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
}

/// The saturation gauges follow what is open right now: a client connection while it is open,
/// and a request (and its origin fetch) while the origin holds its answer.
#[actix_web::test]
async fn in_flight_and_open_connection_gauges_follow_the_traffic() {
    let clock = Arc::new(ManualClock::new());
    let gate = common::Gate::new();
    let held = gate.clone();
    let origin = Origin::start(clock.clone(), move |_, n| {
        Reply::ok(format!("#{n}")).cc("no-store").held_by(&held)
    })
    .await;
    let s = settings_for(origin.addr);
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    let admin = gw.admin_addr;
    let gauge = |name: &'static str| async move { common::metric_at(admin, name, &[]).await };
    assert_eq!(gauge("tierd_connections_open").await, 0.0);

    let conn = std::net::TcpStream::connect(gw.addr).unwrap();
    assert!(
        common::metric_reaches(
            admin,
            "tierd_connections_open",
            &[],
            1.0,
            Duration::from_secs(5)
        )
        .await,
        "an open client connection is counted"
    );
    drop(conn);
    assert!(
        common::metric_reaches(
            admin,
            "tierd_connections_open",
            &[],
            0.0,
            Duration::from_secs(5)
        )
        .await,
        "and counted out once closed"
    );

    let addr = gw.addr;
    let slow = actix_web::rt::spawn(async move {
        send(
            client()
                .get(format!("http://{addr}/slow"))
                .insert_header(("host", HOST)),
        )
        .await
    });
    assert!(
        eventually(Duration::from_secs(5), async || {
            gauge("tierd_requests_in_flight").await == 1.0
                && gauge("tierd_origin_requests_in_flight").await == 1.0
        })
        .await,
        "the request waiting on the origin is in flight, and so is its origin fetch"
    );
    gate.open();
    assert_eq!(slow.await.unwrap().status, 200);
    assert!(
        eventually(Duration::from_secs(5), async || {
            gauge("tierd_requests_in_flight").await == 0.0
                && gauge("tierd_origin_requests_in_flight").await == 0.0
        })
        .await,
        "both answered"
    );
    gw.stop(true).await;
    origin.stop().await;
}
