//! The whole stack as one actix-web middleware, its layers in their one correct order.

use std::future::{ready, Ready};
use std::sync::{Arc, Once};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::Error;

use crate::cache::ResponseCacheService;
use crate::cache::{CacheHeaders, CacheHeadersService, CacheState, ResponseCache};
use crate::guard::{Guard, GuardService, RequestLimits};
use crate::observe::{Observe, ObserveService};
use crate::ratelimit::{RateLimit, RateLimitService};

/// The service [`CacheMiddleware`] wraps around an application's service.
pub type CacheService<S> =
    ObserveService<GuardService<RateLimitService<CacheHeadersService<ResponseCacheService<S>>>>>;

/// tierd's middleware stack as one [`Transform`], from [`Cache::middleware`](crate::Cache::middleware):
/// `Observe ▶ Guard ▶ RateLimit ▶ CacheHeaders ▶ ResponseCache ▶` the wrapped service.
///
/// - `Observe`: request metrics (by route, method, status class, cache status) and the request
///   context of every log line;
/// - `Guard`: request hardening (414, 431, 413, 408; a `Host` that cannot be keyed is a 400);
/// - `RateLimit`: `[rate_limit]` and the rules' quotas (429);
/// - `CacheHeaders`: `ETag`, conditional requests (304, 412);
/// - `ResponseCache`: lookups in L1, L2, L3, storing, coalescing, invalidation on writes.
///
/// It wraps an [`App`](actix_web::App), a [`Scope`](actix_web::Scope) or a
/// [`Resource`](actix_web::Resource) alike; each wrap shares the one [`Cache`](crate::Cache).
#[derive(Clone)]
pub struct CacheMiddleware {
    pub(crate) state: Arc<CacheState>,
    pub(crate) limits: RequestLimits,
    /// Starts the rate limiter's housekeeping once, on the first runtime the stack is built on.
    pub(crate) housekeeping: Arc<Once>,
}

impl<S, B> Transform<S, ServiceRequest> for CacheMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Transform = CacheService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let state = &self.state;
        self.housekeeping
            .call_once(|| super::spawn_limits_housekeeping(state));
        // Each layer's own transform is ready at once; compose them innermost first.
        let stack = (|| {
            let s = ResponseCache::new(state.clone())
                .new_transform(service)
                .into_inner()?;
            let s = CacheHeaders::new(state.clock.clone())
                .with_metrics(state.metrics.clone())
                .new_transform(s)
                .into_inner()?;
            let s = RateLimit::new(state.clone())
                .new_transform(s)
                .into_inner()?;
            let s = Guard::new(self.limits, state.metrics.clone())
                .new_transform(s)
                .into_inner()?;
            Observe::new(state.metrics.clone())
                .with_journal(state.journal.clone())
                .new_transform(s)
                .into_inner()
        })();
        ready(stack)
    }
}
