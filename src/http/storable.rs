//! Whether, and how, a response may be stored by a shared cache (RFC 9111 §3), and the request
//! directives that decide whether a stored response may be reused (§4).

use std::time::SystemTime;

use actix_web::http::header::{self, HeaderMap, HeaderName};

use super::cache_control::{CacheControl, Delta, FieldList};
use super::freshness::{self, AgeField, Expires, FreshnessInputs, Heuristic, Lifetime};
use super::vary::Vary;

/// Why a response was not stored. The string feeds logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum NotStorable {
    Status,
    RequestNoStore,
    NoStore,
    Private,
    Authorization,
    SetCookie,
    VaryStar,
    VaryMalformed,
    NoFreshness,
    TooLarge,
    Incomplete,
    /// A config rule gave the response a TTL of 0.
    RuleTtlZero,
    /// A purge ran while the response was being fetched; it may predate the purge.
    PurgedDuringFetch,
    /// The request header values the response varies on exceed `cache.max_vary_bytes`
    /// (an origin varying on `Cookie` would otherwise store a copy per cookie).
    VaryTooLarge,
    /// Only heuristic freshness, for a request that carried `Cookie` or `Authorization`: the
    /// response may be that user's (an account page with a `.css` suffix) and the origin did not
    /// say it may be shared.
    CredentialedHeuristic,
    /// The handler said not to store it ([`CacheDirective`](crate::CacheDirective)).
    Handler,
}

impl NotStorable {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The request facts that storing and reuse depend on.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    pub cc: CacheControl,
    pub has_authorization: bool,
    /// `Cookie` or `Authorization`: the request speaks for one user.
    pub credentialed: bool,
    /// `Pragma: no-cache` without `Cache-Control` (§5.4).
    pub pragma_no_cache: bool,
}

impl RequestFacts {
    pub fn from_headers(h: &HeaderMap) -> Self {
        let has_cc = h.contains_key(header::CACHE_CONTROL);
        let cc = if has_cc {
            CacheControl::parse(h.get_all(header::CACHE_CONTROL).map(|v| v.as_bytes()))
        } else {
            CacheControl::default()
        };
        let pragma_no_cache = !has_cc
            && h.get_all(header::PRAGMA).any(|v| {
                v.as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
            });
        RequestFacts {
            cc,
            has_authorization: h.contains_key(header::AUTHORIZATION),
            credentialed: h.contains_key(header::AUTHORIZATION) || h.contains_key(header::COOKIE),
            pragma_no_cache,
        }
    }

    /// The request forbids answering from storage without validation (§5.2.1.4, §5.4).
    pub fn requires_validation(&self) -> bool {
        self.pragma_no_cache
            || self.cc.no_cache.is_some()
            || matches!(
                self.cc.max_age,
                Some(Delta::Valid(0)) | Some(Delta::Invalid)
            )
    }
}

/// What the cache keeps about a storable response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePlan {
    pub lifetime: Lifetime,
    pub initial_age: u64,
    pub stale_while_revalidate: u64,
    pub stale_if_error: u64,
    /// Unqualified `no-cache`: validate before every reuse.
    pub no_cache: bool,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never serve stale (§4.2.4).
    pub no_stale: bool,
    /// Fields named by qualified `no-cache` / `private`, not stored.
    pub strip_fields: Vec<HeaderName>,
    pub vary: Vec<HeaderName>,
    /// The response carries `ETag` or `Last-Modified`.
    pub has_validator: bool,
    /// Its `Age` was invalid: stale on arrival whatever lifetime it ends up with (§5.1).
    pub age_invalid: bool,
}

/// The directives that govern this cache: `Surrogate-Control`, then `CDN-Cache-Control`
/// (RFC 9213: a structured field, ignored whole when it does not parse), then
/// `Cache-Control`, the first one present winning whole.
pub fn effective_cache_control(h: &HeaderMap) -> CacheControl {
    if h.contains_key("surrogate-control") {
        let cc = CacheControl::parse(h.get_all("surrogate-control").map(|v| v.as_bytes()));
        if !cc.is_empty() {
            return cc;
        }
    }
    if h.contains_key("cdn-cache-control") {
        let targeted = super::structured::targeted_cache_control(
            h.get_all("cdn-cache-control").map(|v| v.as_bytes()),
        );
        if let Some(cc) = targeted.filter(|cc| !cc.is_empty()) {
            return cc;
        }
    }
    CacheControl::parse(h.get_all(header::CACHE_CONTROL).map(|v| v.as_bytes()))
}

