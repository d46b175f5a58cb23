//! Process set-up, in the order the OS requires: parse arguments, start logging, fork (before
//! any thread exists), then build the runtime and take the pidfile and control socket.

use std::path::PathBuf;

use tracing::{error, info};

use super::backend_config;
use super::event_loop::{EventLoop, Exit};
use crate::backend::dry_run::DryRun;
use crate::backend::libreswan::Libreswan;
use crate::backend::strongswan_stroke::StrongSwanStroke;
use crate::backend::strongswan_vici::StrongSwanVici;
use crate::backend::strongswan_vici::mode::{self, StrongSwanMode};
use crate::backend::xfrm::XfrmBackend;
use crate::backend::{Backend, BackendKind, StartOptions};
use crate::cli::Cli;
use crate::daemon::pidfile::Pidfile;
use crate::daemon::signals::Signals;
use crate::daemon::{self, Daemon, DaemonOptions, paths};
use crate::logging::{self, LogConfig, LogHandle};
use crate::ovsdb::{Client, ClientConfig, Remote, TableSpec, TlsFiles};
use crate::{control, schema};

/// Runs the daemon; returns the process exit code.
pub fn main_entry() -> i32 {
    let cli = Cli::parse_args();
    let kind = match cli.backend_kind() {
        Ok(k) => k,
        Err(msg) => return fail(msg),
    };
    let (remotes, tls) = match remotes_and_tls(&cli) {
        Ok(r) => r,
        Err(msg) => return fail(&msg),
    };
    let (database, tables) = match monitor_tables() {
        Ok(t) => t,
        Err(msg) => return fail(&msg),
    };
    let log_file = cli.log_file.as_deref().map(paths::resolve_log_file);
    let log = match logging::init(LogConfig {
        log_file,
        specs: cli.verbose.clone(),
    }) {
        Ok(l) => l,
        Err(e) => return fail(&e.to_string()),
    };
    let daemon = match daemon::daemonize(DaemonOptions {
        detach: cli.detach,
        monitor: cli.monitor,
        no_chdir: cli.no_chdir,
    }) {
        Ok(d) => d,
        Err(e) => {
            error!("{e}");
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return 1;
        }
    };
    let mut config = ClientConfig::new(remotes, database, tables);
    config.tls = tls;
    runtime.block_on(run(cli, kind, config, log, daemon))
}

fn fail(msg: &str) -> i32 {
    eprintln!("ovs-monitor-ipsec: {msg}");
    1
}

