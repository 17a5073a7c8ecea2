//! Caching rules for the library: the gateway's `[[rules]]`, from TOML or built in code.

use crate::config::ConfigError;
use crate::policy::{compile_all, RuleConfig};

use super::Error;

/// The caching rules (first match wins), validated: per-route TTLs (fixed, by status, or from a
/// field of the response body), tags, per-user scope, invalidation on writes, rate limits.
///
/// ```
/// let rules = tierd::Rules::from_toml_str(r#"
///     [[rules]]
///     path = "/items/{id}"
///     ttl_by_field = { pointer = "/status", values = { in_progress = 60, completed = 300 } }
///     tags = ["item:{id}"]
///
///     [[rules]]
///     path = "/items/{id}"
///     methods = ["PUT", "DELETE"]
///     invalidate = { tags = ["item:{id}"] }
/// "#)?;
/// assert_eq!(rules.len(), 2);
/// # Ok::<(), tierd::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules(Vec<RuleConfig>);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

impl Rules {
    /// No rules: every response is cached as its own headers allow (RFC 9111).
    pub fn new() -> Rules {
        Rules(Vec::new())
    }

    /// The `[[rules]]` tables of a TOML document, in the gateway's config format (the README's
    /// rules reference). The error names the rule and the key.
    pub fn from_toml_str(toml: &str) -> Result<Rules, Error> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .map_err(|e| Error::Config(ConfigError(crate::config::describe(e))))?;
        let file: RulesFile = raw
            .try_deserialize()
            .map_err(|e| Error::Config(ConfigError(crate::config::describe(e))))?;
        Rules::from_configs(file.rules)
    }

    /// Rules built in code (each [`RuleConfig`] is one `[[rules]]` table).
    pub fn from_configs(configs: Vec<RuleConfig>) -> Result<Rules, Error> {
        compile_all(&configs).map_err(Error::Rule)?;
        Ok(Rules(configs))
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_configs(self) -> Vec<RuleConfig> {
        self.0
    }
}
