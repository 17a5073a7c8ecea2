//! `[[rules]]`: their config shape and their compiled form.

use std::collections::BTreeMap;

use actix_web::http::header::HeaderName;
use actix_web::http::Method;
use serde::Deserialize;

use super::template::{placeholders, Template};
use crate::types::TierName;

/// One `[[rules]]` table as written in the config file.
#[derive(Debug, Clone, serde::Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Shown in logs and errors; defaults to `rules[<index>]`.
    pub name: Option<String>,
    /// Route template, e.g. `/api/assessments/{id}`; also the `route` metric label.
    pub path: String,
    /// Methods the rule applies to; `GET` covers `HEAD`. Default `["GET"]`.
    pub methods: Option<Vec<String>>,
    /// Send matching requests straight to the origin; nothing is stored.
    pub pass: bool,
    /// Freshness lifetime for statuses cacheable by default, replacing the origin's.
    pub ttl_seconds: Option<i64>,
    /// Freshness per status code (`404 = 10`); `0` means do not store.
    pub ttl_by_status: BTreeMap<String, i64>,
    /// Freshness chosen from a JSON field of a 2xx body.
    pub ttl_by_field: Option<TtlByFieldConfig>,
    pub stale_while_revalidate_seconds: Option<i64>,
    pub stale_if_error_seconds: Option<i64>,
    /// Query parameters whose presence sends the request to the origin and stores nothing.
    pub bypass_query_params: Vec<String>,
    /// Query parameters whose presence refetches from the origin and replaces the stored entry
    /// (the key is computed without them).
    pub refresh_query_params: Vec<String>,
    /// Request headers whose presence sends the request to the origin and stores nothing.
    pub bypass_headers: Vec<String>,
    /// Honour the client's `Cache-Control: no-cache` / `max-age=0` / `Pragma: no-cache`.
    pub respect_client_no_cache: Option<bool>,
    pub key: KeyConfig,
    /// Tags (surrogate keys) for stored responses; `{param}` expands path parameters.
    pub tags: Vec<String>,
    /// What a successful (2xx) request with one of `methods` purges.
    pub invalidate: Option<InvalidateConfig>,
    /// Tiers the rule's entries live in; must include `l1`. Default: every configured tier.
    pub tiers: Option<Vec<String>>,
    /// A per-client quota on the requests this rule matches, on top of `[rate_limit]`.
    pub rate_limit: Option<QuotaConfig>,
    /// With `[warming]` on: after a purge, the rule's hot URLs that were purged are fetched
    /// again at once (so the next client finds them fresh).
    pub warm_after_purge: bool,
}

/// A rate and a burst: `{ requests_per_second = 5, burst = 10 }`, optionally
/// `dry_run = true` (measured and counted, never enforced).
#[derive(Debug, Clone, Copy, serde::Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub requests_per_second: f64,
    pub burst: u32,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, serde::Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TtlByFieldConfig {
    /// RFC 6901 JSON pointer, e.g. `/status`.
    pub pointer: String,
    /// TTL per field value (strings as they are; numbers and booleans as JSON text).
    pub values: BTreeMap<String, i64>,
    /// TTL when the field is missing or has another value; without it the rule's other TTLs
    /// (or the origin's) apply.
    pub default: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeyConfig {
    /// Query parameters left out of the key (`utm_*` matches a prefix).
    pub ignore_query_params: Vec<String>,
    /// Sort query parameters so that `?a=1&b=2` and `?b=2&a=1` share an entry.
    pub sort_query_params: bool,
    /// Request headers whose values become part of the key.
    pub headers: Vec<String>,
    /// Per-user scope: `"authorization"` or `"header:<name>"`. Entries are then private to the
    /// user (keyed by a SHA-256 of the value) and never shared across users.
    pub user: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InvalidateConfig {
    pub tags: Vec<String>,
    /// Paths purged with every query string, on every host.
    pub paths: Vec<String>,
    /// Literal path prefixes purged on every host.
    pub prefixes: Vec<String>,
}

/// Where the per-user scope comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserScope {
    Authorization,
    Header(HeaderName),
}

/// A query-parameter name pattern: exact, or a prefix when written with a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamPattern {
    text: String,
    prefix: bool,
}

impl ParamPattern {
    fn new(p: &str) -> Self {
        match p.strip_suffix('*') {
            Some(t) => ParamPattern {
                text: t.to_owned(),
                prefix: true,
            },
            None => ParamPattern {
                text: p.to_owned(),
                prefix: false,
            },
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        if self.prefix {
            name.starts_with(&self.text)
        } else {
            name == self.text
        }
    }
}

/// The state-dependent TTL: a JSON pointer and a TTL per value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlByField {
    pub pointer: String,
    pub values: BTreeMap<String, u64>,
    pub default: Option<u64>,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub template: Template,
    /// Matches GET and HEAD.
    pub get: bool,
    pub methods: Vec<Method>,
    pub pass: bool,
    pub ttl: Option<u64>,
    pub ttl_by_status: BTreeMap<u16, u64>,
    pub ttl_by_field: Option<TtlByField>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    pub bypass_query: Vec<ParamPattern>,
    pub refresh_query: Vec<ParamPattern>,
    pub bypass_headers: Vec<HeaderName>,
    pub respect_client_no_cache: bool,
    pub ignore_query: Vec<ParamPattern>,
    pub sort_query: bool,
    pub key_headers: Vec<HeaderName>,
    pub user: Option<UserScope>,
    pub tags: Vec<String>,
    pub invalidate_tags: Vec<String>,
    pub invalidate_paths: Vec<String>,
    pub invalidate_prefixes: Vec<String>,
    /// `None`: every configured tier.
    pub tiers: Option<Vec<TierName>>,
    /// The rule's per-client quota, validated.
    pub rate_limit: Option<QuotaConfig>,
    /// Rewarm its hot URLs after a purge.
    pub warm_after_purge: bool,
}

