//! Graceful shutdown for keep-alive connections.
//!
//! On SIGTERM the gateway does not stop accepting at once: for `server.drain_seconds` it keeps
//! serving, and every response carries `Connection: close`, so each busy keep-alive connection
//! is closed by tierd right after a response (a client never has a request in flight on a
//! connection tierd closes). Then the server stops gracefully: in-flight requests finish, and
//! the connections that stayed idle through the whole window are closed.
//!
//! Without the window, a connection between two requests at the moment of the signal is
//! closed while the client's next request is already on its way, and that request is lost.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::ConnectionType;
use actix_web::Error;

/// Set once shutdown has begun; shared by the signal handler and every worker's middleware.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on every response closes its connection.
    pub fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The middleware: `Connection: close` on every response once [`Draining::start`] was called.
/// Outermost in the gateway's stack.
#[derive(Clone)]
pub struct Drain(Draining);

impl Drain {
    pub fn new(flag: Draining) -> Self {
        Drain(flag)
    }
}

impl<S, B> Transform<S, ServiceRequest> for Drain
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = DrainService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(DrainService {
            inner: service,
            flag: Rc::new(self.0.clone()),
        }))
    }
}

pub struct DrainService<S> {
    inner: S,
    /// Per worker: a request clones the `Rc`, not the shared `Arc` (no contended counter).
    flag: Rc<Draining>,
}

impl<S, B> Service<ServiceRequest> for DrainService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = DrainFuture<S::Future>;

    forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        DrainFuture {
            inner: self.inner.call(req),
            flag: self.flag.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; marks the response when shutdown began meanwhile.
    pub struct DrainFuture<F> {
        #[pin]
        inner: F,
        flag: Rc<Draining>,
    }
}

impl<F, B> Future for DrainFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(Ok(mut res)) => {
                if this.flag.is_draining() {
                    res.response_mut()
                        .head_mut()
                        .set_connection_type(ConnectionType::Close);
                }
                Poll::Ready(Ok(res))
            }
            other => other,
        }
    }
}
