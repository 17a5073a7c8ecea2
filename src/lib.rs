//! tierd: an observability-first HTTP cache.
//!
//! Two things from one code base: a caching gateway (`tierd serve`, a reverse proxy in front of
//! any HTTP API, tuned from a config file), and the same middleware stack as a library for
//! actix-web applications ([`cache::CacheHeaders`] and [`cache::ResponseCache`] over a
//! [`store::TieredStore`]).
//!
//! The caching rules are those of an RFC 9111 shared cache; the pure decision functions live in
//! [`http`], each with table tests citing its section.
#![forbid(unsafe_code)]

pub mod admin;
#[cfg(feature = "gateway")]
pub mod app;
pub mod cache;
pub mod clock;
pub mod config;
#[cfg(feature = "gateway")]
pub mod demo;
#[cfg(feature = "gateway")]
pub mod drain;
mod facade;
pub mod guard;
pub mod http;
pub mod log_limit;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod ratelimit;
pub mod selector;
#[cfg(feature = "gateway")]
pub mod server;
pub mod store;
pub mod types;
#[cfg(feature = "gateway")]
pub mod upstream;

pub use cache::{CacheDirective, ValueCache, ValueOptions};
pub use config::Settings;
pub use facade::{Cache, CacheBuilder, CacheMiddleware, CacheService, Error, Purged, Rules};
pub use policy::Selector;
