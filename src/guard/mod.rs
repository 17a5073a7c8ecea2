//! The `Guard` middleware: request hardening before anything else looks at a request.
//!
//! - a request target longer than `server.max_uri_bytes`: 414;
//! - more than `server.max_headers` headers, or more than `server.max_header_bytes` of them:
//!   431 (actix-web itself answers 431 past 96 headers or a 128 KiB head);
//! - a declared `Content-Length` over `server.max_request_body_bytes`: 413 at once, without
//!   reading the body; a chunked body is cut off, and answered 413, when it crosses the limit;
//! - a body that stalls for `server.client_body_timeout_ms`: 408;
//! - a body that breaks off or is malformed (a bad chunk size, the connection closed early):
//!   400.
//!
//! (A request head that is too slow gets actix-web's own 408 after
//! `server.client_request_timeout_ms`.)
//!
//! Each refusal has an opaque body, closes the connection when a body was left unread, is
//! counted in `tierd_requests_rejected_total{reason}` and logged at INFO.

use std::cell::Cell;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::ConnectionType;
use actix_web::{Error, HttpMessage, HttpResponse};
use bytes::Bytes;
use futures_util::future::{Either, LocalBoxFuture, MapOk, TryFutureExt};
use futures_util::Stream;

use crate::cache::opaque;
use crate::http::headers::content_length;
use crate::metrics::Served;
use crate::metrics::{Metrics, Outcome, RouteCounters, OTHER_ROUTE};

mod metrics;

pub use crate::types::Rejection;
pub use metrics::GuardMetrics;

/// The limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_uri_bytes: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub body_timeout: Duration,
}

/// Total size of the headers as the limit counts them: names, values and `: ` + CRLF.
pub fn header_bytes(h: &HeaderMap) -> usize {
    h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// The middleware; see the module docs.
#[derive(Clone)]
pub struct Guard {
    limits: RequestLimits,
    metrics: Arc<Metrics>,
    other: Arc<RouteCounters>,
}

impl Guard {
    pub fn new(limits: RequestLimits, metrics: Arc<Metrics>) -> Self {
        let other = Arc::new(metrics.route_counters(OTHER_ROUTE));
        Guard {
            limits,
            metrics,
            other,
        }
    }

    /// The refusal response; the request is noted for [`Observe`](crate::observe::Observe).
    fn refuse(&self, req: &ServiceRequest, why: Rejection, close: bool) -> HttpResponse {
        self.metrics
            .guard
            .rejected
            .with_label_values(&[why.as_str()])
            .inc();
        req.extensions_mut()
            .insert(Served::answered(Outcome::Rejected, self.other.clone()));
        let mut res = opaque(why.status());
        if close {
            res.head_mut().set_connection_type(ConnectionType::Close);
        }
        res
    }

    /// What is wrong with the request's head (or its declared body size), with the size found
    /// and the limit.
    fn check_head(
        &self,
        req: &ServiceRequest,
        declared: Option<u64>,
    ) -> Option<(Rejection, u64, u64)> {
        let l = &self.limits;
        // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, with two, or with an
        // authority that is not a host[:port] (it would reach into the key's path:
        // `Host: victim.test/account`). In absolute form the target's authority is the one
        // that counts (§3.2.2) and is checked the same way.
        let mut hosts = req.headers().get_all(header::HOST);
        let bad_host = match (hosts.next(), hosts.next()) {
            (Some(_), Some(_)) => true,
            _ => match crate::http::host::authority(req.uri(), req.headers()) {
                Some(a) => !crate::http::host::is_valid(a),
                None => req.version() == actix_web::http::Version::HTTP_11,
            },
        };
        if bad_host {
            return Some((Rejection::BadHost, 0, 0));
        }
        let uri = req.uri();
        let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len());
        let size = |n: usize| n as u64;
        if target > l.max_uri_bytes {
            return Some((Rejection::UriTooLong, size(target), size(l.max_uri_bytes)));
        }
        let count = req.headers().len();
        if count > l.max_headers {
            return Some((Rejection::TooManyHeaders, size(count), size(l.max_headers)));
        }
        let bytes = header_bytes(req.headers());
        if bytes > l.max_header_bytes {
            return Some((
                Rejection::HeadersTooLarge,
                size(bytes),
                size(l.max_header_bytes),
            ));
        }
        match declared {
            Some(n) if n > l.max_body_bytes => Some((Rejection::BodyTooLarge, n, l.max_body_bytes)),
            _ => None,
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Guard
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, BoxBody>>;
    type Error = Error;
    type Transform = GuardService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(GuardService {
            inner: service,
            cfg: self.clone(),
        }))
    }
}

