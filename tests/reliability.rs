//! The product run the way operators and embedders run it: for a while with Redis on, with
//! faults injected, under a slow origin, and embedded in a routed actix-web app. Each test here
//! names a defect found that way and fails if it comes back.

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::{Harness, Reply};

/// The one value of a metric series; a missing series fails the test (a renamed metric must
/// not read as zero).
async fn metric(admin: std::net::SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = common::send(common::client().get(format!("http://{admin}/metrics")))
        .await
        .text();
    let found: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    assert!(!found.is_empty(), "no series {name}{labels:?} in /metrics");
    found.iter().sum()
}

/// Subscribers on the invalidation channel of `redis`.
fn subscribers(redis: &RedisServer) -> u64 {
    redis
        .cli(&["PUBSUB", "NUMSUB", "tierd:invalidate"])
        .and_then(|s| s.lines().nth(1).and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

async fn gateway_on(redis_url: String) -> Harness {
    Harness::with(
        |req, n| Reply::ok(format!("{} #{n}", req.path())).cc("max-age=600"),
        move |s| {
            s.tiers.l2.enabled = true;
            s.tiers.l2.url = redis_url;
        },
    )
    .await
}

/// Issue: with L2 on, the subscription's keep-alive PING was answered (in subscribed mode) with
/// an array that was not parsed, so the subscription was dropped and L1 wiped every 5 s. A
/// gateway on a real Redis, RESP2 and RESP3, runs for 16 s (three keep-alive rounds): the entry
/// stored at the start is still served from L1, L1 was never cleared, and a purge published
/// by another node at the end still arrives.
#[actix_web::test]
async fn a_healthy_subscription_keeps_l1_for_resp2_and_resp3() {
    let (r2, r3) = (RedisServer::start(), RedisServer::start());
    let h2 = gateway_on(r2.url()).await;
    let h3 = gateway_on(format!("{}?protocol=resp3", r3.url())).await;
    for (h, r) in [(&h2, &r2), (&h3, &r3)] {
        assert!(
            common::eventually(Duration::from_secs(5), || subscribers(r) == 1).await,
            "the gateway subscribed"
        );
        assert_eq!(h.get("/hot").await.text(), "/hot #1");
        assert_eq!(h.get("/hot").await.detail(), "l1");
    }
    tokio::time::sleep(Duration::from_secs(16)).await;
    for (name, h, r) in [("resp2", &h2, &r2), ("resp3", &h3, &r3)] {
        let res = h.get("/hot").await;
        assert_eq!(res.text(), "/hot #1", "{name}: served from storage");
        assert_eq!(res.detail(), "l1", "{name}: still in L1 after 16 s");
        let cleared = metric(h.gw.admin_addr, "tierd_l1_resyncs_total", &[]).await;
        assert_eq!(cleared, 0.0, "{name}: L1 never cleared");
        assert_eq!(subscribers(r), 1, "{name}: still subscribed");
        // Another node's purge still arrives on the same subscription.
        let wire = r#"{"v":1,"node":"other","sent_us":0,"selector":{"kind":"prefix","value":{"host":null,"prefix":"/hot"}}}"#;
        r.cli(&["PUBLISH", "tierd:invalidate", wire]).unwrap();
        let purged = common::eventually(Duration::from_secs(5), || {
            h.gw.state.store.l1().sync();
            h.gw.state.store.l1().stats().entries == 0
        })
        .await;
        assert!(purged, "{name}: a remote purge still removes the L1 entry");
        assert_eq!(h.get("/hot").await.text(), "/hot #2", "{name}");
    }
    h2.stop().await;
    h3.stop().await;
}
