//! The warmer's thread: its own single-threaded runtime, so warm fetches never take a turn on
//! the workers that answer clients. It runs passes, fetches predictions, rebuilds the model
//! from the journal, and sweeps the ledger once a second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::client::{self, Reply};
use super::plan::{self, Candidate};
#[cfg(feature = "duckdb")]
use super::predict::Model;
use super::Skip;
use super::{unix_ms, Command, PassReply, Shared, Summary, Trigger, WarmOutcome, RUNS_KEPT};
use crate::journal::split_key;
use crate::log_limit::{LogLimit, DEFAULT_LOG_INTERVAL};

/// How long a node holds a key's warm lease (its fetch is done well before).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
const LEASE: Duration = Duration::from_secs(10);

pub(super) fn thread(
    shared: Arc<Shared>,
    addr: SocketAddr,
    cmds: mpsc::Receiver<Command>,
    predicts: mpsc::Receiver<Arc<str>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the warmer's runtime did not start; nothing is warmed");
            return;
        }
    };
    rt.block_on(run(shared, addr, cmds, predicts));
}

async fn run(
    shared: Arc<Shared>,
    addr: SocketAddr,
    mut cmds: mpsc::Receiver<Command>,
    mut predicts: mpsc::Receiver<Arc<str>>,
) {
    shared.reload_model().await;
    let mut last_model = Instant::now();
    let reloading = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicBool::new(false));
    if shared.opts.on_start {
        start_pass(&shared, addr, &running, Trigger::Start, None);
    }
    let mut schedules = shared.opts.schedules.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(Command::Stop(ack)) => {
                    let _ = ack.send(());
                    break;
                }
                Some(Command::Pass { trigger, dry_run: true, reply, .. }) => {
                    let s = shared.clone();
                    tokio::spawn(async move {
                        let (plan, error) = s.plan().await;
                        let _ = trigger;
                        let _ = reply.send(PassReply::Plan(plan, error));
                    });
                }
                Some(Command::Pass { trigger, wait, reply, .. }) => {
                    let running_now = shared.status().running;
                    if let Some(t) = running_now {
                        let _ = reply.send(PassReply::Busy(t));
                    } else if wait {
                        start_pass(&shared, addr, &running, trigger, Some(reply));
                    } else {
                        start_pass(&shared, addr, &running, trigger, None);
                        let _ = reply.send(PassReply::Started);
                    }
                }
            },
            Some(key) = predicts.recv() => {
                let s = shared.clone();
                tokio::spawn(async move { s.predicted(addr, key).await });
            }
            _ = tick.tick() => {
                shared.tick();
                shared.refresh_ahead(addr);
                if shared.purged.swap(false, Ordering::AcqRel) {
                    let s = shared.clone();
                    tokio::spawn(async move { s.rewarm_purged(addr).await });
                }
                let now = shared.clock.now();
                let mut due = false;
                for s in &mut schedules {
                    due |= s.due(now);
                }
                {
                    let mut st = shared.status();
                    st.schedule = schedules
                        .iter()
                        .map(|s| (s.expression.clone(), s.next().map(unix_ms)))
                        .collect();
                    st.last_tick_ms = unix_ms(now);
                }
                if due {
                    if running.load(Ordering::Acquire) {
                        tracing::info!("a scheduled warm pass came due while a pass runs; skipped");
                    } else {
                        start_pass(&shared, addr, &running, Trigger::Schedule, None);
                    }
                }
                // Until a first model is built (the journal opens in the background), every
                // second.
                let due = last_model.elapsed() >= shared.opts.model_refresh
                    || (shared.journal.is_some() && shared.status().model_built_ms.is_none());
                if due && !reloading.swap(true, Ordering::AcqRel)
                {
                    last_model = Instant::now();
                    let (s, flag) = (shared.clone(), reloading.clone());
                    tokio::spawn(async move {
                        s.reload_model().await;
                        flag.store(false, Ordering::Release);
                    });
                }
            }
        }
    }
}

