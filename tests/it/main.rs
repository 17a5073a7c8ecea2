//! tierd's integration tests, in one binary: each test binary links DuckDB, and one links once.
//! Each module is one theme; `common` holds the fixtures they share (a programmable origin, an
//! in-process gateway, Redis servers, raw-socket and metrics helpers).
//!
//! Run one theme with `cargo test --test it security::` (module path prefix).

mod common;

mod cli;
mod coalescing;
mod compression;
mod docs;
mod duck;
mod embed;
mod hardening;
mod house;
mod journal;
mod manage;
mod metrics;
mod nodes;
mod origin_http;
mod page;
mod prometheus;
mod ratelimit;
mod reliability;
mod rfc;
mod robustness;
mod rules;
mod security;
mod tiers;
mod tls;
mod values;
mod warm;
