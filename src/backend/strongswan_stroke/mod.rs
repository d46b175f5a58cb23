//! strongSwan in legacy mode: `ipsec.conf` + `ipsec.secrets` rendered from templates, driven
//! through `ipsec` (starter and stroke), as Debian's openvswitch-ipsec users run it today.
//!
//! A pass (see `backend/mod.rs`):
//! - **observe**: `ipsec statusall` ([`statusall`]), our files on disk and their certificate
//!   stamps ([`conffile`]);
//! - **plan** (pure, [`plan`]): render the files ([`render`]) and compare; an unchanged
//!   desired state on a converged charon plans nothing, so established SAs are never touched;
//! - **apply**: write files only on change (atomically, secrets 0600), one `ipsec update`,
//!   one `ipsec rereadsecrets`, then `ipsec stroke down-nb` for outdated SAs only; then wait
//!   (bounded) until starter, which applies `update` asynchronously, has loaded the
//!   connections, so the status written to OVSDB describes the new state;
//! - **status** (pure, [`live`]).
//!
//! The number of external commands of a pass does not depend on the number of tunnels: a cold
//! start of 1,000 tunnels is one `update`, one `rereadsecrets` and two `statusall`, where the
//! Python monitor ran one `down-nb` per connection on every change.
//!
//! Paths are the Python monitor's: `--root-prefix` + `/etc/ipsec.conf`, `/etc/ipsec.secrets`,
//! `/etc/strongswan.d/ovs.conf` (written before a restart only) and `/usr/sbin/ipsec`.

pub mod adopt;
pub mod conffile;
pub mod live;
pub mod plan;
pub mod render;
pub mod statusall;
#[cfg(test)]
mod testutil;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;
use tracing::{error, info};

use self::plan::{Action, Observed};
use self::render::Rendered;
use self::statusall::Status;
use super::command::{Cmd, CommandError};
use super::files::{CONFIG_MODE, FileError, SECRET_MODE, under_root, write_if_changed};
use super::templates::{TemplateError, Templates};
use super::{ApplyReport, Backend, BackendError, BackendKind, LiveStatus, Scope, StartOptions};
use crate::cli::Cli;
use crate::model::Desired;
use crate::model::cert::FsCertSource;

/// How long apply waits for starter to load the connections of an `update` or `reload`.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long charon may take to answer after `ipsec restart`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections still missing this long after our last `update`/`reload` are drift and are
/// reloaded; a connection charon refuses is then retried at most this often.
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
    #[error("charon does not answer: `ipsec statusall` exited with code {0}")]
    NotRunning(i32),
}

impl From<StrokeError> for BackendError {
    fn from(e: StrokeError) -> Self {
        match e {
            StrokeError::Command(CommandError::Timeout { what, secs }) => {
                BackendError::Timeout { what, secs }
            }
            StrokeError::NotRunning(_) => {
                BackendError::Unavailable("strongSwan".into(), e.to_string())
            }
            e => BackendError::Io {
                what: "strongSwan".into(),
                detail: e.to_string(),
            },
        }
    }
}

/// The files and the program the backend uses, below `--root-prefix`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub conf: PathBuf,
    pub secrets: PathBuf,
    pub ovs_conf: PathBuf,
    pub ipsec: PathBuf,
}

impl Paths {
    pub fn new(root: &Path) -> Self {
        let p = |s: &str| under_root(root, Path::new(s));
        Self {
            conf: p("/etc/ipsec.conf"),
            secrets: p("/etc/ipsec.secrets"),
            ovs_conf: p("/etc/strongswan.d/ovs.conf"),
            ipsec: p("/usr/sbin/ipsec"),
        }
    }
}

/// The legacy strongSwan backend.
#[derive(Debug)]
pub struct StrongSwanStroke {
    paths: Paths,
    templates: Templates,
    /// Rendered `conn` sections of unchanged tunnels, reused by the next rendering.
    sections: render::Sections,
    timeout: Duration,
    certs: FsCertSource,
    /// A `statusall` taken after our last action, used by the next observation.
    fresh: Option<Status>,
    /// When we last ran `update` or `reload`.
    last_reload: Option<Instant>,
}

