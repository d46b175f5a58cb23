//! strongSwan over VICI (`--ike-daemon=strongswan --strongswan-mode=vici`): connections and
//! credentials are loaded straight into charon's memory over its control socket, with no
//! config file and no subprocess (ovs-issues#336).
//!
//! - `observe`: `list-conns` + `list-sas` on one command connection, plus the SHA-256 of each
//!   credential file we loaded (so a renewed certificate is noticed by content);
//! - `plan` (pure, [`plan`]): credentials and connections to (re)load — one connection, so
//!   one IKE_SA, per tunnel ([`conns`]) —, tunnels to initiate, our stale connections and
//!   credentials to unload;
//! - `apply`: every request of the plan pipelined on the same connection (a cold start of
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
use tracing::{debug, info, warn};

use self::conns::ConnMemo;
use self::conns::ike_conn_name;
use self::creds::{CredKey, CredSource, Sha, load_request, psk_source, unload_request, users};
use self::observe::{
    IkeSa, Loaded, Observed, ObservedConn, parse_authorities, parse_conns, parse_sas,
};
use self::plan::{Action, body_digest};
use super::ike_view::IkeView;
use super::initiator;
use super::vici::{Connection, Message, ViciError, check};
use super::{
    ApplyReport, Backend, BackendError, BackendEvent, BackendKind, LiveStatus, Scope, StartOptions,
};
use crate::model::{Auth, Desired};

/// How old the kept `list-conns` may get before a pass lists again (below the 15 s periodic
/// pass, so every periodic pass lists).
pub const RELIST_CONNS: Duration = Duration::from_secs(10);

