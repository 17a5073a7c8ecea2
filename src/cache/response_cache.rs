//! The `ResponseCache` middleware: looks requests up in storage, serves fresh or stale-while-
//! revalidate hits, fills misses through one coalesced origin fetch per key, revalidates stale
//! entries, serves stale on error, and invalidates on unsafe methods.
//!
//! The fetch that fills a key runs in its own task: a client that disconnects does not cancel it
//! for the requests waiting on it, and a background refresh outlives the request that started it.

use std::future::{ready, Ready};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use actix_web::body::{BodySize, BodyStream, BoxBody, MessageBody};
use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::oneshot;
use tracing::Instrument;

#[cfg(feature = "redis")]
use super::bus::Bus;
use super::directive::CacheDirective;
use super::entry::{CachedResponse, Slot};
use super::key;
use super::single_flight::{self, FlightGuard, FlightOutcome, Flights, Join};
use crate::clock::Clock;
use crate::http::cache_status::{CacheStatus, Fwd};
use crate::http::headers::has_body;
use crate::http::hygiene::Hygiene;
use crate::http::response::opaque;
use crate::http::storable::{
    self, LifetimeOverride, NotStorable, RequestFacts, Reuse, StoreOptions,
};
use crate::log_limit::{LogLimit, DEFAULT_LOG_INTERVAL};
use crate::metrics::{Lookup, Metrics, OriginError, Outcome, RouteCounters};
use crate::observe::Served;
use crate::policy::{self, RouteMatch, Rule, RuleSet, Selector};
use crate::ratelimit::{too_many_requests, Denial, KeyKind, Limits, QuotaKind};
use crate::store::{TierName, TierSet, TieredStore};
use arc_swap::ArcSwap;

/// The `Cache-Status` header name (RFC 9211).
pub fn cache_status_header() -> HeaderName {
    HeaderName::from_static("cache-status")
}

/// Marks a response that tierd generated because the origin failed (set by the upstream proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamFailure(pub OriginError);

/// What happens to the body of a GET or HEAD (a "fat GET").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
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

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            enabled: true,
            max_body_bytes: 8 * 1024 * 1024,
            coalesce_timeout: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(30),
            store: StoreOptions::default(),
            keep_stale: Duration::from_secs(3600),
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
}

/// Who asked for a purge; the `source` label of `tierd_purges_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        match self {
            PurgeSource::Admin => "admin",
            PurgeSource::Rule => "rule",
            PurgeSource::Method => "method",
            PurgeSource::Value => "value",
        }
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
        metrics.rules_loaded.set(rules.len() as i64);
        let limits = Arc::new(Limits::disabled(clock.clone(), metrics.clone()));
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
        }
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
        self.metrics.rules_loaded.set(rules.len() as i64);
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
            .purges
            .with_label_values(&[selector.kind(), source.as_str()])
            .inc();
        let out = self.store.purge(selector).await;
        #[cfg(feature = "redis")]
        if let Some(bus) = &self.bus {
            let direction = if bus.publish(selector).await {
                "published"
            } else {
                "publish_failed"
            };
            self.metrics
                .invalidation_messages
                .with_label_values(&[direction])
                .inc();
        }
        out
    }

    /// Stores `entry` in its URI's slot, next to the variants it does not replace.
    fn store_entry(&self, key: &str, tiers: TierSet, entry: Arc<CachedResponse>) {
        let now = self.clock.now();
        let (max, keep) = (self.policy.max_variants, self.policy.keep_stale);
        self.store.update(key, tiers, |current| {
            Some(Arc::new(match current {
                Some(slot) => slot.with(entry, max, now, keep),
                None => Slot::single(entry, now, keep),
            }))
        });
    }

    /// Removes the variant `request` selects from the slot under `key`.
    fn remove_selected(&self, key: &str, tiers: TierSet, request: &HeaderMap) {
        let now = self.clock.now();
        let keep = self.policy.keep_stale;
        self.store.update(key, tiers, |current| {
            current.and_then(|slot| slot.without_selected(request, now, keep).map(Arc::new))
        });
    }
}

/// What the rules decided for one request, owned so it outlives the request's borrow.
#[derive(Clone)]
struct Route {
    rules: Arc<RuleSet>,
    index: Option<usize>,
    counters: Arc<RouteCounters>,
    tiers: TierSet,
    /// The rule's tags with path parameters filled in.
    tags: Vec<String>,
    /// The request carries a per-user scope value: stored privately for that user.
    private: bool,
    /// A background refresh: no client is waiting, so nothing is noted for request metrics.
    background: bool,
}

impl Route {
    fn resolve(rules: Arc<RuleSet>, method: &Method, path: &str) -> Route {
        let index = rules.find(method, path).map(|m| m.index());
        Route::at(rules, index)
    }

