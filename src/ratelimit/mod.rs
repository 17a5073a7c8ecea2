//! Rate limiting on [governor]'s GCRA: per-client quotas, per-rule quotas and the origin
//! quota.
//!
//! - **Client quota** (`[rate_limit]`): every request of a client spends from its bucket.
//! - **Rule quota** (`rate_limit` in a `[[rules]]` entry): the requests a rule matches also
//!   spend from the client's bucket for that rule.
//! - **Origin quota** (`[rate_limit.origin]`): only requests that would reach the origin
//!   (misses, passes, revalidations, mutations) spend from it, per client or for the whole
//!   node. The cache checks it ([`Limits::check_origin`]); hits never touch it, and a stale
//!   entry is served when it is spent.
//!
//! A request past a quota gets a 429 with `Retry-After` and `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset`, an opaque body, and no `Cache-Status`; it is
//! counted in `tierd_rate_limited_total{route,quota,key_kind}` (never by client).
//!
//! Clients are identified by [`Identity`]. Each quota tracks at most `max_clients` clients (see
//! [`limiter`]); [`Limits::cleanup`] drops the buckets that are full again and runs on a timer
//! in the gateway.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use actix_web::{web, App, HttpResponse};
//! # fn state() -> Arc<tierd::cache::CacheState> { unimplemented!() }
//! let st = state(); // built `.with_limits(...)`
//! let app = App::new()
//!     .wrap(tierd::cache::ResponseCache::new(st.clone()))
//!     .wrap(tierd::cache::CacheHeaders::new(st.clock.clone()))
//!     .wrap(tierd::ratelimit::RateLimit::new(st.clone()))
//!     .route("/", web::get().to(|| async { HttpResponse::Ok().body("hi") }));
//! ```
//!
//! Any quota can be put in **dry-run** mode (`dry_run = true`): it is measured as usual, but a
//! request it would refuse goes on and is counted in
//! `tierd_rate_limit_dry_run_total{route,quota,key_kind}` instead, to size quotas on real
//! traffic before enforcing them.
//!
//! Quotas are per node: with N nodes a client may send N times its quota in all.

mod identity;
pub mod limiter;
mod metrics;
mod middleware;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use prometheus::IntCounterVec;

pub use identity::{Cidr, ClientHeader, ClientId, ClientKey, Identity, KeyKind};
pub use limiter::{check_quota, Denial, Limiter, QuotaSpec};

pub use metrics::RateLimitMetrics;
pub use middleware::{QuotaSource, RateLimit, RateLimitService};

use crate::clock::Clock;
use crate::http::response::opaque;

/// Clients tracked per quota by default (`rate_limit.max_clients`).
pub const DEFAULT_RATE_LIMIT_MAX_CLIENTS: usize = 100_000;
/// How often full buckets are dropped by default (`rate_limit.cleanup_interval_seconds`).
pub const DEFAULT_RATE_LIMIT_CLEANUP_SECONDS: u64 = 10;

/// Which quota refused a request; the `quota` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum QuotaKind {
    Client,
    Rule,
    Origin,
}

