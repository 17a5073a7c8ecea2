//! HTTP completeness against raw origins: interim responses, `Transfer-Encoding`, `Age` that is
//! not one non-negative integer, stale content when the origin fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, raw, raw_origin, Then};
use tierd::clock::{ManualClock, SystemClock};
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
/// over all connections, from 1) with `answer(n, request head)`; an empty answer closes the
/// connection without a response. Returns its address and the number of connections it
/// accepted.
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
                        let bytes = answer(n, &head);
                        if bytes.is_empty() || sock.write_all(&bytes).await.is_err() {
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

/// `cache.stale_on_error_seconds`: an origin that closes the connection without a response is
/// covered for a minute past expiry by default; the response's own `stale-if-error` replaces
/// the window; `must-revalidate`, `s-maxage` and `no-cache` forbid it; an origin's 5xx is not
/// covered (that is `stale-if-error`'s alone).
#[actix_web::test]
async fn a_stale_entry_is_served_for_a_minute_when_the_origin_drops_the_connection() {
    let seen = std::sync::Mutex::new(std::collections::HashMap::<String, u64>::new());
    let (addr, _) = keepalive_origin(move |_, head| {
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let n = {
            let mut seen = seen.lock().unwrap();
            let n = seen.entry(path.clone()).or_default();
            *n += 1;
            *n
        };
        let cc = match path.as_str() {
            "/short" => "max-age=10, stale-if-error=5",
            "/must" => "max-age=10, must-revalidate",
            "/shared" => "s-maxage=10",
            "/validate" => "max-age=10, no-cache",
            "/real" => "max-age=1",
            _ => "max-age=10",
        };
        if n == 1 {
            let body = format!("first{path}");
            // No validator on /real: only the stale window keeps it past its expiry.
            let etag = if path == "/real" {
                ""
            } else {
                "etag: \"e\"\r\n"
            };
            return format!(
                "HTTP/1.1 200 OK\r\ncache-control: {cc}\r\n{etag}content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes();
        }
        if path == "/status" {
            return b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown".to_vec();
        }
        Vec::new()
    })
    .await;
    let clock = Arc::new(ManualClock::new());
    let start = |secs: Option<u64>| {
        let clock = clock.clone();
        async move {
            let mut s = common::settings_for(addr);
            if let Some(secs) = secs {
                s.cache.stale_on_error_seconds = secs;
            }
            Gateway::start(&s, clock, None).await.unwrap()
        }
    };
    let gw = start(None).await;
    let c = common::client();
    let url = |p: &str| format!("http://{}{p}", gw.addr);
    let paths = [
        "/plain",
        "/short",
        "/must",
        "/shared",
        "/validate",
        "/status",
    ];
    for p in paths {
        let r = common::send(c.get(url(p))).await;
        assert_eq!(r.status, 200, "{p}");
    }
    clock.advance(Duration::from_secs(20));
    let r = common::send(c.get(url("/plain"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "first/plain"));
    assert_eq!(
        r.cache_status(),
        "tierd; fwd=stale; fwd-status=502; ttl=-10; detail=l1"
    );
    // Its own stale-if-error=5 is shorter than the default, and wins.
    let r = common::send(c.get(url("/short"))).await;
    assert_eq!(r.status, 502, "{}", r.cache_status());
    // must-revalidate and s-maxage (proxy-revalidate) forbid stale: 504, §4.2.4.
    for p in ["/must", "/shared"] {
        let r = common::send(c.get(url(p))).await;
        assert_eq!(r.status, 504, "{p}: {}", r.cache_status());
    }
    let r = common::send(c.get(url("/validate"))).await;
    assert_eq!(r.status, 502, "no-cache: validate or fail, never stale");
    let r = common::send(c.get(url("/status"))).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (503, "down"),
        "the origin answered: its 5xx passes (stale-if-error alone covers it)"
    );
    clock.advance(Duration::from_secs(51));
    let r = common::send(c.get(url("/plain"))).await;
    assert_eq!(r.status, 502, "61 s past expiry is past the minute");
    gw.stop(false).await;

    // Storage keeps the entry for the window (real time: L1 expires entries by its own clock).
    let gw = gateway_for(addr, |_| {}).await;
    let r = common::send(c.get(format!("http://{}/real", gw.addr))).await;
    assert_eq!(r.status, 200);
    let served_stale = common::eventually(Duration::from_secs(15), async || {
        let r = common::send(c.get(format!("http://{}/real", gw.addr))).await;
        r.status == 200 && r.cache_status().starts_with("tierd; fwd=stale")
    })
    .await;
    assert!(served_stale, "the expired entry was kept and served stale");
    gw.stop(false).await;

    // 0 turns it off.
    let gw = start(Some(0)).await;
    let url = |p: &str| format!("http://{}{p}", gw.addr);
    let first = common::send(c.get(url("/off"))).await;
    assert_eq!(first.status, 200);
    clock.advance(Duration::from_secs(11));
    let r = common::send(c.get(url("/off"))).await;
    assert_eq!(r.status, 502);
    gw.stop(false).await;
}

/// RFC 9111 §5.1: a list-based `Age` counts by its first member; one that is not a non-negative
/// integer means nobody knows how old the response is, so tierd takes it as stale on arrival
/// and validates it before reuse (rather than ignoring the field and serving it as new).
#[actix_web::test]
async fn an_age_that_is_not_one_non_negative_integer_is_stale_on_arrival() {
    let (addr, _) = keepalive_origin(|_, head| {
        let path = head.split(' ').nth(1).unwrap_or("/");
        let age = match path {
            "/list-old-first" => "age: old, 0\r\n",
            "/negative" => "age: -5\r\n",
            "/float" => "age: 1.5\r\n",
            "/old-then-new" => "age: 7200, 0\r\n",
            "/new-then-old" => "age: 0, 7200\r\n",
            "/two-lines" => "age: 10\r\nage: 7200\r\n",
            _ => "",
        };
        format!("HTTP/1.1 200 OK\r\ncache-control: max-age=3600\r\netag: \"v\"\r\n{age}content-length: 2\r\n\r\nok").into_bytes()
    })
    .await;
    let gw = gateway_for(addr, |_| {}).await;
    let c = common::client();
    for (path, reused) in [
        ("/list-old-first", false),
        ("/negative", false),
        ("/float", false),
        ("/old-then-new", false),
        ("/new-then-old", true),
        ("/two-lines", true),
        ("/none", true),
    ] {
        let first = common::send(c.get(format!("http://{}{path}", gw.addr))).await;
        assert_eq!(first.status, 200, "{path}");
        let again = common::send(c.get(format!("http://{}{path}", gw.addr))).await;
        let cs = again.cache_status();
        assert_eq!(cs.contains("hit"), reused, "{path}: {cs}");
        if !reused {
            assert!(cs.contains("fwd=stale"), "{path}: validated as stale: {cs}");
        }
    }
    gw.stop(false).await;
}

/// `upstream.forwarded_header`: off by default (as nginx and Varnish send none); on, the origin
/// gets RFC 7239's element for this hop.
#[actix_web::test]
async fn forwarded_goes_to_the_origin_only_when_asked() {
    let echo = |_, head: &str| {
        let body = head.to_ascii_lowercase();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let (addr, _) = keepalive_origin(echo).await;
    for (on, expected) in [
        (false, None),
        (true, Some("forwarded: for=127.0.0.1;host=t;proto=http")),
    ] {
        let gw = gateway_for(addr, |s| s.upstream.forwarded_header = on).await;
        let r = raw(gw.addr, &get("/f"), Duration::from_secs(5)).await;
        let line = body_of(&r).lines().find(|l| l.starts_with("forwarded:"));
        assert_eq!(line, expected, "{r}");
        gw.stop(false).await;
    }
}