    /// The route of the rule at `index` (`None`: no rule matched).
    fn at(rules: Arc<RuleSet>, index: Option<usize>) -> Route {
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
        }
    }

    /// Fills in the rule's tags for `path` (only a fetch that may store needs them).
    fn with_tags(mut self, path: &str) -> Route {
        if let Some(tags) = self.rule().map(|r| r.tags_for(path)) {
            self.tags = tags;
        }
        self
    }

    fn rule(&self) -> Option<&Rule> {
        self.index.map(|i| self.rules.rule(i))
    }

    /// Adds a handler's tags ([`CacheDirective`]); a tag that could not be purged by (empty,
    /// too long, control characters) is left out, with a rate-limited log line.
    fn add_tags(&mut self, tags: &[String]) {
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
    fn note(&self, req: &HttpRequest, outcome: Outcome, tier: Option<TierName>) {
        if !self.background {
            req.extensions_mut().insert(Served {
                outcome,
                tier,
                counters: self.counters.clone(),
            });
        }
    }

    /// The store options for a response with `status`: the rule's lifetime and stale windows,
    /// private storage for a per-user request. With `body` (a stored response being freshened),
    /// a body-dependent TTL is resolved at once.
    fn store_options(&self, base: StoreOptions, status: u16, body: Option<&[u8]>) -> StoreOptions {
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
fn make_private(h: &mut HeaderMap) {
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

/// The response for an entry that was built but not stored.
fn respond_uncached(entry: &CachedResponse, status: CacheStatus) -> HttpResponse {
    respond(entry, entry.initial_age, status)
}

/// The middleware. Wrap it inside [`CacheHeaders`](super::CacheHeaders):
///
/// ```no_run
/// # use std::sync::Arc;
/// # use actix_web::{web, App, HttpResponse};
/// # fn state() -> Arc<tierd::cache::CacheState> { unimplemented!() }
/// let app = App::new()
///     .wrap(tierd::cache::ResponseCache::new(state()))
///     .wrap(tierd::cache::CacheHeaders::new(state().clock.clone()))
///     .route("/", web::get().to(|| async { HttpResponse::Ok().body("hi") }));
/// ```
#[derive(Clone)]
pub struct ResponseCache {
    state: Arc<CacheState>,
}

impl ResponseCache {
    pub fn new(state: Arc<CacheState>) -> Self {
        ResponseCache { state }
    }
}

impl<S, B> Transform<S, ServiceRequest> for ResponseCache
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Transform = ResponseCacheService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ResponseCacheService {
            inner: Rc::new(service),
            state: self.state.clone(),
        }))
    }
}

pub struct ResponseCacheService<S> {
    inner: Rc<S>,
    state: Arc<CacheState>,
}

impl<S, B> Service<ServiceRequest> for ResponseCacheService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let ctx = Ctx {
            state: self.state.clone(),
            inner: self.inner.clone(),
        };
        Box::pin(ctx.handle(req))
    }
}

struct Ctx<S> {
    state: Arc<CacheState>,
    inner: Rc<S>,
}

impl<S> Clone for Ctx<S> {
    fn clone(&self) -> Self {
        Ctx {
            state: self.state.clone(),
            inner: self.inner.clone(),
        }
    }
}

fn status_value(s: CacheStatus) -> HeaderValue {
    HeaderValue::try_from(s.render()).unwrap_or_else(|_| HeaderValue::from_static("tierd"))
}

/// Builds the response for a stored entry.
fn respond(entry: &CachedResponse, age: u64, status: CacheStatus) -> HttpResponse {
    let mut res = HttpResponse::with_body(entry.status, entry.body.clone()).map_into_boxed_body();
    let h = res.headers_mut();
    for (n, v) in entry.headers.iter() {
        h.append(n.clone(), v.clone());
    }
    h.insert(header::AGE, age_value(age));
    h.append(cache_status_header(), status_value(status));
    res
}

/// `Age` values up to an hour, made once: `HeaderValue::from(u64)` allocates, and every hit
/// sends one.
fn age_value(age: u64) -> HeaderValue {
    const PREBUILT: u64 = 3600;
    static AGES: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..=PREBUILT).map(HeaderValue::from).collect());
    match usize::try_from(age).ok().and_then(|i| AGES.get(i)) {
        Some(v) => v.clone(),
        None => HeaderValue::from(age),
    }
}

fn with_status(mut res: HttpResponse, status: CacheStatus) -> HttpResponse {
    append_status(res.headers_mut(), status);
    res
}

fn append_status(h: &mut HeaderMap, status: CacheStatus) {
    h.append(cache_status_header(), status_value(status));
}

/// An opaque 500 as an actix error, for when no request is left to answer with (the inner
/// service took it and panicked).
fn internal_error() -> Error {
    actix_web::error::InternalError::from_response(
        "internal error",
        opaque(StatusCode::INTERNAL_SERVER_ERROR),
    )
    .into()
}

/// Calls the inner service (the upstream proxy, or an application's routes). A panic in it, a
/// handler's bug, becomes an opaque 500 and an ERROR line instead of a dropped connection, and
/// never leaves the requests coalesced on it waiting.
async fn call_inner<S, B>(inner: &S, req: ServiceRequest) -> Result<ServiceResponse<BoxBody>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    use futures_util::FutureExt;
    let called = std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req)));
    let res = match called {
        Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
        Err(p) => Err(p),
    };
    match res {
        Ok(r) => r.map(ServiceResponse::map_into_boxed_body),
        Err(_) => {
            tracing::error!("the inner service panicked; answered 500");
            Err(internal_error())
        }
    }
}

/// Held in the extensions of a stale-while-revalidate response: dropped once actix has taken
/// the response (and with it the response's copy of the request), which lets the background
/// refresh start. The inner service (an application's router) needs the request to itself.
struct RefreshGate(#[allow(dead_code)] oneshot::Sender<()>);

/// A GET or HEAD goes to the origin without the client's body (and without the headers that
/// announce one): its response is shared, so no client's body may shape it. The body is left
/// unread; actix closes the connection after the response when one was sent.
fn strip_body(req: &mut ServiceRequest) {
    if has_body(req.headers()) {
        let h = req.headers_mut();
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::TRANSFER_ENCODING);
    }
    req.set_payload(Payload::None);
}

