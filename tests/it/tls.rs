//! `https://` origins: a CA and certificates generated per test, a TLS origin presenting them,
//! tierd trusting a private CA (`upstream.ca_file`), checking another name
//! (`upstream.tls_server_name`), and refusing what it cannot verify with a 502.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common;
use tierd::clock::SystemClock;
use tierd::server::Gateway;

/// A CA (its PEM in a file) and a server configuration with a certificate it signed for `names`.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    /// The server's certificate and key as PEM files (for a redis-server).
    cert_file: PathBuf,
    key_file: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn pki(names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "tierd test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::File::create(&ca_file)
        .unwrap()
        .write_all(ca_cert.pem().as_bytes())
        .unwrap();
    let cert_file = dir.path().join("server.pem");
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    let key_file = dir.path().join("server.key");
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    Pki {
        _dir: dir,
        ca_file,
        cert_file,
        key_file,
        server: Arc::new(server),
    }
}

/// What the TLS origin saw: completed handshakes, failed ones, the last request head.
#[derive(Default)]
struct Seen {
    handshakes: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
    last_head: Mutex<String>,
}

/// An HTTPS origin on its own thread and runtime (so a test may block on a child process while
/// it serves), answering every request with a cacheable `body-<n>`.
fn tls_origin(config: Arc<rustls::ServerConfig>) -> (SocketAddr, Arc<Seen>) {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            while let Ok((sock, _)) = l.accept().await {
                let (acceptor, s) = (acceptor.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else {
                        s.failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    s.handshakes.fetch_add(1, Ordering::SeqCst);
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            *s.last_head.lock().unwrap() =
                                String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            let n = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
                            let body = format!("body-{n}");
                            let res = format!("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                            if tls.write_all(res.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                });
            }
        });
    });
    (addr, seen)
}

async fn gateway(url: String, ca_file: Option<&PathBuf>, server_name: &str) -> Gateway {
    let mut s = common::settings_for("127.0.0.1:1".parse().unwrap());
    s.upstream.url = url;
    if let Some(f) = ca_file {
        s.upstream.ca_file = f.display().to_string();
    }
    s.upstream.tls_server_name = server_name.into();
    s.validate().unwrap();
    Gateway::start(&s, Arc::new(SystemClock), None)
        .await
        .unwrap()
}

#[actix_web::test]
async fn an_https_origin_signed_by_a_private_ca_is_proxied_and_cached() {
    let pki = pki(&["127.0.0.1", "localhost"]);
    let (addr, seen) = tls_origin(pki.server.clone());
    let gw = gateway(format!("https://{addr}/base"), Some(&pki.ca_file), "").await;
    let c = common::client();
    let a = common::send(c.get(format!("http://{}/x?q=1", gw.addr))).await;
    assert_eq!((a.status, a.text().as_str()), (200, "body-1"));
    assert!(a.cache_status().contains("stored"), "{}", a.cache_status());
    let head = seen.last_head.lock().unwrap().clone();
    assert!(head.starts_with("GET /base/x?q=1 HTTP/1.1"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains(&format!("host: {addr}")),
        "the Host is the upstream's: {head}"
    );
    let b = common::send(c.get(format!("http://{}/x?q=1", gw.addr))).await;
    assert_eq!(b.text(), "body-1");
    assert!(b.cache_status().contains("hit"));
    // A second miss reuses the pooled TLS connection.
    let other = common::send(c.get(format!("http://{}/y", gw.addr))).await;
    assert_eq!(other.text(), "body-2");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
    assert!(
        seen.handshakes.load(Ordering::SeqCst) <= 2,
        "one connection per worker at most"
    );
    gw.stop(false).await;
}

#[actix_web::test]
async fn the_certificate_name_is_checked_and_tls_server_name_overrides_it() {
    let pki = pki(&["origin.test"]);
    let (addr, seen) = tls_origin(pki.server.clone());
    let url = format!("https://{addr}");
    // The certificate names origin.test, not 127.0.0.1: refused, and never a response.
    let gw = gateway(url.clone(), Some(&pki.ca_file), "").await;
    let r = common::send(common::client().get(format!("http://{}/n", gw.addr))).await;
    assert_eq!((r.status, r.text().as_str()), (502, "Bad Gateway\n"));
    assert_eq!(
        r.header("cache-status").as_deref(),
        Some("tierd; fwd=uri-miss; detail=origin-tls-error")
    );
    let m = common::scrape::scrape(gw.admin_addr).await;
    assert_eq!(m.sum("tierd_origin_errors_total", &[("kind", "tls")]), 1.0);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);
    gw.stop(false).await;

    let gw = gateway(url, Some(&pki.ca_file), "origin.test").await;
    let r = common::send(common::client().get(format!("http://{}/n", gw.addr))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "body-1"));
    gw.stop(false).await;
}

