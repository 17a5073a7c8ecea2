//! RFC 9111 shared-cache behaviour over real HTTP: client -> tierd -> test origin on loopback.
//! Grouped by the RFC section each test pins down (the section is named in each group's heading).

use crate::common;

use common::{eventually, Gate, Harness, Reply};
use std::time::Duration;

// ---- Storing (RFC 9111 §3) ----

#[actix_web::test]
async fn get_with_max_age_is_stored_then_hit_from_l1() {
    let h = Harness::new(|_, n| Reply::ok(format!("v{n}")).cc("max-age=60")).await;
    let a = h.get("/a").await;
    assert_eq!((a.status, a.text().as_str()), (200, "v1"));
    assert_eq!(
        a.cache_status(),
        "tierd; fwd=uri-miss; fwd-status=200; stored"
    );
    h.advance(18);
    let b = h.get("/a").await;
    assert_eq!(b.text(), "v1");
    assert_eq!(b.cache_status(), "tierd; hit; ttl=42; detail=l1");
    assert_eq!(b.age(), Some(18));
    assert_eq!(h.origin.hits(), 1);
    h.stop().await;
}

#[actix_web::test]
async fn head_is_answered_from_a_stored_get_and_a_head_miss_is_not_stored() {
    let h = Harness::new(|_, n| Reply::ok(format!("body-{n}")).cc("max-age=60")).await;
    let head_miss = h.send(h.client.head(h.url("/h"))).await;
    assert_eq!(head_miss.status, 200);
    assert!(head_miss.body.is_empty());
    assert_eq!(
        head_miss.cache_status(),
        "tierd; fwd=uri-miss; fwd-status=200"
    );
    let get = h.get("/h").await;
    assert_eq!(
        get.cache_status(),
        "tierd; fwd=uri-miss; fwd-status=200; stored",
        "HEAD did not fill the cache"
    );
    let head_hit = h.send(h.client.head(h.url("/h"))).await;
    assert!(head_hit.cache_status().starts_with("tierd; hit"));
    assert_eq!(head_hit.header("content-length").as_deref(), Some("6"));
    assert!(head_hit.body.is_empty());
    assert_eq!(h.origin.hits(), 2);
    h.stop().await;
}

#[actix_web::test]
async fn no_store_in_request_or_response_is_never_stored() {
    let h = Harness::new(|req, n| {
        let r = Reply::ok(format!("v{n}"));
        if req.path() == "/ns" {
            r.cc("max-age=60, no-store")
        } else {
            r.cc("max-age=60")
        }
    })
    .await;
    h.get("/ns").await;
    assert_eq!(h.get("/ns").await.text(), "v2");
    h.get_with("/rq", &[("cache-control", "no-store")]).await;
    let after = h.get("/rq").await;
    assert!(
        after.cache_status().contains("fwd=uri-miss"),
        "request no-store was stored: {}",
        after.cache_status()
    );
    h.stop().await;
}

#[actix_web::test]
async fn a_private_response_is_never_served_to_a_second_client() {
    let h = Harness::new(|req, _| {
        let user = req
            .headers()
            .get("x-user")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Reply::ok(format!("secret of {user}")).cc("private, max-age=600")
    })
    .await;
    let alice = h.get_with("/me", &[("x-user", "alice")]).await;
    assert_eq!(alice.text(), "secret of alice");
    let bob = h.get_with("/me", &[("x-user", "bob")]).await;
    assert_eq!(bob.text(), "secret of bob");
    assert_eq!(h.origin.hits(), 2);
    h.stop().await;
}

#[actix_web::test]
async fn authorization_requests_are_stored_only_when_the_response_allows() {
    let h = Harness::new(|req, n| {
        let r = Reply::ok(format!("v{n}"));
        match req.path() {
            "/plain" => r.cc("max-age=60"),
            "/public" => r.cc("public, max-age=60"),
            "/smax" => r.cc("s-maxage=60"),
            _ => r.cc("max-age=60, must-revalidate"),
        }
    })
    .await;
    let auth = [("authorization", "Bearer t")];
    for (path, stored) in [
        ("/plain", false),
        ("/public", true),
        ("/smax", true),
        ("/mr", true),
    ] {
        let first = h.get_with(path, &auth).await;
        assert_eq!(
            first.cache_status().ends_with("stored"),
            stored,
            "{path}: {}",
            first.cache_status()
        );
        let again = h.get_with(path, &auth).await;
        assert_eq!(again.cache_status().contains("hit"), stored, "{path}");
    }
    h.stop().await;
}