fn is_unsafe(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Request headers that make the origin answer conditionally; tierd removes the client's and
/// answers the client's condition itself: a miss is forwarded without the client's
/// conditionals (RFC 9111 §4.3.2), so what is stored is a full response.
const CONDITIONALS: [HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// What a lookup found.
struct Found {
    entry: Arc<CachedResponse>,
    tier: TierName,
}

impl<S, B> Ctx<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    async fn handle(self, mut req: ServiceRequest) -> Result<ServiceResponse<BoxBody>, Error> {
        let st = &self.state;
        let method = req.method().clone();
        let is_head = method == Method::HEAD;
        let matched = req.extensions_mut().remove::<RouteMatch>();
        let mut route = match matched {
            Some(m) => Route::at(m.rules, m.index),
            None => Route::resolve(st.rules.load_full(), &method, req.path()),
        };
        {
            let keyed = route.rule().map_or(&[][..], |r| &r.key_headers[..]);
            let peer = req.peer_addr().map(|a| a.ip());
            let metrics = &st.metrics;
            st.policy
                .hygiene
                .apply(req.headers_mut(), peer, keyed, |_, why| {
                    metrics.headers_stripped(why)
                });
        }
        if !st.policy.enabled {
            if let Err(denied) = st
                .limits
                .check_origin(req.request(), route.counters.route())
            {
                return Ok(self.refuse(req, &route, denied));
            }
            route.note(req.request(), Outcome::Pass, None);
            return call_inner(&*self.inner, req).await;
        }
        if method != Method::GET && !is_head {
            return self.forward_other(req, route).await;
        }
        if st.policy.get_with_body == GetWithBody::Pass && has_body(req.headers()) {
            return self.bypass(req, route, Some("request_body")).await;
        }
        if req.headers().contains_key(header::RANGE) {
            // Partial content is not stored; range requests go to the origin untouched.
            return self.bypass(req, route, None).await;
        }
        let mut facts = RequestFacts::from_headers(req.headers());
        let mut refresh = false;
        let mut private = false;
        let key = match route.rule() {
            Some(rule) => {
                if let Some(why) = rule.bypass(req.query_string(), req.headers()) {
                    return self.bypass(req, route, Some(why.as_str())).await;
                }
                if !rule.respect_client_no_cache {
                    facts.cc.no_cache = None;
                    facts.cc.max_age = None;
                    facts.pragma_no_cache = false;
                }
                refresh = rule.refresh(req.query_string());
                private = rule.user_value(req.headers()).is_some();
                let host = key::request_host(req.request());
                policy::compose_key(&host, req.path(), req.query_string(), rule, req.headers())
            }
            None => key::for_request(req.request()),
        };
        route.private = private;
        if route.private {
            // The origin sees the credential; the cache never shares the answer.
            facts.has_authorization = false;
        }
        let now = st.clock.now();
        let mut slot_seen = false;
        let mut found = None;
        if let Some(slot) = st.store.get_l1(&key) {
            slot_seen = true;
            if let Some(e) = slot.select(req.headers()) {
                found = Some(Found {
                    entry: e.clone(),
                    tier: TierName::L1,
                });
            }
        }
        if found.is_none() {
            st.metrics.tier(TierName::L1).lookup(Lookup::Miss);
            if st.store.has_lower() {
                if let Some((slot, tier)) = st.store.get_lower(&key, route.tiers).await {
                    slot_seen = true;
                    match slot.select(req.headers()) {
                        Some(e) => {
                            found = Some(Found {
                                entry: e.clone(),
                                tier,
                            })
                        }
                        None => st.metrics.tier(tier).lookup(Lookup::Miss),
                    }
                }
            }
        }
        if let Some(f) = &found {
            let fresh = f.entry.age(now) < f.entry.lifetime;
            st.metrics
                .tier(f.tier)
                .lookup(if fresh { Lookup::Hit } else { Lookup::Stale });
        }

        if let Some(Found { entry, tier }) = &found {
            let age = entry.age(now);
            let reuse = if refresh {
                Reuse::Forward
            } else {
                storable::reuse(&facts, entry.facts(age))
            };
            match reuse {
                Reuse::Fresh => {
                    route.note(req.request(), Outcome::Hit, Some(*tier));
                    let cs = CacheStatus::hit(storable_ttl(entry, age), tier.as_str());
                    return Ok(req.into_response(respond(entry, age, cs)));
                }
                Reuse::StaleWhileRevalidate => {
                    route.note(req.request(), Outcome::StaleWhileRevalidate, Some(*tier));
                    let cs = CacheStatus::hit(storable_ttl(entry, age), tier.as_str());
                    let mut res = respond(entry, age, cs);
                    if is_head {
                        return Ok(req.into_response(res));
                    }
                    upstream_conditionals(req.headers_mut(), Some(entry));
                    let http_req = req.request().clone();
                    let gate = self.clone().refresh_in_background(
                        req,
                        key,
                        entry.clone(),
                        *tier,
                        facts,
                        route,
                    );
                    if let Some(gate) = gate {
                        res.extensions_mut().insert(gate);
                    }
                    return Ok(ServiceResponse::new(http_req, res));
                }
                Reuse::Forward => {}
            }
        }
        if facts.cc.only_if_cached {
            // RFC 9111 §5.2.1.7: nothing usable in storage.
            route.note(req.request(), Outcome::Error, None);
            return Ok(req.into_response(opaque(StatusCode::GATEWAY_TIMEOUT)));
        }
        let fwd = match &found {
            Some(_) if refresh || facts.requires_validation() => Fwd::Request,
            Some(_) => Fwd::Stale,
            None if slot_seen => Fwd::VaryMiss,
            None => Fwd::UriMiss,
        };
        let stale = found.map(|f| (f.entry, f.tier));
        if is_head {
            return self.forward_head(req, key, stale, facts, fwd, route).await;
        }
        self.fetch(req, key, stale, facts, fwd, route).await
    }

    /// The 429 for a request the origin quota refused.
    fn refuse(
        &self,
        req: ServiceRequest,
        route: &Route,
        (denial, kind): (Denial, KeyKind),
    ) -> ServiceResponse<BoxBody> {
        let limits = &self.state.limits;
        limits.refused(route.counters.route(), QuotaKind::Origin, kind, &denial);
        route.note(req.request(), Outcome::RateLimited, None);
        req.into_response(too_many_requests(&denial))
    }

    /// The origin quota is spent: a merely stale entry is served (the origin is as good as
    /// unreachable, RFC 9111 §4.2.4) unless it forbids stale serving; otherwise a 429.
    fn origin_limited(
        &self,
        req: ServiceRequest,
        route: &Route,
        stale: Option<&(Arc<CachedResponse>, TierName)>,
        fwd: Fwd,
        denied: (Denial, KeyKind),
    ) -> ServiceResponse<BoxBody> {
        match stale {
            Some((entry, tier)) if fwd == Fwd::Stale && !entry.no_stale => {
                route.note(req.request(), Outcome::StaleOriginLimited, Some(*tier));
                let age = entry.age(self.state.clock.now());
                let cs = CacheStatus {
                    hit: true,
                    ttl: Some(storable_ttl(entry, age)),
                    detail: Some("origin-limited"),
                    ..Default::default()
                };
                req.into_response(respond(entry, age, cs))
            }
            _ => self.refuse(req, route, denied),
        }
    }

    /// Sends the request to the origin without looking in or storing to the cache.
    async fn bypass(
        self,
        req: ServiceRequest,
        route: Route,
        why: Option<&'static str>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        if let Err(denied) = self
            .state
            .limits
            .check_origin(req.request(), route.counters.route())
        {
            return Ok(self.refuse(req, &route, denied));
        }
        route.note(req.request(), Outcome::Pass, None);
        let mut res = call_inner(&*self.inner, req).await?;
        let mut cs = forwarded(Fwd::Bypass, res.response());
        cs.detail = cs.detail.or(why);
        append_status(res.headers_mut(), cs);
        Ok(res)
    }

    /// Fills or revalidates `key` through one coalesced fetch. The first request leads it (in a
    /// task of its own); later ones wait for its outcome and never fetch the key themselves
    /// while it runs, however slow the origin: past `coalesce_timeout` a waiter serves a stale
    /// copy it may serve, otherwise it waits up to `fetch_timeout`, then answers 504.
    async fn fetch(
        self,
        mut req: ServiceRequest,
        key: String,
        stale: Option<(Arc<CachedResponse>, TierName)>,
        facts: RequestFacts,
        fwd: Fwd,
        route: Route,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        // Must happen before the request is shared (actix panics on mutating a shared head).
        upstream_conditionals(req.headers_mut(), stale.as_ref().map(|(e, _)| &**e));
        strip_body(&mut req);
        let route = route.with_tags(req.path());
        let st = self.state.clone();
        let started = tokio::time::Instant::now();
        // Serving stale past the coalesce timeout is for a merely stale entry that permits it;
        // not when the client asked for validation, nor for `must-revalidate` and the like.
        let stale_servable = fwd == Fwd::Stale && stale.as_ref().is_some_and(|(e, _)| !e.no_stale);
        let mut counted = false;
        loop {
            let epoch = st.store.purges().epoch();
            let mut rx = match st.flights.join(&key) {
                Join::Leader(guard) => {
                    let job = Fetch {
                        ctx: self,
                        req: Some(req),
                        key,
                        stale,
                        facts,
                        fwd,
                        guard: Some(guard),
                        epoch,
                        route,
                    };
                    return job.lead().await;
                }
                Join::Waiter(rx) => rx,
            };
            if !counted {
                st.metrics.coalesced_waiters.inc();
                counted = true;
            }
            let limit = if stale_servable {
                st.policy.coalesce_timeout
            } else {
                st.policy.fetch_timeout
            };
            let waited =
                tokio::time::timeout_at(started + limit, single_flight::wait(&mut rx)).await;
            match waited {
                Ok(FlightOutcome::Stored(entry)) if entry.vary_matches(req.headers()) => {
                    route.note(req.request(), Outcome::Collapsed, None);
                    let age = entry.age(st.clock.now());
                    let cs = CacheStatus {
                        hit: true,
                        collapsed: true,
                        ..Default::default()
                    };
                    return Ok(req.into_response(respond(&entry, age, cs)));
                }
                // Another variant was stored, or the leader went away: join again, so that
                // one request leads the next fetch and the rest wait for it.
                Ok(FlightOutcome::Stored(_)) | Ok(FlightOutcome::Abandoned) => continue,
                Ok(FlightOutcome::Failed { status, detail }) => {
                    let now = st.clock.now();
                    if let Some(res) = stale
                        .as_ref()
                        .and_then(|(e, t)| stale_for_error(e, *t, status, now))
                    {
                        route.note(req.request(), Outcome::StaleIfError, stale.map(|s| s.1));
                        return Ok(req.into_response(res));
                    }
                    route.note(req.request(), Outcome::Error, None);
                    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                    let cs = CacheStatus {
                        fwd: Some(fwd),
                        collapsed: true,
                        detail: Some(detail),
                        ..Default::default()
                    };
                    return Ok(req.into_response(with_status(opaque(code), cs)));
                }
                // The response may not be shared: this request fetches its own, at once.
                Ok(FlightOutcome::Uncacheable) => {
                    if let Err(denied) = st
                        .limits
                        .check_origin(req.request(), route.counters.route())
                    {
                        return Ok(self.origin_limited(req, &route, stale.as_ref(), fwd, denied));
                    }
                    let job = Fetch {
                        ctx: self,
                        req: Some(req),
                        key,
                        stale,
                        facts,
                        fwd,
                        guard: None,
                        epoch,
                        route,
                    };
                    return job.run().await;
                }
                Err(_elapsed) => {
                    if let Some((entry, tier)) = stale.filter(|_| stale_servable) {
                        st.metrics
                            .coalesce_timeouts
                            .with_label_values(&["stale"])
                            .inc();
                        route.note(req.request(), Outcome::StaleIfError, Some(tier));
                        let age = entry.age(st.clock.now());
                        let cs = CacheStatus {
                            hit: true,
                            ttl: Some(storable_ttl(&entry, age)),
                            detail: Some("origin-slow"),
                            ..Default::default()
                        };
                        return Ok(req.into_response(respond(&entry, age, cs)));
                    }
                    static SLOW: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                    if let Some(occurrences) = SLOW.check() {
                        tracing::warn!(
                            waited_ms = started.elapsed().as_millis() as u64,
                            occurrences,
                            "origin fetch of this key still running past the fetch timeout; 504"
                        );
                    }
                    st.metrics
                        .coalesce_timeouts
                        .with_label_values(&["gateway_timeout"])
                        .inc();
                    route.note(req.request(), Outcome::Error, None);
                    let cs = CacheStatus {
                        fwd: Some(fwd),
                        collapsed: true,
                        detail: Some(OriginError::Timeout.cache_status_detail()),
                        ..Default::default()
                    };
                    let res = with_status(opaque(StatusCode::GATEWAY_TIMEOUT), cs);
                    return Ok(req.into_response(res));
                }
            }
        }
    }

    /// Starts one background refresh of `key` unless one is already running (RFC 5861 §3).
    /// The refresh calls the inner service once the client's response is taken by actix (the
    /// returned gate, put in that response, is dropped then).
    fn refresh_in_background(
        self,
        mut req: ServiceRequest,
        key: String,
        entry: Arc<CachedResponse>,
        tier: TierName,
        facts: RequestFacts,
        route: Route,
    ) -> Option<RefreshGate> {
        let Join::Leader(guard) = self.state.flights.join(&key) else {
            return None;
        };
        // Another refresh may have finished between this request's lookup and its joining the
        // (then empty) flight table: its entry is stored before its flight ends, so a stored
        // variant other than the stale one seen means there is nothing to refresh.
        if tier == TierName::L1 {
            let current = self.state.store.l1().get_now(&key);
            let selected = current.as_ref().and_then(|slot| slot.select(req.headers()));
            if !selected.is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                return None;
            }
        }
        if self
            .state
            .limits
            .check_origin(req.request(), route.counters.route())
            .is_err()
        {
            // The stale response is served already; the next request past its window retries.
            tracing::debug!("origin quota spent; background refresh skipped");
            return None;
        }
        self.state.metrics.background_refreshes.inc();
        strip_body(&mut req);
        let mut route = route;
        route.background = true;
        let epoch = self.state.store.purges().epoch();
        let route = route.with_tags(req.path());
        let job = Fetch {
            ctx: self,
            req: Some(req),
            key,
            stale: Some((entry, tier)),
            facts,
            fwd: Fwd::Stale,
            guard: Some(guard),
            epoch,
            route,
        };
        let (gate, opened) = oneshot::channel::<()>();
        actix_web::rt::spawn(crate::logging::InRequest::current(
            async move {
                let _ = opened.await;
                let _ = job.run().await;
            }
            .instrument(tracing::Span::current()),
        ));
        Some(RefreshGate(gate))
    }

    /// HEAD that storage could not answer: forwarded as HEAD, never stored; a matching response
    /// freshens a stale stored GET (RFC 9111 §4.3.5).
    async fn forward_head(
        self,
        mut req: ServiceRequest,
        key: String,
        stale: Option<(Arc<CachedResponse>, TierName)>,
        facts: RequestFacts,
        fwd: Fwd,
        route: Route,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let st = self.state.clone();
        if let Err(denied) = st
            .limits
            .check_origin(req.request(), route.counters.route())
        {
            return Ok(self.origin_limited(req, &route, stale.as_ref(), fwd, denied));
        }
        route.note(req.request(), Outcome::Pass, None);
        upstream_conditionals(req.headers_mut(), None);
        strip_body(&mut req);
        let request_time = st.clock.now();
        let res = call_inner(&*self.inner, req).await?;
        let response_time = st.clock.now();
        // Read only after the inner service is done with the request.
        let http_req = res.request().clone();
        if let Some((entry, _)) = &stale {
            if res.status() == entry.status {
                let same_validator = match (&entry.etag, res.headers().get(header::ETAG)) {
                    (Some(a), Some(b)) if entry.origin_etag => a == b,
                    _ => false,
                };
                if same_validator {
                    // The same options as a 304 freshening: the rule's lifetime and windows.
                    let opts = route.store_options(
                        st.policy.store,
                        entry.status.as_u16(),
                        Some(&entry.body),
                    );
                    if let Ok(updated) = entry.freshen(
                        res.headers(),
                        &facts,
                        http_req.headers(),
                        request_time,
                        response_time,
                        opts,
                    ) {
                        st.store_entry(&key, route.tiers, Arc::new(updated));
                    }
                } else if res.status().is_success() {
                    // The representation changed: the stored GET is outdated.
                    st.remove_selected(&key, route.tiers, http_req.headers());
                }
            }
        }
        let mut res = res;
        let cs = forwarded(fwd, res.response());
        append_status(res.headers_mut(), cs);
        Ok(res)
    }

    /// Methods other than GET/HEAD go straight to the origin. A non-error answer to an unsafe
    /// method invalidates the target URI and same-origin `Location` / `Content-Location`
    /// (RFC 9111 §4.4) with all their variants; a 2xx also applies the matching rule's
    /// `invalidate`. Every purge reaches every tier and every node before the client is
    /// answered, so the client reads its own write.
    async fn forward_other(
        self,
        req: ServiceRequest,
        route: Route,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let st = self.state.clone();
        if let Err(denied) = st
            .limits
            .check_origin(req.request(), route.counters.route())
        {
            return Ok(self.refuse(req, &route, denied));
        }
        route.note(req.request(), Outcome::Pass, None);
        let res = call_inner(&*self.inner, req).await?;
        let http_req = res.request().clone();
        let status = res.status();
        let origin_answered = res
            .response()
            .extensions()
            .get::<UpstreamFailure>()
            .is_none();
        if is_unsafe(http_req.method())
            && origin_answered
            && !status.is_client_error()
            && !status.is_server_error()
        {
            let host = key::request_host(&http_req);
            let mut selectors = vec![url_selector(
                &route.rules,
                &host,
                http_req.path(),
                http_req.query_string(),
            )];
            for name in [header::LOCATION, header::CONTENT_LOCATION] {
                if let Some(k) = res
                    .headers()
                    .get(&name)
                    .and_then(|v| key::for_location(&host, v.as_bytes()))
                {
                    if let Some(parts) = policy::KeyParts::parse(&k) {
                        let sel = url_selector(&route.rules, &host, parts.path, parts.query);
                        if !selectors.contains(&sel) {
                            selectors.push(sel);
                        }
                    }
                }
            }
            for sel in &selectors {
                st.invalidate(sel, PurgeSource::Method).await;
                st.metrics.invalidations.inc();
            }
            if let Some(rule) = route.rule().filter(|_| status.is_success()) {
                for sel in rule.invalidations_for(http_req.path()) {
                    st.invalidate(&sel, PurgeSource::Rule).await;
                }
            }
        }
        let mut res = res;
        let cs = forwarded(Fwd::Method, res.response());
        append_status(res.headers_mut(), cs);
        Ok(res)
    }
}

