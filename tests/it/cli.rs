//! The `tierd` binary: configuration from the environment alone, and startup failures.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common;
use crate::common::external;
use crate::common::free_port;

fn bin() -> Command {
    common::tierd_command()
}

#[test]
fn unknown_keys_and_bad_values_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nlissten = \"0.0.0.0:1\"\n", "lissten"),
        ("[upstream]\nurl = \"ftp://x\"\n", "upstream.url"),
        ("[upstream]\ntimeout_ms = -5\n", "timeout_ms"),
        (
            "[upstream]\nurl = \"https://127.0.0.1:1\"\nca_file = \"/nonexistent/ca.pem\"\n",
            "upstream.ca_file: cannot read /nonexistent/ca.pem",
        ),
        (
            "[upstream]\nurl = \"https://127.0.0.1:1\"\ntls_server_name = \"bad name!\"\n",
            "upstream.tls_server_name: 'bad name!' is not a DNS name",
        ),
        (
            "[compression]\nencoding = \"gzip\"\nlevel = 10\n",
            "compression.level: 10 is out of range for gzip; use 1 to 9",
        ),
        (
            "[compression]\ntypes = [\"json\"]\n",
            "compression.types[0]: 'json' is not a media type",
        ),
        ("[compression]\nencoding = \"zstd\"\n", "zstd"),
        (
            "[upstream]\nurl = \"http://127.0.0.1:1\"\nca_file = \"/etc/hosts\"\n",
            "upstream.ca_file: set for an http:// upstream.url",
        ),
        ("[server]\nlisten = \"nope\"\n", "server.listen"),
        ("[tiers.l1]\nmax_bytes = 10\n", "tiers.l1.max_bytes"),
        ("[cache\n", "TOML"),
        (
            "[[rules]]\nname = \"a\"\npath = \"/a\"\nttl_secs = 5\n",
            "unknown key `ttl_secs`",
        ),
        (
            "[[rules]]\nname = \"t\"\npath = \"/a/{id\"\n",
            "rules[0] (\"t\"): path:",
        ),
        (
            "[[rules]]\nname = \"p\"\npath = \"/a\"\nttl_by_field = { pointer = \"status\", values = { a = 1 } }\n",
            "rules[0] (\"p\"): ttl_by_field.pointer",
        ),
        (
            "[[rules]]\npath = \"/a\"\n[[rules]]\nname = \"neg\"\npath = \"/b\"\nttl_seconds = -1\n",
            "rules[1] (\"neg\"): ttl_seconds = -1",
        ),
        (
            "[[rules]]\npath = \"/b\"\nttl_by_field = { pointr = \"/s\" }\n",
            "rules[0].ttl_by_field",
        ),
        (
            "[rate_limit]\nrequests_per_second = 0\n",
            "rate_limit.requests_per_second = 0",
        ),
        (
            "[rate_limit]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
            "rate_limit.trusted_proxies[1]",
        ),
        ("[rate_limit.origin]\nburst = 0\n", "rate_limit.origin.burst"),
        ("[rate_limit.origin]\nper = \"planet\"\n", "planet"),
        ("[server]\nmax_headers = 200\n", "server.max_headers"),
        (
            "[[rules]]\nname = \"q\"\npath = \"/a\"\nrate_limit = { requests_per_second = -1, burst = 2 }\n",
            "rules[0] (\"q\"): rate_limit.requests_per_second",
        ),
        (
            "[[rules]]\npath = \"/a\"\nrate_limit = { requests_per_second = 1 }\n",
            "burst",
        ),
        (
            "[server]\nlisten = \"0.0.0.0:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n",
            "admin.listen",
        ),
    ];
    for (toml, needle) in cases {
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, toml).unwrap();
        let out = bin().arg("check-config").arg(&f).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {err}");
        assert!(
            err.contains(needle) || err.to_lowercase().contains(&needle.to_lowercase()),
            "{toml}: message should name {needle}: {err}"
        );
    }
    let out = bin()
        .arg("serve")
        .env("TIERD__SERVER__NOPE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn the_shipped_config_is_valid() {
    let f = external::repo().join("config/tierd.toml");
    let out = bin().arg("check-config").arg(f).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("warning"),
        "the shipped config has no warning: {err}"
    );
}

