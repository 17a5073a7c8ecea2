//! L2: Redis, shared by every tierd node, through deadpool-redis (one server or a Cluster).
//!
//! Records are stored under `<key_prefix>:v<format>:<cache key>` with a Redis TTL equal to the
//! record's remaining keep time, so Redis forgets entries on its own. Reads go straight to Redis
//! with a command timeout; writes are queued and sent in pipelined batches by one worker task,
//! which keeps them in order. A [`Breaker`] makes an unreachable Redis cost nothing: after a few
//! failures every operation fails fast until a probe succeeds; the pool reconnects by itself.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::redis::{self, AsyncCommands};
use deadpool_redis::{cluster, Runtime};
use tokio::sync::mpsc;

use super::breaker::{Breaker, CircuitState, Transition};
use super::queue::{Finished, Op, Record, WriteQueue};
use super::{Tier, TierError, TierName, TierStats};
use crate::cache::codec::FORMAT_VERSION;
use crate::metrics::{Metrics, TierFault, WriteOutcome};
use crate::selector::Selector;

mod scan;

/// Operations per pipelined write batch.
const WRITE_BATCH: usize = 128;

/// How to reach Redis and how hard to try.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// One URL for a single server; with `cluster`, the seed nodes. `rediss://` is TLS.
    pub urls: Vec<String>,
    /// A PEM file of the CA certificate(s) that sign a `rediss://` server's certificate, in
    /// place of the system's roots (a single server only).
    pub ca_file: Option<std::path::PathBuf>,
    pub cluster: bool,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Prefix of every key; the record format version is appended to it.
    pub key_prefix: String,
    pub queue_capacity: usize,
    /// Record bytes the write queue may hold.
    pub queue_max_bytes: usize,
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit skips Redis before probing it.
    pub open_for: Duration,
    /// The longest any record stays (tiers.l2.max_ttl_seconds): tag sets live this long after
    /// their last addition, so they outlive their members.
    pub max_ttl: Duration,
}

enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(cluster::Pool),
}

