//! What the warmer learns from the journal: the URLs clients asked for most (with a recency
//! decay), and what each client asked for next.
//!
//! Both read only rows a warm fetch could replay: GETs (and HEADs for popularity) of a key that
//! is the plain URL (no keyed headers, no per-user scope), by clients, not by the warmer
//! itself (outcome `warm`). A URL is popular only if a response to it was shared-storable
//! (stored or served from the shared cache) and it was never user-scoped.

#[cfg(feature = "duckdb")]
use std::time::{Duration, SystemTime};

#[cfg(feature = "duckdb")]
use duckdb::{params, Connection};

#[cfg(feature = "duckdb")]
use super::row::{codes, micros, JournalOutcome};
#[cfg(feature = "duckdb")]
use super::JournalError;
#[cfg(feature = "duckdb")]
use crate::metrics::MethodLabel;

/// A URL clients asked for, and how much.
#[derive(Debug, Clone, PartialEq)]
pub struct Popular {
    pub host: String,
    /// `/path?query`, as the cache key has it.
    pub target: String,
    /// The route template of its rule, or `other`.
    pub route: String,
    /// Requests in the window.
    pub requests: u64,
    /// Requests weighted by recency: each counts `2^(-age / half_life)`.
    pub score: f64,
}

/// One URL followed by another, by the same client within the session gap.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The first URL's hash (as the journal's `url` column and the request path hash it).
    pub from: u64,
    pub from_host: String,
    pub from_target: String,
    pub from_route: String,
    pub to_host: String,
    pub to_target: String,
    pub to_route: String,
    /// Times the first URL was followed by the second.
    pub count: u64,
    /// Times the first URL was asked for by a client in all (followed by anything or nothing).
    pub from_count: u64,
}

#[cfg(feature = "duckdb")]
fn q(e: duckdb::Error) -> JournalError {
    JournalError::Query(e.to_string())
}

/// Runs `sql` with `params` and maps every row.
#[cfg(feature = "duckdb")]
fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl duckdb::Params,
    map: impl FnMut(&duckdb::Row<'_>) -> duckdb::Result<T>,
) -> Result<Vec<T>, JournalError> {
    let mut st = conn.prepare(sql).map_err(q)?;
    let rows = st.query_map(params, map).map_err(q)?;
    rows.collect::<Result<_, _>>().map_err(q)
}

#[cfg(feature = "duckdb")]
fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(feature = "duckdb")]
/// Rows a client sent (not the warmer), not refused.
fn client_rows() -> String {
    format!(
        "{o} NOT IN ({warm}, {refused})",
        o = codes::sql(codes::OUTCOME),
        warm = JournalOutcome::Warm as u32,
        refused = JournalOutcome::Refused as u32,
    )
}

#[cfg(feature = "duckdb")]
/// The `top` URLs by decayed request count over the `window` ending at `now`, each asked for at
/// least `min_requests` times, most popular first.
pub fn popular(
    conn: &Connection,
    now: SystemTime,
    window: Duration,
    half_life: Duration,
    min_requests: u64,
    top: usize,
) -> Result<Vec<Popular>, JournalError> {
    let until = micros(now);
    let since = until.saturating_sub(us(window));
    let sql = format!(
        "SELECT u.host, u.target, coalesce(ro.route, 'other'), s.n, s.score FROM (
           SELECT r.url, any_value(r.route) AS route, count(*) AS n,
                  sum(exp(-0.6931471805599453 * (? - epoch_us(r.ts)) / ?)) AS score
           FROM journal_rows r
           WHERE r.ts >= make_timestamp(?) AND r.ts <= make_timestamp(?) AND r.key_hash = 0
             AND {m} IN ({get}, {head}) AND {clients}
           GROUP BY r.url
           HAVING count(*) >= ? AND bool_or({shared} = 1) AND NOT bool_or({user} = 1)
         ) s JOIN journal_urls u ON u.hash = s.url LEFT JOIN journal_routes ro ON ro.id = s.route
         ORDER BY s.score DESC, u.target LIMIT ?",
        m = codes::sql(codes::METHOD),
        get = MethodLabel::Get as u32,
        head = MethodLabel::Head as u32,
        clients = client_rows(),
        shared = codes::sql(codes::SHARED),
        user = codes::sql(codes::USER_SCOPED),
    );
    all(
        conn,
        &sql,
        params![
            until as f64,
            us(half_life).max(1) as f64,
            since,
            until,
            min_requests.max(1),
            top as u64
        ],
        |r| {
            Ok(Popular {
                host: r.get(0)?,
                target: r.get(1)?,
                route: r.get(2)?,
                requests: r.get(3)?,
                score: r.get(4)?,
            })
        },
    )
}