#[test]
fn check_config_warns_about_contradictory_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.toml");
    std::fs::write(
        &f,
        "[upstream]\ntimeout_ms = 3000\n[cache]\ncoalesce_timeout_ms = 3000\n",
    )
    .unwrap();
    let out = bin().arg("check-config").arg(&f).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "valid, with a warning: {err}");
    assert!(
        err.contains(
            "warning: cache.coalesce_timeout_ms (3000) is not below upstream.timeout_ms (3000)"
        ),
        "{err}"
    );
    std::fs::write(&f, "[upstream]\ntimeout_ms = 10000\n").unwrap();
    let out = bin().arg("check-config").arg(&f).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).is_empty(),
        "the defaults agree"
    );
}

#[test]
fn help_lists_the_commands() {
    let out = bin().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "serve",
        "check-config",
        "demo-origin",
        "config",
        "healthcheck",
    ] {
        assert!(text.contains(cmd), "{text}");
    }
}

/// `check-config` finds its file like every other subcommand: an argument, `--config`, or
/// `TIERD_CONFIG`; without any it says how to give one.
#[test]
fn check_config_takes_the_file_as_every_subcommand_does() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[upstream]\ntimeout_ms = \"3s\"\n").unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[upstream]\ntimeout_ms = \"3 fortnights\"\n").unwrap();
    let run = |args: &[&str], env: Option<&std::path::Path>| {
        let mut c = bin();
        c.args(args).env_remove("TIERD_CONFIG");
        if let Some(f) = env {
            c.env("TIERD_CONFIG", f);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let g = good.to_str().unwrap();
    let b = bad.to_str().unwrap();
    assert_eq!(run(&["check-config", g], None).0, Some(0));
    assert_eq!(run(&["check-config", "--config", g], None).0, Some(0));
    assert_eq!(run(&["--config", g, "check-config"], None).0, Some(0));
    assert_eq!(run(&["check-config"], Some(&good)).0, Some(0));
    let (code, err) = run(&["check-config", "--config", b], None);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("upstream.timeout_ms: '3 fortnights' is not a duration"),
        "{err}"
    );
    let (code, err) = run(&["check-config"], Some(&bad));
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["check-config"], None);
    assert_eq!(code, Some(2));
    assert!(err.contains("--config FILE"), "{err}");
}

