//! Bad input from clients and origins: clear statuses, no panic, no poisoned entry.

use crate::common;

use common::{raw, raw_origin, Harness, Reply, Then};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tierd::clock::SystemClock;
use tierd::server::Gateway;

async fn gateway_for(
    addr: std::net::SocketAddr,
    tweak: impl FnOnce(&mut tierd::config::Settings),
) -> Gateway {
    let mut s = common::settings_for(addr);
    s.upstream.timeout_ms = 500;
    tweak(&mut s);
    Gateway::start(&s, Arc::new(SystemClock), None)
        .await
        .unwrap()
}

#[actix_web::test]
async fn an_origin_refusing_connections_gives_502_with_an_opaque_body() {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let gw = gateway_for(addr, |_| {}).await;
    let r = common::send(common::client().get(format!("http://{}/x", gw.addr))).await;
    assert_eq!((r.status, r.text().as_str()), (502, "Bad Gateway\n"));
    // tierd's own 502 says why (RFC 9211): it went forward and the origin was unreachable.
    assert_eq!(
        r.header("cache-status").as_deref(),
        Some("tierd; fwd=uri-miss; detail=origin-unreachable")
    );
    gw.stop(false).await;
}

#[actix_web::test]
async fn an_origin_that_hangs_gives_504() {
    let (addr, _) = raw_origin(Vec::new(), Then::Hang).await;
    let gw = gateway_for(addr, |_| {}).await;
    let r = common::send(common::client().get(format!("http://{}/x", gw.addr))).await;
    assert_eq!((r.status, r.text().as_str()), (504, "Gateway Timeout\n"));
    assert_eq!(
        r.header("cache-status").as_deref(),
        Some("tierd; fwd=uri-miss; detail=origin-timeout")
    );
    gw.stop(false).await;
}

#[actix_web::test]
async fn an_origin_closing_mid_body_stores_nothing() {
    let script =
        b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 1000\r\n\r\nonly-part"
            .to_vec();
    let (addr, count) = raw_origin(script, Then::Close).await;
    let gw = gateway_for(addr, |_| {}).await;
    let c = common::client();
    for expected_hits in 1..=2 {
        let r = common::send(c.get(format!("http://{}/x", gw.addr))).await;
        assert_eq!(r.status, 502);
        assert_eq!(
            count.load(Ordering::SeqCst),
            expected_hits,
            "nothing stored, so the origin is asked again"
        );
    }
    gw.stop(false).await;
}

#[actix_web::test]
async fn malformed_origin_headers_never_panic_or_poison() {
    let h = Harness::new(|req, n| {
        let r = Reply::ok(format!("v{n}"));
        match req.path() {
            "/cc" => r.cc("max-age=\"unterminated, ,,=, public=, s-maxage=-5"),
            "/exp" => r.header("expires", "not a date").header("etag", "\"e\""),
            "/vary" => r.cc("max-age=60").header("vary", "Accept, bad header name"),
            _ => r.cc("max-age=60").header("x-bytes", "caf\u{e9}"),
        }
    })
    .await;
    for p in ["/cc", "/exp", "/vary", "/utf"] {
        let a = h.get(p).await;
        assert_eq!(a.status, 200, "{p}");
    }
    assert!(
        h.get("/cc").await.cache_status().contains("fwd="),
        "invalid s-maxage is stale"
    );
    assert!(
        h.get("/vary").await.cache_status().contains("fwd=uri-miss"),
        "malformed Vary is not stored"
    );
    let utf = h.get("/utf").await;
    assert!(utf.cache_status().contains("hit"));
    assert_eq!(
        utf.headers.get("x-bytes").unwrap().as_bytes(),
        "caf\u{e9}".as_bytes()
    );
    h.stop().await;
}

