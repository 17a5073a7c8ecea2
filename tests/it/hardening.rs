//! Request hardening over real HTTP: oversized targets, headers and bodies, header floods and
//! slow clients each get their status, reach neither the cache nor the origin, and leave other
//! clients alone.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{metric_at, raw, Harness, RawResp, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn gateway(tweak: impl FnOnce(&mut tierd::config::Settings)) -> Harness {
    Harness::with(|_, _| Reply::ok("fine").cc("max-age=60"), tweak).await
}

async fn rejected(h: &Harness, reason: &str) -> f64 {
    metric_at(
        h.gw.admin_addr,
        "tierd_requests_rejected_total",
        &[("reason", reason)],
    )
    .await
}

/// The gateway still serves an ordinary client.
async fn others_are_served(h: &Harness) {
    let r = h.get("/ok").await;
    assert_eq!((r.status, r.text().as_str()), (200, "fine"));
}

#[actix_web::test]
async fn an_oversized_request_target_gets_414() {
    let h = gateway(|s| s.server.max_uri_bytes = 1024).await;
    let long = format!("/x?q={}", "a".repeat(1100));
    let r = h.get(&long).await;
    assert_eq!((r.status, r.text().as_str()), (414, "URI Too Long\n"));
    assert!(r.header("cache-status").is_none());
    assert_eq!(rejected(&h, "uri_too_long").await, 1.0);
    let counted = [("cache_status", "rejected"), ("route", "other")];
    assert_eq!(
        metric_at(h.gw.admin_addr, "tierd_requests_total", &counted).await,
        1.0
    );
    // Just under the limit is fine.
    let fits = format!("/x?q={}", "a".repeat(1000));
    assert_eq!(h.get(&fits).await.status, 200);
    assert_eq!(h.origin.hits(), 1);
    others_are_served(&h).await;
    h.stop().await;
}

