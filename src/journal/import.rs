//! `tierd import-log`: existing nginx/Apache access logs into the journal, so analytics and
//! warming have a history from the first day after a migration.
//!
//! Formats: `combined` (Apache/nginx `combined`, optionally with more fields after the user
//! agent) and `nginx-json` (one JSON object per line, nginx `escape=json` log formats; the keys
//! read are listed on [`parse_json`]). A line that cannot be read is skipped and counted by
//! reason, never fatal. Each line's `import_key` is a hash of its file position and text, so
//! importing the same file again (or a longer version of it) adds only the lines not imported
//! yet.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::Method;

use super::row::Entry;
use super::writer::{Batch, Writer};
use super::{JournalError, JournalOptions, Row, UrlRef};
use crate::metrics::{MethodLabel, Outcome};
use crate::policy::RuleSet;

/// The access-log formats `import-log` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Combined,
    NginxJson,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "combined" => Some(LogFormat::Combined),
            "nginx-json" => Some(LogFormat::NginxJson),
            _ => None,
        }
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub lines: u64,
    pub imported: u64,
    /// Lines not imported, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub at: SystemTime,
    pub peer: Option<IpAddr>,
    pub method: Method,
    pub host: Option<String>,
    pub target: String,
    pub status: u16,
    pub bytes: u64,
    pub total: Option<Duration>,
    pub origin: Option<Duration>,
    /// nginx `$upstream_cache_status`, when logged.
    pub cache: Option<String>,
}

const ROWS_PER_APPEND: usize = 16_384;