#[actix_web::test]
async fn non_utf8_header_bytes_pass_through() {
    let script = b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\nx-raw: \xff\xfe\r\ncontent-length: 2\r\n\r\nok".to_vec();
    let (addr, count) = raw_origin(script, Then::Close).await;
    let gw = gateway_for(addr, |_| {}).await;
    let out = raw(gw.addr, b"GET /r HTTP/1.1\r\nhost: t\r\nx-client: \xff\xfe\r\nif-none-match: \xff\r\nconnection: close\r\n\r\n", Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let again = raw(
        gw.addr,
        b"GET /r HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(again.contains("tierd; hit"), "{again}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    gw.stop(false).await;
}

#[actix_web::test]
async fn a_64_kib_request_header_gets_431_and_other_clients_are_unaffected() {
    let h = Harness::new(|_, _| Reply::ok("fine").cc("max-age=60")).await;
    let big = "a".repeat(64 * 1024);
    let r = h.get_with("/big", &[("x-big", &big)]).await;
    assert_eq!(r.status, 431);
    assert_eq!(h.origin.hits(), 0);
    assert_eq!(h.get("/big").await.status, 200);
    h.stop().await;
}

#[actix_web::test]
async fn x_forwarded_host_cannot_poison_the_entry_other_clients_get() {
    let h = Harness::new(|req, _| {
        let xfh = req
            .headers()
            .get("x-forwarded-host")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Reply::ok(format!("link=https://{xfh}/x")).cc("max-age=60")
    })
    .await;
    let evil = h.get_with("/p", &[("x-forwarded-host", "evil.test")]).await;
    assert!(
        !evil.text().contains("evil.test"),
        "client X-Forwarded-Host reached the origin"
    );
    let normal = h.get("/p").await;
    assert!(!normal.text().contains("evil"));
    // A different Host is a different key.
    let other = h.get_with("/p", &[("host", "evil.test")]).await;
    assert!(other.cache_status().contains("fwd=uri-miss"));
    assert!(!h.get("/p").await.text().contains("evil"));
    h.stop().await;
}

#[actix_web::test]
async fn bodies_over_the_limit_stream_through_uncached() {
    let big = vec![b'z'; 300_000];
    let body = big.clone();
    let h = Harness::with(
        move |_, _| Reply::ok(body.clone()).cc("max-age=60"),
        |s| s.cache.max_body_bytes = 100_000,
    )
    .await;
    let r = h.get("/big").await;
    assert_eq!((r.status, r.body.len()), (200, big.len()));
    assert_eq!(r.body, big);
    assert_eq!(r.cache_status(), "tierd; fwd=uri-miss; fwd-status=200");
    h.get("/big").await;
    assert_eq!(h.origin.hits(), 2);
    h.stop().await;
}

#[actix_web::test]
async fn every_method_and_body_passes_through() {
    let h = Harness::new(|req, _| Reply::ok(format!("{} {}", req.method(), req.uri()))).await;
    let body = "payload-bytes \u{0} with a NUL and \u{e9}";
    for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let r = common::send_body(
            h.client
                .request(method.parse().unwrap(), h.url("/x?q=1"))
                .insert_header(("host", "api.test"))
                .insert_header(("content-type", "text/plain")),
            format!("{method} {body}"),
        )
        .await;
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(r.text(), format!("{method} /x?q=1"));
        let (m, uri, headers) = h.origin.last_request();
        assert_eq!((m.as_str(), uri.as_str()), (method, "/x?q=1"));
        let got = h.origin.bodies.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("{method} {body}"),
            "{method}: the body arrived whole"
        );
        assert_eq!(headers.get("x-forwarded-host").unwrap(), "api.test");
        assert_eq!(headers.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(headers.get("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(headers.get("via").unwrap(), "1.1 tierd");
    }
    h.stop().await;
}

/// Misses one after another reuse one pooled origin connection (the origin sees one peer
/// address), and concurrent ones open at most `upstream.max_connections` per worker.
#[actix_web::test]
async fn origin_connections_are_pooled_and_bounded() {
    let peers = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let seen = peers.clone();
    let h = Harness::with(
        move |req, n| {
            if let Some(p) = req.peer_addr() {
                seen.lock().unwrap().insert(p);
            }
            let r = Reply::ok(format!("#{n}"));
            if req.path().starts_with("/slow") {
                r.delay_ms(200)
            } else {
                r
            }
        },
        |s| {
            s.server.workers = 1;
            s.upstream.max_connections = 3;
        },
    )
    .await;
    for i in 0..10 {
        assert_eq!(h.get(&format!("/seq/{i}")).await.status, 200);
    }
    assert_eq!(peers.lock().unwrap().len(), 1, "ten misses, one connection");
    let paths: Vec<String> = (0..12).map(|i| format!("/slow/{i}")).collect();
    let results = futures_util::future::join_all(paths.iter().map(|p| h.get(p))).await;
    assert!(results.iter().all(|r| r.status == 200));
    let peak = h.origin.peak_in_flight.load(Ordering::SeqCst);
    assert!(peak <= 3, "at most max_connections at once: {peak}");
    assert!(
        peers.lock().unwrap().len() <= 3,
        "{:?}",
        peers.lock().unwrap()
    );
    h.stop().await;
}

/// An origin that never completes the TCP handshake (its accept queue is full) is given up
/// after `upstream.connect_timeout_ms`: 504, counted as an origin timeout.
#[actix_web::test]
async fn an_origin_that_never_accepts_times_out_at_the_connect_timeout() {
    // A listener with a backlog of one that never accepts: once its queue is full, further
    // SYNs are dropped and a connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(1).unwrap();
    let mut fillers = Vec::new();
    loop {
        // Each connect that completes takes a queue slot; the first that does not is the proof
        // the queue is full.
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("connect failed: {e}"),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    let gw = gateway_for(addr, |s| {
        s.upstream.connect_timeout_ms = 300;
        s.upstream.timeout_ms = 5_000;
    })
    .await;
    let started = std::time::Instant::now();
    let r = common::send(common::client().get(format!("http://{}/x", gw.addr))).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(
        r.header("cache-status").as_deref(),
        Some("tierd; fwd=uri-miss; detail=origin-timeout")
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(4),
        "gave up at the connect timeout, not the request timeout: {took:?}"
    );
    assert_eq!(
        common::metric_at(
            gw.admin_addr,
            "tierd_origin_errors_total",
            &[("kind", "timeout")]
        )
        .await,
        1.0
    );
    gw.stop(false).await;
}
