//! tierd: an observability-first HTTP cache.
//!
//! Two products from one crate: a caching gateway (`tierd serve`, a reverse proxy in front of any
//! HTTP API, tuned from a config file; feature `gateway`), and the same stack as a library for
//! actix-web applications, which is what this page documents:
//!
//! - [`Cache`], built by [`Cache::builder`]: L1 in process, L2 Redis ([`CacheBuilder::redis`],
//!   feature `redis`), L3 DuckDB ([`CacheBuilder::duckdb`], feature `duckdb`), caching
//!   [`Rules`], metrics, rate limits;
//! - [`Cache::middleware`]: every layer in its one correct order, for an `App`, a `scope` or a
//!   `resource`; a handler can set its own response's policy with a [`CacheDirective`];
//! - [`Cache::admin`]: the admin endpoints, mounted where the application wants them;
//! - [`Cache::get_or_compute`]: a value cache (cache-aside) over the same tiers, with per-key
//!   single flight; [`Cache::invalidate`] purges by [`Selector`] on every tier and node.
//!
//! ```no_run
//! use actix_web::{web, App, HttpResponse, HttpServer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = tierd::Cache::builder()
//!     .rules(tierd::Rules::from_toml_str(r#"
//!         [[rules]]
//!         path = "/items/{id}"
//!         ttl_seconds = 60
//!     "#)?)
//!     .build()?;
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(cache.middleware())
//!         .route("/items/{id}", web::get().to(|| async { HttpResponse::Ok().body("item") }))
//! })
//! .bind("127.0.0.1:8081")?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```
//!
//! `examples/embed.rs` is a complete application; docs/src/guide/library.md walks through it.
//!
//! The caching rules are those of an RFC 9111 shared cache. The modules below the root are the
//! gateway's and the tests' door into the internals: hidden from these docs, and not part of
//! the library's API (they change without notice).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[doc(hidden)]
pub mod admin;
#[cfg(feature = "gateway")]
#[doc(hidden)]
pub mod app;
#[doc(hidden)]
pub mod cache;
#[doc(hidden)]
pub mod clock;
#[doc(hidden)]
pub mod config;
#[cfg(feature = "gateway")]
#[doc(hidden)]
pub mod demo;
#[cfg(feature = "gateway")]
#[doc(hidden)]
pub mod drain;
mod facade;
#[doc(hidden)]
pub mod guard;
#[doc(hidden)]
pub mod http;
#[doc(hidden)]
pub mod journal;
#[doc(hidden)]
pub mod log_limit;
#[doc(hidden)]
pub mod logging;
#[doc(hidden)]
pub mod metrics;
#[doc(hidden)]
pub mod observe;
#[doc(hidden)]
pub mod policy;
#[doc(hidden)]
pub mod ratelimit;
#[doc(hidden)]
pub mod selector;
#[cfg(feature = "gateway")]
#[doc(hidden)]
pub mod server;
#[doc(hidden)]
pub mod store;
#[doc(hidden)]
pub mod types;
#[cfg(feature = "gateway")]
#[doc(hidden)]
pub mod upstream;
#[doc(hidden)]
pub mod warm;

pub use cache::{CacheDirective, Lookup, ValueCache, ValueOptions};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Settings, WarmingConfig};
pub use facade::{Cache, CacheBuilder, CacheMiddleware, CacheService, Error, Purged, Rules};
pub use selector::Selector;
