//! The `tierd` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tierd::config::{LogFormat, Settings};

/// How long `report` and `sql` wait for a running node's answer.
const ADMIN_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The config file `tierd` with no subcommand uses when it exists (the quick start).
const QUICKSTART_CONFIG: &str = "config/tierd.toml";

#[derive(Parser)]
#[command(
    name = "tierd",
    version,
    about = "An observability-first HTTP cache: an RFC 9111 caching gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML), for every subcommand. Without a subcommand, defaults to
    /// config/tierd.toml when present.
    #[arg(long, short, global = true, env = "TIERD_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (built-in defaults < --config file < TIERD__* environment).
    Serve,
    /// Validate a config file (and the environment) and exit: 0 if valid, 2 if not.
    CheckConfig {
        /// The file to check (default: --config / TIERD_CONFIG).
        file: Option<PathBuf>,
    },
    /// The effective configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Exit 0 if the node answers ready on its admin listener, 1 if not: a container's
    /// HEALTHCHECK (no curl in the image needed).
    Healthcheck {
        /// The admin address to ask (default: the config's admin.listen; an unspecified address
        /// such as 0.0.0.0 is asked on loopback).
        #[arg(long)]
        admin: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 2)]
        timeout: u64,
    },
    /// Run only the built-in demo origin.
    DemoOrigin {
        #[arg(long, default_value = "127.0.0.1:9080")]
        listen: String,
    },
    /// Print the journal's analytics summary: from a running node's admin API (--admin), or
    /// from the journal file when no node holds it.
    Report {
        /// 1h, 24h or 7d.
        #[arg(long, default_value = "24h")]
        window: String,
        /// Print the summary as JSON (what /_tierd/analytics/summary answers).
        #[arg(long)]
        json: bool,
        /// A running node's admin address, e.g. http://127.0.0.1:9090.
        #[arg(long)]
        admin: Option<String>,
        /// The admin token (default: TIERD_ADMIN_TOKEN).
        #[arg(long, env = "TIERD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The journal file (default: the config's journal.path).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Run read-only SQL over the journal (view `journal`; --schema lists its columns) and print
    /// the result as a table: from the file when no node holds it, or through a running node's
    /// admin API (--admin).
    Sql {
        /// The query, e.g. "SELECT route, count(*) FROM journal GROUP BY 1".
        #[arg(required_unless_present = "schema")]
        query: Option<String>,
        /// Print CSV instead of a table.
        #[arg(long)]
        csv: bool,
        /// Print the journal table's columns and exit.
        #[arg(long)]
        schema: bool,
        /// Rows printed at most.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
        /// A running node's admin address (its journal is locked while it runs), e.g.
        /// http://127.0.0.1:9090; needs the admin token.
        #[arg(long)]
        admin: Option<String>,
        /// The admin token (default: TIERD_ADMIN_TOKEN).
        #[arg(long, env = "TIERD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The journal file (default: the config's journal.path).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Import nginx/Apache access logs into the journal file (stop the node first), so that
    /// analytics and warming have a history. Bad lines are skipped and counted; importing a
    /// file again adds only the lines not imported yet.
    ImportLog {
        /// combined (Apache/nginx combined) or nginx-json (one JSON object per line).
        #[arg(long, default_value = "combined")]
        format: String,
        /// The host the logged requests were made to (a JSON line's host wins).
        #[arg(long)]
        host: String,
        /// The log files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write the journal's rows since DATE as Parquet files partitioned by day
    /// (DIR/date=YYYY-MM-DD/*.parquet), for fleet-wide analytics in any Parquet reader.
    ExportJournal {
        /// The first day exported, YYYY-MM-DD (UTC).
        #[arg(long)]
        since: String,
        /// The directory written (created if missing).
        dir: PathBuf,
        /// The journal file (default: the config's journal.path).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (built-in defaults < --config file < TIERD__*
    /// environment) as TOML, secrets redacted.
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => {
            let Some(file) = file.or(cli.config) else {
                eprintln!("tierd: check-config needs a file: tierd check-config FILE, or --config FILE, or TIERD_CONFIG=FILE");
                return ExitCode::from(2);
            };
            match Settings::load(Some(&file)) {
                Ok(settings) => {
                    for w in settings.warnings() {
                        eprintln!("tierd: warning: {w}");
                    }
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tierd: invalid configuration: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Config {
            command: ConfigCommand::Show,
        }) => match Settings::load(cli.config.as_deref()).and_then(|s| s.redacted_toml()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tierd: invalid configuration: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Healthcheck { admin, timeout }) => {
            healthcheck(cli.config.as_deref(), admin, timeout)
        }
        Some(Command::DemoOrigin { listen }) => {
            tierd::logging::init(LogFormat::Text, "info");
            match run_demo(&listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tierd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Serve) => serve(cli.config.as_deref()),
        Some(Command::Report {
            window,
            json,
            admin,
            token,
            file,
        }) => exit(report(
            cli.config.as_deref(),
            &window,
            json,
            admin,
            token,
            file,
        )),
        Some(Command::Sql {
            query,
            csv,
            schema,
            limit,
            admin,
            token,
            file,
        }) => exit(sql(
            cli.config.as_deref(),
            query,
            csv,
            schema,
            limit,
            admin,
            token,
            file,
        )),
        Some(Command::ImportLog {
            format,
            host,
            files,
        }) => exit(import_log(cli.config.as_deref(), &format, &host, &files)),
        Some(Command::ExportJournal { since, dir, file }) => {
            exit(export(cli.config.as_deref(), &since, &dir, file))
        }
        None => {
            let quickstart = Path::new(QUICKSTART_CONFIG);
            let file = cli
                .config
                .as_deref()
                .or(quickstart.is_file().then_some(quickstart));
            serve(file)
        }
    }
}

fn serve(file: Option<&Path>) -> ExitCode {
    let settings = match Settings::load(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tierd: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    tierd::logging::init(settings.log.format, &settings.log.level);
    for w in settings.warnings() {
        tracing::warn!(warning = %w, "configuration");
    }
    match run(settings, file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "tierd stopped");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings, file: Option<&Path>) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let gw = tierd::server::Gateway::start(
            &settings,
            Arc::new(tierd::clock::SystemClock),
            file.map(Path::to_path_buf),
        )
        .await?;
        gw.handle_signals()?;
        tracing::info!(
            gateway = %gw.addr,
            admin = %gw.admin_addr,
            upstream = %settings.upstream.url,
            demo_origin = ?gw.demo_addr,
            config = ?file,
            "tierd listening"
        );
        gw.wait().await?;
        tracing::info!("tierd stopped");
        Ok(())
    })
}

fn run_demo(listen: &str) -> anyhow::Result<()> {
    let listen = listen.to_owned();
    actix_web::rt::System::new().block_on(async move {
        let state = actix_web::web::Data::new(tierd::demo::DemoState::default());
        let srv = actix_web::HttpServer::new(move || {
            actix_web::App::new().configure(tierd::demo::configure(state.clone()))
        })
        .bind(&listen)?;
        tracing::info!(listen = %listen, "demo origin listening");
        srv.run().await?;
        Ok(())
    })
}

/// Exit code 0, or the error on stderr and 1.
fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tierd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The journal file: `--file`, else the config's `journal.path` (its default beside L3).
fn journal_file(config: Option<&Path>, file: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(f) = file {
        return Ok(f);
    }
    let file = config.or(Some(Path::new(QUICKSTART_CONFIG)).filter(|p| p.is_file()));
    let settings =
        Settings::load(file).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    Ok(settings.journal_path())
}

fn report(
    config: Option<&Path>,
    window: &str,
    json: bool,
    admin: Option<String>,
    token: Option<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<()> {
    use tierd::journal::{Summary, Window};
    let w = Window::parse(window)
        .ok_or_else(|| anyhow::anyhow!("--window '{window}' is not one of 1h, 24h, 7d"))?;
    let summary: Summary = match admin {
        Some(base) => {
            let path = format!("/_tierd/analytics/summary?window={}", w.as_str());
            let body = admin_call(&base, &path, token, None, ADMIN_CALL_TIMEOUT)?;
            serde_json::from_slice(&body)
                .map_err(|e| anyhow::anyhow!("{base}{path}: not a summary: {e}"))?
        }
        None => {
            let path = journal_file(config, file)?;
            let conn = tierd::journal::open_read_only(&path)?;
            tierd::journal::summary_at(&conn, w, std::time::SystemTime::now())?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", tierd::journal::report::render(&summary));
    }
    Ok(())
}

/// `tierd healthcheck`: GET /readyz on the admin listener, within `timeout` seconds.
fn healthcheck(config: Option<&Path>, admin: Option<String>, timeout: u64) -> ExitCode {
    let addr = match admin {
        Some(a) => a,
        None => match Settings::load(config) {
            Ok(s) => match s.admin.listen.parse::<std::net::SocketAddr>() {
                Ok(mut a) => {
                    if a.ip().is_unspecified() {
                        a.set_ip(if a.is_ipv4() {
                            std::net::Ipv4Addr::LOCALHOST.into()
                        } else {
                            std::net::Ipv6Addr::LOCALHOST.into()
                        });
                    }
                    a.to_string()
                }
                Err(_) => s.admin.listen,
            },
            Err(e) => {
                eprintln!("tierd: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let base = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let wait = std::time::Duration::from_secs(timeout.max(1));
    match admin_call(&base, "/readyz", None, None, wait) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tierd: not ready: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A GET (or, with a body, a JSON POST) to a running node's admin API, answered within
/// `timeout`; the body of a 2xx.
fn admin_call(
    base: &str,
    path: &str,
    token: Option<String>,
    json: Option<serde_json::Value>,
    timeout: std::time::Duration,
) -> anyhow::Result<Vec<u8>> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    actix_web::rt::System::new().block_on(async move {
        let client = awc::Client::builder().timeout(timeout).finish();
        let mut req = match json {
            Some(_) => client.post(&url),
            None => client.get(&url),
        };
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            req = req.insert_header(("authorization", format!("Bearer {t}")));
        }
        let sent = match json {
            Some(v) => req.send_json(&v).await,
            None => req.send().await,
        };
        let mut res = sent.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        let body = res
            .body()
            .limit(64 << 20)
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        if !res.status().is_success() {
            anyhow::bail!("{url}: {} {}", res.status(), String::from_utf8_lossy(&body));
        }
        Ok(body.to_vec())
    })
}

#[allow(clippy::too_many_arguments)]
fn sql(
    config: Option<&Path>,
    query: Option<String>,
    csv: bool,
    schema: bool,
    limit: usize,
    admin: Option<String>,
    token: Option<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<()> {
    if schema {
        print!("{}", tierd::journal::SCHEMA_DOC);
        return Ok(());
    }
    let query = query.unwrap_or_default();
    let out = match admin {
        Some(base) => {
            let body = admin_call(
                &base,
                "/_tierd/analytics/sql",
                token,
                Some(serde_json::json!({"sql": query, "limit": limit})),
                ADMIN_CALL_TIMEOUT,
            )?;
            #[derive(serde::Deserialize)]
            struct Answer {
                columns: Vec<String>,
                rows: Vec<Vec<String>>,
                truncated: bool,
            }
            let a: Answer = serde_json::from_slice(&body)
                .map_err(|e| anyhow::anyhow!("{base}: not a query result: {e}"))?;
            if a.truncated {
                eprintln!("(the node answered the first {limit} rows; raise --limit for more)");
            }
            tierd::journal::TableOut {
                columns: a.columns,
                rows: a.rows,
            }
        }
        None => {
            let path = journal_file(config, file)?;
            let conn = tierd::journal::open_read_only(&path)?;
            tierd::journal::query_table(&conn, &query, limit)?
        }
    };
    if csv {
        print!("{}", tierd::journal::report::csv(&out.columns, &out.rows));
    } else {
        print!("{}", tierd::journal::report::table(&out.columns, &out.rows));
        eprintln!("({} rows)", out.rows.len());
    }
    Ok(())
}

fn export(
    config: Option<&Path>,
    since: &str,
    dir: &Path,
    file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let valid = since.len() == 10
        && since.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !valid {
        anyhow::bail!("--since '{since}' is not a date; use YYYY-MM-DD");
    }
    let path = journal_file(config, file)?;
    let conn = tierd::journal::open_read_only(&path)?;
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let n = tierd::journal::export_parquet(&conn, since, dir)?;
    println!("{n} rows since {since} written to {}", dir.display());
    Ok(())
}

fn import_log(
    config: Option<&Path>,
    format: &str,
    host: &str,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    use tierd::journal::import::{import_logs, LogFormat};
    let format = LogFormat::parse(format)
        .ok_or_else(|| anyhow::anyhow!("--format '{format}' is not one of combined, nginx-json"))?;
    let file = config.or(Some(Path::new(QUICKSTART_CONFIG)).filter(|p| p.is_file()));
    let settings =
        Settings::load(file).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let opts = settings.journal_file_options();
    let rules = tierd::policy::RuleSet::compile(&settings.rules, &tierd::metrics::Metrics::new())
        .map_err(|e| anyhow::anyhow!("invalid rule: {e}"))?;
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let tty = std::io::stderr().is_terminal();
    let report = import_logs(
        &opts,
        &rules,
        format,
        host,
        &paths,
        std::time::SystemTime::now(),
        |done, total| {
            if tty && total > 0 {
                let pct = (done * 100 / total).min(100);
                let bar = "#".repeat((pct / 4) as usize);
                eprint!(
                    "\r[{bar:<25}] {pct:>3}%  {} / {} MiB",
                    done >> 20,
                    total >> 20
                );
                let _ = std::io::stderr().flush();
            }
        },
    )?;
    if tty {
        eprintln!();
    }
    println!(
        "{} lines read, {} imported into {}",
        report.lines,
        report.imported,
        opts.path.display()
    );
    for (why, n) in &report.skipped {
        println!("  skipped {n}: {why}");
    }
    Ok(())
}
