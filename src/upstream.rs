//! The gateway's inner service: a reverse proxy to one origin over a pooled HTTP/1.1 client.
//!
//! Every method and body passes through; hop-by-hop headers are dropped in both directions;
//! `X-Forwarded-For/Proto/Host` and `Via` are added. Failures become opaque 502/504 responses
//! marked with [`UpstreamFailure`] so the cache can serve stale on error.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::body::{BodyStream, BoxBody, SizedStream};
use actix_web::dev::Payload;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpResponse};
use awc::error::{ConnectError, SendRequestError};
use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt};

use crate::cache::{opaque, UpstreamFailure};
use crate::guard::BodyCutOff;
use crate::http::headers::HopByHop;
use crate::http::host;
use crate::log_limit::{LogLimit, DEFAULT_LOG_INTERVAL};
use crate::metrics::{Metrics, OriginError};

pub use crate::http::target::Target;

/// How the proxy talks to the origin (`[upstream]`, converted by the config).
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// Time to connect to the origin.
    pub connect_timeout: Duration,
    /// Total time for one origin exchange, body included.
    pub timeout: Duration,
    /// Pooled connections per worker.
    pub max_connections: usize,
    /// Send the client's `Host` to the origin instead of the upstream's.
    pub preserve_host: bool,
    /// Request bodies up to this size are read whole before an origin connection is taken.
    pub request_buffer_bytes: usize,
}

/// One worker's proxy: the client (not `Send`, so one per worker thread) and its settings.
pub struct Upstream {
    client: awc::Client,
    target: Target,
    preserve_host: bool,
    request_buffer_bytes: usize,
    metrics: std::sync::Arc<Metrics>,
}

fn x_forwarded_for() -> HeaderName {
    HeaderName::from_static("x-forwarded-for")
}
fn x_forwarded_proto() -> HeaderName {
    HeaderName::from_static("x-forwarded-proto")
}
fn x_forwarded_host() -> HeaderName {
    HeaderName::from_static("x-forwarded-host")
}

impl Upstream {
    /// Builds the proxy for one worker.
    pub fn new(cfg: &UpstreamOptions, target: Target, metrics: std::sync::Arc<Metrics>) -> Self {
        let connector = awc::Connector::new()
            .timeout(cfg.connect_timeout)
            .limit(cfg.max_connections)
            .conn_keep_alive(Duration::from_secs(15))
            .conn_lifetime(Duration::from_secs(300));
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(cfg.timeout)
            .disable_redirects()
            .no_default_headers()
            .finish();
        Upstream {
            client,
            target,
            preserve_host: cfg.preserve_host,
            request_buffer_bytes: cfg.request_buffer_bytes,
            metrics,
        }
    }

    /// Forwards one request and converts the answer (or the failure) into a response.
    pub async fn forward(&self, req: ServiceRequest) -> ServiceResponse<BoxBody> {
        let (http_req, payload) = req.into_parts();
        let pq = http_req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let url = format!("{}{}{}", self.target.origin, self.target.prefix, pq);
        let method = http_req.method().clone();
        let mut creq = self.client.request(method.clone(), url);
        {
            let hop = HopByHop::of(http_req.headers());
            let h = creq.headers_mut();
            let (xff, xfp, xfh) = (x_forwarded_for(), x_forwarded_proto(), x_forwarded_host());
            let forwarded = HeaderName::from_static("forwarded");
            for (name, value) in http_req.headers().iter() {
                if hop.drops(name)
                    || *name == header::HOST
                    || *name == xfp
                    || *name == xfh
                    || *name == xff
                    || *name == forwarded
                {
                    continue;
                }
                h.append(name.clone(), value.clone());
            }
            let peer = http_req.peer_addr().map(|a: SocketAddr| a.ip().to_string());
            let prior: Vec<&[u8]> = http_req
                .headers()
                .get_all(&xff)
                .map(|v| v.as_bytes())
                .collect();
            let mut xff_value = prior.join(&b", "[..]);
            if let Some(ip) = peer {
                if !xff_value.is_empty() {
                    xff_value.extend_from_slice(b", ");
                }
                xff_value.extend_from_slice(ip.as_bytes());
            }
            if let Ok(v) = HeaderValue::from_bytes(&xff_value) {
                if !xff_value.is_empty() {
                    h.insert(xff, v);
                }
            }
            h.insert(xfp, HeaderValue::from_static("http"));
            // The authority the cache key names (absolute form or Host), never another.
            let authority_bytes = host::authority(http_req.uri(), http_req.headers());
            let authority = authority_bytes.and_then(|a| HeaderValue::from_bytes(a).ok());
            if let Some(host) = authority {
                if self.preserve_host {
                    h.insert(header::HOST, host.clone());
                }
                h.insert(xfh, host);
            }
            // RFC 7239: what a trusted proxy in front wrote (the cache's hygiene removed the
            // client's own), then this hop.
            let mut fwd: Vec<u8> = Vec::new();
            for prior in http_req.headers().get_all(&forwarded) {
                fwd.extend_from_slice(prior.as_bytes());
                fwd.extend_from_slice(b", ");
            }
            forwarded_element(
                &mut fwd,
                http_req.peer_addr().map(|a| a.ip()),
                authority_bytes,
            );
            if let Ok(v) = HeaderValue::from_bytes(&fwd) {
                h.insert(forwarded, v);
            }
            h.append(header::VIA, HeaderValue::from_static("1.1 tierd"));
        }
        let has_body = crate::http::headers::has_body(http_req.headers());
        // The body is read (up to the buffer size) before an origin connection is taken, so a
        // client trickling its body in never holds one.
        let body = if has_body {
            match buffer(payload, self.request_buffer_bytes).await {
                Ok(body) => Some(body),
                Err(e) => {
                    // The client's error: the guard answers it (400, 408 or 413) and counts it.
                    tracing::debug!(error = %e, "request body failed before forwarding");
                    return ServiceResponse::new(http_req, opaque(StatusCode::BAD_REQUEST));
                }
            }
        } else {
            None
        };
        self.metrics.cache.origin_requests.inc();
        let started = Instant::now();
        let in_flight =
            crate::metrics::GaugeGuard::new(self.metrics.cache.origin_in_flight.clone());
        let sent = match body {
            None => creq.send().await,
            Some(RequestBody::Whole(bytes)) => creq.send_body(bytes).await,
            Some(RequestBody::Streaming(prefix, rest)) => {
                let head = stream::once(std::future::ready(Ok::<_, PayloadError>(prefix)));
                creq.send_stream(head.chain(rest)).await
            }
        };
        drop(in_flight);
        self.metrics
            .cache
            .origin_latency
            .observe(started.elapsed().as_secs_f64());
        let response = match sent {
            Ok(cres) => {
                if cres.status().is_server_error() {
                    self.metrics.cache.origin_error(OriginError::Status5xx);
                }
                convert(cres, &method)
            }
            Err(_)
                if http_req
                    .extensions()
                    .get::<BodyCutOff>()
                    .is_some_and(BodyCutOff::happened) =>
            {
                // The client's body was too large or too slow; the guard answers it.
                opaque(StatusCode::BAD_REQUEST)
            }
            Err(e) => {
                let (kind, status) = classify(&e);
                self.metrics.cache.origin_error(kind);
                static FAILED: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                if let Some(occurrences) = FAILED.check() {
                    tracing::warn!(error = %e, kind = kind.as_str(), path = http_req.path(), occurrences, "origin request failed");
                }
                let mut res = opaque(status);
                res.extensions_mut().insert(UpstreamFailure(kind));
                res
            }
        };
        ServiceResponse::new(http_req, response)
    }
}

