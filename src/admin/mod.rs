//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and the `/_tierd/...` API (stats,
//! entry inspection, purge, reload). It binds to its own address (loopback by default) and is
//! never reachable through the gateway port.
//!
//! Mutating calls (`POST /_tierd/purge`, `POST /_tierd/reload`) need
//! `Authorization: Bearer <admin.token>`; with no token configured they are refused. Errors are
//! JSON objects `{"error": "..."}` that say what to change.

mod analytics;
mod page;
mod warm;

pub use page::BAR_RGB as PAGE_BAR_RGB;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cache::{CacheState, Lookup, PurgeSource};
use crate::config::Settings;
use crate::http::host;
use crate::policy::{valid_tag, RuleSet, Selector, MAX_TEXT_BYTES};
use crate::selector::{parse_key_url, trim_ows};
use crate::store::TierName;

/// Largest purge request body accepted.
pub const MAX_PURGE_BODY_BYTES: usize = 64 * 1024;
pub use crate::selector::MAX_URL_BYTES;

/// What the admin API needs besides the cache state.
#[derive(Debug, Clone, Default)]
pub struct AdminOptions {
    /// `admin.token`; empty refuses mutating calls.
    pub token: String,
    /// The config file rules are reloaded from.
    pub config_file: Option<PathBuf>,
    /// The warmer, when warming is on.
    pub warmer: Option<Arc<crate::warm::Warmer>>,
    /// The settings the node started with: a reload names the keys it changed that apply only
    /// at the next start.
    pub running: Option<Arc<Settings>>,
}

/// Registers the admin routes of the gateway's admin listener: `/metrics`, `/healthz`,
/// `/readyz` and `/_tierd/{stats,entry,purge,reload}`, and a JSON 404/405 for anything else.
pub fn configure(
    state: Arc<CacheState>,
    opts: AdminOptions,
) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        routes(cfg, state, opts, "/_tierd");
        cfg.route("/", web::get().to(to_page))
            .route("/_tierd", web::get().to(to_page))
            .route("/_tierd/reload", web::post().to(reload))
            .default_service(web::to(not_found));
    }
}

/// Registers the admin routes for an application that embeds the cache, relative to where it
/// mounts them (`web::scope("/_tierd").configure(...)`): `metrics`, `healthz`, `readyz`,
/// `stats`, `entry` and `purge`. Rules come from the application, so there is no `reload`.
pub fn mount(
    state: Arc<CacheState>,
    opts: AdminOptions,
) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg| routes(cfg, state, opts, "")
}

/// The routes both share; the API's own under `api` (`/_tierd` on the admin listener).
fn routes(cfg: &mut web::ServiceConfig, state: Arc<CacheState>, opts: AdminOptions, api: &str) {
    cfg.app_data(web::Data::from(state))
        .app_data(web::Data::new(opts))
        .route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route(
            if api.is_empty() { "/" } else { "/_tierd/" },
            web::get().to(page::page),
        )
        .route(&format!("{api}/stats"), web::get().to(stats))
        .route(&format!("{api}/entry"), web::get().to(entry))
        .route(&format!("{api}/entry"), web::head().to(entry))
        .route(&format!("{api}/purge"), web::post().to(purge))
        .route(&format!("{api}/warm"), web::post().to(warm::run))
        .route(&format!("{api}/warm"), web::get().to(warm::show))
        .route(
            &format!("{api}/analytics/summary"),
            web::get().to(analytics::summary),
        )
        .route(
            &format!("{api}/analytics/sql"),
            web::post().to(analytics::sql),
        );
}

fn error(status: StatusCode, msg: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"error": msg.into()}))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let allowed = match req.path() {
        "/_tierd/purge" | "/_tierd/reload" => Some("POST"),
        "/_tierd/warm" => Some("GET, POST"),
        "/metrics" | "/healthz" | "/readyz" | "/_tierd/stats" | "/_tierd/analytics/summary" => {
            Some("GET")
        }
        "/_tierd/entry" => Some("GET, HEAD"),
        _ => None,
    };
    match allowed {
        Some(m) if !m.split(", ").any(|m| req.method().as_str() == m) => {
            let mut res = error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} takes {m}", req.path()),
            );
            if let Ok(v) = header::HeaderValue::from_str(m) {
                res.headers_mut().insert(header::ALLOW, v);
            }
            res
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no such admin endpoint; see /_tierd/ (the page), /_tierd/stats, /_tierd/entry, /_tierd/purge, /_tierd/reload, /_tierd/warm, /_tierd/analytics/summary, /_tierd/analytics/sql, /metrics, /healthz, /readyz",
        ),
    }
}

