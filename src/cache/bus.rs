//! Cross-node invalidation over Redis pub/sub.
//!
//! The node that purges (an admin call, a rule's `invalidate`, an unsafe method) purges its own
//! tiers, shared L2 included, then publishes the selector on `<key_prefix>:invalidate`. Every
//! other node sharing the Redis applies it to its own tiers: its L1 first (the lag from publish
//! to that removal is the `tierd_invalidation_lag_seconds` histogram), then its queues to L2 and
//! L3, behind any write it had queued before, so an older write of its own cannot bring the
//! entry back.
//!
//! A node that loses its subscription may miss messages: when it subscribes again it clears its
//! L1 (logged), since it cannot know what it missed.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_redis::redis;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::CacheState;
use crate::selector::Selector;
use crate::store::RedisTier;

/// Bump when the message shape changes; nodes ignore versions they do not know.
const WIRE_VERSION: u8 = 1;
/// Liveness check of the subscription connection.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Received messages waiting to be applied; beyond it L1 is cleared instead (nothing lost).
const BACKLOG: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    v: u8,
    node: String,
    sent_us: u64,
    selector: Selector,
}

/// The publishing side, held by [`CacheState`].
pub struct Bus {
    node: String,
    channel: String,
    /// `<key_prefix>:warm-lease:`, before a key's hash.
    lease_prefix: String,
    redis: Arc<RedisTier>,
    rt: tokio::runtime::Handle,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Bus {
    /// A bus on `redis`, publishing on `<key_prefix>:invalidate`.
    pub fn new(redis: Arc<RedisTier>, key_prefix: &str, rt: tokio::runtime::Handle) -> Self {
        Bus {
            node: format!("{:016x}", fastrand::u64(..)),
            channel: format!("{key_prefix}:invalidate"),
            lease_prefix: format!("{key_prefix}:warm-lease:"),
            redis,
            rt,
        }
    }

    /// This node's random identity (its own messages come back and are skipped).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Takes the warm lease of `key` for `ttl` unless another node holds it: `Some(true)` taken,
    /// `Some(false)` held elsewhere, `None` when Redis did not answer (the caller decides).
    pub async fn lease(&self, key: &str, ttl: Duration) -> Option<bool> {
        let name = format!(
            "{}{:016x}",
            self.lease_prefix,
            xxhash_rust::xxh3::xxh3_64(key.as_bytes())
        );
        let (redis, node) = (self.redis.clone(), self.node.clone());
        match self
            .rt
            .spawn(async move { redis.lease(&name, &node, ttl).await })
            .await
        {
            Ok(Ok(taken)) => Some(taken),
            _ => None,
        }
    }

    /// Publishes `selector` to the other nodes.
    pub async fn publish(&self, selector: &Selector) -> bool {
        let wire = Wire {
            v: WIRE_VERSION,
            node: self.node.clone(),
            sent_us: now_us(),
            selector: selector.clone(),
        };
        let Ok(payload) = serde_json::to_string(&wire) else {
            return false;
        };
        let (redis, channel) = (self.redis.clone(), self.channel.clone());
        let sent = self
            .rt
            .spawn(async move { redis.publish(&channel, &payload).await })
            .await;
        match sent {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(kind = selector.kind(), error = %e, "invalidation not published; other nodes keep their L1 copies until they expire");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "invalidation publish task failed");
                false
            }
        }
    }

    /// Starts the subscriber on the bus's runtime. It holds `state` weakly and stops when the
    /// state is dropped.
    pub fn subscribe(&self, connect_timeout: Duration, state: Weak<CacheState>) {
        let (tx, rx) = mpsc::channel(BACKLOG);
        self.rt.spawn(apply_loop(rx, state.clone()));
        self.rt.spawn(subscribe_loop(
            self.redis.subscribe_to(),
            self.channel.clone(),
            self.node.clone(),
            connect_timeout,
            tx,
            state,
        ));
    }
}

