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

use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse};
use futures_util::future::{Either, MapOk, TryFutureExt};
use prometheus::IntCounterVec;

pub use identity::{Cidr, ClientId, ClientKey, Identity, KeyKind};
pub use limiter::{Denial, Limiter, QuotaSpec};

use crate::cache::{opaque, CacheState};
use crate::clock::Clock;
use crate::config::{OriginQuotaKey, RateLimitConfig};
use crate::metrics::{Metrics, Outcome};
use crate::observe::Served;
use crate::policy::{RouteMatch, Rule, RuleSet};

/// Which quota refused a request; the `quota` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    Client,
    Rule,
    Origin,
}

impl QuotaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Client => "client",
            QuotaKind::Rule => "rule",
            QuotaKind::Origin => "origin",
        }
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
    metrics: Arc<Metrics>,
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
    pub fn disabled(clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Limits {
        Limits {
            identity: Identity::default(),
            client: None,
            origin: None,
            origin_per_node: false,
            client_dry_run: false,
            origin_dry_run: false,
            clock,
            max_clients: crate::config::DEFAULT_RATE_LIMIT_MAX_CLIENTS,
            cleanup_interval: Duration::from_secs(
                crate::config::DEFAULT_RATE_LIMIT_CLEANUP_SECONDS,
            ),
            metrics,
            refused: AtomicU64::new(0),
        }
    }

    /// The quotas `[rate_limit]` describes (validated by `Settings::validate`).
    pub fn from_config(
        cfg: &RateLimitConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Limits, String> {
        let trusted = cfg
            .trusted_proxies
            .iter()
            .map(|c| Cidr::parse(c).map_err(|e| format!("rate_limit.trusted_proxies: '{c}' {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let api_key = (!cfg.api_key_header.is_empty())
            .then(|| HeaderName::from_bytes(cfg.api_key_header.as_bytes()))
            .transpose()
            .map_err(|_| format!("rate_limit.api_key_header: '{}'", cfg.api_key_header))?;
        let mut limits = Limits::disabled(clock, metrics);
        limits.identity = Identity::new(trusted, api_key, cfg.ipv6_prefix_bits);
        limits.max_clients = cfg.max_clients.max(1);
        limits.cleanup_interval = Duration::from_secs(cfg.cleanup_interval_seconds.max(1));
        if cfg.enabled {
            limits.client = Some(limits.limiter(
                QuotaSpec {
                    requests_per_second: cfg.requests_per_second,
                    burst: cfg.burst,
                },
                QuotaKind::Client,
            ));
            limits.client_dry_run = cfg.dry_run;
        }
        if cfg.origin.enabled {
            limits.origin = Some(limits.limiter(
                QuotaSpec {
                    requests_per_second: cfg.origin.requests_per_second,
                    burst: cfg.origin.burst,
                },
                QuotaKind::Origin,
            ));
            limits.origin_per_node = cfg.origin.per == OriginQuotaKey::Node;
            limits.origin_dry_run = cfg.origin.dry_run;
        }
        Ok(limits)
    }

    fn limiter(&self, spec: QuotaSpec, kind: QuotaKind) -> Limiter {
        let overflow = self
            .metrics
            .rate_limit_overflow
            .with_label_values(&[kind.as_str()]);
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

    /// Gives `rules` the buckets of their quotas, reusing `previous`'s for a rule with the same
    /// name and quota (a reload does not hand every client a fresh burst).
    pub fn attach(&self, rules: &mut RuleSet, previous: Option<&RuleSet>) {
        rules.attach_limiters(|rule: &Rule| {
            let q = rule.rate_limit?;
            let spec = QuotaSpec {
                requests_per_second: q.requests_per_second,
                burst: q.burst,
            };
            let kept = previous.and_then(|p| {
                p.limiters()
                    .find(|(r, l)| r.name == rule.name && l.spec() == spec)
                    .map(|(_, l)| l.clone())
            });
            Some(kept.unwrap_or_else(|| Arc::new(self.limiter(spec, QuotaKind::Rule))))
        });
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
        record(
            &self.metrics.rate_limit_dry_run,
            route,
            quota,
            kind,
            d,
            true,
        );
    }

    /// Drops buckets back at their full burst, exports the number of clients per quota and
    /// logs how many requests were refused since the last run.
    pub fn cleanup(&self, rules: &RuleSet) {
        let mut rule_clients = 0;
        for (_, l) in rules.limiters() {
            l.cleanup();
            rule_clients += l.clients();
        }
        let gauge = |kind: QuotaKind, n: usize| {
            self.metrics
                .rate_limit_clients
                .with_label_values(&[kind.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        gauge(QuotaKind::Rule, rule_clients);
        for (l, kind) in [
            (&self.client, QuotaKind::Client),
            (&self.origin, QuotaKind::Origin),
        ] {
            if let Some(l) = l {
                l.cleanup();
                gauge(kind, l.clients());
            }
        }
        let refused = self.refused.swap(0, Ordering::Relaxed);
        if refused > 0 {
            tracing::info!(
                refused,
                interval_s = self.cleanup_interval.as_secs(),
                "rate limits refused requests (tierd_rate_limited_total has them by route and quota)"
            );
        }
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

/// The middleware: client and rule quotas. Wrap it outside
/// [`CacheHeaders`](crate::cache::CacheHeaders) so a 429 carries no cache headers.
#[derive(Clone)]
pub struct RateLimit {
    state: Arc<CacheState>,
}

impl RateLimit {
    pub fn new(state: Arc<CacheState>) -> Self {
        RateLimit { state }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RateLimit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, BoxBody>>;
    type Error = Error;
    type Transform = RateLimitService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RateLimitService {
            inner: Rc::new(service),
            state: self.state.clone(),
        }))
    }
}

pub struct RateLimitService<S> {
    inner: Rc<S>,
    state: Arc<CacheState>,
}

type Passed<B> = fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B, BoxBody>>;

impl<S, B> Service<ServiceRequest> for RateLimitService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, BoxBody>>;
    type Error = Error;
    type Future = Either<
        MapOk<S::Future, Passed<B>>,
        Ready<Result<ServiceResponse<EitherBody<B, BoxBody>>, Error>>,
    >;

    forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let pass: Passed<B> = ServiceResponse::map_into_left_body;
        let limits = &self.state.limits;
        let rules = self.state.rules.load();
        let rule_quotas = rules.has_limiters();
        if limits.client.is_none() && !rule_quotas {
            return Either::Left(self.inner.call(req).map_ok(pass));
        }
        let id = limits.identity.of(req.request());
        // The quota that refuses the request, and those in dry-run mode that would have.
        let mut denied = None;
        let mut dry = [None, None];
        if let Some(d) = limits.client.as_ref().and_then(|l| l.check(&id.key).err()) {
            let slot = if limits.client_dry_run {
                &mut dry[0]
            } else {
                &mut denied
            };
            *slot = Some((d, QuotaKind::Client));
        }
        // The rule is needed for a rule quota and for the `route` label.
        let mut index = None;
        if rule_quotas || denied.is_some() || dry[0].is_some() {
            if let Some(m) = rules.find(req.method(), req.path()) {
                index = Some(m.index());
                if denied.is_none() {
                    if let Some(d) = m.limiter().and_then(|l| l.check(&id.key).err()) {
                        let slot = if m.rule().rate_limit.is_some_and(|q| q.dry_run) {
                            &mut dry[1]
                        } else {
                            &mut denied
                        };
                        *slot = Some((d, QuotaKind::Rule));
                    }
                }
            }
        }
        if dry.iter().any(Option::is_some) {
            let route = rules.counters(index).route();
            for (d, quota) in dry.iter().flatten() {
                limits.would_refuse(route, *quota, id.kind, d);
            }
        }
        if let Some((d, quota)) = denied {
            let counters = rules.counters(index).clone();
            limits.refused(counters.route(), quota, id.kind, &d);
            req.extensions_mut().insert(Served {
                outcome: Outcome::RateLimited,
                tier: None,
                counters,
            });
            let res = req.into_response(too_many_requests(&d));
            return Either::Right(ready(Ok(res.map_into_right_body())));
        }
        if rule_quotas {
            // The cache below would match the same rule again: hand it over.
            req.extensions_mut().insert(RouteMatch {
                rules: arc_swap::Guard::into_inner(rules),
                index,
            });
        }
        Either::Left(self.inner.call(req).map_ok(pass))
    }
}