#[actix_web::test]
async fn responses_without_freshness_are_not_stored_but_heuristics_apply_with_last_modified() {
    let h = Harness::new(|req, n| {
        let r = Reply::ok(format!("v{n}"));
        match req.path() {
            "/bare" => r,
            "/lm" => r.header("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT"),
            _ => r
                .status(500)
                .header("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT"),
        }
    })
    .await;
    h.get("/bare").await;
    assert_eq!(h.get("/bare").await.text(), "v2", "no silent default TTL");
    h.get("/lm").await;
    let lm = h.get("/lm").await;
    assert!(
        lm.cache_status().starts_with("tierd; hit; ttl="),
        "heuristic freshness: {}",
        lm.cache_status()
    );
    // 10% of (Date - Last-Modified) is years, capped at one day.
    assert_eq!(lm.cache_status(), "tierd; hit; ttl=86400; detail=l1");
    h.get("/err").await;
    assert!(
        h.get("/err").await.cache_status().contains("fwd=uri-miss"),
        "500 is not heuristically cacheable"
    );
    h.stop().await;
}

#[actix_web::test]
async fn hop_by_hop_headers_are_neither_forwarded_nor_stored() {
    let h = Harness::new(|_, _| {
        Reply::ok("x")
            .cc("max-age=60")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("x-end", "2")
            .header("keep-alive", "timeout=5")
    })
    .await;
    // Raw bytes: HTTP clients manage Connection themselves.
    let raw = common::raw(
        h.gw.addr,
        b"GET /hop HTTP/1.1\r\nhost: t\r\nconnection: close, x-client-hop\r\nx-client-hop: a\r\nte: trailers\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let (_, _, seen) = h.origin.last_request();
    assert!(
        seen.get("x-client-hop").is_none() && seen.get("te").is_none(),
        "request hop-by-hop forwarded"
    );
    assert_eq!(seen.get("via").unwrap(), "1.1 tierd");
    h.stop().await;

    // Response side: a raw origin (frameworks rewrite Connection themselves).
    let script = b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\nconnection: x-hop, close\r\nx-hop: 1\r\nkeep-alive: timeout=5\r\nx-end: 2\r\ncontent-length: 1\r\n\r\nx".to_vec();
    let (addr, _) = common::raw_origin(script, common::Then::Close).await;
    let gw = tierd::server::Gateway::start(
        &common::settings_for(addr),
        std::sync::Arc::new(tierd::clock::SystemClock),
        None,
    )
    .await
    .unwrap();
    let client = common::client();
    let res = common::send(client.get(format!("http://{}/hop", gw.addr))).await;
    assert!(
        res.header("x-hop").is_none() && res.header("keep-alive").is_none(),
        "{:?}",
        res.headers
    );
    assert_eq!(res.header("x-end").as_deref(), Some("2"));
    let hit = common::send(client.get(format!("http://{}/hop", gw.addr))).await;
    assert!(hit.cache_status().contains("hit"));
    assert!(hit.header("x-hop").is_none());
    gw.stop(false).await;
}

#[actix_web::test]
async fn set_cookie_responses_are_not_stored_unless_the_cookie_is_excluded() {
    let h = Harness::new(|req, n| {
        let r = Reply::ok(format!("v{n}")).header("set-cookie", "sid=1");
        if req.path() == "/nc" {
            r.cc("max-age=60, no-cache=\"set-cookie\"")
        } else {
            r.cc("max-age=60")
        }
    })
    .await;
    h.get("/sc").await;
    assert!(h.get("/sc").await.cache_status().contains("fwd=uri-miss"));
    h.get("/nc").await;
    let hit = h.get("/nc").await;
    assert!(hit.cache_status().contains("hit"));
    assert!(
        hit.header("set-cookie").is_none(),
        "excluded cookie replayed"
    );
    h.stop().await;
}

// ---- Freshness and age (§4.2) ----

#[actix_web::test]
async fn freshness_lifetime_sources_and_staleness() {
    let h = Harness::new(|req, n| {
        let r = Reply::ok(format!("v{n}"));
        match req.path() {
            "/smax" => r.cc("max-age=1000, s-maxage=30"),
            "/dup" => r.cc("max-age=60, max-age=60"),
            "/bad-ma" => r.cc("max-age=ten"),
            "/huge" => r.cc("max-age=99999999999999"),
            "/bad-exp" => r.header("expires", "0"),
            _ => r,
        }
    })
    .await;
    h.get("/smax").await;
    assert_eq!(
        h.get("/smax").await.cache_status(),
        "tierd; hit; ttl=30; detail=l1"
    );
    for stale in ["/dup", "/bad-ma", "/bad-exp"] {
        h.get(stale).await;
        assert!(
            h.get(stale).await.cache_status().contains("fwd="),
            "{stale} must be treated as stale"
        );
    }
    h.get("/huge").await;
    assert_eq!(
        h.get("/huge").await.cache_status(),
        "tierd; hit; ttl=2147483648; detail=l1"
    );
    h.stop().await;
}

#[actix_web::test]
async fn expires_minus_date_and_origin_age_are_honoured() {
    let h = Harness::new(|req, _| {
        let r = Reply::ok("x");
        match req.path() {
            "/exp" => r
                .no_date()
                .header("date", "Thu, 01 Jan 2015 00:00:00 GMT")
                .header("expires", "Thu, 01 Jan 2015 00:01:40 GMT"),
            _ => r.cc("max-age=60").header("age", "30"),
        }
    })
    .await;
    // Expires - Date = 100 s, but Date is years old, so the apparent age makes it stale at once.
    h.get("/exp").await;
    assert!(h.get("/exp").await.cache_status().contains("fwd="));
    let first = h.get("/age").await;
    assert_eq!(first.age(), Some(30));
    let hit = h.get("/age").await;
    assert_eq!(hit.cache_status(), "tierd; hit; ttl=30; detail=l1");
    assert_eq!(hit.age(), Some(30));
    h.advance(31);
    assert!(h.get("/age").await.cache_status().contains("fwd=stale"));
    h.stop().await;
}

// ---- Reuse (§4) ----

#[actix_web::test]
async fn vary_selects_variants_and_vary_star_never_matches() {
    let h = Harness::new(|req, n| {
        let lang = req
            .headers()
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let r = Reply::ok(format!("{lang}-{n}")).cc("max-age=60");
        if req.path() == "/star" {
            r.header("vary", "*")
        } else {
            r.header("vary", "Accept-Language")
        }
    })
    .await;
    let en = h.get_with("/v", &[("accept-language", "en")]).await;
    let fr = h.get_with("/v", &[("accept-language", "fr")]).await;
    assert_eq!(
        fr.cache_status(),
        "tierd; fwd=vary-miss; fwd-status=200; stored"
    );
    assert_eq!(
        h.get_with("/v", &[("accept-language", "en")]).await.text(),
        en.text()
    );
    assert_eq!(
        h.get_with("/v", &[("accept-language", "fr")]).await.text(),
        fr.text()
    );
    assert!(
        h.get("/v").await.cache_status().contains("fwd=vary-miss"),
        "absent header is its own variant"
    );
    assert_eq!(h.origin.hits(), 3);
    h.get("/star").await;
    assert!(h.get("/star").await.cache_status().contains("fwd=uri-miss"));
    h.stop().await;
}

#[actix_web::test]
async fn no_cache_response_is_revalidated_on_every_reuse() {
    let h = Harness::new(|req, _| {
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"e1\"")
        {
            return Reply::ok("")
                .status(304)
                .header("etag", "\"e1\"")
                .cc("no-cache");
        }
        Reply::ok("payload").cc("no-cache").header("etag", "\"e1\"")
    })
    .await;
    assert_eq!(h.get("/nc").await.text(), "payload");
    let again = h.get("/nc").await;
    assert_eq!((again.status, again.text().as_str()), (200, "payload"));
    assert_eq!(again.cache_status(), "tierd; fwd=stale; fwd-status=304");
    assert_eq!(
        h.origin.request_headers(2).get("if-none-match").unwrap(),
        "\"e1\""
    );
    h.stop().await;
}

