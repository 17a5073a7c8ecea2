//! `[journal]`: the access journal (see [`crate::journal`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Settings};
use crate::journal::{
    default_node, JournalOptions, DEFAULT_MAX_BYTES, DEFAULT_QUEUE_CAPACITY, DEFAULT_RETENTION_DAYS,
};

/// `[journal]`: every answered request as a row in a DuckDB file.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Unset: on when the L3 tier is on (its DuckDB is there anyway) in a build with DuckDB.
    /// It costs about 4% of one saturated core's L1-hit throughput (the README's "What it
    /// costs").
    pub enabled: Option<bool>,
    /// The DuckDB file. Default: beside the L3 file, its name with `.journal` before the
    /// extension (`data/tierd.duckdb` -> `data/tierd.journal.duckdb`).
    pub path: String,
    /// This node's name in every row. Default: the host name.
    pub node: String,
    /// Rows older than this are deleted.
    pub retention_days: u32,
    /// The share of requests journaled (0 < sample <= 1).
    pub sample: f64,
    /// Rows waiting for the writer; beyond it rows are dropped and counted.
    pub queue_capacity: usize,
    /// The file (with its WAL) is kept under this: past it the oldest rows are deleted.
    pub max_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            enabled: None,
            path: String::new(),
            node: String::new(),
            retention_days: DEFAULT_RETENTION_DAYS,
            sample: 1.0,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// `dir/name.ext` -> `dir/name.journal.ext`.
fn beside(l3: &Path) -> PathBuf {
    let stem = l3
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tierd".into());
    let name = match l3.extension() {
        Some(ext) => format!("{stem}.journal.{}", ext.to_string_lossy()),
        None => format!("{stem}.journal.duckdb"),
    };
    l3.with_file_name(name)
}

impl Settings {
    /// Whether the journal is on: `journal.enabled`, else whether L3 is (with DuckDB built in).
    pub fn journal_enabled(&self) -> bool {
        self.journal
            .enabled
            .unwrap_or(self.tiers.l3.enabled && cfg!(feature = "duckdb"))
    }

    /// The journal's file.
    pub fn journal_path(&self) -> PathBuf {
        if self.journal.path.is_empty() {
            beside(Path::new(&self.tiers.l3.path))
        } else {
            PathBuf::from(&self.journal.path)
        }
    }

    /// The journal's options, `None` when it is off.
    pub fn journal_options(&self) -> Option<JournalOptions> {
        self.journal_enabled().then(|| self.journal_file_options())
    }

    /// The journal's options whether it is on or not (`tierd import-log` writes the file a
    /// node will use).
    pub fn journal_file_options(&self) -> JournalOptions {
        let j = &self.journal;
        JournalOptions {
            path: self.journal_path(),
            node: if j.node.is_empty() {
                default_node()
            } else {
                j.node.clone()
            },
            retention: Duration::from_secs(u64::from(j.retention_days) * 86_400),
            sample: j.sample,
            queue_capacity: j.queue_capacity,
            max_bytes: j.max_bytes,
        }
    }

    pub(super) fn validate_journal(&self) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| Err(ConfigError(format!("{key}: {msg}")));
        if !self.journal_enabled() {
            return Ok(());
        }
        let j = &self.journal;
        if !cfg!(feature = "duckdb") {
            return err("journal.enabled", "this build of tierd has no DuckDB; build it with the `duckdb` feature, or set journal.enabled = false".into());
        }
        if !(j.sample > 0.0 && j.sample <= 1.0) {
            return err("journal.sample", format!("{} is not a share of requests; use a number above 0 and at most 1 (1.0 journals every request, 0.1 one in ten)", j.sample));
        }
        if j.retention_days == 0 {
            return err("journal.retention_days", "must be at least 1 (days)".into());
        }
        if j.queue_capacity == 0 {
            return err("journal.queue_capacity", "must be at least 1 (rows)".into());
        }
        if j.max_bytes < 16 << 20 {
            return err(
                "journal.max_bytes",
                format!(
                    "{} is too small for a DuckDB file; use at least 16777216 (16 MiB)",
                    j.max_bytes
                ),
            );
        }
        if self.tiers.l3.enabled && self.journal_path() == Path::new(&self.tiers.l3.path) {
            return err("journal.path", format!("'{}' is the L3 file; give the journal its own file (the L3 size cap would count journal rows and evict entries for them), or leave journal.path unset to put it beside the L3 file", self.journal.path));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unset, the journal follows L3 (in a build with DuckDB); set, the setting wins.
    #[test]
    fn the_journal_is_on_when_l3_is_unless_set() {
        let mut s = Settings::default();
        s.tiers.l3.enabled = false;
        assert!(!s.journal_enabled());
        s.tiers.l3.enabled = true;
        assert_eq!(s.journal_enabled(), cfg!(feature = "duckdb"));
        s.journal.enabled = Some(false);
        assert!(!s.journal_enabled());
        s.tiers.l3.enabled = false;
        s.journal.enabled = Some(true);
        assert!(s.journal_enabled());
    }

    #[test]
    fn the_default_file_sits_beside_the_l3_file() {
        assert_eq!(
            beside(Path::new("data/tierd.duckdb")),
            PathBuf::from("data/tierd.journal.duckdb")
        );
        assert_eq!(
            beside(Path::new("/var/lib/c")),
            PathBuf::from("/var/lib/c.journal.duckdb")
        );
    }
}
