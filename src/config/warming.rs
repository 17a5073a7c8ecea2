//! `[warming]`: predictive warming (see [`crate::warm`]).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Settings};
use crate::warm::{
    BudgetOptions, WarmOptions, DEFAULT_HALF_LIFE_HOURS, DEFAULT_MIN_REQUESTS,
    DEFAULT_MODEL_REFRESH_SECONDS, DEFAULT_PREDICT_MAX, DEFAULT_PREDICT_THRESHOLD,
    DEFAULT_REFRESH_THRESHOLD, DEFAULT_SESSION_GAP_SECONDS, DEFAULT_TOP, DEFAULT_WINDOW_HOURS,
};

/// `[warming]`: put the hot set in cache before clients ask. `enabled = true` alone warms the
/// journal's 100 most requested URLs of the last day at start, and what usually follows each
/// client request.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmingConfig {
    pub enabled: bool,
    /// A pass when tierd starts (tier-first: what L2/L3 hold costs the origin nothing).
    pub on_start: bool,
    /// A pass each time one of these cron expressions comes due (UTC; five fields, or six
    /// with seconds first), e.g. `["0 */6 * * *"]`.
    pub schedules: Vec<String>,
    /// Popular URLs per pass.
    pub top: usize,
    /// How far back the journal is read for popularity and sequences.
    pub window_hours: u64,
    /// A request this many hours old counts half as much as one now.
    pub half_life_hours: f64,
    /// Requests a URL needs in the window to be warmed.
    pub min_requests: u64,
    /// URLs every pass warms: `http://host[:port]/path?query` (the host clients use).
    pub urls: Vec<String>,
    /// Fetch what usually follows a client's request.
    pub predict: bool,
    /// Least probability (0-1] of a prediction.
    pub predict_threshold: f64,
    /// Most predictions fetched per client request.
    pub predict_max: usize,
    /// Revalidate hot entries shortly before they expire, so they never expire under clients.
    pub refresh_ahead: bool,
    /// Least probability (0-1] that a hot entry is asked for again within its lifetime for it
    /// to be refreshed ahead.
    pub refresh_threshold: f64,
    /// Requests of one client further apart than this are different sessions.
    pub session_gap_seconds: u64,
    /// How often predictions are relearned from the journal.
    pub model_refresh_seconds: u64,
    /// Warm fetches per second at most.
    pub rate_per_second: f64,
    /// Warm fetches in flight at most.
    pub concurrency: usize,
    /// Prediction fetches stay under this share of the clients' origin fetches (last minute).
    pub origin_share: f64,
    /// Warming waits while more client fetches than this are in flight to the origin.
    pub yield_above: usize,
    /// A warm fetch slower than this makes warming back off.
    pub slow_ms: u64,
}

impl Default for WarmingConfig {
    fn default() -> Self {
        let o = WarmOptions::default();
        let b = BudgetOptions::default();
        WarmingConfig {
            enabled: false,
            on_start: o.on_start,
            schedules: Vec::new(),
            top: DEFAULT_TOP,
            window_hours: DEFAULT_WINDOW_HOURS,
            half_life_hours: DEFAULT_HALF_LIFE_HOURS,
            min_requests: DEFAULT_MIN_REQUESTS,
            urls: Vec::new(),
            predict: o.predict,
            predict_threshold: DEFAULT_PREDICT_THRESHOLD,
            predict_max: DEFAULT_PREDICT_MAX,
            refresh_ahead: o.refresh_ahead,
            refresh_threshold: DEFAULT_REFRESH_THRESHOLD,
            session_gap_seconds: DEFAULT_SESSION_GAP_SECONDS,
            model_refresh_seconds: DEFAULT_MODEL_REFRESH_SECONDS,
            rate_per_second: b.rate_per_second,
            concurrency: b.concurrency,
            origin_share: b.origin_share,
            yield_above: b.yield_above,
            slow_ms: b.slow.as_millis() as u64,
        }
    }
}

impl Settings {
    /// The warmer's options, `None` when warming is off.
    pub fn warm_options(&self) -> Option<WarmOptions> {
        let w = &self.warming;
        if !w.enabled {
            return None;
        }
        Some(WarmOptions {
            on_start: w.on_start,
            schedules: w
                .schedules
                .iter()
                .filter_map(|e| crate::warm::schedule::Schedule::parse(e).ok())
                .collect(),
            top: w.top,
            window: Duration::from_secs(w.window_hours.saturating_mul(3600)),
            half_life: Duration::from_secs_f64(w.half_life_hours * 3600.0),
            min_requests: w.min_requests,
            urls: w
                .urls
                .iter()
                .filter_map(|u| crate::warm::plan::parse_url(u))
                .collect(),
            predict: w.predict,
            predict_threshold: w.predict_threshold,
            predict_max: w.predict_max,
            refresh_ahead: w.refresh_ahead,
            refresh_threshold: w.refresh_threshold,
            session_gap: Duration::from_secs(w.session_gap_seconds),
            model_refresh: Duration::from_secs(w.model_refresh_seconds),
            pass_deadline: Duration::from_secs(600),
            // A warm fetch waits on the origin as a client's would, and a little more.
            fetch_timeout: Duration::from_millis(self.upstream.timeout_ms.saturating_add(5_000)),
            budget: BudgetOptions {
                rate_per_second: w.rate_per_second,
                concurrency: w.concurrency,
                origin_share: w.origin_share,
                yield_above: w.yield_above,
                slow: Duration::from_millis(w.slow_ms),
                ..BudgetOptions::default()
            },
        })
    }

