//! The L1 hit path through the full middleware stack (Observe ▶ Guard ▶ RateLimit ▶
//! CacheHeaders ▶ ResponseCache), without sockets: hardening checks, key, lookup, variant
//! selection, freshness, conditionals, response headers, metrics. The `_metrics_off` variant is
//! the same stack with `[metrics] enabled = false`; `_limiter_on` has a client quota (too high to
//! refuse anything) and the origin quota on; `_21_rules_quota` gives the matching rule of
//! `_21_rules` a quota.
//!
//!     cargo bench --bench l1_hit

use actix_web::dev::{fn_service, ServiceRequest, ServiceResponse};
use actix_web::{test, App, HttpResponse};
use criterion::{criterion_group, criterion_main, Criterion};
use tierd::config::Settings;

/// Twenty rules ahead of the one that matches, as a real config might have; the matching rule
/// sorts the query and tags the entry.
fn with_rules(quota: &str) -> Settings {
    let mut toml = String::new();
    for i in 0..20 {
        toml.push_str(&format!(
            "[[rules]]\npath = \"/api/v{i}/things/{{id}}\"\nttl_seconds = 60\n"
        ));
    }
    toml.push_str(
        "[[rules]]\npath = \"/api/items/{id}\"\nttl_seconds = 300\ntags = [\"item:{id}\"]\nkey = { sort_query_params = true, ignore_query_params = [\"utm_*\"] }\n",
    );
    toml.push_str(quota);
    let file = std::env::temp_dir().join(format!("tierd-bench-{}.toml", std::process::id()));
    std::fs::write(&file, toml).expect("write rules");
    let settings = Settings::load(Some(&file)).expect("rules");
    let _ = std::fs::remove_file(&file);
    settings
}

fn bench(c: &mut Criterion) {
    run(c, "", Settings::default(), "/item.json");
    let mut off = Settings::default();
    off.metrics.enabled = false;
    run(c, "_metrics_off", off, "/item.json");
    run(c, "_21_rules", with_rules(""), "/api/items/42?b=2&a=1");
    // The matching rule has a quota: the rate limiter matches the rule, the cache reuses it.
    let quota = "rate_limit = { requests_per_second = 1e9, burst = 4000000000 }\n";
    run(
        c,
        "_21_rules_quota",
        with_rules(quota),
        "/api/items/42?b=2&a=1",
    );
    let mut limited = Settings::default();
    limited.rate_limit.enabled = true;
    limited.rate_limit.requests_per_second = 1e9;
    limited.rate_limit.burst = u32::MAX;
    limited.rate_limit.origin.enabled = true;
    run(c, "_limiter_on", limited, "/item.json");
}

fn run(c: &mut Criterion, suffix: &str, settings: Settings, uri: &'static str) {
    let rt = actix_web::rt::System::new();
    let state = tierd::Cache::from_settings(&settings)
        .expect("cache")
        .state()
        .clone();
    let body: String = "x".repeat(1300);
    let app = rt.block_on(test::init_service(
        App::new()
            .wrap(tierd::cache::ResponseCache::new(state.clone()))
            .wrap(tierd::cache::CacheHeaders::new(state.clock.clone()))
            .wrap(tierd::ratelimit::RateLimit::new(state.clone()))
            .wrap(tierd::guard::Guard::new(
                settings.server.request_limits(),
                state.metrics.clone(),
            ))
            .wrap(tierd::observe::Observe::new(state.metrics.clone()))
            .default_service(fn_service(move |req: ServiceRequest| {
                let body = body.clone();
                async move {
                    let res = HttpResponse::Ok()
                        .insert_header(("cache-control", "public, max-age=300"))
                        .insert_header(("content-type", "application/json"))
                        .body(body);
                    Ok::<_, actix_web::Error>(ServiceResponse::new(req.into_parts().0, res))
                }
            })),
    ));
    let request = || {
        test::TestRequest::get()
            .uri(uri)
            .insert_header(("host", "bench"))
            .to_request()
    };
    rt.block_on(async {
        let res = test::call_service(&app, request()).await;
        assert_eq!(res.status(), 200);
    });
    c.bench_function(&format!("l1_hit_full_stack{suffix}"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let res = test::call_service(&app, request()).await;
                debug_assert_eq!(res.status(), 200);
                res
            })
        })
    });
    c.bench_function(&format!("l1_hit_304{suffix}"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let req = test::TestRequest::get()
                    .uri(uri)
                    .insert_header(("host", "bench"))
                    .insert_header(("if-none-match", "*"))
                    .to_request();
                test::call_service(&app, req).await
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
