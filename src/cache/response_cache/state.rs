//! The cache's shared state and tunables, and invalidation.

use super::*;

/// Marks a response that tierd generated because the origin failed (set by the upstream proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamFailure(pub OriginError);

/// What happens to the body of a GET or HEAD (a "fat GET").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GetWithBody {
    /// The body is not forwarded (as Varnish does): a response is stored and shared only when
    /// no client's body can have shaped it.
    #[default]
    Strip,
    /// The request goes to the origin with its body, uncached (`fwd=bypass;
    /// detail=request_body`).
    Pass,
}

/// The cache's tunables.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// When false every request passes through untouched (headers middleware still applies).
    pub enabled: bool,
    /// Responses with larger bodies stream through without being stored.
    pub max_body_bytes: usize,
    /// How long a request waits on another request's fetch of its key before serving a stale
    /// copy instead (when it has one it may serve). It never fetches the key itself while
    /// that fetch runs.
    pub coalesce_timeout: Duration,
    /// How long a request waits on another request's fetch in all; then a 504. The gateway sets
    /// it from the upstream timeouts, which bound that fetch.
    pub fetch_timeout: Duration,
    pub store: StoreOptions,
    /// How long past its stale windows an entry with validators is kept for revalidation.
    pub keep_stale: Duration,
    /// How long past its expiry an entry is served when the origin cannot be reached (refused,
    /// reset, closed without a response, timed out), unless its own `stale-if-error` or its
    /// directives (`must-revalidate`, `proxy-revalidate`, `s-maxage`, `no-cache`) say otherwise.
    pub stale_on_error: Duration,
    /// Stored bodies compressed once (`[compression]`); `None`: stored as they came.
    pub compression: Option<Arc<crate::cache::compress::Compression>>,
    /// Variants kept per URI when the origin sends `Vary`.
    pub max_variants: usize,
    /// Most bytes of request header values a variant may be selected by (`Vary`); a response
    /// varying on more (on `Cookie`, say) is passed on uncached.
    pub max_vary_bytes: usize,
    /// The body of a GET or HEAD.
    pub get_with_body: GetWithBody,
    /// Request headers removed before the origin (or the application) sees them.
    pub hygiene: Hygiene,
}

impl CachePolicy {
    /// How long storage keeps entries past their freshness.
    pub fn retention(&self) -> Retention {
        Retention {
            keep_stale: self.keep_stale,
            stale_on_error: self.stale_on_error,
        }
    }
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            enabled: true,
            max_body_bytes: 8 * 1024 * 1024,
            coalesce_timeout: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(30),
            store: StoreOptions::default(),
            keep_stale: Duration::from_secs(3600),
            // `cache.stale_on_error_seconds`' default (the config's DEFAULT_STALE_ON_ERROR_SECONDS).
            stale_on_error: Duration::from_secs(60),
            compression: None,
            max_variants: 16,
            max_vary_bytes: 4096,
            get_with_body: GetWithBody::Strip,
            hygiene: Hygiene::default(),
        }
    }
}

/// Shared state of the cache: storage, in-flight fetches, clock, policy, rules and metrics.
pub struct CacheState {
    pub store: TieredStore,
    pub flights: Flights,
    pub clock: Arc<dyn Clock>,
    pub policy: CachePolicy,
    pub metrics: Arc<Metrics>,
    /// The rules in force; swapped whole on reload (a request keeps the set it started with).
    pub rules: ArcSwap<RuleSet>,
    /// Cross-node invalidation, when L2 Redis is configured.
    #[cfg(feature = "redis")]
    pub bus: Option<Bus>,
    /// Client, rule and origin quotas.
    pub limits: Arc<Limits>,
    /// The access journal, when one records requests (the observe layer writes to it).
    pub journal: Option<Arc<crate::journal::Journal>>,
    /// The warmer, once one is attached ([`CacheState::set_warm_hook`]).
    pub warm: std::sync::OnceLock<Arc<dyn super::super::WarmHook>>,
}

impl crate::ratelimit::QuotaSource for CacheState {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn rules(&self) -> arc_swap::Guard<Arc<RuleSet>> {
        self.rules.load()
    }

    fn exempt(&self, req: &ServiceRequest) -> bool {
        self.warm_fetch(req.headers()).is_some()
    }
}

/// Who asked for a purge; the `source` label of `tierd_purges_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum PurgeSource {
    /// `POST /_tierd/purge`.
    Admin,
    /// A rule's `invalidate` after a successful mutation.
    Rule,
    /// RFC 9111 §4.4: an unsafe method's target URI, `Location`, `Content-Location`.
    Method,
    /// The value cache's `invalidate*` calls.
    Value,
}