/// The `Cache-Status` of a response that went forward: the origin's status, or, when tierd
/// answered because the origin failed (502, 504), what failed.
fn forwarded(fwd: Fwd, res: &HttpResponse) -> CacheStatus {
    match res.extensions().get::<UpstreamFailure>() {
        Some(UpstreamFailure(kind)) => CacheStatus {
            fwd: Some(fwd),
            detail: Some(kind.cache_status_detail()),
            ..Default::default()
        },
        None => CacheStatus {
            fwd: Some(fwd),
            fwd_status: Some(res.status().as_u16()),
            ..Default::default()
        },
    }
}

/// The entries of one URL on `host`: its query as the GET rule for the path keys it.
fn url_selector(rules: &RuleSet, host: &str, path: &str, query: &str) -> Selector {
    Selector::Url {
        host: Some(host.to_owned()),
        path: path.to_owned(),
        query: Some(rules.key_query(path, query)),
    }
}

/// Replaces the client's conditional headers with tierd's own: the stored response's origin
/// validators when revalidating, none otherwise.
fn upstream_conditionals(h: &mut HeaderMap, stale: Option<&CachedResponse>) {
    for name in CONDITIONALS {
        h.remove(name);
    }
    if let Some(entry) = stale {
        if entry.origin_etag {
            if let Some(etag) = &entry.etag {
                h.insert(header::IF_NONE_MATCH, etag.clone());
            }
        }
        if let Some(lm) = &entry.last_modified {
            h.insert(header::IF_MODIFIED_SINCE, lm.clone());
        }
    }
}

