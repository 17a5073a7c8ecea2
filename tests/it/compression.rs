//! `[compression]`: one compressed copy per stored entry, served to clients that accept its
//! coding, the origin's bytes to the rest; ETags per coding; the copy survives L3.

use std::io::Read;
use std::sync::Arc;

use crate::common::{self, Harness, Reply};
use tierd::clock::ManualClock;
use tierd::server::Gateway;

fn json_body() -> String {
    let items: Vec<String> = (0..80)
        .map(|i| format!("{{\"k\": {i}, \"status\": \"completed\", \"v\": \"xxxxxxxxxxxxxxxx\"}}"))
        .collect();
    format!("{{\"items\": [{}]}}", items.join(", "))
}

fn gunzip(b: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(b)
        .read_to_string(&mut out)
        .expect("gzip");
    out
}

fn unbrotli(b: &[u8]) -> String {
    let mut out = String::new();
    brotli::Decompressor::new(b, 4096)
        .read_to_string(&mut out)
        .expect("br");
    out
}

#[actix_web::test]
async fn one_stored_copy_serves_gzip_and_identity_clients_with_their_own_etags() {
    let body = json_body();
    let b = body.clone();
    let h = Harness::new(move |req, _| match req.path() {
        "/png" => Reply::ok(b.clone())
            .cc("max-age=60")
            .header("content-type", "image/png"),
        "/small" => Reply::ok("{\"a\": 1}")
            .cc("max-age=60")
            .header("content-type", "application/json"),
        "/nt" => Reply::ok(b.clone())
            .cc("max-age=60, no-transform")
            .header("content-type", "application/json"),
        _ => Reply::ok(b.clone())
            .cc("max-age=60")
            .header("content-type", "application/json")
            .header("etag", "\"v7\""),
    })
    .await;
    let gz = [("accept-encoding", "gzip, deflate, br")];
    // The miss is served compressed to a client that accepts it.
    let first = h.get_with("/items", &gz).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(gunzip(&first.body), body);
    assert!(
        first.body.len() * 4 < body.len(),
        "{} of {}",
        first.body.len(),
        body.len()
    );
    assert_eq!(first.header("etag").as_deref(), Some("\"v7-gzip\""));
    assert_eq!(first.header("vary").as_deref(), Some("accept-encoding"));
    // A hit for an identity client: the origin's bytes and ETag, the same Vary.
    let plain = h.get("/items").await;
    assert!(plain.cache_status().contains("hit"));
    assert!(plain.header("content-encoding").is_none());
    assert_eq!(plain.text(), body);
    assert_eq!(plain.header("etag").as_deref(), Some("\"v7\""));
    assert_eq!(plain.header("vary").as_deref(), Some("accept-encoding"));
    // gzip refused by weight, br only (the stored copy is gzip): identity.
    for ae in ["gzip;q=0, identity", "br"] {
        let r = h.get_with("/items", &[("accept-encoding", ae)]).await;
        assert!(r.header("content-encoding").is_none(), "{ae}");
        assert_eq!(r.text(), body, "{ae}");
    }
    // A strong validator names one sequence of bytes: each coding answers its own.
    let inm = |tag: &'static str| [("accept-encoding", "gzip"), ("if-none-match", tag)];
    assert_eq!(h.get_with("/items", &inm("\"v7-gzip\"")).await.status, 304);
    assert_eq!(h.get_with("/items", &inm("\"v7\"")).await.status, 200);
    assert_eq!(
        h.get_with("/items", &[("if-none-match", "\"v7\"")])
            .await
            .status,
        304
    );
    assert_eq!(h.origin.hits(), 1, "one stored entry served them all");
    // Not compressed: a type not listed, a body under min_bytes, no-transform.
    for p in ["/png", "/small", "/nt"] {
        h.get_with(p, &gz).await;
        let r = h.get_with(p, &gz).await;
        assert!(r.cache_status().contains("hit"), "{p}");
        assert!(r.header("content-encoding").is_none(), "{p}");
        assert!(r.header("vary").is_none(), "{p}");
    }
    // A range of the gzip variant is a range of its bytes.
    let full = h.get_with("/items", &gz).await;
    let part = h
        .get_with(
            "/items",
            &[("accept-encoding", "gzip"), ("range", "bytes=0-9")],
        )
        .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, full.body[..10].to_vec());
    h.stop().await;
}

#[actix_web::test]
async fn brotli_when_configured_and_the_copy_comes_back_from_l3() {
    let body = json_body();
    let b = body.clone();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l3.duckdb");
    let clock = Arc::new(ManualClock::new());
    let origin = common::Origin::start(clock.clone(), move |_, _| {
        Reply::ok(b.clone())
            .cc("max-age=600")
            .header("content-type", "application/json")
    })
    .await;
    let settings = || {
        let mut s = common::settings_for(origin.addr);
        s.compression.encoding = tierd::http::encoding::Coding::Br;
        s.compression.level = 9;
        common::with_l3(&mut s, &db);
        s
    };
    let br = [("accept-encoding", "br")];
    let gw = Gateway::start(&settings(), clock.clone(), None)
        .await
        .unwrap();
    let c = common::client();
    // One host name for both processes (the key includes it), as behind a load balancer.
    let host = ("host", "api.test");
    let first = common::send(
        c.get(format!("http://{}/doc", gw.addr))
            .insert_header(host)
            .append_header(br[0]),
    )
    .await;
    assert_eq!(first.header("content-encoding").as_deref(), Some("br"));
    assert_eq!(unbrotli(&first.body), body);
    common::written_at(gw.admin_addr, "l3", 1).await;
    gw.stop(true).await;

    // A new process: L1 is empty, the entry comes from L3 as its compressed copy and is
    // decoded once for identity clients.
    let gw = Gateway::start(&settings(), clock.clone(), None)
        .await
        .unwrap();
    let plain = common::send(c.get(format!("http://{}/doc", gw.addr)).insert_header(host)).await;
    assert!(
        plain.cache_status().contains("detail=l3"),
        "{}",
        plain.cache_status()
    );
    assert!(plain.header("content-encoding").is_none());
    assert_eq!(plain.text(), body);
    let again = common::send(
        c.get(format!("http://{}/doc", gw.addr))
            .insert_header(host)
            .append_header(br[0]),
    )
    .await;
    assert!(
        again.cache_status().contains("detail=l1"),
        "{}",
        again.cache_status()
    );
    assert_eq!(unbrotli(&again.body), body);
    assert_eq!(origin.hits(), 1);
    gw.stop(false).await;
    origin.stop().await;
}
