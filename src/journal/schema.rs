//! The journal file's schema: the tables, the packed `codes` of a row, the `journal` view that
//! names everything back, the conversion of older files, and the columns' documentation.

use duckdb::Connection;

use super::JournalOutcome;
use crate::metrics::{MethodLabel, Outcome};

/// The rows as stored: every column a number, and the small codes of a row packed into one
/// (`codes`, see [`codes`]). DuckDB's append, statistics and compression work is per column and
/// per value, so fewer, integer, never-NULL columns cost the writer less (floating-point
/// columns are the dearest to compress, and each NULL is a call into DuckDB's validity mask):
/// durations are whole microseconds, "none" is a zero (`key_hash` 0: the key is the plain URL;
/// `origin_us` is the time plus one, 0: the origin was not asked; `ttl_s` -1: no lifetime;
/// `import_key` 0: a live request), the node is the file's (`journal_meta`: each node keeps
/// its own journal), and the URL and route point into their own tables, written once per new
/// value. The `journal` view ([`view_sql`]) turns it all back into words and NULLs.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal_meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS journal_routes (id UINTEGER PRIMARY KEY, route VARCHAR NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS journal_urls (hash UBIGINT PRIMARY KEY, host VARCHAR NOT NULL, target VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS journal_urls_new (hash UBIGINT, host VARCHAR, target VARCHAR);
";

/// `journal_rows` as of schema 2.
const ROWS_TABLE: &str = "(
    ts          TIMESTAMP NOT NULL,
    url         UBIGINT NOT NULL,
    route       UINTEGER NOT NULL,
    key_hash    UBIGINT NOT NULL,
    codes       UINTEGER NOT NULL,
    bytes       UBIGINT NOT NULL,
    origin_us   UINTEGER NOT NULL,
    total_us    UINTEGER NOT NULL,
    ttl_s       INTEGER NOT NULL,
    client      UBIGINT NOT NULL,
    import_key  UBIGINT NOT NULL
)";

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: &str = "2";

pub(super) use super::row::codes;

