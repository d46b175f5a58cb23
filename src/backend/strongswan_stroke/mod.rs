//! strongSwan in legacy mode: `ipsec.conf` + `ipsec.secrets` rendered from templates, driven
//! through `ipsec` (starter and stroke), as Debian's openvswitch-ipsec users run it today.
//!
//! A pass (see `backend/mod.rs`):
//! - **observe**: `ipsec statusall` ([`statusall`]), our files on disk and their certificate
//!   stamps ([`conffile`]);
//! - **plan** (pure, [`plan`]): render the files ([`render`]) and compare; an unchanged
//!   desired state on a converged charon plans nothing, so established SAs are never touched;
//! - **apply** (`apply.rs`): write files only on change (atomically, secrets 0600), one `ipsec update`,
//!   one `ipsec rereadsecrets`, then `ipsec stroke down-nb` for outdated SAs only; then wait
//!   (bounded) until starter, which applies `update` asynchronously, has loaded the
//!   connections, so the status written to OVSDB describes the new state;
//! - **status** (pure, [`live`]).
//!
//! A pass caused by an OVSDB change covers only the tunnels it touched ([`Scope::Tunnels`]):
//! charon's output is scanned but only those tunnels' entries are parsed
//! ([`statusall::parse_in`]), only their sections of our file are split out, the plan
//! reloads and brings down only their connections, and the files are rendered once per
//! pass (plan keeps its result for apply and status). `ipsec statusall <name>` is not used:
//! it filters on the peer configuration's name, and charon merges the connections of
//! several tunnels to one peer into one peer configuration, so a connection's own name may
//! list nothing. The periodic pass and the first one cover everything.
//!
//! The number of external commands of a pass does not depend on the number of tunnels: a cold
//! start of 1,000 tunnels is one `update`, one `rereadsecrets` and two `statusall`, where the
//! Python monitor ran one `down-nb` per connection on every change.
//!
//! Connection names always carry the tunnel's published version (`ipsec-version`), as in
//! the other backends: across restarts the model keeps versions in its versions file, so
//! nothing here renumbers them.
//!
//! A connection charon lost (see [`plan`]) is noticed by remembering which of ours it was
//! seen holding since our last `update`/`reload`.
//!
//! Paths are the Python monitor's: `--root-prefix` + `/etc/ipsec.conf`, `/etc/ipsec.secrets`,
//! `/etc/strongswan.d/ovs.conf` (written before a restart only) and `/usr/sbin/ipsec`.
//! charon's pid file, `/var/run/charon.pid`, is watched ([`pidwatch`]) so that a killed
//! charon is noticed within a second, not at the next periodic pass; it is not below
//! `--root-prefix`, which relocates the monitor's files, not the run directory strongSwan
//! was built with.

mod apply;
mod cafiles;
pub mod conffile;
pub mod live;
pub mod plan;
pub mod render;
#[cfg(test)]
mod scope_tests;
pub mod statusall;
#[cfg(test)]
pub(crate) mod testutil;

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{error, info};

use self::plan::{Action, Observed};
use self::render::Rendered;
use self::statusall::Status;
use super::command::{Cmd, CommandError};
use super::files::{FileError, under_root};
use super::ike_view::IkeView;
use super::pidwatch;
use super::templates::{TemplateError, Templates};
use super::{
    ApplyReport, Backend, BackendError, BackendEvent, BackendKind, LiveStatus, Scope, StartOptions,
};
use crate::model::Desired;
use crate::model::cert::FsCertSource;

/// How long apply waits for starter to load the connections of an `update` or `reload`;
/// unless they all showed up, a missing connection is not reloaded for that long after one
/// (starter may still be busy).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Where charon writes its pid (strongSwan's `piddir` on Debian and Fedora).
const CHARON_PID: &str = "/var/run/charon.pid";

/// How long charon may take to answer after `ipsec restart`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection charon has not loaded since our last `update`/`reload` (it may refuse it) is
/// reloaded again at most this often; one it held and lost is reloaded at once.
const RECONCILE_BACKOFF: Duration = Duration::from_secs(60);

/// What `ipsec` prints on stderr when all goes well.
const PROGRESS: &[&str] = &[
    "Starting strongSwan ",
    "Stopping strongSwan IPsec...",
    "Updating strongSwan IPsec configuration...",
    "Reloading strongSwan IPsec configuration...",
];

