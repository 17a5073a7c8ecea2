//! Analytics over the journal: the summary an operator acts on (`/_tierd/analytics/summary`,
//! `tierd report`), and read-only SQL (`tierd sql`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duckdb::types::ValueRef;
use duckdb::{params, Connection};
use serde::Serialize;

use super::row::micros;
use super::JournalError;

/// Rows in each list of the summary (routes, misses, advice).
pub const SUMMARY_TOP: usize = 20;

/// The span a summary covers, ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Window {
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
}

impl Window {
    /// `1h`, `24h` or `7d`.
    pub fn parse(s: &str) -> Option<Window> {
        match s {
            "1h" => Some(Window::Hour),
            "24h" | "1d" => Some(Window::Day),
            "7d" => Some(Window::Week),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Window::Hour => 3600,
            Window::Day => 86_400,
            Window::Week => 7 * 86_400,
        })
    }
}

/// Requests answered from each tier, and by the origin.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct ByTier {
    pub l1: u64,
    pub l2: u64,
    pub l3: u64,
    pub origin: u64,
}

/// One route's figures.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RouteRow {
    pub route: String,
    pub requests: u64,
    pub hits: u64,
    pub hit_ratio: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub bytes: u64,
    pub origin_requests: u64,
}

/// One hour's figures.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct HourRow {
    /// The hour's start, RFC 3339 UTC.
    pub hour: String,
    pub requests: u64,
    pub hits: u64,
    pub hit_ratio: f64,
}

/// A URL the origin had to answer often.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct MissRow {
    /// `host/path?query` as keyed.
    pub url: String,
    pub misses: u64,
    /// RFC 3339 UTC.
    pub last_seen: String,
}

/// A TTL suggestion for one route.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TtlAdvice {
    pub route: String,
    /// The lifetime its entries were given (the most common), seconds.
    pub current_ttl_s: u64,
    pub suggested_ttl_s: u64,
    /// Why, in words.
    pub reason: String,
    /// Stale entries validated with a 304 (the content had not changed).
    pub revalidated_304: u64,
    /// URLs fetched again in full after an earlier request in the window (their entry had
    /// expired and changed, could not be validated, or was purged).
    pub refetched: u64,
    /// The median time between two requests for the same URL, seconds.
    pub median_rerequest_s: Option<f64>,
}

/// What the journal says about the last `window`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    pub window: String,
    /// RFC 3339 UTC: the window's start and end.
    pub since: String,
    pub until: String,
    pub requests: u64,
    /// Answered from storage without asking the origin (outcome hit or stale).
    pub hits: u64,
    /// hits / (requests - refused).
    pub hit_ratio: f64,
    pub refused: u64,
    pub by_tier: ByTier,
    pub by_route: Vec<RouteRow>,
    pub by_hour: Vec<HourRow>,
    pub top_misses: Vec<MissRow>,
    /// Body bytes sent that the origin did not send (hits, stale, revalidated, collapsed).
    pub bytes_saved: u64,
    /// Requests answered without an origin request of their own.
    pub origin_requests_saved: u64,
    pub origin_requests: u64,
    pub ttl_advice: Vec<TtlAdvice>,
    /// The share of requests the journal keeps (`[journal] sample`): below 1 the counts are of
    /// that sample (multiply by 1 / sample for all requests); ratios and percentiles estimate
    /// the whole.
    #[serde(default = "one")]
    pub sample: f64,
}

fn one() -> f64 {
    1.0
}

use super::text::format_utc;

fn rfc3339(micros: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64);
    format_utc(t)
}

fn q(e: duckdb::Error) -> JournalError {
    JournalError::Query(e.to_string())
}

const HIT: &str = "outcome IN ('hit', 'stale')";