/// `config show` prints the effective config (file < environment) with the token and URL
/// passwords hidden, and what it prints is a config file that reads back the same.
#[test]
fn config_show_prints_the_effective_config_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.toml");
    std::fs::write(
        &f,
        "[admin]\ntoken = \"hunter2\"\n[tiers.l2]\nurl = \"redis://:pa55@redis.test:6379\"\n[tiers.l1]\nmax_bytes = \"64MiB\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["config", "show", "--config"])
        .arg(&f)
        .env_remove("TIERD_CONFIG")
        .env("TIERD__UPSTREAM__TIMEOUT_MS", "2s")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !shown.contains("hunter2") && !shown.contains("pa55"),
        "{shown}"
    );
    assert!(
        shown.contains("timeout_ms = 2000"),
        "the environment wins: {shown}"
    );
    assert!(shown.contains("max_bytes = 67108864"), "{shown}");
    assert!(
        shown.contains("[warming]") && shown.contains("[journal]"),
        "defaults too: {shown}"
    );
    let again = dir.path().join("shown.toml");
    std::fs::write(&again, &shown).unwrap();
    let out = bin().arg("check-config").arg(&again).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tierd healthcheck` exits 0 while the node answers on its admin listener, 1 once it is gone.
#[test]
fn healthcheck_follows_the_node() {
    // The healthcheck reads admin.listen from its own config; 0.0.0.0 is asked on loopback.
    let check = |admin: u16| {
        bin()
            .args(["healthcheck", "--timeout", "2"])
            .env_remove("TIERD_CONFIG")
            .env("TIERD__ADMIN__LISTEN", format!("0.0.0.0:{admin}"))
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let out = check(free_port());
    assert_eq!(out.status.code(), Some(1), "nothing listens there");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not ready"));
    let mut g = EnvGateway::start(&[]);
    assert!(g.up, "listeners did not come up");
    let out = check(g.admin_port);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    g.terminate();
    let out = check(g.admin_port);
    assert_eq!(out.status.code(), Some(1), "stopped");
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The demo origin and a gateway in front of it, configured only by the environment (`env`
/// added to the listen addresses and the upstream URL). Both are killed when dropped.
struct EnvGateway {
    gw_port: u16,
    admin_port: u16,
    /// The gateway, then the origin: dropped (killed) in that order.
    gw: common::Proc,
    _origin: common::Proc,
    up: bool,
}

impl EnvGateway {
    fn start(env: &[(&str, &str)]) -> EnvGateway {
        Self::start_logging(env, Stdio::null())
    }

    /// As [`start`](Self::start), with the gateway's standard output (its log) sent to `log`.
    fn start_logging(env: &[(&str, &str)], log: Stdio) -> EnvGateway {
        let (origin_port, gw_port, admin_port) = (free_port(), free_port(), free_port());
        let origin = bin()
            .args([
                "demo-origin",
                "--listen",
                &format!("127.0.0.1:{origin_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut gw = bin();
        gw.arg("serve")
            .env(
                "TIERD__UPSTREAM__URL",
                format!("http://127.0.0.1:{origin_port}"),
            )
            .env("TIERD__SERVER__LISTEN", format!("127.0.0.1:{gw_port}"))
            .env("TIERD__ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
            .stdout(log)
            .stderr(Stdio::null());
        for (k, v) in env {
            gw.env(k, v);
        }
        let gw = gw.spawn().unwrap();
        let up = common::port_open(origin_port)
            && common::port_open(gw_port)
            && common::port_open(admin_port);
        EnvGateway {
            gw_port,
            admin_port,
            gw: common::Proc(gw),
            _origin: common::Proc(origin),
            up,
        }
    }
}

impl EnvGateway {
    /// Stops the gateway with SIGTERM (a graceful stop: its log is flushed).
    fn terminate(&mut self) {
        common::sigterm(&mut self.gw);
    }
}

#[test]
fn environment_alone_configures_a_working_gateway() {
    let g = EnvGateway::start(&[]);
    let (ok, gw_port, admin_port) = (g.up, g.gw_port, g.admin_port);
    let first = if ok {
        http_get(gw_port, "/api/assessments/7")
    } else {
        String::new()
    };
    let second = if ok {
        http_get(gw_port, "/api/assessments/7")
    } else {
        String::new()
    };
    let metrics = if ok {
        http_get(admin_port, "/metrics")
    } else {
        String::new()
    };
    drop(g);
    assert!(ok, "listeners did not come up");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        first.contains("cache-status: tierd; fwd=uri-miss; fwd-status=200; stored"),
        "{first}"
    );
    assert!(second.contains("cache-status: tierd; hit;"), "{second}");
    assert!(
        metrics.contains(
            "tierd_requests_total{cache_status=\"hit\",method=\"GET\",route=\"other\",status_class=\"2xx\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn json_logs_carry_the_request_span_and_access_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("tierd.log");
    let mut g = EnvGateway::start_logging(
        &[
            // The demo's report takes about a second: a timeout, logged at WARN inside the span.
            ("TIERD__UPSTREAM__TIMEOUT_MS", "200"),
            ("TIERD__LOG__FORMAT", "json"),
            ("TIERD__LOG__LEVEL", "info,tierd::access=debug"),
        ],
        Stdio::from(std::fs::File::create(&log_path).unwrap()),
    );
    let (ok, gw_port) = (g.up, g.gw_port);
    if ok {
        http_get(gw_port, "/api/assessments/7");
        http_get(gw_port, "/api/assessments/7");
        http_get(gw_port, "/api/metrics/report");
    }
    g.terminate();
    drop(g);
    assert!(ok, "listeners did not come up");
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request")
        .collect();
    assert_eq!(access.len(), 3, "{text}");
    let hit = access[1];
    assert_eq!(hit["level"], "DEBUG");
    assert_eq!(hit["fields"]["status"], 200);
    assert_eq!(hit["fields"]["cache_status"], "hit");
    let span = &hit["span"];
    assert_eq!(span["name"], "request", "{hit}");
    assert_eq!(span["method"], "GET");
    assert_eq!(span["path"], "/api/assessments/7");
    assert_eq!(hit["fields"]["route"], "other");
    assert_eq!(hit["fields"]["tier"], "l1");
    assert_eq!(access[2]["fields"]["status"], 504, "{}", access[2]);
    let warn = lines
        .iter()
        .find(|l| l["level"] == "WARN" && l["fields"]["message"] == "origin request failed")
        .unwrap_or_else(|| panic!("no WARN for the origin timeout:\n{text}"));
    assert_eq!(warn["fields"]["kind"], "timeout");
    assert_eq!(warn["span"]["name"], "request", "{warn}");
    assert_eq!(warn["span"]["path"], "/api/metrics/report");
}

#[test]
fn rate_limits_are_configured_from_the_environment() {
    let g = EnvGateway::start(&[
        ("TIERD__RATE_LIMIT__ENABLED", "true"),
        ("TIERD__RATE_LIMIT__REQUESTS_PER_SECOND", "0.01"),
        ("TIERD__RATE_LIMIT__BURST", "2"),
        ("TIERD__RATE_LIMIT__TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1"),
    ]);
    let (ok, gw_port) = (g.up, g.gw_port);
    let get_as = |client: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /api/assessments/1 HTTP/1.1\r\nhost: localhost\r\nx-forwarded-for: {client}\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let started = std::time::Instant::now();
    let answers: Vec<String> = if ok {
        [
            "198.51.100.1",
            "198.51.100.1",
            "198.51.100.1",
            "198.51.100.2",
        ]
        .iter()
        .map(|c| get_as(c))
        .collect()
    } else {
        Vec::new()
    };
    drop(g);
    assert!(ok, "listeners did not come up");
    let status: Vec<&str> = answers.iter().map(|a| &a[9..12]).collect();
    assert_eq!(status, ["200", "200", "429", "200"], "{answers:?}");
    // One request every 100 s, less the time since the burst was spent (the real clock).
    let retry: u64 = answers[2]
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no retry-after: {}", answers[2]));
    let spent = started.elapsed().as_secs();
    assert!(
        (100 - spent - 1..=100).contains(&retry),
        "retry-after {retry} after {spent} s"
    );
}

/// The book's library page shows `examples/embed.rs` whole: its first code block is the
/// file as it is compiled (and served by `embed::the_embed_example_serves_...`).
#[test]
fn the_readme_library_example_is_the_compiled_example() {
    let root = external::repo();
    let example = std::fs::read_to_string(root.join("examples/embed.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("docs/src/guide/library.md")).unwrap();
    let section = &readme[readme.find("# As a library").expect("library section")..];
    let block = &section[section.find("```rust").expect("code block")..];
    let block = &block[block.find('\n').unwrap() + 1..];
    let block = &block[..block.find("```").unwrap()];
    assert_eq!(
        block.lines().collect::<Vec<_>>(),
        example.lines().collect::<Vec<_>>(),
        "the book's library example (docs/src/guide/library.md) and examples/embed.rs differ"
    );
}