/// How a config rule replaces the origin's freshness lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LifetimeOverride {
    /// The origin's headers decide (RFC 9111 §4.2.1).
    #[default]
    Origin,
    /// This many seconds whatever the origin says (`no-cache` included); 0: do not store.
    Fixed(u64),
    /// Decided from the body once it is read; the response is storable meanwhile, and the
    /// caller finishes the plan with [`StorePlan::finish`].
    FromBody,
}

/// Options that widen or narrow the RFC defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreOptions {
    pub heuristic: Heuristic,
    /// Store responses carrying `Set-Cookie` (the cookie is stored and replayed). Off by default.
    pub store_set_cookie: bool,
    /// Store as a private cache for one user (a per-user rule scope): `private` responses and
    /// requests with `Authorization` are storable (RFC 9111 §3, §5.2.2.7).
    pub private: bool,
    /// A config rule's lifetime.
    pub lifetime: LifetimeOverride,
    /// A config rule's `stale-while-revalidate` window, replacing the origin's.
    pub stale_while_revalidate: Option<u64>,
    /// A config rule's `stale-if-error` window, replacing the origin's.
    pub stale_if_error: Option<u64>,
}

fn has_validator(h: &HeaderMap) -> bool {
    h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED)
}

fn single_date(h: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut it = h.get_all(name);
    let v = it.next()?;
    freshness::parse_http_date(v.as_bytes())
}

/// Decides whether a response to a GET may be stored (§3), and how.
pub fn plan_store(
    req: &RequestFacts,
    status: u16,
    h: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
    opts: StoreOptions,
) -> Result<StorePlan, NotStorable> {
    // §3: a final status the cache understands; partial content and 304 are not stored as-is.
    if status < 200 || status == 206 || status == 304 {
        return Err(NotStorable::Status);
    }
    if req.cc.no_store {
        return Err(NotStorable::RequestNoStore);
    }
    if opts.lifetime == LifetimeOverride::Fixed(0) {
        return Err(NotStorable::RuleTtlZero);
    }
    let cc = effective_cache_control(h);
    if cc.no_store {
        return Err(NotStorable::NoStore);
    }
    let mut strip_fields = Vec::new();
    match &cc.private {
        _ if opts.private => {}
        Some(FieldList::All) => return Err(NotStorable::Private),
        Some(FieldList::Fields(f)) => push_names(&mut strip_fields, f),
        None => {}
    }
    if let Some(FieldList::Fields(f)) = &cc.no_cache {
        push_names(&mut strip_fields, f);
    }
    // §3.5: a request with Authorization only if the response explicitly allows it.
    if req.has_authorization
        && !opts.private
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    if !opts.store_set_cookie
        && h.contains_key(header::SET_COOKIE)
        && !strip_fields.contains(&header::SET_COOKIE)
    {
        return Err(NotStorable::SetCookie);
    }
    let vary = match Vary::parse(h) {
        Vary::None => Vec::new(),
        Vary::Headers(v) => v,
        Vary::Star => return Err(NotStorable::VaryStar),
        Vary::Malformed => return Err(NotStorable::VaryMalformed),
    };

    let date = single_date(h, &header::DATE);
    let input = FreshnessInputs {
        cc: &cc,
        expires: freshness::parse_expires(h.get_all(header::EXPIRES).map(|v| v.as_bytes())),
        date,
        last_modified: single_date(h, &header::LAST_MODIFIED),
        status,
    };
    let mut lifetime = freshness::freshness_lifetime(&input, opts.heuristic, response_time);
    let mut no_cache = matches!(cc.no_cache, Some(FieldList::All));
    if let LifetimeOverride::Fixed(secs) = opts.lifetime {
        lifetime = Lifetime::Explicit(secs);
        no_cache = false;
    }
    let explicit = lifetime.is_explicit() || input.expires != Expires::Absent;
    // Heuristic freshness is a guess about a shared resource; a credentialed request's response
    // is shared only when the origin says so (explicit freshness, `public`) or a rule does.
    if req.credentialed
        && !opts.private
        && !explicit
        && !cc.public
        && opts.lifetime == LifetimeOverride::Origin
    {
        return Err(NotStorable::CredentialedHeuristic);
    }
    // §3: explicit freshness, `public`, or a heuristically cacheable status.
    let deferred = opts.lifetime == LifetimeOverride::FromBody;
    if !(explicit || deferred || cc.public || freshness::is_heuristically_cacheable(status)) {
        return Err(NotStorable::NoFreshness);
    }
    let stale_if_error = opts
        .stale_if_error
        .unwrap_or_else(|| cc.stale_if_error.map(Delta::secs_or_zero).unwrap_or(0));
    if !deferred && !usable(lifetime.secs(), no_cache, has_validator(h), stale_if_error) {
        return Err(NotStorable::NoFreshness);
    }
    let age = freshness::age_field(h.get_all(header::AGE).map(|v| v.as_bytes()));
    let mut initial_age = freshness::corrected_initial_age(
        match age {
            AgeField::Valid(secs) => Some(secs),
            AgeField::Absent | AgeField::Invalid => None,
        },
        date,
        request_time,
        response_time,
    );
    if age == AgeField::Invalid {
        // How long another cache held it is unknown: stale on arrival, so it is validated
        // before any reuse (its stale windows start now).
        initial_age = initial_age.max(lifetime.secs());
    }
    Ok(StorePlan {
        lifetime,
        initial_age,
        stale_while_revalidate: opts.stale_while_revalidate.unwrap_or_else(|| {
            cc.stale_while_revalidate
                .map(Delta::secs_or_zero)
                .unwrap_or(0)
        }),
        stale_if_error,
        no_cache,
        no_stale: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
        strip_fields,
        vary,
        has_validator: has_validator(h),
        age_invalid: age == AgeField::Invalid,
    })
}

