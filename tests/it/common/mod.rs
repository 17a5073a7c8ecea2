//! Test fixtures: a programmable origin on loopback, a gateway started in-process on port 0
//! with a manual clock, an HTTP client, and raw-TCP helpers for malformed traffic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header::HeaderMap;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tierd::clock::{Clock, ManualClock};
use tierd::config::Settings;
use tierd::server::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod external;
pub mod redis;
pub mod scrape;

pub use external::free_port;
pub use scrape::{metric_at, metric_reaches, scrape};

/// What the test origin answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
    /// Hold the answer until this gate opens ([`Gate::open`]).
    pub gate: Option<Gate>,
    /// Send a `Date` from the shared clock (default), so ages are consistent under a manual clock.
    pub date: bool,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status: 200,
            headers: vec![],
            body: body.into(),
            delay: Duration::ZERO,
            gate: None,
            date: true,
        }
    }
    pub fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn cc(self, v: &str) -> Self {
        self.header("cache-control", v)
    }
    pub fn delay_ms(mut self, ms: u64) -> Self {
        self.delay = Duration::from_millis(ms);
        self
    }
    /// Holds the answer until `gate` opens: for tests that need a request to stay at the origin
    /// until something else has happened (instead of a delay that hopes it has).
    pub fn held_by(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.clone());
        self
    }
    pub fn no_date(mut self) -> Self {
        self.date = false;
        self
    }
}

/// A gate the test origin's answers can wait on; opened once, from the test.
#[derive(Clone, Debug)]
pub struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(tokio::sync::watch::channel(false).0))
    }
    pub fn open(&self) {
        self.0.send_replace(true);
    }
    pub async fn passed(&self) {
        let _ = self.0.subscribe().wait_for(|open| *open).await;
    }
}

type Handler = dyn Fn(&HttpRequest, u64) -> Reply + Send + Sync;

/// A programmable origin that counts requests and records their headers.
pub struct Origin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub in_flight: Arc<AtomicU64>,
    pub peak_in_flight: Arc<AtomicU64>,
    pub requests: Arc<Mutex<Vec<(String, String, HeaderMap)>>>,
    /// The body of each request, in the order of `requests`.
    pub bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Connections open right now (a guard in each connection's data counts it).
    open: Arc<AtomicU64>,
    handle: ServerHandle,
}

/// Counts one open origin connection for as long as the connection lives.
struct OpenConnection(Arc<AtomicU64>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct OriginState {
    handler: Arc<Handler>,
    clock: Arc<ManualClock>,
    hits: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<(String, String, HeaderMap)>>>,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn origin_handler(
    req: HttpRequest,
    body: web::Bytes,
    st: web::Data<OriginState>,
) -> HttpResponse {
    let n = st.hits.fetch_add(1, Ordering::SeqCst) + 1;
    let now_in = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.peak.fetch_max(now_in, Ordering::SeqCst);
    st.requests.lock().unwrap().push((
        req.method().to_string(),
        req.uri().to_string(),
        req.headers().clone(),
    ));
    st.bodies.lock().unwrap().push(body.to_vec());
    let reply = (st.handler)(&req, n);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if let Some(gate) = &reply.gate {
        gate.passed().await;
    }
    st.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut b = HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap());
    if reply.date {
        b.insert_header(("date", httpdate::fmt_http_date(st.clock.now())));
    }
    for (k, v) in &reply.headers {
        // actix drops a handler's own `Connection` header and decides keep-alive itself, so
        // `Connection: close` has to be asked of it: the connection then really closes and the
        // gateway keeps nothing pooled (a test that stops this origin relies on that).
        if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
            b.force_close();
        }
        b.append_header((k.as_str(), v.as_str()));
    }
    b.body(reply.body)
}

