//! The `CacheHeaders` middleware: strong ETags for in-memory bodies that lack one, client
//! preconditions (`If-None-Match`, `If-Modified-Since`, `If-Match`, `If-Unmodified-Since`)
//! answered with 304 or 412 (RFC 9110 §13), and a single byte `Range` of a full 200 answered
//! with 206 or 416 (§14), `If-Range` permitting.

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, HttpResponse};
use futures_util::future::LocalBoxFuture;

use super::response_cache::cache_status_header;
use crate::clock::Clock;
use crate::http::conditional::{self, ETag, Precondition, Validators};
use crate::http::freshness::parse_http_date;
use crate::http::range::{self, Ranged};
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
        // A byte range of the full response; HEAD ignores Range (§14.2).
        let range = (*req.method() == Method::GET)
            .then(|| req.headers().get(header::RANGE))
            .flatten()
            .map(|r| (r.clone(), req.headers().get(header::IF_RANGE).cloned()));
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
            // A full response of known length is one tierd can cut a range from (§14.3).
            if cacheable_method
                && res.status() == StatusCode::OK
                && matches!(res.response().body().size(), BodySize::Sized(_))
                && !res.headers().contains_key(header::ACCEPT_RANGES)
            {
                res.headers_mut()
                    .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            }
            let Some(preconditions) = preconditions else {
                return Ok(match range {
                    Some((r, if_range)) => ranged(res, &r, if_range.as_ref()),
                    None => res,
                });
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
                Precondition::Proceed => match range {
                    Some((r, if_range)) => ranged(res, &r, if_range.as_ref()),
                    None => res,
                },
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

/// A full 200 cut to the single byte range the client asked for (206 with `Content-Range`), or
/// 416 when the range lies beyond it. Untouched: other statuses, a body of unknown length, an
/// `If-Range` that does not hold, several ranges, a `Range` that does not parse (§14.2).
fn ranged(
    res: ServiceResponse<BoxBody>,
    range: &HeaderValue,
    if_range: Option<&HeaderValue>,
) -> ServiceResponse<BoxBody> {
    if res.status() != StatusCode::OK {
        return res;
    }
    if let Some(if_range) = if_range {
        let h = res.headers();
        let holds = range::if_range_holds(
            if_range.as_bytes(),
            h.get(header::ETAG).map(|v| v.as_bytes()),
            h.get(header::LAST_MODIFIED).map(|v| v.as_bytes()),
        );
        if !holds {
            return res;
        }
    }
    let BodySize::Sized(len) = res.response().body().size() else {
        return res;
    };
    match range::evaluate(range.as_bytes(), len) {
        Ranged::Ignore | Ranged::Whole => res,
        Ranged::Unsatisfiable => replace(res, |r| {
            let mut out = HttpResponse::RangeNotSatisfiable().finish();
            let h = out.headers_mut();
            for name in [cache_status_header(), header::AGE, header::ETAG] {
                for v in r.headers().get_all(&name) {
                    h.append(name.clone(), v.clone());
                }
            }
            if let Ok(v) = HeaderValue::try_from(format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            out
        }),
        Ranged::Part { start, end } => {
            let (req, response) = res.into_parts();
            let (mut head, body) = response.into_parts();
            head.head_mut().status = StatusCode::PARTIAL_CONTENT;
            head.headers_mut().remove(header::CONTENT_LENGTH);
            if let Ok(v) = HeaderValue::try_from(format!("bytes {start}-{end}/{len}")) {
                head.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            let body = match body.try_into_bytes() {
                // `start..=end` lies within the body's `len` bytes (evaluate clips to it).
                Ok(bytes) => BoxBody::new(bytes.slice(start as usize..=end as usize)),
                Err(body) => BoxBody::new(Slice {
                    inner: body,
                    skip: start,
                    left: end - start + 1,
                    len: end - start + 1,
                }),
            };
            ServiceResponse::new(req, head.set_body(body))
        }
    }
}

/// Bytes `skip..skip + len` of a streamed body.
struct Slice {
    inner: BoxBody,
    skip: u64,
    left: u64,
    len: u64,
}

impl MessageBody for Slice {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.len)
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if this.left == 0 {
                return Poll::Ready(None);
            }
            let chunk = match std::pin::Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => chunk,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            let n = chunk.len() as u64;
            if this.skip >= n {
                this.skip -= n;
                continue;
            }
            let from = this.skip as usize;
            this.skip = 0;
            let take = (n - from as u64).min(this.left) as usize;
            this.left -= take as u64;
            return Poll::Ready(Some(Ok(chunk.slice(from..from + take))));
        }
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
