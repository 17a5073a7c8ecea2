//! The gateway's inner service: a reverse proxy to one origin over a pooled HTTP/1.1 client
//! (hyper), plain or over TLS (rustls).
//!
//! Every method and body passes through; hop-by-hop headers are dropped in both directions;
//! `X-Forwarded-For/Proto/Host`, `Forwarded` and `Via` are added. Interim (1xx) responses are
//! read past, never forwarded as the answer nor stored. Failures become opaque 502/504
//! responses marked with [`UpstreamFailure`] so the cache can serve stale on error.

mod body;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BodyStream, BoxBody, SizedStream};
use actix_web::dev::Payload;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use crate::cache::{opaque, UpstreamFailure};
use crate::guard::BodyCutOff;
use crate::http::headers::HopByHop;
use crate::http::host;
use crate::log_limit::{LogLimit, DEFAULT_LOG_INTERVAL};
use crate::metrics::{Metrics, OriginError};

pub use crate::http::target::Target;
use body::{OriginBody, RequestBody as HyperBody};
pub use tls::TlsOptions;

/// How the proxy talks to the origin (`[upstream]`, converted by the config).
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// Time to connect to the origin (the TLS handshake included).
    pub connect_timeout: Duration,
    /// Total time for one origin exchange, body included.
    pub timeout: Duration,
    /// Connections per worker (in use or idle in the pool).
    pub max_connections: usize,
    /// Send the client's `Host` to the origin instead of the upstream's.
    pub preserve_host: bool,
    /// Request bodies up to this size are read whole before an origin connection is taken.
    pub request_buffer_bytes: usize,
    /// Append this hop to `Forwarded` (RFC 7239) for the origin.
    pub forwarded_header: bool,
    /// Trust and SNI for an `https://` origin.
    pub tls: TlsOptions,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// One worker's proxy: a pooled client and its settings.
pub struct Upstream {
    client: Client<Connector, HyperBody>,
    target: Target,
    preserve_host: bool,
    request_buffer_bytes: usize,
    forwarded_header: bool,
    timeout: Duration,
    /// Bounds this worker's concurrent origin exchanges (`upstream.max_connections`).
    slots: Arc<Semaphore>,
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
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*cfg.tls.config).clone())
            .https_or_http();
        let builder = match cfg.tls.server_name.clone() {
            Some(name) => {
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = builder.enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(cfg.max_connections)
            .build(connector);
        Upstream {
            client,
            target,
            preserve_host: cfg.preserve_host,
            request_buffer_bytes: cfg.request_buffer_bytes,
            forwarded_header: cfg.forwarded_header,
            timeout: cfg.timeout,
            slots: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
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
        let mut out = HeaderMap::with_capacity(http_req.headers().len() + 5);
        {
            let hop = HopByHop::of(http_req.headers());
            let h = &mut out;
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
            // client's own), then this hop when `upstream.forwarded_header` asks for it.
            if self.forwarded_header {
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
            } else {
                for prior in http_req.headers().get_all(&forwarded) {
                    h.append(forwarded.clone(), prior.clone());
                }
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
        let body = match body {
            None => HyperBody::empty(),
            Some(RequestBody::Whole(bytes)) => HyperBody::whole(bytes),
            Some(RequestBody::Streaming(prefix, rest)) => {
                let head = stream::once(std::future::ready(Ok::<_, PayloadError>(prefix)));
                HyperBody::streaming(head.chain(rest))
            }
        };
        self.metrics.cache.origin_requests.inc();
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let in_flight =
            crate::metrics::GaugeGuard::new(self.metrics.cache.origin_in_flight.clone());
        let sent = tokio::time::timeout_at(deadline, async {
            let slot = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Failure::Closed)?;
            let request = hyper_request(&method, &url, &out, body).map_err(Failure::Request)?;
            let response = self
                .client
                .request(request)
                .await
                .map_err(Failure::Client)?;
            Ok::<_, Failure>((response, slot))
        })
        .await
        .unwrap_or(Err(Failure::Timeout));
        drop(in_flight);
        self.metrics
            .cache
            .origin_latency
            .observe(started.elapsed().as_secs_f64());
        let response = match sent.and_then(|(res, slot)| convert(res, &method, deadline, slot)) {
            Ok(res) => {
                if res.status().is_server_error() {
                    self.metrics.cache.origin_error(OriginError::Status5xx);
                }
                res
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
                let (kind, status) = e.classify();
                self.metrics.cache.origin_error(kind);
                if kind == OriginError::Tls {
                    // A certificate the origin's name or the trusted roots do not match is a
                    // configuration problem, not a transient one.
                    static TLS: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                    if let Some(occurrences) = TLS.check() {
                        tracing::error!(error = %e, origin = %self.target.origin, occurrences, "TLS handshake with the origin failed; check upstream.ca_file and upstream.tls_server_name");
                    }
                } else {
                    static FAILED: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                    if let Some(occurrences) = FAILED.check() {
                        tracing::warn!(error = %e, kind = kind.as_str(), path = http_req.path(), occurrences, "origin request failed");
                    }
                }
                let mut res = opaque(status);
                res.extensions_mut().insert(UpstreamFailure(kind));
                res
            }
        };
        ServiceResponse::new(http_req, response)
    }
}

/// Why an origin exchange produced no response.
#[derive(Debug)]
enum Failure {
    /// `upstream.timeout_ms` passed before the response's head arrived.
    Timeout,
    /// The worker is shutting down.
    Closed,
    /// The request could not be expressed (a header the client library refuses).
    Request(String),
    Client(hyper_util::client::legacy::Error),
    /// The origin used a transfer coding other than `chunked`, which tierd does not decode.
    TransferCoding(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("no response within upstream.timeout_ms"),
            Failure::Closed => f.write_str("the worker is stopping"),
            Failure::Request(e) => write!(f, "request not sendable: {e}"),
            Failure::Client(e) => {
                // The client's own message is terse ("client error (Connect)"): name the cause.
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(inner) = source {
                    write!(f, ": {inner}")?;
                    source = inner.source();
                }
                Ok(())
            }
            Failure::TransferCoding(te) => write!(f, "unsupported Transfer-Encoding '{te}'"),
        }
    }
}

impl Failure {
    fn classify(&self) -> (OriginError, StatusCode) {
        match self {
            Failure::Timeout => (OriginError::Timeout, StatusCode::GATEWAY_TIMEOUT),
            Failure::Closed | Failure::Request(_) | Failure::TransferCoding(_) => {
                (OriginError::Protocol, StatusCode::BAD_GATEWAY)
            }
            Failure::Client(e) => {
                match cause(e) {
                    Some(Cause::Tls) => return (OriginError::Tls, StatusCode::BAD_GATEWAY),
                    Some(Cause::TimedOut) => {
                        return (OriginError::Timeout, StatusCode::GATEWAY_TIMEOUT)
                    }
                    None => {}
                }
                if e.is_connect() {
                    (OriginError::Connect, StatusCode::BAD_GATEWAY)
                } else {
                    (OriginError::Protocol, StatusCode::BAD_GATEWAY)
                }
            }
        }
    }
}

enum Cause {
    Tls,
    TimedOut,
}

/// The root cause of a client error worth its own answer: a TLS failure or a (connect)
/// timeout. An `io::Error`'s `source()` skips the error it wraps, so those are opened by hand.
fn cause(e: &(dyn std::error::Error + 'static)) -> Option<Cause> {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return Some(Cause::Tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = cause(inner) {
                    return Some(found);
                }
            }
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Some(Cause::TimedOut);
            }
        }
        next = err.source();
    }
    None
}

