//! Settings: built-in defaults < TOML file < environment (`TIERD__<SECTION>__<KEY>`).
//!
//! Unknown keys and bad values fail at startup with a message that names the key and says what
//! to change. These key names are a public interface: extend them, never rename them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::cache::CachePolicy;
use crate::http::freshness::Heuristic;
use crate::http::storable::StoreOptions;
use crate::http::target::Target;

mod journal;
mod sections;
pub mod units;
mod warming;

pub use journal::JournalConfig;
pub use sections::*;
pub use warming::WarmingConfig;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_UPSTREAM_URL: &str = "http://127.0.0.1:9080";
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Half the upstream timeout: a waiter with a servable stale copy stops waiting on a slow fetch.
pub const DEFAULT_COALESCE_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_UPSTREAM_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_L1_MAX_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
pub const DEFAULT_KEEP_STALE_SECONDS: u64 = 3_600;
/// `cache.stale_on_error_seconds`: a minute of stale content rather than errors while the
/// origin is down (nginx's `proxy_cache_use_stale error timeout` has no bound; Varnish's
/// default grace is 10 s).
pub const DEFAULT_STALE_ON_ERROR_SECONDS: u64 = 60;
pub const DEFAULT_MAX_VARY_BYTES: usize = 4096;
pub const DEFAULT_L2_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_L2_POOL_SIZE: usize = 8;
pub const DEFAULT_L2_CONNECT_TIMEOUT_MS: u64 = 250;
pub const DEFAULT_L2_COMMAND_TIMEOUT_MS: u64 = 100;
pub const DEFAULT_L2_KEY_PREFIX: &str = "tierd";
pub const DEFAULT_L2_MAX_TTL_SECONDS: u64 = 86_400;
pub const DEFAULT_L2_QUEUE_CAPACITY: usize = 10_000;
pub const DEFAULT_L2_CIRCUIT_FAILURES: u32 = 5;
pub const DEFAULT_L2_CIRCUIT_OPEN_MS: u64 = 1_000;
pub const DEFAULT_L3_PATH: &str = "data/tierd.duckdb";
pub const DEFAULT_L3_MAX_BYTES: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_L3_MAX_TTL_SECONDS: u64 = 7 * 86_400;
pub const DEFAULT_L3_QUEUE_CAPACITY: usize = 100_000;
pub const DEFAULT_L3_READ_TIMEOUT_MS: u64 = 100;
pub const DEFAULT_L3_WRITE_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// actix-web's HTTP/1 parser refuses more than 96 headers on its own (431).
pub const MAX_HEADERS_LIMIT: usize = 96;
pub const DEFAULT_MAX_HEADERS: usize = 64;
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_REQUEST_BUFFER_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_CLIENT_BODY_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_RATE_LIMIT_RPS: f64 = 100.0;
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 200;
pub const DEFAULT_ORIGIN_RPS: f64 = 50.0;
pub const DEFAULT_ORIGIN_BURST: u32 = 100;
pub use crate::ratelimit::{DEFAULT_RATE_LIMIT_CLEANUP_SECONDS, DEFAULT_RATE_LIMIT_MAX_CLIENTS};
pub const DEFAULT_IPV6_PREFIX_BITS: u8 = 64;

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The gateway's configuration, as `tierd.toml` and the `TIERD__*` environment describe it
/// ([`Settings::load`]); [`CacheBuilder::settings`](crate::CacheBuilder::settings) takes it too.
#[derive(Debug, Clone, serde::Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub cache: CacheConfig,
    pub tiers: TiersConfig,
    pub demo_origin: DemoOriginConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub rate_limit: RateLimitConfig,
    pub journal: JournalConfig,
    pub warming: WarmingConfig,
    pub compression: CompressionConfig,
    /// `[[rules]]`, first match wins.
    pub rules: Vec<crate::policy::RuleConfig>,
}

