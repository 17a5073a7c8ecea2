//! A real Prometheus (Debian's `prometheus` package) scrapes two real tierd nodes sharing a real
//! Redis under a short mixed load; then every Grafana panel expression in `dashboards/` and
//! every rule in `alerts/tierd.rules.yml` is evaluated through Prometheus' HTTP API. Each
//! expression must be valid and each panel expression must return data; the rules must be
//! healthy, and the one alert the load provokes (a rejected rule reload) must fire.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use common::{
    admin_post_at, client, free_port, get_as, metric_at, rules, send, settings_for, Origin, Proc,
    Reply, Resp,
};
use serde_json::Value;
use tierd::clock::ManualClock;
use tierd::config::Settings;
use tierd::server::Gateway;

const TOKEN: &str = "prom-token";
const RULES: &str = r#"
[[rules]]
path = "/api/items/{id}"
methods = ["GET"]
ttl_seconds = 60
tags = ["item:{id}"]

[[rules]]
path = "/api/items/{id}"
methods = ["POST"]
invalidate = { tags = ["item:{id}"] }

[[rules]]
path = "/search"
rate_limit = { requests_per_second = 0.001, burst = 1 }

[[rules]]
path = "/page"
rate_limit = { requests_per_second = 0.001, burst = 1, dry_run = true }
"#;

fn repo() -> PathBuf {
    common::external::repo()
}

fn prometheus_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus"))
            .find(|p| p.is_file())
    });
    found.expect(
        "the prometheus binary is not on PATH: apt-get install prometheus (scripts/test.sh does)",
    )
}

/// Starts Prometheus scraping `targets` every second and evaluating the shipped rules.
fn start_prometheus(dir: &Path, targets: &[SocketAddr], port: u16) -> Proc {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: tierd\n    static_configs:\n      - targets: [{}]\n",
        repo().join("alerts/tierd.rules.yml").display(),
        targets.join(", ")
    );
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(prometheus_binary())
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    Proc(child)
}