#[test]
fn an_origin_the_system_roots_do_not_trust_is_a_502_and_an_error_line() {
    let pki = pki(&["127.0.0.1"]);
    let (addr, seen) = tls_origin(pki.server.clone());
    let (gw_port, admin_port) = (common::free_port(), common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("tierd.log");
    // No upstream.ca_file: the system's roots, which do not hold the test CA.
    let mut gw = common::Proc(
        common::tierd_command()
            .arg("serve")
            .env("TIERD__UPSTREAM__URL", format!("https://{addr}"))
            .env("TIERD__SERVER__LISTEN", format!("127.0.0.1:{gw_port}"))
            .env("TIERD__ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
            .stdout(std::fs::File::create(&log_path).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(common::port_open(gw_port), "gateway did not come up");
    let mut answers = Vec::new();
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /t HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
        answers.push(out);
    }
    common::sigterm(&mut gw);
    drop(gw);
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 502"), "{a}");
        assert!(a.contains("detail=origin-tls-error"), "{a}");
    }
    assert!(
        seen.failed.load(Ordering::SeqCst) >= 1,
        "the handshake was refused"
    );
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("TLS handshake with the origin failed"))
        .collect();
    // One line for three failures in a row (rate-limited), naming the keys to check.
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("upstream.ca_file"), "{log}");
}

/// L2 over TLS (`rediss://`) to a real redis-server whose certificate a private CA signed
/// (`tiers.l2.ca_file`): one gateway writes the entry, a second answers it from L2, and both
/// invalidation subscribers are connected, all through the TLS port only. Trusting the system's
/// roots instead, the handshake fails: L2 errors and misses, never a plaintext fallback. A CA
/// file with a `redis://` URL is a config error naming the key.
#[actix_web::test]
async fn l2_over_tls_trusts_tiers_l2_ca_file() {
    use common::redis::RedisServer;
    use tierd::clock::ManualClock;

    let pki = pki(&["localhost"]);
    let tls_port = common::free_port().to_string();
    let path = |p: &PathBuf| p.display().to_string();
    let (cert, key, ca) = (
        path(&pki.cert_file),
        path(&pki.key_file),
        path(&pki.ca_file),
    );
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let clock = Arc::new(ManualClock::new());
    let origin = common::Origin::start(clock.clone(), |req, n| {
        common::Reply::ok(format!("{} #{n}", req.path())).cc("max-age=600")
    })
    .await;
    let settings = |ca_file: &str| {
        let mut s = common::settings_for(origin.addr);
        common::with_l2(&mut s, format!("rediss://localhost:{tls_port}"));
        s.tiers.l2.ca_file = ca_file.into();
        s
    };
    let start = async |s: tierd::config::Settings| {
        s.validate().unwrap();
        Gateway::start(&s, clock.clone(), None).await.unwrap()
    };
    let a = start(settings(&ca)).await;
    let first = common::get_as(&a, "api.test", "/doc", &[]).await;
    assert_eq!(first.text(), "/doc #1");
    common::written_at(a.admin_addr, "l2", 1).await;
    assert_eq!(redis.records(), 1, "the record reached Redis over TLS");
    let b = start(settings(&ca)).await;
    let r = common::get_as(&b, "api.test", "/doc", &[]).await;
    assert_eq!((r.text().as_str(), r.detail().as_str()), ("/doc #1", "l2"));
    let subscribed = common::eventually(Duration::from_secs(10), async || {
        redis
            .cli(&["PUBSUB", "NUMSUB", "tierd:invalidate"])
            .is_some_and(|out| out.lines().last() == Some("2"))
    })
    .await;
    assert!(subscribed, "both subscribers connected over TLS");

    let c = start(settings("")).await;
    let r = common::get_as(&c, "api.test", "/other", &[]).await;
    assert_eq!(r.text(), "/other #2", "a miss, answered by the origin");
    let failed = common::eventually(Duration::from_secs(10), async || {
        common::metric_at(c.admin_addr, "tierd_tier_errors_total", &[("tier", "l2")]).await > 0.0
    })
    .await;
    assert!(failed, "the system's roots do not trust the private CA");
    assert_eq!(redis.records(), 1, "nothing written without verification");

    let mut plain = settings(&ca);
    plain.tiers.l2.url = format!("redis://default:hunter2@127.0.0.1:{}", redis.port);
    let e = plain.validate().unwrap_err().to_string();
    assert!(
        !e.contains("hunter2"),
        "the password stays out of the message: {e}"
    );
    assert!(
        e.contains("tiers.l2.ca_file") && e.contains("rediss://"),
        "{e}"
    );
    for gw in [a, b, c] {
        gw.stop(true).await;
    }
}