    pub(super) fn validate_warming(&self) -> Result<(), ConfigError> {
        let w = &self.warming;
        if !w.enabled {
            return Ok(());
        }
        let err = |key: &str, msg: String| Err(ConfigError(format!("warming.{key}: {msg}")));
        if w.window_hours == 0 {
            return err(
                "window_hours",
                "must be at least 1 (hours of journal read)".into(),
            );
        }
        if !(w.half_life_hours > 0.0 && w.half_life_hours.is_finite()) {
            return err(
                "half_life_hours",
                format!(
                    "{} is not a duration; use hours above 0, e.g. 6",
                    w.half_life_hours
                ),
            );
        }
        if !(w.predict_threshold > 0.0 && w.predict_threshold <= 1.0) {
            return err(
                "predict_threshold",
                format!(
                    "{} is not a probability; use a number above 0 and at most 1, e.g. 0.4",
                    w.predict_threshold
                ),
            );
        }
        if !(w.refresh_threshold > 0.0 && w.refresh_threshold <= 1.0) {
            return err(
                "refresh_threshold",
                format!(
                    "{} is not a probability; use a number above 0 and at most 1, e.g. 0.5",
                    w.refresh_threshold
                ),
            );
        }
        if w.predict_max == 0 || w.predict_max > 16 {
            return err(
                "predict_max",
                format!(
                    "{} is out of range; use 1 to 16 fetches per request (or predict = false)",
                    w.predict_max
                ),
            );
        }
        if w.session_gap_seconds == 0 {
            return err("session_gap_seconds", "must be at least 1".into());
        }
        if w.model_refresh_seconds == 0 {
            return err("model_refresh_seconds", "must be at least 1".into());
        }
        if !(w.rate_per_second > 0.0 && w.rate_per_second.is_finite()) {
            return err(
                "rate_per_second",
                format!(
                    "{} must be above 0 (warm fetches per second), e.g. 20",
                    w.rate_per_second
                ),
            );
        }
        if w.concurrency == 0 {
            return err(
                "concurrency",
                "must be at least 1 (warm fetches in flight)".into(),
            );
        }
        if !(w.origin_share >= 0.0 && w.origin_share.is_finite()) {
            return err("origin_share", format!("{} is not a share; use 0 or more, e.g. 0.5 (half as many prediction fetches as clients' origin fetches)", w.origin_share));
        }
        if w.slow_ms == 0 {
            return err("slow_ms", "must be at least 1 (milliseconds)".into());
        }
        for e in &w.schedules {
            if let Err(why) = crate::warm::schedule::Schedule::parse(e) {
                return err("schedules", format!("'{e}' is not a cron expression ({why}); write minute hour day-of-month month day-of-week, e.g. \"0 */6 * * *\" (UTC)"));
            }
        }
        for u in &w.urls {
            if crate::warm::plan::parse_url(u).is_none() {
                return err("urls", format!("'{u}' is not a URL tierd can request; write http://host[:port]/path?query with the host clients use, in visible ASCII"));
            }
        }
        Ok(())
    }

    /// Warming settings that are valid but do less than the operator may think.
    pub(super) fn warming_warnings(&self) -> Vec<String> {
        let w = &self.warming;
        let mut out = Vec::new();
        if w.enabled && !self.journal_enabled() {
            out.push("warming.enabled with the journal off: only warming.urls are warmed (popularity and prediction read the journal); turn the journal on (journal.enabled, or tiers.l3.enabled)".to_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_alone_gives_the_defaults_and_bad_values_name_their_key() {
        let mut s = Settings::default();
        assert!(s.warm_options().is_none());
        s.warming.enabled = true;
        let o = s.warm_options().expect("on");
        assert_eq!((o.top, o.predict, o.on_start), (DEFAULT_TOP, true, true));
        assert!(s.validate_warming().is_ok());
        let bad = |f: &dyn Fn(&mut WarmingConfig), key: &str| {
            let mut s = Settings::default();
            s.warming.enabled = true;
            f(&mut s.warming);
            let e = s.validate_warming().expect_err(key).0;
            assert!(e.starts_with(&format!("warming.{key}:")), "{e}");
        };
        bad(&|w| w.predict_threshold = 1.5, "predict_threshold");
        bad(&|w| w.concurrency = 0, "concurrency");
        bad(&|w| w.rate_per_second = 0.0, "rate_per_second");
        bad(&|w| w.urls = vec!["/no-host".into()], "urls");
        bad(&|w| w.window_hours = 0, "window_hours");
        bad(&|w| w.schedules = vec!["61 * * * *".into()], "schedules");
        s.journal.enabled = Some(false);
        assert_eq!(s.warming_warnings().len(), 1);
    }
}
