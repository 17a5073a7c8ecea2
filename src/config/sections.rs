//! The sections of the config file, with their defaults, and what each converts into.

use super::*;

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
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

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener (metrics, health, `/_tierd/...`).
    pub listen: String,
    /// Bearer token for mutating admin calls; empty refuses them.
    pub token: String,
    /// A file holding the token (a mounted secret), read at start; its
    /// surrounding whitespace is ignored. Exclusive with `token`.
    pub token_file: Option<std::path::PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: DEFAULT_ADMIN_LISTEN.into(),
            token: String::new(),
            token_file: None,
        }
    }
}

impl AdminConfig {
    /// Sets `token` from `token_file`, when one is given.
    pub(super) fn read_token_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.token_file else {
            return Ok(());
        };
        if !self.token.is_empty() {
            return Err(ConfigError(
                "admin.token_file: admin.token is set too; keep one of them".into(),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "admin.token_file: cannot read {}: {e}; point it at a readable file holding the token",
                path.display()
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError(format!(
                "admin.token_file: {} is empty; write the token into it",
                path.display()
            )));
        }
        self.token = token.to_owned();
        Ok(())
    }
}

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// The origin, `http://host:port[/prefix]` or `https://...`.
    pub url: String,
    /// PEM file of the CA(s) that sign an `https://` origin's certificate, trusted instead of
    /// the system's roots. Empty: the system's roots.
    pub ca_file: String,
    /// The name checked in an `https://` origin's certificate and sent as SNI, instead of the
    /// URL's host. Empty: the URL's host.
    pub tls_server_name: String,
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
    /// Send the origin a `Forwarded` header (RFC 7239) with this hop appended (`for`, `host`,
    /// `proto`). Off: a trusted proxy's `Forwarded` passes unchanged, and tierd adds none.
    pub forwarded_header: bool,
}

