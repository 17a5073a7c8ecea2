//! Several `tierd` processes on one Redis: a purge on one node stops every other node serving
//! the entry (Redis pub/sub), with the lag measured; and SIGHUP reloads the rules of a running
//! binary.

use crate::common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{
    client, eventually, free_port, metric_at, scrape, send, signal, spawn_tierd, wait_up, Origin,
    Reply, Resp,
};

const TOKEN: &str = "node-token";
const HOST: &str = "api.test";

async fn get(port: u16, path: &str) -> Resp {
    send(
        client()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .insert_header(("host", HOST)),
    )
    .await
}

async fn purge(admin: u16, body: String) -> Resp {
    let mut res = client()
        .post(format!("http://127.0.0.1:{admin}/_tierd/purge"))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .expect("purge");
    let body = res.body().await.expect("body");
    Resp {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: body.to_vec(),
    }
}

fn local(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits (up to 5 s) until the node counted a reload with `result`.
async fn reloaded(admin: u16, result: &str) -> bool {
    eventually(Duration::from_secs(5), async || {
        metric_at(
            local(admin),
            "tierd_rule_reloads_total",
            &[("result", result)],
        )
        .await
            == 1.0
    })
    .await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[actix_web::test]
async fn a_purge_on_one_node_stops_the_other_serving_it() {
    let redis = RedisServer::start();
    let clock = std::sync::Arc::new(tierd::clock::ManualClock::new());
    let origin = Origin::start(clock, |req, n| {
        let id = req.path().rsplit('/').next().unwrap_or_default().to_owned();
        Reply::ok(format!("{} #{n}", req.path()))
            .cc("max-age=600")
            .header("surrogate-key", &format!("item:{id}"))
            .no_date()
    })
    .await;
    let (a, b) = (free_port(), free_port());
    let (a_admin, b_admin) = (free_port(), free_port());
    let url = redis.url();
    let env = |admin: u16| {
        vec![
            ("TIERD__TIERS__L2__ENABLED", "true".to_owned()),
            ("TIERD__TIERS__L2__URL", url.clone()),
            ("TIERD__TIERS__L2__COMMAND_TIMEOUT_MS", "1000".to_owned()),
            ("TIERD__ADMIN__TOKEN", TOKEN.to_owned()),
            ("TIERD__ADMIN__LISTEN", format!("127.0.0.1:{admin}")),
        ]
    };
    let spawn = |port: u16, admin: u16| {
        let e = env(admin);
        let pairs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        spawn_tierd(port, &origin, &pairs)
    };
    let _node_a = spawn(a, a_admin);
    let _node_b = spawn(b, b_admin);
    for p in [a, b, a_admin, b_admin] {
        wait_up(p).await;
    }
    // Both nodes subscribe once they start; wait until B has seen a message from A.
    // (The counter exists at 0 from startup: wait for a message, not for the series.)
    let subscribed = eventually(Duration::from_secs(10), async || {
        purge(a_admin, r#"{"tag":"warm-up"}"#.into()).await;
        let received = [("direction", "received")];
        metric_at(
            local(b_admin),
            "tierd_invalidation_messages_total",
            &received,
        )
        .await
            >= 1.0
    })
    .await;
    assert!(subscribed, "node B never received an invalidation from A");

    const ROUNDS: usize = 50;
    let mut lags = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let path = format!("/items/{i}");
        let first = get(a, &path).await;
        assert!(
            first.text().starts_with(&format!("{path} #")),
            "{}",
            first.text()
        );
        // B finds it in L2 (once A's write lands), then holds it in its own L1.
        let in_b = eventually(Duration::from_secs(10), async || {
            get(b, &path).await.detail() == "l1"
        })
        .await;
        assert!(in_b, "{path}: B never held the entry in L1");

        let r = purge(a_admin, format!(r#"{{"tag":"item:{i}"}}"#)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let purged_at = Instant::now();
        // Poll B until it stops answering from storage.
        let mut stopped = None;
        while purged_at.elapsed() < Duration::from_secs(2) {
            let r = get(b, &path).await;
            if !r.cache_status().contains("; hit") {
                stopped = Some(purged_at.elapsed());
                break;
            }
        }
        let lag =
            stopped.unwrap_or_else(|| panic!("{path}: B still serves it 2 s after the purge"));
        lags.push(lag);
    }
    lags.sort();
    println!(
        "cross-node purge lag (A's purge answered -> B misses), {ROUNDS} rounds: p50={:?} p90={:?} p99={:?} max={:?}",
        percentile(&lags, 0.5),
        percentile(&lags, 0.9),
        percentile(&lags, 0.99),
        lags[lags.len() - 1]
    );
    let m = scrape(local(b_admin)).await;
    let lag_lines: Vec<&str> = m
        .text
        .lines()
        .filter(|l| l.starts_with("tierd_invalidation_lag_seconds"))
        .collect();
    println!(
        "node B publish-to-L1 lag histogram:\n{}",
        lag_lines.join("\n")
    );
    let count = m.sum("tierd_invalidation_lag_seconds_count", &[]);
    assert!(count >= ROUNDS as f64, "B measured {count} invalidations");
    origin.stop().await;
}

#[actix_web::test]
async fn sighup_reloads_rules_and_a_broken_file_keeps_the_old_ones() {
    let clock = std::sync::Arc::new(tierd::clock::ManualClock::new());
    let origin = Origin::start(clock, |req, n| {
        Reply::ok(format!("{} #{n}", req.path())).cc("max-age=600")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tierd.toml");
    let port = free_port();
    let admin = free_port();
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[upstream]\nurl = \"http://{}\"\n[log]\nlevel = \"warn\"\n",
        origin.addr
    );
    let write = |rules: &str| std::fs::write(&file, format!("{base}{rules}")).unwrap();
    write("");
    let child = common::Proc(
        common::tierd_command()
            .args(["serve", "--config"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("tierd"),
    );
    wait_up(port).await;
    wait_up(admin).await;
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    send(client().get(url("/p"))).await;
    assert!(send(client().get(url("/p")))
        .await
        .cache_status()
        .contains("hit"));

    // A broken file: rejected, the old (no) rules stay.
    write("[[rules]]\npath = \"/p/{id\"\npass = true\n");
    signal(&child, "-HUP");
    assert!(
        reloaded(admin, "rejected").await,
        "the broken file was not rejected"
    );
    assert!(send(client().get(url("/p")))
        .await
        .cache_status()
        .contains("hit"));

    write("[[rules]]\npath = \"/p\"\npass = true\n");
    signal(&child, "-HUP");
    assert!(reloaded(admin, "ok").await, "the good file was not applied");
    let r = send(client().get(url("/p"))).await;
    assert!(
        r.cache_status().contains("fwd=bypass"),
        "{}",
        r.cache_status()
    );
    drop(child);
    origin.stop().await;
}
