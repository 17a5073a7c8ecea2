//! The fetch job: one origin request per key, whose response is stored and shared with the
//! requests coalesced on it.

use super::*;

/// One origin fetch for a key: a fill, a revalidation or a background refresh.
pub(super) struct Fetch<S> {
    pub(super) ctx: Ctx<S>,
    pub(super) req: Option<ServiceRequest>,
    pub(super) key: String,
    pub(super) stale: Option<(Arc<CachedResponse>, TierName)>,
    pub(super) facts: RequestFacts,
    pub(super) fwd: Fwd,
    pub(super) guard: Option<FlightGuard>,
    /// The purge epoch when the fetch started: a purge since then that selects the response
    /// keeps it from being stored.
    pub(super) epoch: u64,
    pub(super) route: Route,
}

/// The result of reading a body up to a limit.
pub(super) enum Collected {
    Full(Bytes),
    /// Over the limit: what was read, and the rest still to stream.
    TooLarge(Bytes, BoxBody),
    Failed,
}

pub(super) async fn collect(mut body: BoxBody, limit: usize) -> Collected {
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
pub(super) fn shrink(buf: BytesMut) -> Bytes {
    if buf.capacity() - buf.len() > buf.len() / 16 {
        Bytes::copy_from_slice(&buf)
    } else {
        buf.freeze()
    }
}

/// A body as a stream of chunks.
pub(super) struct BodyChunks(BoxBody);

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
    pub(super) fn complete(&mut self, outcome: FlightOutcome) {
        if let Some(g) = self.guard.take() {
            g.complete(outcome);
        }
    }

    /// Leads the flight: the fetch runs in a task of its own, so a client that goes away does
    /// not cancel it for the requests waiting on it.
    pub(super) async fn lead(self) -> Result<ServiceResponse<BoxBody>, Error> {
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
    pub(super) async fn run(mut self) -> Result<ServiceResponse<BoxBody>, Error> {
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
                    unreachable: false,
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

    pub(super) async fn finish(
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
                    unreachable: true,
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
                st.metrics.cache.not_stored(reason.as_str());
                if self.stale.is_some() {
                    st.remove_selected(&self.key, self.route.tiers, http_req.headers());
                }
                self.complete(FlightOutcome::Uncacheable);
                self.route.note(http_req, Outcome::Pass, None);
                return with_status(res, self.forward_status(status, false));
            }
        };

        let (head, body) = res.into_parts();
        // The length the body declares (the proxy sets it from the origin's Content-Length,
        // which is not among the headers).
        let declared = match body.size() {
            BodySize::Sized(n) => Some(n),
            _ => crate::http::headers::content_length(head.headers()),
        };
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
                let mut built = CachedResponse::from_origin(
                    status,
                    head.headers(),
                    bytes,
                    &plan,
                    http_req.headers(),
                    response_time,
                    &self.route.tags,
                );
                if let Some(c) = st.policy.compression.clone() {
                    if c.applies(status, head.headers(), built.body.len()) {
                        built.encoded = compressed(c, &built).await;
                    }
                }
                let entry = Arc::new(built);
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
                    st.metrics.cache.not_stored(reason.as_str());
                    if self.stale.is_some() {
                        st.remove_selected(&self.key, self.route.tiers, http_req.headers());
                    }
                    self.complete(FlightOutcome::Uncacheable);
                    self.route.note(http_req, Outcome::Pass, None);
                    return respond_uncached(
                        &entry,
                        self.forward_status(status, false),
                        http_req.headers(),
                    );
                }
                st.store_entry(&self.key, self.route.tiers, entry.clone());
                self.complete(FlightOutcome::Stored(entry.clone()));
                self.route.note_entry(http_req, Outcome::Miss, None, &entry);
                let age = entry.age(st.clock.now());
                respond(
                    &entry,
                    age,
                    self.forward_status(status, true),
                    http_req.headers(),
                )
            }
            Collected::TooLarge(prefix, rest) => {
                st.metrics
                    .cache
                    .not_stored(storable::NotStorable::TooLarge.as_str());
                self.complete(FlightOutcome::Uncacheable);
                self.route.note(http_req, Outcome::Pass, None);
                let chained =
                    stream::once(async move { Ok::<_, Box<dyn std::error::Error>>(prefix) })
                        .chain(BodyChunks(rest));
                let mut res = match declared {
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
                st.metrics.cache.origin_error(OriginError::Body);
                st.metrics
                    .cache
                    .not_stored(storable::NotStorable::Incomplete.as_str());
                if let Some(res) = self.stale_on_error(http_req, 502, true, st.clock.now()) {
                    return res;
                }
                let detail = OriginError::Body.cache_status_detail();
                self.complete(FlightOutcome::Failed {
                    status: 502,
                    detail,
                    unreachable: true,
                });
                self.route.note(http_req, Outcome::Error, None);
                with_status(opaque(StatusCode::BAD_GATEWAY), self.failed_status(detail))
            }
        }
    }

    /// The `Cache-Status` of an error tierd answers itself because the origin failed.
    pub(super) fn failed_status(&self, detail: &'static str) -> CacheStatus {
        CacheStatus {
            fwd: Some(self.fwd),
            detail: Some(detail),
            ..Default::default()
        }
    }

    pub(super) fn forward_status(&self, status: StatusCode, stored: bool) -> CacheStatus {
        CacheStatus {
            fwd: Some(self.fwd),
            fwd_status: Some(status.as_u16()),
            stored,
            ..Default::default()
        }
    }

    pub(super) fn freshen(
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
                self.route
                    .note_entry(http_req, Outcome::Revalidated, tier, &updated);
                respond(
                    &updated,
                    updated.age(st.clock.now()),
                    cs,
                    http_req.headers(),
                )
            }
            Err(reason) => {
                // The 304 made the response unstorable: serve it this once, then forget it.
                st.metrics.cache.not_stored(reason.as_str());
                st.remove_selected(&self.key, self.route.tiers, http_req.headers());
                self.complete(FlightOutcome::Uncacheable);
                self.route.note(http_req, Outcome::Revalidated, tier);
                respond(entry, 0, cs, http_req.headers())
            }
        }
    }

    /// Serves the stale entry for an origin error when its `stale-if-error` window allows (or,
    /// with the origin unreachable, `cache.stale_on_error_seconds`); for a `must-revalidate`
    /// entry with the origin unreachable, answers 504 (§4.2.4).
    pub(super) fn stale_on_error(
        &mut self,
        http_req: &HttpRequest,
        status: u16,
        unreachable: bool,
        now: SystemTime,
    ) -> Option<HttpResponse> {
        let (entry, tier) = self.stale.clone()?;
        let window = entry.stale_on_error_window(unreachable, self.ctx.state.policy.stale_on_error);
        if let Some(res) = stale_for_error(&entry, tier, status, now, window, http_req.headers()) {
            self.complete(FlightOutcome::Failed {
                status,
                detail: "origin-error",
                unreachable,
            });
            self.route.note(http_req, Outcome::StaleIfError, Some(tier));
            return Some(res);
        }
        if entry.no_stale && unreachable {
            let detail = "stale-must-revalidate";
            self.complete(FlightOutcome::Failed {
                status: 504,
                detail,
                unreachable,
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

/// Bodies up to this size are compressed on the worker (tens of microseconds); larger ones on
/// the blocking pool, so a megabyte of JSON never stalls the worker's other requests.
const INLINE_COMPRESS_BYTES: usize = 64 * 1024;

/// The compressed copy of `entry`'s body, when it is smaller.
async fn compressed(
    c: Arc<crate::cache::compress::Compression>,
    entry: &CachedResponse,
) -> Option<crate::cache::entry::Encoded> {
    if entry.body.len() <= INLINE_COMPRESS_BYTES {
        return c.encode(&entry.body, entry.etag.as_ref(), &entry.headers);
    }
    let (body, etag, headers) = (
        entry.body.clone(),
        entry.etag.clone(),
        entry.headers.clone(),
    );
    actix_web::rt::task::spawn_blocking(move || c.encode(&body, etag.as_ref(), &headers))
        .await
        .ok()
        .flatten()
}
