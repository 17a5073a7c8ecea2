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