/// The admin listener's root and `/_tierd` lead to the page.
async fn to_page() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/_tierd/"))
        .finish()
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The refusal, unless the request carries the admin token.
fn refuse(req: &HttpRequest, opts: &AdminOptions) -> Option<HttpResponse> {
    if opts.token.is_empty() {
        tracing::warn!(
            path = req.path(),
            "mutating admin call refused: no admin.token configured"
        );
        return Some(error(
            StatusCode::FORBIDDEN,
            "mutating admin calls are disabled: set admin.token (or TIERD__ADMIN__TOKEN) and send Authorization: Bearer <token>",
        ));
    }
    refuse_without_token(req, opts)
}

/// A read call (`/_tierd/stats`, `/_tierd/entry`): open while no token is configured (a
/// loopback development setup), else the token is required like for a mutating call (an
/// unauthenticated cache oracle tells an attacker what is stored).
fn refuse_read(req: &HttpRequest, opts: &AdminOptions) -> Option<HttpResponse> {
    if opts.token.is_empty() {
        return None;
    }
    refuse_without_token(req, opts)
}

/// Whether the request carries the admin token: `Authorization: Bearer <token>`, or HTTP
/// Basic with the token as the password (what a browser sends for the admin page); compared in
/// constant time.
fn token_given(req: &HttpRequest, opts: &AdminOptions) -> bool {
    use base64::Engine as _;
    let Some((scheme, value)) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
    else {
        return false;
    };
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return same(value.as_bytes(), opts.token.as_bytes());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(pair) = base64::engine::general_purpose::STANDARD.decode(value) else {
            return false;
        };
        let password = match pair.iter().position(|&b| b == b':') {
            Some(i) => &pair[i + 1..],
            None => return false,
        };
        return same(password, opts.token.as_bytes());
    }
    false
}

/// The 401, unless the request carries the admin token ([`token_given`]).
fn refuse_without_token(req: &HttpRequest, opts: &AdminOptions) -> Option<HttpResponse> {
    match token_given(req, opts) {
        true => None,
        false => {
            tracing::warn!(path = req.path(), peer = ?req.peer_addr(), "admin call refused: missing or wrong bearer token");
            let mut res = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send Authorization: Bearer <admin.token>",
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tierd\""),
            );
            Some(res)
        }
    }
}