/// A GET on Prometheus' API; `Null` while it is not up yet.
async fn api(port: u16, path: &str) -> Value {
    let Ok(mut res) = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
    else {
        return Value::Null;
    };
    let body = res.body().limit(64 << 20).await.unwrap_or_default();
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// An instant query; the whole API answer.
async fn query(port: u16, expr: &str) -> Value {
    let mut res = client()
        .post(format!("http://127.0.0.1:{port}/api/v1/query"))
        .send_form(&[("query", expr)])
        .await
        .expect("query prometheus");
    let body = res.body().limit(64 << 20).await.expect("query body");
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// Polls `expr` until it returns a sample whose value passes `ok`, for up to `secs`.
async fn wait_for(port: u16, expr: &str, secs: u64, ok: impl Fn(f64) -> bool) {
    let mut last = Value::Null;
    let satisfied = common::eventually(Duration::from_secs(secs), async || {
        last = query(port, expr).await;
        last["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(&ok)
    })
    .await;
    assert!(
        satisfied,
        "prometheus: {expr} never satisfied the condition; last answer {last}"
    );
}

/// Every datasource uid the dashboard names (panels, targets, variables, annotations).
fn collect_uids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(u)) = m.get("datasource").and_then(|d| d.get("uid")) {
                out.push(u.clone());
            }
            m.values().for_each(|x| collect_uids(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_uids(x, out)),
        _ => {}
    }
}

fn node(origin: &Origin, redis: &RedisServer, l3: Option<&Path>) -> Settings {
    let mut s = settings_for(origin.addr);
    s.rules = rules(RULES);
    s.admin.token = TOKEN.into();
    // The smallest L1 allowed, and bodies to fill it with 16 entries: L1 evicts.
    s.tiers.l1.max_bytes = 1024 * 1024;
    s.cache.max_body_bytes = 256 * 1024;
    common::with_l2(&mut s, redis.url());
    if let Some(p) = l3 {
        common::with_l3(&mut s, p);
    }
    s
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    get_as(gw, "api.test", path, headers).await
}

async fn admin_post(gw: &Gateway, path: &str, body: &str) -> Resp {
    admin_post_at(gw.admin_addr, path, Some(TOKEN), body).await
}

/// One round of mixed traffic: misses and hits on two routes, a 304, stale serves, an origin
/// failure, an unstorable response, coalesced requests, a request over its rule's quota, a
/// mutation and (every third round) a purge that node B learns of through Redis.
async fn round(a: &Gateway, b: &Gateway, clock: &ManualClock, n: u64) {
    let id = n % 7;
    for gw in [a, b] {
        get(gw, &format!("/api/items/{id}"), &[]).await;
        get(gw, &format!("/api/items/{id}"), &[]).await;
        get(gw, "/api/items/1", &[("if-none-match", "\"v1\"")]).await;
        get(gw, "/swr", &[]).await;
        get(gw, "/sie", &[]).await;
        get(gw, "/nostore", &[]).await;
        get(gw, &format!("/page?n={n}"), &[]).await;
        // Past the rule's quota after the first round: 429s for the "Refused requests" panel
        // (and /page above past its dry-run quota: counted, not refused).
        get(gw, "/search", &[]).await;
    }
    let slow = format!("/slow?n={n}");
    futures_util::future::join3(get(b, &slow, &[]), get(b, &slow, &[]), get(b, &slow, &[])).await;
    let post = client()
        .post(format!("http://{}/api/items/{id}", a.addr))
        .insert_header(("host", "api.test"));
    send(post).await;
    if n % 3 == 0 {
        admin_post(
            a,
            "/_tierd/purge",
            &format!(r#"{{"tag":"item:{}"}}"#, (id + 1) % 7),
        )
        .await;
    }
    clock.advance(Duration::from_secs(2));
}

#[actix_web::test]
async fn prometheus_scrapes_tierd_and_every_panel_and_alert_evaluates() {
    let clock = Arc::new(ManualClock::new());
    let sie_calls = Arc::new(AtomicU64::new(0));
    let origin = Origin::start(clock.clone(), move |req, n| {
        let path = req.path();
        if let Some(id) = path.strip_prefix("/api/items/") {
            return Reply::ok(format!("item {id} #{n}"))
                .cc("max-age=60")
                .header("etag", &format!("\"v{id}\""));
        }
        match path {
            "/swr" => Reply::ok(format!("swr #{n}")).cc("max-age=1, stale-while-revalidate=3600"),
            "/sie" if sie_calls.fetch_add(1, Ordering::SeqCst) > 0 => Reply::ok("down").status(503),
            "/sie" => Reply::ok("sie").cc("max-age=1, stale-if-error=86400"),
            "/nostore" => Reply::ok("secret").cc("no-store"),
            "/slow" => Reply::ok(format!("slow #{n}"))
                .cc("max-age=60")
                .delay_ms(50),
            _ => Reply::ok(vec![b'x'; 64 * 1024]).cc("max-age=60"),
        }
    })
    .await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = Gateway::start(
        &node(&origin, &redis, Some(&dir.path().join("a.duckdb"))),
        clock.clone(),
        None,
    )
    .await
    .unwrap();
    let config = dir.path().join("b.toml");
    std::fs::write(&config, "").unwrap();
    let b = Gateway::start(
        &node(&origin, &redis, None),
        clock.clone(),
        Some(config.clone()),
    )
    .await
    .unwrap();

    let port = free_port();
    let _prom = start_prometheus(dir.path(), &[a.admin_addr, b.admin_addr], port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api(port, "/api/v1/status/buildinfo").await["status"] != "success" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "prometheus did not start: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for(port, r#"count(up{job="tierd"} == 1)"#, 30, |v| v == 2.0).await;

    // Six seconds of traffic, so rates over the last 30 s have many samples.
    let load_until = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut n = 0;
    while tokio::time::Instant::now() < load_until {
        n += 1;
        round(&a, &b, &clock, n).await;
    }
    // A broken rule file: the reload is rejected, and its alert must fire.
    std::fs::write(&config, "[[rules]]\npath = \"/x\"\nttl_seconds = -1\n").unwrap();
    assert_eq!(admin_post(&b, "/_tierd/reload", "").await.status, 422);
    let sent = metric_at(a.admin_addr, "tierd_requests_total", &[]).await;
    // Prometheus has scraped past the end of the load on both nodes.
    wait_for(
        port,
        r#"sum(tierd_rule_reloads_total{result="rejected"})"#,
        20,
        |v| v == 1.0,
    )
    .await;
    wait_for(
        port,
        &format!(
            r#"tierd_config_last_reload_successful{{instance="{}"}}"#,
            b.admin_addr
        ),
        20,
        |v| v == 0.0,
    )
    .await;
    wait_for(
        port,
        &format!(
            r#"sum(tierd_requests_total{{instance="{}"}})"#,
            a.admin_addr
        ),
        20,
        |v| v >= sent,
    )
    .await;

    // Every panel expression of every dashboard, as Grafana would send it.
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut dashboards: Vec<PathBuf> = std::fs::read_dir(repo().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    dashboards.sort();
    assert_eq!(dashboards.len(), 3, "{dashboards:?}");
    for path in &dashboards {
        let text = std::fs::read_to_string(path).unwrap();
        let d: Value = serde_json::from_str(&text).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Importable anywhere: the datasource is a variable, and so are the job and instances.
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .expect("variables")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(vars[..3], ["datasource", "job", "instance"], "{name}");
        assert_eq!(d["templating"]["list"][0]["type"], "datasource", "{name}");
        assert_eq!(d["templating"]["list"][0]["query"], "prometheus", "{name}");
        let mut uids = Vec::new();
        collect_uids(&d, &mut uids);
        assert!(!uids.is_empty(), "{name}");
        assert!(
            uids.iter().all(|u| u == "${datasource}"),
            "{name}: a hard-coded datasource uid: {uids:?}"
        );
        let panels = d["panels"].as_array().expect("panels");
        assert!(panels.len() >= 10, "{name}: {} panels", panels.len());
        let mut exprs = Vec::new();
        for p in panels.iter().filter(|p| p["type"] != "row") {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            for t in p["targets"].as_array().expect("targets") {
                exprs.push((
                    title.clone(),
                    t["expr"].as_str().expect("expr").to_owned(),
                    true,
                ));
            }
        }
        for a in d["annotations"]["list"].as_array().expect("annotations") {
            let title = a["name"].as_str().unwrap_or_default().to_owned();
            exprs.push((title, a["expr"].as_str().expect("expr").to_owned(), false));
        }
        for (title, expr, needs_data) in exprs {
            // Every metric selector names the variables, and no job.
            assert!(
                !expr.contains("job=\"")
                    && !expr.contains("job!=")
                    && !expr.contains("job=~\"tierd"),
                "{name} / {title}: a hard-coded job: {expr}"
            );
            assert_eq!(
                expr.matches("{").count(),
                expr.matches("job=~\"$job\",instance=~\"$instance\"")
                    .count(),
                "{name} / {title}: a selector without $job and $instance: {expr}"
            );
            let expr = expr
                .replace("$job", ".*")
                .replace("$instance", ".*")
                .replace("$route", ".*")
                .replace("$__rate_interval", "30s");
            checked += 1;
            let v = query(port, &expr).await;
            if v["status"] != "success" {
                failures.push(format!("{name} / {title}: {expr}: {v}"));
            } else if needs_data && v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
                failures.push(format!("{name} / {title}: {expr}: no data"));
            } else if !expr.contains("tierd_") && !expr.contains("process_") {
                failures.push(format!("{name} / {title}: queries no tierd metric"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} panel expressions failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let instances = query(port, "tierd_build_info").await;
    assert_eq!(
        instances["data"]["result"].as_array().map(Vec::len),
        Some(2),
        "the instance variable lists both nodes"
    );

    // Every rule loaded, evaluated without error, and its expression valid on its own.
    let rules = api(port, "/api/v1/rules").await;
    let mut seen = Vec::new();
    for g in rules["data"]["groups"].as_array().expect("rule groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["name"].as_str().unwrap_or_default().to_owned();
            assert_eq!(r["health"], "ok", "{name}: {r}");
            let v = query(port, r["query"].as_str().expect("rule query")).await;
            assert_eq!(v["status"], "success", "{name}: {v}");
            seen.push(name);
        }
    }
    assert_eq!(seen.len(), 35, "{seen:?}");

    // The rejected reload fires its alert for node B, and nothing else fires.
    let firing = || async {
        let alerts = api(port, "/api/v1/alerts").await;
        alerts["data"]["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["state"] == "firing")
                    .map(|x| {
                        format!(
                            "{} {}",
                            x["labels"]["alertname"].as_str().unwrap_or_default(),
                            x["labels"]["instance"].as_str().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let expected = vec![format!("TierdConfigReloadFailed {}", b.admin_addr)];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut now_firing = firing().await;
    while now_firing != expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        now_firing = firing().await;
    }
    assert_eq!(now_firing, expected);
    println!(
        "{n} rounds of load; {checked} panel expressions and {} rules checked",
        seen.len()
    );

    a.stop(true).await;
    b.stop(true).await;
    origin.stop().await;
}