/// The summary over `[now - window, now]`.
pub(super) fn summary(
    conn: &Connection,
    window: Window,
    now: SystemTime,
) -> Result<Summary, JournalError> {
    let until = micros(now);
    let since = until - window.duration().as_micros() as i64;
    // The warmer's own fetches are not client requests.
    let w = "ts >= make_timestamp(?) AND ts <= make_timestamp(?) AND outcome <> 'warm'";
    let (requests, hits, refused, origin_requests, bytes_saved): (u64, u64, u64, u64, u64) = conn
        .query_row(
            &format!(
                "SELECT count(*), count(*) FILTER ({HIT}), count(*) FILTER (outcome = 'refused'),
                        count(*) FILTER (origin_ms IS NOT NULL),
                        coalesce(sum(bytes) FILTER (outcome IN ('hit', 'stale', 'revalidated')
                                                    OR cache_status = 'collapsed'), 0)::UBIGINT
                 FROM journal WHERE {w}"
            ),
            params![since, until],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .map_err(q)?;
    let ratio = |hits: u64, n: u64| if n == 0 { 0.0 } else { hits as f64 / n as f64 };

    let mut by_tier = ByTier::default();
    {
        let mut st = conn
            .prepare(&format!(
                "SELECT tier, count(*) FROM journal WHERE {w} AND tier IS NOT NULL GROUP BY tier"
            ))
            .map_err(q)?;
        let rows = st
            .query_map(params![since, until], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
            })
            .map_err(q)?;
        for row in rows {
            let (t, n) = row.map_err(q)?;
            match t.as_str() {
                "l1" => by_tier.l1 = n,
                "l2" => by_tier.l2 = n,
                "l3" => by_tier.l3 = n,
                "origin" => by_tier.origin = n,
                _ => {}
            }
        }
    }

    let by_route = {
        let mut st = conn
            .prepare(&format!(
                "SELECT route, count(*), count(*) FILTER ({HIT}),
                        count(*) FILTER (outcome <> 'refused'),
                        quantile_cont(total_ms, 0.5), quantile_cont(total_ms, 0.99),
                        coalesce(sum(bytes), 0)::UBIGINT, count(*) FILTER (origin_ms IS NOT NULL)
                 FROM journal WHERE {w}
                 GROUP BY route ORDER BY count(*) DESC, route LIMIT {SUMMARY_TOP}"
            ))
            .map_err(q)?;
        let rows = st
            .query_map(params![since, until], |r| {
                let hits: u64 = r.get(2)?;
                let answered: u64 = r.get(3)?;
                Ok(RouteRow {
                    route: r.get(0)?,
                    requests: r.get(1)?,
                    hits,
                    hit_ratio: ratio(hits, answered),
                    p50_ms: r.get::<_, Option<f64>>(4)?.unwrap_or(0.0),
                    p99_ms: r.get::<_, Option<f64>>(5)?.unwrap_or(0.0),
                    bytes: r.get(6)?,
                    origin_requests: r.get(7)?,
                })
            })
            .map_err(q)?;
        rows.collect::<duckdb::Result<Vec<_>>>().map_err(q)?
    };

    let by_hour = {
        let mut st = conn
            .prepare(&format!(
                "SELECT epoch_us(date_trunc('hour', ts)), count(*), count(*) FILTER ({HIT}),
                        count(*) FILTER (outcome <> 'refused')
                 FROM journal WHERE {w} GROUP BY 1 ORDER BY 1"
            ))
            .map_err(q)?;
        let rows = st
            .query_map(params![since, until], |r| {
                let hits: u64 = r.get(2)?;
                Ok(HourRow {
                    hour: rfc3339(r.get(0)?),
                    requests: r.get(1)?,
                    hits,
                    hit_ratio: ratio(hits, r.get(3)?),
                })
            })
            .map_err(q)?;
        rows.collect::<duckdb::Result<Vec<_>>>().map_err(q)?
    };

    let top_misses = {
        let mut st = conn
            .prepare(&format!(
                "SELECT host || target, count(*), epoch_us(max(ts))
                 FROM journal WHERE {w} AND outcome = 'miss' AND cache_status = 'miss'
                 GROUP BY 1 ORDER BY 2 DESC, 3 DESC, 1 LIMIT {SUMMARY_TOP}"
            ))
            .map_err(q)?;
        let rows = st
            .query_map(params![since, until], |r| {
                Ok(MissRow {
                    url: r.get(0)?,
                    misses: r.get(1)?,
                    last_seen: rfc3339(r.get(2)?),
                })
            })
            .map_err(q)?;
        rows.collect::<duckdb::Result<Vec<_>>>().map_err(q)?
    };

    let ttl_advice = ttl_advice(conn, w, since, until)?;

    Ok(Summary {
        window: window.as_str().to_owned(),
        since: rfc3339(since),
        until: rfc3339(until),
        requests,
        hits,
        hit_ratio: ratio(hits, requests - refused),
        refused,
        by_tier,
        by_route,
        by_hour,
        top_misses,
        bytes_saved,
        origin_requests_saved: (requests - refused).saturating_sub(origin_requests),
        origin_requests,
        ttl_advice,
        sample: conn
            .query_row(
                "SELECT TRY_CAST(value AS DOUBLE) FROM journal_meta WHERE name = 'sample'",
                [],
                |r| r.get::<_, Option<f64>>(0),
            )
            .ok()
            .flatten()
            .unwrap_or(1.0),
    })
}