impl Origin {
    /// Starts an origin answering with `f(request, hit_number)`.
    pub async fn start(
        clock: Arc<ManualClock>,
        f: impl Fn(&HttpRequest, u64) -> Reply + Send + Sync + 'static,
    ) -> Origin {
        let hits = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(OriginState {
            handler: Arc::new(f),
            clock,
            hits: hits.clone(),
            in_flight: in_flight.clone(),
            peak: peak.clone(),
            requests: requests.clone(),
            bodies: bodies.clone(),
        });
        let open = Arc::new(AtomicU64::new(0));
        let counted = open.clone();
        let srv = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(origin_handler))
        })
        .on_connect(move |_, data| {
            counted.fetch_add(1, Ordering::SeqCst);
            data.insert(OpenConnection(counted.clone()));
        })
        .workers(1)
        .max_connections(100_000)
        .backlog(4096)
        .disable_signals()
        // Not an ephemeral port: once this origin stops, no other bind in the run gets its port,
        // so "the origin is down" stays true (an ephemeral port was handed to the next origin a
        // parallel test started, which then answered for the stopped one).
        .bind(("127.0.0.1", free_port()))
        .unwrap();
        let addr = srv.addrs()[0];
        let server = srv.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Origin {
            addr,
            hits,
            in_flight,
            peak_in_flight: peak,
            requests,
            bodies,
            open,
            handle,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Headers of the n-th request (1-based).
    pub fn request_headers(&self, n: usize) -> HeaderMap {
        self.requests.lock().unwrap()[n - 1].2.clone()
    }

    pub fn last_request(&self) -> (String, String, HeaderMap) {
        self.requests.lock().unwrap().last().cloned().unwrap()
    }

    /// Stops the origin and returns once it is really gone: its port refuses connections and
    /// no connection it accepted is still open. The server's stop resolves before either is
    /// true (its listening socket and its worker's connections close a moment later), and a
    /// gateway's pooled keep-alive connection was still answered in that gap.
    pub async fn stop(self) {
        let addr = self.addr;
        self.handle.stop(false).await;
        let open = self.open;
        let gone = eventually(Duration::from_secs(5), async || {
            open.load(Ordering::SeqCst) == 0 && tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await;
        assert!(
            gone,
            "the origin on {addr} still accepts connections or has {} open",
            open.load(Ordering::SeqCst)
        );
    }
}

/// Parses `[[rules]]` tables the way the config file does.
pub fn rules(toml: &str) -> Vec<tierd::policy::RuleConfig> {
    #[derive(serde::Deserialize)]
    struct File {
        rules: Vec<tierd::policy::RuleConfig>,
    }
    let f: File = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    f.rules
}

/// Settings for a gateway on loopback port 0 in front of `upstream`.
pub fn settings_for(upstream: SocketAddr) -> Settings {
    let mut s = Settings::default();
    s.server.listen = "127.0.0.1:0".into();
    s.server.workers = 2;
    s.admin.listen = "127.0.0.1:0".into();
    s.upstream.url = format!("http://{upstream}");
    s.upstream.timeout_ms = 3_000;
    s.upstream.connect_timeout_ms = 1_000;
    s
}

/// Turns L2 on, on the Redis at `url`. The command timeout is generous, so a loaded CI machine
/// does not turn a slow answer into a test failure; tests of timeouts set their own.
pub fn with_l2(s: &mut Settings, url: String) {
    s.tiers.l2.enabled = true;
    s.tiers.l2.url = url;
    s.tiers.l2.command_timeout_ms = 1_000;
}

/// Turns L3 on, in the DuckDB file at `path`.
pub fn with_l3(s: &mut Settings, path: &std::path::Path) {
    s.tiers.l3.enabled = true;
    s.tiers.l3.path = path.display().to_string();
}

/// A gateway in front of an origin, sharing one manual clock.
pub struct Harness {
    pub clock: Arc<ManualClock>,
    pub origin: Origin,
    pub gw: Gateway,
    pub client: awc::Client,
}

impl Harness {
    pub async fn new(f: impl Fn(&HttpRequest, u64) -> Reply + Send + Sync + 'static) -> Harness {
        Self::with(f, |_| {}).await
    }

    pub async fn with(
        f: impl Fn(&HttpRequest, u64) -> Reply + Send + Sync + 'static,
        tweak: impl FnOnce(&mut Settings),
    ) -> Harness {
        let clock = Arc::new(ManualClock::new());
        let origin = Origin::start(clock.clone(), f).await;
        let mut s = settings_for(origin.addr);
        tweak(&mut s);
        let gw = Gateway::start(&s, clock.clone(), None).await.unwrap();
        Harness {
            clock,
            origin,
            gw,
            client: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.admin_addr, path)
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut r = self.client.get(self.url(path));
        for (k, v) in headers {
            r = r.append_header((*k, *v));
        }
        self.send(r).await
    }

    /// GETs `path` until the body is `body` (an effect of a background task), for up to 5 s.
    /// GETs `path` until the body is `body` (up to 5 s); the response that had it.
    pub async fn get_until(&self, path: &str, body: &str) -> Option<Resp> {
        let mut found = None;
        eventually(Duration::from_secs(5), async || {
            let r = self.get(path).await;
            let hit = r.text() == body;
            if hit {
                found = Some(r);
            }
            hit
        })
        .await;
        found
    }

    pub async fn send(&self, r: awc::ClientRequest) -> Resp {
        send(r).await
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    pub async fn stop(self) {
        self.gw.stop(false).await;
        self.origin.stop().await;
    }
}

/// A client with room for many concurrent connections and a generous timeout.
pub fn client() -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(1000))
        .timeout(Duration::from_secs(15))
        .disable_redirects()
        .finish()
}

/// A received response, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
    /// The `tierd` member of Cache-Status; panics when there is none (a test that expects none
    /// checks `header("cache-status")`).
    pub fn cache_status(&self) -> String {
        self.headers
            .get_all("cache-status")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .flat_map(|v| {
                v.split(',')
                    .map(|m| m.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .find(|m| m.starts_with("tierd"))
            .unwrap_or_else(|| panic!("no tierd Cache-Status member: {:?}", self.headers))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// A parameter of the tierd Cache-Status member (`ttl`, `detail`, `fwd`, ...).
    pub fn cache_param(&self, name: &str) -> Option<String> {
        self.cache_status().split(';').map(str::trim).find_map(|m| {
            m.strip_prefix(name)
                .and_then(|v| v.strip_prefix('='))
                .map(str::to_owned)
        })
    }
    /// The `detail=` of the tierd Cache-Status member (the tier that answered).
    pub fn detail(&self) -> String {
        self.cache_param("detail").unwrap_or_default()
    }
    /// The `ttl=` of the tierd Cache-Status member.
    pub fn ttl(&self) -> Option<i64> {
        self.cache_param("ttl").and_then(|v| v.parse().ok())
    }
    pub fn age(&self) -> Option<u64> {
        self.header("age").and_then(|a| a.parse().ok())
    }
}

/// A GET to `gw` under the public host name `host`, with extra headers.
pub async fn get_as(gw: &Gateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut r = client()
        .get(format!("http://{}{}", gw.addr, path))
        .insert_header(("host", host));
    for h in headers {
        r = r.insert_header(*h);
    }
    send(r).await
}

/// A JSON POST to an admin listener, with the bearer `token` when given.
pub async fn admin_post_at(admin: SocketAddr, path: &str, token: Option<&str>, body: &str) -> Resp {
    let mut req = client()
        .post(format!("http://{admin}{path}"))
        .insert_header(("content-type", "application/json"));
    if let Some(t) = token {
        req = req.insert_header(("authorization", format!("Bearer {t}")));
    }
    send_body(req, body.to_owned()).await
}

pub async fn send_body(req: awc::ClientRequest, body: String) -> Resp {
    let mut res = req.send_body(body).await.expect("request failed");
    let b = res.body().limit(1 << 20).await.expect("body");
    Resp {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: b.to_vec(),
    }
}

pub async fn send(r: awc::ClientRequest) -> Resp {
    let mut res = r.send().await.expect("request failed");
    let body = res
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .expect("body failed");
    Resp {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: body.to_vec(),
    }
}

/// Sends raw bytes and reads the whole answer (until the server closes or `wait` passes).
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Closes `s` with a reset (`SO_LINGER` 0), the way a client that crashes or gives up does. A
/// plain drop only half-closes, and actix keeps serving a half-closed request; after a reset it
/// drops the request's future, so whatever still runs was not tied to the client.
pub fn reset(s: tokio::net::TcpStream) {
    s.set_zero_linger().expect("SO_LINGER");
    drop(s);
}

/// A TCP origin that answers each connection with `script` (raw bytes), then behaves per `then`.
pub enum Then {
    Close,
    Hang,
}

pub async fn raw_origin(script: Vec<u8>, then: Then) -> (SocketAddr, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let then = Arc::new(then);
    actix_web::rt::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            let then = then.clone();
            actix_web::rt::spawn(async move {
                let mut buf = [0u8; 65536];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(&script).await;
                match *then {
                    Then::Close => {
                        let _ = sock.shutdown().await;
                    }
                    Then::Hang => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                }
            });
        }
    });
    (addr, count)
}

/// Polls `cond` until it holds or `within` passes: for effects that happen in background tasks
/// or other processes. The one polling loop of the suite; `within` is a bound on a failure, not
/// a wait a passing test takes.
pub async fn eventually(within: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond().await
}

/// A `tierd` child process, killed (and reaped) when dropped, so a failing test leaves no
/// process behind.
pub struct Proc(pub std::process::Child);

impl std::ops::Deref for Proc {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The `tierd` binary as a command, run in the temporary directory with no `TIERD__*` setting
/// inherited from the test's own environment: every process test starts from here.
pub fn tierd_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tierd"));
    c.current_dir(std::env::temp_dir());
    for (k, _) in std::env::vars() {
        if k.starts_with("TIERD__") {
            c.env_remove(k);
        }
    }
    c
}

/// Starts the `tierd` binary on `port` in front of `origin` with extra `TIERD__*` settings.
pub fn spawn_tierd(port: u16, origin: &Origin, env: &[(&str, &str)]) -> Proc {
    let mut cmd = tierd_command();
    cmd.arg("serve")
        .env("TIERD__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("TIERD__ADMIN__LISTEN", "127.0.0.1:0")
        .env("TIERD__UPSTREAM__URL", format!("http://{}", origin.addr))
        .env("TIERD__LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("tierd binary"))
}

/// Waits until something accepts connections on `port`.
pub async fn wait_up(port: u16) {
    let up = eventually(Duration::from_secs(15), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "tierd did not start on {port}");
}

/// Waits (blocking, for synchronous tests) until something accepts connections on `port`.
pub fn port_open(port: u16) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Sends SIGTERM and waits for the exit.
pub fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    signal(child, "-TERM");
    child.wait().unwrap()
}

/// Sends a signal (`"-HUP"`, `"-TERM"`) to `child`.
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Waits until `n` writes have been applied to `tier` (writes happen off the request path).
pub async fn written_at(admin: SocketAddr, tier: &str, n: u64) {
    let labels = [("tier", tier), ("outcome", "written")];
    let applied = eventually(Duration::from_secs(10), async || {
        metric_at(admin, "tierd_tier_writes_total", &labels).await >= n as f64
    })
    .await;
    assert!(applied, "{tier}: fewer than {n} writes applied");
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResp {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResp {
    /// Parses `HTTP/1.1 <status> ...\r\n<headers>\r\n\r\n<body>`.
    pub fn parse(text: &str) -> RawResp {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        RawResp {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// One GET over a new connection from the loopback address `from` (127.0.0.2, 127.0.0.3...:
/// distinct clients as the gateway sees them).
pub async fn get_from(
    from: [u8; 4],
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> RawResp {
    send_from(from, addr, "GET", path, headers).await
}

/// One bodiless request over a new connection from the loopback address `from`.
pub async fn send_from(
    from: [u8; 4],
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> RawResp {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response within 10 s")
        .unwrap();
    RawResp::parse(&String::from_utf8_lossy(&out))
}