impl UpstreamConfig {
    /// The proxy's options this section sets. For an `https://` origin this reads the trusted
    /// roots (`ca_file` or the system's); the error names the key to change.
    #[cfg(feature = "gateway")]
    pub fn options(&self) -> Result<crate::upstream::UpstreamOptions, ConfigError> {
        use crate::upstream::tls;
        let https = self
            .url
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("https:");
        let tls = if https {
            let ca_file = (!self.ca_file.is_empty()).then(|| std::path::Path::new(&self.ca_file));
            let roots =
                tls::roots(ca_file).map_err(|e| ConfigError(format!("upstream.ca_file: {e}")))?;
            let name = (!self.tls_server_name.is_empty())
                .then(|| tls::server_name(&self.tls_server_name))
                .transpose()
                .map_err(|e| ConfigError(format!("upstream.tls_server_name: {e}")))?;
            tls::options(roots, name).map_err(|e| ConfigError(format!("upstream.url: {e}")))?
        } else {
            if !self.ca_file.is_empty() || !self.tls_server_name.is_empty() {
                let key = if self.ca_file.is_empty() {
                    "upstream.tls_server_name"
                } else {
                    "upstream.ca_file"
                };
                return Err(ConfigError(format!(
                    "{key}: set for an http:// upstream.url; it applies to https:// origins only (remove it or use https://)"
                )));
            }
            tls::unused().map_err(|e| ConfigError(format!("upstream.url: {e}")))?
        };
        Ok(crate::upstream::UpstreamOptions {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            max_connections: self.max_connections,
            preserve_host: self.preserve_host,
            request_buffer_bytes: usize::try_from(self.request_buffer_bytes).unwrap_or(usize::MAX),
            forwarded_header: self.forwarded_header,
            tls,
        })
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: DEFAULT_UPSTREAM_URL.into(),
            ca_file: String::new(),
            tls_server_name: String::new(),
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_connections: DEFAULT_UPSTREAM_MAX_CONNECTIONS,
            preserve_host: false,
            request_buffer_bytes: DEFAULT_REQUEST_BUFFER_BYTES,
            forwarded_header: false,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
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
    /// How long past its expiry an entry is served when the origin cannot be reached (refused,
    /// reset, closed without a response, timed out, a failed TLS handshake). The response's
    /// own `stale-if-error` (or a rule's `stale_if_error_seconds`) replaces it;
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage` and `no-cache` forbid it. 0: never.
    pub stale_on_error_seconds: u64,
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
            stale_on_error_seconds: DEFAULT_STALE_ON_ERROR_SECONDS,
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

#[derive(Debug, Clone, serde::Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    pub l1: L1Config,
    pub l2: L2Config,
    pub l3: L3Config,
}

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L2Config {
    pub enabled: bool,
    /// The Redis server (`redis://[user:pass@]host:port[/db]`).
    pub url: String,
    /// Redis Cluster seed nodes; when set, tierd talks to a Cluster.
    pub urls: Vec<String>,
    /// Talk to a Redis Cluster, seeded from `urls` (or `url` when `urls` is empty).
    pub cluster: bool,
    /// For `rediss://`: a PEM file of the CA certificate(s) to trust instead of the system's
    /// roots (a single server only).
    pub ca_file: String,
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
            ca_file: String::new(),
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
            ca_file: (!self.ca_file.is_empty()).then(|| self.ca_file.clone().into()),
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

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
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

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
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

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
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

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
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
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
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
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// The per-client quota on every request. Rule quotas and the origin quota work without it.
    pub enabled: bool,
    /// Sustained rate each client may send (fractions allowed: 0.5 is one every 2 s).
    pub requests_per_second: f64,
    /// Requests a client may send at once after a quiet period.
    pub burst: u32,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` (or `Forwarded`) names the client.
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies name the client in: `x-forwarded-for` or `forwarded`
    /// (RFC 7239's `for=`).
    pub client_header: crate::ratelimit::ClientHeader,
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
        let mut limits = Limits::disabled(clock, metrics.rate_limit.clone())
            .with_identity(
                Identity::new(trusted, api_key, self.ipv6_prefix_bits)
                    .with_client_header(self.client_header),
            )
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
            client_header: crate::ratelimit::ClientHeader::default(),
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
#[derive(Debug, Clone, Copy, serde::Serialize, Deserialize, Default, PartialEq, Eq)]
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
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
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

/// `[compression]`: stored responses of compressible types are kept compressed once, and
/// served compressed to clients that accept the coding.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    pub enabled: bool,
    /// The coding of the stored copy: `gzip` (every compressing client accepts it) or `br`.
    pub encoding: crate::http::encoding::Coding,
    /// Bodies smaller than this are stored as they are.
    pub min_bytes: u64,
    /// Media types compressed: exact (`application/json`), `type/*`, `type/*+suffix`.
    pub types: Vec<String>,
    /// The coding's level: gzip 1-9, br 0-11.
    pub level: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: true,
            encoding: crate::http::encoding::Coding::Gzip,
            min_bytes: 1024,
            types: crate::cache::compress::default_types(),
            level: 6,
        }
    }
}

impl CompressionConfig {
    /// What the cache compresses with; `None` when off. The error names the key.
    pub fn compression(&self) -> Result<Option<crate::cache::compress::Compression>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let levels = self.encoding.levels();
        let level = self.level;
        if !levels.contains(&level) {
            return Err(ConfigError(format!(
                "compression.level: {level} is out of range for {}; use {} to {}",
                self.encoding.as_str(),
                levels.start(),
                levels.end()
            )));
        }
        for (i, t) in self.types.iter().enumerate() {
            let valid = t.split_once('/').is_some_and(|(ty, sub)| {
                !ty.is_empty() && ty != "*" && !sub.is_empty() && !t.contains([' ', ';', ','])
            });
            if !valid {
                return Err(ConfigError(format!(
                    "compression.types[{i}]: '{t}' is not a media type; use type/subtype, type/* or type/*+suffix"
                )));
            }
        }
        Ok(Some(crate::cache::compress::Compression {
            coding: self.encoding,
            level,
            min_bytes: usize::try_from(self.min_bytes).unwrap_or(usize::MAX),
            types: self.types.clone(),
        }))
    }
}