/// The origin request: method, URL and the headers built for it, in the client's types.
fn hyper_request(
    method: &Method,
    url: &str,
    headers: &HeaderMap,
    body: HyperBody,
) -> Result<hyper::Request<HyperBody>, String> {
    let mut req = hyper::Request::builder()
        .method(hyper::Method::from_bytes(method.as_str().as_bytes()).map_err(|e| e.to_string())?)
        .uri(url)
        .body(body)
        .map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    h.reserve(headers.len());
    for (name, value) in headers.iter() {
        let name = hyper::header::HeaderName::from_bytes(name.as_str().as_bytes())
            .map_err(|e| e.to_string())?;
        let value =
            hyper::header::HeaderValue::from_bytes(value.as_bytes()).map_err(|e| e.to_string())?;
        h.append(name, value);
    }
    Ok(req)
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

/// Whether a `Transfer-Encoding` is `chunked` alone, the one coding tierd decodes (RFC 9112
/// §7: `chunked` is final; a coding before it would reach the client undecoded).
fn only_chunked(
    values: hyper::header::GetAll<'_, hyper::header::HeaderValue>,
) -> Result<(), String> {
    let mut codings = 0;
    for v in values.iter() {
        for coding in v.as_bytes().split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if coding.is_empty() {
                continue;
            }
            codings += 1;
            if !coding.eq_ignore_ascii_case(b"chunked") || codings > 1 {
                return Err(String::from_utf8_lossy(v.as_bytes()).into_owned());
            }
        }
    }
    Ok(())
}

fn convert(
    res: hyper::Response<hyper::body::Incoming>,
    method: &Method,
    deadline: tokio::time::Instant,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<HttpResponse, Failure> {
    let (parts, incoming) = res.into_parts();
    let status =
        StatusCode::from_u16(parts.status.as_u16()).map_err(|e| Failure::Request(e.to_string()))?;
    // RFC 9112 §6.3: with Transfer-Encoding the length is the chunked framing's; a
    // Content-Length beside it is ignored (and never forwarded).
    let chunked = parts.headers.contains_key(hyper::header::TRANSFER_ENCODING);
    if chunked {
        only_chunked(parts.headers.get_all(hyper::header::TRANSFER_ENCODING))
            .map_err(Failure::TransferCoding)?;
    }
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in parts.headers.iter() {
        // Both sides hold valid names and values; the conversion cannot fail in practice.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    let mut builder = HttpResponse::build(status);
    let hop = HopByHop::of(&headers);
    let mut length = None;
    for (name, value) in headers.iter() {
        if *name == header::CONTENT_LENGTH {
            if !chunked {
                length = value
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
            }
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
        return Ok(match length {
            Some(n) if *method == Method::HEAD => builder.body(BoxBody::new(SizedStream::new(
                n,
                stream::empty::<Result<Bytes, std::io::Error>>(),
            ))),
            _ => builder.finish(),
        });
    }
    let body = OriginBody::new(incoming, deadline, slot);
    Ok(match length {
        Some(n) => builder.body(BoxBody::new(SizedStream::new(n, body))),
        None => builder.body(BoxBody::new(BodyStream::new(body))),
    })
}