fn storable_ttl(entry: &CachedResponse, age: u64) -> i64 {
    crate::http::freshness::ttl(entry.lifetime, age)
}

/// The stale response for an origin error, when the entry's `stale-if-error` window allows it
/// (RFC 5861 §4; never for `must-revalidate`).
fn stale_for_error(
    entry: &CachedResponse,
    tier: TierName,
    status: u16,
    now: SystemTime,
) -> Option<HttpResponse> {
    let age = entry.age(now);
    storable::may_serve_stale_on_error(entry.stale_if_error, entry.no_stale, entry.lifetime, age)
        .then(|| respond(entry, age, stale_if_error_status(entry, age, status, tier)))
}

fn stale_if_error_status(
    entry: &CachedResponse,
    age: u64,
    status: u16,
    tier: TierName,
) -> CacheStatus {
    CacheStatus {
        fwd: Some(Fwd::Stale),
        fwd_status: Some(status),
        ttl: Some(storable_ttl(entry, age)),
        detail: Some(tier.as_str()),
        ..Default::default()
    }
}

/// One origin fetch for a key: a fill, a revalidation or a background refresh.
struct Fetch<S> {
    ctx: Ctx<S>,
    req: Option<ServiceRequest>,
    key: String,
    stale: Option<(Arc<CachedResponse>, TierName)>,
    facts: RequestFacts,
    fwd: Fwd,
    guard: Option<FlightGuard>,
    /// The purge epoch when the fetch started: a purge since then that selects the response
    /// keeps it from being stored.
    epoch: u64,
    route: Route,
}

