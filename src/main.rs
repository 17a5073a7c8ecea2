//! The `tierd` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tierd::config::{LogFormat, Settings};

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
    /// Config file (TOML). Without a subcommand, defaults to config/tierd.toml when present.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (built-in defaults < --config file < TIERD__* environment).
    Serve,
    /// Validate a config file (and the environment) and exit: 0 if valid, 2 if not.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Run only the built-in demo origin.
    DemoOrigin {
        #[arg(long, default_value = "127.0.0.1:9080")]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => match Settings::load(Some(&file)) {
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
        },
        Some(Command::DemoOrigin { listen }) => {
            init_logging(LogFormat::Text, "info");
            match run_demo(&listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tierd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Serve) => serve(cli.config.as_deref()),
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
    init_logging(settings.log.format, &settings.log.level);
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

fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::field::MakeExt;
    use tracing_subscriber::filter::{EnvFilter, Targets};
    use tracing_subscriber::fmt::format::{debug_fn, FmtSpan};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    // Colour codes only for a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // `log.level` in its usual forms ("info", "info,tierd::access=debug") is a static filter,
    // decided once per call site: nothing is evaluated per request or per span. RUST_LOG, or a
    // directive only EnvFilter understands (span and field filters), gets an EnvFilter.
    let filter: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> =
        match std::env::var("RUST_LOG") {
            Ok(env) if !env.is_empty() => {
                Box::new(EnvFilter::try_new(&env).unwrap_or_else(|_| EnvFilter::new(level)))
            }
            _ => match level.parse::<Targets>() {
                Ok(targets) => Box::new(targets),
                Err(_) => {
                    Box::new(EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")))
                }
            },
        };
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_target(false)
        .with_span_events(FmtSpan::NONE);
    let output: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Json => Box::new(fmt.json()),
        // Plain `name=value` fields, formatted without the colour machinery the default
        // formatter runs even when colour is off (the request span's fields are formatted on
        // every request).
        LogFormat::Text if !ansi => Box::new(
            fmt.fmt_fields(
                debug_fn(|w, field, value| {
                    if field.name() == "message" {
                        write!(w, "{value:?}")
                    } else {
                        write!(w, "{field}={value:?}")
                    }
                })
                .delimited(" "),
            ),
        ),
        LogFormat::Text => Box::new(fmt),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
}
