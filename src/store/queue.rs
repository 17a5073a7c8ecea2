//! The bounded, ordered write queue in front of a tier below L1.
//!
//! Puts are accepted without waiting (or refused when the queue is full, before anything is
//! promised). Deletes and purges queue behind every write accepted before them and wait until
//! they are applied, so an invalidation can never be overtaken by an older write. Closing the
//! queue lets the worker drain everything accepted, then waits for it to finish.
//!
//! The queue is bounded twice: by operations, and by the bytes of the records it holds, so that
//! a tier that falls behind holds at most `max_bytes` of writes in memory, whatever their size.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::TierError;
use crate::selector::Selector;

/// An encoded slot ready for a tier.
#[derive(Debug, Clone)]
pub struct Record {
    pub bytes: Bytes,
    /// When the tier must stop serving it (milliseconds since the Unix epoch, cache clock).
    pub expires_at_ms: u64,
    /// The same expiry as a duration from the time the write was accepted (for Redis' TTL).
    pub ttl: Duration,
    /// The tags a purge can select the entry by: its variants' tags and its path tag.
    pub tags: Arc<[String]>,
}

/// One queued operation.
#[derive(Debug)]
pub enum Op {
    Put {
        key: String,
        record: Record,
        /// Releases the record's bytes from the queue's budget when dropped, that is once the
        /// worker has taken the operation.
        charge: Charge,
    },
    Delete {
        key: String,
        done: oneshot::Sender<Result<(), TierError>>,
    },
    Purge {
        selector: Selector,
        done: oneshot::Sender<Result<u64, TierError>>,
    },
    /// Periodic housekeeping for writers that run on their own thread.
    Tick,
}

impl Op {
    /// The record bytes this operation carries.
    pub fn bytes(&self) -> usize {
        match self {
            Op::Put { record, .. } => record.bytes.len(),
            _ => 0,
        }
    }
}

/// A put's share of the queue's byte budget, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    bytes: usize,
    held: Arc<AtomicUsize>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The sending side, held by the tier.
pub struct WriteQueue {
    tx: RwLock<Option<mpsc::Sender<Op>>>,
    capacity: usize,
    /// Record bytes accepted and not yet taken by the worker, and their limit.
    held: Arc<AtomicUsize>,
    max_bytes: usize,
    finished: Mutex<Option<oneshot::Receiver<()>>>,
}

/// Held by the worker; dropping it tells [`WriteQueue::close`] the worker is done.
pub struct Finished(#[allow(dead_code)] oneshot::Sender<()>);

impl WriteQueue {
    /// A queue of at most `capacity` operations holding at most `max_bytes` of records, and the
    /// worker's ends of it.
    pub fn new(capacity: usize, max_bytes: usize) -> (Self, mpsc::Receiver<Op>, Finished) {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let (done_tx, done_rx) = oneshot::channel();
        (
            WriteQueue {
                tx: RwLock::new(Some(tx)),
                capacity,
                held: Arc::new(AtomicUsize::new(0)),
                max_bytes,
                finished: Mutex::new(Some(done_rx)),
            },
            rx,
            Finished(done_tx),
        )
    }

    fn sender(&self) -> Option<mpsc::Sender<Op>> {
        self.tx.read().ok().and_then(|g| g.clone())
    }

    /// Accepts a put without waiting; [`TierError::QueueFull`] when the queue holds
    /// `capacity` operations or this record would take it past `max_bytes`.
    pub fn put(&self, key: String, record: Record) -> Result<(), TierError> {
        let guard = self.tx.read().map_err(|_| TierError::Closed)?;
        let tx = guard.as_ref().ok_or(TierError::Closed)?;
        let bytes = record.bytes.len();
        let before = self.held.fetch_add(bytes, Ordering::Relaxed);
        // Charged before the check, so racing puts cannot overshoot together.
        let charge = Charge {
            bytes,
            held: self.held.clone(),
        };
        // A record larger than the whole budget still goes through an empty queue.
        if before > 0 && before + bytes > self.max_bytes {
            return Err(TierError::QueueFull);
        }
        let op = Op::Put {
            key,
            record,
            charge,
        };
        tx.try_send(op).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TierError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => TierError::Closed,
        })
    }

    /// Queues an operation built around a reply channel and waits for the reply, at most
    /// `timeout` in all.
    pub async fn request<T>(
        &self,
        timeout: Duration,
        make: impl FnOnce(oneshot::Sender<Result<T, TierError>>) -> Op,
    ) -> Result<T, TierError> {
        let tx = self.sender().ok_or(TierError::Closed)?;
        let (done, reply) = oneshot::channel();
        let work = async move {
            tx.send(make(done)).await.map_err(|_| TierError::Closed)?;
            reply.await.map_err(|_| TierError::Closed)?
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| TierError::Timeout)?
    }

    /// A handle that can queue operations without keeping the queue open (for tickers).
    pub fn weak(&self) -> Option<mpsc::WeakSender<Op>> {
        self.sender().map(|tx| tx.downgrade())
    }

    /// Record bytes accepted and not yet taken by the worker.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Operations the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Operations accepted and not yet taken by the worker.
    pub fn depth(&self) -> usize {
        self.sender()
            .map(|tx| self.capacity - tx.capacity())
            .unwrap_or(0)
    }

    /// Stops accepting, then waits until the worker has applied everything accepted.
    pub async fn close(&self) {
        if let Ok(mut g) = self.tx.write() {
            g.take();
        }
        let finished = self.finished.lock().ok().and_then(|mut g| g.take());
        if let Some(rx) = finished {
            let _ = rx.await;
        }
    }
}