impl QuotaKind {
    /// Every quota.
    pub const ALL: [QuotaKind; 3] = [QuotaKind::Client, QuotaKind::Rule, QuotaKind::Origin];

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Every quota of a gateway, and how clients are identified.
pub struct Limits {
    identity: Identity,
    client: Option<Limiter>,
    origin: Option<Limiter>,
    origin_per_node: bool,
    /// The client quota is measured, not enforced.
    client_dry_run: bool,
    /// The origin quota is measured, not enforced.
    origin_dry_run: bool,
    clock: Arc<dyn Clock>,
    max_clients: usize,
    cleanup_interval: Duration,
    metrics: RateLimitMetrics,
    /// 429s since the last cleanup, for its summary log line.
    refused: AtomicU64,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("client", &self.client)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Limits {
    /// No quotas (rule quotas still get buckets, tracking the default number of clients).
    pub fn disabled(clock: Arc<dyn Clock>, metrics: RateLimitMetrics) -> Limits {
        Limits {
            identity: Identity::default(),
            client: None,
            origin: None,
            origin_per_node: false,
            client_dry_run: false,
            origin_dry_run: false,
            clock,
            max_clients: DEFAULT_RATE_LIMIT_MAX_CLIENTS,
            cleanup_interval: Duration::from_secs(DEFAULT_RATE_LIMIT_CLEANUP_SECONDS),
            metrics,
            refused: AtomicU64::new(0),
        }
    }

    /// Identifies clients with `identity` (addresses, trusted proxies, API keys).
    pub fn with_identity(mut self, identity: Identity) -> Limits {
        self.identity = identity;
        self
    }

    /// Tracks at most `max_clients` clients per quota and drops full buckets every
    /// `cleanup_interval`. Set before the quotas: each quota's table is sized when it is added.
    pub fn with_clients(mut self, max_clients: usize, cleanup_interval: Duration) -> Limits {
        self.max_clients = max_clients.max(1);
        self.cleanup_interval = cleanup_interval.max(Duration::from_secs(1));
        self
    }

    /// Adds the per-client quota on every request; `dry_run` measures it without enforcing it.
    pub fn with_client_quota(mut self, spec: QuotaSpec, dry_run: bool) -> Limits {
        self.client = Some(self.limiter(spec, QuotaKind::Client));
        self.client_dry_run = dry_run;
        self
    }

    /// Adds the origin quota, per client or (`per_node`) one for the whole node.
    pub fn with_origin_quota(mut self, spec: QuotaSpec, per_node: bool, dry_run: bool) -> Limits {
        self.origin = Some(self.limiter(spec, QuotaKind::Origin));
        self.origin_per_node = per_node;
        self.origin_dry_run = dry_run;
        self
    }

    fn limiter(&self, spec: QuotaSpec, kind: QuotaKind) -> Limiter {
        let overflow = self.metrics.overflow.with_label_values(&[kind.as_str()]);
        Limiter::new(spec, self.clock.clone(), self.max_clients, overflow)
    }

    /// How clients are identified.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// How often [`cleanup`](Self::cleanup) should run.
    pub fn cleanup_interval(&self) -> Duration {
        self.cleanup_interval
    }

    /// Spends one origin request for the client of `req` (or for the node), on `route` (the
    /// metric label). `Err` when the origin quota is spent: serve stale or refuse. In dry-run
    /// mode a spent quota is counted and the request goes on.
    pub fn check_origin(&self, req: &HttpRequest, route: &str) -> Result<(), (Denial, KeyKind)> {
        let Some(limiter) = &self.origin else {
            return Ok(());
        };
        let id = if self.origin_per_node {
            ClientId {
                key: ClientKey::Node,
                kind: KeyKind::Node,
            }
        } else {
            // Resolved again rather than carried in the request's extensions: cheaper than an
            // extension insert on every request, and only requests bound for the origin get here.
            self.identity.of(req)
        };
        match limiter.check(&id.key) {
            Ok(()) => Ok(()),
            Err(d) if self.origin_dry_run => {
                self.would_refuse(route, QuotaKind::Origin, id.kind, &d);
                Ok(())
            }
            Err(d) => Err((d, id.kind)),
        }
    }

    /// Counts and logs one refusal.
    pub fn refused(&self, route: &str, quota: QuotaKind, kind: KeyKind, d: &Denial) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        record(&self.metrics.rate_limited, route, quota, kind, d, false);
    }

    /// Counts and logs a request a dry-run quota would have refused.
    pub fn would_refuse(&self, route: &str, quota: QuotaKind, kind: KeyKind, d: &Denial) {
        record(&self.metrics.dry_run, route, quota, kind, d, true);
    }
}

fn record(
    counter: &IntCounterVec,
    route: &str,
    quota: QuotaKind,
    kind: KeyKind,
    d: &Denial,
    dry_run: bool,
) {
    counter
        .with_label_values(&[route, quota.as_str(), kind.as_str()])
        .inc();
    tracing::debug!(
        quota = quota.as_str(),
        key_kind = kind.as_str(),
        retry_after_ms = d.retry_after.as_millis() as u64,
        dry_run,
        "rate limited"
    );
}

fn seconds_header(d: Duration) -> HeaderValue {
    // Whole seconds, rounded up: a client that waits this long is let through.
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// The 429 for `d`: opaque body, `Retry-After`, `RateLimit-Limit/Remaining/Reset`
/// (draft-ietf-httpapi-ratelimit-headers), `Cache-Control: no-store`.
pub fn too_many_requests(d: &Denial) -> HttpResponse {
    let mut res = opaque(StatusCode::TOO_MANY_REQUESTS);
    let h = res.headers_mut();
    h.insert(header::RETRY_AFTER, seconds_header(d.retry_after));
    h.insert(
        HeaderName::from_static("ratelimit-limit"),
        HeaderValue::from(d.limit),
    );
    h.insert(
        HeaderName::from_static("ratelimit-remaining"),
        HeaderValue::from_static("0"),
    );
    h.insert(
        HeaderName::from_static("ratelimit-reset"),
        seconds_header(d.reset),
    );
    res
}