/// The result of reading a body up to a limit.
enum Collected {
    Full(Bytes),
    /// Over the limit: what was read, and the rest still to stream.
    TooLarge(Bytes, BoxBody),
    Failed,
}

async fn collect(mut body: BoxBody, limit: usize) -> Collected {
    let declared = match body.size() {
        BodySize::Sized(n) if n > limit as u64 => return Collected::TooLarge(Bytes::new(), body),
        BodySize::Sized(n) => Some(n),
        _ => None,
    };
    // Sized from Content-Length when there is one, so the stored body has no spare capacity.
    let mut buf = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await;
        match next {
            // A body shorter than its Content-Length was cut off: never store a truncated entry.
            None if declared.is_some_and(|n| n != buf.len() as u64) => {
                static CUT: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                if let Some(occurrences) = CUT.check() {
                    tracing::warn!(declared = ?declared, received = buf.len(), occurrences, "origin body ended early; nothing stored");
                }
                return Collected::Failed;
            }
            None => return Collected::Full(shrink(buf)),
            Some(Ok(chunk)) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > limit {
                    return Collected::TooLarge(buf.freeze(), body);
                }
            }
            Some(Err(e)) => {
                static FAILED: LogLimit = LogLimit::new(DEFAULT_LOG_INTERVAL);
                if let Some(occurrences) = FAILED.check() {
                    tracing::warn!(error = %e, occurrences, "origin body failed mid-stream; nothing stored");
                }
                return Collected::Failed;
            }
        }
    }
}

