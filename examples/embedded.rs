//! tierd as a library: an actix-web application with its own routes behind tierd's stack (the
//! cache, its headers, rate limits, request hardening and metrics), configured the way the
//! gateway is (`tierd.toml` and `TIERD__*` variables; here L2 and L3 are off unless configured).
//!
//!   cargo run --example embedded            # then: curl -i localhost:8081/api/items/1
//!
//! The README's "As a library" section shows the part between the `README` markers; a test
//! checks that it still does.

use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};

async fn item(id: web::Path<u32>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "max-age=60"))
        .json(serde_json::json!({ "id": *id, "status": "in_progress" }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut settings = tierd::config::Settings::load(None).map_err(std::io::Error::other)?;
    if std::env::var_os("TIERD__TIERS__L2__ENABLED").is_none() {
        settings.tiers.l2.enabled = false;
    }
    if std::env::var_os("TIERD__TIERS__L3__ENABLED").is_none() {
        settings.tiers.l3.enabled = false;
    }
    // README:begin
    let state = tierd::server::build_state(&settings, Arc::new(tierd::clock::SystemClock))?;
    let server = HttpServer::new({
        let (state, settings) = (state.clone(), settings.clone());
        move || {
            let metrics = state.clone();
            App::new()
                .wrap(tierd::cache::ResponseCache::new(state.clone()))
                .wrap(tierd::cache::CacheHeaders::new(state.clock.clone()))
                .wrap(tierd::ratelimit::RateLimit::new(state.clone())) // [rate_limit], rule quotas
                .wrap(tierd::guard::Guard::new(
                    tierd::guard::RequestLimits::from_config(&settings.server),
                    state.metrics.clone(),
                )) // 414, 431, 413, 408
                .wrap(tierd::observe::Observe::new(state.metrics.clone())) // metrics, request span
                .route("/api/items/{id}", web::get().to(item))
                .route(
                    "/metrics",
                    web::get().to(move || {
                        let text = metrics.metrics.render();
                        async move { HttpResponse::Ok().content_type("text/plain").body(text) }
                    }),
                )
        }
    });
    // README:end
    println!("listening on http://127.0.0.1:8081");
    server.bind("127.0.0.1:8081")?.run().await
}
