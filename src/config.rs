//! Settings: built-in defaults < TOML file < environment (`TIERD__<SECTION>__<KEY>`).
//!
//! Unknown keys and bad values fail at startup with a message that names the key and says what
//! to change. These key names are a public interface: extend them, never rename them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::cache::CachePolicy;
use crate::http::freshness::Heuristic;
use crate::http::storable::StoreOptions;
use crate::upstream::Target;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_UPSTREAM_URL: &str = "http://127.0.0.1:9080";
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_UPSTREAM_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_L1_MAX_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
pub const DEFAULT_KEEP_STALE_SECONDS: u64 = 3_600;
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

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The whole settings tree.
#[derive(Debug, Clone, Deserialize, Default)]
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
    /// `[[rules]]`, first match wins.
    pub rules: Vec<crate::policy::RuleConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the gateway listener.
    pub listen: String,
    /// Worker threads; 0 means one per available CPU.
    pub workers: usize,
    /// Idle keep-alive for client connections.
    pub keep_alive_seconds: u64,
    /// Time a client has to send its request head.
    pub client_request_timeout_ms: u64,
    /// Grace period for in-flight requests on shutdown.
    pub shutdown_timeout_seconds: u64,
    /// Largest total size of request headers forwarded to the origin (431 beyond).
    pub max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.into(),
            workers: 0,
            keep_alive_seconds: 15,
            client_request_timeout_ms: 5_000,
            shutdown_timeout_seconds: 10,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener (metrics, health, `/_tierd/...`).
    pub listen: String,
    /// Bearer token for mutating admin calls; empty refuses them.
    pub token: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: DEFAULT_ADMIN_LISTEN.into(),
            token: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// The origin, `http://host:port[/prefix]`.
    pub url: String,
    pub connect_timeout_ms: u64,
    /// Total time for one origin exchange, body included.
    pub timeout_ms: u64,
    /// Pooled connections per worker.
    pub max_connections: usize,
    /// Send the client's `Host` to the origin instead of the upstream's.
    pub preserve_host: bool,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: DEFAULT_UPSTREAM_URL.into(),
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_connections: DEFAULT_UPSTREAM_MAX_CONNECTIONS,
            preserve_host: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Responses with larger bodies stream through uncached.
    pub max_body_bytes: u64,
    /// How long a request waits on another's origin fetch before fetching itself.
    pub coalesce_timeout_ms: u64,
    /// Heuristic freshness: this percentage of `Date - Last-Modified`...
    pub heuristic_percent: u64,
    /// ...capped at this many seconds.
    pub heuristic_max_seconds: u64,
    /// How long a stale entry with validators is kept for revalidation.
    pub keep_stale_seconds: u64,
    /// Store responses that carry `Set-Cookie` (off: such responses are never shared).
    pub store_set_cookie: bool,
    /// Stored variants per URI when the origin sends `Vary`.
    pub max_variants: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            coalesce_timeout_ms: DEFAULT_TIMEOUT_MS,
            heuristic_percent: 10,
            heuristic_max_seconds: 86_400,
            keep_stale_seconds: DEFAULT_KEEP_STALE_SECONDS,
            store_set_cookie: false,
            max_variants: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    pub l1: L1Config,
    pub l2: L2Config,
    pub l3: L3Config,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L2Config {
    pub enabled: bool,
    /// The Redis server (`redis://[user:pass@]host:port[/db]`).
    pub url: String,
    /// Redis Cluster seed nodes; when set, tierd talks to a Cluster.
    pub urls: Vec<String>,
    /// Talk to a Redis Cluster, seeded from `urls` (or `url` when `urls` is empty).
    pub cluster: bool,
    pub pool_size: usize,
    pub connect_timeout_ms: u64,
    /// Per command; a slower Redis counts as a failure (and a miss).
    pub command_timeout_ms: u64,
    /// Prefix of every key; tierd appends `:v<format>:`.
    pub key_prefix: String,
    /// Longest an entry stays in Redis, whatever its own lifetime.
    pub max_ttl_seconds: u64,
    /// Writes waiting for Redis; beyond it writes are dropped (and counted).
    pub queue_capacity: usize,
    /// Consecutive failures that open the circuit breaker.
    pub circuit_failure_threshold: u32,
    /// How long an open circuit skips Redis before probing it again.
    pub circuit_open_ms: u64,
}

impl Default for L2Config {
    fn default() -> Self {
        L2Config {
            enabled: false,
            url: DEFAULT_L2_URL.into(),
            urls: Vec::new(),
            cluster: false,
            pool_size: DEFAULT_L2_POOL_SIZE,
            connect_timeout_ms: DEFAULT_L2_CONNECT_TIMEOUT_MS,
            command_timeout_ms: DEFAULT_L2_COMMAND_TIMEOUT_MS,
            key_prefix: DEFAULT_L2_KEY_PREFIX.into(),
            max_ttl_seconds: DEFAULT_L2_MAX_TTL_SECONDS,
            queue_capacity: DEFAULT_L2_QUEUE_CAPACITY,
            circuit_failure_threshold: DEFAULT_L2_CIRCUIT_FAILURES,
            circuit_open_ms: DEFAULT_L2_CIRCUIT_OPEN_MS,
        }
    }
}

