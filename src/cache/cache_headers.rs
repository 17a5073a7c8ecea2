//! The `CacheHeaders` middleware: strong ETags for in-memory bodies that lack one, and client
//! preconditions (`If-None-Match`, `If-Modified-Since`, `If-Match`, `If-Unmodified-Since`)
//! answered with 304 or 412 (RFC 9110 §13).

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, HttpResponse};
use futures_util::future::LocalBoxFuture;

use super::response_cache::cache_status_header;
use crate::clock::Clock;
use crate::http::conditional::{self, ETag, Precondition, Validators};
use crate::http::freshness::parse_http_date;
use crate::metrics::Metrics;

/// Headers a 304 carries (RFC 9110 §15.4.5), plus the cache's own `Age` and `Cache-Status`.
const NOT_MODIFIED_HEADERS: [header::HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

/// The middleware; see the module docs.
#[derive(Clone)]
pub struct CacheHeaders {
    clock: Arc<dyn Clock>,
    generate_etags: bool,
    metrics: Option<Arc<Metrics>>,
}

impl CacheHeaders {
    /// ETag generation on, preconditions evaluated with `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        CacheHeaders {
            clock,
            generate_etags: true,
            metrics: None,
        }
    }

    /// Counts the 304s it sends in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Turns ETag generation for in-memory bodies on or off.
    pub fn generate_etags(mut self, on: bool) -> Self {
        self.generate_etags = on;
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for CacheHeaders
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Transform = CacheHeadersService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CacheHeadersService {
            inner: service,
            cfg: self.clone(),
        }))
    }
}

pub struct CacheHeadersService<S> {
    inner: S,
    cfg: CacheHeaders,
}

impl<S, B> Service<ServiceRequest> for CacheHeadersService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let cacheable_method = matches!(*req.method(), Method::GET | Method::HEAD);
        // The inner cache rewrites conditionals for the origin, so evaluate the client's own.
        let preconditions = (cacheable_method && conditional::has_preconditions(req.headers()))
            .then(|| conditional::preconditions_of(req.headers()));
        let generate = self.cfg.generate_etags && cacheable_method;
        let clock = self.cfg.clock.clone();
        let metrics = self.cfg.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?.map_into_boxed_body();
            if !res.status().is_success() {
                return Ok(res);
            }
            if generate
                && res.status() == StatusCode::OK
                && !res.headers().contains_key(header::ETAG)
            {
                res = add_etag(res);
            }
            let Some(preconditions) = preconditions else {
                return Ok(res);
            };
            let outcome = {
                let h = res.headers();
                let v = Validators {
                    etag: h.get(header::ETAG).and_then(|v| ETag::parse(v.as_bytes())),
                    last_modified: h
                        .get(header::LAST_MODIFIED)
                        .and_then(|v| parse_http_date(v.as_bytes())),
                };
                conditional::evaluate(&preconditions, v, clock.now())
            };
            Ok(match outcome {
                Precondition::Proceed => res,
                Precondition::NotModified => {
                    if let Some(m) = &metrics {
                        m.cache.not_modified();
                    }
                    replace(res, |r| not_modified(r.headers()))
                }
                Precondition::Failed => replace(res, |_| precondition_failed()),
            })
        })
    }
}

/// Adds a strong ETag computed over the body when the body is already in memory.
fn add_etag(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let (req, response) = res.into_parts();
    let (head, body) = response.into_parts();
    let (mut response, etag) = match body.try_into_bytes() {
        Ok(bytes) => {
            let tag = etag::EntityTag::from_data(&bytes).to_string();
            (
                head.set_body(BoxBody::new(bytes)),
                HeaderValue::try_from(tag).ok(),
            )
        }
        Err(body) => (head.set_body(body), None),
    };
    if let Some(v) = etag {
        response.headers_mut().insert(header::ETAG, v);
    }
    ServiceResponse::new(req, response)
}

fn replace(
    res: ServiceResponse<BoxBody>,
    f: impl FnOnce(&HttpResponse) -> HttpResponse,
) -> ServiceResponse<BoxBody> {
    let (req, response) = res.into_parts();
    let new = f(&response);
    ServiceResponse::new(req, new)
}

fn not_modified(from: &HeaderMap) -> HttpResponse {
    let mut res = HttpResponse::NotModified().finish();
    let h = res.headers_mut();
    for name in NOT_MODIFIED_HEADERS {
        for v in from.get_all(&name) {
            h.append(name.clone(), v.clone());
        }
    }
    for name in [header::AGE, cache_status_header()] {
        for v in from.get_all(&name) {
            h.append(name.clone(), v.clone());
        }
    }
    res
}

fn precondition_failed() -> HttpResponse {
    HttpResponse::PreconditionFailed()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}