impl Settings {
    /// Loads defaults, then `file` (if any), then the environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(file, None)
    }

    /// As [`load`](Self::load), with an explicit environment (tests) instead of the process's.
    pub fn load_with_env(
        file: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Settings, ConfigError> {
        let mut b = config::Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist or is not a file",
                    path.display()
                )));
            }
            b = b.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let mut environment = config::Environment::with_prefix("TIERD")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("rate_limit.trusted_proxies")
            .with_list_parse_key("cache.strip_request_headers")
            .with_list_parse_key("warming.urls")
            .with_list_parse_key("warming.schedules");
        if let Some(vars) = env {
            environment = environment.source(Some(vars));
        }
        b = b.add_source(environment);
        let mut raw = b.build().map_err(|e| ConfigError(describe(e)))?;
        // "10s", "256MiB": converted into the unit the key's name gives, then read as numbers.
        let converted = units::conversions(
            &config::Source::collect(&raw).map_err(|e| ConfigError(describe(e)))?,
        )?;
        if !converted.is_empty() {
            let mut b = config::Config::builder().add_source(raw);
            for (path, v) in converted {
                b = b
                    .set_override(path.as_str(), config::Value::new(None, v))
                    .map_err(|e| ConfigError(describe(e)))?;
            }
            raw = b.build().map_err(|e| ConfigError(describe(e)))?;
        }
        let mut settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError(describe(e)))?;
        settings.admin.read_token_file()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The settings as TOML (`tierd config show`), with `admin.token` and every password in a
    /// URL (`redis://:secret@host`) replaced by `<redacted>`: safe to paste into a ticket.
    pub fn redacted_toml(&self) -> Result<String, ConfigError> {
        let mut table = toml::Table::try_from(self)
            .map_err(|e| ConfigError(format!("the config cannot be shown as TOML: {e}")))?;
        if let Some(toml::Value::Table(admin)) = table.get_mut("admin") {
            if let Some(toml::Value::String(t)) = admin.get_mut("token") {
                if !t.is_empty() {
                    *t = REDACTED.into();
                }
            }
        }
        for (_, v) in table.iter_mut() {
            redact_urls(v);
        }
        toml::to_string(&table)
            .map_err(|e| ConfigError(format!("the config cannot be shown as TOML: {e}")))
    }

    /// The keys outside `[[rules]]` whose values differ between `self` and `other`, as dotted
    /// paths (`tiers.l2.url`): what a reload, which applies the rules only, leaves for the next
    /// start.
    pub fn changed_keys(&self, other: &Settings) -> Vec<String> {
        fn flat(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let path = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        flat(&path, v, out);
                    }
                }
                other => {
                    out.insert(prefix.to_owned(), other.clone());
                }
            }
        }
        let table = |s: &Settings| {
            let mut out = BTreeMap::new();
            if let Ok(mut t) = toml::Table::try_from(s) {
                t.remove("rules");
                flat("", &toml::Value::Table(t), &mut out);
            }
            out
        };
        let (a, b) = (table(self), table(other));
        let mut keys: Vec<String> = a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Settings that are valid but probably not what the operator meant; `check-config` prints
    /// them and `serve` logs them at WARN.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.cache.coalesce_timeout_ms >= self.upstream.timeout_ms {
            out.push(format!(
                "cache.coalesce_timeout_ms ({}) is not below upstream.timeout_ms ({}): requests \
                 waiting on a slow origin fetch never fall back to a stale copy before the fetch \
                 times out; set cache.coalesce_timeout_ms lower (default {DEFAULT_COALESCE_TIMEOUT_MS})",
                self.cache.coalesce_timeout_ms, self.upstream.timeout_ms
            ));
        }
        out.extend(self.warming_warnings());
        out
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::policy::compile_all(&self.rules).map_err(ConfigError)?;
        self.validate_journal()?;
        self.validate_warming()?;
        let err = |key: &str, msg: String| Err(ConfigError(format!("{key}: {msg}")));
        for (key, value) in [
            ("server.listen", &self.server.listen),
            ("admin.listen", &self.admin.listen),
        ] {
            if value.parse::<SocketAddr>().is_err() {
                return err(
                    key,
                    format!(
                        "'{value}' is not a socket address; use host:port, e.g. 127.0.0.1:8080"
                    ),
                );
            }
        }
        if let (Ok(gw), Ok(admin)) = (
            self.server.listen.parse::<SocketAddr>(),
            self.admin.listen.parse::<SocketAddr>(),
        ) {
            let same_port = gw.port() == admin.port() && gw.port() != 0;
            let overlap =
                gw.ip() == admin.ip() || gw.ip().is_unspecified() || admin.ip().is_unspecified();
            if same_port && overlap {
                return err("admin.listen", format!("'{}' shares a port with server.listen '{}'; give the admin API its own port (it is never exposed on the gateway port)", self.admin.listen, self.server.listen));
            }
        }
        if let Err(e) = Target::parse(&self.upstream.url) {
            return err("upstream.url", format!("'{}' {e}", self.upstream.url));
        }
        self.compression.compression()?;
        // An https:// origin's trust: the CA file is read and parsed now, not at the first
        // request.
        #[cfg(feature = "gateway")]
        self.upstream.options()?;
        if self.tiers.l2.enabled && !cfg!(feature = "redis") {
            return err("tiers.l2.enabled", "this build of tierd has no Redis tier; build it with the `redis` feature, or set tiers.l2.enabled = false".into());
        }
        if self.tiers.l3.enabled && !cfg!(feature = "duckdb") {
            return err("tiers.l3.enabled", "this build of tierd has no DuckDB tier; build it with the `duckdb` feature, or set tiers.l3.enabled = false".into());
        }
        for (key, v) in [
            (
                "upstream.connect_timeout_ms",
                self.upstream.connect_timeout_ms,
            ),
            ("upstream.timeout_ms", self.upstream.timeout_ms),
            ("cache.coalesce_timeout_ms", self.cache.coalesce_timeout_ms),
            (
                "server.client_request_timeout_ms",
                self.server.client_request_timeout_ms,
            ),
        ] {
            if v == 0 {
                return err(key, "must be greater than 0 (milliseconds)".into());
            }
        }
        if self.upstream.max_connections == 0 {
            return err("upstream.max_connections", "must be at least 1".into());
        }
        if self.tiers.l1.max_bytes < 1024 * 1024 {
            return err(
                "tiers.l1.max_bytes",
                format!(
                    "{} is too small; use at least 1048576 (1 MiB)",
                    self.tiers.l1.max_bytes
                ),
            );
        }
        if self.cache.max_body_bytes > self.tiers.l1.max_bytes {
            return err(
                "cache.max_body_bytes",
                format!(
                    "{} exceeds tiers.l1.max_bytes ({}); lower it or raise the tier",
                    self.cache.max_body_bytes, self.tiers.l1.max_bytes
                ),
            );
        }
        if self.cache.heuristic_percent > 100 {
            return err(
                "cache.heuristic_percent",
                "must be between 0 and 100".into(),
            );
        }
        if self.cache.max_variants == 0 {
            return err("cache.max_variants", "must be at least 1".into());
        }
        if self.server.max_header_bytes < 1024 {
            return err("server.max_header_bytes", "must be at least 1024".into());
        }
        if self.server.max_headers == 0 || self.server.max_headers > MAX_HEADERS_LIMIT {
            return err(
                "server.max_headers",
                format!(
                    "{} is out of range; use 1 to {MAX_HEADERS_LIMIT} (actix-web refuses more \
                     headers on its own)",
                    self.server.max_headers
                ),
            );
        }
        if self.server.max_uri_bytes < 256 {
            return err("server.max_uri_bytes", "must be at least 256".into());
        }
        for (key, v) in [
            (
                "server.client_body_timeout_ms",
                self.server.client_body_timeout_ms,
            ),
            ("server.max_connections", self.server.max_connections as u64),
        ] {
            if v == 0 {
                return err(key, "must be greater than 0".into());
            }
        }
        let rl = &self.rate_limit;
        check_quota("rate_limit", rl.requests_per_second, rl.burst).map_err(ConfigError)?;
        check_quota(
            "rate_limit.origin",
            rl.origin.requests_per_second,
            rl.origin.burst,
        )
        .map_err(ConfigError)?;
        for (i, name) in self.cache.strip_request_headers.iter().enumerate() {
            if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return err(
                    &format!("cache.strip_request_headers[{i}]"),
                    format!("'{name}' is not a header name; use names such as x-original-url"),
                );
            }
        }
        for (i, p) in rl.trusted_proxies.iter().enumerate() {
            if let Err(e) = crate::ratelimit::Cidr::parse(p) {
                return err(
                    &format!("rate_limit.trusted_proxies[{i}]"),
                    format!("'{p}' {e}; use an address or a CIDR such as 10.0.0.0/8 or fd00::/8"),
                );
            }
        }
        if !rl.api_key_header.is_empty()
            && actix_web::http::header::HeaderName::from_bytes(rl.api_key_header.as_bytes())
                .is_err()
        {
            return err(
                "rate_limit.api_key_header",
                format!(
                    "'{}' is not a header name; use e.g. x-api-key",
                    rl.api_key_header
                ),
            );
        }
        if rl.ipv6_prefix_bits == 0 || rl.ipv6_prefix_bits > 128 {
            return err(
                "rate_limit.ipv6_prefix_bits",
                "must be between 1 and 128 (64 keys one subscriber's /64)".into(),
            );
        }
        if rl.max_clients == 0 {
            return err("rate_limit.max_clients", "must be at least 1".into());
        }
        if rl.cleanup_interval_seconds == 0 {
            return err(
                "rate_limit.cleanup_interval_seconds",
                "must be greater than 0".into(),
            );
        }
        if self.tiers.l2.enabled {
            let l2 = &self.tiers.l2;
            let urls = if l2.urls.is_empty() {
                std::slice::from_ref(&l2.url)
            } else {
                &l2.urls[..]
            };
            for u in urls {
                let key = if l2.urls.is_empty() {
                    "tiers.l2.url"
                } else {
                    "tiers.l2.urls"
                };
                if !(u.starts_with("redis://")
                    || u.starts_with("rediss://")
                    || u.starts_with("unix://"))
                {
                    let u = redact_url(u).unwrap_or_else(|| u.clone());
                    return err(key, format!("'{u}' is not a Redis URL; use redis://host:port, or rediss://host:port for TLS"));
                }
            }
            if !l2.ca_file.is_empty() {
                let tls = urls.iter().all(|u| u.starts_with("rediss://"));
                if l2.cluster || !l2.urls.is_empty() {
                    return err("tiers.l2.ca_file", "is for a single server; a Redis Cluster over rediss:// is verified against the system's roots (add the CA to them)".into());
                }
                if !tls {
                    return err(
                        "tiers.l2.ca_file",
                        format!(
                            "is set but tiers.l2.url '{}' is not TLS; use rediss://",
                            redact_url(&l2.url).unwrap_or_else(|| l2.url.clone())
                        ),
                    );
                }
                match std::fs::read_to_string(&l2.ca_file) {
                    Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {}
                    Ok(_) => {
                        return err(
                            "tiers.l2.ca_file",
                            format!(
                                "'{}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                                l2.ca_file
                            ),
                        )
                    }
                    Err(e) => {
                        return err(
                            "tiers.l2.ca_file",
                            format!("'{}' cannot be read: {e}", l2.ca_file),
                        )
                    }
                }
            }
            for (key, v) in [
                ("tiers.l2.pool_size", l2.pool_size as u64),
                ("tiers.l2.connect_timeout_ms", l2.connect_timeout_ms),
                ("tiers.l2.command_timeout_ms", l2.command_timeout_ms),
                ("tiers.l2.max_ttl_seconds", l2.max_ttl_seconds),
                ("tiers.l2.queue_capacity", l2.queue_capacity as u64),
                (
                    "tiers.l2.circuit_failure_threshold",
                    u64::from(l2.circuit_failure_threshold),
                ),
                ("tiers.l2.circuit_open_ms", l2.circuit_open_ms),
            ] {
                if v == 0 {
                    return err(key, "must be greater than 0".into());
                }
            }
            if l2.key_prefix.is_empty() || l2.key_prefix.contains(char::is_whitespace) {
                return err(
                    "tiers.l2.key_prefix",
                    "must be a non-empty word without spaces, e.g. tierd".into(),
                );
            }
        }
        if self.tiers.l3.enabled {
            let l3 = &self.tiers.l3;
            if l3.path.trim().is_empty() {
                return err(
                    "tiers.l3.path",
                    "must name a file, e.g. data/tierd.duckdb".into(),
                );
            }
            if l3.max_bytes < 1024 * 1024 {
                return err(
                    "tiers.l3.max_bytes",
                    format!(
                        "{} is too small; use at least 1048576 (1 MiB)",
                        l3.max_bytes
                    ),
                );
            }
            for (key, v) in [
                ("tiers.l3.max_ttl_seconds", l3.max_ttl_seconds),
                ("tiers.l3.queue_capacity", l3.queue_capacity as u64),
                ("tiers.l3.read_timeout_ms", l3.read_timeout_ms),
                ("tiers.l3.write_timeout_ms", l3.write_timeout_ms),
            ] {
                if v == 0 {
                    return err(key, "must be greater than 0".into());
                }
            }
        }
        if self.demo_origin.enabled {
            if self.demo_origin.listen.parse::<SocketAddr>().is_err() {
                return err(
                    "demo_origin.listen",
                    format!("'{}' is not a socket address", self.demo_origin.listen),
                );
            }
            if self.demo_origin.listen == self.server.listen
                || self.demo_origin.listen == self.admin.listen
            {
                return err(
                    "demo_origin.listen",
                    "must differ from server.listen and admin.listen".into(),
                );
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return err(
                "log.level",
                format!(
                    "'{}' is not a valid filter ({e}); use e.g. info or tierd=debug",
                    self.log.level
                ),
            );
        }
        Ok(())
    }

    /// The cache policy these settings describe.
    pub fn cache_policy(&self) -> CachePolicy {
        CachePolicy {
            enabled: self.cache.enabled,
            max_body_bytes: usize::try_from(self.cache.max_body_bytes).unwrap_or(usize::MAX),
            coalesce_timeout: Duration::from_millis(self.cache.coalesce_timeout_ms),
            // The leader's fetch ends within the upstream timeouts (connect, then the response);
            // a second on top covers reading a body already arriving.
            fetch_timeout: Duration::from_millis(
                self.upstream
                    .connect_timeout_ms
                    .saturating_add(self.upstream.timeout_ms)
                    .saturating_add(1_000),
            ),
            store: StoreOptions {
                heuristic: Heuristic {
                    percent: self.cache.heuristic_percent,
                    max_seconds: self.cache.heuristic_max_seconds,
                },
                store_set_cookie: self.cache.store_set_cookie,
                ..Default::default()
            },
            keep_stale: Duration::from_secs(self.cache.keep_stale_seconds),
            stale_on_error: Duration::from_secs(self.cache.stale_on_error_seconds),
            // Validated with the rest; an invalid section turns compression off here.
            compression: self
                .compression
                .compression()
                .ok()
                .flatten()
                .map(std::sync::Arc::new),
            max_variants: self.cache.max_variants,
            max_vary_bytes: self.cache.max_vary_bytes,
            get_with_body: self.cache.get_with_body,
            hygiene: crate::http::hygiene::Hygiene::new(
                // Validated above; a name that does not parse cannot be in a request either.
                self.cache
                    .strip_request_headers
                    .iter()
                    .filter_map(|n| {
                        actix_web::http::header::HeaderName::from_bytes(n.as_bytes()).ok()
                    })
                    .collect(),
                self.cache.drop_underscore_headers,
                self.rate_limit
                    .trusted_proxies
                    .iter()
                    .filter_map(|c| crate::ratelimit::Cidr::parse(c).ok())
                    .collect(),
            ),
        }
    }
}