#[derive(Debug, Error)]
pub enum StrokeError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("charon does not answer: `ipsec statusall` exited with code {0}")]
    NotRunning(i32),
    /// `ipsec statusall` exits 0 while starter runs (or is a zombie) even when charon is
    /// gone; only stroke's complaint on stderr says so.
    #[error("charon does not answer: {0}")]
    Unreachable(String),
}

impl From<StrokeError> for BackendError {
    fn from(e: StrokeError) -> Self {
        match e {
            StrokeError::Command(CommandError::Timeout { what, secs }) => {
                BackendError::Timeout { what, secs }
            }
            StrokeError::NotRunning(_) | StrokeError::Unreachable(_) => {
                BackendError::Unavailable("strongSwan".into(), e.to_string())
            }
            e => BackendError::Io {
                what: "strongSwan".into(),
                detail: e.to_string(),
            },
        }
    }
}

/// What the backend takes from the command line; `app::setup` builds it.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--root-prefix`.
    pub root: PathBuf,
    /// `--template-dir`, already below the root prefix.
    pub template_dir: PathBuf,
    /// `--command-timeout`: the limit of every `ipsec` command.
    pub timeout: Duration,
}

/// The files and the program the backend uses, below `--root-prefix`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub conf: PathBuf,
    pub secrets: PathBuf,
    /// One file per CA of the `ca_cert` bundle (see [`cafiles`]).
    pub ca_dir: PathBuf,
    pub ovs_conf: PathBuf,
    pub ipsec: PathBuf,
    /// charon's pid file (strongSwan's run directory; see the module docs).
    pub charon_pid: PathBuf,
}

impl Paths {
    pub fn new(root: &Path) -> Self {
        let p = |s: &str| under_root(root, Path::new(s));
        Self {
            conf: p("/etc/ipsec.conf"),
            secrets: p("/etc/ipsec.secrets"),
            ca_dir: p("/etc/ipsec.d/ovs-cacerts"),
            ovs_conf: p("/etc/strongswan.d/ovs.conf"),
            ipsec: p("/usr/sbin/ipsec"),
            charon_pid: PathBuf::from(CHARON_PID),
        }
    }
}

/// What a plan rendered, kept for the apply and the status of the same pass.
struct Planned {
    /// The desired state it was computed from.
    input: Desired,
    scope: Scope,
    rendered: Rendered,
}

/// The legacy strongSwan backend.
pub struct StrongSwanStroke {
    paths: Paths,
    templates: Templates,
    /// Rendered `conn` sections of unchanged tunnels, reused by the next rendering.
    sections: render::Sections,
    timeout: Duration,
    certs: FsCertSource,
    /// A `statusall` taken after our last action, and the scope it was parsed for, used by
    /// the next observation.
    fresh: Option<(Scope, Status)>,
    /// When we last ran `update` or `reload`.
    last_reload: Option<Instant>,
    /// charon held every connection that `update` or `reload` was for when apply finished
    /// waiting for it: starter is done with it.
    settled: bool,
    /// Our connections charon was seen holding since then (see [`Observed::lost`]).
    seen: BTreeSet<String>,
    /// The last plan's rendering.
    planned: Mutex<Option<Planned>>,
}