/// Storing something that can never be reused (no lifetime, nothing to validate with, no
/// stale-if-error window) only costs memory.
fn usable(lifetime: u64, no_cache: bool, validator: bool, stale_if_error: u64) -> bool {
    (lifetime > 0 && !no_cache) || validator || stale_if_error > 0
}

impl StorePlan {
    /// Completes a plan made with [`LifetimeOverride::FromBody`]: `secs` is what the body
    /// selected (`None`: keep the origin's lifetime).
    pub fn finish(&mut self, secs: Option<u64>) -> Result<(), NotStorable> {
        match secs {
            Some(0) => return Err(NotStorable::RuleTtlZero),
            Some(s) => {
                self.lifetime = Lifetime::Explicit(s);
                self.no_cache = false;
            }
            None => {}
        }
        if self.age_invalid {
            self.initial_age = self.initial_age.max(self.lifetime.secs());
        }
        if usable(
            self.lifetime.secs(),
            self.no_cache,
            self.has_validator,
            self.stale_if_error,
        ) {
            Ok(())
        } else {
            Err(NotStorable::NoFreshness)
        }
    }
}

fn push_names(out: &mut Vec<HeaderName>, fields: &[String]) {
    for f in fields {
        if let Ok(n) = HeaderName::from_bytes(f.as_bytes()) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
}

/// How a stored response relates to a request's freshness requirements (§4.2, §5.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it as it is.
    Fresh,
    /// Stale, but may be served while one background refresh runs (RFC 5861 §3).
    StaleWhileRevalidate,
    /// Must go forward (validate or refetch) before use.
    Forward,
}

/// The stored-response facts reuse depends on.
#[derive(Debug, Clone, Copy)]
pub struct StoredFacts {
    pub lifetime: u64,
    pub age: u64,
    pub stale_while_revalidate: u64,
    pub no_cache: bool,
    pub no_stale: bool,
}