/// Creates `journal_rows` (schema 2), converting a schema-1 table (one column per code, NULLs,
/// durations as milliseconds, a node code per row) in place: a file written by an older tierd
/// keeps its history.
pub(super) fn migrate(conn: &Connection) -> duckdb::Result<()> {
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM journal_meta WHERE name = 'schema'",
            [],
            |r| r.get(0),
        )
        .ok();
    let old_rows: bool = conn.query_row(
        "SELECT count(*) > 0 FROM duckdb_columns() WHERE table_name = 'journal_rows' AND column_name = 'method'",
        [],
        |r| r.get(0),
    )?;
    if version.as_deref() == Some(SCHEMA_VERSION) && !old_rows {
        return Ok(());
    }
    conn.execute_batch("BEGIN TRANSACTION")?;
    let done = (|| {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS journal_rows_v2 {ROWS_TABLE}"
        ))?;
        if old_rows {
            let put = |f: (u32, u32), e: &str| {
                format!("((({e})::UINTEGER & {}) << {})", (1u32 << f.1) - 1, f.0)
            };
            conn.execute_batch(&format!(
                "INSERT INTO journal_rows_v2 SELECT ts, url, route,
                   CASE WHEN key_hash = url THEN 0 ELSE key_hash END,
                   {st} | {me} | {ou} | {cs} | {ti} | {so} | {us} | {sh} | {wa},
                   bytes, coalesce(round(origin_ms * 1000)::UINTEGER + 1, 0),
                   round(total_ms * 1000)::UINTEGER, coalesce(ttl_s, -1), client,
                   coalesce(import_key, 0)
                 FROM journal_rows ORDER BY rowid;
                 DROP TABLE journal_rows;
                 DROP TABLE IF EXISTS journal_nodes;",
                st = put(codes::STATUS, "status"),
                me = put(codes::METHOD, "method"),
                ou = put(codes::OUTCOME, "outcome"),
                cs = put(codes::CACHE_STATUS, "cache_status"),
                ti = put(codes::TIER, "coalesce(tier + 1, 0)"),
                so = put(codes::SOURCE, "source"),
                us = put(codes::USER_SCOPED, "user_scoped::INTEGER"),
                sh = put(codes::SHARED, "shared_storable::INTEGER"),
                wa = put(codes::WARMED, "warmed::INTEGER"),
            ))?;
        } else {
            conn.execute_batch("DROP TABLE IF EXISTS journal_rows")?;
        }
        conn.execute_batch(
            "ALTER TABLE journal_rows_v2 RENAME TO journal_rows;
             INSERT OR REPLACE INTO journal_meta VALUES ('schema', '2');",
        )
    })();
    match done {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The `tier` codes: the tiers, then the origin.
const TIERS: [&str; 4] = ["l1", "l2", "l3", "origin"];
/// The `source` codes.
pub(super) const SOURCES: [&str; 2] = ["live", "import"];

/// A DuckDB list literal of `names`, indexed by code + 1.
fn list(names: impl Iterator<Item = &'static str>) -> String {
    let quoted: Vec<String> = names.map(|n| format!("'{n}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `journal` view over `journal_rows`, from the same code tables the writer uses.
pub(super) fn view_sql() -> String {
    format!(
        "CREATE OR REPLACE VIEW journal AS SELECT r.ts,
           (SELECT value FROM journal_meta WHERE name = 'node') AS node, {m}[{me} + 1] AS method,
           u.host, u.target, ro.route,
           CASE WHEN r.key_hash = 0 THEN r.url ELSE r.key_hash END AS key_hash,
           {st}::USMALLINT AS status, {o}[{ou} + 1] AS outcome,
           {c}[{cs} + 1] AS cache_status, CASE WHEN {ti} > 0 THEN {t}[{ti}] END AS tier, r.bytes,
           CASE WHEN r.origin_us > 0 THEN (r.origin_us - 1) / 1000.0 END AS origin_ms,
           r.total_us / 1000.0 AS total_ms, CASE WHEN r.ttl_s >= 0 THEN r.ttl_s END AS ttl_s,
           r.client, {us} = 1 AS user_scoped, {sh} = 1 AS shared_storable, {wa} = 1 AS warmed,
           {s}[{so} + 1] AS source, nullif(r.import_key, 0) AS import_key, r.rowid AS seq
         FROM journal_rows r
           LEFT JOIN journal_urls u ON u.hash = r.url LEFT JOIN journal_routes ro ON ro.id = r.route",
        m = list(MethodLabel::ALL.iter().map(|m| m.as_str())),
        o = list(JournalOutcome::ALL.iter().map(|o| o.as_str())),
        c = list(Outcome::ALL.iter().map(|o| o.as_str())),
        t = list(TIERS.into_iter()),
        s = list(SOURCES.into_iter()),
        st = codes::sql(codes::STATUS),
        me = codes::sql(codes::METHOD),
        ou = codes::sql(codes::OUTCOME),
        cs = codes::sql(codes::CACHE_STATUS),
        ti = codes::sql(codes::TIER),
        so = codes::sql(codes::SOURCE),
        us = codes::sql(codes::USER_SCOPED),
        sh = codes::sql(codes::SHARED),
        wa = codes::sql(codes::WARMED),
    )
}

/// The `journal` table's columns, for the README and `tierd sql --schema`.
pub const SCHEMA_DOC: &str = "\
column           type       meaning
ts               TIMESTAMP  when the request was answered (UTC, the response head)
node             VARCHAR    the node whose journal this is ([journal] node, default the host name)
method           VARCHAR    GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or other
host             VARCHAR    the host, as keyed (lowercase, default port dropped)
target           VARCHAR    path and query, as keyed (a rule's key_query applied)
route            VARCHAR    the route template (the matching rule's path, or other)
key_hash         UBIGINT    xxh3 of the cache key (the same hash the L3 tier uses)
status           USMALLINT  the status sent to the client
outcome          VARCHAR    hit, stale, miss, revalidated, bypass, pass, refused, error, warm
cache_status     VARCHAR    tierd's finer outcome (the tierd_requests_total cache_status label)
tier             VARCHAR    l1, l2 or l3 (an entry answered), origin (the origin's body), or NULL
bytes            UBIGINT    body bytes sent (0 for 304, HEAD and streamed bodies)
origin_ms        DOUBLE     time the origin took, NULL when it was not asked
total_ms         DOUBLE     time from arrival to the response head
ttl_s            INTEGER    freshness lifetime of the entry served or stored, NULL when none
client           UBIGINT    salted hash of the client (its per-user scope value, else its address)
user_scoped      BOOLEAN    the request carried a per-user scope value
shared_storable  BOOLEAN    the answer was stored or served from a shared (not per-user) entry
warmed           BOOLEAN    served from an entry a warming job stored
source           VARCHAR    live (answered by this node) or import (tierd import-log)
import_key       UBIGINT    for imported rows: which log line (re-imports are skipped)
seq              BIGINT     the row's place in the file, in the order rows were written
";

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written by the first journal (schema 1) converts in place and reads the same.
    #[test]
    fn a_schema_1_file_converts_and_reads_the_same() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE journal_meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
             INSERT INTO journal_meta VALUES ('schema', '1'), ('node', 'n1');
             CREATE TABLE journal_nodes (id USMALLINT PRIMARY KEY, name VARCHAR NOT NULL UNIQUE);
             INSERT INTO journal_nodes VALUES (0, 'n1');
             CREATE TABLE journal_routes (id UINTEGER PRIMARY KEY, route VARCHAR NOT NULL UNIQUE);
             INSERT INTO journal_routes VALUES (0, '/items/{id}');
             CREATE TABLE journal_urls (hash UBIGINT PRIMARY KEY, host VARCHAR NOT NULL, target VARCHAR NOT NULL);
             INSERT INTO journal_urls VALUES (7, 'a.example', '/items/1');
             CREATE TABLE journal_rows (ts TIMESTAMP NOT NULL, node USMALLINT NOT NULL,
               method UTINYINT NOT NULL, url UBIGINT NOT NULL, route UINTEGER NOT NULL,
               key_hash UBIGINT NOT NULL, status USMALLINT NOT NULL, outcome UTINYINT NOT NULL,
               cache_status UTINYINT NOT NULL, tier UTINYINT, bytes UBIGINT NOT NULL,
               origin_ms DOUBLE, total_ms DOUBLE NOT NULL, ttl_s INTEGER, client UBIGINT NOT NULL,
               user_scoped BOOLEAN NOT NULL, shared_storable BOOLEAN NOT NULL,
               warmed BOOLEAN NOT NULL, source UTINYINT NOT NULL, import_key UBIGINT);
             INSERT INTO journal_rows VALUES
               ('2026-12-01 10:00:00', 0, 0, 7, 0, 7, 200, 0, 0, 0, 1000, NULL, 0.25, 300, 42,
                false, true, false, 0, NULL),
               ('2026-12-01 10:00:01', 0, 2, 7, 0, 99, 404, 5, 6, 3, 12, 12.5, 13.0, NULL, 43,
                true, false, true, 1, 5);",
        )
        .unwrap();
        c.execute_batch(SCHEMA).unwrap();
        migrate(&c).unwrap();
        c.execute_batch(&view_sql()).unwrap();
        let mut st = c
            .prepare(
                "SELECT node, method, host, target, route, key_hash, status, outcome, cache_status,
                        tier, bytes, origin_ms, total_ms, ttl_s, client, user_scoped,
                        shared_storable, warmed, source, import_key
                 FROM journal ORDER BY seq",
            )
            .unwrap();
        let rows: Vec<String> = st
            .query_map([], |r| {
                let mut v = Vec::new();
                for i in 0..20 {
                    v.push(format!("{:?}", r.get::<_, duckdb::types::Value>(i)?));
                }
                Ok(v.join(" "))
            })
            .unwrap()
            .collect::<duckdb::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                "Text(\"n1\") Text(\"GET\") Text(\"a.example\") Text(\"/items/1\") Text(\"/items/{id}\") UBigInt(7) USmallInt(200) Text(\"hit\") Text(\"hit\") Text(\"l1\") UBigInt(1000) Null Double(0.25) Int(300) UBigInt(42) Boolean(false) Boolean(true) Boolean(false) Text(\"live\") Null",
                "Text(\"n1\") Text(\"POST\") Text(\"a.example\") Text(\"/items/1\") Text(\"/items/{id}\") UBigInt(99) USmallInt(404) Text(\"pass\") Text(\"pass\") Text(\"origin\") UBigInt(12) Double(12.5) Double(13.0) Null UBigInt(43) Boolean(true) Boolean(false) Boolean(true) Text(\"import\") UBigInt(5)",
            ]
        );
        let version: String = c
            .query_row(
                "SELECT value FROM journal_meta WHERE name = 'schema'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // Converting is done once: a second open leaves the rows alone.
        migrate(&c).unwrap();
        let n: u64 = c
            .query_row("SELECT count(*) FROM journal_rows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }
}