/// Turns the config crate's errors into a message that names the key and the fix.
const REDACTED: &str = "<redacted>";

/// Replaces the password of every URL in `v` (`scheme://user:password@host`).
fn redact_urls(v: &mut toml::Value) {
    match v {
        toml::Value::String(s) => {
            if let Some(r) = redact_url(s) {
                *s = r;
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact_urls),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| redact_urls(v)),
        _ => {}
    }
}

/// `s` with its URL password redacted, if it is a URL with one.
pub(crate) fn redact_url(s: &str) -> Option<String> {
    let start = s.find("://")? + 3;
    let authority_end = s[start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| start + i);
    let at = s[start..authority_end].rfind('@')? + start;
    let colon = s[start..at].find(':')? + start;
    Some(format!("{}{REDACTED}{}", &s[..=colon], &s[at..]))
}

pub(crate) fn describe(e: config::ConfigError) -> String {
    // The config crate writes nested keys of array items as `rules[1]ttl_by_field`.
    let mut text = String::new();
    let raw = e.to_string();
    let mut prev = ' ';
    for c in raw.chars() {
        if prev == ']' && (c.is_ascii_alphabetic() || c == '_') {
            text.push('.');
        }
        text.push(c);
        prev = c;
    }
    if let Some(rest) = text.strip_prefix("unknown field ") {
        return format!(
            "unknown key {rest}. Check the spelling against the config reference (docs/src/reference/config.md) \
             (environment variables are TIERD__<SECTION>__<KEY>)"
        );
    }
    format!("{text}. See the config reference in docs/src/reference/config.md")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_with_env(None, Some(env))
    }

    #[test]
    fn dry_run_switches_come_from_the_environment() {
        let s = with_env(&[]).unwrap();
        assert!(!s.rate_limit.dry_run && !s.rate_limit.origin.dry_run);
        let s = with_env(&[
            ("TIERD__RATE_LIMIT__DRY_RUN", "true"),
            ("TIERD__RATE_LIMIT__ORIGIN__DRY_RUN", "true"),
        ])
        .unwrap();
        assert!(s.rate_limit.dry_run && s.rate_limit.origin.dry_run);
        let e = with_env(&[("TIERD__RATE_LIMIT__DRY_RUN", "maybe")]).unwrap_err();
        assert!(e.to_string().contains("dry_run"), "{e}");
    }

    fn from_file(text: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tierd.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load_with_env(Some(&path), Some(Default::default()))
    }

    #[test]
    fn durations_and_sizes_take_units_in_the_file_and_the_environment() {
        let s = from_file(
            r#"
[upstream]
timeout_ms = "2.5s"
connect_timeout_ms = 300
[tiers.l1]
max_bytes = "64MiB"
[journal]
retention_days = "2w"
[[rules]]
path = "/a/{id}"
ttl_seconds = "5m"
"#,
        )
        .unwrap();
        assert_eq!(s.upstream.timeout_ms, 2_500);
        assert_eq!(s.upstream.connect_timeout_ms, 300);
        assert_eq!(s.tiers.l1.max_bytes, 64 * 1024 * 1024);
        assert_eq!(s.journal.retention_days, 14);
        assert_eq!(s.rules[0].ttl_seconds, Some(300));
        let s = with_env(&[("TIERD__UPSTREAM__TIMEOUT_MS", "1m")]).unwrap();
        assert_eq!(s.upstream.timeout_ms, 60_000);
        let e = from_file("[upstream]\ntimeout_ms = \"soon\"\n")
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("upstream.timeout_ms: 'soon' is not a duration"),
            "{e}"
        );
        let e = from_file("[[rules]]\npath = \"/a\"\nttl_seconds = \"90ms\"\n")
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("rules[0].ttl_seconds: '90ms' is not a whole number of seconds"),
            "{e}"
        );
    }

    #[test]
    fn the_admin_token_comes_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let s = from_file(&format!("[admin]\ntoken_file = {:?}\n", secret)).unwrap();
        assert_eq!(s.admin.token, "s3cret");
        let e = from_file(&format!(
            "[admin]\ntoken = \"x\"\ntoken_file = {:?}\n",
            secret
        ))
        .unwrap_err()
        .0;
        assert!(
            e.starts_with("admin.token_file: admin.token is set too"),
            "{e}"
        );
        let e = from_file("[admin]\ntoken_file = \"/nonexistent/token\"\n")
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("admin.token_file: cannot read /nonexistent/token"),
            "{e}"
        );
        std::fs::write(&secret, " \n").unwrap();
        let e = from_file(&format!("[admin]\ntoken_file = {:?}\n", secret))
            .unwrap_err()
            .0;
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn the_shown_config_reads_back_the_same_and_hides_secrets() {
        let s = from_file(
            r#"
[admin]
token = "hunter2"
[upstream]
url = "http://origin.test:8080/api"
[tiers.l2]
enabled = true
url = "redis://:pa55@redis.test:6379/0"
[[rules]]
path = "/a/{id}"
ttl_seconds = 60
tags = ["a:{id}"]
"#,
        )
        .unwrap();
        let shown = s.redacted_toml().unwrap();
        assert!(
            !shown.contains("hunter2") && !shown.contains("pa55"),
            "{shown}"
        );
        assert!(shown.contains("token = \"<redacted>\""), "{shown}");
        assert!(
            shown.contains("redis://:<redacted>@redis.test:6379/0"),
            "{shown}"
        );
        // What it prints is a config file tierd reads, and reads as the same settings.
        let back = from_file(&shown.replace("<redacted>", "x")).unwrap();
        let again = back.redacted_toml().unwrap();
        assert_eq!(again, shown);
        assert_eq!(redact_url("http://u@h/p"), None);
        assert_eq!(
            redact_url("https://user:pw@h:1/p@x").as_deref(),
            Some("https://user:<redacted>@h:1/p@x")
        );
    }

    #[test]
    fn a_reload_names_the_changed_keys_outside_the_rules() {
        let a = from_file("[server]\nworkers = 2\n[[rules]]\npath = \"/a\"\n").unwrap();
        let b = from_file(
            "[server]\nworkers = 4\n[tiers.l2]\nurl = \"redis://other:6379\"\n[[rules]]\npath = \"/b\"\n",
        )
        .unwrap();
        assert_eq!(a.changed_keys(&b), ["server.workers", "tiers.l2.url"]);
        assert!(a.changed_keys(&a).is_empty());
        // Rules are what a reload applies: never listed.
        let c = from_file("[server]\nworkers = 2\n[[rules]]\npath = \"/c\"\n").unwrap();
        assert!(a.changed_keys(&c).is_empty());
    }
}