/// Decides whether a stored response can answer a request now.
pub fn reuse(req: &RequestFacts, s: StoredFacts) -> Reuse {
    if s.no_cache || req.requires_validation() {
        return Reuse::Forward;
    }
    let ttl = freshness::ttl(s.lifetime, s.age);
    // Request max-age: the response must be no older than that (§5.2.1.1).
    if let Some(Delta::Valid(max_age)) = req.cc.max_age {
        if s.age > max_age {
            return Reuse::Forward;
        }
    }
    // min-fresh: must stay fresh for at least that long (§5.2.1.3).
    if let Some(Delta::Valid(min_fresh)) = req.cc.min_fresh {
        if ttl < min_fresh as i64 {
            return Reuse::Forward;
        }
    }
    if ttl > 0 {
        return Reuse::Fresh;
    }
    if s.no_stale {
        return Reuse::Forward;
    }
    let staleness = (-ttl) as u64;
    // max-stale: the client accepts stale responses outright (§5.2.1.2).
    match req.cc.max_stale {
        Some(None) => return Reuse::Fresh,
        Some(Some(Delta::Valid(ms))) if staleness <= ms => return Reuse::Fresh,
        _ => {}
    }
    // A stale response (even stale by 0 s: `max-age=0`, an `Expires` in the past) is reused
    // without validation only when a stale window strictly covers it (§4.2.4).
    if s.stale_while_revalidate > 0 && staleness <= s.stale_while_revalidate {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Forward
}

/// Whether a stale response may stand in for an error (RFC 5861 §4, RFC 9111 §4.2.4).
pub fn may_serve_stale_on_error(
    stale_if_error: u64,
    no_stale: bool,
    lifetime: u64,
    age: u64,
) -> bool {
    let ttl = freshness::ttl(lifetime, age);
    !no_stale && stale_if_error > 0 && ttl <= 0 && (-ttl) as u64 <= stale_if_error
}

/// Origin statuses that count as errors for `stale-if-error` (RFC 5861 §4).
pub fn is_stale_if_error_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;
    use std::time::{Duration, UNIX_EPOCH};

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn plan(
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
    ) -> Result<StorePlan, NotStorable> {
        plan_store(
            &RequestFacts::from_headers(&hm(req)),
            status,
            &hm(resp),
            t(0),
            t(0),
            StoreOptions::default(),
        )
    }

    // RFC 9111 §3: the storing rules, one row each.
    type Row<'a> = (
        &'a [(&'a str, &'a str)],
        u16,
        &'a [(&'a str, &'a str)],
        Result<(), NotStorable>,
    );

    #[test]
    fn storing_table() {
        use NotStorable::*;
        let table: &[Row] = &[
            (&[], 200, &[("cache-control", "max-age=60")], Ok(())),
            (&[], 200, &[("cache-control", "public")], Err(NoFreshness)), // public but no lifetime nor validator
            (
                &[],
                200,
                &[("cache-control", "public"), ("etag", "\"a\"")],
                Ok(()),
            ),
            (&[], 200, &[], Err(NoFreshness)),
            (
                &[],
                200,
                &[("last-modified", "Thu, 01 Jan 1970 00:00:00 GMT")],
                Ok(()),
            ),
            (
                &[],
                500,
                &[("last-modified", "Thu, 01 Jan 1970 00:00:00 GMT")],
                Err(NoFreshness),
            ),
            (&[], 500, &[("cache-control", "max-age=5")], Ok(())),
            (&[], 206, &[("cache-control", "max-age=60")], Err(Status)),
            (&[], 304, &[("cache-control", "max-age=60")], Err(Status)),
            (
                &[("cache-control", "no-store")],
                200,
                &[("cache-control", "max-age=60")],
                Err(RequestNoStore),
            ),
            (
                &[],
                200,
                &[("cache-control", "max-age=60, no-store")],
                Err(NoStore),
            ),
            (
                &[],
                200,
                &[("cache-control", "max-age=60, private")],
                Err(Private),
            ),
            (
                &[],
                200,
                &[("cache-control", "max-age=60, private=\"x-user\"")],
                Ok(()),
            ),
            (
                &[("authorization", "Bearer x")],
                200,
                &[("cache-control", "max-age=60")],
                Err(Authorization),
            ),
            (
                &[("authorization", "Bearer x")],
                200,
                &[("cache-control", "public, max-age=60")],
                Ok(()),
            ),
            (
                &[("authorization", "Bearer x")],
                200,
                &[("cache-control", "s-maxage=60")],
                Ok(()),
            ),
            (
                &[("authorization", "Bearer x")],
                200,
                &[("cache-control", "max-age=60, must-revalidate")],
                Ok(()),
            ),
            (
                &[],
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
                Err(SetCookie),
            ),
            (
                &[],
                200,
                &[
                    ("cache-control", "max-age=60, no-cache=\"set-cookie\""),
                    ("set-cookie", "a=b"),
                ],
                Ok(()),
            ),
            (
                &[],
                200,
                &[("cache-control", "max-age=60"), ("vary", "*")],
                Err(VaryStar),
            ),
            (
                &[],
                200,
                &[("cache-control", "max-age=60"), ("vary", "bad name")],
                Err(VaryMalformed),
            ),
            (&[], 200, &[("cache-control", "no-cache")], Err(NoFreshness)),
            (
                &[],
                200,
                &[("cache-control", "no-cache"), ("etag", "\"a\"")],
                Ok(()),
            ),
            (&[], 200, &[("expires", "0")], Err(NoFreshness)),
            // Surrogate-Control and CDN-Cache-Control override Cache-Control for tierd.
            (
                &[],
                200,
                &[
                    ("cache-control", "private"),
                    ("surrogate-control", "max-age=60"),
                ],
                Ok(()),
            ),
            (
                &[],
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("cdn-cache-control", "no-store"),
                ],
                Err(NoStore),
            ),
            (
                &[],
                200,
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=60"),
                ],
                Ok(()),
            ),
        ];
        for (req, status, resp, want) in table {
            assert_eq!(
                plan(req, *status, resp).map(|_| ()),
                *want,
                "{req:?} {status} {resp:?}"
            );
        }
    }

    #[test]
    fn plan_details() {
        let p = plan(
            &[],
            200,
            &[
                (
                    "cache-control",
                    "max-age=60, stale-while-revalidate=30, stale-if-error=300, must-revalidate",
                ),
                ("vary", "Accept-Encoding"),
            ],
        )
        .unwrap();
        assert_eq!(p.lifetime, Lifetime::Explicit(60));
        assert_eq!((p.stale_while_revalidate, p.stale_if_error), (30, 300));
        assert!(p.no_stale);
        assert_eq!(p.vary, vec![header::ACCEPT_ENCODING]);
        let s = plan(&[], 200, &[("cache-control", "s-maxage=60")]).unwrap();
        assert!(s.no_stale, "s-maxage implies proxy-revalidate (§5.2.2.10)");
        let stripped = plan(
            &[],
            200,
            &[(
                "cache-control",
                "max-age=1, private=\"X-User\", no-cache=\"set-cookie\"",
            )],
        )
        .unwrap();
        assert_eq!(
            stripped.strip_fields,
            vec![HeaderName::from_static("x-user"), header::SET_COOKIE]
        );
    }

    // §5.1: an invalid Age leaves the response stale on arrival, also under a lifetime a rule
    // reads from the body after the plan is made.
    #[test]
    fn an_invalid_age_is_stale_on_arrival_whatever_the_lifetime() {
        let h = hm(&[("cache-control", "max-age=60"), ("age", "old, 0")]);
        let req = RequestFacts::from_headers(&hm(&[]));
        let opts = |lifetime| StoreOptions {
            lifetime,
            ..StoreOptions::default()
        };
        let p = plan_store(&req, 200, &h, t(0), t(0), opts(LifetimeOverride::Origin)).unwrap();
        assert_eq!(p.initial_age, 60);
        let mut d =
            plan_store(&req, 200, &h, t(0), t(0), opts(LifetimeOverride::FromBody)).unwrap();
        d.finish(Some(300)).unwrap();
        assert_eq!((d.lifetime, d.initial_age), (Lifetime::Explicit(300), 300));
    }

    fn stored(lifetime: u64, age: u64) -> StoredFacts {
        StoredFacts {
            lifetime,
            age,
            stale_while_revalidate: 10,
            no_cache: false,
            no_stale: false,
        }
    }

    // RFC 9111 §4.2 and §5.2.1, RFC 5861 §3: reuse decisions.
    #[test]
    fn reuse_table() {
        let r = |h: &[(&str, &str)]| RequestFacts::from_headers(&hm(h));
        assert_eq!(reuse(&r(&[]), stored(60, 10)), Reuse::Fresh);
        assert_eq!(reuse(&r(&[]), stored(60, 60)), Reuse::StaleWhileRevalidate);
        assert_eq!(reuse(&r(&[]), stored(60, 70)), Reuse::StaleWhileRevalidate);
        assert_eq!(reuse(&r(&[]), stored(60, 71)), Reuse::Forward);
        assert_eq!(
            reuse(&r(&[("cache-control", "no-cache")]), stored(60, 10)),
            Reuse::Forward
        );
        assert_eq!(
            reuse(&r(&[("pragma", "no-cache")]), stored(60, 10)),
            Reuse::Forward
        );
        assert_eq!(
            reuse(&r(&[("cache-control", "max-age=0")]), stored(60, 10)),
            Reuse::Forward
        );
        assert_eq!(
            reuse(&r(&[("cache-control", "max-age=5")]), stored(60, 10)),
            Reuse::Forward
        );
        assert_eq!(
            reuse(&r(&[("cache-control", "min-fresh=55")]), stored(60, 10)),
            Reuse::Forward
        );
        assert_eq!(
            reuse(&r(&[("cache-control", "max-stale")]), stored(60, 500)),
            Reuse::Fresh
        );
        assert_eq!(
            reuse(&r(&[("cache-control", "max-stale=5")]), stored(60, 64)),
            Reuse::Fresh
        );
        let mut must = stored(60, 61);
        must.no_stale = true;
        assert_eq!(
            reuse(&r(&[("cache-control", "max-stale")]), must),
            Reuse::Forward
        );
        let mut nc = stored(60, 1);
        nc.no_cache = true;
        assert_eq!(reuse(&r(&[]), nc), Reuse::Forward);
        // §4.2.4: without a stale window, stale by 0 s is still stale (`max-age=0`, or a
        // lifetime just run out): validated, never reused as it is.
        let no_window = |lifetime, age| StoredFacts {
            stale_while_revalidate: 0,
            ..stored(lifetime, age)
        };
        assert_eq!(reuse(&r(&[]), no_window(0, 0)), Reuse::Forward);
        assert_eq!(reuse(&r(&[]), no_window(60, 60)), Reuse::Forward);
        assert_eq!(reuse(&r(&[]), no_window(60, 59)), Reuse::Fresh);
    }

    // RFC 9111 §4.2.2, §3.5: heuristic freshness is not for a credentialed request's response
    // unless the origin says it may be shared.
    #[test]
    fn no_heuristic_freshness_for_credentialed_requests() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let lm = [("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")];
        let plan = |req: &[(&str, &str)], res: &[(&str, &str)]| {
            plan_store(
                &RequestFacts::from_headers(&hm(req)),
                200,
                &hm(res),
                now,
                now,
                StoreOptions::default(),
            )
            .map(|p| p.lifetime)
        };
        assert!(matches!(plan(&[], &lm), Ok(Lifetime::Heuristic(_))));
        assert_eq!(
            plan(&[("cookie", "s=1")], &lm),
            Err(NotStorable::CredentialedHeuristic)
        );
        // Authorization is refused before (§3.5), whatever the freshness.
        assert_eq!(
            plan(&[("authorization", "Bearer x")], &lm),
            Err(NotStorable::Authorization)
        );
        let public = [lm[0], ("cache-control", "public")];
        assert!(
            plan(&[("cookie", "s=1")], &public).is_ok(),
            "public allows it"
        );
        let explicit = [lm[0], ("cache-control", "max-age=60")];
        assert_eq!(
            plan(&[("cookie", "s=1")], &explicit),
            Ok(Lifetime::Explicit(60))
        );
    }

    // RFC 5861 §4 and RFC 9111 §4.2.4.
    #[test]
    fn stale_if_error_window() {
        assert!(
            !may_serve_stale_on_error(0, false, 0, 0),
            "no window, no stale"
        );
        assert!(!may_serve_stale_on_error(0, false, 60, 60));
        assert!(may_serve_stale_on_error(30, false, 60, 90));
        assert!(!may_serve_stale_on_error(30, false, 60, 91));
        assert!(!may_serve_stale_on_error(30, true, 60, 70));
        assert!(
            !may_serve_stale_on_error(30, false, 60, 50),
            "fresh is not stale-if-error"
        );
    }
}