/// Not derived: the rendering holds PSKs.
impl std::fmt::Debug for StrongSwanStroke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrongSwanStroke")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl StrongSwanStroke {
    pub fn new(config: &Config) -> Result<Self, StrokeError> {
        let templates = Templates::load(Some(&config.template_dir), render::DEFAULTS)?;
        for name in templates.overridden() {
            info!("using the administrator's template {name}");
        }
        Ok(Self::with(
            Paths::new(&config.root),
            templates,
            config.timeout,
        ))
    }

    pub fn with(paths: Paths, templates: Templates, timeout: Duration) -> Self {
        if !paths.ipsec.exists() {
            error!("IKE daemon is not installed in the system.");
        }
        Self {
            paths,
            templates,
            sections: render::Sections::default(),
            timeout,
            certs: FsCertSource::new(),
            fresh: None,
            last_reload: None,
            settled: true,
            seen: BTreeSet::new(),
            planned: Mutex::new(None),
        }
    }

    fn ipsec<I, S>(&self, args: I, what: &str) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PROGRESS.iter().fold(
            Cmd::new(&self.paths.ipsec, what, self.timeout).args(args),
            |c, p| c.ignore_stderr(*p),
        )
    }

    async fn statusall(&self, scope: &Scope) -> Result<Status, StrokeError> {
        let out = self
            .ipsec(["statusall"], "query the IPsec status")
            .collect_stdout()
            .run()
            .await?;
        if out.code != 0 {
            return Err(StrokeError::NotRunning(out.code));
        }
        if let Some(reason) = stroke_unreachable(&out.stderr) {
            return Err(StrokeError::Unreachable(reason.to_owned()));
        }
        Ok(statusall::parse_in(&out.stdout, |c| plan::covers(scope, c)))
    }

    /// Our files as they are on disk; only the sections and secrets lines of `scope`'s
    /// tunnels are split out.
    fn observe_files(&mut self, desired: &Desired, scope: &Scope) -> Result<Observed, StrokeError> {
        let text = match std::fs::read_to_string(&self.paths.conf) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(source) => {
                return Err(StrokeError::Read {
                    path: self.paths.conf.clone(),
                    source,
                });
            }
        };
        let (conf, stamps) = match text {
            Some(t) => {
                let (body, stamps) = conffile::split(&t);
                (Some(body), stamps)
            }
            None => (None, conffile::Stamps::new()),
        };
        let (secrets, secret_lines) = match std::fs::read(&self.paths.secrets) {
            Ok(bytes) => {
                let mode = std::fs::metadata(&self.paths.secrets)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .unwrap_or(0);
                let text = String::from_utf8_lossy(&bytes);
                let lines = match scope {
                    Scope::All => conffile::secret_lines(&text),
                    Scope::Tunnels(names) => {
                        let sels: std::collections::BTreeSet<String> = names
                            .iter()
                            .filter_map(|n| desired.tunnels.get(n))
                            .map(render::selectors)
                            .collect();
                        conffile::secret_lines_in(&text, |s| sels.contains(s))
                    }
                };
                (Some((crate::backend::files::sha256(&bytes), mode)), lines)
            }
            Err(_) => (None, BTreeMap::new()),
        };
        Ok(Observed {
            conf_sections: conf
                .as_deref()
                .map(|c| conffile::sections_in(c, |n| plan::covers(scope, n)))
                .unwrap_or_default(),
            conf,
            secrets,
            secret_lines,
            cert_changed: conffile::changed(&stamps, &mut self.certs),
            status: Status::default(),
            settling: !self.settled
                && self
                    .last_reload
                    .is_some_and(|t| t.elapsed() < SETTLE_TIMEOUT),
            backoff: self
                .last_reload
                .is_some_and(|t| t.elapsed() < RECONCILE_BACKOFF),
            lost: BTreeSet::new(),
        })
    }

    fn render(&self, desired: &Desired) -> Result<Rendered, TemplateError> {
        render::render(&self.paths.ca_dir, &self.templates, &self.sections, desired)
    }

    /// Compares charon's connections with those it was seen holding: the ones it dropped
    /// since are lost (for `obs`), and the ones of `desired` it holds now are remembered.
    fn note_loaded(&mut self, desired: &Desired, scope: &Scope, obs: &mut Observed) {
        let loaded = obs.status.loaded();
        let gone = |c: &String| self.seen.contains(c) && !loaded.contains(c.as_str());
        // A pass over a few tunnels looks at their connections only, not at all it saw.
        obs.lost = match scope {
            Scope::All => self.seen.iter().filter(|c| gone(c)).cloned().collect(),
            Scope::Tunnels(names) => names
                .iter()
                .filter_map(|n| desired.tunnels.get(n))
                .flat_map(|t| t.conn_names())
                .filter(gone)
                .collect(),
        };
        let ours = |c: &&str| {
            plan::tunnel_candidates(c).iter().any(|t| {
                desired
                    .tunnels
                    .get(*t)
                    .is_some_and(|dt| dt.conn_names().iter().any(|n| n == c))
            })
        };
        self.seen
            .extend(loaded.into_iter().filter(ours).map(str::to_owned));
    }

    /// The rendering the last plan made for `desired`, if it was for that state.
    fn take_planned(&self, desired: &Desired) -> Option<Planned> {
        let mut planned = self.planned.lock().unwrap_or_else(PoisonError::into_inner);
        planned.take().filter(|p| p.input == *desired)
    }
}

