//! The L1 hit path through the full middleware stack (CacheHeaders ▶ ResponseCache), without
//! sockets: key, lookup, variant selection, freshness, conditionals, response headers, metrics.
//!
//!     cargo bench --bench l1_hit

use std::sync::Arc;

use actix_web::dev::{fn_service, ServiceRequest, ServiceResponse};
use actix_web::{test, App, HttpResponse};
use criterion::{criterion_group, criterion_main, Criterion};
use tierd::clock::SystemClock;
use tierd::config::Settings;

fn bench(c: &mut Criterion) {
    let rt = actix_web::rt::System::new();
    let state =
        tierd::server::build_state(&Settings::default(), Arc::new(SystemClock)).expect("state");
    let body: String = "x".repeat(1300);
    let app = rt.block_on(test::init_service(
        App::new()
            .wrap(tierd::cache::ResponseCache::new(state.clone()))
            .wrap(tierd::cache::CacheHeaders::new(state.clock.clone()))
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
            .uri("/item.json")
            .insert_header(("host", "bench"))
            .to_request()
    };
    rt.block_on(async {
        let res = test::call_service(&app, request()).await;
        assert_eq!(res.status(), 200);
    });
    c.bench_function("l1_hit_full_stack", |b| {
        b.iter(|| {
            rt.block_on(async {
                let res = test::call_service(&app, request()).await;
                debug_assert_eq!(res.status(), 200);
                res
            })
        })
    });
    c.bench_function("l1_hit_304", |b| {
        b.iter(|| {
            rt.block_on(async {
                let req = test::TestRequest::get()
                    .uri("/item.json")
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
