//! Rate limiting over real HTTP: client, rule and origin quotas, client identity, the 429's
//! headers, and the bound on the client table. Time is a manual clock: refills happen when a
//! test moves it, never by sleeping.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{get_from, metric_at, send_from, Harness, RawResp, Reply};
use tierd::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: [u8; 4] = [127, 0, 0, 2];
const B: [u8; 4] = [127, 0, 0, 3];

fn client_quota(s: &mut Settings, rps: f64, burst: u32) {
    s.rate_limit.enabled = true;
    s.rate_limit.requests_per_second = rps;
    s.rate_limit.burst = burst;
}

async fn cached_with(tweak: impl FnOnce(&mut Settings)) -> Harness {
    Harness::with(|_, _| Reply::ok("fine").cc("max-age=60"), tweak).await
}

async fn statuses(addr: SocketAddr, from: [u8; 4], path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get_from(from, addr, path, &[]).await.status);
    }
    out
}

fn assert_refusal(r: &RawResp) {
    assert_eq!(r.status, 429, "{}", r.head);
    assert_eq!(r.body, "Too Many Requests\n");
    assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(r.header("cache-status").is_none(), "{}", r.head);
    assert!(r.header("etag").is_none(), "{}", r.head);
}

#[actix_web::test]
async fn a_burst_past_the_quota_gets_429_with_its_headers_and_then_recovers() {
    let h = cached_with(|s| client_quota(s, 2.0, 3)).await;
    let addr = h.gw.addr;
    assert_eq!(statuses(addr, A, "/x", 3).await, [200, 200, 200]);
    let r = get_from(A, addr, "/x", &[]).await;
    assert_refusal(&r);
    // 2 per second: the next request in 0.5 s (rounded up), the whole burst of 3 in 1.5 s.
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.header("ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(r.header("ratelimit-reset").as_deref(), Some("2"));
    assert_eq!(
        h.origin.hits(),
        1,
        "the refusal never reaches the cache or the origin"
    );

    let admin = h.gw.admin_addr;
    let refused = [("route", "other"), ("quota", "client"), ("key_kind", "ip")];
    assert_eq!(
        metric_at(admin, "tierd_rate_limited_total", &refused).await,
        1.0
    );
    let counted = [("cache_status", "rate_limited"), ("status_class", "4xx")];
    assert_eq!(
        metric_at(admin, "tierd_requests_total", &counted).await,
        1.0
    );

    // One request is earned back every 0.5 s (Retry-After rounds it up to whole seconds).
    h.clock.advance(Duration::from_millis(499));
    assert_eq!(get_from(A, addr, "/x", &[]).await.status, 429);
    h.clock.advance(Duration::from_millis(1));
    assert_eq!(statuses(addr, A, "/x", 2).await, [200, 429]);
    // After RateLimit-Reset the whole burst is back.
    h.clock.advance(Duration::from_secs(2));
    assert_eq!(statuses(addr, A, "/x", 4).await, [200, 200, 200, 429]);
    h.stop().await;
}

#[actix_web::test]
async fn two_clients_do_not_share_a_bucket() {
    let h = cached_with(|s| client_quota(s, 1.0, 2)).await;
    let addr = h.gw.addr;
    assert_eq!(statuses(addr, A, "/x", 3).await, [200, 200, 429]);
    assert_eq!(statuses(addr, B, "/x", 3).await, [200, 200, 429]);
    assert_eq!(get_from(A, addr, "/x", &[]).await.status, 429);
    h.stop().await;
}

#[actix_web::test]
async fn x_forwarded_for_names_the_client_only_from_trusted_proxies() {
    let h = cached_with(|s| {
        client_quota(s, 1.0, 1);
        s.rate_limit.trusted_proxies = vec!["127.0.0.2/32".into()];
    })
    .await;
    let (addr, admin) = (h.gw.addr, h.gw.admin_addr);
    let xff = |v: &'static str| [("x-forwarded-for", v)];

    // An untrusted peer claiming to be someone else each time is still one client.
    let untrusted = get_from(B, addr, "/x", &xff("198.51.100.1")).await;
    assert_eq!(untrusted.status, 200);
    assert_eq!(
        get_from(B, addr, "/x", &xff("198.51.100.2")).await.status,
        429
    );
    let by_ip = [("quota", "client"), ("key_kind", "ip")];
    assert_eq!(
        metric_at(admin, "tierd_rate_limited_total", &by_ip).await,
        1.0
    );

    // Behind the trusted proxy, each forwarded client has its own bucket...
    assert_eq!(
        get_from(A, addr, "/x", &xff("198.51.100.7")).await.status,
        200
    );
    assert_eq!(
        get_from(A, addr, "/x", &xff("198.51.100.8")).await.status,
        200
    );
    assert_eq!(
        get_from(A, addr, "/x", &xff("198.51.100.7")).await.status,
        429
    );
    // ...and what the client wrote left of the proxy's entry does not change who it is.
    let lie = get_from(A, addr, "/x", &xff("203.0.113.99, 198.51.100.8")).await;
    assert_eq!(lie.status, 429);
    let fwd = [("quota", "client"), ("key_kind", "forwarded")];
    assert_eq!(
        metric_at(admin, "tierd_rate_limited_total", &fwd).await,
        2.0
    );
    // The proxy's own requests (no header) are the proxy's.
    assert_eq!(get_from(A, addr, "/x", &[]).await.status, 200);
    h.stop().await;
}

/// `rate_limit.client_header = "forwarded"`: RFC 7239's `for=` from trusted proxies.
#[actix_web::test]
async fn forwarded_names_the_client_from_trusted_proxies_that_write_it() {
    let h = cached_with(|s| {
        client_quota(s, 1.0, 1);
        s.rate_limit.trusted_proxies = vec!["127.0.0.2/32".into()];
        s.rate_limit.client_header = tierd::ratelimit::ClientHeader::Forwarded;
    })
    .await;
    let addr = h.gw.addr;
    let fwd = |v: &'static str| [("forwarded", v)];
    assert_eq!(
        get_from(A, addr, "/x", &fwd("for=198.51.100.7"))
            .await
            .status,
        200
    );
    assert_eq!(
        get_from(
            A,
            addr,
            "/x",
            &fwd("for=\"[2001:db8::7]:4711\";proto=https")
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get_from(A, addr, "/x", &fwd("for=198.51.100.7"))
            .await
            .status,
        429
    );
    // What the client wrote left of the proxy's element does not change who it is.
    let lie = get_from(A, addr, "/x", &fwd("for=203.0.113.99, for=198.51.100.7")).await;
    assert_eq!(lie.status, 429);
    // From an untrusted peer, Forwarded is nobody's word: two claims, one client.
    assert_eq!(
        get_from(B, addr, "/x", &fwd("for=198.51.100.1"))
            .await
            .status,
        200
    );
    assert_eq!(
        get_from(B, addr, "/x", &fwd("for=198.51.100.2"))
            .await
            .status,
        429
    );
    let m = [("quota", "client"), ("key_kind", "forwarded")];
    assert_eq!(
        metric_at(h.gw.admin_addr, "tierd_rate_limited_total", &m).await,
        2.0
    );
    h.stop().await;
}

#[actix_web::test]
async fn an_api_key_header_names_the_client() {
    let h = cached_with(|s| {
        client_quota(s, 1.0, 1);
        s.rate_limit.api_key_header = "x-api-key".into();
    })
    .await;
    let addr = h.gw.addr;
    let key = |k: &'static str| [("x-api-key", k)];
    assert_eq!(get_from(A, addr, "/x", &key("k-one")).await.status, 200);
    assert_eq!(get_from(A, addr, "/x", &key("k-two")).await.status, 200);
    assert_eq!(get_from(B, addr, "/x", &key("k-one")).await.status, 429);
    // Without the header, the address.
    assert_eq!(statuses(addr, A, "/x", 2).await, [200, 429]);
    let m = [("quota", "client"), ("key_kind", "api_key")];
    assert_eq!(
        metric_at(h.gw.admin_addr, "tierd_rate_limited_total", &m).await,
        1.0
    );
    let text = common::send(common::client().get(h.admin_url("/metrics")))
        .await
        .text();
    assert!(!text.contains("k-one") && !text.contains("127.0.0.2"));
    h.stop().await;
}

#[actix_web::test]
async fn a_rule_quota_limits_its_route_only() {
    let h = cached_with(|s| {
        s.rules = common::rules(
            r#"
            [[rules]]
            path = "/search"
            rate_limit = { requests_per_second = 0.5, burst = 2 }
            "#,
        );
    })
    .await;
    let addr = h.gw.addr;
    assert_eq!(statuses(addr, A, "/search", 3).await, [200, 200, 429]);
    assert_eq!(statuses(addr, A, "/elsewhere", 5).await, [200; 5]);
    assert_eq!(statuses(addr, B, "/search", 1).await, [200]);
    let r = get_from(A, addr, "/search", &[]).await;
    assert_refusal(&r);
    assert_eq!(r.header("retry-after").as_deref(), Some("2"));
    let m = [("route", "/search"), ("quota", "rule"), ("key_kind", "ip")];
    assert_eq!(
        metric_at(h.gw.admin_addr, "tierd_rate_limited_total", &m).await,
        2.0
    );
    // A reload that keeps the quota keeps the buckets: no fresh burst for anyone.
    let rules = h.gw.state.rules.load_full();
    h.gw.state.set_rules((*rules).clone());
    assert_eq!(get_from(A, addr, "/search", &[]).await.status, 429);
    h.stop().await;
}

#[actix_web::test]
async fn the_origin_quota_throttles_misses_while_hits_keep_flowing() {
    let h = Harness::with(
        |req, _| match req.path() {
            "/strict" => Reply::ok("strict").cc("max-age=60, must-revalidate"),
            _ => Reply::ok(format!("body of {}", req.path())).cc("max-age=60"),
        },
        |s| {
            s.rate_limit.origin.enabled = true;
            s.rate_limit.origin.requests_per_second = 0.01; // one every 100 s
            s.rate_limit.origin.burst = 3;
        },
    )
    .await;
    let addr = h.gw.addr;
    let started = std::time::Instant::now();
    for p in ["/a", "/b", "/strict"] {
        assert_eq!(get_from(A, addr, p, &[]).await.status, 200, "{p}");
    }
    let r = get_from(A, addr, "/c", &[]).await;
    assert_refusal(&r);
    // The limiter runs on the real clock: one token per 100 s, less the time since the burst
    // was spent, rounded up.
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    let spent = started.elapsed().as_secs();
    assert!(
        (100 - spent - 1..=100).contains(&retry),
        "retry-after {retry} after {spent} s"
    );
    // Hits spend nothing.
    for _ in 0..20 {
        let hit = get_from(A, addr, "/a", &[]).await;
        assert_eq!(hit.status, 200);
        assert!(hit.header("cache-status").unwrap().contains("hit"));
    }
    // Mutations reach the origin, so they spend it too.
    let post = send_from(A, addr, "POST", "/a", &[]).await;
    assert_eq!(post.status, 429);
    assert_eq!(h.origin.hits(), 3);
    // Another client has its own origin bucket.
    assert_eq!(get_from(B, addr, "/c", &[]).await.status, 200);

    // Stale entries are served while the quota is spent, unless they forbid it.
    h.advance(61);
    let stale = get_from(A, addr, "/a", &[]).await;
    assert_eq!((stale.status, stale.body.as_str()), (200, "body of /a"));
    assert_eq!(
        stale.header("cache-status").as_deref(),
        Some("tierd; hit; ttl=-1; detail=origin-limited")
    );
    assert_eq!(get_from(A, addr, "/strict", &[]).await.status, 429);
    assert_eq!(h.origin.hits(), 4);

    let admin = h.gw.admin_addr;
    let stale_m = [("reason", "origin_limited")];
    assert_eq!(
        metric_at(admin, "tierd_stale_served_total", &stale_m).await,
        1.0
    );
    let refused = [("quota", "origin"), ("key_kind", "ip")];
    assert_eq!(
        metric_at(admin, "tierd_rate_limited_total", &refused).await,
        3.0
    );
    let hits = [("cache_status", "hit")];
    assert_eq!(metric_at(admin, "tierd_requests_total", &hits).await, 20.0);

    // Once the quota refills, the stale entry is refreshed from the origin.
    h.advance(100);
    let fresh = get_from(A, addr, "/a", &[]).await;
    assert_eq!(fresh.status, 200);
    assert!(fresh.header("cache-status").unwrap().contains("fwd=stale"));
    assert_eq!(h.origin.hits(), 5);
    h.stop().await;
}

#[actix_web::test]
async fn dry_run_quotas_count_what_they_would_refuse_and_refuse_nothing() {
    let h = Harness::with(
        |req, _| Reply::ok(format!("body of {}", req.path())).cc("max-age=60"),
        |s| {
            client_quota(s, 1.0, 3);
            s.rate_limit.dry_run = true;
            s.rate_limit.origin.enabled = true;
            s.rate_limit.origin.requests_per_second = 0.01;
            s.rate_limit.origin.burst = 2;
            s.rate_limit.origin.dry_run = true;
            s.rules = common::rules(
                r#"
                [[rules]]
                path = "/search"
                rate_limit = { requests_per_second = 0.5, burst = 1, dry_run = true }
                [[rules]]
                path = "/enforced"
                rate_limit = { requests_per_second = 0.5, burst = 1 }
                "#,
            );
        },
    )
    .await;
    let (addr, admin) = (h.gw.addr, h.gw.admin_addr);
    // Past the client quota (burst 3) from the fourth request on: let through all the same.
    assert_eq!(statuses(addr, A, "/a", 5).await, [200; 5]);
    // Past the rule quota (burst 1) from the second: let through.
    assert_eq!(statuses(addr, A, "/search", 3).await, [200; 3]);
    // /a and /search spent the origin quota (burst 2); these misses still reach the origin
    // and get its answer, not a stale entry or a 429.
    for p in ["/b", "/c"] {
        let r = get_from(A, addr, p, &[]).await;
        assert_eq!((r.status, r.body.clone()), (200, format!("body of {p}")));
        assert!(r.header("cache-status").unwrap().contains("fwd=uri-miss"));
    }
    // An enforced rule quota beside the dry-run ones still refuses.
    assert_eq!(get_from(A, addr, "/enforced", &[]).await.status, 200);
    assert_refusal(&get_from(A, addr, "/enforced", &[]).await);
    assert_eq!(h.origin.hits(), 5);

    let dry = |route: &'static str, quota: &'static str| async move {
        let labels = [("route", route), ("quota", quota), ("key_kind", "ip")];
        metric_at(admin, "tierd_rate_limit_dry_run_total", &labels).await
    };
    // The client quota would have refused /a 4-5, /b, /c, all of /search and /enforced.
    assert_eq!(dry("other", "client").await, 4.0);
    assert_eq!(dry("/search", "client").await, 3.0);
    assert_eq!(dry("/enforced", "client").await, 2.0);
    assert_eq!(dry("/search", "rule").await, 2.0);
    assert_eq!(dry("other", "origin").await, 2.0);
    assert_eq!(dry("/enforced", "origin").await, 1.0);
    // Only the enforced quota refused anything.
    assert_eq!(metric_at(admin, "tierd_rate_limited_total", &[]).await, 1.0);
    let refused = [("route", "/enforced"), ("quota", "rule")];
    assert_eq!(
        metric_at(admin, "tierd_rate_limited_total", &refused).await,
        1.0
    );
    h.stop().await;
}

#[actix_web::test]
async fn a_node_wide_origin_quota_is_shared_by_every_client() {
    let h = Harness::with(
        |_, _| Reply::ok("x").cc("max-age=60"),
        |s| {
            s.rate_limit.origin.enabled = true;
            s.rate_limit.origin.requests_per_second = 0.01;
            s.rate_limit.origin.burst = 2;
            s.rate_limit.origin.per = tierd::config::OriginQuotaKey::Node;
        },
    )
    .await;
    let addr = h.gw.addr;
    assert_eq!(get_from(A, addr, "/1", &[]).await.status, 200);
    assert_eq!(get_from(B, addr, "/2", &[]).await.status, 200);
    assert_eq!(get_from(B, addr, "/3", &[]).await.status, 429);
    assert_eq!(get_from(A, addr, "/4", &[]).await.status, 429);
    assert_eq!(get_from(A, addr, "/2", &[]).await.status, 200, "a hit");
    let m = [("quota", "origin"), ("key_kind", "node")];
    assert_eq!(
        metric_at(h.gw.admin_addr, "tierd_rate_limited_total", &m).await,
        2.0
    );
    h.stop().await;
}

/// The status of a GET forwarded for `client` by the trusted proxy at 127.0.0.1.
async fn via(addr: SocketAddr, client: &str) -> u16 {
    let proxy = [127, 0, 0, 1];
    get_from(proxy, addr, "/", &[("x-forwarded-for", client)])
        .await
        .status
}

/// Sends `n` pipelined GETs on one connection, each with its own `X-Forwarded-For` from
/// `first`, the last one closing the connection; counts the 200s and 429s.
async fn flood(addr: SocketAddr, first: u32, n: u32) -> (usize, usize) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = actix_web::rt::spawn(async move {
        let mut batch = String::new();
        for i in first..first + n {
            let ip = std::net::Ipv4Addr::from(0x0A00_0000 + i);
            let close = if i + 1 == first + n {
                "Connection: close\r\n"
            } else {
                ""
            };
            batch.push_str(&format!(
                "GET / HTTP/1.1\r\nHost: gw\r\nX-Forwarded-For: {ip}\r\n{close}\r\n"
            ));
            if batch.len() > 64 * 1024 {
                wr.write_all(batch.as_bytes()).await.unwrap();
                batch.clear();
            }
        }
        wr.write_all(batch.as_bytes()).await.unwrap();
        wr
    });
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), rd.read_to_end(&mut out))
        .await
        .expect("all responses within 120 s")
        .unwrap();
    drop(writer.await.unwrap());
    let text = String::from_utf8_lossy(&out);
    (
        text.matches("HTTP/1.1 200 ").count(),
        text.matches("HTTP/1.1 429 ").count(),
    )
}

