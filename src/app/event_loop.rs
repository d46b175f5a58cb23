//! The main loop: reacts to OVSDB changes, control commands, backend events, signals and the
//! periodic timer. It owns the registry, the last pass outcome and the backend.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior, interval_at};
use tracing::{Level, debug, error, info, warn};

use super::cert_alerts::CertAlerts;
use super::metrics_feed::Feed;
use super::monitor_keys::MonitorKeys;
use super::pass::{self, PassOutcome};
use super::status_scope::StatusScope;
use super::xfrm_watch::XfrmWatch;
use crate::backend::files;
use crate::backend::xfrm::events::XfrmEvent;
use crate::backend::{Backend, BackendEvent, Scope, StartOptions};
use crate::control::show;
use crate::control::{AppCommand, ControlRequest};
use crate::daemon::Daemon;
use crate::daemon::{SignalEvent, Signals};
use crate::diagnose::mtu;
use crate::logging::LogHandle;
use crate::metrics::{self, Metrics, Trigger};
use crate::model::cert::FsCertSource;
use crate::model::registry::{ModelEvent, Registry};
use crate::model::rows::{self, Rows};
use crate::model::versions;
use crate::ovsdb::client::{Client, DbEvent};
use crate::status;
use commands::metrics_view;

/// How the log line of a status write starts (tests look for its absence).
mod commands;

pub const STATUS_UPDATED: &str = "status: updated";

/// How long `exit` waits for its reply to be written before the process goes on exiting.
const REPLY_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// How the loop ended; decides the exit code and what is left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit`: everything we created was removed.
    Cleanup,
    /// `exit --no-cleanup`, SIGTERM or SIGINT: IPsec state left in place.
    NoCleanup,
}

/// Why the loop should act after an event.
#[derive(Debug, Default, Clone, Copy)]
struct Work {
    /// OVSDB changed: rebuild the model.
    model: bool,
    /// Run a backend pass.
    pass: bool,
    /// The pass must look at every tunnel, not only those OVSDB changes touched.
    full: bool,
    /// Recompute and write status.
    status: bool,
    /// What asked for the pass (for the metrics).
    trigger: Option<Trigger>,
}

pub struct EventLoop<B: Backend> {
    backend: B,
    client: Client,
    db_events: mpsc::UnboundedReceiver<DbEvent>,
    control: mpsc::Receiver<ControlRequest>,
    backend_events: Option<mpsc::Receiver<BackendEvent>>,
    /// The kernel's XFRM notifications (see `xfrm_watch`); `None` without them.
    xfrm_events: Option<mpsc::Receiver<XfrmEvent>>,
    xfrm_watch: XfrmWatch,
    signals: Signals,
    daemon: Daemon,
    log: LogHandle,
    registry: Registry,
    certs: FsCertSource,
    /// Certificates that expire soon or have expired, for status and the log.
    cert_alerts: CertAlerts,
    /// The typed rows, refreshed from the replica's changes (see [`Rows`]).
    rows: Rows,
    /// Names of the rows changed since the model last looked; `None`: every row.
    model_dirty: Option<BTreeSet<String>>,
    /// [`Registry::generation`] at the last model rebuild.
    generation: u64,
    /// Tunnels OVSDB changes touched since the last pass, which the next change-driven pass
    /// looks at (see [`Scope`]); `None`: every tunnel.
    pass_scope: Option<BTreeSet<String>>,
    outcome: PassOutcome,
    monitor_keys: MonitorKeys,
    /// True once the model has been built from a synced replica. Before that the desired
    /// state is unknown, and a pass would tear down what a restarted monitor should adopt.
    model_ready: bool,
    /// True once the first pass after the initial OVSDB sync has been applied.
    ready: bool,
    /// Which rows the next status pass must look at.
    status_scope: StatusScope,
    /// Where tunnel versions are saved across restarts (see `model::versions`).
    versions_file: std::path::PathBuf,
    /// When a failed status write should be retried.
    status_retry: Option<Instant>,
    tick: Interval,
    metrics: Metrics,
    metrics_feed: Feed,
    /// `--metrics` is on: refresh the metrics' kernel observation on the periodic timer.
    metrics_endpoint: bool,
    /// Encodes the snapshots for scrapes and `metrics/show`, one at a time.
    renderer: metrics::renderer::Renderer,
}

impl Work {
    /// A pass over every tunnel: the periodic one, and after a backend event.
    const FULL_PASS: Work = Work {
        model: false,
        pass: true,
        full: true,
        status: false,
        trigger: None,
    };

    fn full_pass(trigger: Trigger) -> Work {
        Work {
            trigger: Some(trigger),
            ..Self::FULL_PASS
        }
    }
}