#[cfg(feature = "duckdb")]
/// What clients asked for after each URL over the `window` ending at `now`: a client's next
/// GET within `session_gap` of the previous one, when it is a different URL keyed by its plain
/// URL. At most `limit` transitions, the most frequent first.
pub fn transitions(
    conn: &Connection,
    now: SystemTime,
    window: Duration,
    session_gap: Duration,
    limit: usize,
) -> Result<Vec<Transition>, JournalError> {
    let until = micros(now);
    let since = until.saturating_sub(us(window));
    let sql = format!(
        "WITH s AS (
           SELECT r.url, r.route, r.ts,
                  lead(r.url) OVER w AS nu, lead(r.ts) OVER w AS nts,
                  lead(r.route) OVER w AS nr, lead(r.key_hash) OVER w AS nk
           FROM journal_rows r
           WHERE r.ts >= make_timestamp(?) AND r.ts <= make_timestamp(?) AND r.client <> 0
             AND {m} = {get} AND {clients} AND {user} = 0
           WINDOW w AS (PARTITION BY r.client ORDER BY r.ts, r.rowid)
         ), p AS (
           SELECT url, any_value(route) AS route,
                  CASE WHEN nk = 0 AND nu <> url AND epoch_us(nts) - epoch_us(ts) <= ? THEN nu END
                    AS nxt,
                  any_value(nr) AS nroute, count(*) AS n
           FROM s GROUP BY ALL
         ), t AS (SELECT *, sum(n) OVER (PARTITION BY url) AS total FROM p)
         SELECT t.url, ua.host, ua.target, coalesce(ra.route, 'other'), ub.host, ub.target,
                coalesce(rb.route, 'other'), t.n, t.total::UBIGINT
         FROM t JOIN journal_urls ua ON ua.hash = t.url JOIN journal_urls ub ON ub.hash = t.nxt
           LEFT JOIN journal_routes ra ON ra.id = t.route
           LEFT JOIN journal_routes rb ON rb.id = t.nroute
         WHERE t.nxt IS NOT NULL
         ORDER BY t.n DESC, t.url, t.nxt LIMIT ?",
        m = codes::sql(codes::METHOD),
        get = MethodLabel::Get as u32,
        clients = client_rows(),
        user = codes::sql(codes::USER_SCOPED),
    );
    all(
        conn,
        &sql,
        params![since, until, us(session_gap), limit as u64],
        |r| {
            Ok(Transition {
                from: r.get(0)?,
                from_host: r.get(1)?,
                from_target: r.get(2)?,
                from_route: r.get(3)?,
                to_host: r.get(4)?,
                to_target: r.get(5)?,
                to_route: r.get(6)?,
                count: r.get(7)?,
                from_count: r.get(8)?,
            })
        },
    )
}

#[cfg(feature = "duckdb")]
/// Client GETs per route over the `window` ending at `now` (what a template prediction's
/// probability is out of).
pub fn route_counts(
    conn: &Connection,
    now: SystemTime,
    window: Duration,
) -> Result<std::collections::HashMap<String, u64>, JournalError> {
    let until = micros(now);
    let since = until.saturating_sub(us(window));
    let sql = format!(
        "SELECT coalesce(ro.route, 'other'), count(*) FROM journal_rows r
           LEFT JOIN journal_routes ro ON ro.id = r.route
         WHERE r.ts >= make_timestamp(?) AND r.ts <= make_timestamp(?) AND r.client <> 0
           AND {m} = {get} AND {clients} AND {user} = 0
         GROUP BY ALL",
        m = codes::sql(codes::METHOD),
        get = MethodLabel::Get as u32,
        clients = client_rows(),
        user = codes::sql(codes::USER_SCOPED),
    );
    Ok(all(conn, &sql, params![since, until], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?
    .into_iter()
    .collect())
}
