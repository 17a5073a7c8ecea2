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
use crate::http::target::Target;

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
    pub rate_limit: RateLimitConfig,
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
    /// On SIGTERM, how long tierd keeps serving, closing each keep-alive connection after its
    /// next response (`Connection: close`), before it stops accepting; 0 stops at once.
    pub drain_ms: u64,
    /// Largest total size of a request's headers, names and values (431 beyond).
    pub max_header_bytes: usize,
    /// Most headers a request may carry (431 beyond); at most 96, actix's own limit.
    pub max_headers: usize,
    /// Longest request target, path and query (414 beyond).
    pub max_uri_bytes: usize,
    /// Largest request body (413 beyond: at once for a declared `Content-Length`, as soon as
    /// the limit is crossed for a chunked body).
    pub max_request_body_bytes: u64,
    /// Longest silence while a client sends a request body (408 beyond); the request head has
    /// `client_request_timeout_ms`.
    pub client_body_timeout_ms: u64,
    /// Open client connections per worker; further connections wait in the backlog.
    pub max_connections: usize,
}

impl ServerConfig {
    /// The request limits this section sets.
    pub fn request_limits(&self) -> crate::guard::RequestLimits {
        crate::guard::RequestLimits {
            max_uri_bytes: self.max_uri_bytes,
            max_headers: self.max_headers,
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_request_body_bytes,
            body_timeout: Duration::from_millis(self.client_body_timeout_ms),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.into(),
            workers: 0,
            keep_alive_seconds: 15,
            client_request_timeout_ms: 5_000,
            shutdown_timeout_seconds: 10,
            drain_ms: 1_000,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY_BYTES,
            client_body_timeout_ms: DEFAULT_CLIENT_BODY_TIMEOUT_MS,
            max_connections: 25_000,
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
    /// Request bodies up to this size are read whole before an origin connection is taken
    /// (nginx's `proxy_request_buffering`); larger ones stream once this much has arrived.
    /// 0 streams every body.
    pub request_buffer_bytes: u64,
}

impl UpstreamConfig {
    /// The proxy's options this section sets.
    #[cfg(feature = "gateway")]
    pub fn options(&self) -> crate::upstream::UpstreamOptions {
        crate::upstream::UpstreamOptions {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            max_connections: self.max_connections,
            preserve_host: self.preserve_host,
            request_buffer_bytes: usize::try_from(self.request_buffer_bytes).unwrap_or(usize::MAX),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: DEFAULT_UPSTREAM_URL.into(),
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_connections: DEFAULT_UPSTREAM_MAX_CONNECTIONS,
            preserve_host: false,
            request_buffer_bytes: DEFAULT_REQUEST_BUFFER_BYTES,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Responses with larger bodies stream through uncached.
    pub max_body_bytes: u64,
    /// How long a request waits on another request's origin fetch of the same key before it
    /// serves a stale copy instead, when it has one it may serve. Without one it keeps waiting
    /// for that fetch (never fetching the key a second time) until the upstream timeout.
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
    /// Most bytes of request header values (names and values) one variant may be selected by;
    /// a response varying on more is passed on uncached.
    pub max_vary_bytes: usize,
    /// A GET or HEAD with a body: `strip` (the body is not forwarded) or `pass` (forwarded with
    /// its body, uncached).
    pub get_with_body: crate::cache::GetWithBody,
    /// Request headers removed before anything past the cache sees them: headers origins honour
    /// (rewrites, method overrides, forwarding claims) that the cache does not key on. The
    /// default is [`crate::http::hygiene::DEFAULT_STRIP`]; a rule that keys on one keeps it.
    pub strip_request_headers: Vec<String>,
    /// Remove request headers whose name has an underscore (`X_Forwarded_Host`), as nginx does.
    pub drop_underscore_headers: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            coalesce_timeout_ms: DEFAULT_COALESCE_TIMEOUT_MS,
            heuristic_percent: 10,
            heuristic_max_seconds: 86_400,
            keep_stale_seconds: DEFAULT_KEEP_STALE_SECONDS,
            store_set_cookie: false,
            max_variants: 16,
            max_vary_bytes: DEFAULT_MAX_VARY_BYTES,
            get_with_body: crate::cache::GetWithBody::Strip,
            strip_request_headers: crate::http::hygiene::DEFAULT_STRIP
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            drop_underscore_headers: true,
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
    /// Record bytes the write queue may hold; more writes are dropped (and counted).
    pub queue_max_bytes: u64,
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
            queue_max_bytes: crate::store::DEFAULT_QUEUE_MAX_BYTES as u64,
            circuit_failure_threshold: DEFAULT_L2_CIRCUIT_FAILURES,
            circuit_open_ms: DEFAULT_L2_CIRCUIT_OPEN_MS,
        }
    }
}

impl L2Config {
    /// The connection options this section describes.
    #[cfg(feature = "redis")]
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
            queue_max_bytes: usize::try_from(self.queue_max_bytes).unwrap_or(usize::MAX),
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
    /// Record bytes the write queue may hold; more writes are dropped (and counted).
    pub queue_max_bytes: u64,
    /// A slower lookup counts as a miss.
    pub read_timeout_ms: u64,
    /// How long a delete waits behind queued writes.
    pub write_timeout_ms: u64,
    /// DuckDB's worker threads.
    pub threads: usize,
    /// DuckDB's memory limit (its buffer pool; the default DuckDB would take is 80% of RAM).
    pub memory_limit_bytes: u64,
    /// How often the WAL is folded into the file when anything was written.
    pub checkpoint_interval_seconds: u64,
    /// Group commit: how long the writer waits for more writes to join a transaction before it
    /// commits one (0: commit what is queued at once). Fewer, larger commits cost less CPU under
    /// churn; entries reach the file (and other processes reading it) up to this much later. A
    /// purge or delete ends the wait.
    pub commit_linger_ms: u64,
}

impl Default for L3Config {
    fn default() -> Self {
        L3Config {
            enabled: false,
            path: DEFAULT_L3_PATH.into(),
            max_bytes: DEFAULT_L3_MAX_BYTES,
            max_ttl_seconds: DEFAULT_L3_MAX_TTL_SECONDS,
            queue_capacity: DEFAULT_L3_QUEUE_CAPACITY,
            queue_max_bytes: crate::store::DEFAULT_QUEUE_MAX_BYTES as u64,
            read_timeout_ms: DEFAULT_L3_READ_TIMEOUT_MS,
            write_timeout_ms: DEFAULT_L3_WRITE_TIMEOUT_MS,
            threads: crate::store::DEFAULT_DUCK_THREADS,
            memory_limit_bytes: crate::store::DEFAULT_DUCK_MEMORY_LIMIT_BYTES,
            checkpoint_interval_seconds: crate::store::DEFAULT_CHECKPOINT_INTERVAL.as_secs(),
            commit_linger_ms: 0,
        }
    }
}

impl L3Config {
    /// The options this section describes.
    #[cfg(feature = "duckdb")]
    pub fn options(&self) -> crate::store::DuckOptions {
        crate::store::DuckOptions {
            path: self.path.clone().into(),
            max_bytes: self.max_bytes,
            queue_capacity: self.queue_capacity,
            queue_max_bytes: usize::try_from(self.queue_max_bytes).unwrap_or(usize::MAX),
            read_timeout: Duration::from_millis(self.read_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            threads: self.threads,
            memory_limit_bytes: self.memory_limit_bytes,
            checkpoint_interval: Duration::from_secs(self.checkpoint_interval_seconds),
            commit_linger: Duration::from_millis(self.commit_linger_ms),
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

pub use crate::logging::LogFormat;

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

/// `[rate_limit]`: per-client quotas (429 past them) and the origin quota.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// The per-client quota on every request. Rule quotas and the origin quota work without it.
    pub enabled: bool,
    /// Sustained rate each client may send (fractions allowed: 0.5 is one every 2 s).
    pub requests_per_second: f64,
    /// Requests a client may send at once after a quiet period.
    pub burst: u32,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
    /// A request header that names the client (an API key) instead of its address; empty: off.
    pub api_key_header: String,
    /// IPv6 clients are keyed by this prefix of their address (one /64 is one subscriber).
    pub ipv6_prefix_bits: u8,
    /// Clients tracked per quota; new clients beyond it share one bucket until cleanup.
    pub max_clients: usize,
    /// How often buckets back at their full burst are dropped.
    pub cleanup_interval_seconds: u64,
    /// Measure the client quota without enforcing it: requests it would refuse are let
    /// through and counted in `tierd_rate_limit_dry_run_total`.
    pub dry_run: bool,
    /// `[rate_limit.origin]`.
    pub origin: OriginQuotaConfig,
}

impl RateLimitConfig {
    /// The quotas this section describes (validated by `Settings::validate`).
    pub fn limits(
        &self,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Result<crate::ratelimit::Limits, String> {
        use crate::ratelimit::{Cidr, Identity, Limits, QuotaSpec};
        let trusted = self
            .trusted_proxies
            .iter()
            .map(|c| Cidr::parse(c).map_err(|e| format!("rate_limit.trusted_proxies: '{c}' {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let api_key = (!self.api_key_header.is_empty())
            .then(|| {
                actix_web::http::header::HeaderName::from_bytes(self.api_key_header.as_bytes())
            })
            .transpose()
            .map_err(|_| format!("rate_limit.api_key_header: '{}'", self.api_key_header))?;
        let mut limits = Limits::disabled(clock, metrics)
            .with_identity(Identity::new(trusted, api_key, self.ipv6_prefix_bits))
            .with_clients(
                self.max_clients,
                Duration::from_secs(self.cleanup_interval_seconds),
            );
        if self.enabled {
            let spec = QuotaSpec {
                requests_per_second: self.requests_per_second,
                burst: self.burst,
            };
            limits = limits.with_client_quota(spec, self.dry_run);
        }
        if self.origin.enabled {
            let spec = QuotaSpec {
                requests_per_second: self.origin.requests_per_second,
                burst: self.origin.burst,
            };
            let per_node = self.origin.per == OriginQuotaKey::Node;
            limits = limits.with_origin_quota(spec, per_node, self.origin.dry_run);
        }
        Ok(limits)
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: false,
            requests_per_second: DEFAULT_RATE_LIMIT_RPS,
            burst: DEFAULT_RATE_LIMIT_BURST,
            trusted_proxies: Vec::new(),
            api_key_header: String::new(),
            ipv6_prefix_bits: DEFAULT_IPV6_PREFIX_BITS,
            max_clients: DEFAULT_RATE_LIMIT_MAX_CLIENTS,
            cleanup_interval_seconds: DEFAULT_RATE_LIMIT_CLEANUP_SECONDS,
            dry_run: false,
            origin: OriginQuotaConfig::default(),
        }
    }
}

/// Who shares an origin bucket.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OriginQuotaKey {
    /// One bucket per client: no client can spend the origin's capacity for the others.
    #[default]
    Client,
    /// One bucket for the whole node: a ceiling on the origin's load.
    Node,
}

/// `[rate_limit.origin]`: limits only requests that would reach the origin (misses, passes,
/// revalidations, mutations); hits never spend it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginQuotaConfig {
    pub enabled: bool,
    pub requests_per_second: f64,
    pub burst: u32,
    /// `client` or `node`.
    pub per: OriginQuotaKey,
    /// Measure without enforcing: requests it would refuse (or answer from stale) reach the
    /// origin and are counted in `tierd_rate_limit_dry_run_total`.
    pub dry_run: bool,
}

impl Default for OriginQuotaConfig {
    fn default() -> Self {
        OriginQuotaConfig {
            enabled: false,
            requests_per_second: DEFAULT_ORIGIN_RPS,
            burst: DEFAULT_ORIGIN_BURST,
            per: OriginQuotaKey::Client,
            dry_run: false,
        }
    }
}

pub use crate::ratelimit::check_quota;

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
            .with_list_parse_key("cache.strip_request_headers");
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
        out
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
            "unknown key {rest}. Check the spelling against the config reference in README.md \
             (environment variables are TIERD__<SECTION>__<KEY>)"
        );
    }
    format!("{text}. See the config reference in README.md")
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
}