/// A malformed request head is the client's error: answered 400 by the HTTP/1 parser, and logged
/// at most at DEBUG. (actix-http logged each one at ERROR, so any client could fill the log.)
#[test]
fn malformed_request_heads_are_not_logged_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("tierd.log");
    let mut g = EnvGateway::start_logging(
        &[("TIERD__LOG__FORMAT", "json")],
        Stdio::from(std::fs::File::create(&log_path).unwrap()),
    );
    let (ok, gw_port) = (g.up, g.gw_port);
    let mut answers = Vec::new();
    if ok {
        for bad in [
            "GET /x?a=\"q\" HTTP/1.1\r\nhost: a\r\n\r\n",
            "GET /x HTTP/1.1\r\nhost: a\r\nbad header\r\n\r\n",
            "GET\x01 /x HTTP/1.1\r\nhost: a\r\n\r\n",
        ] {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", gw_port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(bad.as_bytes()).unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            answers.push(out);
        }
        answers.push(http_get(gw_port, "/api/assessments/1"));
    }
    g.terminate();
    drop(g);
    assert!(ok, "listeners did not come up");
    for a in &answers[..3] {
        assert!(a.starts_with("HTTP/1.1 400"), "{a}");
    }
    assert!(answers[3].starts_with("HTTP/1.1 200"), "{}", answers[3]);
    let text = std::fs::read_to_string(&log_path).unwrap();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("\"ERROR\"")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