#[actix_web::test]
async fn stale_must_revalidate_is_never_served_and_origin_down_gives_504() {
    let h = Harness::new(|req, n| {
        if n > 1 && req.path() == "/mr" {
            return Reply::ok("down").status(503);
        }
        Reply::ok("fresh")
            .cc("max-age=10, must-revalidate, stale-if-error=600")
            .header("etag", "\"m\"")
    })
    .await;
    h.get("/mr").await;
    h.advance(20);
    let res = h.get("/mr").await;
    assert_eq!(
        res.status, 503,
        "stale must-revalidate served instead of origin error"
    );
    assert_ne!(res.text(), "fresh");
    h.stop().await;

    // Origin unreachable: 504. (`Connection: close`: no pooled connection to the stopped origin
    // is reused, so the next request must connect.)
    let h = Harness::new(|_, _| {
        Reply::ok("fresh")
            .cc("max-age=10, must-revalidate")
            .header("etag", "\"m\"")
            .header("connection", "close")
    })
    .await;
    h.get("/mr").await;
    h.advance(20);
    let Harness {
        gw,
        origin,
        clock,
        client,
    } = h;
    origin.stop().await;
    let res = common::send(client.get(format!("http://{}/mr", gw.addr))).await;
    assert_eq!(
        res.status,
        504,
        "cache-status {:?}, body {:?}",
        res.header("cache-status"),
        res.text()
    );
    let _ = clock;
    gw.stop(false).await;
}

