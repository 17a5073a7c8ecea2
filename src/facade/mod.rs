//! The library: one [`Cache`] built by a [`CacheBuilder`], one middleware for the routes, the
//! admin endpoints to mount, and a value cache for what is not an HTTP response.
//!
//! ```no_run
//! use actix_web::{web, App, HttpResponse, HttpServer};
//! use tierd::{Cache, Rules, Selector, ValueOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::builder()
//!     .l1_max_bytes(256 << 20)
//!     .rules(Rules::from_toml_str(r#"
//!         [[rules]]
//!         path = "/items/{id}"
//!         ttl_by_field = { pointer = "/status", values = { in_progress = 60, completed = 300 } }
//!         tags = ["item:{id}"]
//!     "#)?)
//!     .build()?;
//! let app_cache = cache.clone();
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(app_cache.middleware())
//!         .service(web::scope("/_tierd").configure(app_cache.admin()))
//!         .route("/items/{id}", web::get().to(|| async { HttpResponse::Ok().body("...") }))
//! })
//! .bind("127.0.0.1:8081")?
//! .run()
//! .await?;
//! let total: u64 = cache
//!     .get_or_compute("stats:total", ValueOptions::secs(7200), || async { 42 })
//!     .await;
//! cache.invalidate(Selector::tag("item:42")).await?;
//! cache.shutdown().await;
//! # Ok(()) }
//! ```

mod error;
mod middleware;
mod rules;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Once};
#[cfg(any(feature = "redis", feature = "duckdb"))]
use std::time::Duration;

use actix_web::web;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::Error;
pub use middleware::{CacheMiddleware, CacheService};
pub use rules::Rules;

use crate::admin::AdminOptions;
#[cfg(feature = "redis")]
use crate::cache::Bus;
use crate::cache::{CacheState, Lookup, PurgeSource, ValueCache, ValueOptions};
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, Settings};
use crate::guard::RequestLimits;
use crate::metrics::Metrics;
use crate::policy::{RuleSet, Selector};
#[cfg(feature = "duckdb")]
use crate::store::DuckTier;
#[cfg(feature = "redis")]
use crate::store::RedisTier;
use crate::store::{MemoryTier, StoreRuntime, TierName, TieredStore};

/// How often the cache pings Redis, so `/readyz` knows its state without traffic.
#[cfg(feature = "redis")]
const REDIS_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// The cache: tiers, rules, limits, metrics and the cross-node bus, shared by every worker.
/// Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Cache {
    state: Arc<CacheState>,
    values: ValueCache,
    limits: RequestLimits,
    admin: AdminOptions,
    housekeeping: Arc<Once>,
    warmer: Option<Arc<crate::warm::Warmer>>,
}

/// What a purge removed from each tier of this node (`None`: the tier is not configured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Entries removed from L1.
    pub l1: u64,
    /// Entries removed from L2 (Redis).
    pub l2: Option<u64>,
    /// Entries removed from L3 (DuckDB).
    pub l3: Option<u64>,
}

impl Cache {
    /// A builder with defaults that need no file and no environment: L1 only (256 MiB), no
    /// rules (responses are cached as their headers allow), metrics on, no rate limits.
    pub fn builder() -> CacheBuilder {
        CacheBuilder {
            settings: Settings::default(),
            clock: None,
        }
    }

    /// A cache from the gateway's settings (`tierd.toml` and `TIERD__*`, see
    /// [`Settings::load`]); [`CacheBuilder::settings`] does the same with changes on top.
    pub fn from_settings(settings: &Settings) -> Result<Cache, Error> {
        Cache::builder().settings(settings.clone()).build()
    }

    /// The whole middleware stack, for `App::wrap`, `Scope::wrap` or `Resource::wrap`.
    pub fn middleware(&self) -> CacheMiddleware {
        CacheMiddleware {
            state: self.state.clone(),
            limits: self.limits,
            housekeeping: self.housekeeping.clone(),
        }
    }

