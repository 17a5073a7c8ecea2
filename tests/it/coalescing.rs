//! Single-flight: concurrent misses for one key reach the origin once.

use crate::common;

use common::{eventually, metric_at, Gate, Harness, Reply};
use std::time::Duration;

#[actix_web::test]
async fn two_hundred_concurrent_cold_requests_reach_the_origin_once() {
    let h = Harness::new(|_, n| Reply::ok(format!("v{n}")).cc("max-age=60").delay_ms(300)).await;
    let reqs: Vec<_> = (0..200).map(|_| h.get("/cold")).collect();
    let results = futures_util::future::join_all(reqs).await;
    assert!(results.iter().all(|r| r.status == 200 && r.text() == "v1"));
    assert_eq!(h.origin.hits(), 1);
    let collapsed = results
        .iter()
        .filter(|r| r.cache_status() == "tierd; hit; collapsed")
        .count();
    let stored = results
        .iter()
        .filter(|r| r.cache_status().ends_with("stored"))
        .count();
    assert_eq!(stored, 1, "one leader");
    // Requests that arrived after the fill completed are plain hits; the rest waited.
    assert!(collapsed > 0);
    h.stop().await;
}

#[actix_web::test]
async fn the_leader_disconnecting_does_not_fail_the_waiters() {
    let h = Harness::new(|_, n| Reply::ok(format!("v{n}")).cc("max-age=60").delay_ms(300)).await;
    // The leader: a raw client that sends the request and, once the origin has it, resets the
    // connection (actix then drops the request's future).
    let mut s = tokio::net::TcpStream::connect(h.gw.addr).await.unwrap();
    let req = format!("GET /k HTTP/1.1\r\nhost: {}\r\n\r\n", h.gw.addr);
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), async || h.origin.hits() == 1).await);
    common::reset(s);
    let reqs: Vec<_> = (0..20).map(|_| h.get("/k")).collect();
    let results = futures_util::future::join_all(reqs).await;
    assert!(
        results.iter().all(|r| r.status == 200 && r.text() == "v1"),
        "waiters failed: {:?}",
        results
            .iter()
            .map(|r| (r.status, r.text()))
            .collect::<Vec<_>>()
    );
    // The fetch finished and stored its answer although its client was gone.
    let later = h.get("/k").await;
    assert_eq!(later.text(), "v1");
    assert!(
        later.cache_status().contains("hit"),
        "{}",
        later.cache_status()
    );
    assert_eq!(
        h.origin.hits(),
        1,
        "the fetch was not cancelled with its client"
    );
    h.stop().await;
}

#[actix_web::test]
async fn an_uncacheable_answer_releases_every_waiter_at_once() {
    // The leader's answer is held until all nine waiters have joined; the waiters' own origin
    // requests are held until all nine are at the origin together.
    let (leader, waiters) = (Gate::new(), Gate::new());
    let (l, w) = (leader.clone(), waiters.clone());
    let h = Harness::new(move |_, n| {
        let r = Reply::ok(format!("private-{n}")).cc("private");
        if n == 1 {
            r.held_by(&l)
        } else {
            r.held_by(&w)
        }
    })
    .await;
    let url = h.url("/p");
    let all = actix_web::rt::spawn(futures_util::future::join_all(
        (0..10).map(move |_| common::send(common::client().get(url.clone()))),
    ));
    let joined = eventually(Duration::from_secs(5), async || {
        h.origin.hits() == 1
            && metric_at(h.gw.admin_addr, "tierd_coalesced_waiters_total", &[]).await == 9.0
    })
    .await;
    assert!(joined, "one request at the origin, nine waiting on it");
    leader.open();
    // Released together: the nine waiters are at the origin concurrently, not one by one.
    let together = eventually(Duration::from_secs(5), async || {
        h.origin.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 9
    })
    .await;
    assert!(together, "the nine waiters went to the origin at once");
    waiters.open();
    let results = all.await.unwrap();
    assert!(results.iter().all(|r| r.status == 200));
    let mut bodies: Vec<_> = results.iter().map(|r| r.text()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 10, "a private response was shared");
    assert_eq!(h.origin.hits(), 10);
    h.stop().await;
}

#[actix_web::test]
async fn waiters_share_an_origin_failure_instead_of_retrying() {
    let h = Harness::with(
        |_, _| Reply::ok("slow").delay_ms(2_000),
        |s| s.upstream.timeout_ms = 300,
    )
    .await;
    let reqs: Vec<_> = (0..10).map(|_| h.get("/slow")).collect();
    let results = futures_util::future::join_all(reqs).await;
    assert!(
        results.iter().all(|r| r.status == 504),
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(h.origin.hits(), 1);
    h.stop().await;
}
