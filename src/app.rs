//! The one place the gateway's middleware order is set.

use std::rc::Rc;

use actix_web::body::MessageBody;
use actix_web::dev::{fn_service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, Error};

use crate::drain::Drain;
use crate::facade::Cache;
use crate::upstream::{Target, Upstream, UpstreamOptions};

/// What every worker needs to build its gateway app.
#[derive(Clone)]
pub struct GatewayParts {
    pub cache: Cache,
    pub upstream: UpstreamOptions,
    pub target: Target,
    /// Set on shutdown: every response closes its connection.
    pub draining: crate::drain::Draining,
}

/// Builds one worker's gateway:
/// Drain ▶ the cache's middleware stack ([`CacheMiddleware`](crate::CacheMiddleware): Observe ▶
/// Guard ▶ RateLimit ▶ CacheHeaders ▶ ResponseCache) ▶ upstream proxy.
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
        parts.cache.state().metrics.clone(),
    ));
    App::new()
        .wrap(parts.cache.middleware())
        .wrap(Drain::new(parts.draining.clone()))
        .default_service(fn_service(move |req: ServiceRequest| {
            let upstream = upstream.clone();
            async move { Ok::<_, Error>(upstream.forward(req).await) }
        }))
}
