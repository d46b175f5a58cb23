//! strongSwan over VICI (`--ike-daemon=strongswan --strongswan-mode=vici`): connections and
//! credentials are loaded straight into charon's memory over its control socket, with no
//! config file and no subprocess (ovs-issues#336).
//!
//! - `observe`: `list-conns` + `list-sas` on one command connection, plus the SHA-256 of each
//!   credential file we loaded (so a renewed certificate is noticed by content);
//! - `plan` (pure, [`plan`]): credentials and connections to (re)load — one connection, so
//!   one IKE_SA, per tunnel ([`conns`]) —, tunnels to initiate, our stale connections and
//!   credentials to unload;
//! - `apply` (`apply.rs`): every request of the plan pipelined on the same connection (a cold start of
//!   1,000 tunnels is one stream of ~4,000 messages, one tunnel change is O(1) messages); an
//!   initiation is sent only by the end with the lower address ([`initiator`]);
//! - `status` (pure, [`status`]): per-tunnel state from the SAs;
//! - `events` ([`events`]): IKE/CHILD_SA up/down/rekey events and charon restarts.
//!
//! What we loaded is remembered per charon: the memory is dropped whenever the command
//! connection has to be re-opened, which is exactly when charon may have restarted and lost
//! everything.
//!
//! `list-conns` is the costly listing (charon answers 1,000 connections in about a second on
//! a busy 2-core host), and between two listings only we change charon's connections. So the
//! listing is kept and updated with our own loads and unloads, and made again only every
//! [`RELIST_CONNS`] (the periodic pass) or on a new connection: a one-tunnel change costs
//! `list-sas` and O(1) messages, and a connection someone unloaded by hand is still restored
//! within one periodic pass.

mod apply;
pub mod bundles;
pub mod conns;
pub mod creds;
pub mod custom;
pub mod events;
pub mod mode;
pub mod observe;
pub mod plan;
pub mod status;
#[cfg(test)]
pub(crate) mod test_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use self::conns::ConnMemo;
use self::conns::ike_conn_name;
use self::creds::CredKey;
use self::observe::{
    IkeSa, Loaded, Observed, ObservedConn, parse_authorities, parse_conns, parse_sas,
};
use self::plan::Action;
use super::ike_view::IkeView;
use super::initiator;
use super::vici::{Body, Connection, Message, ViciError};
use super::{
    ApplyReport, Backend, BackendError, BackendEvent, BackendKind, LiveStatus, Scope, StartOptions,
};
use crate::model::Desired;

/// How old the kept `list-conns` may get before a pass lists again (below the 15 s periodic
/// pass, so every periodic pass lists).
pub const RELIST_CONNS: Duration = Duration::from_secs(10);

/// charon's default VICI socket (below `--root-prefix`).
pub const DEFAULT_SOCKET: &str = "/var/run/charon.vici";

/// What the backend takes from the command line; `app::setup` builds it.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--vici-socket`, or charon's default below `--root-prefix`.
    pub socket: PathBuf,
    /// `--command-timeout`: the limit of every VICI exchange.
    pub timeout: Duration,
}

/// The VICI backend.
#[derive(Debug)]
pub struct StrongSwanVici {
    socket: PathBuf,
    timeout: Duration,
    conn: Option<Connection>,
    /// Shared with the last observation (no copy per pass); copied on write only while one
    /// is alive.
    loaded: Arc<Loaded>,
    events: Option<mpsc::Receiver<BackendEvent>>,
    watcher: Option<JoinHandle<()>>,
    /// Origin of [`Observed::clock`].
    epoch: Instant,
    /// Set when the command connection is opened again after it broke: charon may have
    /// restarted, and then its peers still hold IKE_SAs it lost and will not start new ones,
    /// so the next initiations are sent whichever end has the lower address.
    reopened: bool,
    /// Whether a command connection was ever opened.
    connected_once: bool,
    /// charon's connections: the last `list-conns` and when it was made, updated since with
    /// our own loads and unloads.
    listed: Option<(Arc<BTreeMap<String, ObservedConn>>, Instant)>,
    /// Each tunnel's `load-conn` body and digest, built again only when the tunnel changes.
    memo: ConnMemo,
}

impl Drop for StrongSwanVici {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
    }
}

