//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/_tierd/stats`. It binds to its own
//! address (loopback by default) and is never reachable through the gateway port.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::cache::CacheState;

/// Registers the admin routes.
pub fn configure(state: Arc<CacheState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(state))
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/_tierd/stats", web::get().to(stats));
    }
}

async fn metrics(state: web::Data<CacheState>) -> HttpResponse {
    let l1 = state.store.l1().clone();
    // Exact counts need moka's pending maintenance; it is cheap but off the runtime thread.
    let _ = web::block(move || l1.sync()).await;
    for t in state.store.stats() {
        let tm = state.metrics.tier(t.name);
        if let Some(s) = t.stats {
            tm.entries.set(s.entries as i64);
            tm.bytes.set(s.bytes as i64);
        }
        tm.queue_depth.set(t.queue_depth as i64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<CacheState>) -> HttpResponse {
    let tiers: Vec<_> = state
        .store
        .stats()
        .into_iter()
        .map(|t| json!({"tier": t.name.as_str(), "ready": true}))
        .collect();
    HttpResponse::Ok().json(json!({"ready": true, "tiers": tiers}))
}

async fn stats(state: web::Data<CacheState>) -> HttpResponse {
    let l1 = state.store.l1().clone();
    let _ = web::block(move || l1.sync()).await;
    let tiers: Vec<_> = state
        .store
        .stats()
        .into_iter()
        .map(|t| {
            json!({
                "tier": t.name.as_str(),
                "entries": t.stats.map(|s| s.entries),
                "bytes": t.stats.map(|s| s.bytes),
                "queue_depth": t.queue_depth,
                "circuit": t.circuit.map(|c| c.as_str()),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "tiers": tiers,
        "in_flight_fetches": state.flights.len(),
    }))
}
