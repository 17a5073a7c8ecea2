//! Config rules (`[[rules]]`): which requests are cached, under which key, for how long, with
//! which tags, and what a mutation invalidates. First match (method and route template) wins;
//! requests no rule matches get the plain RFC 9111 shared-cache behaviour.
//!
//! Everything here is a pure function of the request, the response and the rule; the
//! [`ResponseCache`](crate::cache::ResponseCache) middleware applies the decisions.
//!
//! ```
//! use tierd::policy::{RuleConfig, RuleSet};
//! let rule: RuleConfig = toml_rule(r#"
//!     path = "/api/assessments/{id}"
//!     ttl_by_field = { pointer = "/status", values = { in_progress = 60, completed = 300 } }
//!     tags = ["assessment:{id}"]
//! "#);
//! let rules = RuleSet::compile(&[rule], &tierd::metrics::Metrics::new()).unwrap();
//! let m = rules.find(&actix_web::http::Method::GET, "/api/assessments/7").unwrap();
//! assert_eq!(m.tags(), vec!["assessment:7".to_owned()]);
//! assert_eq!(m.rule().ttl_from_body(br#"{"status":"completed"}"#), Some(300));
//! # fn toml_rule(s: &str) -> RuleConfig {
//! #     config::Config::builder().add_source(config::File::from_str(s, config::FileFormat::Toml))
//! #         .build().unwrap().try_deserialize().unwrap()
//! # }
//! ```

mod metrics;
mod rule;
mod template;

use std::sync::Arc;

use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::http::Method;

pub use metrics::RuleMetrics;
pub use rule::{
    valid_tag, InvalidateConfig, KeyConfig, ParamPattern, QuotaConfig, Rule, RuleConfig,
    TtlByField, TtlByFieldConfig, UserScope, MAX_TEXT_BYTES,
};
pub use template::{expand, placeholders, Params, Template, TemplateError};

use crate::http::freshness;
pub use crate::http::storable::LifetimeOverride;
use crate::metrics::{Metrics, RouteCounters};
use crate::ratelimit::Limiter;
pub use crate::selector::{path_tag, user_digest, user_tag, KeyParts, Selector};
use crate::types::TierName;

/// Validates and compiles `configs`; the error names the rule and the key, and says what to
/// change.
pub fn compile_all(configs: &[RuleConfig]) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::with_capacity(configs.len());
    for (i, c) in configs.iter().enumerate() {
        let rule = c.compile(i).map_err(|e| match &c.name {
            Some(n) => format!("rules[{i}] (\"{n}\"): {e}"),
            None => format!("rules[{i}] (path \"{}\"): {e}", c.path),
        })?;
        rules.push(rule);
    }
    Ok(rules)
}

/// The compiled rules, in order, with their metric children and their quotas' buckets.
#[derive(Clone)]
pub struct RuleSet {
    rules: Vec<(Rule, Arc<RouteCounters>)>,
    unmatched: Arc<RouteCounters>,
    /// One per rule: the buckets of its `rate_limit`, once attached.
    limiters: Vec<Option<Arc<Limiter>>>,
    /// Whether any rule has buckets attached (asked on every request).
    any_limiter: bool,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|(r, _)| &r.name))
            .finish()
    }
}

/// The rule a request matched (`None`: no rule), in the rule set it was looked up in. A layer
/// that matched a request already leaves it in the request's extensions, so the cache does
/// not match it again.
#[derive(Clone)]
pub struct RouteMatch {
    pub rules: Arc<RuleSet>,
    pub index: Option<usize>,
}

/// A rule that matched a request, with the captured path parameters.
pub struct Matched<'a> {
    index: usize,
    rule: &'a Rule,
    params: Params<'a>,
    counters: &'a Arc<RouteCounters>,
    limiter: Option<&'a Arc<Limiter>>,
}

impl RuleSet {
    /// Validates every rule; the error names the rule and the key, and says what to change.
    pub fn compile(configs: &[RuleConfig], metrics: &Metrics) -> Result<RuleSet, String> {
        let rules = compile_all(configs)?
            .into_iter()
            .map(|rule| {
                let counters = Arc::new(metrics.route_counters(rule.template.as_str()));
                (rule, counters)
            })
            .collect::<Vec<_>>();
        Ok(RuleSet {
            limiters: vec![None; rules.len()],
            any_limiter: false,
            rules,
            unmatched: Arc::new(metrics.route_counters(crate::metrics::OTHER_ROUTE)),
        })
    }

    /// Gives each rule with a `rate_limit` its buckets (`make` may hand back a previous set's,
    /// so a reload that keeps a quota keeps its clients' state).
    pub fn attach_limiters(&mut self, mut make: impl FnMut(&Rule) -> Option<Arc<Limiter>>) {
        self.limiters = self.rules.iter().map(|(r, _)| make(r)).collect();
        self.any_limiter = self.limiters.iter().any(Option::is_some);
    }