// ---- Validation (§4.3; RFC 9110 §13) ----

/// An origin whose `body` (ETag `"v1"`, fresh 10 s, `x-gen: 1`) revalidates with a 304 that
/// makes it fresh 100 s and numbers its `x-gen` by the request.
fn revalidating(
    body: &'static str,
) -> impl Fn(&actix_web::HttpRequest, u64) -> Reply + Send + Sync + 'static {
    move |req, n| {
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            return Reply::ok("")
                .status(304)
                .header("etag", "\"v1\"")
                .cc("max-age=100")
                .header("x-gen", &n.to_string());
        }
        Reply::ok(body)
            .header("etag", "\"v1\"")
            .cc("max-age=10")
            .header("x-gen", "1")
    }
}

#[actix_web::test]
async fn stale_entry_is_revalidated_and_the_304_updates_stored_headers() {
    let h = Harness::new(revalidating("body-1")).await;
    h.get("/r").await;
    h.advance(11);
    let reval = h.get("/r").await;
    assert_eq!(reval.cache_status(), "tierd; fwd=stale; fwd-status=304");
    assert_eq!(
        (reval.text().as_str(), reval.header("x-gen").as_deref()),
        ("body-1", Some("2"))
    );
    let hit = h.get("/r").await;
    assert_eq!(
        hit.cache_status(),
        "tierd; hit; ttl=100; detail=l1",
        "lifetime from the 304"
    );
    assert_eq!(hit.header("x-gen").as_deref(), Some("2"));
    assert_eq!(hit.text(), "body-1");
    h.stop().await;
}

/// Without an ETag, a stale entry is revalidated with `If-Modified-Since` set to its stored
/// `Last-Modified` (RFC 9111 §4.3.1); a 304 keeps the stored body, a 200 replaces it.
#[actix_web::test]
async fn a_stale_entry_without_etag_is_revalidated_with_if_modified_since() {
    const LM: &str = "Thu, 01 Jan 2015 00:00:00 GMT";
    let h = Harness::new(|req, n| {
        let ims = req
            .headers()
            .get("if-modified-since")
            .and_then(|v| v.to_str().ok());
        match (ims, n) {
            (Some(LM), 2) => Reply::ok("")
                .status(304)
                .cc("max-age=10")
                .header("last-modified", LM),
            (Some(LM), _) => Reply::ok("body-3")
                .cc("max-age=10")
                .header("last-modified", "Fri, 02 Jan 2015 00:00:00 GMT"),
            _ => Reply::ok("body-1")
                .cc("max-age=10")
                .header("last-modified", LM),
        }
    })
    .await;
    assert_eq!(h.get("/lm").await.text(), "body-1");
    h.advance(11);
    let reval = h.get("/lm").await;
    assert_eq!(reval.cache_status(), "tierd; fwd=stale; fwd-status=304");
    assert_eq!(reval.text(), "body-1");
    let (_, _, headers) = h.origin.last_request();
    assert_eq!(
        headers.get("if-modified-since").unwrap(),
        LM,
        "the stored validator"
    );
    assert!(headers.get("if-none-match").is_none());
    assert!(
        h.get("/lm").await.cache_status().contains("hit"),
        "fresh again"
    );
    h.advance(11);
    let changed = h.get("/lm").await;
    assert_eq!(
        changed.cache_status(),
        "tierd; fwd=stale; fwd-status=200; stored"
    );
    assert_eq!(changed.text(), "body-3");
    assert_eq!(h.origin.hits(), 3);
    h.stop().await;
}