    /// The admin endpoints, to mount where the application wants them, e.g.
    /// `web::scope("/_tierd").configure(cache.admin())`: `GET metrics`, `GET healthz`,
    /// `GET readyz`, `GET stats`, `GET`/`HEAD entry?url=...[&user=...][&header=name:value]`,
    /// and `POST purge` (which needs
    /// `Authorization: Bearer <token>` with [`CacheBuilder::admin_token`]; refused without one).
    /// Keep the scope off the public internet or behind the application's own authentication.
    pub fn admin(&self) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
        crate::admin::mount(self.state.clone(), self.admin.clone())
    }

    /// The value under `key`, or `compute`'s, stored for `options` (a TTL and tags) in every
    /// tier. Five concurrent callers for one key run one computation. See [`ValueCache`].
    pub async fn get_or_compute<T, F, Fut>(
        &self,
        key: &str,
        options: impl Into<ValueOptions>,
        compute: F,
    ) -> T
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.values.get_or_compute(key, options, compute).await
    }

    /// As [`get_or_compute`](Self::get_or_compute) for a fallible computation: an error is
    /// returned to its caller and never stored.
    pub async fn try_get_or_compute<T, E, F, Fut>(
        &self,
        key: &str,
        options: impl Into<ValueOptions>,
        compute: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.values.try_get_or_compute(key, options, compute).await
    }

    /// The value cache itself (`get`, `insert`, invalidation by key or key prefix).
    pub fn values(&self) -> &ValueCache {
        &self.values
    }

    /// Removes what `selector` selects (responses, and values by tag) from every tier of this
    /// node, and of the other nodes through Redis pub/sub when L2 is on. An error names the
    /// tier that could not be purged; the others were.
    pub async fn invalidate(&self, selector: Selector) -> Result<Purged, Error> {
        let outcome = self.state.invalidate(&selector, PurgeSource::Value).await;
        let mut purged = Purged::default();
        for (tier, result) in outcome {
            let n = result.map_err(|e| Error::purge(tier, e))?;
            match tier {
                TierName::L1 => purged.l1 = n,
                TierName::L2 => purged.l2 = Some(n),
                TierName::L3 => purged.l3 = Some(n),
            }
        }
        Ok(purged)
    }

    /// Removes every entry scoped to one user, on every route and variant, from every tier of
    /// this node and of the others (as [`invalidate`](Self::invalidate)): `value` is what the
    /// rules' `key.user` reads from that user's requests (the whole `Authorization` value, or
    /// the `header:<name>` header's). Only its digest is used, as in the keys; values are not
    /// user-scoped and stay.
    pub async fn purge_user(&self, value: impl AsRef<[u8]>) -> Result<Purged, Error> {
        self.invalidate(Selector::user(value)).await
    }

    /// Removes every entry (responses and values) from every tier of this node and of the
    /// others (as [`invalidate`](Self::invalidate)).
    pub async fn purge_all(&self) -> Result<Purged, Error> {
        self.invalidate(Selector::All).await
    }

    /// Whether a response for `lookup` (a URL with its host, and for routes that key by them,
    /// the user and header values: see [`Lookup`]) is held by some tier, without serving or
    /// promoting it. An error when the lookup names no entry, or when no tier holds it and one
    /// could not answer.
    ///
    /// ```no_run
    /// # async fn f(cache: tierd::Cache) -> Result<(), tierd::Error> {
    /// use tierd::Lookup;
    /// let shared = cache.contains("http://api.test/catalog").await?;
    /// let mine = cache.contains(Lookup::new("http://api.test/me").user("Bearer abc")).await?;
    /// # let _ = (shared, mine); Ok(()) }
    /// ```
    pub async fn contains(&self, lookup: impl Into<Lookup>) -> Result<bool, Error> {
        let inspected = self
            .state
            .inspect(&lookup.into())
            .await
            .map_err(Error::Lookup)?;
        if inspected.cached() {
            return Ok(true);
        }
        match inspected
            .tiers
            .into_iter()
            .find_map(|(t, r)| r.err().map(|e| (t, e)))
        {
            Some((tier, e)) => Err(Error::Unknown {
                tier: tier.as_str(),
                message: e.to_string(),
            }),
            None => Ok(false),
        }
    }

    /// The Prometheus registry `/metrics` renders: register the application's own metrics here
    /// to have them on the same page.
    pub fn registry(&self) -> &prometheus::Registry {
        self.state.metrics.registry()
    }

    /// The text exposition of every metric (what `GET metrics` answers).
    pub fn render_metrics(&self) -> String {
        self.state.metrics.render()
    }

    /// Waits until the L2 and L3 write queues are drained (every store accepted so far is
    /// written) and the journal has written its rows. Call it after the server stopped; lookups
    /// and stores keep working after it (the journal no longer records them).
    pub async fn shutdown(&self) {
        if let Some(w) = &self.warmer {
            w.stop().await;
        }
        self.state.close().await;
    }

    /// Starts predictive warming ([`CacheBuilder::warming`]): its fetches are requests to the
    /// application's own listener at `addr` (what `HttpServer::addrs()` gives after `bind`),
    /// so they go through the same middleware and handlers as a client's. Does nothing when
    /// warming is off; once started, later calls do nothing.
    pub fn start_warming(&self, addr: std::net::SocketAddr) -> std::io::Result<()> {
        match &self.warmer {
            Some(w) => w.start(addr),
            None => Ok(()),
        }
    }

    /// The warmer, when warming is on (`POST`/`GET /_tierd/warm` use it).
    #[doc(hidden)]
    pub fn warmer(&self) -> Option<&Arc<crate::warm::Warmer>> {
        self.warmer.as_ref()
    }

    /// Starts the rate limiter's housekeeping on the current runtime now rather than when the
    /// first worker builds the middleware (the gateway does, on its system runtime).
    #[cfg(feature = "gateway")]
    pub(crate) fn start_housekeeping(&self) {
        let state = &self.state;
        self.housekeeping
            .call_once(|| spawn_limits_housekeeping(state));
    }

    /// The shared state the middleware layers run on (for the gateway and for tests).
    pub fn state(&self) -> &Arc<CacheState> {
        &self.state
    }
}