/// The collected body without the spare capacity growth left (a chunked body grows its buffer
/// geometrically: up to twice its size, held as long as the entry is stored, and not weighed).
fn shrink(buf: BytesMut) -> Bytes {
    if buf.capacity() - buf.len() > buf.len() / 16 {
        Bytes::copy_from_slice(&buf)
    } else {
        buf.freeze()
    }
}

/// A body as a stream of chunks.
struct BodyChunks(BoxBody);

impl Stream for BodyChunks {
    type Item = Result<Bytes, Box<dyn std::error::Error>>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

impl<S, B> Fetch<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    fn complete(&mut self, outcome: FlightOutcome) {
        if let Some(g) = self.guard.take() {
            g.complete(outcome);
        }
    }

    /// Leads the flight: the fetch runs in a task of its own, so a client that goes away does
    /// not cancel it for the requests waiting on it.
    async fn lead(self) -> Result<ServiceResponse<BoxBody>, Error> {
        let Some(req) = &self.req else {
            return Err(internal_error());
        };
        if let Err(denied) = self
            .ctx
            .state
            .limits
            .check_origin(req.request(), self.route.counters.route())
        {
            // Waiters see the flight abandoned; they join again and check the quota themselves.
            let Fetch {
                ctx,
                req,
                stale,
                fwd,
                route,
                guard,
                ..
            } = self;
            drop(guard);
            let Some(req) = req else {
                return Err(internal_error());
            };
            return Ok(ctx.origin_limited(req, &route, stale.as_ref(), fwd, denied));
        }
        let (tx, rx) = oneshot::channel();
        // Inside the request (its span, or its context), so the fetch's log lines name it.
        actix_web::rt::spawn(crate::logging::InRequest::current(
            async move {
                // The client may be gone; the store and the waiters were served already.
                let _ = tx.send(self.run().await);
            }
            .instrument(tracing::Span::current()),
        ));
        rx.await.unwrap_or_else(|_| Err(internal_error()))
    }

    /// Sends the request to the inner service (the origin, or the application's handlers) and
    /// stores, freshens or passes on what it answers.
    async fn run(mut self) -> Result<ServiceResponse<BoxBody>, Error> {
        let st = self.ctx.state.clone();
        let Some(req) = self.req.take() else {
            return Err(internal_error());
        };
        let request_time = st.clock.now();
        let called = call_inner(&*self.ctx.inner, req).await;
        let response_time = st.clock.now();
        let res = match called {
            Ok(res) => res,
            Err(e) => {
                // No response to store (a panic, an inner middleware's error); waiters may
                // serve stale.
                let status = e.as_response_error().status_code().as_u16();
                self.complete(FlightOutcome::Failed {
                    status,
                    detail: "application-error",
                });
                return Err(e);
            }
        };
        // The request comes back with the response: the inner service (an app's router)
        // needed it to itself while it ran, so no copy was kept.
        let (http_req, res) = res.into_parts();
        let res = self
            .finish(&http_req, res, request_time, response_time)
            .await;
        Ok(ServiceResponse::new(http_req, res))
    }