impl StrongSwanStroke {
    pub fn new(cli: &Cli) -> Result<Self, StrokeError> {
        let templates = Templates::load(Some(&cli.template_dir()), render::DEFAULTS)?;
        for name in templates.overridden() {
            info!("using the administrator's template {name}");
        }
        Ok(Self::with(
            Paths::new(Path::new(&cli.root_prefix)),
            templates,
            Duration::from_secs(cli.command_timeout),
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

    async fn statusall(&self) -> Result<Status, StrokeError> {
        let out = self
            .ipsec(["statusall"], "query the IPsec status")
            .run()
            .await?;
        if out.code != 0 {
            return Err(StrokeError::NotRunning(out.code));
        }
        Ok(statusall::parse(&out.stdout))
    }

    /// Polls `statusall` until charon has loaded `conns` (or the time is up).
    async fn settle(
        &self,
        conns: &std::collections::BTreeSet<String>,
        limit: Duration,
    ) -> Result<Status, StrokeError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            let st = self.statusall().await;
            let done = match &st {
                Ok(s) => {
                    let loaded = s.loaded();
                    conns.iter().all(|c| loaded.contains(c.as_str()))
                }
                Err(_) => false,
            };
            if done || start.elapsed() >= limit {
                return st;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    fn observe_files(&mut self) -> Result<Observed, StrokeError> {
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
                let lines = conffile::secret_lines(&String::from_utf8_lossy(&bytes));
                (Some((crate::backend::files::sha256(&bytes), mode)), lines)
            }
            Err(_) => (None, BTreeMap::new()),
        };
        Ok(Observed {
            conf_sections: conf.as_deref().map(conffile::sections).unwrap_or_default(),
            conf,
            secrets,
            secret_lines,
            cert_changed: conffile::changed(&stamps, &mut self.certs),
            status: Status::default(),
            settling: self
                .last_reload
                .is_some_and(|t| t.elapsed() < RECONCILE_BACKOFF),
        })
    }

    fn write_files(&mut self, r: &Rendered) -> Result<(), StrokeError> {
        let stamps: conffile::Stamps = r
            .certs
            .iter()
            .filter_map(|p| Some((p.clone(), conffile::fingerprint(&mut self.certs, p)?)))
            .collect();
        write_if_changed(
            &self.paths.conf,
            conffile::join(&r.conf, &stamps).as_bytes(),
            CONFIG_MODE,
        )?;
        write_if_changed(&self.paths.secrets, r.secrets.as_bytes(), SECRET_MODE)?;
        Ok(())
    }

    /// `desired` with adopted versions (see [`adopt`]) and its rendering.
    fn effective(
        &self,
        desired: &Desired,
        obs: &Observed,
    ) -> Result<(Desired, Rendered), TemplateError> {
        let r = render::render(&self.templates, &self.sections, desired)?;
        let versions = adopt::versions(desired, &r, obs);
        if versions.is_empty() {
            return Ok((desired.clone(), r));
        }
        let d = adopt::with_versions(desired, &versions);
        let r = render::render(&self.templates, &self.sections, &d)?;
        Ok((d, r))
    }

    async fn run_actions(
        &mut self,
        desired: &Desired,
        actions: Vec<Action>,
    ) -> Result<ApplyReport, StrokeError> {
        // The files have not changed since plan read them: the same versions result.
        let obs = self.observe_files()?;
        let (_, r) = self.effective(desired, &obs)?;
        let mut report = ApplyReport {
            errors: r.rejected.clone(),
            applied: 0,
        };
        let mut reloaded = false;
        for action in actions {
            match &action {
                Action::WriteFiles => self.write_files(&r)?,
                Action::Update => {
                    self.ipsec(["update"], "update the IPsec configuration")
                        .run_checked()
                        .await?;
                    reloaded = true;
                }
                Action::RereadSecrets => {
                    self.ipsec(["rereadsecrets"], "reread the IPsec secrets")
                        .run_checked()
                        .await?;
                }
                Action::ReloadCredentials(_) => {
                    self.ipsec(["rereadall"], "reread the IPsec credentials")
                        .run_checked()
                        .await?;
                    self.reload().await?;
                    reloaded = true;
                }
                Action::Reconcile(_) => {
                    self.reload().await?;
                    reloaded = true;
                }
                Action::DownNb { sa, .. } => {
                    // Already logged with its command line; the next pass sees it again.
                    let _ = self
                        .ipsec(
                            ["stroke", "down-nb", sa.as_str()],
                            "bring down an outdated SA",
                        )
                        .run_checked()
                        .await;
                }
            }
            report.applied += 1;
        }
        if reloaded {
            self.last_reload = Some(Instant::now());
            self.fresh = Some(self.settle(&r.conns, SETTLE_TIMEOUT).await?);
        }
        Ok(report)
    }

    async fn reload(&self) -> Result<(), StrokeError> {
        self.ipsec(["reload"], "reload the IPsec connections")
            .run_checked()
            .await?;
        Ok(())
    }

    async fn restart(&mut self) -> Result<(), StrokeError> {
        info!("Restarting StrongSwan");
        write_if_changed(
            &self.paths.ovs_conf,
            render::ovs_conf(&self.templates)?.as_bytes(),
            CONFIG_MODE,
        )?;
        // charon starts with no connection; the first pass loads them.
        let empty = render::empty(&self.templates)?;
        write_if_changed(&self.paths.conf, empty.conf.as_bytes(), CONFIG_MODE)?;
        write_if_changed(&self.paths.secrets, empty.secrets.as_bytes(), SECRET_MODE)?;
        self.ipsec(["restart"], "restart the IKE daemon")
            // `ipsec stop` complains when nothing was running; the start is what matters.
            .ignore_stderr("starter is not running")
            .run_checked()
            .await?;
        self.fresh = Some(self.settle(&Default::default(), START_TIMEOUT).await?);
        Ok(())
    }
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
        let status = match self.fresh.take() {
            Some(s) => s,
            None => self.statusall().await?,
        };
        let mut obs = self.observe_files()?;
        obs.status = status;
        Ok(obs)
    }

    fn plan(&self, desired: &Desired, observed: &Observed) -> Vec<Action> {
        match self.effective(desired, observed) {
            Ok((d, r)) => plan::plan(&d, &r, observed),
            // apply renders again and reports the template error for the whole pass.
            Err(_) => vec![Action::WriteFiles],
        }
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
        match self.effective(desired, observed) {
            Ok((d, r)) => live::status_in(&d, &observed.status, &r.rejected, scope),
            Err(_) => live::status_in(
                desired,
                &observed.status,
                &render::rejections(desired),
                scope,
            ),
        }
    }

    /// Empties our files, lets starter drop every connection, and brings down our SAs.
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
