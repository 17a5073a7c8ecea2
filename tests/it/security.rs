//! Cache poisoning and request confusion, probed the way an attacker does: raw bytes over a real
//! socket to tierd in front of a reflecting origin (one that echoes request details into its
//! answers, as many applications do in links, redirects and error pages). Each test then checks
//! that an innocent client is served what it should be.

use crate::common;

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

/// Item 2: a GET with a body ("fat GET") was forwarded with the body, and the response stored
/// and served to clients that sent none. By default the body is not forwarded (Varnish does the
/// same), so the stored response cannot depend on it; `cache.get_with_body = "pass"` sends such
/// requests to the origin with their body, uncached.
#[actix_web::test]
async fn the_body_of_a_get_never_reaches_the_origin_or_the_cache() {
    let h = Harness::new(|req, n| reflect(req, n).cc("max-age=600")).await;
    let fat = "GET /search HTTP/1.1\r\nHost: victim.test\r\nContent-Length: 23\r\nConnection: close\r\n\r\n<script>poison</script>";
    let r = send(&h, fat).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(h.origin.hits(), 1);
    assert_eq!(h.origin.bodies.lock().unwrap()[0], b"", "no body forwarded");
    let (_, _, headers) = h.origin.last_request();
    assert!(
        headers.get("content-length").is_none_or(|v| v == "0"),
        "{headers:?}"
    );
    assert!(headers.get("transfer-encoding").is_none());
    // A chunked body is dropped the same way.
    let chunked = "GET /search2 HTTP/1.1\r\nHost: victim.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\npoison\r\n0\r\n\r\n";
    assert_eq!(send(&h, chunked).await.status, 200);
    assert_eq!(h.origin.bodies.lock().unwrap()[1], b"");
    // The innocent client gets the stored response, which no body shaped.
    let innocent = send(
        &h,
        "GET /search HTTP/1.1\r\nHost: victim.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(innocent.status, 200);
    assert!(innocent
        .header("cache-status")
        .unwrap_or_default()
        .contains("hit"));
    assert_eq!(h.origin.hits(), 2);
    h.stop().await;

    let h = Harness::with(
        |req, n| reflect(req, n).cc("max-age=600"),
        |s| s.cache.get_with_body = tierd::cache::GetWithBody::Pass,
    )
    .await;
    let r = send(&h, fat).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("cache-status").as_deref(),
        Some("tierd; fwd=bypass; fwd-status=200; detail=request_body")
    );
    assert_eq!(
        h.origin.bodies.lock().unwrap()[0],
        b"<script>poison</script>"
    );
    let innocent = send(
        &h,
        "GET /search HTTP/1.1\r\nHost: victim.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        innocent
            .header("cache-status")
            .unwrap_or_default()
            .contains("fwd=uri-miss"),
        "the passed response was not stored: {}",
        innocent.head
    );
    assert_eq!(h.origin.hits(), 2);
    h.stop().await;
}

/// Item 9: a response to a request carrying `Cookie`, with no explicit freshness but a
/// `Last-Modified`, was stored heuristically (for up to a day) and served to anonymous clients
/// (an account page requested as `/account.css`). Heuristic freshness now never applies to a
/// credentialed request's response; an anonymous request's response still gets it.
#[actix_web::test]
async fn heuristic_freshness_never_shares_a_credentialed_response() {
    let h = Harness::new(|req, n| {
        let user = req
            .headers()
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("anonymous")
            .to_owned();
        Reply::ok(format!("account of {user} #{n}"))
            .header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")
    })
    .await;
    let with_cookie = "GET /account.css HTTP/1.1\r\nHost: victim.test\r\nCookie: session=alice\r\nConnection: close\r\n\r\n";
    let anonymous = "GET /account.css HTTP/1.1\r\nHost: victim.test\r\nConnection: close\r\n\r\n";
    let alice = send(&h, with_cookie).await;
    assert_eq!(alice.body, "account of session=alice #1");
    assert_eq!(
        alice.header("cache-status").as_deref(),
        Some("tierd; fwd=uri-miss; fwd-status=200"),
        "not stored"
    );
    let anon = send(&h, anonymous).await;
    assert_eq!(anon.body, "account of anonymous #2", "never alice's page");
    // The anonymous response is shared, heuristically fresh.
    let again = send(&h, anonymous).await;
    assert_eq!(again.body, "account of anonymous #2");
    assert!(again
        .header("cache-status")
        .unwrap_or_default()
        .contains("hit"));
    h.stop().await;
}