#[actix_web::test]
async fn a_header_flood_gets_431() {
    let h = gateway(|s| s.server.max_headers = 32).await;
    let mut head = String::from("GET /flood HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n");
    for i in 0..40 {
        head.push_str(&format!("x-h{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let r = RawResp::parse(&raw(h.gw.addr, head.as_bytes(), Duration::from_secs(5)).await);
    assert_eq!(
        (r.status, r.body.as_str()),
        (431, "Request Header Fields Too Large\n")
    );
    assert_eq!(rejected(&h, "too_many_headers").await, 1.0);
    // Past actix-web's own parser limit (96) the connection is refused with 431 too.
    let mut head = String::from("GET /flood HTTP/1.1\r\nHost: gw\r\n");
    for i in 0..200 {
        head.push_str(&format!("x-h{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let r = RawResp::parse(&raw(h.gw.addr, head.as_bytes(), Duration::from_secs(5)).await);
    assert_eq!(r.status, 431);
    assert_eq!(h.origin.hits(), 0);
    others_are_served(&h).await;
    h.stop().await;
}

#[actix_web::test]
async fn headers_over_the_size_limit_get_431() {
    let h = gateway(|s| s.server.max_header_bytes = 4096).await;
    let r = h.get_with("/big", &[("x-big", &"b".repeat(5000))]).await;
    assert_eq!(r.status, 431);
    assert_eq!(rejected(&h, "headers_too_large").await, 1.0);
    assert_eq!(h.origin.hits(), 0);
    others_are_served(&h).await;
    h.stop().await;
}

#[actix_web::test]
async fn a_declared_body_over_the_limit_gets_413_without_being_read() {
    let h = gateway(|s| s.server.max_request_body_bytes = 1024).await;
    // The client announces a megabyte and sends none of it: the answer does not wait for it.
    let started = Instant::now();
    let text = raw(
        h.gw.addr,
        b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 1048576\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let r = RawResp::parse(&text);
    assert_eq!((r.status, r.body.as_str()), (413, "Payload Too Large\n"));
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed, not left hanging"
    );
    // A body within the limit goes through.
    let ok = common::send_body(h.client.post(h.url("/upload")), "x".repeat(1000)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(h.origin.hits(), 1);
    assert_eq!(rejected(&h, "body_too_large").await, 1.0);
    h.stop().await;
}

#[actix_web::test]
async fn a_chunked_body_crossing_the_limit_gets_413() {
    let h = gateway(|s| s.server.max_request_body_bytes = 1024).await;
    let mut req = String::from(
        "POST /upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..8 {
        req.push_str(&format!("200\r\n{}\r\n", "c".repeat(512)));
    }
    req.push_str("0\r\n\r\n");
    let r = RawResp::parse(&raw(h.gw.addr, req.as_bytes(), Duration::from_secs(5)).await);
    assert_eq!((r.status, r.body.as_str()), (413, "Payload Too Large\n"));
    assert_eq!(h.origin.hits(), 0, "the origin never got a whole request");
    assert_eq!(rejected(&h, "body_too_large").await, 1.0);
    let origin_errors = metric_at(h.gw.admin_addr, "tierd_origin_errors_total", &[]).await;
    assert_eq!(origin_errors, 0.0, "the client's fault is not the origin's");
    others_are_served(&h).await;
    h.stop().await;
}

async fn connect(addr: SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

async fn read_all(s: &mut tokio::net::TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[actix_web::test]
async fn a_stalled_body_gets_408_and_others_are_served_meanwhile() {
    let h = gateway(|s| s.server.client_body_timeout_ms = 300).await;
    let mut slow = connect(h.gw.addr).await;
    slow.write_all(b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\nonly ten..")
        .await
        .unwrap();
    others_are_served(&h).await;
    let r = RawResp::parse(&read_all(&mut slow, Duration::from_secs(5)).await);
    assert_eq!((r.status, r.body.as_str()), (408, "Request Timeout\n"));
    assert_eq!(rejected(&h, "body_timeout").await, 1.0);
    assert_eq!(h.origin.hits(), 1, "only the other client's request");
    let origin_errors = metric_at(h.gw.admin_addr, "tierd_origin_errors_total", &[]).await;
    assert_eq!(origin_errors, 0.0);
    h.stop().await;
}

#[actix_web::test]
async fn slowloris_clients_get_408_and_do_not_starve_others() {
    let h = gateway(|s| s.server.client_request_timeout_ms = 500).await;
    // A hundred connections that send half a request head and then nothing.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut s = connect(h.gw.addr).await;
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: gw\r\nX-Drip: ")
            .await
            .unwrap();
        slow.push(s);
    }
    for _ in 0..5 {
        others_are_served(&h).await;
    }
    for s in &mut slow {
        let r = RawResp::parse(&read_all(s, Duration::from_secs(5)).await);
        assert_eq!(r.status, 408);
    }
    assert_eq!(h.origin.hits(), 1);
    h.stop().await;
}

#[actix_web::test]
async fn the_admin_api_is_not_reachable_through_the_gateway_port() {
    let h = Harness::with(
        |req, _| match req.path() {
            "/_tierd/purge" => Reply::ok("origin's own").status(404),
            _ => Reply::ok("cached").cc("max-age=60"),
        },
        |s| s.admin.token = "secret".into(),
    )
    .await;
    assert_eq!(h.get("/page").await.status, 200);
    let purge = h
        .send(
            h.client
                .post(h.url("/_tierd/purge"))
                .insert_header(("authorization", "Bearer secret"))
                .insert_header(("content-type", "application/json")),
        )
        .await;
    // Proxied to the origin like any path; nothing was purged.
    assert_eq!((purge.status, purge.text().as_str()), (404, "origin's own"));
    let (_, uri, _) = h.origin.last_request();
    assert_eq!(uri, "/_tierd/purge");
    let again = h.get("/page").await;
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );
    // The admin's read calls too: on the gateway port they are the origin's paths.
    for path in ["/metrics", "/_tierd/stats"] {
        assert_eq!(h.get(path).await.text(), "cached", "{path}");
        let (_, uri, _) = h.origin.last_request();
        assert_eq!(uri, path);
        let admin = h
            .send(
                h.client
                    .get(h.admin_url(path))
                    .insert_header(("authorization", "Bearer secret")),
            )
            .await;
        assert_eq!(admin.status, 200, "{path} on the admin listener");
        let expected = if path == "/metrics" {
            "tierd_requests_total"
        } else {
            "\"l1\""
        };
        assert!(admin.text().contains(expected), "{path}: {}", admin.text());
    }
    h.stop().await;
}
