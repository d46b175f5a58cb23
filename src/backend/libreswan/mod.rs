//! `--ike-daemon=libreswan`: drives pluto through `ipsec` commands, with the Python
//! monitor's reconcile loop (OVS HEAD) and without its per-connection subprocess storm.
//!
//! A pass is `observe` (one `ipsec status`, file hashes, optionally `certutil -L`) → `plan`
//! (pure, [`plan`]) → `apply` ([`apply`]: files, NSS, deletes, one `addconn` per 200
//! connections, a bounded pool of concurrent `whack --initiate`) → `status` (pure,
//! [`live`]). The per-connection timestamps that decide "defunct" and "bring up" after 15 s
//! live here, because the daemon calls a pass at least every 15 s and on every change.
//!
//! The Libreswan version (from `ipsec --version` at start) picks the command forms, whether
//! `keyingtries` is written, and the NSS directory default ([`version`]).

pub mod apply;
pub mod certs;
pub mod live;
pub mod nss;
pub mod plan;
pub mod render;
pub mod status;
pub mod version;
pub mod watch;

#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod certs_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use self::nss::Nss;
use self::plan::{Action, Memory, Observed, Pending};
use self::render::Layout;
use self::status::PlutoStatus;
use self::version::{Commands, Version};
use super::command::{Cmd, CommandError};
use super::files::{FileError, sha256, sha256_of, under_root};
use super::ike_view::IkeView;
use super::initiator;
use super::templates::{TemplateError, Templates};
use super::{
    ApplyReport, Backend, BackendError, BackendEvent, BackendKind, LiveStatus, Scope, StartOptions,
};
use crate::model::{Desired, TunnelType};

/// The stderr line Libreswan 5.3 prints for every conn loaded with `auto=route` by an
/// explicit add (libreswan issue #2584); harmless.
const AUTO_ROUTE_WARNING: &str = "overriding auto=route with auto=add";

#[derive(Debug, Error)]
pub enum LibreswanError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Nss(#[from] nss::NssError),
}

impl From<LibreswanError> for BackendError {
    fn from(e: LibreswanError) -> Self {
        match e {
            LibreswanError::Command(CommandError::Timeout { what, secs }) => {
                BackendError::Timeout { what, secs }
            }
            other => BackendError::Io {
                what: "libreswan".into(),
                detail: other.to_string(),
            },
        }
    }
}

/// What the backend takes from the command line; `app::setup` builds it.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `--root-prefix`.
    pub root: PathBuf,
    /// `--ipsec-conf`, `--root-ipsec-conf`, `--ipsec-secrets`, `--ipsec-ctl`, `--ipsec-d`.
    pub ipsec_conf: Option<PathBuf>,
    pub root_ipsec_conf: Option<PathBuf>,
    pub ipsec_secrets: Option<PathBuf>,
    pub ipsec_ctl: Option<PathBuf>,
    pub ipsec_d: Option<PathBuf>,
    /// `--template-dir`, already below the root prefix.
    pub template_dir: PathBuf,
    /// `--command-timeout`: the limit of every `ipsec` command.
    pub timeout: Duration,
    /// `--use-default-crypto`.
    pub use_default_crypto: bool,
}

/// Files and sockets, `--root-prefix` applied (except to `--root-ipsec-conf`, as in the
/// Python monitor: it names the host's main config).
#[derive(Debug, Clone)]
pub struct Paths {
    pub ipsec: PathBuf,
    pub conf: PathBuf,
    pub root_conf: PathBuf,
    pub secrets: PathBuf,
    pub ctl: PathBuf,
    /// `--ipsec-d`, when given; otherwise the version's default.
    pub nss_dir: Option<PathBuf>,
    pub root: PathBuf,
}