async fn metrics(state: web::Data<CacheState>) -> HttpResponse {
    if !state.metrics.enabled() {
        return error(
            StatusCode::NOT_FOUND,
            "metrics are disabled: set [metrics] enabled = true",
        );
    }
    let l1 = state.store.l1().clone();
    // Exact counts need moka's pending maintenance; it is cheap but off the runtime thread.
    let _ = web::block(move || l1.sync()).await;
    let reports = state.store.stats();
    state
        .metrics
        .store
        .report(&reports, state.store.failed_tiers());
    for t in reports {
        let tm = state.metrics.tier(t.name);
        match t.stats {
            Some(s) => {
                tm.entries.set(s.entries as i64);
                tm.bytes.set(s.bytes as i64);
            }
            None => state.metrics.size_unknown(t.name),
        }
        tm.queue_depth.set(t.queue_depth as i64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready while the gateway can serve (L1 always can); lower tiers report their own health, and
/// a failing one makes the node `degraded`, not unready: it serves from the others.
async fn readyz(state: web::Data<CacheState>) -> HttpResponse {
    let mut degraded = false;
    let tiers: Vec<_> = state
        .store
        .stats()
        .into_iter()
        .map(|t| {
            let circuit = t.circuit.map(|c| c.as_str());
            let ok = !matches!(circuit, Some("open")) && t.healthy;
            degraded |= !ok;
            let state = if matches!(circuit, Some("open")) {
                "circuit_open"
            } else if !t.healthy {
                match t.name {
                    TierName::L2 => "unreachable",
                    _ => "reopening",
                }
            } else {
                "ok"
            };
            json!({
                "tier": t.name.as_str(),
                "ok": ok,
                "state": state,
                "circuit": circuit,
                "queue_depth": t.queue_depth,
            })
        })
        .chain(state.store.failed_tiers().iter().map(|(name, reason)| {
            json!({
                "tier": name.as_str(),
                "ok": false,
                "state": "failed",
                "error": reason,
            })
        }))
        .collect();
    degraded |= !state.store.failed_tiers().is_empty();
    HttpResponse::Ok().json(json!({
        "ready": true,
        "status": if degraded { "degraded" } else { "ok" },
        "tiers": tiers,
        "rules": state.rules.load().len(),
    }))
}

async fn stats(
    req: HttpRequest,
    state: web::Data<CacheState>,
    opts: web::Data<AdminOptions>,
) -> HttpResponse {
    if let Some(res) = refuse_read(&req, &opts) {
        return res;
    }
    let l1 = state.store.l1().clone();
    let _ = web::block(move || l1.sync()).await;
    let tiers: Vec<_> = state
        .store
        .stats()
        .into_iter()
        .map(|t| {
            json!({
                "tier": t.name.as_str(),
                "entries": t.stats.map(|s| s.entries),
                "bytes": t.stats.map(|s| s.bytes),
                "queue_depth": t.queue_depth,
                "circuit": t.circuit.map(|c| c.as_str()),
            })
        })
        .collect();
    let rules = state.rules.load();
    HttpResponse::Ok().json(json!({
        "tiers": tiers,
        "hits": hit_counts(&state),
        "in_flight_fetches": state.flights.len(),
        "l1_indexed_tags": state.store.l1().indexed_tags(),
        "rules": rules.rules().map(|r| json!({"name": r.name, "path": r.template.as_str()})).collect::<Vec<_>>(),
        "node": node(&state),
    }))
}

/// Hits, misses and hit ratio since start, per tier (its lookups: a fresh or stale entry found
/// is a hit) and overall (requests: answered from storage, against those that went to the
/// origin after a lookup; passes and refusals are neither).
fn hit_counts(state: &CacheState) -> Value {
    use crate::metrics::{Lookup, Outcome};
    let ratio = |h: u64, m: u64| {
        if h + m == 0 {
            0.0
        } else {
            h as f64 / (h + m) as f64
        }
    };
    let mut out = serde_json::Map::new();
    for t in TierName::ALL {
        let m = state.metrics.tier(t);
        let hits = m.lookups(Lookup::Hit) + m.lookups(Lookup::Stale);
        let misses = m.lookups(Lookup::Miss) + m.lookups(Lookup::Error);
        out.insert(
            t.as_str().into(),
            json!({"hits": hits, "misses": misses, "hit_ratio": ratio(hits, misses)}),
        );
    }
    let n = |o| state.metrics.answered(o);
    let hits = n(Outcome::Hit)
        + n(Outcome::StaleWhileRevalidate)
        + n(Outcome::StaleIfError)
        + n(Outcome::StaleOriginLimited);
    let misses = n(Outcome::Miss) + n(Outcome::Collapsed) + n(Outcome::Revalidated);
    out.insert(
        "overall".into(),
        json!({"hits": hits, "misses": misses, "hit_ratio": ratio(hits, misses)}),
    );
    Value::Object(out)
}

/// This node's id on the invalidation bus (none without Redis).
fn node(state: &CacheState) -> Option<String> {
    #[cfg(feature = "redis")]
    if let Some(bus) = &state.bus {
        return Some(bus.node().to_string());
    }
    let _ = state;
    None
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    url: Option<String>,
    prefix: Option<String>,
    tag: Option<String>,
    user: Option<String>,
    all: Option<bool>,
}

const PURGE_EXAMPLES: &str = "{\"tag\": \"assessment:42\"}, {\"url\": \"/api/x\"}, {\"prefix\": \"/api/\"}, {\"user\": \"<the value key.user reads>\"} or {\"all\": true}";

/// The selector a purge body asks for.
fn purge_selector(state: &CacheState, body: &[u8]) -> Result<Selector, String> {
    let b: PurgeBody = serde_json::from_slice(body).map_err(|e| {
        format!("body is not a purge request ({e}); send JSON such as {PURGE_EXAMPLES}")
    })?;
    match (b.url, b.prefix, b.tag, b.user, b.all) {
        (Some(url), None, None, None, None) => {
            let u = parse_key_url(&url, "url")?;
            // Without a query: the bare URL; with one: normalised as the GET rule keys it.
            let query = match &u.query {
                Some(q) => state.rules.load().key_query(&u.path, q),
                None => String::new(),
            };
            Ok(Selector::Url {
                host: u.host.map(|h| host::normalized(h.as_bytes())),
                path: u.path,
                query: Some(query),
            })
        }
        (None, Some(prefix), None, None, None) => {
            if prefix.len() > MAX_TEXT_BYTES {
                return Err(format!(
                    "prefix is {} bytes; at most {MAX_TEXT_BYTES} (a prefix is a literal path start such as \"/api/\")",
                    prefix.len()
                ));
            }
            let u = parse_key_url(&prefix, "prefix")?;
            if u.query.is_some() {
                return Err("prefix: a prefix is a path start, without '?'".into());
            }
            Ok(Selector::Prefix {
                host: u.host.map(|h| host::normalized(h.as_bytes())),
                prefix: u.path,
            })
        }
        (None, None, Some(tag), None, None) => {
            if !valid_tag(&tag) {
                return Err(format!(
                    "tag: must be 1 to {MAX_TEXT_BYTES} printable ASCII characters without spaces"
                ));
            }
            Ok(Selector::Tag(tag))
        }
        (None, None, None, Some(user), None) => {
            // As a request carries it: a header value, without the whitespace around it.
            let value = trim_ows(user.as_bytes());
            if value.is_empty() || value.len() > MAX_URL_BYTES {
                return Err(format!(
                    "user: give the value the rules' key.user reads (the whole Authorization value, or the header's), 1 to {MAX_URL_BYTES} bytes"
                ));
            }
            if header::HeaderValue::from_bytes(value).is_err() {
                return Err("user: not a valid header value (visible ASCII, spaces and tabs)".into());
            }
            Ok(Selector::user(value))
        }
        (None, None, None, None, Some(true)) => Ok(Selector::All),
        (None, None, None, None, Some(false)) => {
            Err("all: send {\"all\": true} to purge every entry, or another selector".into())
        }
        _ => Err(format!(
            "give exactly one of \"url\", \"prefix\", \"tag\", \"user\" or \"all\", e.g. {PURGE_EXAMPLES}"
        )),
    }
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, HttpResponse> {
    use futures_util::StreamExt;
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| error(StatusCode::BAD_REQUEST, format!("body unreadable: {e}")))?;
        if buf.len() + chunk.len() > limit {
            tracing::warn!(limit, "purge refused: body too large");
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over {limit} bytes; a purge body is a small JSON object"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

async fn purge(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<CacheState>,
    opts: web::Data<AdminOptions>,
) -> HttpResponse {
    if let Some(res) = refuse(&req, &opts) {
        return res;
    }
    let body = match read_body(payload, MAX_PURGE_BODY_BYTES).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let selector = match purge_selector(&state, &body) {
        Ok(s) => s,
        Err(msg) => {
            tracing::warn!(error = %msg, "purge refused: bad request");
            return error(StatusCode::BAD_REQUEST, msg);
        }
    };
    let results = state.invalidate(&selector, PurgeSource::Admin).await;
    let mut purged = serde_json::Map::new();
    let mut errors = serde_json::Map::new();
    for (tier, r) in results {
        match r {
            Ok(n) => {
                purged.insert(tier.as_str().into(), json!(n));
            }
            Err(e) => {
                errors.insert(tier.as_str().into(), json!(e.to_string()));
            }
        }
    }
    tracing::info!(selector = ?selector, purged = ?purged, failed = ?errors, "purged");
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        // Some tier could not apply it: the caller should retry.
        StatusCode::BAD_GATEWAY
    };
    HttpResponse::build(status).json(json!({
        "selector": serde_json::to_value(&selector).unwrap_or(Value::Null),
        "purged": purged,
        "errors": errors,
    }))
}

/// `GET /_tierd/entry`'s query: `url`, and for routes whose key holds them, `user` (the value
/// `key.user` reads) and `header` (`name: value`, repeatable, for `key.headers`).
fn entry_lookup(query: &str) -> Result<Lookup, String> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|e| format!("query unreadable ({e}); percent-encode the values"))?
        .into_inner();
    let mut url = None;
    let mut user = None;
    let mut headers = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "url" if url.is_none() => url = Some(value),
            "user" if user.is_none() => user = Some(value),
            "header" => {
                let Some((n, v)) = value.split_once(':') else {
                    return Err(format!(
                        "header={value}: give name: value, e.g. header=accept-language:fr"
                    ));
                };
                headers.push((n.to_owned(), v.to_owned()));
            }
            "url" | "user" => return Err(format!("give {name} once")),
            other => {
                return Err(format!(
                    "unknown parameter '{other}'; give url=, and user= or header=name:value for variants"
                ))
            }
        }
    }
    let Some(url) = url else {
        return Err("give ?url=http://<host as clients send it>/path".into());
    };
    let mut lookup = Lookup::new(url);
    if let Some(u) = user {
        lookup = lookup.user(u);
    }
    for (n, v) in headers {
        lookup = lookup.header(n, v);
    }
    Ok(lookup)
}