/// Builds a [`Cache`]; from [`Cache::builder`].
#[must_use]
pub struct CacheBuilder {
    settings: Settings,
    clock: Option<Arc<dyn Clock>>,
}

impl CacheBuilder {
    /// Starts from the gateway's settings instead of the defaults (the other calls change them).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The most bytes L1 (in process) holds; 256 MiB by default.
    pub fn l1_max_bytes(mut self, bytes: u64) -> Self {
        self.settings.tiers.l1.max_bytes = bytes;
        self
    }

    /// The largest response body stored (larger ones are answered, not stored); 8 MiB by
    /// default, and at most `l1_max_bytes`.
    pub fn max_body_bytes(mut self, bytes: u64) -> Self {
        self.settings.cache.max_body_bytes = bytes;
        self
    }

    /// Turns L2 on: a Redis server (`redis://host:port/db`), shared by every node, which also
    /// carries purges between them.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.settings.tiers.l2.enabled = true;
        self.settings.tiers.l2.url = url.into();
        self
    }

    /// Turns L3 on: a DuckDB file, kept across restarts.
    pub fn duckdb(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.tiers.l3.enabled = true;
        self.settings.tiers.l3.path = path.into().to_string_lossy().into_owned();
        self
    }

    /// The caching rules; none by default.
    pub fn rules(mut self, rules: Rules) -> Self {
        self.settings.rules = rules.into_configs();
        self
    }

    /// The bearer token the admin `purge` endpoint requires; without one it refuses.
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.settings.admin.token = token.into();
        self
    }

    /// Predictive warming: `WarmingConfig { enabled: true, ..Default::default() }` warms the
    /// journal's most requested URLs at start and what usually follows each request (the
    /// journal needs [`duckdb`](Self::duckdb), or `Settings::journal`); start it with
    /// [`Cache::start_warming`] once the server is bound.
    pub fn warming(mut self, warming: crate::config::WarmingConfig) -> Self {
        self.settings.warming = warming;
        self
    }

    /// The clock every freshness decision reads (tests move a manual one forward).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the settings and opens the tiers. A lower tier that cannot start (Redis not
    /// answering, a DuckDB file that cannot open) is left out with one ERROR line and shows as
    /// failed in `readyz`; the cache serves from the other tiers.
    pub fn build(self) -> Result<Cache, Error> {
        self.settings.validate()?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let state = build_state(&self.settings, clock)?;
        // Registered whether warming is on or not: dashboards and alerts find zeros.
        let warm_metrics = Arc::new(crate::warm::WarmMetrics::register(state.metrics.registry()));
        let warmer = self
            .settings
            .warm_options()
            .map(|o| crate::warm::Warmer::new(o, &state, warm_metrics));
        Ok(Cache {
            values: ValueCache::new(state.clone()),
            state,
            limits: self.settings.server.request_limits(),
            admin: AdminOptions {
                token: self.settings.admin.token.clone(),
                config_file: None,
                warmer: warmer.clone(),
                running: None,
            },
            housekeeping: Arc::new(Once::new()),
            warmer,
        })
    }
}

/// Cross-node invalidation: the Redis pub/sub channel, when L2 is on.
#[cfg(feature = "redis")]
type MaybeBus = Option<Bus>;
#[cfg(not(feature = "redis"))]
type MaybeBus = Option<std::convert::Infallible>;

