//! The rate-limit middleware (client and rule quotas) and the rules' buckets: the part of rate
//! limiting that knows the rules and the cache state.

use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{Error, HttpMessage};
use futures_util::future::{Either, MapOk, TryFutureExt};

use super::{too_many_requests, Limits, QuotaKind, QuotaSpec};
use crate::metrics::{Outcome, Served};
use crate::policy::{RouteMatch, Rule, RuleSet};

impl Limits {
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
                .clients
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

/// What the middleware reads from the state it runs beside: the quotas, and the rules in force
/// (swapped whole on reload). The cache's state implements it; the limiter owns none of it.
pub trait QuotaSource: Send + Sync + 'static {
    /// The quotas and how clients are identified.
    fn limits(&self) -> &Limits;
    /// The rules in force now, with their quotas' buckets.
    fn rules(&self) -> arc_swap::Guard<Arc<RuleSet>>;
    /// A request no client quota applies to (the warmer's own fetches, which have their own
    /// budget).
    fn exempt(&self, _req: &ServiceRequest) -> bool {
        false
    }
}

/// The middleware: client and rule quotas. Wrap it outside
/// [`CacheHeaders`](crate::cache::CacheHeaders) so a 429 carries no cache headers.
#[derive(Clone)]
pub struct RateLimit {
    state: Arc<dyn QuotaSource>,
}

impl RateLimit {
    /// The middleware over `state`'s quotas and rules.
    pub fn new(state: Arc<dyn QuotaSource>) -> Self {
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

/// The service [`RateLimit`] wraps around the next one.
pub struct RateLimitService<S> {
    inner: Rc<S>,
    state: Arc<dyn QuotaSource>,
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
        let limits = self.state.limits();
        let rules = self.state.rules();
        let rule_quotas = rules.has_limiters();
        if (limits.client.is_none() && !rule_quotas) || self.state.exempt(&req) {
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
            req.extensions_mut()
                .insert(Served::answered(Outcome::RateLimited, counters));
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