    async fn finish(
        mut self,
        http_req: &HttpRequest,
        res: HttpResponse,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> HttpResponse {
        let st = self.ctx.state.clone();
        let status = res.status();
        let failure = res.extensions().get::<UpstreamFailure>().copied();

        // A 304 to our own conditional request: freshen the stored response (§4.3.4).
        if status == StatusCode::NOT_MODIFIED {
            if let Some((entry, tier)) = self.stale.clone() {
                return self.freshen(
                    &entry,
                    Some(tier),
                    res.headers(),
                    http_req,
                    request_time,
                    response_time,
                );
            }
        }

        if failure.is_some() || storable::is_stale_if_error_status(status.as_u16()) {
            if let Some(res) =
                self.stale_on_error(http_req, status.as_u16(), failure.is_some(), response_time)
            {
                return res;
            }
            if let Some(UpstreamFailure(kind)) = failure {
                let detail = kind.cache_status_detail();
                self.complete(FlightOutcome::Failed {
                    status: status.as_u16(),
                    detail,
                });
                self.route.note(http_req, Outcome::Error, None);
                let mut res = res;
                append_status(res.headers_mut(), self.failed_status(detail));
                return res;
            }
        }

        let mut res = res;
        if self.route.private {
            make_private(res.headers_mut());
        }
        let mut opts = self
            .route
            .store_options(st.policy.store, status.as_u16(), None);
        let directive = res.extensions_mut().remove::<CacheDirective>();
        if let Some(d) = &directive {
            if let Some(ttl) = d.ttl {
                opts.lifetime = LifetimeOverride::Fixed(ttl);
            }
            self.route.add_tags(&d.tags);
        }
        let planned = match directive {
            Some(d) if d.forbids_store() => Err(NotStorable::Handler),
            _ => storable::plan_store(
                &self.facts,
                status.as_u16(),
                res.headers(),
                request_time,
                response_time,
                opts,
            ),
        };
        let plan = match planned {
            Ok(p) => p,
            Err(reason) => {
                st.metrics.not_stored(reason.as_str());
                if self.stale.is_some() {
                    st.remove_selected(&self.key, self.route.tiers, http_req.headers());
                }
                self.complete(FlightOutcome::Uncacheable);
                self.route.note(http_req, Outcome::Pass, None);
                return with_status(res, self.forward_status(status, false));
            }
        };

        let (head, body) = res.into_parts();
        match collect(body, st.policy.max_body_bytes).await {
            Collected::Full(bytes) => {
                let mut plan = plan;
                let mut refused = None;
                if opts.lifetime == LifetimeOverride::FromBody {
                    let rule_ttl = self.route.rule().and_then(|r| {
                        r.ttl_from_body(&bytes)
                            .or_else(|| r.fallback_ttl(status.as_u16()))
                    });
                    refused = plan.finish(rule_ttl).err();
                }
                let entry = Arc::new(CachedResponse::from_origin(
                    status,
                    head.headers(),
                    bytes,
                    &plan,
                    http_req.headers(),
                    response_time,
                    &self.route.tags,
                ));
                if refused.is_none() && entry.vary_bytes() > st.policy.max_vary_bytes {
                    refused = Some(NotStorable::VaryTooLarge);
                }
                if refused.is_none()
                    && st
                        .store
                        .purges()
                        .selects_since(self.epoch, &self.key, &entry.tags)
                {
                    refused = Some(NotStorable::PurgedDuringFetch);
                }
                if let Some(reason) = refused {
                    st.metrics.not_stored(reason.as_str());
                    if self.stale.is_some() {
                        st.remove_selected(&self.key, self.route.tiers, http_req.headers());
                    }
                    self.complete(FlightOutcome::Uncacheable);
                    self.route.note(http_req, Outcome::Pass, None);
                    return respond_uncached(&entry, self.forward_status(status, false));
                }
                st.store_entry(&self.key, self.route.tiers, entry.clone());
                self.complete(FlightOutcome::Stored(entry.clone()));
                self.route.note(http_req, Outcome::Miss, None);
                let age = entry.age(st.clock.now());
                respond(&entry, age, self.forward_status(status, true))
            }
            Collected::TooLarge(prefix, rest) => {
                st.metrics
                    .not_stored(storable::NotStorable::TooLarge.as_str());
                self.complete(FlightOutcome::Uncacheable);
                self.route.note(http_req, Outcome::Pass, None);
                let chained =
                    stream::once(async move { Ok::<_, Box<dyn std::error::Error>>(prefix) })
                        .chain(BodyChunks(rest));
                let size = crate::http::headers::content_length(head.headers());
                let mut res = match size {
                    Some(n) => {
                        head.set_body(BoxBody::new(actix_web::body::SizedStream::new(n, chained)))
                    }
                    None => head.set_body(BoxBody::new(BodyStream::new(chained))),
                };
                res.headers_mut().append(
                    cache_status_header(),
                    status_value(self.forward_status(status, false)),
                );
                res
            }
            Collected::Failed => {
                st.metrics.origin_error(OriginError::Body);
                st.metrics
                    .not_stored(storable::NotStorable::Incomplete.as_str());
                if let Some(res) = self.stale_on_error(http_req, 502, true, st.clock.now()) {
                    return res;
                }
                let detail = OriginError::Body.cache_status_detail();
                self.complete(FlightOutcome::Failed {
                    status: 502,
                    detail,
                });
                self.route.note(http_req, Outcome::Error, None);
                with_status(opaque(StatusCode::BAD_GATEWAY), self.failed_status(detail))
            }
        }
    }

    /// The `Cache-Status` of an error tierd answers itself because the origin failed.
    fn failed_status(&self, detail: &'static str) -> CacheStatus {
        CacheStatus {
            fwd: Some(self.fwd),
            detail: Some(detail),
            ..Default::default()
        }
    }

    fn forward_status(&self, status: StatusCode, stored: bool) -> CacheStatus {
        CacheStatus {
            fwd: Some(self.fwd),
            fwd_status: Some(status.as_u16()),
            stored,
            ..Default::default()
        }
    }

    fn freshen(
        mut self,
        entry: &CachedResponse,
        tier: Option<TierName>,
        not_modified: &HeaderMap,
        http_req: &HttpRequest,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> HttpResponse {
        let st = self.ctx.state.clone();
        let cs = CacheStatus {
            fwd: Some(self.fwd),
            fwd_status: Some(304),
            ..Default::default()
        };
        let opts =
            self.route
                .store_options(st.policy.store, entry.status.as_u16(), Some(&entry.body));
        match entry.freshen(
            not_modified,
            &self.facts,
            http_req.headers(),
            request_time,
            response_time,
            opts,
        ) {
            Ok(updated) => {
                let updated = Arc::new(updated);
                st.store_entry(&self.key, self.route.tiers, updated.clone());
                self.complete(FlightOutcome::Stored(updated.clone()));
                self.route.note(http_req, Outcome::Revalidated, tier);
                respond(&updated, updated.age(st.clock.now()), cs)
            }
            Err(reason) => {
                // The 304 made the response unstorable: serve it this once, then forget it.
                st.metrics.not_stored(reason.as_str());
                st.remove_selected(&self.key, self.route.tiers, http_req.headers());
                self.complete(FlightOutcome::Uncacheable);
                self.route.note(http_req, Outcome::Revalidated, tier);
                respond(entry, 0, cs)
            }
        }
    }

    /// Serves the stale entry for an origin error when its `stale-if-error` window allows; for a
    /// `must-revalidate` entry with the origin unreachable, answers 504 (§4.2.4).
    fn stale_on_error(
        &mut self,
        http_req: &HttpRequest,
        status: u16,
        unreachable: bool,
        now: SystemTime,
    ) -> Option<HttpResponse> {
        let (entry, tier) = self.stale.clone()?;
        if let Some(res) = stale_for_error(&entry, tier, status, now) {
            self.complete(FlightOutcome::Failed {
                status,
                detail: "origin-error",
            });
            self.route.note(http_req, Outcome::StaleIfError, Some(tier));
            return Some(res);
        }
        if entry.no_stale && unreachable {
            let detail = "stale-must-revalidate";
            self.complete(FlightOutcome::Failed {
                status: 504,
                detail,
            });
            self.route.note(http_req, Outcome::Error, None);
            let res = with_status(
                opaque(StatusCode::GATEWAY_TIMEOUT),
                self.failed_status(detail),
            );
            return Some(res);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_values_are_the_decimal_seconds_prebuilt_or_not() {
        for age in [0, 1, 59, 3599, 3600, 3601, 86_400, u64::MAX] {
            assert_eq!(age_value(age).to_str().ok(), Some(age.to_string().as_str()));
        }
    }
}
