//! `apply` for the static-key backend: a plan's actions become batches of netlink writes
//! on the backend's socket, in the order the kernel needs (inbound SAs, outbound SAs, then
//! the policies that point at them, deletions last), one `nft -f -` for the guard, and the
//! bookkeeping of refused adds and retiring SAs. Apart from `mod.rs` because it is the
//! backend's only code that changes the kernel.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{info, warn};

use super::error::XfrmError;
use super::netlink::Op;
use super::nft;
use super::observe::Targets;
use super::plan::Action;
use super::types::{Dir, Refusal, SaId};
use super::{RETRY_REFUSED_AFTER, XfrmBackend, io_error};
use crate::backend::{ApplyReport, BackendError, BackendEvent};
use crate::model::Desired;

impl XfrmBackend {
    /// Runs one batch of writes; failures go to `errors` under the tunnel that needed them.
    /// `sa_ids[i]` is the SA that op `i` adds, if it adds one: a refused add is remembered
    /// (see [`RETRY_REFUSED_AFTER`]) and returned; refused again with the same error, it is
    /// not reported again (the status still shows it).
    pub(super) async fn write(
        &mut self,
        ops: Vec<(Option<&str>, Op<'_>)>,
        sa_ids: &[SaId],
        report: &mut ApplyReport,
    ) -> Result<Vec<SaId>, BackendError> {
        let mut refused = Vec::new();
        if ops.is_empty() {
            return Ok(refused);
        }
        let results = self.xfrm()?.run(ops.iter().map(|(_, op)| op)).await;
        for (i, ((tunnel, what), result)) in ops.iter().zip(results).enumerate() {
            if let (Err(XfrmError::Kernel { errno }), Some(id)) = (&result, sa_ids.get(i)) {
                let refusal = Refusal { errno: *errno };
                Arc::make_mut(&mut self.refused).insert(*id, refusal);
                refused.push(*id);
                if self.retried.get(id) == Some(&refusal) {
                    continue;
                }
            }
            match (result, tunnel) {
                (Ok(()), _) => report.applied += 1,
                (Err(e), Some(t)) => {
                    report
                        .errors
                        .entry((*t).to_owned())
                        .or_insert_with(|| format!("cannot {what}: {e}{}", e.hint()));
                }
                (Err(e), None) => warn!("cannot {what}: {e}"),
            }
        }
        if !refused.is_empty() {
            self.schedule_retry();
        }
        Ok(refused)
    }

    /// Brings the cached guard set to what the `Guard` actions `nft` accepted made it (a
    /// targeted observation does not list the table).
    fn guards_applied(&mut self, actions: &[Action]) {
        let Some(cache) = self.cache.as_mut() else {
            return;
        };
        for a in actions {
            if let Action::Guard { add, del, .. } = a {
                let g = cache.guards.get_or_insert_with(Default::default);
                g.extend(add.iter().copied());
                del.iter().for_each(|d| {
                    g.remove(d);
                });
            }
        }
    }

    /// Asks for a retry pass in [`RETRY_REFUSED_AFTER`], unless one is already scheduled.
    fn schedule_retry(&mut self) {
        if self.retry_timer.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let (due, events) = (Arc::clone(&self.retry_due), self.events_tx.clone());
        self.retry_timer = Some(tokio::spawn(async move {
            tokio::time::sleep(RETRY_REFUSED_AFTER).await;
            due.store(true, Ordering::Relaxed);
            // A full channel already asks for a pass.
            let _ = events.try_send(BackendEvent::StateChanged);
        }));
    }

    /// Sends a plan's writes in batches (SAs before the policies that use them, deletions
    /// last) and runs one `nft -f -` for the guard.
    pub(super) async fn apply_actions(
        &mut self,
        desired: &Desired,
        actions: Vec<Action>,
    ) -> Result<ApplyReport, BackendError> {
        let mut report = ApplyReport::default();
        let (mut sa_in, mut sa_out, mut set, mut del_pol, mut del_sa) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut guard_script = String::new();
        let (mut in_ids, mut out_ids) = (Vec::new(), Vec::new());
        let mut retiring_changed = false;
        // The next observation reads back what this pass writes, even where a write failed.
        self.verify.extend(Targets::touched_by(&actions));
        self.applied = true;
        // The planner renews generations alone in a pass: renew them all, then plan again with
        // the new keys (a full channel already asks for a pass).
        let renew: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::RenewGeneration { flow, .. } => Some(*flow),
                _ => None,
            })
            .collect();
        if !renew.is_empty() {
            self.generation.renew_tunnels(&renew).map_err(io_error)?;
            // The CMS has to relay these: worth more than the debug line of every action.
            actions
                .iter()
                .filter(|a| matches!(a, Action::RenewGeneration { .. }))
                .for_each(|a| info!("{a}; its peer needs the new external_ids:ipsec-generation"));
            let _ = self.events_tx.try_send(BackendEvent::StateChanged);
            report.applied += renew.len();
            return Ok(report);
        }
        for a in &actions {
            match a {
                Action::RenewGeneration { .. } => {}
                Action::AddSa { tunnel, dir, sa } => {
                    let entry = (Some(tunnel.as_str()), Op::AddSa(*dir, sa));
                    match dir {
                        Dir::In => {
                            in_ids.push(sa.id);
                            sa_in.push(entry);
                        }
                        Dir::Out => {
                            out_ids.push(sa.id);
                            sa_out.push(entry);
                        }
                    }
                }
                Action::SetPolicy { tunnel, id, spi } => {
                    set.push((Some(tunnel.as_str()), Op::SetPolicy { id: *id, spi: *spi }))
                }
                Action::Guard { create, add, del } => {
                    guard_script.push_str(&nft::script(*create, add, del));
                }
                Action::DelPolicy(id) => del_pol.push((None, Op::DelPolicy(*id))),
                Action::Retire(id) => {
                    self.retiring.retire(*id, Instant::now() + self.grace);
                    retiring_changed = true;
                    report.applied += 1;
                }
                Action::Keep(id) => {
                    self.retiring.deadlines.remove(id);
                    retiring_changed = true;
                    report.applied += 1;
                }
                Action::DelSa(id) => del_sa.push((None, Op::DelSa(*id))),
            }
        }
        if retiring_changed && let Err(e) = self.retiring.save() {
            warn!("{e}");
        }
        // Written down (and synced) before the SAs exist: see generation.rs.
        let all_ids: Vec<SaId> = in_ids.iter().chain(&out_ids).copied().collect();
        if let Err(e) = self.generation.record(&all_ids) {
            for (t, _) in sa_in.iter().chain(&sa_out) {
                if let Some(t) = t {
                    report.errors.insert((*t).to_owned(), e.to_string());
                }
            }
            sa_in.clear();
            sa_out.clear();
        }
        let mut refused = self.write(sa_in, &in_ids, &mut report).await?;
        refused.extend(self.write(sa_out, &out_ids, &mut report).await?);
        if let Err(e) = self.generation.unrecord(&refused) {
            warn!("{e}");
        }
        self.write(set, &[], &mut report).await?;
        if !guard_script.is_empty() {
            let run = self
                .nft("update the nftables guard")
                .args(["-f", "-"])
                .stdin(guard_script.into_bytes())
                .run_checked()
                .await;
            match run {
                Ok(_) => {
                    report.applied += 1;
                    self.guards_applied(&actions);
                }
                Err(e) => {
                    // What nft holds now is unknown: the next observation lists it.
                    self.cache = None;
                    for name in desired.tunnels.keys() {
                        report
                            .errors
                            .entry(name.clone())
                            .or_insert_with(|| format!("cannot program the nftables guard: {e}"));
                    }
                }
            }
        }
        for batch in [del_pol, del_sa] {
            self.write(batch, &[], &mut report).await?;
        }
        Ok(report)
    }
}