const KNOWN_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Longest tag, path or prefix a rule may name.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Tags travel in headers, Redis keys and DuckDB rows: printable ASCII without spaces.
pub fn valid_tag(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TEXT_BYTES && t.bytes().all(|b| b.is_ascii_graphic())
}

fn ttl_value(label: &str, v: i64) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| {
        format!("{label} = {v}: a TTL must be 0 or more seconds (0 means do not store)")
    })
}

impl RuleConfig {
    /// Validates and compiles the rule; errors name the key and what to change (the caller
    /// prefixes the rule's name).
    pub fn compile(&self, index: usize) -> Result<Rule, String> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("rules[{index}]"));
        if self.path.is_empty() {
            return Err("path: missing; give a route template such as \"/api/items/{id}\"".into());
        }
        let template = Template::parse(&self.path).map_err(|e| format!("path: {e}"))?;
        let mut methods = Vec::new();
        let written = self.methods.clone().unwrap_or_else(|| vec!["GET".into()]);
        if written.is_empty() {
            return Err("methods: empty; list at least one, e.g. [\"GET\"]".into());
        }
        for m in &written {
            let upper = m.to_ascii_uppercase();
            if !KNOWN_METHODS.contains(&upper.as_str()) {
                return Err(format!(
                    "methods: '{m}' is not one of {}",
                    KNOWN_METHODS.join(", ")
                ));
            }
            let method = Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        let get = methods.contains(&Method::GET) || methods.contains(&Method::HEAD);
        let unsafe_methods = methods
            .iter()
            .any(|m| !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS));

        let ttl = self
            .ttl_seconds
            .map(|v| ttl_value("ttl_seconds", v))
            .transpose()?;
        let mut ttl_by_status = BTreeMap::new();
        for (code, v) in &self.ttl_by_status {
            let status: u16 = code
                .parse()
                .ok()
                .filter(|s| (200..=599).contains(s) && *s != 206 && *s != 304)
                .ok_or_else(|| {
                    format!(
                        "ttl_by_status: '{code}' is not a status code tierd can store (200-599, not 206 or 304)"
                    )
                })?;
            ttl_by_status.insert(status, ttl_value(&format!("ttl_by_status.{code}"), *v)?);
        }
        let ttl_by_field = match &self.ttl_by_field {
            None => None,
            Some(f) => {
                if !(f.pointer.is_empty() || f.pointer.starts_with('/')) {
                    return Err(format!(
                        "ttl_by_field.pointer: '{}' is not a JSON pointer; it starts with '/', e.g. \"/status\"",
                        f.pointer
                    ));
                }
                if let Some(bad) = pointer_escape_error(&f.pointer) {
                    return Err(format!("ttl_by_field.pointer: '{}': {bad}", f.pointer));
                }
                if f.values.is_empty() && f.default.is_none() {
                    return Err("ttl_by_field.values: empty; map field values to TTLs, e.g. { in_progress = 60, completed = 300 }".into());
                }
                let mut values = BTreeMap::new();
                for (k, v) in &f.values {
                    values.insert(
                        k.clone(),
                        ttl_value(&format!("ttl_by_field.values.{k}"), *v)?,
                    );
                }
                Some(TtlByField {
                    pointer: f.pointer.clone(),
                    values,
                    default: f
                        .default
                        .map(|v| ttl_value("ttl_by_field.default", v))
                        .transpose()?,
                })
            }
        };
        let stale_while_revalidate = self
            .stale_while_revalidate_seconds
            .map(|v| ttl_value("stale_while_revalidate_seconds", v))
            .transpose()?;
        let stale_if_error = self
            .stale_if_error_seconds
            .map(|v| ttl_value("stale_if_error_seconds", v))
            .transpose()?;

        let params = |key: &str, list: &[String]| -> Result<Vec<ParamPattern>, String> {
            list.iter()
                .map(|p| {
                    if p.is_empty() || p == "*" || p.contains(['&', '=', ' ']) {
                        Err(format!("{key}: '{p}' is not a query parameter name"))
                    } else {
                        Ok(ParamPattern::new(p))
                    }
                })
                .collect()
        };
        let headers = |key: &str, list: &[String]| -> Result<Vec<HeaderName>, String> {
            list.iter()
                .map(|h| {
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("{key}: '{h}' is not a header name"))
                })
                .collect()
        };
        let user = match self.key.user.as_deref() {
            None => None,
            Some(u) if u.eq_ignore_ascii_case("authorization") => Some(UserScope::Authorization),
            Some(u) => match u.strip_prefix("header:") {
                Some(h) => Some(UserScope::Header(
                    HeaderName::from_bytes(h.trim().as_bytes())
                        .map_err(|_| format!("key.user: '{h}' is not a header name"))?,
                )),
                None => {
                    return Err(format!(
                        "key.user: '{u}' is not a scope; use \"authorization\" or \"header:<name>\", e.g. \"header:X-User-Id\""
                    ))
                }
            },
        };

        for (i, t) in self.tags.iter().enumerate() {
            check_text(&template, &format!("tags[{i}]"), t, valid_tag)?;
        }
        let inv = self.invalidate.clone().unwrap_or_default();
        if self.invalidate.is_some() && !unsafe_methods {
            return Err(format!(
                "invalidate: has no effect because methods ({}) has no POST, PUT, PATCH or DELETE",
                written.join(", ")
            ));
        }
        for (i, t) in inv.tags.iter().enumerate() {
            check_text(&template, &format!("invalidate.tags[{i}]"), t, valid_tag)?;
        }
        for (key, list) in [("paths", &inv.paths), ("prefixes", &inv.prefixes)] {
            for (i, p) in list.iter().enumerate() {
                check_text(&template, &format!("invalidate.{key}[{i}]"), p, |s| {
                    s.starts_with('/')
                        && s.len() <= MAX_TEXT_BYTES
                        && s.bytes().all(|b| b.is_ascii_graphic())
                        && !s.contains(['?', '#'])
                })?;
            }
        }
        let caching_keys = self.ttl_seconds.is_some()
            || !self.ttl_by_status.is_empty()
            || self.ttl_by_field.is_some()
            || !self.tags.is_empty()
            || !self.bypass_query_params.is_empty()
            || self.key != KeyConfig::default();
        if caching_keys && !get {
            return Err(format!(
                "ttl, key and tag settings have no effect because methods ({}) has no GET",
                written.join(", ")
            ));
        }
        let tiers = match &self.tiers {
            None => None,
            Some(list) => {
                let mut out = Vec::new();
                for t in list {
                    out.push(match t.as_str() {
                        "l1" => TierName::L1,
                        "l2" => TierName::L2,
                        "l3" => TierName::L3,
                        other => {
                            return Err(format!("tiers: '{other}' is not a tier; use l1, l2, l3"))
                        }
                    });
                }
                if !out.contains(&TierName::L1) {
                    return Err(
                        "tiers: must include \"l1\" (every entry passes through memory), e.g. [\"l1\", \"l2\"]"
                            .into(),
                    );
                }
                Some(out)
            }
        };
        if let Some(q) = &self.rate_limit {
            crate::ratelimit::check_quota("rate_limit", q.requests_per_second, q.burst)?;
        }
        Ok(Rule {
            name,
            template,
            get,
            methods,
            pass: self.pass,
            ttl,
            ttl_by_status,
            ttl_by_field,
            stale_while_revalidate,
            stale_if_error,
            bypass_query: params("bypass_query_params", &self.bypass_query_params)?,
            refresh_query: params("refresh_query_params", &self.refresh_query_params)?,
            bypass_headers: headers("bypass_headers", &self.bypass_headers)?,
            respect_client_no_cache: self.respect_client_no_cache.unwrap_or(true),
            ignore_query: params("key.ignore_query_params", &self.key.ignore_query_params)?,
            sort_query: self.key.sort_query_params,
            key_headers: headers("key.headers", &self.key.headers)?,
            user,
            tags: self.tags.clone(),
            invalidate_tags: inv.tags,
            invalidate_paths: inv.paths,
            invalidate_prefixes: inv.prefixes,
            tiers,
            rate_limit: self.rate_limit,
            warm_after_purge: self.warm_after_purge,
        })
    }
}

/// Checks a text with `{param}` placeholders: each names a path parameter, and the text with
/// placeholders removed passes `valid`.
fn check_text(
    template: &Template,
    key: &str,
    text: &str,
    valid: impl Fn(&str) -> bool,
) -> Result<(), String> {
    for p in placeholders(text).map_err(|e| format!("{key}: {e}"))? {
        if !template.has_param(p) {
            return Err(format!(
                "{key}: '{{{p}}}' is not a parameter of path '{}'",
                template.as_str()
            ));
        }
    }
    let bare: String = text.replace(['{', '}'], "");
    if !valid(&bare) {
        return Err(format!(
            "{key}: '{text}' is not allowed (printable ASCII without spaces, at most {MAX_TEXT_BYTES} bytes; paths and prefixes start with '/' and have no query)"
        ));
    }
    Ok(())
}

/// RFC 6901: `~` is only valid as `~0` or `~1`.
fn pointer_escape_error(p: &str) -> Option<&'static str> {
    let b = p.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'~' && !matches!(b.get(i + 1), Some(b'0' | b'1')) {
            return Some("'~' must be escaped as ~0 (and '/' inside a name as ~1)");
        }
    }
    None
}