/// Per cached route: the lifetime given, how its expired entries fared at the origin, and how
/// often the same URL is asked for again; see [`advise`].
fn ttl_advice(
    conn: &Connection,
    w: &str,
    since: i64,
    until: i64,
) -> Result<Vec<TtlAdvice>, JournalError> {
    let mut st = conn
        .prepare(&format!(
            "WITH win AS (
                SELECT *, lag(ts) OVER (PARTITION BY key_hash ORDER BY ts, seq) AS prev
                FROM journal WHERE {w} AND shared_storable)
             SELECT win.route, mode(ttl_s) FILTER (ttl_s IS NOT NULL)::BIGINT,
                    count(*) FILTER (outcome = 'revalidated'),
                    count(*) FILTER (outcome = 'miss' AND cache_status = 'miss' AND prev IS NOT NULL),
                    median(epoch_us(ts) - epoch_us(prev)) FILTER (prev IS NOT NULL) / 1e6
             FROM win GROUP BY win.route
             HAVING mode(ttl_s) FILTER (ttl_s IS NOT NULL) IS NOT NULL
             ORDER BY count(*) DESC, win.route LIMIT {SUMMARY_TOP}"
        ))
        .map_err(q)?;
    let rows = st
        .query_map(params![since, until], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, u64>(2)?,
                r.get::<_, u64>(3)?,
                r.get::<_, Option<f64>>(4)?,
            ))
        })
        .map_err(q)?;
    let mut out = Vec::new();
    for row in rows {
        let (route, ttl, revalidated, refetched, gap) = row.map_err(q)?;
        let (suggested, reason) = advise(ttl.max(0) as u64, revalidated, refetched, gap);
        out.push(TtlAdvice {
            route,
            current_ttl_s: ttl.max(0) as u64,
            suggested_ttl_s: suggested,
            reason,
            revalidated_304: revalidated,
            refetched,
            median_rerequest_s: gap,
        });
    }
    Ok(out)
}

/// Fewer than this many expiries say too little to advise on.
const ADVICE_MIN_SAMPLES: u64 = 10;
/// The longest TTL suggested, seconds.
const ADVICE_MAX_TTL: u64 = 86_400;

/// A TTL suggestion: `ttl` the lifetime given; of the entries that expired and were asked for
/// again, `revalidated` came back 304 (unchanged) and `refetched` were fetched in full; `gap`
/// the median seconds between two requests for one URL.
///
/// - Mostly unchanged at expiry (>= 80% 304s): the content outlives the TTL; double it.
/// - URLs asked again only after their entry expired, and the content mostly unchanged
///   (>= 50%): raise the TTL past the usual gap so the next request hits.
/// - Mostly changed at expiry (<= 20% 304s): the TTL is not too long for the content; keep it.
pub fn advise(ttl: u64, revalidated: u64, refetched: u64, gap: Option<f64>) -> (u64, String) {
    let expiries = revalidated + refetched;
    if ttl == 0 {
        return (0, "not stored (TTL 0): nothing to tune".into());
    }
    if expiries < ADVICE_MIN_SAMPLES {
        return (
            ttl,
            format!("keep: too few expired entries asked for again to tell ({expiries}, need {ADVICE_MIN_SAMPLES})"),
        );
    }
    let unchanged = revalidated as f64 / expiries as f64;
    let pct = (unchanged * 100.0).round();
    if let Some(g) = gap {
        if g > ttl as f64 && unchanged >= 0.5 {
            let s = ((g * 1.5).ceil() as u64).clamp(ttl + 1, ADVICE_MAX_TTL);
            return (
                s,
                format!("raise: the same URL is asked for again after {g:.0} s (median) but entries live {ttl} s, and {pct}% of expired entries were unchanged (304)"),
            );
        }
    }
    if unchanged >= 0.8 {
        let s = (ttl * 2).min(ADVICE_MAX_TTL).max(ttl);
        return (
            s,
            format!("raise: {pct}% of expired entries were unchanged at the origin (304)"),
        );
    }
    if unchanged <= 0.2 {
        return (
            ttl,
            format!(
                "keep: {}% of expired entries had changed at the origin",
                100.0 - pct
            ),
        );
    }
    (
        ttl,
        format!("keep: {pct}% of expired entries were unchanged (304)"),
    )
}

/// Opens a journal file read-only (no running node may hold it).
pub fn open_read_only(path: &Path) -> Result<Connection, JournalError> {
    super::writer::open_read_only_at(path)
}

