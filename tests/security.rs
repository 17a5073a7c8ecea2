//! Cache poisoning and request confusion, probed the way an attacker does: raw bytes over a real
//! socket to tierd in front of a reflecting origin (one that echoes request details into its
//! answers, as many applications do in links, redirects and error pages). Each test then checks
//! that an innocent client is served what it should be.

mod common;

use std::time::Duration;

use common::{raw, Harness, RawResp, Reply};

/// The reflecting origin: the body names the user (`X-User`), the host and the path it saw,
/// and the body of the request; the ETag is the user's.
fn reflect(req: &actix_web::HttpRequest, _n: u64) -> Reply {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let user = header("x-user");
    let etag = format!("\"{user}\"");
    if header("if-none-match") == etag {
        return Reply::ok(Vec::new()).status(304).header("etag", &etag);
    }
    Reply::ok(format!(
        "user={user} host={} path={}",
        header("host"),
        req.uri()
    ))
    .header("etag", &etag)
}

async fn send(h: &Harness, request: &str) -> RawResp {
    RawResp::parse(&raw(h.gw.addr, request.as_bytes(), Duration::from_secs(5)).await)
}

/// Item 4: a response with `max-age=0` and a per-user ETag was reused for up to a second
/// without validation (a zero stale-while-revalidate window read as "stale by 0 s is fine"), so
/// a second user got the first user's body. RFC 9111 §4.2.4: stale is never reused without
/// validation unless a stale window covers it.
#[actix_web::test]
async fn a_response_with_max_age_zero_is_revalidated_before_every_reuse() {
    let h = Harness::new(|req, n| reflect(req, n).cc("max-age=0")).await;
    let get = |user: &str| {
        format!("GET /account HTTP/1.1\r\nHost: victim.test\r\nX-User: {user}\r\nConnection: close\r\n\r\n")
    };
    let alice = send(&h, &get("alice")).await;
    assert_eq!(alice.status, 200);
    assert!(alice.body.starts_with("user=alice"), "{}", alice.body);
    // The same second on the cache's clock: the stored response is stale by 0 s.
    let bob = send(&h, &get("bob")).await;
    assert_eq!(bob.status, 200);
    assert!(bob.body.starts_with("user=bob"), "bob got: {}", bob.body);
    assert_eq!(
        h.origin.hits(),
        2,
        "the second request was validated with the origin"
    );
    let (_, _, headers) = h.origin.last_request();
    assert_eq!(
        headers.get("if-none-match").and_then(|v| v.to_str().ok()),
        Some("\"alice\""),
        "revalidated with the stored validator"
    );
    // Alice again: the origin's 304 confirms what is stored.
    let again = send(&h, &get("alice")).await;
    assert!(again.body.starts_with("user=alice"), "{}", again.body);
    h.stop().await;
}
