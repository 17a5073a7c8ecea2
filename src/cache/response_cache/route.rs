//! What the rules decided for one request.

use super::*;

/// What the rules decided for one request, owned so it outlives the request's borrow.
#[derive(Clone)]
pub(super) struct Route {
    pub(super) rules: Arc<RuleSet>,
    pub(super) index: Option<usize>,
    pub(super) counters: Arc<RouteCounters>,
    pub(super) tiers: TierSet,
    /// The rule's tags with path parameters filled in.
    pub(super) tags: Vec<String>,
    /// The request carries a per-user scope value: stored privately for that user.
    pub(super) private: bool,
    /// A background refresh: no client is waiting, so nothing is noted for request metrics.
    pub(super) background: bool,
    /// The cache key as the journal takes it, when a journal records requests.
    pub(super) key: crate::journal::JournalUrl,
    /// The freshness lifetime of the entry served or stored.
    pub(super) ttl: Option<Duration>,
    /// Sent to the origin without a lookup.
    pub(super) bypassed: bool,
    /// The request is one of the warmer's fetches.
    pub(super) warm_fetch: bool,
    /// The entry served was stored by a warm fetch.
    pub(super) warmed: bool,
}

impl Route {
    pub(super) fn resolve(rules: Arc<RuleSet>, method: &Method, path: &str) -> Route {
        let index = rules.find(method, path).map(|m| m.index());
        Route::at(rules, index)
    }

    /// The route of the rule at `index` (`None`: no rule matched).
    pub(super) fn at(rules: Arc<RuleSet>, index: Option<usize>) -> Route {
        let counters = rules.counters(index).clone();
        let tiers = index
            .and_then(|i| rules.rule(i).tiers.as_deref())
            .map(TierSet::of)
            .unwrap_or(TierSet::ALL);
        Route {
            rules,
            index,
            counters,
            tiers,
            tags: Vec::new(),
            private: false,
            background: false,
            key: crate::journal::JournalUrl::NotKeyed,
            ttl: None,
            bypassed: false,
            warm_fetch: false,
            warmed: false,
        }
    }

    /// Fills in the rule's tags for `path` (only a fetch that may store needs them).
    pub(super) fn with_tags(mut self, path: &str) -> Route {
        if let Some(tags) = self.rule().map(|r| r.tags_for(path)) {
            self.tags = tags;
        }
        self
    }

    pub(super) fn rule(&self) -> Option<&Rule> {
        self.index.map(|i| self.rules.rule(i))
    }

    /// Adds a handler's tags ([`CacheDirective`]); a tag that could not be purged by (empty,
    /// too long, control characters) is left out, with a rate-limited log line.
    pub(super) fn add_tags(&mut self, tags: &[String]) {
        for tag in tags {
            if policy::valid_tag(tag) {
                if !self.tags.contains(tag) {
                    self.tags.push(tag.clone());
                }
            } else {
                static INVALID_TAG: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                if let Some(occurrences) = INVALID_TAG.check() {
                    tracing::warn!(
                        occurrences,
                        "a CacheDirective tag is not a valid tag (empty, over 1024 bytes, or not visible ASCII) and was left out"
                    );
                }
            }
        }
    }

    /// Notes what the cache did with `req`, for the [`Observe`](crate::observe::Observe)
    /// middleware that records the request once its final status is known.
    #[inline]
    pub(super) fn note(&self, req: &HttpRequest, outcome: Outcome, tier: Option<TierName>) {
        if !self.background {
            req.extensions_mut().insert(Served {
                outcome,
                tier,
                counters: self.counters.clone(),
                key: self.key.clone(),
                ttl: self.ttl,
                private: self.private,
                bypassed: self.bypassed,
                warm_fetch: self.warm_fetch,
                warmed: self.warmed,
            });
        }
    }

    /// As [`note`](Self::note), for an answer from `entry` (served or just stored).
    #[inline]
    pub(super) fn note_entry(
        &mut self,
        req: &HttpRequest,
        outcome: Outcome,
        tier: Option<TierName>,
        entry: &CachedResponse,
    ) {
        self.ttl = Some(Duration::from_secs(entry.lifetime));
        self.note(req, outcome, tier);
    }

    /// The store options for a response with `status`: the rule's lifetime and stale windows,
    /// private storage for a per-user request. With `body` (a stored response being freshened),
    /// a body-dependent TTL is resolved at once.
    pub(super) fn store_options(
        &self,
        base: StoreOptions,
        status: u16,
        body: Option<&[u8]>,
    ) -> StoreOptions {
        let mut opts = base;
        opts.private = self.private;
        if let Some(rule) = self.rule() {
            opts.lifetime = rule.freshness(status);
            if let (LifetimeOverride::FromBody, Some(body)) = (opts.lifetime, body) {
                opts.lifetime = match rule
                    .ttl_from_body(body)
                    .or_else(|| rule.fallback_ttl(status))
                {
                    Some(t) => LifetimeOverride::Fixed(t),
                    None => LifetimeOverride::Origin,
                };
            }
            opts.stale_while_revalidate = rule.stale_while_revalidate;
            opts.stale_if_error = rule.stale_if_error;
        }
        opts
    }
}

/// Marks a per-user response private for downstream caches: `private` added, `public` and
/// `s-maxage` removed (a shared cache downstream must not hand it to someone else).
pub(super) fn make_private(h: &mut HeaderMap) {
    let mut directives: Vec<String> = vec!["private".to_owned()];
    for v in h.get_all(header::CACHE_CONTROL) {
        for d in String::from_utf8_lossy(v.as_bytes()).split(',') {
            let d = d.trim();
            let name = d
                .split('=')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if !d.is_empty() && !matches!(name.as_str(), "public" | "private" | "s-maxage") {
                directives.push(d.to_owned());
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&directives.join(", ")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    for name in ["surrogate-control", "cdn-cache-control"] {
        h.remove(name);
    }
}