/// A request body as it is sent to the origin.
enum RequestBody {
    /// All of it, read before the origin was asked (sent with a `Content-Length`).
    Whole(Bytes),
    /// Larger than the buffer: what was read, then the rest as it arrives.
    Streaming(Bytes, Payload),
}

/// Reads `payload` until it ends or more than `limit` bytes are in hand. The guard's watch on
/// the payload bounds the wait (`server.client_body_timeout_ms`) and the size.
async fn buffer(mut payload: Payload, limit: usize) -> Result<RequestBody, PayloadError> {
    let mut buf = BytesMut::new();
    while buf.len() <= limit {
        match payload.next().await {
            Some(chunk) => buf.extend_from_slice(&chunk?),
            None => return Ok(RequestBody::Whole(buf.freeze())),
        }
    }
    Ok(RequestBody::Streaming(buf.freeze(), payload))
}

/// Appends this hop's `Forwarded` element (RFC 7239 §4): `for` the peer, `host` the request's
/// authority, `proto=http`; values that are not tokens are quoted.
fn forwarded_element(out: &mut Vec<u8>, peer: Option<std::net::IpAddr>, host: Option<&[u8]>) {
    match peer {
        Some(std::net::IpAddr::V6(ip)) => {
            out.extend_from_slice(format!("for=\"[{ip}]\"").as_bytes())
        }
        Some(ip) => out.extend_from_slice(format!("for={ip}").as_bytes()),
        None => out.extend_from_slice(b"for=unknown"),
    }
    // A validated authority: only its `:` (and an IPv6 literal's brackets) need quoting.
    if let Some(host) = host {
        out.extend_from_slice(b";host=");
        let quote = host.iter().any(|b| matches!(b, b':' | b'[' | b']'));
        if quote {
            out.push(b'"');
        }
        out.extend_from_slice(host);
        if quote {
            out.push(b'"');
        }
    }
    out.extend_from_slice(b";proto=http");
}

fn classify(e: &SendRequestError) -> (OriginError, StatusCode) {
    match e {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            (OriginError::Timeout, StatusCode::GATEWAY_TIMEOUT)
        }
        SendRequestError::Connect(_) => (OriginError::Connect, StatusCode::BAD_GATEWAY),
        _ => (OriginError::Protocol, StatusCode::BAD_GATEWAY),
    }
}

fn convert<S>(cres: awc::ClientResponse<S>, method: &Method) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>
        + Unpin
        + 'static,
{
    let status = cres.status();
    let mut builder = HttpResponse::build(status);
    let hop = HopByHop::of(cres.headers());
    let mut length = None;
    for (name, value) in cres.headers().iter() {
        if *name == header::CONTENT_LENGTH {
            length = value
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            continue;
        }
        if hop.drops(name) {
            continue;
        }
        builder.append_header((name.clone(), value.clone()));
    }
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if bodiless {
        // Keep the origin's Content-Length on HEAD (the encoder writes it, and sends no body).
        return match length {
            Some(n) if *method == Method::HEAD => builder.body(BoxBody::new(SizedStream::new(
                n,
                stream::empty::<Result<bytes::Bytes, awc::error::PayloadError>>(),
            ))),
            _ => builder.finish(),
        };
    }
    match length {
        Some(n) => builder.body(BoxBody::new(SizedStream::new(n, cres))),
        None => builder.body(BoxBody::new(BodyStream::new(cres))),
    }
}
