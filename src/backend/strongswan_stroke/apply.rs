//! `apply` for the stroke backend: write the files, run `ipsec update`/`rereadsecrets`/
//! `reload`/`stroke down-nb`, then wait (bounded) until starter, which applies an `update`
//! asynchronously, has loaded the connections; and the restart at start-up. Apart from
//! `mod.rs` because this is the backend's only code that changes anything outside it.

use std::time::{Duration, Instant};

use std::sync::PoisonError;

use tracing::{info, warn};

use super::plan::{self, Action};
use super::render::{self, Rendered};
use super::statusall::Status;
use super::{
    Planned, SETTLE_TIMEOUT, START_TIMEOUT, StrokeError, StrongSwanStroke, cafiles, conffile,
};
use crate::backend::files::{CONFIG_MODE, SECRET_MODE, write_if_changed};
use crate::backend::{ApplyReport, Scope};
use crate::model::Desired;

impl StrongSwanStroke {
    /// Polls `statusall` until charon has loaded the `conns` of `scope` (or the time is up).
    async fn settle(
        &self,
        conns: &std::collections::BTreeSet<String>,
        limit: Duration,
        scope: &Scope,
    ) -> Result<Status, StrokeError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            let st = self.statusall(scope).await;
            let done = match &st {
                Ok(s) => {
                    let loaded = s.loaded();
                    conns
                        .iter()
                        .filter(|c| plan::covers(scope, c))
                        .all(|c| loaded.contains(c.as_str()))
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
        cafiles::write(&self.paths.ca_dir, &r.cas)
    }

    /// A private key readable by group or others is used, with a warning (once per load).
    fn warn_exposed_keys(r: &Rendered) {
        for key in &r.keys {
            if let Some(w) = crate::backend::files::exposed_key(key) {
                warn!("{w}");
            }
        }
    }

    pub(super) async fn run_actions(
        &mut self,
        desired: &Desired,
        actions: Vec<Action>,
    ) -> Result<ApplyReport, StrokeError> {
        // The files have not changed since plan read them: its rendering is still right.
        let planned = match self.take_planned(desired) {
            Some(p) => p,
            None => Planned {
                input: desired.clone(),
                scope: Scope::All,
                rendered: self.render(desired)?,
            },
        };
        let r = &planned.rendered;
        let mut report = ApplyReport {
            errors: r.rejected.clone(),
            applied: 0,
        };
        let mut reloaded = false;
        for action in actions {
            match &action {
                Action::WriteFiles => self.write_files(r)?,
                Action::Update => {
                    self.ipsec(["update"], "update the IPsec configuration")
                        .run_checked()
                        .await?;
                    reloaded = true;
                }
                Action::RereadSecrets => {
                    Self::warn_exposed_keys(r);
                    self.ipsec(["rereadsecrets"], "reread the IPsec secrets")
                        .run_checked()
                        .await?;
                }
                Action::ReloadCredentials(_) => {
                    Self::warn_exposed_keys(r);
                    self.ipsec(["rereadall"], "reread the IPsec credentials")
                        .run_checked()
                        .await?;
                    self.reload().await?;
                    reloaded = true;
                }
                Action::Reconcile(conns) => {
                    // If charon drops them again, this reload is the one the back-off counts.
                    for c in conns {
                        self.seen.remove(c);
                    }
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
            let scope = planned.scope.clone();
            let st = self.settle(&r.conns, SETTLE_TIMEOUT, &scope).await?;
            let loaded = st.loaded();
            self.settled = r
                .conns
                .iter()
                .filter(|c| plan::covers(&scope, c))
                .all(|c| loaded.contains(c.as_str()));
            self.seen.retain(|c| r.conns.contains(c));
            self.seen.extend(
                loaded
                    .into_iter()
                    .filter(|c| r.conns.contains(*c))
                    .map(str::to_owned),
            );
            self.fresh = Some((scope, st));
        }
        // For the status of this pass.
        *self.planned.lock().unwrap_or_else(PoisonError::into_inner) = Some(planned);
        Ok(report)
    }

    async fn reload(&self) -> Result<(), StrokeError> {
        self.ipsec(["reload"], "reload the IPsec connections")
            .run_checked()
            .await?;
        Ok(())
    }

    pub(super) async fn restart(&mut self) -> Result<(), StrokeError> {
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
        let st = self
            .settle(&Default::default(), START_TIMEOUT, &Scope::All)
            .await?;
        self.fresh = Some((Scope::All, st));
        Ok(())
    }
}