/// charon's default VICI socket (below `--root-prefix`).
pub const DEFAULT_SOCKET: &str = "/var/run/charon.vici";

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
    /// A backend for the VICI socket at `socket`; `timeout` bounds every VICI exchange.
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        Self {
            socket,
            timeout,
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

    async fn batch(&mut self, requests: Vec<(String, Message)>) -> Result<Vec<Message>, ViciError> {
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

/// What a request of the batch was for, to account for its answer.
enum Pending {
    Cred(CredKey, Sha),
    Conn {
        name: String,
        digest: Sha,
        tunnel: Option<String>,
        /// As `list-conns` would show it once loaded.
        listed: ObservedConn,
    },
    Initiate {
        conn: String,
        child: String,
    },
    Terminate(String),
    UnloadConn(String),
    UnloadCred(CredKey),
    /// `flush-certs` after a renewed certificate was loaded.
    Flush,
    /// A change to a CA bundle's authorities.
    Member(bundles::Member),
    /// An authority an earlier run left, unloaded.
    Stale,
}

/// `terminate` for every IKE_SA of connection `name`: forced (charon sends the DELETE and
/// destroys the SA without waiting for the answer) and without blocking (`timeout -1`).
fn terminate_request(name: &str) -> Message {
    Message::new()
        .kv("ike", name)
        .kv("force", "yes")
        .kv("timeout", "-1")
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
        let mut report = ApplyReport::default();
        // A PSK's source, looked up for the credentials loaded only.
        let psk = |key: &CredKey| match key {
            CredKey::Shared(t) => desired.tunnels.get(t).and_then(psk_source),
            _ => None,
        };
        let mut requests = Vec::new();
        let mut pending = Vec::new();
        let mut renewed = false;
        // A bundle that could not be read or parsed may list authorities an earlier run left.
        let mut bundle_failed = false;
        for action in actions {
            match action {
                Action::LoadCred(CredKey::Authority(path)) => {
                    let loaded = Arc::make_mut(&mut self.loaded);
                    match bundles::load(loaded, &path).await {
                        Ok(list) => {
                            for (cmd, body, member) in list {
                                requests.push((cmd, body));
                                pending.push(Pending::Member(member));
                            }
                        }
                        Err(e) => {
                            bundle_failed = true;
                            for t in users(desired, &CredKey::Authority(path.clone())) {
                                report.errors.insert(t, e.clone());
                            }
                        }
                    }
                }
                Action::UnloadStaleAuthorities(_) if bundle_failed => {}
                Action::UnloadStaleAuthorities(_) => {
                    for (cmd, body) in bundles::unload_stale(Arc::make_mut(&mut self.loaded)) {
                        requests.push((cmd, body));
                        pending.push(Pending::Stale);
                    }
                }
                Action::UnloadCred(CredKey::Authority(path)) => {
                    let loaded = Arc::make_mut(&mut self.loaded);
                    for (cmd, body, member) in bundles::unload(loaded, &path) {
                        requests.push((cmd, body));
                        pending.push(Pending::Member(member));
                    }
                }
                Action::LoadCred(key) => {
                    let source = psk(&key);
                    let (secret, owner) = match (&key, &source) {
                        (CredKey::Shared(t), Some(CredSource::Psk { owner, .. })) => {
                            let psk = desired.tunnels.get(t).and_then(|t| match &t.conf.auth {
                                Auth::Psk(p) => Some(p.expose().as_bytes().to_vec()),
                                _ => None,
                            });
                            (psk, Some(owner.clone()))
                        }
                        (k, _) => match k.path() {
                            Some(p) => match tokio::fs::read(p).await {
                                Ok(b) if matches!(k, CredKey::Key(_)) => {
                                    if let Some(w) = crate::backend::files::exposed_key(p) {
                                        warn!("{w}");
                                    }
                                    (Some(b), None)
                                }
                                Ok(b) => (Some(b), None),
                                Err(e) => {
                                    for t in users(desired, &key) {
                                        report
                                            .errors
                                            .insert(t, format!("cannot read {}: {e}", p.display()));
                                    }
                                    continue;
                                }
                            },
                            None => (None, None),
                        },
                    };
                    let Some(secret) = secret else { continue };
                    let digest = match &source {
                        Some(CredSource::Psk { digest, .. }) => *digest,
                        _ => crate::backend::files::sha256(&secret),
                    };
                    let (cmd, body) = load_request(&key, &secret, owner.as_deref());
                    renewed |=
                        matches!(key, CredKey::Cert(_)) && self.loaded.creds.contains_key(&key);
                    requests.push((cmd.to_owned(), body));
                    pending.push(Pending::Cred(key, digest));
                }
                Action::LoadConn(c) => {
                    let digest = body_digest(&c.body);
                    let listed = c.listed();
                    requests.push(("load-conn".to_owned(), c.body));
                    pending.push(Pending::Conn {
                        name: c.name,
                        digest,
                        tunnel: c.tunnel,
                        listed,
                    });
                }
                Action::Initiate { conn, start } => {
                    Arc::make_mut(&mut self.loaded)
                        .attempts
                        .insert(conn.clone(), self.epoch.elapsed());
                    // Every child in the same IKE_SA: charon reuses the IKE_SA of the
                    // connection for the second one even while it is still connecting.
                    for child in start.children {
                        let body = Message::new()
                            .kv("child", child.as_str())
                            .kv("ike", conn.as_str())
                            .kv("timeout", "-1")
                            .kv("init-limits", "no");
                        requests.push(("initiate".to_owned(), body));
                        pending.push(Pending::Initiate {
                            conn: conn.clone(),
                            child,
                        });
                    }
                }
                Action::UnloadConn(name) => {
                    // unload-conn removes the config and its trap policies but leaves its
                    // established IKE_SA and CHILD_SAs (and their kernel SAs and policies)
                    // in place: close them first, without waiting for the peer.
                    requests.push(("terminate".to_owned(), terminate_request(&name)));
                    pending.push(Pending::Terminate(name.clone()));
                    requests.push((
                        "unload-conn".to_owned(),
                        Message::new().kv("name", name.as_str()),
                    ));
                    pending.push(Pending::UnloadConn(name));
                }
                Action::UnloadCred(key) => {
                    let key_id = key
                        .path()
                        .and_then(|p| self.loaded.key_ids.get(p))
                        .map(String::as_str);
                    match unload_request(&key, key_id) {
                        Some((cmd, body)) => {
                            requests.push((cmd.to_owned(), body));
                            pending.push(Pending::UnloadCred(key));
                        }
                        None => {
                            // charon cannot unload it; forget it so it is loaded again if needed.
                            Arc::make_mut(&mut self.loaded).creds.remove(&key);
                        }
                    }
                }
            }
        }
        if renewed {
            // charon's certificate cache would keep presenting (and trusting) the old one.
            requests.push(("flush-certs".to_owned(), Message::new()));
            pending.push(Pending::Flush);
        }
        let answers = self.batch(requests).await.map_err(backend_error)?;
        self.reopened = false;
        // Bundles with a member that failed to load: not recorded as loaded, so retried.
        let mut failed = BTreeSet::new();
        for (p, answer) in pending.into_iter().zip(answers) {
            // A terminate is part of its unload, not an action of its own.
            if !matches!(p, Pending::Terminate(_)) {
                report.applied += 1;
            }
            match p {
                Pending::Cred(key, digest) => match check("load credential", &answer) {
                    Ok(()) => {
                        if let (CredKey::Key(path), Some(id)) = (&key, answer.str("id")) {
                            Arc::make_mut(&mut self.loaded)
                                .key_ids
                                .insert(path.clone(), id.to_owned());
                        }
                        Arc::make_mut(&mut self.loaded).creds.insert(key, digest);
                    }
                    Err(e) => {
                        for t in users(desired, &key) {
                            report.errors.insert(t, e.to_string());
                        }
                    }
                },
                Pending::Conn {
                    name,
                    digest,
                    tunnel,
                    listed,
                } => match check("load-conn", &answer) {
                    Ok(()) => {
                        if let Some((conns, _)) = &mut self.listed {
                            Arc::make_mut(conns).insert(name.clone(), listed);
                        }
                        Arc::make_mut(&mut self.loaded).conns.insert(name, digest);
                    }
                    Err(e) => {
                        let who = tunnel.unwrap_or_else(|| name.clone());
                        warn!("cannot load connection {name}: {e}");
                        report
                            .errors
                            .insert(who, format!("cannot load connection {name}: {e}"));
                    }
                },
                Pending::Initiate { conn, child } => {
                    // The trap policy starts it on the first packet anyway; status shows it.
                    if let Err(e) = check("initiate", &answer) {
                        debug!("initiate {child} of {conn}: {e}");
                    }
                }
                Pending::Terminate(name) => {
                    // "no matching SAs to terminate found" when none was up: nothing to do.
                    if let Err(e) = check("terminate", &answer) {
                        debug!("terminate {name}: {e}");
                    }
                }
                Pending::UnloadConn(name) => {
                    if let Err(e) = check("unload-conn", &answer) {
                        warn!("cannot unload connection {name}: {e}");
                    }
                    if let Some((conns, _)) = &mut self.listed {
                        Arc::make_mut(conns).remove(&name);
                    }
                    Arc::make_mut(&mut self.loaded).conns.remove(&name);
                    Arc::make_mut(&mut self.loaded).attempts.remove(&name);
                }
                Pending::Flush => {
                    if let Err(e) = check("flush-certs", &answer) {
                        warn!("{e}");
                    }
                }
                Pending::Member(member) => {
                    let loaded = Arc::make_mut(&mut self.loaded);
                    if let Err((key, e)) = bundles::answered(loaded, member, &answer, &mut failed) {
                        warn!("{e}");
                        for t in users(desired, &key) {
                            report.errors.insert(t, e.clone());
                        }
                    }
                }
                Pending::Stale => {
                    if let Err(e) = check("unload-authority", &answer) {
                        warn!("{e}");
                    }
                }
                Pending::UnloadCred(key) => {
                    if let Err(e) = check("unload credential", &answer) {
                        warn!("{e}");
                    }
                    if let Some(p) = key.path() {
                        Arc::make_mut(&mut self.loaded).key_ids.remove(p);
                    }
                    Arc::make_mut(&mut self.loaded).creds.remove(&key);
                }
            }
        }
        Ok(report)
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