impl StrongSwanVici {
    /// A backend for the VICI socket and time limit of `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            socket: config.socket.clone(),
            timeout: config.timeout,
            conn: None,
            loaded: Arc::default(),
            events: None,
            watcher: None,
            epoch: Instant::now(),
            reopened: false,
            connected_once: false,
            listed: None,
            memo: ConnMemo::default(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The connections without an IKE_SA that this end leaves to the peer, among those whose
    /// IKE_SAs were listed (`narrow`, or all): exactly the ones the plan could initiate. None
    /// after charon restarted under us: then this end initiates everything once.
    fn answers(
        &self,
        desired: &Desired,
        narrow: Option<&[String]>,
        sas: &[IkeSa],
    ) -> BTreeSet<String> {
        if self.reopened {
            return BTreeSet::new();
        }
        let with_sa: BTreeSet<&str> = sas.iter().map(|sa| sa.conn.as_str()).collect();
        desired
            .tunnels
            .values()
            .map(|t| (ike_conn_name(t), t))
            .filter(|(conn, _)| narrow.is_none_or(|n| n.contains(conn)))
            .filter(|(conn, _)| !with_sa.contains(conn.as_str()))
            .filter(|(_, t)| !initiator::we_initiate(t.conf.local_ip, t.conf.remote_ip))
            .map(|(conn, _)| conn)
            .collect()
    }

    /// The command connection, opened on demand. Opening a new one forgets what we loaded:
    /// the charon on the other end may be a new one.
    async fn connection(&mut self) -> Result<&mut Connection, ViciError> {
        if self.conn.is_none() {
            let c = Connection::connect(&self.socket, self.timeout).await?;
            self.loaded = Arc::default();
            self.reopened = self.connected_once;
            self.connected_once = true;
            self.listed = None;
            self.conn = Some(c);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| ViciError::Protocol("no connection".into()))
    }

    /// A listing, retried once on a fresh connection if the old one broke; `filter` adds
    /// its key/values (e.g. `ike`) to the request.
    async fn listing(
        &mut self,
        cmd: &str,
        event: &str,
        filter: &[(&str, &str)],
    ) -> Result<Vec<Message>, ViciError> {
        for attempt in 0..2 {
            let body = filter
                .iter()
                .fold(Message::new().kv("noblock", "yes"), |m, &(k, v)| m.kv(k, v));
            match self.connection().await?.stream(cmd, event, body).await {
                Ok(items) => return Ok(items),
                Err(e @ (ViciError::Io(_) | ViciError::Closed)) if attempt == 0 => {
                    debug!("VICI connection broken ({e}); reconnecting");
                    self.conn = None;
                }
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
        Err(ViciError::Closed)
    }

    async fn batch(&mut self, requests: Vec<(String, Body)>) -> Result<Vec<Message>, ViciError> {
        let result = self.connection().await?.batch(requests).await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

fn backend_error(e: ViciError) -> BackendError {
    match e {
        ViciError::Connect(path, err) => BackendError::Unavailable(
            format!("charon's VICI socket {}", path.display()),
            err.to_string(),
        ),
        other => BackendError::Io {
            what: "VICI".into(),
            detail: other.to_string(),
        },
    }
}

impl Backend for StrongSwanVici {
    type Observed = Observed;
    type Action = Action;

    fn kind(&self) -> BackendKind {
        BackendKind::StrongSwan
    }

    async fn start(&mut self, opts: &StartOptions) -> Result<(), BackendError> {
        if opts.restart_ike_daemon {
            // charon's lifecycle belongs to its service manager in VICI mode; reloading our
            // connections from scratch is what a restart was for.
            info!("VICI mode does not restart charon; every tunnel is (re)loaded over VICI");
        }
        let (rx, task) = events::spawn(self.socket.clone(), self.timeout);
        self.events = Some(rx);
        self.watcher = Some(task);
        let version = self
            .connection()
            .await
            .map_err(backend_error)?
            .request("version", Message::new())
            .await
            .map_err(backend_error)?;
        info!(
            "using strongSwan {} over VICI at {}",
            version.str("version").unwrap_or("(unknown version)"),
            self.socket.display()
        );
        Ok(())
    }

    async fn observe(&mut self) -> Result<Observed, BackendError> {
        self.observe_in(&Desired::default(), &Scope::All).await
    }

    /// A pass over a few PSK tunnels (see [`plan::scoped`]) lists only their IKE_SAs and
    /// keeps the connection list as our own loads and unloads left it; the periodic pass
    /// lists everything.
    async fn observe_in(
        &mut self,
        desired: &Desired,
        scope: &Scope,
    ) -> Result<Observed, BackendError> {
        let narrow = plan::scoped(desired, &self.loaded, scope).map(|names| {
            names
                .iter()
                .filter_map(|n| desired.tunnels.get(n))
                .map(ike_conn_name)
                .collect::<Vec<_>>()
        });
        let mut sas = Vec::new();
        match &narrow {
            Some(conns) => {
                for conn in conns {
                    let listed = self
                        .listing("list-sas", "list-sa", &[("ike", conn.as_str())])
                        .await;
                    sas.extend(listed.map_err(backend_error)?);
                }
            }
            None => {
                sas = self
                    .listing("list-sas", "list-sa", &[])
                    .await
                    .map_err(backend_error)?;
            }
        }
        let fresh = self
            .listed
            .as_ref()
            .is_some_and(|(_, at)| narrow.is_some() || at.elapsed() < RELIST_CONNS);
        if !fresh {
            let conns = self
                .listing("list-conns", "list-conn", &[])
                .await
                .map_err(backend_error)?;
            self.listed = Some((Arc::new(parse_conns(&conns)), Instant::now()));
        }
        if !self.loaded.authorities_listed {
            // Once per charon: the authorities an earlier run of the monitor left there.
            let listed = self
                .listing("list-authorities", "list-authority", &[])
                .await
                .map_err(backend_error)?;
            let loaded = Arc::make_mut(&mut self.loaded);
            loaded.adoptable = parse_authorities(&listed);
            loaded.authorities_listed = true;
        }
        let mut files = BTreeMap::new();
        for path in self.loaded.creds.keys().filter_map(CredKey::path) {
            let digest = tokio::fs::read(path)
                .await
                .ok()
                .map(|b| crate::backend::files::sha256(&b));
            files.insert(path.to_owned(), digest);
        }
        let sas = parse_sas(&sas);
        let answers = self.answers(desired, narrow.as_deref(), &sas);
        Ok(Observed {
            conns: self
                .listed
                .as_ref()
                .map(|(c, _)| Arc::clone(c))
                .unwrap_or_default(),
            sas,
            loaded: Arc::clone(&self.loaded),
            files,
            clock: self.epoch.elapsed(),
            answers,
        })
    }

    /// A fresh `list-sas` and `list-conns`, read-only.
    async fn diagnose_view(&mut self, desired: &Desired) -> IkeView {
        let sas = match self.listing("list-sas", "list-sa", &[]).await {
            Ok(sas) => parse_sas(&sas),
            Err(e) => return IkeView::Unreachable(backend_error(e).to_string()),
        };
        match self.listing("list-conns", "list-conn", &[]).await {
            Ok(conns) => IkeView::Tunnels(status::views(desired, &parse_conns(&conns), &sas)),
            Err(e) => IkeView::Unreachable(backend_error(e).to_string()),
        }
    }

    fn plan(&self, desired: &Desired, observed: &Observed) -> Vec<Action> {
        plan::plan_with(&self.memo, desired, observed)
    }

    fn plan_in(&self, desired: &Desired, observed: &Observed, scope: &Scope) -> Vec<Action> {
        plan::plan_in(&self.memo, desired, observed, scope)
    }

    async fn apply(
        &mut self,
        desired: &Desired,
        actions: Vec<Action>,
    ) -> Result<ApplyReport, BackendError> {
        self.apply_actions(desired, actions).await
    }

    fn status(&self, desired: &Desired, observed: &Observed) -> BTreeMap<String, LiveStatus> {
        status::status_with(&self.memo, desired, observed)
    }

    fn status_in(
        &self,
        desired: &Desired,
        observed: &Observed,
        scope: &Scope,
    ) -> BTreeMap<String, LiveStatus> {
        status::status_in(&self.memo, desired, observed, scope)
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        let observed = self.observe().await?;
        let actions = plan::plan(&Desired::default(), &observed);
        let n = actions.len();
        self.apply(&Desired::default(), actions).await?;
        info!("unloaded {n} connections and credentials from charon");
        Ok(())
    }

    fn events(&mut self) -> Option<mpsc::Receiver<BackendEvent>> {
        self.events.take()
    }
}
