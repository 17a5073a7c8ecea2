//! Predictive warming: the hot set is in cache before clients ask for it.
//!
//! ```text
//!  journal ──▶ popularity (decayed counts) ──┐
//!  [warming] urls ───────────────────────────┼─▶ plan ─▶ budget ─▶ warm fetch ─▶ tierd's own
//!  journal ──▶ next-request model ─▶ on each ┘    (rate, slots,    (GET over       listener:
//!              client request, what follows       yield, backoff,   loopback, a     rules, key,
//!                                                 origin share)     secret marker)  tiers, store
//! ```
//!
//! - **Candidates**: the configured URLs; the journal's most requested URLs over `window` with
//!   a recency decay (`half_life`), at least `min_requests` each; and next-request predictions
//!   (see [`predict`]): when a client is answered for A and `P(B | A)` passes the threshold, B
//!   is fetched ahead (at most `predict_max` per request).
//! - **Triggers**: at start; on `schedules` (cron); on demand (`POST /_tierd/warm`); on every
//!   client request (prediction); after a purge, for rules with `warm_after_purge`; and
//!   refresh-ahead (a hot entry about to expire is
//!   revalidated first, so it never expires under its clients).
//! - **Through the front door**: a warm fetch is a GET to tierd's own listener carrying a
//!   per-process secret ([`crate::cache::warm_hook`]). It goes through the same rules, key and
//!   tiers as a client's request, so a key fresh in L2/L3 is promoted into L1 at no origin cost
//!   (`from_tier`), a stale one with validators is revalidated with a conditional request
//!   (`revalidated`), and the rest is fetched (`fetched`). It replays exactly the key's inputs
//!   and nothing else: host and target, no credentials, no cookies.
//! - **Privacy**: only URLs whose key is the plain URL (no keyed headers, no per-user scope),
//!   never user-scoped, and whose response was shared-storable are planned or predicted.
//! - **Accountability**: `tierd_warm_fetches_total{trigger,outcome}`, `tierd_warm_used_total`
//!   (a warmed entry served to a client at least once), `tierd_warm_wasted_total` (expired
//!   unserved); the journal marks requests served from warmed entries (`warmed`).

pub mod budget;
pub mod client;
pub mod ledger;
pub mod metrics;
pub mod plan;
pub mod predict;
mod run;
pub mod schedule;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use budget::BudgetOptions;
pub use metrics::WarmMetrics;
pub use plan::{Candidate, Source};

use crate::cache::{CacheState, WarmHook};
use crate::clock::Clock;
use ledger::Ledger;
use predict::{Model, Recent};

/// Default `[warming] top`: popular URLs per pass.
pub const DEFAULT_TOP: usize = 100;
/// Default `[warming] window_hours`.
pub const DEFAULT_WINDOW_HOURS: u64 = 24;
/// Default `[warming] half_life_hours`.
pub const DEFAULT_HALF_LIFE_HOURS: f64 = 6.0;
/// Default `[warming] min_requests`.
pub const DEFAULT_MIN_REQUESTS: u64 = 2;
/// Default `[warming] predict_threshold`.
pub const DEFAULT_PREDICT_THRESHOLD: f64 = 0.4;
/// Default `[warming] predict_max`.
pub const DEFAULT_PREDICT_MAX: usize = 2;
/// Default `[warming] refresh_threshold`.
pub const DEFAULT_REFRESH_THRESHOLD: f64 = 0.5;
/// Default `[warming] session_gap_seconds`.
pub const DEFAULT_SESSION_GAP_SECONDS: u64 = 1800;
/// Default `[warming] model_refresh_seconds`.
pub const DEFAULT_MODEL_REFRESH_SECONDS: u64 = 60;
/// Predictions waiting for the warmer; beyond it they are dropped (`queue_full`).
const PREDICT_QUEUE: usize = 1024;
/// Passes `GET /_tierd/warm` remembers.
const RUNS_KEPT: usize = 10;

