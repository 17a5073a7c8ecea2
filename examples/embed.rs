//! tierd as a library: an actix-web app with its routes behind tierd's middleware, a value
//! cached with `get_or_compute`, and tierd's admin endpoints and metrics mounted in the app.
//!
//!   cargo run --example embed        # EMBED_LISTEN=127.0.0.1:8081 by default
//!   curl -i localhost:8081/items/1   # again: Cache-Status says hit
//!   curl -i -X PUT localhost:8081/items/1 -H 'content-type: application/json' -d '{"status":"completed"}'
//!   curl -i localhost:8081/stats     # x-computations: how often the statistic was computed
//!   curl -s localhost:8081/metrics | grep tierd_requests_total
//!
//! Optional: EMBED_REDIS_URL (L2, shared by every instance) and EMBED_DUCKDB_PATH (L3).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{dev::Server, web, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use tierd::{Cache, Rules, Selector, ValueOptions};

/// The caching rules: an item is fresh for 60 s while it is in progress and 300 s once it is
/// completed (read from the response body); a PUT purges the item it changed.
const RULES: &str = r#"
[[rules]]
name = "item"
path = "/items/{id}"
ttl_by_field = { pointer = "/status", values = { in_progress = 60, completed = 300 } }
tags = ["item:{id}"]

[[rules]]
name = "item-write"
path = "/items/{id}"
methods = ["PUT"]
invalidate = { tags = ["item:{id}"] }
"#;

#[derive(Clone, Serialize, Deserialize)]
struct Item {
    id: u32,
    status: String,
}

#[derive(Serialize, Deserialize)]
struct Stats {
    items: usize,
    completed: usize,
}

/// The application's own state: its "database", a count of statistics computations, and a
/// metric of its own (registered in tierd's registry, so `/metrics` shows it beside tierd's).
struct Db {
    items: Mutex<HashMap<u32, Item>>,
    computations: AtomicU64,
    lookups: prometheus::IntCounter,
}

impl Db {
    fn item(&self, id: u32) -> Item {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let item = items.entry(id).or_insert_with(|| Item {
            id,
            status: "in_progress".into(),
        });
        item.clone()
    }
}

async fn get_item(db: web::Data<Db>, id: web::Path<u32>) -> HttpResponse {
    db.lookups.inc();
    tokio::time::sleep(Duration::from_millis(50)).await; // a slow lookup
    HttpResponse::Ok().json(db.item(*id))
}

#[derive(Deserialize)]
struct Update {
    status: String,
}

async fn put_item(
    db: web::Data<Db>,
    cache: web::Data<Cache>,
    id: web::Path<u32>,
    update: web::Json<Update>,
) -> HttpResponse {
    let item = Item {
        id: *id,
        status: update.into_inner().status,
    };
    db.items
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(item.id, item.clone());
    // The rule purges the item's cached responses; the statistic derived from it goes too.
    if let Err(e) = cache.invalidate(Selector::tag("stats")).await {
        eprintln!("stats purge incomplete: {e}");
    }
    HttpResponse::Ok().json(item)
}

async fn stats(db: web::Data<Db>, cache: web::Data<Cache>) -> HttpResponse {
    let stats: Stats = cache
        .get_or_compute("stats", ValueOptions::secs(7200).tag("stats"), || async {
            db.computations.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await; // an expensive aggregate
            let items = db.items.lock().unwrap_or_else(|p| p.into_inner());
            Stats {
                items: items.len(),
                completed: items.values().filter(|i| i.status == "completed").count(),
            }
        })
        .await;
    HttpResponse::Ok()
        .insert_header(("x-computations", db.computations.load(Ordering::SeqCst)))
        .insert_header(("cache-control", "no-store"))
        .json(stats)
}

/// Builds the cache and starts serving on `listen`.
pub fn start(listen: &str) -> Result<(Server, Cache), Box<dyn std::error::Error>> {
    let mut builder = Cache::builder()
        .l1_max_bytes(64 << 20)
        .rules(Rules::from_toml_str(RULES)?);
    if let Ok(url) = std::env::var("EMBED_REDIS_URL") {
        builder = builder.redis(url);
    }
    if let Ok(path) = std::env::var("EMBED_DUCKDB_PATH") {
        builder = builder.duckdb(path);
    }
    let cache = builder.build()?;
    let lookups = prometheus::IntCounter::new(
        "embed_item_lookups_total",
        "Item lookups the application did (cache misses)",
    )?;
    cache.registry().register(Box::new(lookups.clone()))?;

    let db = web::Data::new(Db {
        items: Mutex::default(),
        computations: AtomicU64::new(0),
        lookups,
    });
    let shared = web::Data::new(cache.clone());
    let app_cache = cache.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(db.clone())
            .app_data(shared.clone())
            .service(web::scope("/_tierd").configure(app_cache.admin()))
            .route(
                "/metrics",
                web::get().to({
                    let cache = app_cache.clone();
                    move || {
                        let text = cache.render_metrics();
                        async move { HttpResponse::Ok().content_type("text/plain").body(text) }
                    }
                }),
            )
            .service(
                web::scope("")
                    .wrap(app_cache.middleware())
                    .route("/items/{id}", web::get().to(get_item))
                    .route("/items/{id}", web::put().to(put_item))
                    .route("/stats", web::get().to(stats)),
            )
    })
    .bind(listen)?
    .run();
    Ok((server, cache))
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::var("EMBED_LISTEN").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let (server, cache) = start(&listen)?;
    println!("listening on http://{listen}");
    server.await?;
    cache.shutdown().await; // L2/L3 writes accepted so far are stored before exiting
    Ok(())
}