/// RFC 9110 §14: a `Range` miss fetches the whole response (no `Range` to the origin), stores
/// it and answers the range; hits answer ranges from the cache; `If-Range` must match strongly;
/// 416 past the end; several ranges or a malformed one get the full 200.
#[actix_web::test]
async fn range_requests_are_answered_from_the_stored_full_response() {
    let h = Harness::new(|_, n| {
        Reply::ok(format!("0123456789{n}"))
            .cc("max-age=600")
            .header("etag", "\"v1\"")
            .header("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT")
    })
    .await;
    let part = h.get_with("/file", &[("range", "bytes=0-3")]).await;
    assert_eq!((part.status, part.text().as_str()), (206, "0123"));
    assert_eq!(
        part.header("content-range").as_deref(),
        Some("bytes 0-3/11")
    );
    assert!(
        part.cache_status().contains("stored"),
        "{}",
        part.cache_status()
    );
    let (_, _, seen) = h.origin.last_request();
    assert!(
        seen.get("range").is_none(),
        "the whole response was fetched"
    );
    let lm = "Tue, 01 Dec 2026 10:00:00 GMT";
    for (range, if_range, status, body, content_range) in [
        ("bytes=5-", None, 206, "567891", Some("bytes 5-10/11")),
        ("bytes=-3", None, 206, "891", Some("bytes 8-10/11")),
        ("bytes=9-99", None, 206, "91", Some("bytes 9-10/11")),
        ("bytes=11-", None, 416, "", Some("bytes */11")),
        ("bytes=0-1,4-5", None, 200, "01234567891", None),
        ("bytes=3-1", None, 200, "01234567891", None),
        ("pages=1-2", None, 200, "01234567891", None),
        ("bytes=0-1", Some("\"v1\""), 206, "01", Some("bytes 0-1/11")),
        ("bytes=0-1", Some(lm), 206, "01", Some("bytes 0-1/11")),
        ("bytes=0-1", Some("\"v0\""), 200, "01234567891", None),
        ("bytes=0-1", Some("W/\"v1\""), 200, "01234567891", None),
    ] {
        let mut headers = vec![("range", range)];
        if let Some(ir) = if_range {
            headers.push(("if-range", ir));
        }
        let r = h.get_with("/file", &headers).await;
        let what = format!("{range} {if_range:?}");
        assert_eq!((r.status, r.text().as_str()), (status, body), "{what}");
        assert_eq!(
            r.header("content-range").as_deref(),
            content_range,
            "{what}"
        );
        assert!(
            r.cache_status().contains("hit"),
            "{what}: {}",
            r.cache_status()
        );
        if status != 416 {
            assert_eq!(r.header("etag").as_deref(), Some("\"v1\""), "{what}");
        }
    }
    let full = h.get("/file").await;
    assert_eq!(
        full.header("accept-ranges").as_deref(),
        Some("bytes"),
        "ranges are advertised on a full response of known length (§14.3)"
    );
    // HEAD ignores Range.
    let head = h
        .send(
            h.client
                .head(h.url("/file"))
                .insert_header(("range", "bytes=0-3")),
        )
        .await;
    assert_eq!(head.status, 200);
    // A client's precondition is evaluated before its range: 304.
    let cond = h
        .get_with(
            "/file",
            &[("range", "bytes=0-3"), ("if-none-match", "\"v1\"")],
        )
        .await;
    assert_eq!(cond.status, 304);
    assert_eq!(h.origin.hits(), 1, "one fetch served every range");
    h.stop().await;
}

/// A range request for a stale entry revalidates the whole entry (no `Range` to the origin, the
/// stored validator instead); the 304's headers replace the stored ones and the range is cut
/// from the stored body, so the 206 carries the newer headers (RFC 9111 §4.3.4).
#[actix_web::test]
async fn a_range_request_for_a_stale_entry_revalidates_and_takes_the_newer_headers() {
    let h = Harness::new(revalidating("0123456789")).await;
    h.get("/f").await;
    h.advance(11);
    let r = h.get_with("/f", &[("range", "bytes=2-4")]).await;
    let (_, _, seen) = h.origin.last_request();
    assert!(
        seen.get("range").is_none(),
        "the whole entry is revalidated"
    );
    assert_eq!(
        seen.get("if-none-match").and_then(|v| v.to_str().ok()),
        Some("\"v1\"")
    );
    assert_eq!((r.status, r.text().as_str()), (206, "234"));
    assert_eq!(r.header("content-range").as_deref(), Some("bytes 2-4/10"));
    assert_eq!(r.header("x-gen").as_deref(), Some("2"), "the 304's headers");
    let hit = h.get_with("/f", &[("range", "bytes=-2")]).await;
    assert_eq!((hit.status, hit.text().as_str()), (206, "89"));
    assert_eq!(
        hit.header("x-gen").as_deref(),
        Some("2"),
        "stored from the 304"
    );
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    h.stop().await;
}