#[actix_web::test]
async fn a_flood_of_100k_distinct_clients_leaves_the_client_table_bounded() {
    let h = cached_with(|s| {
        client_quota(s, 1.0, 5);
        s.rate_limit.trusted_proxies = vec!["127.0.0.1".into()];
        s.rate_limit.max_clients = 10_000;
        s.rate_limit.cleanup_interval_seconds = 1;
    })
    .await;
    let (addr, admin) = (h.gw.addr, h.gw.admin_addr);
    // A client the table knows before the flood.
    assert_eq!(via(addr, "198.51.100.7").await, 200);
    let mut tasks = Vec::new();
    for c in 0..8u32 {
        tasks.push(actix_web::rt::spawn(flood(addr, c * 12_500, 12_500)));
    }
    let (mut ok, mut limited) = (0usize, 0usize);
    for t in tasks {
        let (o, l) = t.await.unwrap();
        ok += o;
        limited += l;
    }
    assert_eq!(ok + limited, 100_000);
    // The table filled up to its cap of 10,000 (the known client and 9,999 of the flood), and
    // the rest of the flood shared one overflow bucket of burst 5. The two workers' inserts may
    // race past the cap check together once, so one more flood client may have got a bucket.
    assert!((10_004..=10_005).contains(&ok), "{ok} allowed");
    let overflow = metric_at(admin, "tierd_rate_limit_overflow_total", &[]).await;
    assert!((90_000.0..=90_001.0).contains(&overflow), "{overflow}");

    let clients =
        || async { metric_at(admin, "tierd_rate_limit_clients", &[("quota", "client")]).await };
    // The gauge is set by the cleanup, once a second (`cleanup_interval_seconds`); ten
    // intervals bound the wait for a loaded machine.
    let mut seen = 0.0;
    common::eventually(Duration::from_secs(10), async || {
        seen = clients().await;
        seen >= 10_000.0
    })
    .await;
    assert!(
        (10_000.0..=10_001.0).contains(&seen),
        "{seen} clients tracked"
    );
    // While the table is full, the known client keeps its own bucket, and a new one shares the
    // spent overflow bucket.
    assert_eq!(via(addr, "198.51.100.7").await, 200);
    assert_eq!(via(addr, "192.0.2.1").await, 429);

    // Once every bucket is full again, cleanup empties the table.
    h.advance(10);
    let mut left = seen;
    common::eventually(Duration::from_secs(10), async || {
        left = clients().await;
        left == 0.0
    })
    .await;
    assert_eq!(left, 0.0);
    assert_eq!(via(addr, "192.0.2.1").await, 200, "a bucket of its own");
    h.stop().await;
}