    /// Whether any rule has a quota with buckets attached.
    #[inline]
    pub fn has_limiters(&self) -> bool {
        self.any_limiter
    }

    /// The rules' buckets, with the rules they belong to.
    pub fn limiters(&self) -> impl Iterator<Item = (&Rule, &Arc<Limiter>)> {
        self.rules
            .iter()
            .zip(&self.limiters)
            .filter_map(|((r, _), l)| l.as_ref().map(|l| (r, l)))
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule matching `method` (HEAD counts as GET) and `path`.
    pub fn find<'a>(&'a self, method: &Method, path: &'a str) -> Option<Matched<'a>> {
        let is_get = *method == Method::GET || *method == Method::HEAD;
        self.rules
            .iter()
            .enumerate()
            .find_map(|(index, (rule, counters))| {
                let applies = if is_get {
                    rule.get
                } else {
                    rule.methods.contains(method)
                };
                if !applies {
                    return None;
                }
                rule.template.matches(path).map(|params| Matched {
                    index,
                    rule,
                    params,
                    counters,
                    limiter: self.limiters.get(index).and_then(Option::as_ref),
                })
            })
    }

    /// `query` as the GET rule for `path` puts it in keys (unchanged when no rule matches).
    pub fn key_query(&self, path: &str, query: &str) -> String {
        match self.find(&Method::GET, path) {
            Some(m) => m.rule().key_query(query),
            None => query.to_owned(),
        }
    }

    /// The rule at `index` (as given by [`Matched::index`]).
    pub fn rule(&self, index: usize) -> &Rule {
        &self.rules[index].0
    }

    /// The rules in order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|(r, _)| r)
    }

    /// The counters of requests no rule matched.
    pub fn unmatched(&self) -> &Arc<RouteCounters> {
        &self.unmatched
    }

    /// The counters of the rule at `index`, or of requests no rule matched.
    pub fn counters(&self, index: Option<usize>) -> &Arc<RouteCounters> {
        match index {
            Some(i) => &self.rules[i].1,
            None => &self.unmatched,
        }
    }
}

impl<'a> Matched<'a> {
    /// The rule's position in its set.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn rule(&self) -> &'a Rule {
        self.rule
    }

    pub fn counters(&self) -> &'a Arc<RouteCounters> {
        self.counters
    }

    /// The buckets of the rule's `rate_limit`, if it has one.
    pub fn limiter(&self) -> Option<&'a Arc<Limiter>> {
        self.limiter
    }

    /// The rule's tags with path parameters filled in.
    pub fn tags(&self) -> Vec<String> {
        self.rule.tags_with(&self.params)
    }

    /// What a successful mutation matched by this rule purges.
    pub fn invalidations(&self) -> Vec<Selector> {
        self.rule.invalidations_with(&self.params)
    }
}

/// Why a request was sent to the origin without using the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Bypass {
    /// The rule says `pass = true`.
    Rule,
    /// A `bypass_query_params` parameter is present.
    QueryParam,
    /// A `bypass_headers` header is present.
    Header,
}

impl Bypass {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Splits a raw query into `(name, value)` pairs as sent (no decoding); empty pieces dropped.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.find('=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, ""),
        })
}

/// The parameter name compared with rule patterns: percent-decoded when that yields UTF-8.
fn param_name(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains(['%', '+']) {
        return raw.into();
    }
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map(Into::into)
        .unwrap_or_else(|_| raw.into())
}

fn any_param(query: &str, patterns: &[ParamPattern]) -> bool {
    !patterns.is_empty()
        && query_pairs(query).any(|(n, _)| {
            let n = param_name(n);
            patterns.iter().any(|p| p.matches(&n))
        })
}

impl Rule {
    /// The rule's tags for `path`, with path parameters filled in (none when it does not match).
    pub fn tags_for(&self, path: &str) -> Vec<String> {
        if self.tags.is_empty() {
            return Vec::new();
        }
        self.template
            .matches(path)
            .map(|p| self.tags_with(&p))
            .unwrap_or_default()
    }

    /// What a successful mutation of `path` purges under this rule.
    pub fn invalidations_for(&self, path: &str) -> Vec<Selector> {
        self.template
            .matches(path)
            .map(|p| self.invalidations_with(&p))
            .unwrap_or_default()
    }

    fn tags_with(&self, params: &Params<'_>) -> Vec<String> {
        self.tags
            .iter()
            .map(|t| expand(t, params))
            .filter(|t| valid_tag(t))
            .collect()
    }