/// What triggered a warm fetch; the `trigger` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Trigger {
    /// The pass at startup.
    Start,
    /// A `schedules` entry.
    Schedule,
    /// A client's request predicted this one.
    Predict,
    /// An entry about to expire under its clients.
    Refresh,
    /// A popular key purged.
    Purge,
    /// `POST /_tierd/warm`.
    Demand,
}

impl Trigger {
    pub const ALL: [Trigger; 6] = [
        Trigger::Start,
        Trigger::Schedule,
        Trigger::Predict,
        Trigger::Refresh,
        Trigger::Purge,
        Trigger::Demand,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What a warm fetch did; the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum WarmOutcome {
    /// The origin answered and the response was stored.
    Fetched,
    /// A stale entry was revalidated (a conditional request).
    Revalidated,
    /// Found fresh in L2 or L3 and promoted into L1: no origin request.
    FromTier,
    /// Already fresh in L1: nothing to do.
    Fresh,
    /// The origin answered with something the cache does not store.
    NotStored,
    /// An origin error, a 5xx, a timeout: the budget backs off.
    Failed,
}

impl WarmOutcome {
    pub const ALL: [WarmOutcome; 6] = [
        WarmOutcome::Fetched,
        WarmOutcome::Revalidated,
        WarmOutcome::FromTier,
        WarmOutcome::Fresh,
        WarmOutcome::NotStored,
        WarmOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The fetch left an entry a client may be served (counted used or wasted).
    fn warmed(self) -> bool {
        matches!(
            self,
            WarmOutcome::Fetched | WarmOutcome::Revalidated | WarmOutcome::FromTier
        )
    }
}

/// Why a candidate was not fetched; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Skip {
    /// Over the rate, the concurrency, or the share of origin traffic.
    Budget,
    /// The origin failed or slowed down recently.
    Backoff,
    /// Many client fetches are in flight: warming yields.
    Busy,
    /// Another node holds the key's lease.
    Leased,
    /// The prediction queue was full.
    QueueFull,
    /// The pass ran out of time.
    Deadline,
}

impl Skip {
    pub const ALL: [Skip; 6] = [
        Skip::Budget,
        Skip::Backoff,
        Skip::Busy,
        Skip::Leased,
        Skip::QueueFull,
        Skip::Deadline,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The warmer's settings (`[warming]` converts into them).
#[derive(Debug, Clone)]
pub struct WarmOptions {
    /// Run a pass when the warmer starts.
    pub on_start: bool,
    /// A pass each time one of these comes due.
    pub schedules: Vec<schedule::Schedule>,
    /// Popular URLs per pass.
    pub top: usize,
    /// How far back popularity and sequences are read.
    pub window: Duration,
    /// A request this old counts half.
    pub half_life: Duration,
    /// Requests a URL needs in the window to be planned.
    pub min_requests: u64,
    /// URLs every pass warms, as (host, target).
    pub urls: Vec<(String, String)>,
    /// Fetch what usually follows a client's request.
    pub predict: bool,
    /// Least probability of a prediction.
    pub predict_threshold: f64,
    /// Most predictions fetched per request.
    pub predict_max: usize,
    /// Revalidate hot entries shortly before they expire.
    pub refresh_ahead: bool,
    /// Least probability that a hot entry is asked for again within its lifetime for it to be
    /// refreshed ahead.
    pub refresh_threshold: f64,
    /// Requests further apart than this are different sessions.
    pub session_gap: Duration,
    /// How often the model is rebuilt from the journal.
    pub model_refresh: Duration,
    /// Longest a pass runs.
    pub pass_deadline: Duration,
    /// Longest one warm fetch takes.
    pub fetch_timeout: Duration,
    pub budget: BudgetOptions,
}

impl Default for WarmOptions {
    fn default() -> Self {
        WarmOptions {
            on_start: true,
            schedules: Vec::new(),
            top: DEFAULT_TOP,
            window: Duration::from_secs(DEFAULT_WINDOW_HOURS * 3600),
            half_life: Duration::from_secs_f64(DEFAULT_HALF_LIFE_HOURS * 3600.0),
            min_requests: DEFAULT_MIN_REQUESTS,
            urls: Vec::new(),
            predict: true,
            predict_threshold: DEFAULT_PREDICT_THRESHOLD,
            predict_max: DEFAULT_PREDICT_MAX,
            refresh_ahead: true,
            refresh_threshold: DEFAULT_REFRESH_THRESHOLD,
            session_gap: Duration::from_secs(DEFAULT_SESSION_GAP_SECONDS),
            model_refresh: Duration::from_secs(DEFAULT_MODEL_REFRESH_SECONDS),
            pass_deadline: Duration::from_secs(600),
            fetch_timeout: Duration::from_secs(35),
            budget: BudgetOptions::default(),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub trigger: Option<Trigger>,
    /// Unix milliseconds the pass started.
    pub started_ms: u64,
    pub planned: u64,
    pub from_tiers: u64,
    pub fetched: u64,
    pub revalidated: u64,
    pub fresh: u64,
    pub not_stored: u64,
    pub failed: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    pub duration_ms: u64,
    /// Why the journal gave no candidates, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_error: Option<String>,
}

impl Summary {
    /// Counts a fetch task's result (a task that panicked counts as failed).
    fn tally(&mut self, done: Result<Result<WarmOutcome, Skip>, tokio::task::JoinError>) {
        match done {
            Ok(Ok(o)) => self.count(o),
            Ok(Err(skip)) => *self.skipped.entry(skip.as_str()).or_default() += 1,
            Err(_) => self.count(WarmOutcome::Failed),
        }
    }

    fn count(&mut self, o: WarmOutcome) {
        *match o {
            WarmOutcome::Fetched => &mut self.fetched,
            WarmOutcome::Revalidated => &mut self.revalidated,
            WarmOutcome::FromTier => &mut self.from_tiers,
            WarmOutcome::Fresh => &mut self.fresh,
            WarmOutcome::NotStored => &mut self.not_stored,
            WarmOutcome::Failed => &mut self.failed,
        } += 1;
    }
}

/// The answer to a request for a pass.
#[derive(Debug, Clone)]
pub enum PassReply {
    /// The pass started (not waited for).
    Started,
    /// A pass is already running.
    Busy(Trigger),
    /// The pass is done.
    Done(Summary),
    /// The plan, nothing fetched (dry run).
    Plan(Vec<Candidate>, Option<String>),
}

/// Why the warmer could not answer.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("the warmer is not running (it starts with the listener)")]
    NotRunning,
    #[error("the warmer did not answer in time")]
    Timeout,
}

pub(crate) enum Command {
    Pass {
        trigger: Trigger,
        dry_run: bool,
        wait: bool,
        reply: oneshot::Sender<PassReply>,
    },
    Stop(oneshot::Sender<()>),
}

#[derive(Default)]
struct Status {
    runs: VecDeque<Summary>,
    running: Option<Trigger>,
    model_built_ms: Option<u64>,
    model_error: Option<String>,
    addr: Option<SocketAddr>,
    /// Each schedule and when it is next due (Unix ms).
    schedule: Vec<(String, Option<u64>)>,
    /// The clock's time at the warmer's last tick (Unix ms): its loop is alive.
    last_tick_ms: u64,
}

/// What the request path, the runner and the admin share.
pub(crate) struct Shared {
    opts: WarmOptions,
    secret: String,
    state: Weak<CacheState>,
    #[cfg_attr(not(feature = "duckdb"), allow(dead_code))]
    journal: Option<Arc<crate::journal::Journal>>,
    metrics: Arc<WarmMetrics>,
    clock: Arc<dyn Clock>,
    model: ArcSwap<Model>,
    recent: Recent,
    ledger: Ledger,
    /// The last hour's most requested URLs and their rates (refresh-ahead).
    hot: Mutex<Vec<Hot>>,
    /// A purge happened since the last tick.
    purged: std::sync::atomic::AtomicBool,
    budget: budget::Budget,
    predict_tx: mpsc::Sender<Arc<str>>,
    status: Mutex<Status>,
}

/// A hot URL: its key and its request rate (per second) over the last hour.
#[derive(Debug, Clone)]
struct Hot {
    key: String,
    rate: f64,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shared {
    fn now_secs(&self) -> u64 {
        unix_secs(self.clock.now())
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl WarmHook for Shared {
    fn is_own(&self, marker: &[u8]) -> bool {
        let secret = self.secret.as_bytes();
        marker.len() == secret.len()
            && marker
                .iter()
                .zip(secret)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    #[inline]
    fn requested(&self, key: &str, route: &str) {
        if !self.opts.predict {
            return;
        }
        let model = self.model.load();
        if model.is_empty() {
            return;
        }
        let mut now = None;
        model.predict(key, route, self.opts.predict_max, |next, _p| {
            let now = *now.get_or_insert_with(|| self.now_secs());
            // Claimed for a few seconds: the warmer checks it and marks it for as long as it
            // stays fresh.
            if self.recent.claim(next, now, now + 5)
                && self.predict_tx.try_send(Arc::from(next)).is_err()
            {
                self.metrics.skipped(Skip::QueueFull);
            }
        });
    }

    #[inline]
    fn served_entry(&self, key: &str) -> bool {
        self.ledger.served(key, &self.metrics)
    }

    fn purged(&self) {
        self.purged
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// What the warmer's thread takes when it starts: commands, and predicted keys.
type Receivers = (mpsc::Receiver<Command>, mpsc::Receiver<Arc<str>>);

/// The warmer: a handle to its thread. Cheap to share (`Arc`).
pub struct Warmer {
    shared: Arc<Shared>,
    cmd: mpsc::Sender<Command>,
    receivers: Mutex<Option<Receivers>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Warmer {
    /// A warmer for the cache `state` (its journal, tiers and clock), attached to it: from now
    /// on the cache recognises its fetches and tells it what clients ask for. It fetches
    /// nothing until [`start`](Self::start).
    pub fn new(
        opts: WarmOptions,
        state: &Arc<CacheState>,
        metrics: Arc<WarmMetrics>,
    ) -> Arc<Warmer> {
        let (predict_tx, predict_rx) = mpsc::channel(PREDICT_QUEUE);
        let (cmd, cmd_rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            secret: format!("{:032x}", fastrand::u128(..)),
            state: Arc::downgrade(state),
            journal: state.journal.clone(),
            clock: state.clock.clone(),
            model: ArcSwap::from_pointee(Model::default()),
            recent: Recent::new(16_384),
            ledger: Ledger::default(),
            hot: Mutex::new(Vec::new()),
            purged: std::sync::atomic::AtomicBool::new(false),
            budget: budget::Budget::new(opts.budget.clone()),
            predict_tx,
            status: Mutex::new(Status::default()),
            metrics,
            opts,
        });
        if !state.set_warm_hook(shared.clone()) {
            tracing::warn!("a warmer is already attached to this cache; this one only runs passes");
        }
        Arc::new(Warmer {
            shared,
            cmd,
            receivers: Mutex::new(Some((cmd_rx, predict_rx))),
            thread: Mutex::new(None),
        })
    }

    /// Starts the warmer's thread, fetching through the listener at `addr` (an unspecified
    /// address means this host's loopback). Once; later calls do nothing.
    pub fn start(&self, addr: SocketAddr) -> std::io::Result<()> {
        let Some((cmds, predicts)) = self.receivers.lock().ok().and_then(|mut r| r.take()) else {
            return Ok(());
        };
        let addr = loopback(addr);
        self.shared.status().addr = Some(addr);
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("tierd-warm".into())
            .spawn(move || run::thread(shared, addr, cmds, predicts))?;
        if let Ok(mut t) = self.thread.lock() {
            *t = Some(handle);
        }
        tracing::info!(%addr, on_start = self.shared.opts.on_start, top = self.shared.opts.top,
            predict = self.shared.opts.predict, "warmer started");
        Ok(())
    }

    /// Asks for a pass now (`Demand`): with `wait`, answers when it is done; with `dry_run`,
    /// answers the plan and fetches nothing.
    pub async fn pass(&self, dry_run: bool, wait: bool) -> Result<PassReply, WarmError> {
        self.ask(Trigger::Demand, dry_run, wait).await
    }

    pub(crate) async fn ask(
        &self,
        trigger: Trigger,
        dry_run: bool,
        wait: bool,
    ) -> Result<PassReply, WarmError> {
        let (reply, answer) = oneshot::channel();
        self.cmd
            .try_send(Command::Pass {
                trigger,
                dry_run,
                wait,
                reply,
            })
            .map_err(|_| WarmError::NotRunning)?;
        let limit = self.shared.opts.pass_deadline + Duration::from_secs(30);
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(WarmError::NotRunning),
            Err(_) => Err(WarmError::Timeout),
        }
    }

    /// What `GET /_tierd/warm` shows: settings, the model, the last passes, and precision.
    pub fn status(&self) -> serde_json::Value {
        let s = &self.shared;
        let o = &s.opts;
        let m = &s.metrics;
        let (used, wasted) = (m.used.get(), m.wasted.get());
        let st = s.status();
        let model = s.model.load();
        serde_json::json!({
            "enabled": true,
            "running": st.running,
            "last_tick_ms": st.last_tick_ms,
            "listener": st.addr.map(|a| a.to_string()),
            "settings": {
                "on_start": o.on_start,
                "top": o.top,
                "window_hours": o.window.as_secs_f64() / 3600.0,
                "half_life_hours": o.half_life.as_secs_f64() / 3600.0,
                "min_requests": o.min_requests,
                "urls": o.urls.iter().map(|(h, t)| format!("{h}{t}")).collect::<Vec<_>>(),
                "predict": o.predict,
                "predict_threshold": o.predict_threshold,
                "predict_max": o.predict_max,
                "refresh_ahead": o.refresh_ahead,
                "refresh_threshold": o.refresh_threshold,
                "schedules": o.schedules.iter().map(|s| s.expression.clone()).collect::<Vec<_>>(),
                "rate_per_second": o.budget.rate_per_second,
                "concurrency": o.budget.concurrency,
                "origin_share": o.budget.origin_share,
            },
            "schedule": st.schedule.iter().map(|(e, next)| serde_json::json!({"cron": e, "next_ms": next})).collect::<Vec<_>>(),
            "model": {
                "predictions": model.len(),
                "built_ms": st.model_built_ms,
                "error": st.model_error,
                "strongest": model.strongest(10),
            },
            "last_runs": st.runs.iter().rev().collect::<Vec<_>>(),
            "hot_urls": s.hot.lock().map_or(0, |h| h.len()),
            "accounting": {
                "used": used,
                "wasted": wasted,
                "precision": if used + wasted == 0 { None } else { Some(used as f64 / (used + wasted) as f64) },
                "warmed_entries_now": s.ledger.len(),
            },
            "backoff_ms": s.budget.backoff_left().map(|d| d.as_millis() as u64),
        })
    }

    /// Stops the warmer's thread (fetches in flight are abandoned).
    pub async fn stop(&self) {
        let (ack, done) = oneshot::channel();
        if self.cmd.try_send(Command::Stop(ack)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        }
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

impl std::fmt::Debug for Warmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warmer")
            .field("options", &self.shared.opts)
            .finish_non_exhaustive()
    }
}

/// The address to reach a listener bound to `addr` from this host.
fn loopback(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}
