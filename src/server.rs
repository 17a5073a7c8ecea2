//! Starting and stopping the listeners: gateway, admin and (optionally) the demo origin.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};

use crate::app::{gateway_app, GatewayParts};
use crate::cache::CacheState;
use crate::clock::Clock;
use crate::config::Settings;
use crate::drain::Draining;
use crate::upstream::Target;

/// A running gateway.
pub struct Gateway {
    pub state: Arc<CacheState>,
    /// The gateway's bound address (useful with port 0).
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub demo_addr: Option<SocketAddr>,
    main: ServerHandle,
    others: Vec<ServerHandle>,
    draining: Draining,
    main_task: tokio::task::JoinHandle<io::Result<()>>,
    /// `server.drain_ms`, for SIGTERM.
    drain: Duration,
    /// The config file rules are reloaded from on SIGHUP.
    file: Option<PathBuf>,
    /// The settings it started with (a reload names the changed keys that need a restart).
    running: Arc<Settings>,
    /// The warmer, when warming is on.
    pub warmer: Option<Arc<crate::warm::Warmer>>,
}

/// SIGTERM: keep serving for `drain`, every response closing its keep-alive connection, then
/// stop gracefully (in-flight requests finish). SIGINT (Ctrl-C): stop gracefully at once.
/// SIGQUIT: stop now.
fn stop_on_signals(main: ServerHandle, draining: Draining, drain: Duration) -> io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut quit = signal(SignalKind::quit())?;
        actix_web::rt::spawn(async move {
            let graceful = tokio::select! {
                _ = term.recv() => {
                    tracing::info!(drain_ms = drain.as_millis() as u64,
                        "SIGTERM received; closing keep-alive connections after their next response, then stopping");
                    draining.start();
                    tokio::time::sleep(drain).await;
                    true
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT received; stopping gracefully");
                    draining.start();
                    true
                }
                _ = quit.recv() => {
                    tracing::info!("SIGQUIT received; stopping now");
                    false
                }
            };
            main.stop(graceful).await;
        });
    }
    #[cfg(not(unix))]
    {
        let _ = drain;
        actix_web::rt::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                draining.start();
                main.stop(true).await;
            }
        });
    }
    Ok(())
}

fn spawn(server: Server) -> (ServerHandle, tokio::task::JoinHandle<io::Result<()>>) {
    let handle = server.handle();
    (handle, actix_web::rt::spawn(server))
}