/// Where an entry is held: per tier, its variants with status, TTL, age, size and tags. 200
/// when some tier holds it, 404 when none does, 502 when none does and some tier could not
/// answer. `HEAD` answers the same status without the body.
async fn entry(
    req: HttpRequest,
    state: web::Data<CacheState>,
    opts: web::Data<AdminOptions>,
) -> HttpResponse {
    if let Some(res) = refuse_read(&req, &opts) {
        return res;
    }
    let inspected = match entry_lookup(req.query_string()) {
        Ok(lookup) => state.inspect(&lookup).await,
        Err(e) => Err(e),
    };
    let inspected = match inspected {
        Ok(i) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let status = if inspected.cached() {
        StatusCode::OK
    } else if inspected.unknown() {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::NOT_FOUND
    };
    if req.method() == Method::HEAD {
        return HttpResponse::build(status)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish();
    }
    let now = state.clock.now();
    let mut tiers = serde_json::Map::new();
    for (name, r) in &inspected.tiers {
        let v = match r {
            Ok(Some(d)) => Value::Array(
                d.slot
                    .variants
                    .iter()
                    .map(|e| {
                        json!({
                            "status": e.status.as_u16(),
                            "ttl_seconds": e.ttl(now),
                            "age_seconds": e.age(now),
                            "body_bytes": e.body.len(),
                            "tags": e.tags,
                            "vary": !e.vary.is_empty(),
                        })
                    })
                    .collect(),
            ),
            Ok(None) => Value::Null,
            Err(e) => json!({"error": e.to_string()}),
        };
        tiers.insert(name.as_str().into(), v);
    }
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "key": inspected.key,
            "route": inspected.route,
            "cached": inspected.cached(),
            "tiers": tiers,
        }))
}

