//! The `Observe` middleware: the outermost layer of the gateway. It opens one `request` span
//! per request (method and path) so every log line a request causes carries them, and records
//! the request metrics from the final response:
//! `tierd_requests_total{route,method,status_class,cache_status}`, the latency to the response
//! head, and the body bytes served from the cache or from the origin.
//!
//! The cache layer leaves a [`Served`] in the request's extensions saying what it did; a
//! request without one (a handler outside the cache) counts as `pass` on route `other`.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use actix_web::{web, App, HttpResponse};
//! # fn state() -> Arc<tierd::cache::CacheState> { unimplemented!() }
//! let st = state();
//! let app = App::new()
//!     .wrap(tierd::cache::ResponseCache::new(st.clone()))
//!     .wrap(tierd::cache::CacheHeaders::new(st.clock.clone()))
//!     .wrap(tierd::observe::Observe::new(st.metrics.clone()))
//!     .route("/", web::get().to(|| async { HttpResponse::Ok().body("hi") }));
//! ```
//!
//! Per-request access lines are DEBUG events with the target `tierd::access`: enable them with
//! `log.level = "info,tierd::access=debug"`.

use std::future::{ready, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, HttpMessage};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use tracing::Instrument;

use crate::journal::{Journal, JournalUrl, Row};
use crate::logging::{self, InRequest, RequestContext};
use crate::metrics::{MethodLabel, Metrics, Outcome, RouteCounters, StatusClass, OTHER_ROUTE};

use crate::metrics::OriginTime;
pub use crate::metrics::Served;
use crate::types::TierName;

/// The middleware; see the module docs.
#[derive(Clone)]
pub struct Observe {
    metrics: Arc<Metrics>,
    other: Arc<RouteCounters>,
    journal: Option<Arc<Journal>>,
}

impl Observe {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let other = Arc::new(metrics.route_counters(OTHER_ROUTE));
        Observe {
            metrics,
            other,
            journal: None,
        }
    }

    /// Also records every answered request in `journal`.
    pub fn with_journal(mut self, journal: Option<Arc<Journal>>) -> Self {
        self.journal = journal;
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Transform = ObserveService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveService {
            inner: service,
            cfg: self.clone(),
        }))
    }
}

pub struct ObserveService<S> {
    inner: S,
    cfg: Observe,
}

impl<S, B> Service<ServiceRequest> for ObserveService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        // Dropped with the future: answered, failed, or the client went away.
        let in_flight = self.cfg.metrics.begin_request();
        let method = MethodLabel::of(req.method());
        let bodiless = *req.method() == Method::HEAD;
        // The request every log line inside names: a thread-local context where tierd's
        // formatter is installed (the gateway), else a `request` span with two fields given at
        // creation (see `logging`).
        let (request, span) = if logging::request_context_installed() {
            let r = RequestContext::new(req.method().clone(), req.uri().clone());
            (Some(r), tracing::Span::none())
        } else {
            let span =
                tracing::info_span!("request", method = req.method().as_str(), path = req.path());
            (None, span)
        };
        let fut = logging::with_request(&request, || span.in_scope(|| self.inner.call(req)));
        let cfg = self.cfg.clone();
        Box::pin(InRequest::new(request, async move {
            let res = fut.instrument(span.clone()).await;
            drop(in_flight);
            let res = match res {
                Ok(res) => res.map_into_boxed_body(),
                Err(e) => {
                    let status = e.as_response_error().status_code();
                    cfg.record(&span, None, method, status, started, 0);
                    return Err(e);
                }
            };
            let served = res.request().extensions_mut().remove::<Served>();
            let status = res.status();
            let (size, streamed) = match res.response().body().size() {
                _ if bodiless || status == StatusCode::NOT_MODIFIED => (0, false),
                BodySize::Sized(n) => (n, false),
                BodySize::Stream => (0, true),
                BodySize::None => (0, false),
            };
            let from_cache = served.as_ref().is_some_and(|s| s.outcome.from_cache());
            cfg.record(&span, served.as_ref(), method, status, started, size);
            if let Some(j) = &cfg.journal {
                cfg.journal_row(j, res.request(), served, method, status, started, size);
            }
            if streamed && cfg.metrics.enabled() {
                let metrics = cfg.metrics.clone();
                return Ok(res.map_body(move |_, body| {
                    BoxBody::new(Counted {
                        inner: body,
                        metrics,
                        from_cache,
                    })
                }));
            }
            Ok(res)
        }))
    }
}

impl Observe {
    fn record(
        &self,
        span: &tracing::Span,
        served: Option<&Served>,
        method: MethodLabel,
        status: StatusCode,
        started: Instant,
        body_bytes: u64,
    ) {
        let (outcome, tier, counters) = match served {
            // The warmer's fetches have their own metrics (`tierd_warm_*`).
            Some(s) if s.warm_fetch => return,
            Some(s) => (s.outcome, s.tier, &s.counters),
            None => (Outcome::Pass, None, &self.other),
        };
        counters.count(outcome, method, StatusClass::of(status.as_u16()));
        self.metrics
            .observe_request(outcome, counters, started, body_bytes);
        tracing::debug!(
            target: "tierd::access",
            parent: span,
            status = status.as_u16(),
            route = counters.route(),
            cache_status = outcome.as_str(),
            tier = tier.map(TierName::as_str),
            duration_us = started.elapsed().as_micros() as u64,
            bytes = body_bytes,
            "request"
        );
    }
}

impl Observe {
    /// Hands one row to the journal: plain values only, formatted by its writer thread.
    #[allow(clippy::too_many_arguments)]
    fn journal_row(
        &self,
        journal: &Journal,
        req: &actix_web::HttpRequest,
        served: Option<Served>,
        method: MethodLabel,
        status: StatusCode,
        started: Instant,
        body_bytes: u64,
    ) {
        let served = served.unwrap_or_else(|| Served::answered(Outcome::Pass, self.other.clone()));
        let url = match served.key {
            JournalUrl::Url(u) => u,
            JournalUrl::NotSampled => return,
            JournalUrl::NotKeyed => {
                let host = crate::http::host::normalized(
                    crate::http::host::authority(req.uri(), req.headers()).unwrap_or_default(),
                );
                let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                match journal.url(&format!("{host}{pq}")) {
                    Some(u) => u,
                    None => return,
                }
            }
        };
        let origin = req.extensions().get::<OriginTime>().map(|t| t.0);
        journal.record(Row {
            at: journal.now(),
            method,
            url,
            route: served.counters.route_arc(),
            status: status.as_u16(),
            outcome: served.outcome,
            bypassed: served.bypassed,
            tier: served.tier,
            bytes: body_bytes,
            origin,
            total: started.elapsed(),
            ttl: served.ttl,
            peer: req.peer_addr().map(|a| a.ip()),
            user_scoped: served.private,
            warm_fetch: served.warm_fetch,
            warmed: served.warmed,
            import_key: None,
        });
    }
}

/// A streamed body whose bytes are counted as they are sent.
struct Counted {
    inner: BoxBody,
    metrics: Arc<Metrics>,
    from_cache: bool,
}

impl MessageBody for Counted {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            self.metrics
                .add_response_bytes(self.from_cache, chunk.len() as u64);
        }
        polled
    }
}