/// A response too large to store streams through, and the range is cut from the stream.
#[actix_web::test]
async fn a_range_of_a_response_too_large_to_store_is_cut_from_the_stream() {
    let body: String = (0..200)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let b = body.clone();
    let h = Harness::with(
        move |_, _| Reply::ok(b.clone()).cc("max-age=600"),
        |s| s.cache.max_body_bytes = 64,
    )
    .await;
    let r = h.get_with("/big", &[("range", "bytes=150-159")]).await;
    assert_eq!((r.status, r.text().as_str()), (206, &body[150..160]));
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 150-159/200")
    );
    let r = h.get_with("/big", &[("range", "bytes=-5")]).await;
    assert_eq!((r.status, r.text().as_str()), (206, &body[195..]));
    assert_eq!(h.origin.hits(), 2, "not stored");
    h.stop().await;
}

#[actix_web::test]
async fn client_conditionals_weak_lists_star_and_precedence() {
    let h = Harness::new(|_, _| {
        Reply::ok("data")
            .cc("max-age=60")
            .header("etag", "\"abc\"")
            .header("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT")
            .header("content-location", "/c")
    })
    .await;
    let full = h.get("/c").await;
    assert_eq!(full.status, 200);
    for inm in ["\"abc\"", "W/\"abc\"", "\"x\", W/\"abc\"", "*"] {
        let r = h.get_with("/c", &[("if-none-match", inm)]).await;
        assert_eq!(r.status, 304, "{inm}");
        assert!(r.body.is_empty());
        for name in [
            "etag",
            "cache-control",
            "date",
            "content-location",
            "cache-status",
            "age",
        ] {
            assert!(r.header(name).is_some(), "304 lacks {name}");
        }
        assert!(r.header("content-type").is_none());
    }
    let no = h
        .get_with(
            "/c",
            &[
                ("if-none-match", "\"other\""),
                ("if-modified-since", "Thu, 01 Jan 2015 00:00:00 GMT"),
            ],
        )
        .await;
    assert_eq!(
        no.status, 200,
        "If-None-Match takes precedence over If-Modified-Since"
    );
    let ims = h
        .get_with(
            "/c",
            &[("if-modified-since", "Fri, 02 Jan 2015 00:00:00 GMT")],
        )
        .await;
    assert_eq!(ims.status, 304);
    let garbage = h.get_with("/c", &[("if-none-match", "garbage,,\"")]).await;
    assert_eq!((garbage.status, garbage.text().as_str()), (200, "data"));
    let im = h.get_with("/c", &[("if-match", "\"nope\"")]).await;
    assert_eq!(im.status, 412);
    assert_eq!(h.origin.hits(), 1);
    h.stop().await;
}

#[actix_web::test]
async fn a_conditional_miss_is_forwarded_without_conditionals_and_answered_by_tierd() {
    let h = Harness::new(|_, _| Reply::ok("full").cc("max-age=60").header("etag", "\"z\"")).await;
    let r = h
        .get_with(
            "/m",
            &[
                ("if-none-match", "\"z\""),
                ("if-modified-since", "Thu, 01 Jan 2015 00:00:00 GMT"),
            ],
        )
        .await;
    assert_eq!(r.status, 304);
    let seen = h.origin.request_headers(1);
    assert!(seen.get("if-none-match").is_none() && seen.get("if-modified-since").is_none());
    let full = h.get("/m").await;
    assert_eq!(
        (full.status, full.text().as_str()),
        (200, "full"),
        "the full response was stored"
    );
    h.stop().await;
}

