//! HTTP completeness against raw origins: interim responses, `Transfer-Encoding`, `Age` that is
//! not one non-negative integer, stale content when the origin fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, raw, raw_origin, Then};
use tierd::clock::SystemClock;
use tierd::server::Gateway;

async fn gateway_for(
    addr: SocketAddr,
    tweak: impl FnOnce(&mut tierd::config::Settings),
) -> Gateway {
    let mut s = common::settings_for(addr);
    s.upstream.timeout_ms = 2000;
    tweak(&mut s);
    Gateway::start(&s, Arc::new(SystemClock), None)
        .await
        .unwrap()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").into_bytes()
}

/// An origin that keeps its connections open and answers the n-th request it reads (counted
/// over all connections, from 1) with `answer(n, request head)`. Returns its address and the
/// number of connections it accepted.
async fn keepalive_origin(
    answer: impl Fn(u64, &str) -> Vec<u8> + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let answer = Arc::new(answer);
    let c = conns.clone();
    actix_web::rt::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (answer, requests) = (answer.clone(), requests.clone());
            actix_web::rt::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                        if sock.write_all(&answer(n, &head)).await.is_err() {
                            return;
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
            });
        }
    });
    (addr, conns)
}

fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[actix_web::test]
async fn a_chunked_origin_response_is_proxied_stored_and_replayed_with_a_length() {
    // RFC 9112 §6.3: Transfer-Encoding wins over a Content-Length beside it (which is dropped).
    for head in [
        "transfer-encoding: chunked",
        "transfer-encoding: Chunked\r\ntrailer: x-t",
        "transfer-encoding: chunked\r\ncontent-length: 3",
    ] {
        let script = format!("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\n{head}\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n").into_bytes();
        let (addr, count) = raw_origin(script, Then::Close).await;
        let gw = gateway_for(addr, |_| {}).await;
        let first = raw(gw.addr, &get("/te"), Duration::from_secs(5)).await;
        assert!(first.starts_with("HTTP/1.1 200"), "{head}: {first}");
        assert_eq!(body_of(&first), "hello world", "{head}");
        let second = raw(gw.addr, &get("/te"), Duration::from_secs(5)).await;
        assert!(
            second.contains("cache-status: tierd; hit"),
            "{head}: {second}"
        );
        assert!(
            second.contains("content-length: 11\r\n"),
            "{head}: {second}"
        );
        assert_eq!(body_of(&second), "hello world", "{head}");
        for r in [&first, &second] {
            let lower = r.to_ascii_lowercase();
            assert!(
                !lower.contains("transfer-encoding") && !lower.contains("trailer:"),
                "{head}: Transfer-Encoding is the origin connection's, never replayed: {r}"
            );
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "{head}: stored once");
        gw.stop(false).await;
    }
}

#[actix_web::test]
async fn a_transfer_coding_tierd_cannot_decode_is_a_502_and_stores_nothing() {
    // gzip applied as a transfer coding: passing the bytes on without it would corrupt them.
    let script = b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec();
    let (addr, count) = raw_origin(script, Then::Close).await;
    let gw = gateway_for(addr, |_| {}).await;
    for n in 1..=2 {
        let r = raw(gw.addr, &get("/gz"), Duration::from_secs(5)).await;
        assert!(r.starts_with("HTTP/1.1 502"), "{r}");
        assert!(r.contains("detail=origin-protocol-error"), "{r}");
        assert_eq!(count.load(Ordering::SeqCst), n, "nothing stored");
    }
    gw.stop(false).await;
}

#[actix_web::test]
async fn interim_responses_are_read_past_never_served_or_stored() {
    // Every answer starts with an interim response (103 Early Hints, or 100 Continue) before
    // the final one, on connections the origin keeps open: the final response is the answer,
    // and the next request on the same connection gets its own.
    let (addr, conns) = keepalive_origin(|n, _| {
        let interim = if n % 2 == 1 {
            "HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n"
        } else {
            "HTTP/1.1 100 Continue\r\n\r\n"
        };
        let body = format!("final-{n}");
        format!("{interim}HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
    })
    .await;
    let gw = gateway_for(addr, |s| s.server.workers = 1).await;
    let c = common::client();
    let a = common::send(c.get(format!("http://{}/a", gw.addr))).await;
    assert_eq!((a.status, a.text().as_str()), (200, "final-1"));
    assert!(
        a.header("link").is_none(),
        "the 103's fields are not the response's"
    );
    let b = common::send(c.get(format!("http://{}/b", gw.addr))).await;
    assert_eq!((b.status, b.text().as_str()), (200, "final-2"));
    let again = common::send(c.get(format!("http://{}/a", gw.addr))).await;
    assert_eq!(again.text(), "final-1");
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "one pooled origin connection"
    );
    gw.stop(false).await;
}