struct Inner {
    pool: Pool,
    /// Where a subscriber connects: the first URL, with the TLS roots the pool uses.
    subscribe_to: redis::ConnectionInfo,
    slots: Box<[tokio::sync::Mutex<Option<Held>>]>,
    next: std::sync::atomic::AtomicUsize,
    prefix: String,
    /// `<key_prefix>:tags:`: tag sets, apart from the records' namespace.
    tag_prefix: String,
    tag_ttl_ms: u64,
    command_timeout: Duration,
    breaker: Breaker,
    metrics: Arc<Metrics>,
    /// Whether Redis answered the last command: `UNKNOWN` until one completes, then `UP` or
    /// `DOWN`. A Redis that was never reached (down at startup, no traffic yet) would otherwise
    /// show as healthy: the breaker only opens on failures.
    reach: std::sync::atomic::AtomicU8,
    /// Commands sent and not yet answered or timed out (`tierd_tier_operations_in_flight`).
    in_flight: prometheus::IntGauge,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The Redis tier.
pub struct RedisTier {
    inner: Arc<Inner>,
    queue: WriteQueue,
}

/// How to reach `url`: a `rediss://` server is verified against the system's roots, or against
/// the CA certificates in `ca_file` when given.
fn connection_info(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<redis::ConnectionInfo, TierError> {
    use redis::IntoConnectionInfo;
    let bad = |key: &str, e: &dyn std::fmt::Display| {
        TierError::Unavailable(format!("tiers.l2.{key}: {e}"))
    };
    let Some(path) = ca_file else {
        return url.into_connection_info().map_err(|e| bad("url", &e));
    };
    let pem =
        std::fs::read(path).map_err(|e| bad("ca_file", &format!("{}: {e}", path.display())))?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    let client = redis::Client::build_with_tls(url, certs).map_err(|e| bad("ca_file", &e))?;
    Ok(client.get_connection_info().clone())
}

impl RedisTier {
    /// Builds the pool and starts the write worker on `rt`. Connections are made lazily, so this
    /// succeeds while Redis is down; only a malformed URL is an error.
    pub fn new(
        opts: &RedisOptions,
        metrics: Arc<Metrics>,
        rt: &tokio::runtime::Handle,
    ) -> Result<Self, TierError> {
        let _guard = rt.enter();
        let pool_config = deadpool_redis::PoolConfig {
            max_size: opts.pool_size.max(1),
            timeouts: deadpool_redis::Timeouts {
                wait: Some(opts.command_timeout),
                create: Some(opts.connect_timeout),
                recycle: Some(opts.command_timeout),
            },
            ..Default::default()
        };
        let bad = |e: &dyn std::fmt::Display| TierError::Unavailable(format!("tiers.l2: {e}"));
        let first = opts
            .urls
            .first()
            .ok_or_else(|| TierError::Unavailable("tiers.l2.url is empty".into()))?;
        let subscribe_to = connection_info(first, opts.ca_file.as_deref())?;
        let pool = if opts.cluster {
            // deadpool-redis' cluster manager keeps redis-rs' own timeouts (1 s to connect,
            // 500 ms per response); the command timeout below still bounds every operation.
            let mut cfg = cluster::Config::from_urls(opts.urls.clone());
            cfg.pool = Some(pool_config);
            Pool::Cluster(
                cfg.create_pool(Some(Runtime::Tokio1))
                    .map_err(|e| bad(&e))?,
            )
        } else {
            // redis-rs has its own response timeout (500 ms by default), which would cut a
            // longer configured command timeout short: set both to ours.
            let conn_config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(opts.connect_timeout))
                .set_response_timeout(Some(opts.command_timeout));
            let manager =
                deadpool_redis::Manager::new_with_config(subscribe_to.clone(), conn_config)
                    .map_err(|e| bad(&e))?;
            Pool::Single(
                deadpool_redis::Pool::builder(manager)
                    .config(pool_config)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(|e| bad(&e))?,
            )
        };
        let in_flight = metrics.store.operations_in_flight(TierName::L2);
        let inner = Arc::new(Inner {
            pool,
            subscribe_to,
            slots: (0..opts.pool_size.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
            prefix: format!("{}:v{}:", opts.key_prefix, FORMAT_VERSION),
            tag_prefix: format!("{}:tags:", opts.key_prefix),
            tag_ttl_ms: u64::try_from(opts.max_ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1000),
            command_timeout: opts.command_timeout,
            breaker: Breaker::new(opts.failure_threshold, opts.open_for),
            metrics,
            reach: std::sync::atomic::AtomicU8::new(UNKNOWN),
            in_flight,
        });
        let (queue, rx, finished) = WriteQueue::new(opts.queue_capacity, opts.queue_max_bytes);
        rt.spawn(inner.clone().write_worker(rx, finished));
        Ok(RedisTier { inner, queue })
    }

    /// The circuit breaker's state.
    pub fn circuit(&self) -> CircuitState {
        self.inner.breaker.state()
    }

    /// Publishes `payload` on `channel` (cross-node invalidation).
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<(), TierError> {
        self.inner.publish(channel, payload).await
    }

    /// Sends `PING`; for a startup check and readiness.
    /// Pings Redis every `every` for as long as the tier lives, so its health is known without
    /// traffic; logs the first answer and each change (reachable, unreachable).
    pub fn watch(self: &Arc<Self>, every: Duration, urls: String, rt: &tokio::runtime::Handle) {
        let tier = Arc::downgrade(self);
        rt.spawn(async move {
            let mut was: Option<bool> = None;
            loop {
                let Some(t) = tier.upgrade() else { return };
                let result = t.ping().await;
                drop(t);
                // An error is also the breaker skipping the ping: the last commands failed.
                let up = result.is_ok();
                if was != Some(up) {
                    match result {
                        Ok(()) => tracing::info!(tier = "l2", url = %urls, "Redis reachable"),
                        Err(e) => tracing::warn!(tier = "l2", url = %urls, error = %e,
                            "Redis unreachable; L2 lookups are misses until it answers (tierd reconnects on its own)"),
                    }
                    was = Some(up);
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Takes the lease `name` for `ttl` as `holder` unless someone holds it (`SET NX PX`):
    /// true when taken. The warmer's: one node fetches a key, the others find it in L2.
    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, TierError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let ms = ttl.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
        self.inner
            .guarded(|mut c| async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&name)
                    .arg(&holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await?;
                Ok(set.is_some())
            })
            .await
    }

    /// Where a subscriber connects (the first URL, verified as the pool's connections are).
    pub fn subscribe_to(&self) -> redis::ConnectionInfo {
        self.inner.subscribe_to.clone()
    }

    pub async fn ping(&self) -> Result<(), TierError> {
        self.inner
            .guarded(|mut c| async move {
                let _: String = redis::cmd("PING").query_async(&mut c).await?;
                Ok(())
            })
            .await
    }
}

/// A connection checked out of the pool and kept in a slot: multiplexed, so clones of it serve
/// any number of concurrent commands without going back to the pool (whose checkout costs a
/// `PING`). A slot is emptied when its connection fails; the pool then recycles or replaces it.
enum Held {
    Single(deadpool_redis::Connection),
    Cluster(cluster::Connection),
}

impl Held {
    fn shared(&self) -> Conn {
        match self {
            Held::Single(c) => Conn::Single((**c).clone()),
            Held::Cluster(c) => Conn::Cluster((**c).clone()),
        }
    }
}

/// A clone of a held connection, used for one operation.
#[derive(Clone)]
enum Conn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(cluster::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Failure {
    Pool(String),
    Redis(redis::RedisError),
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Self {
        Failure::Redis(e)
    }
}

impl Inner {
    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    /// A connection for one operation, and the slot it came from.
    async fn conn(&self) -> Result<(usize, Conn), Failure> {
        use std::sync::atomic::Ordering;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        // One task fills an empty slot while the others using it wait (within their timeout),
        // so a burst on a cold pool does not queue hundreds of checkouts.
        let mut slot = self.slots[i].lock().await;
        if let Some(held) = slot.as_ref() {
            return Ok((i, held.shared()));
        }
        let held = match &self.pool {
            Pool::Single(p) => p.get().await.map(Held::Single),
            Pool::Cluster(p) => p.get().await.map(Held::Cluster),
        }
        .map_err(|e| Failure::Pool(e.to_string()))?;
        let conn = held.shared();
        *slot = Some(held);
        Ok((i, conn))
    }

    /// Forgets a slot's connection after it failed.
    async fn drop_slot(&self, i: usize) {
        let held = self.slots[i].lock().await.take();
        drop(held);
    }

    /// Runs `op` on a pooled connection through the breaker, within the command timeout.
    async fn guarded<T, F, Fut>(&self, op: F) -> Result<T, TierError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let tm = self.metrics.tier(TierName::L2);
        if !self.breaker.allow() {
            tm.fault(TierFault::CircuitOpen);
            return Err(TierError::CircuitOpen);
        }
        let mut slot = None;
        let work = async {
            let (i, c) = self.conn().await?;
            slot = Some(i);
            op(c).await
        };
        // Whether Redis answered (an error reply is an answer; a dropped connection is not).
        let mut answered = false;
        // Counted out when dropped, so a cancelled command is too.
        let counted = crate::metrics::GaugeGuard::new(self.in_flight.clone());
        let timed = tokio::time::timeout(self.command_timeout, work).await;
        drop(counted);
        let result = match timed {
            Ok(Ok(v)) => {
                answered = true;
                Ok(v)
            }
            Ok(Err(Failure::Pool(e))) => Err(TierError::Unavailable(e)),
            Ok(Err(Failure::Redis(e))) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    if let Some(i) = slot {
                        self.drop_slot(i).await;
                    }
                } else {
                    answered = true;
                }
                Err(TierError::Unavailable(e.to_string()))
            }
            Err(_) => {
                // A connection that stopped answering may be wedged; take a fresh one next time.
                if let Some(i) = slot {
                    self.drop_slot(i).await;
                }
                Err(TierError::Timeout)
            }
        };
        self.reach.store(
            if answered { UP } else { DOWN },
            std::sync::atomic::Ordering::Release,
        );
        match self.breaker.record(result.is_ok()) {
            Transition::Opened => {
                tm.circuit_open.set(1);
                tracing::warn!(tier = "l2", error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
                    "Redis keeps failing; circuit open, L2 is skipped until a probe succeeds");
            }
            Transition::Closed => {
                tm.circuit_open.set(0);
                tracing::info!(tier = "l2", "Redis answers again; circuit closed");
            }
            Transition::None => {}
        }
        if let Err(e) = &result {
            tm.fault(match e {
                TierError::Timeout => TierFault::Timeout,
                _ => TierFault::Unavailable,
            });
        }
        result
    }

    async fn write_worker(self: Arc<Self>, mut rx: mpsc::Receiver<Op>, finished: Finished) {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        let mut puts: Vec<(String, Record)> = Vec::with_capacity(WRITE_BATCH);
        while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
            for op in batch.drain(..) {
                match op {
                    Op::Put { key, record, .. } => puts.push((key, record)),
                    Op::Delete { key, done } => {
                        self.write_puts(&mut puts).await;
                        let _ = done.send(self.delete_now(&key).await);
                    }
                    Op::Purge { selector, done } => {
                        self.write_puts(&mut puts).await;
                        let _ = done.send(self.purge_now(&selector).await);
                    }
                    Op::Tick => {}
                }
            }
            self.write_puts(&mut puts).await;
        }
        drop(finished);
    }

    async fn write_puts(&self, puts: &mut Vec<(String, Record)>) {
        if puts.is_empty() {
            return;
        }
        let n = puts.len() as u64;
        let tm = self.metrics.tier(TierName::L2);
        let started = tm.timer();
        // Each record, then its key added to the set of every tag it carries.
        let mut cmds = Vec::with_capacity(puts.len() * 3);
        for (k, r) in puts.drain(..) {
            let ms = u64::try_from(r.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let key = self.key(&k);
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(&r.bytes[..]).arg("PX").arg(ms);
            cmds.push(set);
            for t in r.tags.iter() {
                let tag_key = self.tag_key(t);
                let mut add = redis::cmd("SADD");
                add.arg(&tag_key).arg(&key);
                cmds.push(add);
                let mut exp = redis::cmd("PEXPIRE");
                exp.arg(&tag_key).arg(self.tag_ttl_ms);
                cmds.push(exp);
            }
        }
        let cluster = matches!(self.pool, Pool::Cluster(_));
        let result = self
            .guarded(|mut c| async move { run_commands(&mut c, &cmds, cluster, false).await })
            .await;
        tm.observe_put(started);
        match result {
            Ok(_) => tm.writes(WriteOutcome::Written, n),
            Err(e) => {
                tm.writes(WriteOutcome::Failed, n);
                tracing::debug!(tier = "l2", error = %e, entries = n, "write batch not stored");
            }
        }
    }

    async fn delete_now(&self, key: &str) -> Result<(), TierError> {
        let k = self.key(key);
        self.guarded(|mut c| async move {
            let _: u64 = c.del(&k).await?;
            Ok(())
        })
        .await
    }

    fn tag_key(&self, tag: &str) -> String {
        let mut k = String::with_capacity(self.tag_prefix.len() + tag.len());
        k.push_str(&self.tag_prefix);
        k.push_str(tag);
        k
    }

    async fn purge_now(&self, selector: &Selector) -> Result<u64, TierError> {
        let cluster = matches!(self.pool, Pool::Cluster(_));
        match selector.index_tag() {
            Some(tag) => {
                let set = self.tag_key(&tag);
                let set_for_read = set.clone();
                let members: Vec<String> = self
                    .guarded(|mut c| async move {
                        let m: Vec<String> = c.smembers(&set_for_read).await?;
                        Ok(m)
                    })
                    .await?;
                let selected: Vec<String> = members
                    .into_iter()
                    .filter(|m| {
                        m.strip_prefix(&self.prefix)
                            .is_some_and(|k| selector.matches_key(k))
                    })
                    .collect();
                let mut removed = 0;
                for chunk in selected.chunks(PURGE_CHUNK) {
                    // Records and their index entries go together (atomically on one server),
                    // so a write racing the purge leaves both or neither.
                    let mut cmds = Vec::with_capacity(chunk.len() * 2);
                    for m in chunk {
                        let mut del = redis::cmd("UNLINK");
                        del.arg(m);
                        cmds.push(del);
                    }
                    let mut srem = redis::cmd("SREM");
                    srem.arg(&set).arg(chunk);
                    cmds.push(srem);
                    let n = chunk.len();
                    removed += self
                        .guarded(|mut c| async move {
                            let counts = run_commands(&mut c, &cmds, cluster, true).await?;
                            Ok(counts.iter().take(n).sum::<u64>())
                        })
                        .await?;
                }
                Ok(removed)
            }
            None => self.scan_purge(selector).await,
        }
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<(), TierError> {
        let (ch, msg) = (channel.to_owned(), payload.to_owned());
        self.guarded(|mut c| async move {
            let _: u64 = c.publish(&ch, &msg).await?;
            Ok(())
        })
        .await
    }
}

/// Keys per chunk of a tag purge.
const PURGE_CHUNK: usize = 500;

/// Sends `cmds`: as one pipeline on a single server (a `MULTI` transaction when `atomic`), one
/// by one on a cluster, where the keys live on different nodes. The integer replies, in order
/// (0 for other replies).
async fn run_commands(
    c: &mut Conn,
    cmds: &[redis::Cmd],
    cluster: bool,
    atomic: bool,
) -> Result<Vec<u64>, Failure> {
    let as_count = |v: &redis::Value| match v {
        redis::Value::Int(n) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    if cluster {
        let mut out = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            let v: redis::Value = cmd.query_async(c).await?;
            out.push(as_count(&v));
        }
        return Ok(out);
    }
    let mut pipe = redis::pipe();
    if atomic {
        pipe.atomic();
    }
    for cmd in cmds {
        pipe.add_command(cmd.clone());
    }
    let values: Vec<redis::Value> = pipe.query_async(c).await?;
    Ok(values.iter().map(as_count).collect())
}

#[async_trait]
impl Tier for RedisTier {
    fn name(&self) -> TierName {
        TierName::L2
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, TierError> {
        let k = self.inner.key(key);
        self.inner
            .guarded(|mut c| async move {
                let v: Option<Vec<u8>> = c.get(&k).await?;
                Ok(v.map(Bytes::from))
            })
            .await
    }

    fn put(&self, key: String, record: Record) -> Result<(), TierError> {
        self.queue.put(key, record)
    }

    async fn delete(&self, key: &str) -> Result<(), TierError> {
        let key = key.to_owned();
        // Waits behind queued writes: a little over one batch's worth of command timeouts.
        let wait = self.inner.command_timeout * 4;
        self.queue
            .request(wait, |done| Op::Delete { key, done })
            .await
    }

    async fn purge(&self, selector: &Selector) -> Result<u64, TierError> {
        let selector = selector.clone();
        let wait = self.inner.command_timeout * 64;
        self.queue
            .request(wait, |done| Op::Purge { selector, done })
            .await
    }

    fn stats(&self) -> Option<TierStats> {
        // Redis is shared with other nodes (and maybe other programs): no per-node count.
        None
    }

    fn queue_depth(&self) -> usize {
        self.queue.depth()
    }

    fn queue_capacity(&self) -> usize {
        self.queue.capacity()
    }

    fn pool(&self) -> Option<super::PoolStatus> {
        let status = match &self.inner.pool {
            Pool::Single(p) => p.status(),
            Pool::Cluster(p) => p.status(),
        };
        Some(super::PoolStatus {
            open: status.size,
            max: status.max_size,
        })
    }

    fn circuit(&self) -> Option<CircuitState> {
        Some(self.inner.breaker.state())
    }

    /// False while the last command (a lookup, a write, or the periodic `PING` of
    /// [`RedisTier::watch`]) failed.
    fn healthy(&self) -> bool {
        self.inner.reach.load(std::sync::atomic::Ordering::Acquire) != DOWN
    }

    async fn close(&self) {
        self.queue.close().await;
    }
}