impl PurgeSource {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl CacheState {
    /// A state with no cross-node bus.
    pub fn new(
        store: TieredStore,
        clock: Arc<dyn Clock>,
        policy: CachePolicy,
        metrics: Arc<Metrics>,
        rules: RuleSet,
    ) -> Self {
        metrics.rules.loaded.set(rules.len() as i64);
        let limits = Arc::new(Limits::disabled(clock.clone(), metrics.rate_limit.clone()));
        let mut rules = rules;
        limits.attach(&mut rules, None);
        CacheState {
            store,
            flights: Flights::new(),
            clock,
            policy,
            metrics,
            rules: ArcSwap::from_pointee(rules),
            #[cfg(feature = "redis")]
            bus: None,
            limits,
            journal: None,
            warm: std::sync::OnceLock::new(),
        }
    }

    /// Attaches the warmer (once; a second call is ignored and returns false).
    pub fn set_warm_hook(&self, hook: Arc<dyn super::super::WarmHook>) -> bool {
        self.warm.set(hook).is_ok()
    }

    /// The warm fetch `req` is, when it carries this node's warmer's marker (read-only: the
    /// cache removes it).
    pub fn warm_fetch(&self, headers: &HeaderMap) -> Option<super::super::WarmFetch> {
        match (self.warm.get(), headers.get(super::super::WARM_HEADER)) {
            (Some(h), Some(v)) => {
                let (secret, refresh) = super::super::parse_marker(v.as_bytes());
                h.is_own(secret)
                    .then_some(super::super::WarmFetch { refresh })
            }
            _ => None,
        }
    }

    /// Writes the journal's queued rows and stops it, then drains the lower tiers' write
    /// queues (shutdown).
    pub async fn close(&self) {
        if let Some(j) = &self.journal {
            j.close().await;
        }
        self.store.close().await;
    }

    /// Records every answered request in `journal`.
    pub fn with_journal(mut self, journal: Arc<crate::journal::Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Enforces `limits` (and gives the rules' quotas their buckets).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        let mut rules = RuleSet::clone(&self.rules.load());
        limits.attach(&mut rules, None);
        self.rules.store(Arc::new(rules));
        self.limits = Arc::new(limits);
        self
    }

    /// Publishes this node's purges on `bus`.
    #[cfg(feature = "redis")]
    pub fn with_bus(mut self, bus: Bus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Replaces the rules in force (requests already running keep theirs).
    pub fn set_rules(&self, rules: RuleSet) {
        self.metrics.rules.loaded.set(rules.len() as i64);
        let mut rules = rules;
        self.limits.attach(&mut rules, Some(&self.rules.load()));
        self.rules.store(Arc::new(rules));
    }

    /// Purges what `selector` selects from every tier of this node, then tells the other nodes.
    /// Returns the number removed per tier (an error for a tier that failed).
    pub async fn invalidate(
        &self,
        selector: &Selector,
        source: PurgeSource,
    ) -> Vec<(TierName, Result<u64, crate::store::TierError>)> {
        self.metrics
            .invalidation
            .purges
            .with_label_values(&[selector.kind(), source.as_str()])
            .inc();
        let out = self.store.purge(selector).await;
        if let Some(h) = self.warm.get() {
            h.purged();
        }
        #[cfg(feature = "redis")]
        if let Some(bus) = &self.bus {
            let direction = if bus.publish(selector).await {
                "published"
            } else {
                "publish_failed"
            };
            self.metrics
                .invalidation
                .invalidation_messages
                .with_label_values(&[direction])
                .inc();
        }
        out
    }

    /// Stores `entry` in its URI's slot, next to the variants it does not replace.
    pub(super) fn store_entry(&self, key: &str, tiers: TierSet, entry: Arc<CachedResponse>) {
        let now = self.clock.now();
        let (max, keep) = (self.policy.max_variants, self.policy.retention());
        self.store.update(key, tiers, |current| {
            Some(Arc::new(match current {
                Some(slot) => slot.with(entry, max, now, keep),
                None => Slot::single(entry, now, keep),
            }))
        });
    }

    /// Removes the variant `request` selects from the slot under `key`.
    pub(super) fn remove_selected(&self, key: &str, tiers: TierSet, request: &HeaderMap) {
        let now = self.clock.now();
        let keep = self.policy.retention();
        self.store.update(key, tiers, |current| {
            current.and_then(|slot| slot.without_selected(request, now, keep).map(Arc::new))
        });
    }
}
