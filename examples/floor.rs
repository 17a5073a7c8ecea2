//! The floor for an L1 hit on this stack: a bare actix-web handler that looks the key up in moka
//! and answers the stored body with a few headers; no policy, metrics or logging. The bench
//! guard (`scripts/bench-guard.sh`) gives tierd's hit throughput as a share of this one's, the
//! figure that carries from one machine to another.
//!
//!   cargo run --release --example floor -- 127.0.0.1:19105 item.json

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use moka::sync::Cache;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:19105".into());
    let file = args.next().unwrap_or_else(|| "item.json".into());
    let body = Bytes::from(std::fs::read(file)?);
    let cache: web::Data<Cache<String, Bytes>> = web::Data::new(Cache::new(10_000));
    HttpServer::new(move || {
        let body = body.clone();
        App::new().app_data(cache.clone()).default_service(web::to(
            move |req: HttpRequest, cache: web::Data<Cache<String, Bytes>>| {
                let body = body.clone();
                async move {
                    let key = format!("{}{}", req.connection_info().host(), req.uri());
                    let hit = cache.get_with(key, || body.clone());
                    HttpResponse::Ok()
                        .insert_header(("cache-control", "public, max-age=300"))
                        .insert_header(("age", "1"))
                        .insert_header(("etag", "\"floor\""))
                        .insert_header(("cache-status", "floor; hit"))
                        .content_type("application/json")
                        .body(hit)
                }
            },
        ))
    })
    .bind(addr)?
    .run()
    .await
}