/// Item 1: `Host: victim.test/account` with `GET /login` was stored under the key of
/// `GET /account/login` on victim.test (the same with `?`), so the attacker chose what an
/// innocent client got. A Host that is not a `host[:port]` now gets 400 (as do two Hosts, and
/// none in HTTP/1.1), and equivalent spellings of one host share one key.
#[actix_web::test]
async fn a_host_that_is_not_host_port_is_refused_and_spellings_share_a_key() {
    let h = Harness::new(|req, n| reflect(req, n).cc("max-age=600")).await;
    for (name, request) in [
        ("slash", "GET /login HTTP/1.1\r\nHost: victim.test/account\r\nX-User: mallory\r\nConnection: close\r\n\r\n"),
        ("query", "GET /login HTTP/1.1\r\nHost: victim.test?account\r\nX-User: mallory\r\nConnection: close\r\n\r\n"),
        ("at", "GET /login HTTP/1.1\r\nHost: mallory@victim.test\r\nConnection: close\r\n\r\n"),
        ("two hosts", "GET /account/login HTTP/1.1\r\nHost: victim.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n"),
        ("no host", "GET /account/login HTTP/1.1\r\nConnection: close\r\n\r\n"),
        ("non-ascii", "GET /account/login HTTP/1.1\r\nHost: vict\u{ef}m.test\r\nConnection: close\r\n\r\n"),
    ] {
        let r = send(&h, request).await;
        assert_eq!(r.status, 400, "{name}: {}", r.head);
        assert!(r.header("cache-status").is_none(), "{name}");
    }
    assert_eq!(h.origin.hits(), 0, "nothing reached the origin");
    let innocent = send(
        &h,
        "GET /account/login HTTP/1.1\r\nHost: victim.test\r\nX-User: alice\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(innocent.status, 200);
    assert!(innocent.body.starts_with("user=alice"), "{}", innocent.body);
    for spelling in [
        "VICTIM.test",
        "victim.test.",
        "victim.test:80",
        "Victim.Test.:80",
    ] {
        let r = send(
            &h,
            &format!(
                "GET /account/login HTTP/1.1\r\nHost: {spelling}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(r.body.starts_with("user=alice"), "{spelling}: {}", r.body);
        assert!(
            r.header("cache-status").unwrap_or_default().contains("hit"),
            "{spelling}"
        );
    }
    assert_eq!(h.origin.hits(), 1);
    let counted = common::metric_at(
        h.gw.admin_addr,
        "tierd_requests_rejected_total",
        &[("reason", "bad_host")],
    )
    .await;
    // Two Hosts and no Host in HTTP/1.1 are refused by actix's parser before tierd sees them.
    assert_eq!(counted, 4.0, "each of tierd's refusals counted");
    h.stop().await;
}

/// Item 10: with `admin.token` set, the read calls (`/_tierd/stats`, `/_tierd/entry`) were open
/// to anyone who reached the admin listener: a cache oracle. They now need the token like the
/// mutating calls; `/metrics`, `/healthz` and `/readyz` stay open for scrapers and probes.
#[actix_web::test]
async fn admin_read_calls_need_the_token_once_one_is_set() {
    let h = Harness::with(
        |req, n| reflect(req, n).cc("max-age=600"),
        |s| s.admin.token = "admin-secret".into(),
    )
    .await;
    let admin = h.gw.admin_addr;
    let get = |path: &str, token: Option<&str>| {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n")
    };
    let entry = "/_tierd/entry?url=http://victim.test/x";
    for path in ["/_tierd/stats", entry] {
        for token in [None, Some("wrong")] {
            let r = RawResp::parse(
                &raw(admin, get(path, token).as_bytes(), Duration::from_secs(5)).await,
            );
            assert_eq!(r.status, 401, "{path} with {token:?}");
            assert!(
                !r.body.contains("victim"),
                "nothing about the cache: {}",
                r.body
            );
        }
    }
    let stats = RawResp::parse(
        &raw(
            admin,
            get("/_tierd/stats", Some("admin-secret")).as_bytes(),
            Duration::from_secs(5),
        )
        .await,
    );
    assert_eq!(stats.status, 200);
    let missing = RawResp::parse(
        &raw(
            admin,
            get(entry, Some("admin-secret")).as_bytes(),
            Duration::from_secs(5),
        )
        .await,
    );
    assert_eq!(
        missing.status, 404,
        "with the token: an answer about the entry"
    );
    for open in ["/metrics", "/healthz", "/readyz"] {
        let r =
            RawResp::parse(&raw(admin, get(open, None).as_bytes(), Duration::from_secs(5)).await);
        assert_eq!(r.status, 200, "{open}");
    }
    h.stop().await;
}

/// Splits what came back on one connection into responses, framing each by the request it
/// answers (a response to HEAD has no body whatever its `Content-Length`). Returns the heads and
/// bodies, and what was left over.
fn responses(mut text: &str, heads: &[bool]) -> (Vec<RawResp>, String) {
    let mut out = Vec::new();
    for &head in heads {
        let Some((h, rest)) = text.split_once("\r\n\r\n") else {
            break;
        };
        let r = RawResp::parse(&format!("{h}\r\n\r\n"));
        let len = if head {
            0
        } else {
            r.header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        let len = len.min(rest.len());
        out.push(RawResp {
            body: rest[..len].to_owned(),
            ..r
        });
        text = &rest[len..];
    }
    (out, text.to_owned())
}

/// Item 7: the HTTP/1 codec kept the method and version of the *last request it read* and
/// framed every response with them, so a pipelined request read while an earlier one was still
/// at the origin reframed the earlier answer: a GET answered with a Content-Length and no body
/// (a HEAD had followed), a HEAD answered with a body (a GET had followed), an HTTP/1.1 answer
/// labelled HTTP/1.0. Every pipelined request now gets its own correctly framed answer.
#[actix_web::test]
async fn pipelined_requests_each_get_their_own_correctly_framed_answer() {
    let h = Harness::new(|req, n| {
        let r = reflect(req, n).cc("max-age=600");
        if req.path().starts_with("/slow") {
            r.delay_ms(300)
        } else {
            r
        }
    })
    .await;
    // (request line, is HEAD, version)
    type Pipeline<'a> = &'a [(&'a str, bool, &'a str)];
    let cases: [(&str, Pipeline); 3] = [
        (
            "slow GET then HEAD",
            &[
                ("GET /slow1", false, "HTTP/1.1"),
                ("HEAD /a", true, "HTTP/1.1"),
            ],
        ),
        (
            "slow HEAD miss then GET",
            &[
                ("HEAD /slow2", true, "HTTP/1.1"),
                ("GET /b", false, "HTTP/1.1"),
            ],
        ),
        (
            "slow HTTP/1.1 then HTTP/1.0",
            &[
                ("GET /slow3", false, "HTTP/1.1"),
                ("GET /c", false, "HTTP/1.0"),
            ],
        ),
    ];
    for (name, requests) in cases {
        let mut bytes = String::new();
        for (i, (line, _, version)) in requests.iter().enumerate() {
            let close = if i + 1 == requests.len() {
                "Connection: close\r\n"
            } else {
                ""
            };
            bytes.push_str(&format!(
                "{line} {version}\r\nHost: victim.test\r\nX-User: u{i}\r\n{close}\r\n"
            ));
        }
        let text = raw(h.gw.addr, bytes.as_bytes(), Duration::from_secs(5)).await;
        let heads: Vec<bool> = requests.iter().map(|r| r.1).collect();
        let (got, rest) = responses(&text, &heads);
        assert_eq!(
            got.len(),
            requests.len(),
            "{name}: every request answered:\n{text}"
        );
        assert_eq!(rest, "", "{name}: nothing after the last answer:\n{text}");
        for (i, ((line, head, version), r)) in requests.iter().zip(&got).enumerate() {
            assert_eq!(r.status, 200, "{name}: {line}: {}", r.head);
            assert!(
                r.head.starts_with(version),
                "{name}: {line} answered as {}",
                r.head
            );
            let path = line.split(' ').nth(1).unwrap_or_default();
            if *head {
                assert_eq!(r.body, "", "{name}: {line} has no body");
            } else {
                assert_eq!(
                    r.body,
                    format!("user=u{i} host={} path={path}", h.origin.addr),
                    "{name}: {line}"
                );
            }
        }
    }
    h.stop().await;
}

/// Item 6: `GET http://victim.test/x HTTP/1.0` without Host was keyed under victim.test but the
/// origin was not told that host. RFC 9112 §3.2.2: in absolute form, the target's authority is
/// the request's host and a `Host` field is ignored. Key and forwarded request now come from the
/// same authority, so what is stored under a host is what the origin answered for that host.
#[actix_web::test]
async fn the_key_and_the_forwarded_request_name_the_same_authority() {
    let h = Harness::with(
        |req, n| {
            let fwd = req
                .headers()
                .get("x-forwarded-host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            reflect(req, n).cc("max-age=600").header("x-saw-host", &fwd)
        },
        |_| {},
    )
    .await;
    for (name, request, host) in [
        (
            "HTTP/1.0 absolute form, no Host",
            "GET http://victim.test/x HTTP/1.0\r\nX-User: alice\r\n\r\n",
            "victim.test",
        ),
        (
            "HTTP/1.1 absolute form, another Host",
            "GET http://other.test/y HTTP/1.1\r\nHost: victim.test\r\nX-User: alice\r\nConnection: close\r\n\r\n",
            "other.test",
        ),
    ] {
        let r = send(&h, request).await;
        assert_eq!(r.status, 200, "{name}: {}", r.head);
        assert_eq!(
            r.header("x-saw-host").as_deref(),
            Some(host),
            "{name}: the origin was told the host the key names"
        );
    }
    // An innocent client asking victim.test and other.test by Host gets what the origin answered
    // for those hosts, from the cache.
    for (path, host) in [("/x", "victim.test"), ("/y", "other.test")] {
        let r = send(
            &h,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            r.header("cache-status").unwrap_or_default().contains("hit"),
            "{host}{path}: {}",
            r.head
        );
        assert_eq!(
            r.header("x-saw-host").as_deref(),
            Some(host),
            "{host}{path}"
        );
    }
    // An absolute-form authority is validated like a Host.
    let r = send(&h, "GET http://mallory@victim.test/x HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 400, "{}", r.head);
    assert_eq!(h.origin.hits(), 2);
    h.stop().await;
}

/// Item 5: headers that origins honour but the cache does not key on (rewrites, method
/// overrides, forwarding claims, underscore spellings) reached the origin, and the answer they
/// shaped was stored for everyone. They are now removed before forwarding; `Forwarded` is
/// rewritten by tierd like `X-Forwarded-*`; a rule that keys on such a header keeps it.
#[actix_web::test]
async fn headers_an_origin_honours_but_the_key_ignores_never_reach_it() {
    // The origin reflects every header whose name is not a plain one it knows.
    let h = Harness::with(
        |req, n| {
            let mut seen: Vec<String> = req
                .headers()
                .iter()
                .filter(|(k, _)| {
                    let k = k.as_str();
                    k.contains('_')
                        || k.contains("original")
                        || k.contains("rewrite")
                        || k.contains("override")
                        || k == "x-host"
                        || k == "forwarded"
                        || (k.starts_with("x-forwarded-")
                            && !matches!(
                                k,
                                "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto"
                            ))
                })
                .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
                .collect();
            seen.sort();
            Reply::ok(format!("#{n} {}", seen.join(" "))).cc("max-age=600")
        },
        |s| {
            s.upstream.forwarded_header = true;
            s.rules = common::rules(
                r#"
                [[rules]]
                path = "/tenant/{*rest}"
                ttl_seconds = 600
                key = { headers = ["x-original-url"] }
                "#,
            );
        },
    )
    .await;
    let hostile = [
        "X-Original-URL: /admin",
        "X-Rewrite-URL: /admin",
        "X-Host: evil.test",
        "X-Forwarded-Server: evil.test",
        "X-Forwarded-Scheme: https",
        "X-Forwarded-Port: 4443",
        "X-Forwarded-Prefix: /evil",
        "X-HTTP-Method-Override: DELETE",
        "X-Method-Override: DELETE",
        "X_Forwarded_Host: evil.test",
        "X-Forwarded_Host: evil.test",
    ];
    for (i, line) in hostile.iter().enumerate() {
        let r = send(
            &h,
            &format!(
                "GET /page{i} HTTP/1.1\r\nHost: victim.test\r\n{line}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{line}");
        assert_eq!(
            r.body,
            format!(
                "#{} forwarded=for=127.0.0.1;host=victim.test;proto=http",
                i + 1
            ),
            "{line} reached the origin"
        );
        // The innocent client gets that clean answer from the cache.
        let innocent = send(
            &h,
            &format!("GET /page{i} HTTP/1.1\r\nHost: victim.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(innocent.body, r.body, "{line}");
    }
    // A client's own Forwarded is replaced by tierd's (the loopback peer is not a trusted proxy).
    let r = send(
        &h,
        "GET /fwd HTTP/1.1\r\nHost: victim.test\r\nForwarded: for=1.2.3.4;host=evil.test;proto=https\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        r.body
            .ends_with(" forwarded=for=127.0.0.1;host=victim.test;proto=http"),
        "{}",
        r.body
    );
    // A rule keying on X-Original-URL forwards it: each value has its own entry.
    let tenant = |v: &str| {
        format!("GET /tenant/x HTTP/1.1\r\nHost: victim.test\r\nX-Original-URL: {v}\r\nConnection: close\r\n\r\n")
    };
    let a = send(&h, &tenant("/a")).await;
    assert!(a.body.contains("x-original-url=/a"), "{}", a.body);
    let b = send(&h, &tenant("/b")).await;
    assert!(b.body.contains("x-original-url=/b"), "{}", b.body);
    let a_again = send(&h, &tenant("/a")).await;
    assert_eq!(a_again.body, a.body);
    assert!(a_again
        .header("cache-status")
        .unwrap_or_default()
        .contains("hit"));
    let stripped = common::metric_at(
        h.gw.admin_addr,
        "tierd_request_headers_stripped_total",
        &[("reason", "listed")],
    )
    .await;
    assert_eq!(stripped, 9.0);
    h.stop().await;

    // The escape hatches: nothing listed, underscores kept.
    let h = Harness::with(
        |req, n| {
            let v = req
                .headers()
                .get("x_tenant")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            Reply::ok(format!("#{n} tenant={v}"))
        },
        |s| {
            s.cache.strip_request_headers.clear();
            s.cache.drop_underscore_headers = false;
        },
    )
    .await;
    let r = send(
        &h,
        "GET /t HTTP/1.1\r\nHost: victim.test\r\nX_Tenant: t1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.body, "#1 tenant=t1");
    h.stop().await;
}

/// Item 3: a GET whose chunked body turns malformed led the shared fetch for its key, and every
/// coalesced waiter got 502. A GET's body is not forwarded (item 2) and one client's broken
/// connection does not end the fetch it leads, so the waiters get the origin's answer.
#[actix_web::test]
async fn a_clients_broken_body_never_fails_the_clients_coalesced_behind_it() {
    let h = Harness::new(|req, n| reflect(req, n).cc("max-age=600").delay_ms(400)).await;
    let mut leader = tokio::net::TcpStream::connect(h.gw.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    leader
        .write_all(b"GET /shared HTTP/1.1\r\nHost: victim.test\r\nX-User: mallory\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ-not-a-chunk-size\r\n\r\n")
        .await
        .unwrap();
    assert!(
        common::eventually(Duration::from_secs(5), async || h.origin.hits() == 1).await,
        "the broken request leads the fetch"
    );
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let addr = h.gw.addr;
            actix_web::rt::spawn(async move {
                RawResp::parse(
                    &raw(
                        addr,
                        b"GET /shared HTTP/1.1\r\nHost: victim.test\r\nConnection: close\r\n\r\n",
                        Duration::from_secs(5),
                    )
                    .await,
                )
            })
        })
        .collect();
    for w in waiters {
        let r = w.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.head);
        assert!(r.body.starts_with("user=mallory"), "{}", r.body);
    }
    assert_eq!(h.origin.hits(), 1, "one fetch served everyone");
    drop(leader);
    h.stop().await;
}

/// A client that sends a request head and a first body byte, then waits for `go` before sending
/// the rest; returns what the gateway answered.
async fn slow_upload(
    addr: std::net::SocketAddr,
    id: usize,
    go: tokio::sync::watch::Receiver<bool>,
) -> RawResp {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!("upload-{id:02}");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /upload/{id} HTTP/1.1\r\nHost: victim.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            &body[..1]
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut go = go;
    let _ = go.wait_for(|g| *g).await;
    s.write_all(&body.as_bytes()[1..]).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    RawResp::parse(&String::from_utf8_lossy(&out))
}

/// Item 8: slow request bodies held the origin connections (`max_connections`) while they
/// trickled in, and innocent misses got 504. Bodies up to `upstream.request_buffer_bytes` are now
/// read before an origin connection is taken; a stalled, broken or oversized body is answered
/// as the client's error and never reaches the origin or its error counters.
#[actix_web::test]
async fn slow_or_broken_request_bodies_never_hold_the_origin() {
    let h = Harness::with(
        |req, n| reflect(req, n).cc("max-age=600"),
        |s| {
            s.server.workers = 1;
            s.upstream.max_connections = 2;
            s.server.client_body_timeout_ms = 1_500;
        },
    )
    .await;
    let (go, wait) = tokio::sync::watch::channel(false);
    let uploads: Vec<_> = (0..6)
        .map(|id| actix_web::rt::spawn(slow_upload(h.gw.addr, id, wait.clone())))
        .collect();
    // Six uploads are under way, each stalled after its first byte. An innocent miss is served.
    let innocent = send(
        &h,
        "GET /innocent HTTP/1.1\r\nHost: victim.test\r\nX-User: alice\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(innocent.status, 200, "{}", innocent.head);
    assert_eq!(
        common::metric_at(h.gw.admin_addr, "tierd_origin_requests_total", &[]).await,
        1.0,
        "no origin request was started for a body still arriving"
    );
    go.send(true).unwrap();
    for (id, u) in uploads.into_iter().enumerate() {
        let r = u.await.unwrap();
        assert_eq!(r.status, 200, "upload {id}: {}", r.head);
    }
    let mut bodies: Vec<String> = h
        .origin
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .filter(|b| b.starts_with("upload-"))
        .collect();
    bodies.sort();
    let expected: Vec<String> = (0..6).map(|i| format!("upload-{i:02}")).collect();
    assert_eq!(bodies, expected, "every body arrived whole");

    // A body that stalls: 408 from tierd, the origin never asked, no origin error counted.
    let hits = h.origin.hits();
    let stalled = send(
        &h,
        "POST /stall HTTP/1.1\r\nHost: victim.test\r\nContent-Length: 10\r\n\r\nab",
    )
    .await;
    assert_eq!(stalled.status, 408, "{}", stalled.head);
    // A chunked body that turns malformed: 400, the client's error.
    let broken = send(
        &h,
        "POST /broken HTTP/1.1\r\nHost: victim.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nnot-hex\r\n\r\n",
    )
    .await;
    assert_eq!(broken.status, 400, "{}", broken.head);
    assert_eq!(h.origin.hits(), hits, "neither reached the origin");
    let admin = h.gw.admin_addr;
    assert_eq!(
        common::metric_at(admin, "tierd_origin_errors_total", &[]).await,
        0.0
    );
    assert_eq!(
        common::metric_at(
            admin,
            "tierd_requests_rejected_total",
            &[("reason", "body_timeout")]
        )
        .await,
        1.0
    );
    assert_eq!(
        common::metric_at(
            admin,
            "tierd_requests_rejected_total",
            &[("reason", "bad_body")]
        )
        .await,
        1.0
    );
    h.stop().await;
}

/// Item 8, the other side: a body larger than `upstream.request_buffer_bytes` streams to the
/// origin as it arrives (under the body timeout) and arrives whole.
#[actix_web::test]
async fn a_body_larger_than_the_buffer_streams_whole() {
    let h = Harness::with(reflect, |s| s.upstream.request_buffer_bytes = 16).await;
    let body = "0123456789abcdef".repeat(8);
    for request in [
        format!(
            "POST /big HTTP/1.1\r\nHost: victim.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        format!(
            "POST /big HTTP/1.1\r\nHost: victim.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            40,
            &body[..40],
            body.len() - 40,
            &body[40..]
        ),
    ] {
        let r = send(&h, &request).await;
        assert_eq!(r.status, 200, "{}", r.head);
        let got = h.origin.bodies.lock().unwrap().last().cloned().unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&got), body);
    }
    h.stop().await;
}

/// Item 11: a Host with non-UTF-8 bytes was keyed as Latin-1 but decoded lossily for
/// invalidation, so a POST through such a Host reached the origin without invalidating what it
/// changed. Such a Host is now refused (400) before anything is forwarded or invalidated, for
/// every method; the stored entry of the real host is untouched and still served.
#[actix_web::test]
async fn a_host_with_bytes_that_are_not_ascii_is_refused_for_every_method() {
    let h = Harness::new(|req, n| reflect(req, n).cc("max-age=600")).await;
    let get = "GET /item HTTP/1.1\r\nHost: victim.test\r\nConnection: close\r\n\r\n";
    assert_eq!(send(&h, get).await.status, 200);
    for method in ["POST", "PUT", "DELETE", "GET"] {
        let mut request = format!("{method} /item HTTP/1.1\r\nHost: victim").into_bytes();
        request.push(0xE9); // Latin-1 'é', not UTF-8
        request.extend_from_slice(b".test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let r = RawResp::parse(&raw(h.gw.addr, &request, Duration::from_secs(5)).await);
        assert_eq!(r.status, 400, "{method}: {}", r.head);
    }
    assert_eq!(h.origin.hits(), 1, "no mutation reached the origin");
    let again = send(&h, get).await;
    assert!(again
        .header("cache-status")
        .unwrap_or_default()
        .contains("hit"));
    h.stop().await;
}