/// stroke's own complaint that charon's socket does not answer, from `ipsec statusall`'s
/// stderr: the `ipsec` script's exit code says only whether starter runs, so a dead charon
/// under a live (or not yet reaped) starter reads as a charon holding nothing.
fn stroke_unreachable(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("failed to connect to stroke socket"))
}

impl Backend for StrongSwanStroke {
    type Observed = Observed;
    type Action = Action;

    fn kind(&self) -> BackendKind {
        BackendKind::StrongSwan
    }

    async fn start(&mut self, opts: &StartOptions) -> Result<(), BackendError> {
        if opts.restart_ike_daemon {
            self.restart().await?;
        }
        Ok(())
    }

    async fn observe(&mut self) -> Result<Observed, BackendError> {
        self.observe_in(&Desired::default(), &Scope::All).await
    }

    async fn observe_in(
        &mut self,
        desired: &Desired,
        scope: &Scope,
    ) -> Result<Observed, BackendError> {
        // A status taken after our last action serves a pass it covers.
        let status = match self.fresh.take() {
            Some((fresh, s)) if fresh == Scope::All || fresh == *scope => s,
            _ => self.statusall(scope).await?,
        };
        let mut obs = self.observe_files(desired, scope)?;
        obs.status = status;
        self.note_loaded(desired, scope, &mut obs);
        Ok(obs)
    }

    fn plan(&self, desired: &Desired, observed: &Observed) -> Vec<Action> {
        self.plan_in(desired, observed, &Scope::All)
    }

    fn plan_in(&self, desired: &Desired, observed: &Observed, scope: &Scope) -> Vec<Action> {
        let (actions, planned) = match self.render(desired) {
            Ok(r) => (
                plan::plan(desired, &r, observed, scope),
                Some(Planned {
                    input: desired.clone(),
                    scope: scope.clone(),
                    rendered: r,
                }),
            ),
            // apply renders again and reports the template error for the whole pass.
            Err(_) => (vec![Action::WriteFiles], None),
        };
        *self.planned.lock().unwrap_or_else(PoisonError::into_inner) = planned;
        actions
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
        let planned = self.planned.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = planned.as_ref().filter(|p| p.input == *desired) {
            return live::status_in(desired, &observed.status, &p.rendered.rejected, scope);
        }
        drop(planned);
        match self.render(desired) {
            Ok(r) => live::status_in(desired, &observed.status, &r.rejected, scope),
            Err(_) => live::status_in(
                desired,
                &observed.status,
                &render::rejections(desired),
                scope,
            ),
        }
    }

    async fn diagnose_view(&mut self, desired: &Desired) -> IkeView {
        match self.statusall(&Scope::All).await {
            Ok(st) => IkeView::Tunnels(live::views(desired, &st)),
            Err(e) => IkeView::Unreachable(e.to_string()),
        }
    }

    /// Empties our files, lets starter drop every connection, and brings down our SAs.
    /// charon's death and return, from its pid file ([`pidwatch`]): starter restarts a
    /// crashed charon and loads `ipsec.conf` into it, but the monitor would otherwise learn of
    /// either only at the next periodic pass.
    fn events(&mut self) -> Option<mpsc::Receiver<BackendEvent>> {
        Some(pidwatch::spawn(
            "charon",
            self.paths.charon_pid.clone(),
            None,
            pidwatch::PERIOD,
        ))
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        let none = Desired::default();
        let obs = self.observe().await?;
        let actions = self.plan(&none, &obs);
        for a in &actions {
            info!("{a}");
        }
        self.apply(&none, actions).await?;
        Ok(())
    }
}

#[cfg(test)]
mod unreachable_tests {
    use super::stroke_unreachable;

    #[test]
    fn strokes_complaint_on_stderr_means_charon_does_not_answer() {
        // strongSwan 5.9's stroke, charon killed while starter (or its zombie) remains:
        // `ipsec statusall` exits 0 with this on stderr and nothing on stdout.
        let dead = "connecting to 'unix:///var/run/charon.ctl' failed: Connection refused\n\
                    failed to connect to stroke socket 'unix:///var/run/charon.ctl'\n";
        assert_eq!(
            stroke_unreachable(dead),
            Some("failed to connect to stroke socket 'unix:///var/run/charon.ctl'")
        );
        assert_eq!(stroke_unreachable(""), None);
        assert_eq!(stroke_unreachable("some warning\n"), None);
    }
}