/// Builds the tiers the settings enable. A tier that cannot start is left out with one log
/// line; the cache serves without it. (`Settings::validate` refused a tier this build lacks.)
fn build_store(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
) -> Result<(TieredStore, MaybeBus), Error> {
    let l1 = MemoryTier::new(settings.tiers.l1.max_bytes, metrics.clone());
    let mut store = TieredStore::new(l1, clock.clone(), metrics.clone());
    let bus: MaybeBus = None;
    let (l2, l3) = (&settings.tiers.l2, &settings.tiers.l3);
    if !l2.enabled && !l3.enabled {
        return Ok((store, bus));
    }
    let rt = StoreRuntime::new(2).map_err(Error::Runtime)?;
    #[cfg_attr(
        not(any(feature = "redis", feature = "duckdb")),
        allow(unused_variables)
    )]
    let handle = rt.handle();
    store = store.with_runtime(rt);
    #[cfg(feature = "redis")]
    let mut bus = bus;
    #[cfg(feature = "redis")]
    if l2.enabled {
        let opts = l2.options();
        match RedisTier::new(&opts, metrics.clone(), &handle) {
            Ok(tier) => {
                let tier = Arc::new(tier);
                // Logged on every change of reachability: never with a password.
                let shown: Vec<String> = opts
                    .urls
                    .iter()
                    .map(|u| crate::config::redact_url(u).unwrap_or_else(|| u.clone()))
                    .collect();
                tier.watch(REDIS_WATCH_INTERVAL, shown.join(","), &handle);
                bus = Some(Bus::new(tier.clone(), &l2.key_prefix, handle.clone()));
                store = store.with_tier(tier, Duration::from_secs(l2.max_ttl_seconds));
            }
            Err(e) => {
                tracing::error!(tier = "l2", error = %e, "L2 disabled");
                store = store.with_failed_tier(TierName::L2, e.to_string());
            }
        }
    }
    #[cfg(feature = "duckdb")]
    if l3.enabled {
        match DuckTier::open(&l3.options(), clock, metrics, &handle) {
            Ok(tier) => {
                tracing::info!(tier = "l3", path = %l3.path, "DuckDB file open");
                store = store.with_tier(Arc::new(tier), Duration::from_secs(l3.max_ttl_seconds));
            }
            Err(e) => {
                tracing::error!(tier = "l3", error = %e, "L3 disabled; tierd keeps serving from the other tiers");
                store = store.with_failed_tier(TierName::L3, e.to_string());
            }
        }
    }
    Ok((store, bus))
}

/// Builds the shared cache state from settings, and subscribes it to the other nodes'
/// invalidations when L2 Redis is configured.
fn build_state(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Arc<CacheState>, Error> {
    let metrics = Arc::new(Metrics::with_recording(settings.metrics.enabled));
    let rules = RuleSet::compile(&settings.rules, &metrics).map_err(Error::Rule)?;
    let (store, bus) = build_store(settings, clock.clone(), metrics.clone())?;
    let limits = settings
        .rate_limit
        .limits(clock.clone(), metrics.clone())
        .map_err(|e| Error::Config(ConfigError(e)))?;
    #[cfg_attr(not(any(feature = "redis", feature = "duckdb")), allow(unused_mut))]
    let mut state =
        CacheState::new(store, clock, settings.cache_policy(), metrics, rules).with_limits(limits);
    #[cfg(feature = "redis")]
    if let Some(bus) = bus {
        state = state.with_bus(bus);
    }
    #[cfg(not(feature = "redis"))]
    let _ = bus;
    #[cfg(feature = "duckdb")]
    if let Some(opts) = settings.journal_options() {
        let journal = crate::journal::Journal::open(
            opts,
            state.clock.clone(),
            state.metrics.journal.clone(),
        )?;
        state = state.with_journal(journal);
    }
    let state = Arc::new(state);
    #[cfg(feature = "redis")]
    if let Some(bus) = &state.bus {
        let l2 = settings.tiers.l2.options();
        bus.subscribe(
            l2.connect_timeout.max(Duration::from_millis(500)),
            Arc::downgrade(&state),
        );
    }
    Ok(state)
}

/// Drops full rate-limit buckets every `cleanup_interval` (off the async threads: a sweep of a
/// large client table takes milliseconds) until the state is gone. Runs on the runtime it is
/// called from; outside one it does nothing (rate limits still hold, the table is not swept).
pub(crate) fn spawn_limits_housekeeping(state: &Arc<CacheState>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("rate-limit housekeeping not started: no tokio runtime");
        return;
    };
    let weak = Arc::downgrade(state);
    let every = state.limits.cleanup_interval();
    rt.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(st) = weak.upgrade() else { break };
            let swept = tokio::task::spawn_blocking(move || {
                let rules = st.rules.load_full();
                st.limits.cleanup(&rules);
            });
            if swept.await.is_err() {
                tracing::error!("rate-limit cleanup panicked");
            }
        }
    });
}