impl<B: Backend> EventLoop<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: B,
        client: Client,
        db_events: mpsc::UnboundedReceiver<DbEvent>,
        control: mpsc::Receiver<ControlRequest>,
        signals: Signals,
        daemon: Daemon,
        log: LogHandle,
        dry_run: bool,
        cert_expiry_warning_days: u32,
    ) -> Self {
        let period = Duration::from_secs(super::RECONCILE_INTERVAL_SECS);
        let mut tick = interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let monitor_keys = MonitorKeys::new(backend.kind(), dry_run);
        let metrics = Metrics::new(backend.kind(), true);
        let versions_file = crate::daemon::paths::rundir().join("ovs-monitor-ipsec.versions");
        let mut registry = Registry::new();
        match std::fs::read_to_string(&versions_file) {
            Ok(text) => match versions::parse(&text) {
                Ok(saved) => registry.seed(saved),
                Err(e) => warn!("{}: {e}", versions_file.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot read {}: {e}", versions_file.display()),
        }
        Self {
            backend,
            client,
            db_events,
            control,
            backend_events: None,
            xfrm_events: None,
            xfrm_watch: XfrmWatch::new(!dry_run),
            signals,
            daemon,
            log,
            registry,
            certs: FsCertSource::new(),
            cert_alerts: CertAlerts::new(cert_expiry_warning_days),
            rows: Rows::default(),
            model_dirty: None,
            generation: 0,
            pass_scope: None,
            outcome: PassOutcome::default(),
            monitor_keys,
            model_ready: false,
            ready: false,
            status_scope: StatusScope::default(),
            versions_file,
            status_retry: None,
            tick,
            metrics,
            metrics_feed: Feed::default(),
            metrics_endpoint: false,
            renderer: metrics::renderer::Renderer::default(),
        }
    }

    /// Metrics options: per-tunnel families, whether `--metrics` serves them, and the
    /// renderer the endpoint shares.
    pub fn with_metrics(
        mut self,
        per_tunnel: bool,
        endpoint: bool,
        renderer: metrics::renderer::Renderer,
    ) -> Self {
        self.metrics = Metrics::new(self.backend.kind(), per_tunnel);
        self.metrics_endpoint = endpoint;
        self.renderer = renderer;
        self
    }

    /// Runs until `exit` or a terminating signal.
    pub async fn run(mut self, start: StartOptions) -> Exit {
        if let Err(e) = self.backend.start(&start).await {
            error!("cannot start {} backend: {e}", self.backend.kind());
        }
        self.backend_events = self.backend.events();
        self.xfrm_events = self.xfrm_watch.subscribe();
        loop {
            let retry_at = self.status_retry.map(tokio::time::Instant::from_std);
            // Biased, OVSDB first: after a long pass the timer is ready again, and a random
            // pick could run pass after pass on a stale model while a new tunnel waits
            // (seen at load 10 in the QEMU tier: a minute before "tun-5 appeared").
            let work = tokio::select! {
                biased;
                Some(ev) = self.db_events.recv() => self.on_db_event(ev),
                Some(req) = self.control.recv() => match self.on_control(req).await {
                    Some(exit) => return exit,
                    None => Work::default(),
                },
                Some(ev) = recv_opt(&mut self.backend_events) => match ev {
                    BackendEvent::StateChanged => Work::full_pass(Trigger::Event),
                    BackendEvent::DaemonRestarted => {
                        info!("{} restarted: reloading every tunnel", self.backend.kind());
                        self.metrics.ike_daemon_restarted();
                        Work::full_pass(Trigger::Event)
                    }
                },
                Some(ev) = recv_opt(&mut self.xfrm_events) => self.on_xfrm_event(ev),
                _ = self.tick.tick() => {
                    if self.metrics_endpoint {
                        self.refresh_metrics(Duration::ZERO).await;
                    }
                    // The model too: certificate tunnels depend on files (a CA bundle, a
                    // key) that change without OVSDB noticing.
                    Work {
                        model: true,
                        ..Work::full_pass(Trigger::Timer)
                    }
                }
                _ = sleep_until_opt(retry_at) => Work { status: true, ..Work::default() },
                Some(sig) = self.signals.recv() => match sig {
                    SignalEvent::Shutdown(sig) => {
                        info!("terminating on {sig:?}; IPsec state is left in place");
                        return Exit::NoCleanup;
                    }
                    SignalEvent::ReopenLogs => {
                        if let Err(e) = self.log.reopen() {
                            warn!("cannot reopen the log file: {e}");
                        }
                        Work::default()
                    }
                },
            };
            self.perform(work).await;
        }
    }

    fn on_db_event(&mut self, ev: DbEvent) -> Work {
        match ev {
            DbEvent::Changed => Work {
                model: true,
                trigger: Some(Trigger::Ovsdb),
                ..Work::default()
            },
            DbEvent::Connected { remote, method } => {
                debug!("{remote}: monitoring with {method:?}");
                self.metrics.ovsdb_connected(true);
                Work::default()
            }
            // The client has logged it; it keeps trying.
            DbEvent::ConnectFailed { .. } => Work::default(),
            DbEvent::Disconnected { reason } => {
                debug!("OVSDB connection lost: {reason}");
                self.metrics.ovsdb_connected(false);
                // Do not hold a --detach parent forever when the database is down.
                self.mark_detached();
                Work::default()
            }
        }
    }

    async fn perform(&mut self, mut work: Work) {
        if work.model {
            work.pass |= self.rebuild_model() || !self.ready;
            work.status = true;
        }
        if work.pass && self.model_ready {
            // After a failed pass every tunnel carries its error: look at all of them again.
            let full = work.full || !self.ready || self.outcome.backend_error.is_some();
            let scope = match self.pass_scope.replace(BTreeSet::new()) {
                Some(names) if !full => Scope::Tunnels(names),
                _ => Scope::All,
            };
            let started = Instant::now();
            let outcome = pass::run(&mut self.backend, self.registry.desired(), scope).await;
            self.metrics.pass(
                work.trigger.unwrap_or(Trigger::Ovsdb),
                started.elapsed(),
                outcome.apply_errors.len(),
            );
            let changed = outcome.applied > 0;
            if changed {
                self.xfrm_watch.applied(&outcome.covered, Instant::now());
            }
            // A repeated pass planned nothing and computed no status: the last outcome stands.
            if !outcome.repeated {
                self.merge(outcome);
            }
            if self.outcome.backend_error.is_none() {
                self.monitor_keys.reconciled(changed);
            }
            work.status = true;
            if !self.ready {
                self.ready = true;
                self.mark_detached();
                crate::daemon::notify::ready();
                info!(
                    "first pass applied: {} tunnels",
                    self.registry.desired().tunnels.len()
                );
            }
        }
        if work.status {
            let changed = self.write_status().await;
            self.metrics.track_states(
                &metrics_view(&self.registry, &self.outcome, &self.cert_alerts),
                changed.as_ref(),
            );
        }
    }

    /// Reacts to `first` and the XFRM events queued behind it: a pass over the tunnels
    /// whose objects vanished (see `xfrm_watch`).
    fn on_xfrm_event(&mut self, first: XfrmEvent) -> Work {
        // At most a receive buffer's worth, so the other sources are not starved.
        let mut events = vec![first];
        while let Some(rx) = self.xfrm_events.as_mut()
            && events.len() < 4096
            && let Ok(ev) = rx.try_recv()
        {
            events.push(ev);
        }
        let backend = &self.backend;
        let reaction = self.xfrm_watch.on_events(
            &events,
            |ev| backend.xfrm_origin(ev),
            self.registry.desired(),
            self.registry.generation(),
            Instant::now(),
        );
        if reaction.tunnels.is_empty() {
            return Work::default();
        }
        if let Some(scope) = &mut self.pass_scope {
            scope.extend(reaction.tunnels);
        }
        Work {
            pass: true,
            trigger: Some(Trigger::Event),
            ..Work::default()
        }
    }

    /// Re-reads the metrics' kernel and certificate observation if older than `max_age`.
    async fn refresh_metrics(&mut self, max_age: Duration) {
        self.metrics_feed
            .refresh(
                &mut self.metrics,
                self.registry.desired(),
                &mut self.certs,
                max_age,
            )
            .await;
    }

    /// Takes in a pass's outcome; notes for the status pass the tunnels whose live state or
    /// apply error changed. A scoped outcome replaces the live state of its tunnels only.
    fn merge(&mut self, new: PassOutcome) {
        let PassOutcome {
            mut live,
            covered,
            apply_errors,
            backend_error,
            applied,
            repeated: _,
        } = new;
        let names = match covered {
            Scope::All => {
                let new = PassOutcome {
                    live,
                    covered: Scope::All,
                    apply_errors,
                    backend_error,
                    applied,
                    repeated: false,
                };
                self.status_scope.outcome_changed(&self.outcome, &new);
                self.outcome = new;
                return;
            }
            Scope::Tunnels(names) => names,
        };
        let old = &mut self.outcome;
        let mut changed = BTreeSet::new();
        for name in names {
            let now = live.remove(&name);
            if old.live.get(&name) != now.as_ref() {
                match now {
                    Some(st) => old.live.insert(name.clone(), st),
                    None => old.live.remove(&name),
                };
                changed.insert(name);
            }
        }
        // Apply errors are those of the last pass (a handful): replaced whole, as before.
        for name in old.apply_errors.keys().chain(apply_errors.keys()) {
            if old.apply_errors.get(name) != apply_errors.get(name) {
                changed.insert(name.clone());
            }
        }
        old.apply_errors = apply_errors;
        old.backend_error = backend_error;
        old.applied = applied;
        self.status_scope.tunnels_changed(Some(&changed));
    }

    /// Lets a `--detach` parent exit.
    fn mark_detached(&mut self) {
        if let Err(e) = self.daemon.ready() {
            warn!("cannot complete daemonization: {e}");
        }
    }

    /// Brings the typed rows in line with the replica, and notes what changed for the model.
    fn sync_rows(&mut self) {
        let kept = &mut self.rows;
        let touched = self
            .client
            .with_changes(|r, changes| kept.refresh(r, &changes));
        match (&touched, &mut self.model_dirty) {
            (None, dirty) => *dirty = None,
            (Some(t), Some(dirty)) => dirty.extend(t.names.iter().cloned()),
            (Some(_), None) => {}
        }
        self.status_scope.rows_changed(touched.as_ref());
    }

    /// Re-evaluates the model from the rows that changed; true when the desired state changed.
    fn rebuild_model(&mut self) -> bool {
        self.sync_rows();
        let dirty = self.model_dirty.replace(BTreeSet::new());
        let global = self.registry.desired().global.clone();
        let scope_before = self.pass_scope.clone();
        let events = self.registry.update_changed(
            self.rows.open_vswitch(),
            &self.rows,
            dirty.as_ref(),
            &mut self.certs,
        );
        self.model_ready = true;
        self.status_scope.tunnels_changed(dirty.as_ref());
        match (&dirty, &mut self.pass_scope) {
            (Some(names), Some(scope)) => scope.extend(names.iter().cloned()),
            (None, scope) => *scope = None,
            (Some(_), None) => {}
        }
        // Global settings (PKI, skb mark) are every tunnel's business.
        if self.registry.desired().global != global {
            self.pass_scope = None;
        }
        for ev in &events {
            log_event(ev);
            self.status_scope
                .tunnels_changed(Some([ev.tunnel()].into_iter().flatten()));
            if let (Some(t), Some(scope)) = (ev.tunnel(), &mut self.pass_scope) {
                scope.insert(t.clone());
            }
        }
        if !events.is_empty() {
            self.save_versions();
        }
        let generation = self.registry.generation();
        let changed = std::mem::replace(&mut self.generation, generation) != generation;
        if !changed {
            // Rows changed but no tunnel's desired state did (e.g. the echo of our own status
            // write of every row): the backend has nothing to do for them, and keeping their
            // names would turn the next change-driven pass into one over every tunnel.
            self.pass_scope = scope_before;
        }
        changed
    }

    fn save_versions(&self) {
        let text = versions::render(self.registry.saved_versions());
        if let Err(e) =
            files::write_if_changed(&self.versions_file, text.as_bytes(), files::SECRET_MODE)
        {
            warn!("cannot save tunnel versions: {e}");
        }
    }

    /// Writes the status of the rows that may need it; returns the tunnels whose state may
    /// have changed since the last completed write (`None`: any), for the metrics.
    async fn write_status(&mut self) -> Option<BTreeSet<String>> {
        self.status_retry = None;
        self.sync_rows();
        let error = self
            .registry
            .global_error()
            .map(str::to_owned)
            .or_else(|| self.outcome.backend_error.clone());
        let monitor = self.monitor_keys.keys(error);
        let changed = self.cert_alerts.refresh(
            self.registry.desired(),
            self.registry.generation(),
            &mut self.certs,
            status::time::unix_now(),
        );
        self.status_scope.tunnels_changed(Some(&changed));
        let covered = self.status_scope.tunnels().cloned();
        let candidates = self.status_scope.candidates(&self.rows);
        let mut ops = status::plan(&status::StatusInput {
            interfaces: candidates.into_iter(),
            open_vswitch: self.rows.open_vswitch(),
            tunnels: self.registry.tunnel_map(),
            live: &self.outcome.live,
            apply_errors: &self.outcome.apply_errors,
            cert_alerts: self.cert_alerts.alerts(),
            monitor,
        });
        ops.extend(
            self.status_scope
                .vanished(&self.rows)
                .into_iter()
                .map(status::forget),
        );
        if !self.client.is_connected() {
            return covered;
        }
        if ops.is_empty() {
            self.status_scope.written(&self.rows);
            return covered;
        }
        let n = ops.len();
        match self.client.transact(ops).await {
            Ok(_) => {
                debug!("{STATUS_UPDATED} {n} rows");
                self.status_scope.written(&self.rows);
            }
            Err(e) => {
                warn!("cannot write tunnel status to OVSDB: {e}");
                self.status_retry = Some(Instant::now() + Duration::from_secs(2));
            }
        }
        covered
    }
}

fn log_event(ev: &ModelEvent) {
    match ev.level() {
        Level::WARN | Level::ERROR => warn!("{ev}"),
        _ => info!("{ev}"),
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
