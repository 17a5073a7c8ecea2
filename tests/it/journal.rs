//! The access journal: real traffic through a gateway into a real DuckDB file, the summary's
//! numbers checked exactly, across a restart, retention, and the CLI over the file.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tierd::clock::ManualClock;
use tierd::config::Settings;
use tierd::server::Gateway;

use crate::common::{self, metric_at, with_l3, Origin, Reply};

pub(crate) fn origin_reply(req: &actix_web::HttpRequest, _: u64) -> Reply {
    match req.path() {
        p if p.starts_with("/items/") => Reply::ok("item").cc("max-age=60"),
        _ => Reply::ok("misc!").cc("no-store"),
    }
}

/// A gateway with L3, the `/items/{id}` rule and the journal on (node `node-a`), in `dir`.
pub(crate) fn settings(origin: &Origin, dir: &std::path::Path) -> Settings {
    let mut s = common::settings_for(origin.addr);
    with_l3(&mut s, &dir.join("l3.duckdb"));
    s.rules = common::rules(
        r#"
        [[rules]]
        path = "/items/{id}"
        ttl_seconds = 60
        "#,
    );
    s.journal.enabled = Some(true);
    s.journal.node = "node-a".into();
    s
}

async fn summary(gw: &Gateway, window: &str) -> Value {
    let r = common::send(common::client().get(format!(
        "http://{}/_tierd/analytics/summary?window={window}",
        gw.admin_addr
    )))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn route<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["by_route"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {s}"))
}

/// Six requests: /items/1 three times (a miss, two L1 hits), /items/2 once (a miss), /misc
/// twice (no-store: passes).
async fn traffic(gw: &Gateway) {
    let c = common::client();
    for p in [
        "/items/1", "/items/1", "/items/1", "/items/2", "/misc", "/misc",
    ] {
        let r = common::send(c.get(format!("http://{}{p}", gw.addr))).await;
        assert_eq!(r.status, 200);
    }
}

fn check_numbers(s: &Value) {
    assert_eq!(s["window"], "1h");
    assert_eq!(s["sample"], 1.0, "every request journaled");
    assert_eq!(s["requests"], 6, "{s}");
    assert_eq!(s["hits"], 2);
    assert!((s["hit_ratio"].as_f64().unwrap() - 2.0 / 6.0).abs() < 1e-9);
    assert_eq!(
        s["by_tier"],
        serde_json::json!({"l1": 2, "l2": 0, "l3": 0, "origin": 4})
    );
    let items = route(s, "/items/{id}");
    assert_eq!(items["requests"], 4);
    assert_eq!(items["hits"], 2);
    assert_eq!(items["hit_ratio"], 0.5);
    assert_eq!(items["origin_requests"], 2);
    assert_eq!(items["bytes"], 16);
    let other = route(s, "other");
    assert_eq!(
        (other["requests"].as_u64(), other["hits"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(other["origin_requests"], 2);
    let misses: Vec<(String, u64)> = s["top_misses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["url"].as_str().unwrap().to_owned(),
                m["misses"].as_u64().unwrap(),
            )
        })
        .collect();
    let host = "127.0.0.1";
    let mut expected = vec![
        (format!("{host}/items/1"), 1),
        (format!("{host}/items/2"), 1),
    ];
    expected.sort();
    let mut got = misses
        .iter()
        .map(|(u, n)| {
            (
                u.split_once(':').map_or(u.clone(), |(h, rest)| {
                    format!("{h}{}", &rest[rest.find('/').unwrap_or(0)..])
                }),
                *n,
            )
        })
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(got, expected, "{s}");
    assert_eq!(s["bytes_saved"], 8, "two hits of 4 bytes");
    assert_eq!(s["origin_requests"], 4);
    assert_eq!(s["origin_requests_saved"], 2);
    // TTL advice for the cached route only: its entries' lifetime, nothing expired yet.
    let advice = s["ttl_advice"].as_array().unwrap();
    assert_eq!(advice.len(), 1, "{s}");
    assert_eq!(advice[0]["route"], "/items/{id}");
    assert_eq!(advice[0]["current_ttl_s"], 60);
    assert_eq!(advice[0]["suggested_ttl_s"], 60);
    assert_eq!(
        (
            advice[0]["revalidated_304"].as_u64(),
            advice[0]["refetched"].as_u64()
        ),
        (Some(0), Some(0))
    );
}

#[actix_web::test]
async fn the_summary_counts_real_traffic_exactly_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let s = settings(&origin, dir.path());
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    traffic(&gw).await;
    let first = summary(&gw, "1h").await;
    check_numbers(&first);
    // Every request that was answered is in the summary asked right after: nothing waits for
    // a timer (the summary writes what is queued first).
    assert_eq!(
        metric_at(
            gw.admin_addr,
            "tierd_journal_rows_total",
            &[("outcome", "written")]
        )
        .await,
        6.0
    );
    assert_eq!(
        metric_at(
            gw.admin_addr,
            "tierd_journal_rows_total",
            &[("outcome", "dropped")]
        )
        .await,
        0.0
    );
    // /_tierd/stats: hits, misses and hit ratio since start, per tier and overall (the two
    // /misc passes are neither).
    let st =
        common::send(common::client().get(format!("http://{}/_tierd/stats", gw.admin_addr))).await;
    let st: Value = serde_json::from_slice(&st.body).unwrap();
    assert_eq!(
        st["hits"]["l1"],
        serde_json::json!({"hits": 2, "misses": 4, "hit_ratio": 2.0 / 6.0}),
        "{st}"
    );
    assert_eq!(st["hits"]["l3"]["misses"], 4, "{st}");
    assert_eq!(
        st["hits"]["overall"],
        serde_json::json!({"hits": 2, "misses": 2, "hit_ratio": 0.5}),
        "{st}"
    );
    gw.stop(true).await;

    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    let again = summary(&gw, "1h").await;
    check_numbers(&again);
    // Two hours on, the 1h window is empty and the 24h one still holds the six.
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(summary(&gw, "1h").await["requests"], 0);
    assert_eq!(summary(&gw, "24h").await["requests"], 6);
    gw.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn rows_past_the_retention_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let mut s = settings(&origin, dir.path());
    s.journal.retention_days = 1;
    // One worker thread: the one that sent /items/1's text before it was deleted.
    s.server.workers = 1;
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    traffic(&gw).await;
    let journal = gw.state.journal.clone().unwrap();
    journal.housekeeping().await.unwrap();
    assert_eq!(
        summary(&gw, "7d").await["requests"],
        6,
        "within the retention: kept"
    );
    clock.advance(Duration::from_secs(86_400 + 60));
    common::send(common::client().get(format!("http://{}/items/9", gw.addr))).await;
    journal.housekeeping().await.unwrap();
    let s7 = summary(&gw, "7d").await;
    assert_eq!(
        s7["requests"], 1,
        "the six older than a day are gone, the new one stays: {s7}"
    );
    assert_eq!(
        metric_at(
            gw.admin_addr,
            "tierd_journal_deleted_rows_total",
            &[("reason", "retention")]
        )
        .await,
        6.0
    );
    // The URLs only the deleted rows used are gone too; the view still names the new row's.
    let urls = |gw: &Gateway| {
        let journal = gw.state.journal.clone().unwrap();
        async move {
            let n = journal
                .query("SELECT count(*) FROM journal_urls", 10)
                .await
                .unwrap();
            let t = journal
                .query(
                    "SELECT coalesce(target, 'NULL') FROM journal ORDER BY ts",
                    10,
                )
                .await
                .unwrap();
            let targets: Vec<String> = t.rows.into_iter().map(|r| r[0].clone()).collect();
            (n.rows[0][0].clone(), targets)
        }
    };
    assert_eq!(urls(&gw).await, ("1".into(), vec!["/items/9".to_owned()]));
    // A URL asked again after its text was deleted with its rows is named again: the worker
    // that had sent it sends it once more.
    common::send(common::client().get(format!("http://{}/items/1", gw.addr))).await;
    assert_eq!(
        urls(&gw).await,
        (
            "2".into(),
            vec!["/items/9".to_owned(), "/items/1".to_owned()]
        )
    );
    gw.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn the_cli_reads_the_file_sql_report_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let s = settings(&origin, dir.path());
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    traffic(&gw).await;
    let journal_path = s.journal_path();
    // While the node holds the file, the CLI says so and what to do instead.
    let held = common::tierd_command()
        .args(["sql", "--file"])
        .arg(&journal_path)
        .arg("SELECT 1")
        .output()
        .unwrap();
    assert!(!held.status.success());
    let err = String::from_utf8_lossy(&held.stderr);
    assert!(err.contains("--admin"), "{err}");
    gw.stop(true).await;
    origin.stop().await;

    let out = common::tierd_command()
        .args(["sql", "--csv", "--file"])
        .arg(&journal_path)
        .arg("SELECT outcome, count(*) AS n FROM journal GROUP BY 1 ORDER BY 1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "outcome,n\nhit,2\nmiss,2\npass,2\n"
    );
    // Read-only: a write is refused by DuckDB itself.
    let write = common::tierd_command()
        .args(["sql", "--file"])
        .arg(&journal_path)
        .arg("DELETE FROM journal")
        .output()
        .unwrap();
    assert!(!write.status.success());
    let out = common::tierd_command()
        .args(["sql", "--file"])
        .arg(&journal_path)
        .arg("SELECT count(*) AS n FROM journal")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\n6\n"));

    // The report from the file, as JSON, agrees with the admin API's summary. The rows carry
    // the manual clock's time, which is the real time here (the clock was never moved).
    let out = common::tierd_command()
        .args(["report", "--json", "--window", "1h", "--file"])
        .arg(&journal_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_numbers(&rep);
    let out = common::tierd_command()
        .args(["report", "--window", "1h", "--file"])
        .arg(&journal_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hit ratio 33.3%") && text.contains("/items/{id}"),
        "{text}"
    );

    let export = dir.path().join("export");
    let day = rep["until"].as_str().unwrap()[..10].to_owned();
    let out = common::tierd_command()
        .args(["export-journal", "--since", &day, "--file"])
        .arg(&journal_path)
        .arg(&export)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let part = export.join(format!("date={day}"));
    let files: Vec<_> = std::fs::read_dir(&part).unwrap().collect();
    assert!(!files.is_empty(), "no Parquet file in {}", part.display());
    // The Parquet files hold the six rows (read back by DuckDB, as any engine would).
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let n: i64 = conn
        .query_row(
            &format!(
                "SELECT count(*) FROM read_parquet('{}/*/*.parquet')",
                export.display()
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 6);
}

#[test]
fn bad_journal_settings_fail_at_startup_naming_the_key() {
    for (env, key) in [
        ("TIERD__JOURNAL__SAMPLE", "journal.sample"),
        ("TIERD__JOURNAL__RETENTION_DAYS", "journal.retention_days"),
    ] {
        let mut vars = std::collections::HashMap::new();
        vars.insert("TIERD__JOURNAL__ENABLED".to_owned(), "true".to_owned());
        vars.insert(env.to_owned(), "0".to_owned());
        let e = Settings::load_with_env(None, Some(vars))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(key), "{e}");
    }
}

/// `10/Oct/2000:13:55:36 +0000` for `t` (the combined log format's time).
fn clf(t: std::time::SystemTime) -> String {
    let h = httpdate::fmt_http_date(t); // "Wed, 02 Dec 2026 06:41:39 GMT"
    let p: Vec<&str> = h.split(' ').collect();
    format!("{}/{}/{}:{} +0000", p[1], p[2], p[3], p[4])
}

#[test]
fn import_log_reads_a_combined_log_skips_bad_lines_and_never_counts_a_line_twice() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.duckdb");
    let config = dir.path().join("tierd.toml");
    std::fs::write(
        &config,
        format!(
            "[journal]\npath = \"{}\"\n\n[[rules]]\npath = \"/items/{{id}}\"\nttl_seconds = 60\n",
            journal.display()
        ),
    )
    .unwrap();
    let now = std::time::SystemTime::now();
    let t = |ago: u64| clf(now - Duration::from_secs(ago));
    let log = dir.path().join("access.log");
    let good = [
        format!(
            r#"10.0.0.1 - - [{}] "GET /items/1 HTTP/1.1" 200 512 "-" "curl/8""#,
            t(300)
        ),
        format!(
            r#"10.0.0.1 - - [{}] "GET /items/1 HTTP/1.1" 200 512 "-" "curl/8""#,
            t(200)
        ),
        format!(
            r#"10.0.0.2 - - [{}] "GET /items/1 HTTP/1.1" 304 - "-" "curl/8""#,
            t(100)
        ),
        format!(
            r#"10.0.0.2 - - [{}] "GET /items/2 HTTP/1.1" 200 100 "-" "curl/8""#,
            t(90)
        ),
        format!(
            r#"10.0.0.3 - - [{}] "GET /other?x=1 HTTP/1.1" 404 9 "-" "-" 0.004"#,
            t(80)
        ),
    ];
    let bad = [
        "garbage line".to_owned(),
        format!(
            r#"10.0.0.4 - - [{}] "GET /items/3 HTTP/1.1" 999 1 "-" "-""#,
            t(70)
        ),
        format!(
            r#"10.0.0.5 - - [{}] "GET /items/4 HTTP/1.1" 200 1 "-" "-""#,
            t(400 * 86_400)
        ),
    ];
    let text = format!("{}\n\n{}\n", good.join("\n"), bad.join("\n"));
    std::fs::write(&log, text).unwrap();
    let import = || {
        let out = common::tierd_command()
            .arg("import-log")
            .arg("--config")
            .arg(&config)
            .args(["--host", "API.example:80"])
            .arg(&log)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = import();
    assert!(first.starts_with("8 lines read, 5 imported"), "{first}");
    assert!(first.contains("skipped 1: bad status"), "{first}");
    assert!(first.contains("skipped 1: no [time]"), "{first}");
    assert!(
        first.contains("skipped 1: older than journal.retention_days"),
        "{first}"
    );
    let again = import();
    assert!(again.starts_with("8 lines read, 0 imported"), "{again}");
    assert!(again.contains("skipped 5: already imported"), "{again}");

    let sql = |q: &str| {
        let out = common::tierd_command()
            .args(["sql", "--csv", "--file"])
            .arg(&journal)
            .arg(q)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        sql("SELECT route, count(*) AS n FROM journal GROUP BY 1 ORDER BY 1"),
        "route,n\n/items/{id},4\nother,1\n"
    );
    assert_eq!(
        sql("SELECT DISTINCT host, source, outcome FROM journal ORDER BY 1"),
        "host,source,outcome\napi.example,import,pass\n"
    );
    assert_eq!(
        sql("SELECT count(DISTINCT client) AS clients, sum(bytes) AS bytes FROM journal"),
        "clients,bytes\n3,1133\n"
    );
}

/// `POST /_tierd/analytics/sql` (and `tierd sql --admin`) answers queries over the journal of a
/// running node, which holds the file: with the token only, a query expression only, and no
/// other file reachable from it; hostile statements are 400s that change nothing.
#[actix_web::test]
async fn sql_through_a_running_node_needs_the_token_and_cannot_write_or_read_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let mut s = settings(&origin, dir.path());
    s.admin.token = "t0ken".into();
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    traffic(&gw).await;
    let ask = async |token: Option<&str>, sql: &str| {
        let body = serde_json::json!({ "sql": sql }).to_string();
        common::admin_post_at(gw.admin_addr, "/_tierd/analytics/sql", token, &body).await
    };
    let q = "SELECT outcome, count(*) AS n FROM journal GROUP BY 1 ORDER BY 1;";
    assert_eq!(ask(None, q).await.status, 401);
    assert_eq!(ask(Some("wrong"), q).await.status, 401);
    let r = ask(Some("t0ken"), q).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "columns": ["outcome", "n"],
            "rows": [["hit", "2"], ["miss", "2"], ["pass", "2"]],
            "truncated": false,
        })
    );
    let secret = dir.path().join("secret.csv");
    std::fs::write(&secret, "a,b\n1,2\n").unwrap();
    let out = dir.path().join("out.csv");
    for hostile in [
        "DELETE FROM journal_rows".to_owned(),
        "DROP TABLE journal_rows".to_owned(),
        "SELECT 1; DELETE FROM journal_rows".to_owned(),
        "SELECT 1) AS q; DELETE FROM journal_rows; SELECT * FROM (SELECT 1".to_owned(),
        format!("COPY journal_rows TO '{}'", out.display()),
        format!("SELECT * FROM read_csv('{}')", secret.display()),
        format!("SELECT * FROM read_text('{}')", secret.display()),
        format!(
            "ATTACH '{}' AS other",
            dir.path().join("x.duckdb").display()
        ),
        "INSTALL httpfs".to_owned(),
        "SET threads = 64".to_owned(),
        "SELECT * FROM query('DELETE FROM journal_rows')".to_owned(),
        "".to_owned(),
    ] {
        let r = ask(Some("t0ken"), &hostile).await;
        assert_eq!(r.status, 400, "{hostile}: {}", r.text());
    }
    assert!(!out.exists(), "nothing written outside the journal");
    let r = ask(Some("t0ken"), "SELECT count(*) AS n FROM journal").await;
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["rows"],
        serde_json::json!([["6"]]),
        "every row is still there"
    );
    // A query that runs away is interrupted after 10 s; the next one runs.
    let r = ask(Some("t0ken"), "SELECT count(*) FROM range(1000000000000)").await;
    assert_eq!(r.status, 503, "{}", r.text());
    let r = ask(Some("t0ken"), "SELECT count(*) AS n FROM journal").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A limit, and the CLI through the node.
    let r = ask(Some("t0ken"), "SELECT * FROM range(5)").await;
    assert_eq!(r.status, 200);
    let body = serde_json::json!({"sql": "SELECT * FROM range(5)", "limit": 2}).to_string();
    let r =
        common::admin_post_at(gw.admin_addr, "/_tierd/analytics/sql", Some("t0ken"), &body).await;
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["rows"], serde_json::json!([["0"], ["1"]]));
    assert_eq!(v["truncated"], true);
    let admin = format!("http://{}", gw.admin_addr);
    let cli = common::tierd_command()
        .args(["sql", "--csv", "--admin", &admin, "--token", "t0ken"])
        .arg("SELECT route, count(*) AS n FROM journal GROUP BY 1 ORDER BY 1")
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&cli.stdout),
        "route,n\n/items/{id},4\nother,2\n"
    );
    gw.stop(true).await;
    origin.stop().await;
}

#[actix_web::test]
async fn sql_through_a_node_without_a_token_is_refused_saying_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let origin = Origin::start(clock.clone(), origin_reply).await;
    let s = settings(&origin, dir.path());
    let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
    let r = common::admin_post_at(
        gw.admin_addr,
        "/_tierd/analytics/sql",
        None,
        r#"{"sql": "SELECT 1"}"#,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("admin.token"), "{}", r.text());
    gw.stop(true).await;
    origin.stop().await;
}
