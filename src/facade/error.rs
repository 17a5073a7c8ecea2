//! The library's error type.

use crate::config::ConfigError;
use crate::store::TierName;

/// What can go wrong building or driving a [`Cache`](crate::Cache).
///
/// Lookups never fail: a tier that does not answer is a miss (counted and logged), so only
/// construction, purges and [`Cache::contains`](crate::Cache::contains) report errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid; the message names the key and what to change.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A rule is invalid; the message names the rule, the key and what to change.
    #[error("invalid rule: {0}")]
    Rule(String),
    /// The runtime the lower tiers' I/O runs on could not start.
    #[error("the store runtime could not start: {0}")]
    Runtime(#[source] std::io::Error),
    /// The access journal could not open its file.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// A purge did not reach a tier (the other tiers were purged).
    #[error("the purge failed on {tier}: {message}")]
    Purge {
        /// The tier that failed (`l2` or `l3`).
        tier: &'static str,
        /// Why.
        message: String,
    },
    /// A [`Lookup`](crate::Lookup) names no entry (a relative URL, a bad header); the message
    /// says what to change.
    #[error("invalid lookup: {0}")]
    Lookup(String),
    /// No tier holds the entry and this one could not answer, so whether it is cached is not
    /// known.
    #[error("{tier} could not answer the lookup: {message}")]
    Unknown {
        /// The tier that could not answer (`l2` or `l3`).
        tier: &'static str,
        /// Why.
        message: String,
    },
}

impl Error {
    pub(crate) fn purge(tier: TierName, e: impl std::fmt::Display) -> Error {
        Error::Purge {
            tier: tier.as_str(),
            message: e.to_string(),
        }
    }
}