pub struct GuardService<S> {
    inner: S,
    cfg: Guard,
}

/// Set by the body watcher when it cut a body off.
type Abort = Rc<Cell<Option<Rejection>>>;

type Passed<B> = fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B, BoxBody>>;
type Answer<B> = Result<ServiceResponse<EitherBody<B, BoxBody>>, Error>;

impl<S, B> Service<ServiceRequest> for GuardService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, BoxBody>>;
    type Error = Error;
    type Future = Either<MapOk<S::Future, Passed<B>>, LocalBoxFuture<'static, Answer<B>>>;

    forward_ready!(inner);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let pass: Passed<B> = ServiceResponse::map_into_left_body;
        let cfg = &self.cfg;
        let declared = content_length(req.headers());
        let has_body = declared.is_some_and(|n| n > 0)
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        if let Some((why, size, limit)) = cfg.check_head(&req, declared) {
            tracing::info!(reason = why.as_str(), size, limit, "request refused");
            let res = cfg.refuse(&req, why, has_body);
            let res = req.into_response(res).map_into_right_body();
            return Either::Right(Box::pin(ready(Ok(res))));
        }
        if !has_body {
            return Either::Left(self.inner.call(req).map_ok(pass));
        }
        let abort: Abort = Rc::new(Cell::new(None));
        let watched = Watched {
            inner: req.take_payload(),
            seen: 0,
            limit: cfg.limits.max_body_bytes,
            idle: cfg.limits.body_timeout,
            timer: Box::pin(tokio::time::sleep(cfg.limits.body_timeout)),
            abort: abort.clone(),
        };
        req.set_payload(Payload::Stream {
            payload: Box::pin(watched),
        });
        req.extensions_mut().insert(BodyCutOff(abort.clone()));
        let fut = self.inner.call(req);
        let cfg = cfg.clone();
        Either::Right(Box::pin(async move {
            let res = fut.await?;
            let Some(why) = abort.get() else {
                return Ok(res.map_into_left_body());
            };
            tracing::info!(
                reason = why.as_str(),
                limit = cfg.limits.max_body_bytes,
                timeout_ms = cfg.limits.body_timeout.as_millis() as u64,
                "request body refused"
            );
            let sreq = ServiceRequest::from_request(res.into_parts().0);
            let refusal = cfg.refuse(&sreq, why, true);
            Ok(sreq.into_response(refusal).map_into_right_body())
        }))
    }
}

/// Marks a request whose body the guard cut off, so the proxy does not count the failed
/// upload as an origin error.
#[derive(Clone)]
pub struct BodyCutOff(Abort);

impl BodyCutOff {
    /// Whether the body was cut off (too large or too slow).
    pub fn happened(&self) -> bool {
        self.0.get().is_some()
    }
}

/// A request body under watch: it ends in an error past the size limit or after a silence.
struct Watched {
    inner: Payload,
    seen: u64,
    limit: u64,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    abort: Abort,
}

impl Stream for Watched {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.abort.get().is_some() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.limit {
                    this.abort.set(Some(Rejection::BodyTooLarge));
                    return Poll::Ready(Some(Err(PayloadError::Overflow)));
                }
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.abort.set(Some(Rejection::BodyTimeout));
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request body stalled",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
            Poll::Ready(Some(Err(e))) => {
                // A malformed chunk or a connection closed mid-body: the client's error.
                this.abort.set(Some(Rejection::BadBody));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
        }
    }
}