/// Imports `files` into the journal at `o.path` (no running node may hold it). `host` names
/// the site for lines that do not carry one; `progress(done, total)` is called with bytes read.
pub fn import_logs(
    o: &JournalOptions,
    rules: &RuleSet,
    format: LogFormat,
    host: &str,
    files: &[&Path],
    now: SystemTime,
    mut progress: impl FnMut(u64, u64),
) -> Result<ImportReport, JournalError> {
    let mut w = Writer::for_import(o)?;
    let mut seen: HashSet<u64> = w.imported_keys()?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let oldest = now.checked_sub(o.retention).unwrap_or(UNIX_EPOCH);
    let mut report = ImportReport::default();
    let mut done = 0u64;
    let mut batch = Batch::default();
    let salt = w.salt_value();
    let other: Arc<str> = Arc::from(crate::metrics::OTHER_ROUTE);
    let mut routes: BTreeMap<usize, Arc<str>> = BTreeMap::new();
    for file in files {
        let f = std::fs::File::open(file).map_err(|e| JournalError::Open {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
        let mut r = BufReader::new(f);
        let mut buf = Vec::new();
        let mut position = 0u64;
        loop {
            buf.clear();
            let n = r
                .read_until(b'\n', &mut buf)
                .map_err(|e| JournalError::Open {
                    path: file.display().to_string(),
                    message: e.to_string(),
                })?;
            if n == 0 {
                break;
            }
            done += n as u64;
            position += 1;
            if position % 4096 == 0 {
                progress(done, total);
            }
            let line = match std::str::from_utf8(&buf) {
                Ok(l) => l.trim_end_matches(['\n', '\r']),
                Err(_) => {
                    report.lines += 1;
                    *report.skipped.entry("not UTF-8").or_default() += 1;
                    continue;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            report.lines += 1;
            let parsed = match format {
                LogFormat::Combined => parse_combined(line),
                LogFormat::NginxJson => parse_json(line),
            };
            let p = match parsed {
                Ok(p) => p,
                Err(why) => {
                    *report.skipped.entry(why).or_default() += 1;
                    continue;
                }
            };
            if p.at < oldest {
                *report
                    .skipped
                    .entry("older than journal.retention_days")
                    .or_default() += 1;
                continue;
            }
            // 0 marks a live row in the file.
            let key = xxhash_rust::xxh3::xxh3_64_with_seed(line.as_bytes(), position).max(1);
            if !seen.insert(key) {
                *report.skipped.entry("already imported").or_default() += 1;
                continue;
            }
            let path = p.target.split('?').next().unwrap_or("/");
            let route = match rules.find(&p.method, path).map(|m| m.index()) {
                Some(i) => routes
                    .entry(i)
                    .or_insert_with(|| Arc::from(rules.rule(i).template.as_str()))
                    .clone(),
                None => other.clone(),
            };
            let host = p.host.as_deref().unwrap_or(host);
            let host = crate::http::host::normalized(host.as_bytes());
            let (outcome, bypassed) = match p.cache.as_deref() {
                Some("HIT") => (Outcome::Hit, false),
                Some("STALE" | "UPDATING") => (Outcome::StaleWhileRevalidate, false),
                Some("MISS" | "EXPIRED") => (Outcome::Miss, false),
                Some("REVALIDATED") => (Outcome::Revalidated, false),
                Some("BYPASS") => (Outcome::Pass, true),
                _ => (Outcome::Pass, false),
            };
            let row = Row {
                at: p.at,
                method: MethodLabel::of(&p.method),
                url: UrlRef::with_text(&format!("{host}{}", p.target), salt),
                route,
                status: p.status,
                outcome,
                bypassed,
                tier: None,
                bytes: p.bytes,
                origin: p.origin,
                total: p.total.unwrap_or_default(),
                ttl: None,
                peer: p.peer,
                user_scoped: false,
                warm_fetch: false,
                warmed: false,
                import_key: Some(key),
            };
            w.push(Entry::of(row, salt), &mut batch);
            if batch.len() >= ROWS_PER_APPEND {
                report.imported += batch.len() as u64;
                w.append(&mut batch)
                    .map_err(|e| JournalError::Query(e.to_string()))?;
            }
        }
    }
    if !batch.is_empty() {
        report.imported += batch.len() as u64;
        w.append(&mut batch)
            .map_err(|e| JournalError::Query(e.to_string()))?;
    }
    w.checkpoint();
    progress(total, total);
    Ok(report)
}

use super::text::days_from_civil;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn num(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// A time from its parts and a UTC offset in minutes.
fn time(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64, offset_min: i64) -> Option<SystemTime> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// `10/Oct/2000:13:55:36 -0700`.
fn parse_clf_time(s: &str) -> Option<SystemTime> {
    let (date, zone) = s.split_once(' ')?;
    let mut p = date.split([':', '/']);
    let d = num(p.next()?)?;
    let month = p.next()?;
    let mo = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let y = num(p.next()?)?;
    let (h, mi, sec) = (num(p.next()?)?, num(p.next()?)?, num(p.next()?)?);
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let z = num(zone.get(1..5)?)?;
    time(y, mo, d, h, mi, sec, sign * (z / 100 * 60 + z % 100))
}

/// `2026-12-01T10:00:00+00:00` (or `Z`).
fn parse_iso_time(s: &str) -> Option<SystemTime> {
    let (y, mo, d) = (num(s.get(0..4)?)?, num(s.get(5..7)?)?, num(s.get(8..10)?)?);
    let (h, mi, sec) = (
        num(s.get(11..13)?)?,
        num(s.get(14..16)?)?,
        num(s.get(17..19)?)?,
    );
    let rest = s.get(19..)?;
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match rest {
        "Z" | "" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let hh = num(z.get(1..3)?)?;
            let mm = num(z.get(4..6).or(z.get(3..5))?)?;
            sign * (hh * 60 + mm)
        }
    };
    time(y, mo, d, h, mi, sec, offset)
}

/// `GET /path?q HTTP/1.1` into method and target.
fn parse_request(r: &str) -> Result<(Method, String), &'static str> {
    let mut parts = r.split(' ');
    let method = parts
        .next()
        .filter(|m| !m.is_empty())
        .ok_or("no request line")?;
    let target = parts.next().ok_or("no request target")?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| "bad method")?;
    if !target.starts_with('/') {
        return Err("request target not a path");
    }
    Ok((method, target.to_owned()))
}

/// One `combined` line: `addr ident user [time] "request" status bytes "referer" "agent" ...`.
pub fn parse_combined(line: &str) -> Result<Parsed, &'static str> {
    let (addr, rest) = line.split_once(' ').ok_or("not a combined line")?;
    let open = rest.find('[').ok_or("no [time]")?;
    let close = rest[open..].find(']').ok_or("no [time]")? + open;
    let at = parse_clf_time(&rest[open + 1..close]).ok_or("bad time")?;
    let rest = rest[close + 1..].trim_start();
    let rest = rest.strip_prefix('"').ok_or("no \"request\"")?;
    let end = rest.find('"').ok_or("no \"request\"")?;
    let (method, target) = parse_request(&rest[..end])?;
    let mut fields = rest[end + 1..].split_whitespace();
    let status: u16 = fields
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or("bad status")?;
    let bytes = match fields.next() {
        Some("-") => 0,
        Some(b) => b.parse().map_err(|_| "bad byte count")?,
        None => return Err("no byte count"),
    };
    Ok(Parsed {
        at,
        peer: addr.parse().ok(),
        method,
        host: None,
        target,
        status,
        bytes,
        total: None,
        origin: None,
        cache: None,
    })
}

/// One nginx JSON line. Keys read: `time_iso8601`, `time_local` or `msec` (the time);
/// `remote_addr`; `request` or `request_method` with `request_uri`; `status`;
/// `body_bytes_sent`; `request_time` and `upstream_response_time` (seconds); `host` or
/// `http_host`; `upstream_cache_status`. Numbers may be JSON numbers or strings.
pub fn parse_json(line: &str) -> Result<Parsed, &'static str> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|_| "not JSON")?;
    let text = |k: &str| -> Option<String> {
        match v.get(k)? {
            serde_json::Value::String(s) if !s.is_empty() && s != "-" => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let at = if let Some(t) = text("time_iso8601") {
        parse_iso_time(&t)
    } else if let Some(t) = text("time_local") {
        parse_clf_time(&t)
    } else if let Some(t) = text("msec") {
        t.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| UNIX_EPOCH + Duration::from_secs_f64(s))
    } else {
        return Err("no time");
    }
    .ok_or("bad time")?;
    let (method, target) = match (text("request_method"), text("request_uri")) {
        (Some(m), Some(u)) => parse_request(&format!("{m} {u} HTTP/1.1"))?,
        _ => parse_request(&text("request").ok_or("no request")?)?,
    };
    let status: u16 = text("status")
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or("bad status")?;
    let secs = |k: &str| {
        text(k)
            .and_then(|s| s.split(',').next_back().map(|t| t.trim().to_owned()))
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
    };
    Ok(Parsed {
        at,
        peer: text("remote_addr").and_then(|a| a.parse().ok()),
        method,
        host: text("host").or_else(|| text("http_host")),
        target,
        status,
        bytes: text("body_bytes_sent")
            .and_then(|b| b.parse().ok())
            .unwrap_or(0),
        total: secs("request_time"),
        origin: secs("upstream_response_time"),
        cache: text("upstream_cache_status").map(|s| s.to_ascii_uppercase()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn combined_lines_parse_with_their_zone() {
        let p = parse_combined(
            r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?a=1 HTTP/1.0" 200 2326 "http://ref/" "Mozilla/4.08" 0.012"#,
        )
        .unwrap();
        assert_eq!(secs(p.at), 971_211_336, "13:55:36 -0700 is 20:55:36 UTC");
        assert_eq!(p.method, Method::GET);
        assert_eq!(p.target, "/apache_pb.gif?a=1");
        assert_eq!((p.status, p.bytes), (200, 2326));
        assert_eq!(p.peer, Some("127.0.0.1".parse().unwrap()));
        let dash = parse_combined(
            r#"::1 - - [01/Dec/2026:00:00:00 +0000] "HEAD / HTTP/1.1" 304 - "-" "-""#,
        )
        .unwrap();
        assert_eq!(dash.bytes, 0);
        for bad in [
            "",
            "garbage",
            r#"1.2.3.4 - - [32/Dec/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-""#,
            r#"1.2.3.4 - - [01/Dec/2026:00:00:00 +0000] "GET / HTTP/1.1" 999 1 "-" "-""#,
            r#"1.2.3.4 - - [01/Dec/2026:00:00:00 +0000] "GET http://x/ HTTP/1.1" 200 1"#,
            r#"1.2.3.4 - - [01/Dec/2026:00:00:00 +0000] "\x16\x03" 400 0 "-" "-""#,
        ] {
            assert!(parse_combined(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nginx_json_lines_parse() {
        let p = parse_json(
            r#"{"time_iso8601":"2026-12-01T10:00:00+01:00","remote_addr":"10.0.0.7","request":"GET /api/x?id=1 HTTP/1.1","status":"200","body_bytes_sent":"512","request_time":"0.020","upstream_response_time":"0.010, 0.015","upstream_cache_status":"MISS","host":"api.example"}"#,
        )
        .unwrap();
        assert_eq!(secs(p.at), 1_796_115_600);
        assert_eq!(p.origin, Some(Duration::from_millis(15)));
        assert_eq!(p.total, Some(Duration::from_millis(20)));
        assert_eq!(p.cache.as_deref(), Some("MISS"));
        assert_eq!(p.host.as_deref(), Some("api.example"));
        let m = parse_json(
            r#"{"msec":"1796112000.5","request_method":"POST","request_uri":"/x","status":201}"#,
        )
        .unwrap();
        assert_eq!(secs(m.at), 1_796_112_000);
        assert_eq!(m.method, Method::POST);
        assert!(parse_json(r#"{"status":200}"#).is_err());
        assert!(parse_json("{").is_err());
    }
}
