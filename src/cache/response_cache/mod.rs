//! The `ResponseCache` middleware: looks requests up in storage, serves fresh or stale-while-
//! revalidate hits, fills misses through one coalesced origin fetch per key, revalidates stale
//! entries, serves stale on error, and invalidates on unsafe methods.
//!
//! The fetch that fills a key runs in its own task: a client that disconnects does not cancel it
//! for the requests waiting on it, and a background refresh outlives the request that started it.

use std::future::{ready, Ready};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use actix_web::body::{BodySize, BodyStream, BoxBody, MessageBody};
use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::oneshot;
use tracing::Instrument;

#[cfg(feature = "redis")]
use super::bus::Bus;
use super::directive::CacheDirective;
use super::entry::{CachedResponse, Retention, Slot};
use super::key;
use super::single_flight::{self, FlightGuard, FlightOutcome, Flights, Join};
use crate::clock::Clock;
use crate::http::cache_status::{CacheStatus, Fwd};
use crate::http::headers::has_body;
use crate::http::hygiene::Hygiene;
use crate::http::response::opaque;
use crate::http::storable::{self, LifetimeOverride, NotStorable, RequestFacts, StoreOptions};
use crate::log_limit::{LogLimit, DEFAULT_LOG_INTERVAL};
use crate::metrics::{Lookup, Metrics, OriginError, Outcome, RouteCounters};
use crate::observe::Served;
use crate::policy::{self, RouteMatch, Rule, RuleSet, Selector};
use crate::ratelimit::{too_many_requests, Denial, KeyKind, Limits, QuotaKind};
use crate::store::{TierName, TierSet, TieredStore};
use arc_swap::ArcSwap;

mod decide;
mod fetch;
mod forward;
mod lookup;
mod respond;
mod route;
mod state;

pub use respond::cache_status_header;
pub use state::{CachePolicy, CacheState, GetWithBody, PurgeSource, UpstreamFailure};

use decide::Decision;
use fetch::*;
use forward::*;
use lookup::*;
use respond::*;
use route::*;

/// The middleware. Wrap it inside [`CacheHeaders`](super::CacheHeaders):
///
/// ```no_run
/// # use std::sync::Arc;
/// # use actix_web::{web, App, HttpResponse};
/// # fn state() -> Arc<tierd::cache::CacheState> { unimplemented!() }
/// let app = App::new()
///     .wrap(tierd::cache::ResponseCache::new(state()))
///     .wrap(tierd::cache::CacheHeaders::new(state().clock.clone()))
///     .route("/", web::get().to(|| async { HttpResponse::Ok().body("hi") }));
/// ```
#[derive(Clone)]
pub struct ResponseCache {
    state: Arc<CacheState>,
}

impl ResponseCache {
    pub fn new(state: Arc<CacheState>) -> Self {
        ResponseCache { state }
    }
}

impl<S, B> Transform<S, ServiceRequest> for ResponseCache
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Transform = ResponseCacheService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ResponseCacheService {
            inner: Rc::new(service),
            state: self.state.clone(),
        }))
    }
}

pub struct ResponseCacheService<S> {
    inner: Rc<S>,
    state: Arc<CacheState>,
}

impl<S, B> Service<ServiceRequest> for ResponseCacheService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(inner);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let ctx = Ctx {
            state: self.state.clone(),
            inner: self.inner.clone(),
        };
        let Some(warm) = take_warm_marker(&self.state, &mut req) else {
            return Box::pin(ctx.handle(req));
        };
        req.extensions_mut().insert(warm);
        Box::pin(async move {
            let mut res = ctx.handle(req).await?;
            warm_result(&mut res);
            Ok(res)
        })
    }
}

struct Ctx<S> {
    state: Arc<CacheState>,
    inner: Rc<S>,
}

impl<S> Clone for Ctx<S> {
    fn clone(&self) -> Self {
        Ctx {
            state: self.state.clone(),
            inner: self.inner.clone(),
        }
    }
}