#[actix_web::test]
async fn generated_etag_for_stored_responses_without_one() {
    let h = Harness::new(|_, _| Reply::ok("no-etag-here").cc("max-age=60")).await;
    let first = h.get("/g").await;
    let etag = first.header("etag").expect("tierd adds a strong ETag");
    assert!(etag.starts_with('"'));
    let r = h.get_with("/g", &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    // A generated ETag is never sent upstream as a validator.
    h.advance(61);
    h.get("/g").await;
    assert!(h.origin.request_headers(2).get("if-none-match").is_none());
    h.stop().await;
}

// ---- Stale (RFC 5861) ----

#[actix_web::test]
async fn stale_while_revalidate_serves_stale_with_exactly_one_background_refresh() {
    // The refresh is held at the origin until all twenty stale answers are in.
    let refresh = Gate::new();
    let held = refresh.clone();
    let h = Harness::new(move |_, n| {
        let r = Reply::ok(format!("v{n}")).cc("max-age=10, stale-while-revalidate=60");
        if n > 1 {
            r.held_by(&held)
        } else {
            r
        }
    })
    .await;
    h.get("/s").await;
    h.advance(15);
    let reqs: Vec<_> = (0..20).map(|_| h.get("/s")).collect();
    let results = futures_util::future::join_all(reqs).await;
    for r in &results {
        assert_eq!(r.text(), "v1");
        assert_eq!(r.cache_status(), "tierd; hit; ttl=-5; detail=l1");
    }
    assert!(eventually(Duration::from_secs(5), async || h.origin.hits() == 2).await);
    refresh.open();
    let fresh = h
        .get_until("/s", "v2")
        .await
        .map(|r| r.cache_status())
        .unwrap_or_default();
    assert!(
        fresh.starts_with("tierd; hit; ttl=10"),
        "refreshed entry: {fresh}"
    );
    assert_eq!(h.origin.hits(), 2, "exactly one background refresh");
    h.stop().await;
}

#[actix_web::test]
async fn background_refresh_survives_the_client_going_away() {
    let h = Harness::new(|_, n| {
        Reply::ok(format!("v{n}"))
            .cc("max-age=10, stale-while-revalidate=60")
            .delay_ms(if n > 1 { 300 } else { 0 })
    })
    .await;
    h.get("/s").await;
    h.advance(15);
    // A raw client sends the request and, once the refresh has reached the origin, resets the
    // connection (actix then drops the request's future).
    let req = format!(
        "GET /s HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        h.gw.addr
    );
    let mut s = tokio::net::TcpStream::connect(h.gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), async || h.origin.hits() == 2).await);
    common::reset(s);
    // The refresh (300 ms at the origin) completes and is stored: v2 is served, and no other
    // refresh was needed for it.
    let refreshed = h.get_until("/s", "v2").await;
    assert!(
        refreshed.is_some(),
        "refresh completed after the client left"
    );
    assert_eq!(h.origin.hits(), 2, "one refresh");
    h.stop().await;
}

#[actix_web::test]
async fn stale_if_error_serves_stale_on_5xx_and_connect_failure_within_the_window() {
    let h = Harness::new(|_, n| {
        if n == 1 {
            Reply::ok("good").cc("max-age=10, stale-if-error=60")
        } else {
            Reply::ok("oops").status(503)
        }
    })
    .await;
    h.get("/e").await;
    h.advance(20);
    let r = h.get("/e").await;
    assert_eq!((r.status, r.text().as_str()), (200, "good"));
    assert_eq!(
        r.cache_status(),
        "tierd; fwd=stale; fwd-status=503; ttl=-10; detail=l1"
    );
    h.advance(60);
    let past = h.get("/e").await;
    assert_eq!(
        past.status, 503,
        "beyond the window the error passes through"
    );
    h.stop().await;

    // `Connection: close`, so the gateway keeps no pooled connection to reuse: its next request
    // must connect, to an origin that is gone.
    let h = Harness::new(|_, _| {
        Reply::ok("good")
            .cc("max-age=10, stale-if-error=60")
            .header("connection", "close")
    })
    .await;
    h.get("/e").await;
    h.advance(20);
    let Harness {
        gw, origin, client, ..
    } = h;
    origin.stop().await;
    let r = common::send(client.get(format!("http://{}/e", gw.addr))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "good"));
    assert!(
        r.cache_status()
            .starts_with("tierd; fwd=stale; fwd-status=502"),
        "{}",
        r.cache_status()
    );
    gw.stop(false).await;
}

// ---- Invalidation (§4.4) ----