impl Paths {
    pub fn new(config: &Config) -> Self {
        let root = config.root.clone();
        let at = |p: Option<&PathBuf>, default: &str| {
            under_root(&root, p.map(PathBuf::as_path).unwrap_or(Path::new(default)))
        };
        let conf = at(config.ipsec_conf.as_ref(), "/etc/ipsec.conf");
        Self {
            ipsec: under_root(&root, Path::new("/usr/sbin/ipsec")),
            root_conf: config
                .root_ipsec_conf
                .clone()
                .unwrap_or_else(|| conf.clone()),
            conf,
            secrets: at(config.ipsec_secrets.as_ref(), "/etc/ipsec.secrets"),
            ctl: at(config.ipsec_ctl.as_ref(), "/run/pluto/pluto.ctl"),
            nss_dir: config.ipsec_d.as_ref().map(|d| under_root(&root, d)),
            root,
        }
    }

    /// Whether the file we write is also the root config (then it has `config setup`).
    pub fn own_root(&self) -> bool {
        self.root_conf == self.conf
    }
}

/// The Libreswan backend.
pub struct Libreswan {
    paths: Paths,
    default_crypto: bool,
    timeout: Duration,
    templates: Templates,
    /// Each tunnel's rendered text, reused while it is unchanged.
    sections: render::Sections,
    cmds: Commands,
    layout: Layout,
    nss: Nss,
    memory: Memory,
    pending: HashMap<String, (Pending, Instant)>,
    /// Whether `certutil -L` runs at observe time (certificates configured now or before,
    /// and at start-up, to find what a previous run left).
    nss_wanted: bool,
    /// The tunnel count for which "Connections for all(N) … are Up." was logged.
    announced: Mutex<Option<usize>>,
    /// The desired tunnels that are up, kept across passes over a few tunnels.
    up: Mutex<BTreeSet<String>>,
    /// The last start alias handed out, as a number (see `apply`).
    last_token: u128,
    /// Maximum concurrent `whack` calls.
    pub concurrency: usize,
}

impl Libreswan {
    pub fn new(config: &Config) -> Result<Self, LibreswanError> {
        let paths = Paths::new(config);
        let templates = Templates::load(Some(&config.template_dir), render::DEFAULTS)?;
        for name in templates.overridden() {
            info!("using template override {name}");
        }
        let timeout = config.timeout;
        let version = Version::unknown();
        Ok(Self {
            layout: Layout::new(paths.own_root(), config.use_default_crypto, &version),
            nss: Nss::new(
                paths
                    .nss_dir
                    .as_deref()
                    .unwrap_or(&under_root(&paths.root, version.default_nss_dir())),
                timeout,
            ),
            cmds: Commands {
                version,
                ctl: paths.ctl.clone(),
                config: paths.root_conf.clone(),
            },
            default_crypto: config.use_default_crypto,
            timeout,
            templates,
            sections: render::Sections::default(),
            paths,
            memory: Memory::default(),
            pending: HashMap::new(),
            nss_wanted: true,
            announced: Mutex::new(None),
            up: Mutex::new(BTreeSet::new()),
            last_token: 0,
            concurrency: 16,
        })
    }

    /// An `ipsec` command with our time limit and stderr filter.
    fn ipsec(&self, what: impl Into<String>, args: Vec<String>) -> Cmd {
        Cmd::new(&self.paths.ipsec, what, self.timeout)
            .args(args)
            .ignore_stderr(AUTO_ROUTE_WARNING)
    }

    fn set_version(&mut self, version: Version) {
        self.layout = Layout::new(self.paths.own_root(), self.default_crypto, &version);
        let dir = self
            .paths
            .nss_dir
            .clone()
            .unwrap_or_else(|| under_root(&self.paths.root, version.default_nss_dir()));
        self.nss = Nss::new(&dir, self.timeout);
        self.cmds.version = version;
    }

    async fn probe_version(&self) -> Version {
        if !self.paths.ipsec.exists() {
            error!("IKE daemon is not installed in the system.");
        }
        let cmd = Cmd::new(
            &self.paths.ipsec,
            "query the Libreswan version",
            self.timeout,
        )
        .arg("--version");
        match cmd.run().await.ok().and_then(|o| Version::parse(&o.stdout)) {
            Some(v) => v,
            None => {
                warn!("cannot tell the Libreswan version; assuming the oldest behaviour");
                Version::unknown()
            }
        }
    }