impl L2Config {
    /// The connection options this section describes.
    pub fn options(&self) -> crate::store::RedisOptions {
        let cluster = self.cluster || !self.urls.is_empty();
        let urls = if self.urls.is_empty() {
            vec![self.url.clone()]
        } else {
            self.urls.clone()
        };
        crate::store::RedisOptions {
            urls,
            cluster,
            pool_size: self.pool_size,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            command_timeout: Duration::from_millis(self.command_timeout_ms),
            key_prefix: self.key_prefix.clone(),
            queue_capacity: self.queue_capacity,
            failure_threshold: self.circuit_failure_threshold,
            open_for: Duration::from_millis(self.circuit_open_ms),
            max_ttl: Duration::from_secs(self.max_ttl_seconds),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L3Config {
    pub enabled: bool,
    /// The DuckDB file; its directory is created if missing.
    pub path: String,
    /// Logical size cap (records and keys); past it expired entries go first, then the least
    /// recently used.
    pub max_bytes: u64,
    /// Longest an entry stays in the file, whatever its own lifetime.
    pub max_ttl_seconds: u64,
    /// Writes waiting for the writer thread; beyond it writes are dropped (and counted).
    pub queue_capacity: usize,
    /// A slower lookup counts as a miss.
    pub read_timeout_ms: u64,
    /// How long a delete waits behind queued writes.
    pub write_timeout_ms: u64,
}

impl Default for L3Config {
    fn default() -> Self {
        L3Config {
            enabled: false,
            path: DEFAULT_L3_PATH.into(),
            max_bytes: DEFAULT_L3_MAX_BYTES,
            max_ttl_seconds: DEFAULT_L3_MAX_TTL_SECONDS,
            queue_capacity: DEFAULT_L3_QUEUE_CAPACITY,
            read_timeout_ms: DEFAULT_L3_READ_TIMEOUT_MS,
            write_timeout_ms: DEFAULT_L3_WRITE_TIMEOUT_MS,
        }
    }
}

impl L3Config {
    /// The options this section describes.
    pub fn options(&self) -> crate::store::DuckOptions {
        crate::store::DuckOptions {
            path: self.path.clone().into(),
            max_bytes: self.max_bytes,
            queue_capacity: self.queue_capacity,
            read_timeout: Duration::from_millis(self.read_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L1Config {
    /// Memory bound of the in-process tier (keys, headers and bodies).
    pub max_bytes: u64,
}

impl Default for L1Config {
    fn default() -> Self {
        L1Config {
            max_bytes: DEFAULT_L1_MAX_BYTES,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoOriginConfig {
    /// Start the built-in demo API in the same process.
    pub enabled: bool,
    pub listen: String,
}

impl Default for DemoOriginConfig {
    fn default() -> Self {
        DemoOriginConfig {
            enabled: false,
            listen: "127.0.0.1:9080".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `tierd=debug,warn`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[metrics]`: Prometheus metrics on the admin listener's `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Record per-request metrics. Off, `/metrics` answers 404 and the hot path records
    /// nothing (the baseline of the metrics-cost benchmark).
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
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
            .try_parsing(true);
        if let Some(vars) = env {
            environment = environment.source(Some(vars));
        }
        b = b.add_source(environment);
        let raw = b.build().map_err(|e| ConfigError(describe(e)))?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError(describe(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::policy::compile_all(&self.rules).map_err(ConfigError)?;
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
        if self.server.listen == self.admin.listen && !self.server.listen.ends_with(":0") {
            return err("admin.listen", "must differ from server.listen (the admin API is never exposed on the gateway port)".into());
        }
        if let Err(e) = Target::parse(&self.upstream.url) {
            return err("upstream.url", format!("'{}' {e}", self.upstream.url));
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
                if !(u.starts_with("redis://") || u.starts_with("unix://")) {
                    return err(key, format!("'{u}' is not a Redis URL; use redis://host:port (TLS, rediss://, is not built in)"));
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
            store: StoreOptions {
                heuristic: Heuristic {
                    percent: self.cache.heuristic_percent,
                    max_seconds: self.cache.heuristic_max_seconds,
                },
                store_set_cookie: self.cache.store_set_cookie,
                ..Default::default()
            },
            keep_stale: Duration::from_secs(self.cache.keep_stale_seconds),
            max_variants: self.cache.max_variants,
        }
    }
}

/// Turns the config crate's errors into a message that names the key and the fix.
fn describe(e: config::ConfigError) -> String {
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
            "unknown key {rest}. Check the spelling against the config reference in README.md \
             (environment variables are TIERD__<SECTION>__<KEY>)"
        );
    }
    format!("{text}. See the config reference in README.md")
}
