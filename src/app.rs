//! The one place the gateway's middleware order is set.

use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{fn_service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, Error};

use crate::cache::{CacheHeaders, CacheState, ResponseCache};
use crate::config::UpstreamConfig;
use crate::drain::Drain;
use crate::guard::Guard;
use crate::observe::Observe;
use crate::ratelimit::RateLimit;
use crate::upstream::{Target, Upstream};

/// What every worker needs to build its gateway app.
#[derive(Clone)]
pub struct GatewayParts {
    pub state: Arc<CacheState>,
    pub upstream: UpstreamConfig,
    pub target: Target,
    pub guard: crate::guard::RequestLimits,
    /// Set on shutdown: every response closes its connection.
    pub draining: crate::drain::Draining,
}

/// Builds one worker's gateway:
/// Drain ▶ Observe ▶ Guard ▶ RateLimit ▶ CacheHeaders ▶ ResponseCache ▶ upstream proxy.
pub fn gateway_app(
    parts: &GatewayParts,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    let upstream = Rc::new(Upstream::new(
        &parts.upstream,
        parts.target.clone(),
        parts.state.metrics.clone(),
    ));
    App::new()
        .wrap(ResponseCache::new(parts.state.clone()))
        .wrap(
            CacheHeaders::new(parts.state.clock.clone()).with_metrics(parts.state.metrics.clone()),
        )
        .wrap(RateLimit::new(parts.state.clone()))
        .wrap(Guard::new(parts.guard, parts.state.metrics.clone()))
        .wrap(Observe::new(parts.state.metrics.clone()))
        .wrap(Drain::new(parts.draining.clone()))
        .default_service(fn_service(move |req: ServiceRequest| {
            let upstream = upstream.clone();
            async move { Ok::<_, Error>(upstream.forward(req).await) }
        }))
}