    /// Takes over the config file a previous run left: its conns are ours to delete, and
    /// their start aliases are kept so that an unchanged state renders the same file.
    fn adopt_our_file(&mut self) {
        let text = std::fs::read_to_string(&self.paths.conf).unwrap_or_default();
        let (conns, starts) = render::parse_own_file(&text);
        self.memory.owned.extend(conns);
        self.memory.starts = starts;
    }

    /// Startup restart: our NSS nicknames out, empty files, `ipsec restart`.
    async fn restart(&mut self) -> Result<(), LibreswanError> {
        match self.nss.list().await {
            Ok(nicks) => {
                for nick in nicks {
                    if let Err(e) = self.nss.delete(&nick).await {
                        warn!("{e}");
                    }
                }
            }
            Err(e) => warn!("cannot clear our certificates from the NSS database: {e}"),
        }
        self.write_files(&Desired::default()).await?;
        self.ipsec("restart the IKE daemon", vec!["restart".into()])
            .run_checked()
            .await?;
        self.memory = Memory::default();
        self.pending.clear();
        Ok(())
    }

    fn render(&self, desired: &Desired) -> Result<render::Rendered, TemplateError> {
        render::render(
            &self.templates,
            &self.sections,
            &self.layout,
            desired,
            &self.memory.starts,
        )
    }

    /// Logs once that every tunnel is up. `live` is the state of the tunnels in `scope`; the
    /// others keep the state the previous passes saw.
    fn announce(&self, desired: &Desired, live: &BTreeMap<String, LiveStatus>, scope: &Scope) {
        let Ok(mut up) = self.up.lock() else {
            return;
        };
        match scope {
            Scope::All => up.clear(),
            Scope::Tunnels(names) => {
                for name in names {
                    up.remove(name);
                }
            }
        }
        up.extend(
            live.iter()
                .filter(|(_, l)| l.state == crate::backend::LiveState::Up)
                .map(|(name, _)| name.clone()),
        );
        let n = desired.tunnels.len();
        let all_up = n > 0 && up.len() == n;
        if let Ok(mut announced) = self.announced.lock() {
            if !all_up {
                *announced = None;
            } else if *announced != Some(n) {
                info!("Connections for all({n}) configured tunnels are Up.");
                *announced = Some(n);
            }
        }
    }

    /// `ipsec status` (read-only).
    async fn status_text(&self) -> Result<String, BackendError> {
        let out = self
            .ipsec("read the IPsec status", self.cmds.status())
            .collect_stdout()
            .run()
            .await
            .map_err(LibreswanError::from)?;
        if out.code != 0 {
            return Err(BackendError::Unavailable(
                "pluto".into(),
                out.stderr
                    .trim()
                    .lines()
                    .next()
                    .unwrap_or("ipsec status failed")
                    .into(),
            ));
        }
        Ok(out.stdout)
    }
}

impl Backend for Libreswan {
    type Observed = Observed;
    type Action = Action;

    fn kind(&self) -> BackendKind {
        BackendKind::Libreswan
    }

    async fn start(&mut self, opts: &StartOptions) -> Result<(), BackendError> {
        let version = self.probe_version().await;
        info!("Libreswan version {} detected", version.text);
        self.set_version(version);
        self.adopt_our_file();
        if opts.restart_ike_daemon {
            self.restart().await?;
        }
        Ok(())
    }

    async fn observe(&mut self) -> Result<Observed, BackendError> {
        self.observe_in(&Desired::default(), &Scope::All).await
    }