enum Received {
    Purge(Selector, u64),
    /// Messages may have been missed: clear L1.
    Resync(&'static str),
}

async fn apply_loop(mut rx: mpsc::Receiver<Received>, state: Weak<CacheState>) {
    while let Some(msg) = rx.recv().await {
        let Some(st) = state.upgrade() else { return };
        match msg {
            Received::Purge(sel, sent_us) => st.apply_remote(&sel, sent_us).await,
            Received::Resync(why) => {
                st.store.l1().clear();
                st.metrics
                    .invalidation
                    .l1_resyncs
                    .with_label_values(&[why])
                    .inc();
                tracing::warn!(
                    reason = why,
                    "L1 cleared: invalidations from other nodes may have been missed"
                );
            }
        }
    }
}

async fn subscribe_loop(
    server: redis::ConnectionInfo,
    channel: String,
    node: String,
    connect_timeout: Duration,
    tx: mpsc::Sender<Received>,
    state: Weak<CacheState>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut subscribed_before = false;
    loop {
        if state.strong_count() == 0 {
            return;
        }
        let connect = async {
            let client = redis::Client::open(server.clone())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(connect_timeout, connect).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "invalidation subscription failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if subscribed_before {
            let _ = tx.send(Received::Resync("resubscribed")).await;
            tracing::info!(channel = %channel, "invalidation subscription restored");
        } else {
            tracing::info!(channel = %channel, "subscribed to cross-node invalidations");
        }
        subscribed_before = true;
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut lost = "connection closed".to_owned();
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let Some(st) = state.upgrade() else { return };
                    match serde_json::from_slice::<Wire>(msg.get_payload_bytes()) {
                        Ok(w) if w.v == WIRE_VERSION => {
                            if w.node == node {
                                continue;
                            }
                            st.metrics.invalidation.invalidation_messages.with_label_values(&["received"]).inc();
                            if tx.try_send(Received::Purge(w.selector, w.sent_us)).is_err() {
                                // Falling behind: clearing L1 is always safe.
                                st.store.l1().clear();
                                st.metrics.invalidation.l1_resyncs.with_label_values(&["backlog"]).inc();
                                tracing::warn!("invalidation backlog full; L1 cleared");
                            }
                        }
                        _ => {
                            st.metrics.invalidation.invalidation_messages.with_label_values(&["rejected"]).inc();
                            tracing::warn!(bytes = msg.get_payload_bytes().len(), "unreadable invalidation message ignored");
                        }
                    }
                }
                _ = ping.tick() => {
                    // In subscribed mode a RESP2 server answers PING with the array
                    // `["pong", ""]`, a RESP3 server with `PONG`: any answer proves the
                    // connection alive, so the reply is read as an untyped value.
                    let alive = tokio::time::timeout(
                        connect_timeout.max(Duration::from_secs(1)),
                        sink.ping::<redis::Value>(),
                    )
                    .await;
                    match alive {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            lost = format!("ping failed: {e}");
                            break;
                        }
                        Err(_) => {
                            lost = "ping unanswered".to_owned();
                            break;
                        }
                    }
                }
            }
        }
        tracing::warn!(channel = %channel, reason = %lost, "invalidation subscription lost; reconnecting");
    }
}

impl CacheState {
    /// Applies a purge published by another node: L1 first (the lag is measured there), then
    /// this node's lower tiers.
    pub async fn apply_remote(&self, selector: &Selector, sent_us: u64) {
        self.store.l1().purge(selector);
        let lag_us = now_us().saturating_sub(sent_us);
        self.metrics
            .invalidation
            .invalidation_lag
            .observe(Duration::from_micros(lag_us).as_secs_f64());
        self.metrics
            .invalidation
            .purges
            .with_label_values(&[selector.kind(), "remote"])
            .inc();
        self.store.purge(selector).await;
    }
}