async fn run(
    cli: Cli,
    kind: BackendKind,
    config: ClientConfig,
    log: LogHandle,
    daemon: Daemon,
) -> i32 {
    let pidfile = match cli.pidfile.as_deref().map(paths::resolve_pidfile) {
        Some(path) => match Pidfile::create(&path, cli.overwrite_pidfile) {
            Ok(p) => Some(p),
            Err(e) => {
                error!("{e}");
                return 1;
            }
        },
        None => None,
    };
    let ctl_path: PathBuf = paths::resolve_unixctl(cli.unixctl.as_deref(), std::process::id());
    let (server, control_rx) = match control::bind(&ctl_path, log.clone()) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return 1;
        }
    };
    let signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return 1;
        }
    };
    let renderer = crate::metrics::renderer::Renderer::default();
    let metrics_task = match cli.metrics.as_ref().map(crate::metrics::http::bind) {
        Some(Ok(endpoint)) => {
            info!(
                "serving metrics on {}",
                cli.metrics
                    .as_ref()
                    .map_or(String::new(), |l| l.to_string())
            );
            Some(tokio::spawn(
                endpoint.run(server.requests(), renderer.clone()),
            ))
        }
        Some(Err(e)) => {
            error!("{e}");
            return 1;
        }
        None => None,
    };
    let server_task = tokio::spawn(server.run());
    let (client, db_events) = Client::spawn(config);
    info!(
        "ovs-monitor-ipsec {} starting with --ike-daemon={kind}",
        env!("CARGO_PKG_VERSION")
    );
    let parts = Parts {
        client,
        db_events,
        control_rx,
        signals,
        daemon,
        log,
        metrics_per_tunnel: cli.metrics_per_tunnel,
        metrics_endpoint: cli.metrics.is_some(),
        renderer,
        cert_expiry_warning_days: cli.cert_expiry_warning_days,
    };
    let start = StartOptions {
        restart_ike_daemon: !cli.no_restart_ike_daemon,
    };

    // One arm per backend: each builds its backend from the command line and runs the loop.
    let exit = match kind {
        _ if cli.dry_run => {
            info!("--dry-run: planning only, nothing is applied");
            run_with(DryRun::new(kind), true, parts, start).await
        }
        BackendKind::None => match XfrmBackend::new(&backend_config::xfrm(&cli)) {
            Ok(b) => run_with(b, false, parts, start).await,
            Err(e) => {
                error!("{e}");
                return 1;
            }
        },
        BackendKind::Libreswan => match Libreswan::new(&backend_config::libreswan(&cli)) {
            Ok(b) => run_with(b, false, parts, start).await,
            Err(e) => {
                error!("cannot set up the libreswan backend: {e}");
                return 1;
            }
        },
        BackendKind::StrongSwan => {
            let vici = backend_config::vici(&cli);
            match mode::resolve(cli.strongswan_mode, &vici.socket).await {
                StrongSwanMode::Vici => {
                    info!("strongSwan mode: vici ({})", vici.socket.display());
                    run_with(StrongSwanVici::new(&vici), false, parts, start).await
                }
                StrongSwanMode::Stroke | StrongSwanMode::Auto => {
                    info!("strongSwan mode: stroke (ipsec.conf)");
                    match StrongSwanStroke::new(&backend_config::stroke(&cli)) {
                        Ok(b) => run_with(b, false, parts, start).await,
                        Err(e) => {
                            error!("cannot set up the strongSwan backend: {e}");
                            return 1;
                        }
                    }
                }
            }
        }
    };
    server_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    drop(pidfile);
    match exit {
        Exit::Cleanup => info!("exiting after cleanup"),
        Exit::NoCleanup => info!("exiting; IPsec state left in place"),
    }
    crate::daemon::notify::stopping();
    0
}

/// What every backend's event loop needs besides the backend itself.
struct Parts {
    client: Client,
    db_events: tokio::sync::mpsc::UnboundedReceiver<crate::ovsdb::DbEvent>,
    control_rx: tokio::sync::mpsc::Receiver<control::ControlRequest>,
    signals: Signals,
    daemon: Daemon,
    log: LogHandle,
    metrics_per_tunnel: bool,
    metrics_endpoint: bool,
    renderer: crate::metrics::renderer::Renderer,
    cert_expiry_warning_days: u32,
}

async fn run_with<B: Backend>(backend: B, dry_run: bool, p: Parts, start: StartOptions) -> Exit {
    EventLoop::new(
        backend,
        p.client,
        p.db_events,
        p.control_rx,
        p.signals,
        p.daemon,
        p.log,
        dry_run,
        p.cert_expiry_warning_days,
    )
    .with_metrics(p.metrics_per_tunnel, p.metrics_endpoint, p.renderer)
    .run(start)
    .await
}

fn remotes_and_tls(cli: &Cli) -> Result<(Vec<Remote>, Option<TlsFiles>), String> {
    let remotes = Remote::parse_list(&cli.database).map_err(|e| e.to_string())?;
    let needs_tls = remotes.iter().any(|r| matches!(r, Remote::Ssl(..)));
    let tls = match (&cli.private_key, &cli.certificate, &cli.ca_cert) {
        (Some(k), Some(c), Some(ca)) => Some(TlsFiles {
            private_key: k.clone(),
            certificate: c.clone(),
            ca_cert: ca.clone(),
        }),
        _ if needs_tls => {
            return Err("an ssl: remote needs --private-key, --certificate and --ca-cert".into());
        }
        _ => None,
    };
    Ok((remotes, tls))
}

/// The monitor request, straight from `vswitch-schema/contract.json`.
fn monitor_tables() -> Result<(String, Vec<TableSpec>), String> {
    let contract = schema::Contract::get().map_err(|e| e.to_string())?;
    let tables = contract
        .tables
        .iter()
        .map(|(name, t)| TableSpec {
            table: name.clone(),
            columns: t.columns.keys().cloned().collect(),
            conditions: (!t.conditions.is_empty())
                .then(|| t.conditions.iter().map(|c| c.to_json()).collect()),
        })
        .collect();
    Ok((contract.database.clone(), tables))
}