#[actix_web::test]
async fn unsafe_methods_invalidate_the_uri_and_same_origin_locations() {
    let h = Harness::new(|req, n| match req.method().as_str() {
        "PUT" => Reply::ok("updated").header("content-location", "/other"),
        "POST" if req.path() == "/fail" => Reply::ok("no").status(400),
        "POST" if req.path() == "/create" => {
            Reply::ok("").status(201).header("location", "/created")
        }
        "POST" => Reply::ok("")
            .status(201)
            .header("location", "http://elsewhere.test/kept"),
        _ => Reply::ok(format!("v{n}")).cc("max-age=600"),
    })
    .await;
    for p in ["/item", "/other", "/fail", "/created", "/kept"] {
        h.get(p).await;
        assert!(h.get(p).await.cache_status().contains("hit"), "{p} stored");
    }
    let put = h.send(h.client.put(h.url("/item"))).await;
    assert_eq!(put.cache_status(), "tierd; fwd=method; fwd-status=200");
    assert!(
        h.get("/item").await.cache_status().contains("fwd=uri-miss"),
        "PUT invalidated the GET"
    );
    assert!(
        h.get("/other")
            .await
            .cache_status()
            .contains("fwd=uri-miss"),
        "Content-Location invalidated"
    );
    h.send(h.client.post(h.url("/fail"))).await;
    assert!(
        h.get("/fail").await.cache_status().contains("hit"),
        "an error answer invalidates nothing"
    );
    // A same-origin Location is invalidated; another origin's is not (it names another host's
    // resource, whatever its path).
    assert_eq!(h.send(h.client.post(h.url("/create"))).await.status, 201);
    assert!(
        h.get("/created")
            .await
            .cache_status()
            .contains("fwd=uri-miss"),
        "Location invalidated"
    );
    assert_eq!(h.send(h.client.post(h.url("/elsewhere"))).await.status, 201);
    assert!(
        h.get("/kept").await.cache_status().contains("hit"),
        "another origin's Location invalidates nothing here"
    );
    h.stop().await;
}

// ---- Cache-Status and surrogate keys ----

#[actix_web::test]
async fn upstream_cache_status_is_kept_and_surrogate_headers_are_consumed() {
    let h = Harness::new(|req, _| {
        let r = Reply::ok("x")
            .header("cache-status", "origin-cache; hit")
            .header("surrogate-key", "a b");
        match req.path() {
            "/sc" => r.cc("private").header("surrogate-control", "max-age=30"),
            "/cdn" => r.cc("no-store").header("cdn-cache-control", "max-age=40"),
            // Not a valid structured field (a trailing comma): ignored whole (RFC 9213 §2.1),
            // so Cache-Control decides.
            "/cdn-bad" => r
                .cc("max-age=10")
                .header("cdn-cache-control", "max-age=40, no-store,"),
            // Valid, over two lines, with a parameter (ignored).
            "/cdn-sf" => r
                .cc("no-store")
                .header("cdn-cache-control", "max-age=50;ext=1")
                .header("cdn-cache-control", "stale-if-error=5"),
            _ => r.cc("max-age=60"),
        }
    })
    .await;
    h.get("/k").await;
    let hit = h.get("/k").await;
    let all: Vec<_> = hit
        .headers
        .get_all("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        all.first().map(String::as_str),
        Some("origin-cache; hit"),
        "upstream member first"
    );
    assert!(all.last().unwrap().starts_with("tierd; hit"));
    assert!(hit.header("surrogate-key").is_none());
    h.get("/sc").await;
    let sc = h.get("/sc").await;
    assert_eq!(
        sc.cache_status(),
        "tierd; hit; ttl=30; detail=l1",
        "Surrogate-Control overrides private"
    );
    assert!(sc.header("surrogate-control").is_none());
    h.get("/cdn").await;
    let cdn = h.get("/cdn").await;
    assert_eq!(
        cdn.cache_status(),
        "tierd; hit; ttl=40; detail=l1",
        "CDN-Cache-Control overrides no-store"
    );
    h.get("/cdn-bad").await;
    assert_eq!(
        h.get("/cdn-bad").await.cache_status(),
        "tierd; hit; ttl=10; detail=l1"
    );
    h.get("/cdn-sf").await;
    assert_eq!(
        h.get("/cdn-sf").await.cache_status(),
        "tierd; hit; ttl=50; detail=l1"
    );
    h.stop().await;
}