impl Gateway {
    /// Binds every listener and starts serving. Must run inside an actix system. `file` is the
    /// config file rules are reloaded from (`POST /_tierd/reload`, SIGHUP).
    pub async fn start(
        settings: &Settings,
        clock: Arc<dyn Clock>,
        file: Option<PathBuf>,
    ) -> io::Result<Gateway> {
        let cache = crate::Cache::builder()
            .settings(settings.clone())
            .clock(clock)
            .build()
            .map_err(io::Error::other)?;
        // On the system's runtime, which lives as long as the process.
        cache.start_housekeeping();
        let state = cache.state().clone();
        let running = Arc::new(settings.clone());
        let admin_opts = crate::admin::AdminOptions {
            token: settings.admin.token.clone(),
            config_file: file.clone(),
            warmer: cache.warmer().cloned(),
            running: Some(running.clone()),
        };
        let mut others = Vec::new();

        let mut demo_addr = None;
        if settings.demo_origin.enabled {
            let demo_state = web::Data::new(crate::demo::DemoState::default());
            let srv = HttpServer::new(move || {
                App::new().configure(crate::demo::configure(demo_state.clone()))
            })
            .workers(1)
            .disable_signals()
            .bind(&settings.demo_origin.listen)?;
            demo_addr = srv.addrs().first().copied();
            others.push(spawn(srv.run()).0);
        }

        let admin_state = state.clone();
        let admin = HttpServer::new(move || {
            App::new().configure(crate::admin::configure(
                admin_state.clone(),
                admin_opts.clone(),
            ))
        })
        .workers(1)
        .disable_signals()
        .bind(&settings.admin.listen)?;
        let admin_addr = admin
            .addrs()
            .first()
            .copied()
            .ok_or_else(|| io::Error::other("admin listener has no address"))?;
        others.push(spawn(admin.run()).0);

        let target = Target::parse(&settings.upstream.url).map_err(io::Error::other)?;
        let draining = Draining::new();
        let parts = GatewayParts {
            cache: cache.clone(),
            upstream: settings
                .upstream
                .options()
                .map_err(|e| io::Error::other(e.to_string()))?,
            target,
            draining: draining.clone(),
        };
        let conn_metrics = state.metrics.clone();
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        state
            .metrics
            .set_connections_max(settings.server.max_connections.saturating_mul(workers) as i64);
        state
            .metrics
            .cache
            .origin_connections_max
            .set(settings.upstream.max_connections.saturating_mul(workers) as i64);
        let mut server = HttpServer::new(move || gateway_app(&parts))
            // The guard lives in the connection's extensions, dropped when it closes.
            .on_connect(move |_, ext| {
                ext.insert(conn_metrics.open_connection());
            })
            .keep_alive(Duration::from_secs(settings.server.keep_alive_seconds))
            .client_request_timeout(Duration::from_millis(
                settings.server.client_request_timeout_ms,
            ))
            .shutdown_timeout(settings.server.shutdown_timeout_seconds)
            .max_connections(settings.server.max_connections)
            .backlog(4096)
            // tierd handles the signals itself (see `stop_on_signals`).
            .disable_signals();
        server = server.workers(workers);
        let server = server.bind(&settings.server.listen)?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .ok_or_else(|| io::Error::other("gateway listener has no address"))?;
        let (main, main_task) = spawn(server.run());
        cache.start_warming(addr)?;
        Ok(Gateway {
            state,
            addr,
            admin_addr,
            demo_addr,
            main,
            others,
            draining,
            main_task,
            drain: Duration::from_millis(settings.server.drain_ms),
            file,
            running,
            warmer: cache.warmer().cloned(),
        })
    }

    /// Makes the process's signals drive this gateway: SIGHUP reloads the rules from the config
    /// file; SIGTERM, SIGINT and SIGQUIT stop it (see `stop_on_signals`). The `tierd` binary
    /// calls this; a gateway embedded in another program (or a test) leaves the process's
    /// signals alone unless it calls it.
    pub fn handle_signals(&self) -> io::Result<()> {
        #[cfg(unix)]
        {
            let (weak, file) = (Arc::downgrade(&self.state), self.file.clone());
            let running = self.running.clone();
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            actix_web::rt::spawn(async move {
                while hup.recv().await.is_some() {
                    let Some(st) = weak.upgrade() else { break };
                    tracing::info!("SIGHUP: reloading rules");
                    let _ = crate::admin::reload_rules(&st, file.as_deref(), Some(&running));
                }
            });
        }
        stop_on_signals(self.main.clone(), self.draining.clone(), self.drain)
    }

    /// Runs until the gateway stops (SIGINT/SIGTERM: graceful), then stops the other listeners
    /// and drains the lower tiers' write queues.
    pub async fn wait(self) -> io::Result<()> {
        let result = self.main_task.await.map_err(io::Error::other)?;
        if let Some(w) = &self.warmer {
            w.stop().await;
        }
        for h in &self.others {
            h.stop(true).await;
        }
        self.state.close().await;
        result
    }

    /// Stops every listener, then drains the lower tiers' write queues.
    pub async fn stop(self, graceful: bool) {
        if graceful {
            self.draining.start();
        }
        if let Some(w) = &self.warmer {
            w.stop().await;
        }
        self.main.stop(graceful).await;
        for h in &self.others {
            h.stop(graceful).await;
        }
        let _ = self.main_task.await;
        self.state.close().await;
    }
}