    /// A pass over `scope` parses only its tunnels' part of pluto's status.
    async fn observe_in(
        &mut self,
        desired: &Desired,
        scope: &Scope,
    ) -> Result<Observed, BackendError> {
        let out = self.status_text().await?;
        let pluto = PlutoStatus::parse_in(&out, |c| {
            crate::backend::strongswan_stroke::plan::covers(scope, c)
        });
        self.pending.retain(|c, _| !pluto.active.contains(c));
        // Only GRE tunnels that are not up need the answer (a route look-up each).
        let gre_answers = desired
            .tunnels
            .iter()
            .filter(|(name, t)| t.conf.kind == TunnelType::Gre && scope.covers(name))
            .filter(|(_, t)| t.conn_names().iter().any(|c| !pluto.active.contains(c)))
            .filter(|(_, t)| !initiator::we_initiate(t.conf.local_ip, t.conf.remote_ip))
            .map(|(name, _)| name.clone())
            .collect();
        let nss = if self.nss_wanted {
            match self.nss.list().await {
                Ok(n) => Some(n),
                Err(e) => {
                    warn!("{e}");
                    None
                }
            }
        } else {
            None
        };
        let now = Instant::now();
        Ok(Observed {
            conf_hash: sha256_of(&self.paths.conf),
            secrets_hash: sha256_of(&self.paths.secrets),
            nss,
            cert_hashes: self
                .memory
                .synced
                .iter()
                .filter_map(|(nick, (src, _))| Some((nick.clone(), sha256_of(src.cert_path()?))))
                .collect(),
            // As the model read it: a malformed bundle makes the CA-signed tunnels invalid
            // there and leaves the last good one here, so NSS keeps the CAs it holds.
            ca_bundle: desired
                .global
                .ca_bundle
                .as_ref()
                .map(|b| Ok(b.members.clone())),
            pending: self
                .pending
                .iter()
                .map(|(c, (p, at))| (c.clone(), (*p, now.duration_since(*at))))
                .collect(),
            pluto,
            gre_answers,
        })
    }

    fn plan(&self, desired: &Desired, observed: &Observed) -> Vec<Action> {
        self.plan_in(desired, observed, &Scope::All)
    }

    fn plan_in(&self, desired: &Desired, observed: &Observed, scope: &Scope) -> Vec<Action> {
        let files = self
            .render(desired)
            .ok()
            .map(|r| (sha256(r.conf.as_bytes()), sha256(r.secrets.as_bytes())));
        plan::plan_in(desired, observed, &self.memory, files, scope)
    }

    async fn apply(
        &mut self,
        desired: &Desired,
        actions: Vec<Action>,
    ) -> Result<ApplyReport, BackendError> {
        Ok(self.run_actions(desired, actions).await?)
    }

    fn status(&self, desired: &Desired, observed: &Observed) -> BTreeMap<String, LiveStatus> {
        self.status_in(desired, observed, &Scope::All)
    }

    fn status_in(
        &self,
        desired: &Desired,
        observed: &Observed,
        scope: &Scope,
    ) -> BTreeMap<String, LiveStatus> {
        let live = live::status_in(desired, observed, scope);
        self.announce(desired, &live, scope);
        live
    }

    async fn diagnose_view(&mut self, desired: &Desired) -> IkeView {
        match self.status_text().await {
            Ok(text) => IkeView::Tunnels(live::views(desired, &PlutoStatus::parse(&text))),
            Err(e) => IkeView::Unreachable(e.to_string()),
        }
    }

    /// pluto's death and return, from its pid file beside the control socket ([`watch`]).
    fn events(&mut self) -> Option<mpsc::Receiver<BackendEvent>> {
        Some(watch::spawn(
            self.paths.ctl.with_file_name("pluto.pid"),
            watch::PERIOD,
        ))
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        let empty = Desired::default();
        self.nss_wanted = true;
        let mut observed = self.observe().await?;
        let mut actions = self.plan(&empty, &observed);
        for a in &actions {
            info!("{a}");
        }
        let deletes = actions
            .iter()
            .filter(|a| matches!(a, Action::Delete { .. } | Action::DeleteShunt { .. }))
            .count();
        if deletes > 1 {
            // One `whack` removes every conn we loaded (all carry our alias); the plan then
            // finds what it missed, e.g. conns a previous monitor loaded without the alias.
            let cmd = self.cmds.delete(render::ALIAS_ALL);
            let r = self.ipsec("delete our ipsec connections", cmd).run().await;
            if let Some(f) = apply::failure(&r) {
                warn!(
                    "Failed to delete the ipsec connections with alias {}: {f}",
                    render::ALIAS_ALL
                );
            }
            observed = self.observe().await?;
            actions = self.plan(&empty, &observed);
        }
        let report = self.run_actions(&empty, actions).await?;
        match report.errors.values().next() {
            Some(e) => Err(BackendError::Io {
                what: "cleanup".into(),
                detail: e.clone(),
            }),
            None => Ok(()),
        }
    }
}