/// A query's result as text cells.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TableOut {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Runs one query and returns every cell as text (NULL as an empty string), at most `limit`
/// rows.
pub fn query_table(conn: &Connection, sql: &str, limit: usize) -> Result<TableOut, JournalError> {
    let mut st = conn.prepare(sql).map_err(q)?;
    let mut rows = st.query([]).map_err(q)?;
    let mut out = Vec::new();
    let mut columns = Vec::new();
    while let Some(r) = rows.next().map_err(q)? {
        if columns.is_empty() {
            let s = r.as_ref();
            columns = s.column_names();
        }
        if out.len() >= limit {
            break;
        }
        let mut cells = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            cells.push(cell(r.get_ref(i).map_err(q)?));
        }
        out.push(cells);
    }
    drop(rows);
    if columns.is_empty() {
        columns = st.column_names();
    }
    Ok(TableOut { columns, rows: out })
}

fn cell(v: ValueRef<'_>) -> String {
    use duckdb::types::Value;
    match v.to_owned() {
        Value::Null => String::new(),
        Value::Boolean(b) => b.to_string(),
        Value::TinyInt(n) => n.to_string(),
        Value::SmallInt(n) => n.to_string(),
        Value::Int(n) => n.to_string(),
        Value::BigInt(n) => n.to_string(),
        Value::HugeInt(n) => n.to_string(),
        Value::UTinyInt(n) => n.to_string(),
        Value::USmallInt(n) => n.to_string(),
        Value::UInt(n) => n.to_string(),
        Value::UBigInt(n) => n.to_string(),
        Value::Float(n) => n.to_string(),
        Value::Double(n) => n.to_string(),
        Value::Text(s) => s,
        Value::Timestamp(unit, n) => {
            let us = match unit {
                duckdb::types::TimeUnit::Second => n * 1_000_000,
                duckdb::types::TimeUnit::Millisecond => n * 1000,
                duckdb::types::TimeUnit::Microsecond => n,
                duckdb::types::TimeUnit::Nanosecond => n / 1000,
            };
            rfc3339(us)
        }
        other => format!("{other:?}"),
    }
}

/// Runs `sql` when DuckDB's own parser finds it to be exactly one query (`SELECT`, `WITH`,
/// `FROM`, `SUMMARIZE`...: anything `json_serialize_sql` accepts), inside a read-only
/// transaction that is rolled back whatever happens: the node's endpoint for `tierd sql`.
pub(super) fn query_read_only(
    conn: &Connection,
    sql: &str,
    limit: usize,
) -> Result<TableOut, JournalError> {
    let parsed: String = conn
        .query_row("SELECT json_serialize_sql(?::VARCHAR)", params![sql], |r| {
            r.get(0)
        })
        .map_err(q)?;
    let parsed: serde_json::Value =
        serde_json::from_str(&parsed).map_err(|e| JournalError::Query(e.to_string()))?;
    if parsed["error"] != false {
        let m = parsed["error_message"].as_str().unwrap_or("not a query");
        return Err(JournalError::Query(format!(
            "only one read-only query (SELECT, WITH, FROM, SUMMARIZE...) is run: {m}"
        )));
    }
    let n = parsed["statements"].as_array().map_or(0, |s| s.len());
    if n != 1 {
        return Err(JournalError::Query(format!(
            "one query at a time ({n} statements given)"
        )));
    }
    conn.execute_batch("BEGIN TRANSACTION READ ONLY")
        .map_err(q)?;
    let out = query_table(conn, sql, limit);
    if let Err(e) = conn.execute_batch("ROLLBACK") {
        tracing::warn!(error = %e, "journal query: rollback failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_follows_the_share_of_unchanged_expiries() {
        assert_eq!(advise(60, 9, 0, None).0, 60, "too few samples");
        assert_eq!(advise(60, 9, 1, None).0, 120, "90% unchanged: doubled");
        assert_eq!(advise(60, 1, 9, None).0, 60, "mostly changed: kept");
        assert_eq!(
            advise(60, 6, 4, Some(200.0)).0,
            300,
            "asked again after 200 s: 1.5x the gap"
        );
        assert_eq!(
            advise(60, 2, 8, Some(200.0)).0,
            60,
            "gap long but content changes: kept"
        );
        assert_eq!(advise(50_000, 10, 0, None).0, ADVICE_MAX_TTL, "capped");
        assert_eq!(advise(0, 10, 0, None).0, 0);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199_000_000), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(1_798_761_600_000_000), "2027-01-01T00:00:00Z");
    }
}