fn start_pass(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    running: &Arc<AtomicBool>,
    trigger: Trigger,
    reply: Option<oneshot::Sender<PassReply>>,
) {
    if running.swap(true, Ordering::AcqRel) {
        if let Some(r) = reply {
            let _ = r.send(PassReply::Busy(trigger));
        }
        return;
    }
    shared.status().running = Some(trigger);
    let (s, flag) = (shared.clone(), running.clone());
    tokio::spawn(async move {
        let summary = s.pass(addr, trigger).await;
        {
            let mut st = s.status();
            st.running = None;
            st.runs.push_back(summary.clone());
            while st.runs.len() > RUNS_KEPT {
                st.runs.pop_front();
            }
        }
        flag.store(false, Ordering::Release);
        if let Some(r) = reply {
            let _ = r.send(PassReply::Done(summary));
        }
    });
}

/// What the cache said it did with a warm fetch.
pub(super) fn classify(reply: &Reply) -> (WarmOutcome, Option<u64>) {
    if reply.status >= 500 {
        return (WarmOutcome::Failed, None);
    }
    let mut outcome = "";
    let mut tier = "";
    let mut ttl = None;
    for part in reply.result.as_deref().unwrap_or_default().split(';') {
        match part.trim().split_once('=') {
            Some(("outcome", v)) => outcome = v,
            Some(("tier", v)) => tier = v,
            Some(("ttl", v)) => ttl = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    // What is left of the freshness lifetime (the entry may be old already).
    let left = ttl.map(|t| t.saturating_sub(reply.age.unwrap_or(0)));
    let o = match outcome {
        "hit" if tier == "l1" => WarmOutcome::Fresh,
        "hit" => WarmOutcome::FromTier,
        "miss" | "collapsed" => WarmOutcome::Fetched,
        "revalidated" | "stale_while_revalidate" => WarmOutcome::Revalidated,
        "pass" => WarmOutcome::NotStored,
        _ => WarmOutcome::Failed,
    };
    (o, left)
}

impl Shared {
    /// The plan of a pass, and why the journal gave nothing, when it failed.
    pub(super) async fn plan(&self) -> (Vec<Candidate>, Option<String>) {
        let (mut popular, error) = match self.popular().await {
            Ok(p) => (p, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        // Only what a request line can carry as it is (the journal holds what clients sent).
        popular.retain(|p| plan::sendable(&p.host) && plan::sendable(&p.target));
        (plan::plan(&self.opts.urls, &popular, self.opts.top), error)
    }

    /// The journal's most requested URLs (none without a journal).
    #[cfg(feature = "duckdb")]
    async fn popular(&self) -> Result<Vec<crate::journal::sequences::Popular>, String> {
        let Some(j) = &self.journal else {
            return Ok(Vec::new());
        };
        let (now, o) = (self.clock.now(), &self.opts);
        let (window, half_life, min, top) = (
            o.window,
            o.half_life,
            o.min_requests,
            o.top.saturating_mul(2),
        );
        j.read(true, Duration::from_secs(20), move |c| {
            crate::journal::sequences::popular(c, now, window, half_life, min, top)
        })
        .await
        .map_err(|e| e.to_string())
    }

    #[cfg(not(feature = "duckdb"))]
    async fn popular(&self) -> Result<Vec<crate::journal::sequences::Popular>, String> {
        Ok(Vec::new())
    }

    async fn pass(self: &Arc<Self>, addr: SocketAddr, trigger: Trigger) -> Summary {
        let started = Instant::now();
        let mut summary = Summary {
            trigger: Some(trigger),
            started_ms: unix_ms(self.clock.now()),
            ..Summary::default()
        };
        let (plan, error) = self.plan().await;
        summary.planned = plan.len() as u64;
        summary.journal_error = error;
        let deadline = started + self.opts.pass_deadline;
        let mut tasks: JoinSet<Result<WarmOutcome, Skip>> = JoinSet::new();
        for c in plan {
            let flights = || self.state.upgrade().map_or(0, |s| s.flights.len());
            match self.budget.acquire(deadline, flights).await {
                Ok(permit) => {
                    let s = self.clone();
                    tasks.spawn(async move {
                        let o = s.fetch(addr, &c.host, &c.target, trigger).await;
                        drop(permit);
                        o
                    });
                }
                Err(skip) => {
                    self.metrics.skipped(skip);
                    *summary.skipped.entry(skip.as_str()).or_default() += 1;
                }
            }
            while let Some(done) = tasks.try_join_next() {
                summary.tally(done);
            }
        }
        while let Some(done) = tasks.join_next().await {
            summary.tally(done);
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        self.metrics.last_pass.set(self.now_secs() as i64);
        tracing::info!(
            trigger = trigger.as_str(),
            planned = summary.planned,
            fetched = summary.fetched,
            from_tiers = summary.from_tiers,
            revalidated = summary.revalidated,
            fresh = summary.fresh,
            failed = summary.failed,
            duration_ms = summary.duration_ms,
            "warm pass done"
        );
        summary
    }

    /// A client's request predicted `key`: fetch it unless it is fresh in L1 or the budget
    /// says no (a prediction is worth nothing late, so it never waits).
    async fn predicted(self: &Arc<Self>, addr: SocketAddr, key: Arc<str>) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let now = state.clock.now();
        if let Some(slot) = state.store.get_l1(&key) {
            if let Some(e) = slot.select(&actix_web::http::header::HeaderMap::new()) {
                let age = e.age(now);
                if age < e.lifetime {
                    self.recent
                        .mark(&key, super::unix_secs(now) + (e.lifetime - age));
                    return;
                }
            }
        }
        let permit = match self.budget.try_acquire(state.flights.len()) {
            Ok(p) => p,
            Err(skip) => {
                self.metrics.skipped(skip);
                return;
            }
        };
        drop(state);
        let (host, target, _) = split_key(&key);
        if !plan::sendable(host) || !plan::sendable(target) {
            return;
        }
        let _ = self.fetch(addr, host, target, Trigger::Predict).await;
        drop(permit);
    }

    /// Whether this node may fetch `key` now: with L2 on, it takes the key's lease in Redis
    /// first (another node holding it fetches it, and this one finds it in L2 later). Redis
    /// not answering does not stop warming: the node fetches on its own.
    async fn take_lease(&self, key: &str) -> bool {
        #[cfg(feature = "redis")]
        {
            let Some(state) = self.state.upgrade() else {
                return false;
            };
            if let Some(bus) = &state.bus {
                return bus.lease(key, LEASE).await != Some(false);
            }
        }
        let _ = key;
        true
    }

    async fn fetch(
        &self,
        addr: SocketAddr,
        host: &str,
        target: &str,
        trigger: Trigger,
    ) -> Result<WarmOutcome, Skip> {
        if !self.take_lease(&format!("{host}{target}")).await {
            self.metrics.skipped(Skip::Leased);
            return Err(Skip::Leased);
        }
        let started = Instant::now();
        let marker = if trigger == Trigger::Refresh {
            format!("{}; refresh", self.secret)
        } else {
            self.secret.clone()
        };
        let got = client::get(addr, host, target, &marker, self.opts.fetch_timeout).await;
        let (outcome, left) = match &got {
            Ok(reply) => classify(reply),
            Err(e) => {
                static FAILED: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                if let Some(occurrences) = FAILED.check() {
                    tracing::warn!(error = %e, %addr, host, target, occurrences,
                        "a warm fetch failed");
                }
                (WarmOutcome::Failed, None)
            }
        };
        self.budget
            .outcome(outcome == WarmOutcome::Failed, started.elapsed());
        self.metrics.fetched(trigger, outcome);
        if let Some(left) = left.filter(|l| *l > 0) {
            let key = format!("{host}{target}");
            let until = self.now_secs() + left;
            if outcome.warmed() {
                self.ledger.add(&key, until, &self.metrics);
            }
            if outcome.warmed() || outcome == WarmOutcome::Fresh {
                self.recent.mark(&key, until);
            }
        }
        Ok(outcome)
    }

    /// Once a second: forget warmed entries no longer fresh (counting the unused as wasted),
    /// and sample the origin traffic for the budget's share.
    fn tick(&self) {
        self.ledger.sweep(self.now_secs(), &self.metrics);
        if let Some(state) = self.state.upgrade() {
            self.budget.sample(
                state.metrics.cache.origin_requests.get(),
                self.metrics.origin_fetches(&Trigger::ALL),
                self.metrics
                    .origin_fetches(&[Trigger::Predict, Trigger::Refresh]),
            );
        }
    }

    /// Refresh-ahead: a hot entry about to expire (within a tenth of its lifetime, at least
    /// 2 s) that clients are likely to ask for again before a new copy would expire
    /// (`1 - e^(-rate * lifetime)` at least `refresh_threshold`) is revalidated now, so it
    /// never expires under them. Never waits for the budget.
    fn refresh_ahead(self: &Arc<Self>, addr: SocketAddr) {
        if !self.opts.refresh_ahead {
            return;
        }
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let now = state.clock.now();
        let now_s = super::unix_secs(now);
        let hot = self.hot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let empty = actix_web::http::header::HeaderMap::new();
        for h in hot.iter() {
            let Some(slot) = state.store.get_l1(&h.key) else {
                continue;
            };
            let Some(e) = slot.select(&empty) else {
                continue;
            };
            let (age, lifetime) = (e.age(now), e.lifetime);
            if age >= lifetime || lifetime == 0 {
                continue;
            }
            let left = lifetime - age;
            let lead = (lifetime / 10).max(2);
            let again = 1.0 - (-h.rate * lifetime as f64).exp();
            if left > lead || again < self.opts.refresh_threshold {
                continue;
            }
            // Once per entry: claimed until it would have expired.
            if !self
                .recent
                .claim(&format!("refresh {}", h.key), now_s, now_s + left)
            {
                continue;
            }
            let permit = match self.budget.try_acquire(state.flights.len()) {
                Ok(p) => p,
                Err(skip) => {
                    self.metrics.skipped(skip);
                    continue;
                }
            };
            let (s, key) = (self.clone(), h.key.clone());
            tokio::spawn(async move {
                let (host, target, _) = split_key(&key);
                let _ = s.fetch(addr, host, target, Trigger::Refresh).await;
                drop(permit);
            });
        }
    }

    /// After a purge (debounced to the tick): the hot URLs of rules with `warm_after_purge`
    /// that are no longer in L1 are fetched again, waiting for the budget up to a minute.
    async fn rewarm_purged(self: &Arc<Self>, addr: SocketAddr) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let rules = state.rules.load_full();
        let hot = self.hot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let gone: Vec<String> = hot
            .into_iter()
            .map(|h| h.key)
            .filter(|key| {
                let (_, target, _) = split_key(key);
                let path = target.split('?').next().unwrap_or("/");
                let wanted = rules
                    .find(&actix_web::http::Method::GET, path)
                    .is_some_and(|m| m.rule().warm_after_purge);
                wanted && state.store.get_l1(key).is_none()
            })
            .collect();
        drop(state);
        let deadline = Instant::now() + Duration::from_secs(60);
        for key in gone {
            let flights = || self.state.upgrade().map_or(0, |s| s.flights.len());
            match self.budget.acquire(deadline, flights).await {
                Ok(permit) => {
                    let s = self.clone();
                    tokio::spawn(async move {
                        let (host, target, _) = split_key(&key);
                        let _ = s.fetch(addr, host, target, Trigger::Purge).await;
                        drop(permit);
                    });
                }
                Err(skip) => self.metrics.skipped(skip),
            }
        }
    }

    /// Rebuilds the next-request model from the journal.
    #[cfg(feature = "duckdb")]
    pub(super) async fn reload_model(&self) {
        let Some(j) = self
            .journal
            .as_ref()
            .filter(|_| self.opts.predict || self.opts.refresh_ahead)
        else {
            return;
        };
        let (now, window, gap) = (self.clock.now(), self.opts.window, self.opts.session_gap);
        let (predict, top) = (self.opts.predict, self.opts.top);
        // The first time, after the journal's writer has answered (it opens the file first):
        // at startup the file may not be open yet.
        let first = self.status().model_built_ms.is_none();
        let read = j
            .read(first, Duration::from_secs(30), move |c| {
                use crate::journal::sequences as seq;
                let (t, r) = if predict {
                    (
                        seq::transitions(c, now, window, gap, 200_000)?,
                        seq::route_counts(c, now, window)?,
                    )
                } else {
                    Default::default()
                };
                // The last hour's request rates, for refresh-ahead.
                let hour = Duration::from_secs(3600);
                let hot = seq::popular(c, now, hour, hour, 2, top)?;
                Ok((t, r, hot))
            })
            .await;
        match read {
            Ok((transitions, routes, hot)) => {
                *self.hot.lock().unwrap_or_else(|p| p.into_inner()) = hot
                    .into_iter()
                    .filter(|p| plan::sendable(&p.host) && plan::sendable(&p.target))
                    .map(|p| super::Hot {
                        key: format!("{}{}", p.host, p.target),
                        rate: p.requests as f64 / 3600.0,
                    })
                    .collect();
                let model = Model::build(
                    &transitions,
                    &routes,
                    self.opts.predict_threshold,
                    self.opts.predict_max,
                );
                self.metrics.model_transitions.set(model.len() as i64);
                self.model.store(Arc::new(model));
                let mut st = self.status();
                st.model_built_ms = Some(unix_ms(self.clock.now()));
                st.model_error = None;
            }
            Err(e) => {
                static FAILED: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                if let Some(occurrences) = FAILED.check() {
                    tracing::warn!(error = %e, occurrences,
                        "the warmer could not read the journal; predictions keep the last model");
                }
                self.status().model_error = Some(e.to_string());
            }
        }
    }

    /// Without DuckDB there is no journal to learn from.
    #[cfg(not(feature = "duckdb"))]
    pub(super) async fn reload_model(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_result_names_the_warm_outcome() {
        let r = |status: u16, result: Option<&str>, age: Option<u64>| Reply {
            status,
            result: result.map(str::to_owned),
            age,
        };
        let cases = [
            (
                r(200, Some("outcome=miss; ttl=60"), None),
                (WarmOutcome::Fetched, Some(60)),
            ),
            (
                r(200, Some("outcome=collapsed; ttl=60"), None),
                (WarmOutcome::Fetched, Some(60)),
            ),
            (
                r(200, Some("outcome=hit; tier=l1; ttl=60"), Some(10)),
                (WarmOutcome::Fresh, Some(50)),
            ),
            (
                r(200, Some("outcome=hit; tier=l3; ttl=60"), Some(70)),
                (WarmOutcome::FromTier, Some(0)),
            ),
            (
                r(200, Some("outcome=revalidated; tier=l2; ttl=30"), None),
                (WarmOutcome::Revalidated, Some(30)),
            ),
            (
                r(200, Some("outcome=pass"), None),
                (WarmOutcome::NotStored, None),
            ),
            (
                r(502, Some("outcome=miss"), None),
                (WarmOutcome::Failed, None),
            ),
            (r(200, None, None), (WarmOutcome::Failed, None)),
        ];
        for (reply, want) in cases {
            assert_eq!(classify(&reply), want, "{reply:?}");
        }
    }
}