/// An opaque 500 as an actix error, for when no request is left to answer with (the inner
/// service took it and panicked).
fn internal_error() -> Error {
    actix_web::error::InternalError::from_response(
        "internal error",
        opaque(StatusCode::INTERNAL_SERVER_ERROR),
    )
    .into()
}

/// Calls the inner service (the upstream proxy, or an application's routes). A panic in it, a
/// handler's bug, becomes an opaque 500 and an ERROR line instead of a dropped connection, and
/// never leaves the requests coalesced on it waiting.
async fn call_inner<S, B>(inner: &S, req: ServiceRequest) -> Result<ServiceResponse<BoxBody>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    use futures_util::FutureExt;
    let started = std::time::Instant::now();
    let called = std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req)));
    let res = match called {
        Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
        Err(p) => Err(p),
    };
    match res {
        Ok(r) => r.map(|r| {
            r.request()
                .extensions_mut()
                .insert(crate::metrics::OriginTime(started.elapsed()));
            r.map_into_boxed_body()
        }),
        Err(_) => {
            tracing::error!("the inner service panicked; answered 500");
            Err(internal_error())
        }
    }
}

/// With a warmer attached, removes the warm marker from the request (neither the origin nor a
/// handler sees it); the warm fetch it is when it was this node's warmer's.
#[inline]
fn take_warm_marker(state: &CacheState, req: &mut ServiceRequest) -> Option<super::WarmFetch> {
    // Without a warmer the header means nothing to tierd: no lookup on the request path.
    if state.warm.get().is_none() || !req.headers().contains_key(super::WARM_HEADER) {
        return None;
    }
    let own = state.warm_fetch(req.headers());
    req.headers_mut().remove(super::WARM_HEADER);
    if own.is_none() {
        static FORGED: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
        if let Some(occurrences) = FORGED.check() {
            tracing::warn!(
                occurrences,
                "a request carried a tierd-warm header that is not this node's warmer's; removed, the request is served as a client's"
            );
        }
    }
    own
}

/// Tells the warmer what its fetch did, from what the cache noted.
fn warm_result(res: &mut ServiceResponse<BoxBody>) {
    use std::fmt::Write;
    let mut v = String::with_capacity(48);
    match res.request().extensions().get::<Served>() {
        Some(s) => {
            let _ = write!(v, "outcome={}", s.outcome.as_str());
            if let Some(t) = s.tier {
                let _ = write!(v, "; tier={}", t.as_str());
            }
            if let Some(ttl) = s.ttl {
                let _ = write!(v, "; ttl={}", ttl.as_secs());
            }
        }
        None => v.push_str("outcome=none"),
    }
    if let Ok(v) = HeaderValue::from_str(&v) {
        res.headers_mut()
            .insert(HeaderName::from_static(super::WARM_RESULT_HEADER), v);
    }
}

/// Held in the extensions of a stale-while-revalidate response: dropped once actix has taken
/// the response (and with it the response's copy of the request), which lets the background
/// refresh start. The inner service (an application's router) needs the request to itself.
struct RefreshGate(#[allow(dead_code)] oneshot::Sender<()>);

/// A GET or HEAD goes to the origin without the client's body (and without the headers that
/// announce one): its response is shared, so no client's body may shape it. The body is left
/// unread; actix closes the connection after the response when one was sent.
fn strip_body(req: &mut ServiceRequest) {
    if has_body(req.headers()) {
        let h = req.headers_mut();
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::TRANSFER_ENCODING);
    }
    req.set_payload(Payload::None);
}

fn is_unsafe(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Request headers that make the origin answer conditionally; tierd removes the client's and
/// answers the client's condition itself: a miss is forwarded without the client's
/// conditionals (RFC 9111 §4.3.2), so what is stored is a full response.
const CONDITIONALS: [HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// What a lookup found.
struct Found {
    entry: Arc<CachedResponse>,
    tier: TierName,
}