async fn reload(
    req: HttpRequest,
    state: web::Data<CacheState>,
    opts: web::Data<AdminOptions>,
) -> HttpResponse {
    if let Some(res) = refuse(&req, &opts) {
        return res;
    }
    let file = opts.config_file.clone();
    let running = opts.running.clone();
    let st = state.into_inner();
    // Reading and parsing the file is blocking work.
    let result = web::block(move || reload_rules(&st, file.as_deref(), running.as_deref())).await;
    match result {
        Ok(Ok(r)) => HttpResponse::Ok().json(json!({
            "reloaded": true,
            "rules": r.rules,
            "restart_required": r.restart_required,
        })),
        Ok(Err(e)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{e}; the previous rules stay in force"),
        ),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload failed"),
    }
}

/// What a reload applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloaded {
    /// Rules now in force.
    pub rules: usize,
    /// Keys outside `[[rules]]` whose value differs from the running one: they apply at the
    /// next start (`server.workers`, `tiers.l2.url`, ...).
    pub restart_required: Vec<String>,
}

/// Reloads `[[rules]]` from the config file (and the environment). A file that does not load
/// or validate changes nothing; the error names the rule and the key. `running`: the settings
/// the node started with, to name the changed keys a reload cannot apply.
pub fn reload_rules(
    state: &CacheState,
    file: Option<&Path>,
    running: Option<&Settings>,
) -> Result<Reloaded, String> {
    let outcome = Settings::load(file)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            let rules = RuleSet::compile(&s.rules, &state.metrics)?;
            let restart_required = running.map(|r| r.changed_keys(&s)).unwrap_or_default();
            Ok((rules, restart_required))
        });
    match outcome {
        Ok((rules, restart_required)) => {
            let n = rules.len();
            state.set_rules(rules);
            state.metrics.rules.reloads.with_label_values(&["ok"]).inc();
            state.metrics.rules.loaded_ok();
            if restart_required.is_empty() {
                tracing::info!(rules = n, config = ?file, "rules reloaded");
            } else {
                tracing::warn!(rules = n, config = ?file, restart_required = %restart_required.join(", "),
                    "rules reloaded; the other changed keys apply only at the next restart");
            }
            Ok(Reloaded {
                rules: n,
                restart_required,
            })
        }
        Err(e) => {
            state.metrics.rules.reload_rejected();
            tracing::error!(error = %e, config = ?file, "rules reload rejected; the previous rules stay in force");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
