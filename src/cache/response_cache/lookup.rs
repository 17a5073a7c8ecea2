//! A request's way through the cache: rules, key, lookup in the tiers, and what to do with
//! what was found.

use super::*;

impl<S, B> Ctx<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    pub(super) async fn handle(
        self,
        mut req: ServiceRequest,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let st = &self.state;
        let method = req.method().clone();
        let is_head = method == Method::HEAD;
        let matched = req.extensions_mut().remove::<RouteMatch>();
        let mut route = match matched {
            Some(m) => Route::at(m.rules, m.index),
            None => Route::resolve(st.rules.load_full(), &method, req.path()),
        };
        let warm_hook = st.warm.get();
        let mut warm_refresh = false;
        if warm_hook.is_some() {
            if let Some(w) = req.extensions().get::<super::super::WarmFetch>() {
                route.warm_fetch = true;
                warm_refresh = w.refresh;
            }
        }
        {
            let keyed = route.rule().map_or(&[][..], |r| &r.key_headers[..]);
            let peer = req.peer_addr().map(|a| a.ip());
            let metrics = &st.metrics;
            st.policy
                .hygiene
                .apply(req.headers_mut(), peer, keyed, |_, why| {
                    metrics.guard.headers_stripped(why)
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
        // Refresh-ahead: the warmer revalidates an entry about to expire under its clients.
        refresh |= warm_refresh;
        if let Some(j) = &st.journal {
            route.key = match j.url(&key) {
                Some(u) => crate::journal::JournalUrl::Url(u),
                None => crate::journal::JournalUrl::NotSampled,
            };
        }
        if let Some(h) = warm_hook {
            if !route.warm_fetch && method == Method::GET {
                h.requested(&key, route.counters.route());
            }
        }
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

        let lookup = decide::Lookup {
            found: found.as_ref().map(|f| f.entry.facts(f.entry.age(now))),
            slot_seen,
        };
        let fwd = match (decide::decide(&facts, lookup, refresh), &found) {
            (Decision::ServeFresh, Some(Found { entry, tier })) => {
                route.warmed = served_warmed(warm_hook, &route, &key);
                let age = entry.age(now);
                route.note_entry(req.request(), Outcome::Hit, Some(*tier), entry);
                let cs = CacheStatus::hit(storable_ttl(entry, age), tier.as_str());
                let res = respond(entry, age, cs, req.headers());
                return Ok(req.into_response(res));
            }
            (Decision::ServeStaleAndRefresh, Some(Found { entry, tier })) => {
                route.warmed = served_warmed(warm_hook, &route, &key);
                let age = entry.age(now);
                route.note_entry(
                    req.request(),
                    Outcome::StaleWhileRevalidate,
                    Some(*tier),
                    entry,
                );
                let cs = CacheStatus::hit(storable_ttl(entry, age), tier.as_str());
                let mut res = respond(entry, age, cs, req.headers());
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
            (Decision::GatewayTimeout, _) => {
                route.note(req.request(), Outcome::Error, None);
                return Ok(req.into_response(opaque(StatusCode::GATEWAY_TIMEOUT)));
            }
            (Decision::Forward(fwd), _) => fwd,
            // `decide` serves only what was found.
            (Decision::ServeFresh | Decision::ServeStaleAndRefresh, None) => Fwd::UriMiss,
        };
        let stale = found.map(|f| (f.entry, f.tier));
        if is_head {
            return self.forward_head(req, key, stale, facts, fwd, route).await;
        }
        self.fetch(req, key, stale, facts, fwd, route).await
    }

    /// The 429 for a request the origin quota refused.
    pub(super) fn refuse(
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
    pub(super) fn origin_limited(
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
                {
                    let res = respond(entry, age, cs, req.headers());
                    req.into_response(res)
                }
            }
            _ => self.refuse(req, route, denied),
        }
    }

    /// Sends the request to the origin without looking in or storing to the cache.
    pub(super) async fn bypass(
        self,
        req: ServiceRequest,
        mut route: Route,
        why: Option<&'static str>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        route.bypassed = true;
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
}

/// The entries of one URL on `host`: its query as the GET rule for the path keys it.
pub(super) fn url_selector(rules: &RuleSet, host: &str, path: &str, query: &str) -> Selector {
    Selector::Url {
        host: Some(host.to_owned()),
        path: path.to_owned(),
        query: Some(rules.key_query(path, query)),
    }
}

/// Whether a client is being served an entry a warm fetch stored (the warmer counts its first
/// use).
#[inline]
fn served_warmed(hook: Option<&Arc<dyn super::super::WarmHook>>, route: &Route, key: &str) -> bool {
    match hook {
        Some(h) if !route.warm_fetch => h.served_entry(key),
        _ => false,
    }
}
