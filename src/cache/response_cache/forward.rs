//! Requests that go to the origin: the coalesced fetch of a key, background refreshes, HEAD
//! misses and unsafe methods.

use super::*;

impl<S, B> Ctx<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    /// Fills or revalidates `key` through one coalesced fetch. The first request leads it (in a
    /// task of its own); later ones wait for its outcome and never fetch the key themselves
    /// while it runs, however slow the origin: past `coalesce_timeout` a waiter serves a stale
    /// copy it may serve, otherwise it waits up to `fetch_timeout`, then answers 504.
    pub(super) async fn fetch(
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
        let mut route = route.with_tags(req.path());
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
                st.metrics.cache.coalesced_waiters.inc();
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
                    route.note_entry(req.request(), Outcome::Collapsed, None, &entry);
                    let age = entry.age(st.clock.now());
                    let cs = CacheStatus {
                        hit: true,
                        collapsed: true,
                        ..Default::default()
                    };
                    let res = respond(&entry, age, cs, req.headers());
                    return Ok(req.into_response(res));
                }
                // Another variant was stored, or the leader went away: join again, so that
                // one request leads the next fetch and the rest wait for it.
                Ok(FlightOutcome::Stored(_)) | Ok(FlightOutcome::Abandoned) => continue,
                Ok(FlightOutcome::Failed {
                    status,
                    detail,
                    unreachable,
                }) => {
                    let now = st.clock.now();
                    if let Some(res) = stale.as_ref().and_then(|(e, t)| {
                        let window = e.stale_on_error_window(unreachable, st.policy.stale_on_error);
                        stale_for_error(e, *t, status, now, window, req.headers())
                    }) {
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
                            .cache
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
                        let res = respond(&entry, age, cs, req.headers());
                        return Ok(req.into_response(res));
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
                        .cache
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
    pub(super) fn refresh_in_background(
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
        self.state.metrics.cache.background_refreshes.inc();
        let metrics = self.state.metrics.clone();
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
                let failed = match job.run().await {
                    Ok(res) => res.status().is_server_error(),
                    Err(_) => true,
                };
                if failed {
                    metrics.cache.background_refresh_failures.inc();
                }
            }
            .instrument(tracing::Span::current()),
        ));
        Some(RefreshGate(gate))
    }

    /// HEAD that storage could not answer: forwarded as HEAD, never stored; a matching response
    /// freshens a stale stored GET (RFC 9111 §4.3.5).
    pub(super) async fn forward_head(
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
    pub(super) async fn forward_other(
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
                st.metrics.cache.invalidations.inc();
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

/// Replaces the client's conditional headers with tierd's own: the stored response's origin
/// validators when revalidating, none otherwise.
pub(super) fn upstream_conditionals(h: &mut HeaderMap, stale: Option<&CachedResponse>) {
    for name in CONDITIONALS {
        h.remove(name);
    }
    // The full response is fetched and stored; the client's range is cut from it on the way
    // out (CacheHeaders), as nginx's proxy_cache does.
    h.remove(header::RANGE);
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

/// The stale response for an origin error, when `window` (the entry's
/// [`stale_on_error_window`](CachedResponse::stale_on_error_window): `stale-if-error`, RFC 5861
/// §4, or `cache.stale_on_error_seconds`) allows it; never for `must-revalidate`.
pub(super) fn stale_for_error(
    entry: &CachedResponse,
    tier: TierName,
    status: u16,
    now: SystemTime,
    window: u64,
    request: &HeaderMap,
) -> Option<HttpResponse> {
    let age = entry.age(now);
    storable::may_serve_stale_on_error(window, entry.no_stale, entry.lifetime, age).then(|| {
        respond(
            entry,
            age,
            stale_if_error_status(entry, age, status, tier),
            request,
        )
    })
}

pub(super) fn stale_if_error_status(
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