    /// Tags, paths (every query string, every host) and prefixes (every host).
    fn invalidations_with(&self, params: &Params<'_>) -> Vec<Selector> {
        let tags = self
            .invalidate_tags
            .iter()
            .map(|t| expand(t, params))
            .filter(|t| valid_tag(t))
            .map(Selector::Tag);
        let paths = self.invalidate_paths.iter().map(|p| Selector::Url {
            host: None,
            path: expand(p, params),
            query: None,
        });
        let prefixes = self.invalidate_prefixes.iter().map(|p| Selector::Prefix {
            host: None,
            prefix: expand(p, params),
        });
        tags.chain(paths).chain(prefixes).collect()
    }

    /// Whether the request skips the cache, and why.
    pub fn bypass(&self, query: &str, headers: &HeaderMap) -> Option<Bypass> {
        if self.pass {
            return Some(Bypass::Rule);
        }
        if any_param(query, &self.bypass_query) {
            return Some(Bypass::QueryParam);
        }
        if self.bypass_headers.iter().any(|h| headers.contains_key(h)) {
            return Some(Bypass::Header);
        }
        None
    }

    /// Whether a `refresh_query_params` parameter asks for a refetch.
    pub fn refresh(&self, query: &str) -> bool {
        any_param(query, &self.refresh_query)
    }

    /// The header the rule's `key.user` reads, when it keys by user.
    pub fn user_header(&self) -> Option<&HeaderName> {
        Some(match self.user.as_ref()? {
            UserScope::Authorization => &actix_web::http::header::AUTHORIZATION,
            UserScope::Header(h) => h,
        })
    }

    /// The per-user scope value of a request, when the rule keys by user and the request has one.
    pub fn user_value<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        let name = self.user_header()?;
        headers
            .get(name)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty())
    }

    /// The query as it goes into the key: ignored and refresh parameters removed, sorted when
    /// configured. Kept parameters are copied as sent.
    pub fn key_query(&self, query: &str) -> String {
        let mut pieces: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let n = param_name(p.split('=').next().unwrap_or_default());
                !self.ignore_query.iter().any(|pat| pat.matches(&n))
                    && !self.refresh_query.iter().any(|pat| pat.matches(&n))
            })
            .collect();
        if self.sort_query {
            pieces.sort_unstable();
        }
        pieces.join("&")
    }

    /// The TTL a JSON body selects: the value at the pointer (a string as it is, other JSON
    /// values as their text) looked up in `values`, else `default`. `None` when the rule has no
    /// `ttl_by_field`, or neither matches.
    pub fn ttl_from_body(&self, body: &[u8]) -> Option<u64> {
        let f = self.ttl_by_field.as_ref()?;
        let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let field = value.as_ref().and_then(|v| v.pointer(&f.pointer));
        let text = match field {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        text.and_then(|t| f.values.get(&t).copied()).or(f.default)
    }

    /// How the rule sets freshness for a response with `status`, before the body is read.
    pub fn freshness(&self, status: u16) -> LifetimeOverride {
        if let Some(t) = self.ttl_by_status.get(&status) {
            return LifetimeOverride::Fixed(*t);
        }
        if self.ttl_by_field.is_some() && (200..300).contains(&status) {
            return LifetimeOverride::FromBody;
        }
        match self.ttl {
            Some(t) if freshness::is_heuristically_cacheable(status) => LifetimeOverride::Fixed(t),
            _ => LifetimeOverride::Origin,
        }
    }

    /// The TTL when the body gave none: `ttl_seconds` for default-cacheable statuses.
    pub fn fallback_ttl(&self, status: u16) -> Option<u64> {
        self.ttl
            .filter(|_| freshness::is_heuristically_cacheable(status))
    }

    /// Whether an entry of this rule goes into `tier`.
    pub fn uses_tier(&self, tier: TierName) -> bool {
        self.tiers.as_ref().is_none_or(|t| t.contains(&tier))
    }
}

/// The cache key for a request a rule matched: `host` + path + the rule's key query, then
/// (space-separated, so they never mix with the URL) the keyed header values and the user scope.
pub fn compose_key(
    host: &str,
    path: &str,
    query: &str,
    rule: &Rule,
    headers: &HeaderMap,
) -> String {
    let q = rule.key_query(query);
    let mut key = String::with_capacity(host.len() + path.len() + q.len() + 1);
    key.push_str(host);
    key.push_str(path);
    if !q.is_empty() {
        key.push('?');
        key.push_str(&q);
    }
    for h in &rule.key_headers {
        key.push_str(" h:");
        key.push_str(h.as_str());
        key.push('=');
        let mut first = true;
        for v in headers.get_all(h) {
            if !first {
                key.push_str(", ");
            }
            first = false;
            // Header values are visible ASCII or obs-text; keep the key printable.
            key.push_str(&String::from_utf8_lossy(v.as_bytes()).replace([' ', '\t'], "%20"));
        }
    }
    if let Some(u) = rule.user_value(headers) {
        key.push_str(" u:");
        key.push_str(&user_digest(u));
    }
    key
}

#[cfg(test)]
mod tests;
