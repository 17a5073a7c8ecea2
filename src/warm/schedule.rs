//! `[warming] schedules`: cron expressions (five fields, or six with seconds first; UTC), each
//! a pass when it comes due on the cache's clock.

use std::str::FromStr;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use croner::Cron;

/// One schedule and when it is next due.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    cron: Cron,
    next: Option<SystemTime>,
}

impl Schedule {
    /// Parses `expression`; the error says what croner could not read.
    pub fn parse(expression: &str) -> Result<Schedule, String> {
        let cron = Cron::from_str(expression.trim()).map_err(|e| e.to_string())?;
        Ok(Schedule {
            expression: expression.trim().to_owned(),
            cron,
            next: None,
        })
    }

    /// The first time strictly after `now` the expression matches.
    pub fn next_after(&self, now: SystemTime) -> Option<SystemTime> {
        let from: DateTime<Utc> = DateTime::from(now);
        self.cron
            .find_next_occurrence(&from, false)
            .ok()
            .map(SystemTime::from)
    }

    /// When it is next due (after the last time [`due`](Self::due) was asked).
    pub fn next(&self) -> Option<SystemTime> {
        self.next
    }

    /// Whether it came due at `now` (then the next time is set); the first call only sets it.
    pub fn due(&mut self, now: SystemTime) -> bool {
        match self.next {
            None => {
                self.next = self.next_after(now);
                false
            }
            Some(at) if at <= now => {
                self.next = self.next_after(now);
                true
            }
            Some(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_schedule_is_due_once_per_occurrence() {
        // 2026-01-01T00:00:00Z, a Thursday.
        let t0 = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let mut s = Schedule::parse("0 */6 * * *").unwrap();
        assert!(!s.due(t0), "the first call only schedules");
        assert_eq!(s.next(), Some(t0 + Duration::from_secs(6 * 3600)));
        assert!(!s.due(t0 + Duration::from_secs(6 * 3600 - 1)));
        assert!(s.due(t0 + Duration::from_secs(6 * 3600)));
        assert!(!s.due(t0 + Duration::from_secs(6 * 3600)));
        // Hours late (a paused machine): one pass, not one per missed occurrence.
        assert!(s.due(t0 + Duration::from_secs(30 * 3600)));
        assert_eq!(s.next(), Some(t0 + Duration::from_secs(36 * 3600)));
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("every day").is_err());
    }
}
