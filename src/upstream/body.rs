//! Bodies between actix and the origin client: the request body hyper sends (it must be `Send`;
//! actix's payload is not, so a streamed one crosses a channel), and the origin's response body
//! as the stream actix writes, bounded by the exchange's deadline and holding its connection slot.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as the origin client sends it.
pub enum RequestBody {
    Empty,
    /// All of it (sent with a `Content-Length`).
    Whole(Option<Bytes>),
    /// Chunks as the client's body arrives.
    Channel(mpsc::Receiver<Result<Bytes, BoxError>>),
}

impl RequestBody {
    pub fn empty() -> Self {
        RequestBody::Empty
    }

    pub fn whole(bytes: Bytes) -> Self {
        RequestBody::Whole(Some(bytes))
    }

    /// Relays `chunks` (read on this worker) to the client's connection task. A client error
    /// ends the origin request with an error, so the origin never takes a cut body as whole.
    pub fn streaming<S, E>(chunks: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + 'static,
        E: std::fmt::Display + 'static,
    {
        let (tx, rx) = mpsc::channel(2);
        actix_web::rt::spawn(async move {
            let mut chunks = std::pin::pin!(chunks);
            while let Some(chunk) = chunks.next().await {
                let item = chunk.map_err(|e| BoxError::from(e.to_string()));
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        RequestBody::Channel(rx)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Channel(rx) => rx.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Whole(bytes) => bytes.is_none(),
            RequestBody::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Channel(_) => SizeHint::default(),
        }
    }
}

/// The origin's response body: its data frames (trailers are dropped), failing once the
/// exchange's deadline (`upstream.timeout_ms`, body included) passes.
pub struct OriginBody {
    incoming: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl OriginBody {
    pub fn new(
        incoming: Incoming,
        deadline: tokio::time::Instant,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        OriginBody {
            incoming,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            _slot: slot,
        }
    }
}

impl Stream for OriginBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Poll::Ready(Some(Ok(data))),
                    Err(_trailers) => continue,
                },
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(std::io::Error::other(e))))
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {}
            }
            return match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "origin body not complete within upstream.timeout_ms",
                )))),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}
