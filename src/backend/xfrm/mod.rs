//! `--ike-daemon=none`: static keys programmed straight into kernel XFRM, with an nftables
//! guard that drops cleartext tunnel traffic. The design (key derivation, SPIs, ownership
//! tags, generations, rotation, failure modes) is in `docs/static-keying.md`.
//!
//! The pass follows the backend contract: `observe` dumps policies and SAs (our tagged ones,
//! and the foreign ones only to avoid conflicts), lists our nftables table and reads
//! `/proc/net/xfrm_stat`; `want::resolve` and `plan::plan` are pure; `apply` sends the writes
//! in batches on one netlink socket and one `nft -f -`; `status` is pure. Keys are derived once
//! per tunnel configuration and generation (`want::WantCache`), and a periodic pass that
//! observes nothing new stops after observing (`Backend::repeats_last`): at 10,000 tunnels an
//! idle monitor otherwise planned and computed 10,000 statuses every 15 s.

pub mod derive;
pub mod error;
pub mod events;
pub mod generation;
pub mod host;
pub mod netlink;
pub mod nft;
pub mod observe;
pub mod plan;
pub mod retiring;
pub mod socket;
pub mod status;
pub mod types;
pub mod want;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use self::error::XfrmError;
use self::events::XfrmEvent;
use self::generation::GenerationStore;
use self::netlink::{Op, Xfrm};
use self::observe::{Seen, Targets};
use self::plan::Action;
use self::retiring::RetiringStore;
use self::types::{Dir, Observed, Refusal, SaId};
use self::want::{WantCache, Wants};
use super::command::Cmd;
use super::files::under_root;
use super::{
    ApplyReport, Backend, BackendError, BackendEvent, BackendKind, LiveStatus, Origin, Scope,
    StartOptions,
};
use crate::cli::Cli;
use crate::daemon::paths;
use crate::model::Desired;

/// The warning when a targeted observation fails and the pass falls back to a full dump.
pub const READ_BACK_FAILED: &str = "cannot read back the changed tunnels' XFRM state";

/// The generation file, in the run directory (a tmpfs).
const GENERATION_FILE: &str = "ovs-monitor-ipsec.generation";
/// Grace-period deadlines of retiring SAs, beside it.
const RETIRING_FILE: &str = "ovs-monitor-ipsec.retiring";
/// Refused SA adds are retried by one pass this long after a refusal, which the backend
/// triggers itself; passes in between (OVSDB changes, the periodic pass) do not ask again.
/// With no esp4 in the kernel every add is refused: retrying them all on every change made a
/// one-tunnel change cost one netlink request per tunnel. A retry refused with the same error
/// is not logged again (the status still shows it).
const RETRY_REFUSED_AFTER: Duration = Duration::from_secs(15);

/// A pass that no change drove observes everything at most this often (the daemon's periodic
/// pass runs every 15 s)...
const FULL_EVERY: Duration = Duration::from_secs(15);
/// ...and at most once per this many times its own duration (at most 5 % of the time): under
/// TCG at 10,000 tunnels a full observation took longer than the period, so the monitor did
/// nothing but full passes and a change waited for the one in progress; at a factor of 4 an
/// idle monitor still spent a quarter of a core dumping.
const FULL_COST_FACTOR: u32 = 20;

/// Above this many objects to read back (a cold start, a new generation), one dump is cheaper
/// than a GET each.
const GET_MAX: usize = 256;

pub struct XfrmBackend {
    xfrm: Option<Xfrm>,
    generation: GenerationStore,
    /// Grace-period deadlines of SAs no longer wanted; kept across restarts.
    retiring: RetiringStore,
    /// SAs the kernel refused to add since the last retry pass, not asked again until the next.
    refused: Arc<BTreeMap<SaId, Refusal>>,
    /// The refusals before the last retry pass: a repeat is not reported again.
    retried: Arc<BTreeMap<SaId, Refusal>>,
    /// Set by the retry timer; the next observation starts a retry pass.
    retry_due: Arc<AtomicBool>,
    retry_timer: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
    timeout: Duration,
    events_tx: mpsc::Sender<BackendEvent>,
    events_rx: Option<mpsc::Receiver<BackendEvent>>,
    /// The kernel objects of the last observation, patched by targeted ones (`observe.rs`);
    /// `None` forces a full observation.
    cache: Option<Observed>,
    /// The tunnels' configurations at the last observation.
    seen: Seen,
    /// What the last apply wrote: the next observation reads it back.
    verify: Targets,
    /// When the last full observation started, and how long it took.
    last_full: Option<(Instant, Duration)>,
    /// Each tunnel's derived keys, kept while its configuration and generation stay (HKDF
    /// for 20,000 SAs was most of a pass at 10,000 tunnels). Behind a lock because `plan`
    /// and `status` take `&self`; only the event loop's task ever takes it.
    wants: Mutex<WantCache>,
    /// Something was written since the last observation.
    applied: bool,
    /// Something changed, was read or written since the last observation over every tunnel;
    /// without it that observation repeats the last one (see [`Backend::repeats_last`]).
    news: bool,
}

impl XfrmBackend {
    pub fn new(cli: &Cli) -> Result<Self, BackendError> {
        let run_file = |name| under_root(Path::new(&cli.root_prefix), &paths::rundir().join(name));
        let generation =
            GenerationStore::load_or_create(&run_file(GENERATION_FILE)).map_err(io_error)?;
        let (events_tx, events_rx) = mpsc::channel(4);
        Ok(Self {
            xfrm: None,
            generation,
            retiring: RetiringStore::load(&run_file(RETIRING_FILE)),
            refused: Arc::default(),
            retried: Arc::default(),
            retry_due: Arc::default(),
            retry_timer: None,
            grace: Duration::from_secs(cli.static_rekey_grace),
            timeout: Duration::from_secs(cli.command_timeout),
            events_tx,
            events_rx: Some(events_rx),
            cache: None,
            seen: Seen::default(),
            verify: Targets::default(),
            last_full: None,
            wants: Mutex::default(),
            applied: false,
            news: true,
        })
    }

    fn xfrm(&mut self) -> Result<&mut Xfrm, BackendError> {
        self.xfrm.as_mut().ok_or_else(|| {
            BackendError::Unavailable("XFRM netlink".into(), "the backend is not started".into())
        })
    }

    fn nft(&self, what: &str) -> Cmd {
        Cmd::new("nft", what, self.timeout)
    }

    /// Our table as nft lists it: `Ok(None)` when it does not exist.
    async fn observe_guards(&self) -> Result<Option<nft::Listing>, String> {
        let out = self
            .nft("list the nftables guard")
            .args(["-j", "list", "table", "inet", nft::TABLE])
            .run()
            .await
            .map_err(|e| e.to_string())?;
        match out.code {
            0 => nft::parse(&out.stdout).map(Some),
            _ if out.stderr.contains("No such file or directory") => Ok(None),
            _ => Err(format!("nft failed: {}", out.stderr.trim())),
        }
    }

    /// A full observation of the kernel: every SA and policy, and our nftables table.
    async fn dump(&mut self) -> Result<Observed, BackendError> {
        let xfrm = self.xfrm()?;
        let dump_err = |what: &str, e: XfrmError| BackendError::Io {
            what: format!("dump XFRM {what}"),
            detail: e.to_string(),
        };
        let policies = xfrm
            .dump_policies()
            .await
            .map_err(|e| dump_err("policies", e))?;
        let sas = xfrm.dump_sas().await.map_err(|e| dump_err("SAs", e))?;
        let mut obs = observe::of_dump(policies, sas);
        obs.xfrm_stat = xfrm_stat();
        match self.observe_guards().await {
            Ok(Some(l)) => (obs.guards, obs.esp_seen) = (Some(l.guards), l.esp_seen),
            Ok(None) => {}
            Err(e) => obs.nft_error = Some(e),
        }
        Ok(obs)
    }

    /// Adds what the backend keeps itself (generation, grace periods, refusals) to an
    /// observation of the kernel.
    fn finish(&mut self, mut obs: Observed) -> Observed {
        obs.generations = self.generation.generations.clone();
        obs.used = self.generation.used.clone();
        obs.now = Some(Instant::now());
        let before = self.retiring.deadlines.len();
        self.retiring.retain(|id| obs.sas.contains_key(id));
        if self.retiring.deadlines.len() != before
            && let Err(e) = self.retiring.save()
        {
            warn!("{e}");
        }
        obs.retiring = self.retiring.deadlines.clone();
        // An expired grace period is work for the planner even when nothing else changed.
        self.news |= obs
            .now
            .is_some_and(|now| obs.retiring.values().any(|d| *d <= now));
        // A retry pass asks the kernel again for every refused SA; the refusals before it
        // are kept only to tell a repeat from a new error. SAs that exist are no longer refused.
        if self.retry_due.swap(false, Ordering::Relaxed) {
            self.retried = std::mem::take(&mut self.refused);
            // The refused adds are planned again: this pass is no repeat.
            self.news = true;
        }
        if self.refused.keys().any(|id| obs.sas.contains_key(id)) {
            Arc::make_mut(&mut self.refused).retain(|id, _| !obs.sas.contains_key(id));
        }
        obs.refused = Arc::clone(&self.refused);
        obs
    }

    /// A targeted observation (`observe.rs`): reads back only `targets`, one GET each.
    async fn read_back(&mut self, obs: &mut Observed, targets: &Targets) -> Result<(), XfrmError> {
        let Some(xfrm) = self.xfrm.as_mut() else {
            return Err(XfrmError::Netlink("the backend is not started".into()));
        };
        for id in &targets.sas {
            observe::patch_sa(obs, id, xfrm.get_sa(id).await?);
        }
        for id in &targets.policies {
            observe::patch_policy(obs, id, xfrm.get_policy(id).await?);
        }
        Ok(())
    }

    /// Runs one batch of writes; failures go to `errors` under the tunnel that needed them.
    /// `sa_ids[i]` is the SA that op `i` adds, if it adds one: a refused add is remembered
    /// (see [`RETRY_REFUSED_AFTER`]) and returned; refused again with the same error, it is
    /// not reported again (the status still shows it).
    async fn write(
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

    /// The kernel objects after reading back `targets`: from the kept observation, or from a
    /// full one when it is due (see `observe.rs`).
    async fn observe_targets(&mut self, targets: Targets) -> Result<Observed, BackendError> {
        let full_due = self.retry_due.load(Ordering::Relaxed)
            || targets.count() > GET_MAX
            || self
                .last_full
                .is_none_or(|(at, took)| at.elapsed() >= FULL_EVERY.max(took * FULL_COST_FACTOR));
        // A full observation compares what it finds with the kept one: not taken then.
        let cached = if full_due { None } else { self.cache.take() };
        let Some(mut kernel) = cached else {
            return self.observe().await;
        };
        if let Err(e) = self.read_back(&mut kernel, &targets).await {
            warn!("{READ_BACK_FAILED} ({e}): dumping everything");
            return self.observe().await;
        }
        debug!(
            "targeted XFRM observation: read back {} SAs and {} policies",
            targets.sas.len(),
            targets.policies.len()
        );
        let stat = xfrm_stat();
        self.news |= stat != kernel.xfrm_stat;
        kernel.xfrm_stat = stat;
        self.cache = Some(kernel.clone());
        Ok(self.finish(kernel))
    }

    /// Every desired tunnel's want, derived again only where it changed (see [`WantCache`]).
    fn resolve(&self, desired: &Desired, observed: &Observed) -> Wants {
        self.wants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .resolve(desired, observed)
    }
}

fn io_error(e: XfrmError) -> BackendError {
    BackendError::Io {
        what: "static keys".into(),
        detail: e.to_string(),
    }
}

/// Every counter of `/proc/net/xfrm_stat` (this network namespace's), in the kernel's order
/// and with its names; empty when the file cannot be read.
pub fn read_xfrm_stat() -> Vec<(String, u64)> {
    std::fs::read_to_string("/proc/net/xfrm_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), f.next()?.parse::<u64>().ok()?))
        })
        .collect()
}

fn xfrm_stat() -> Vec<(String, u64)> {
    let mut stat = read_xfrm_stat();
    stat.retain(|(_, v)| *v != 0);
    stat
}

impl Backend for XfrmBackend {
    type Observed = Observed;
    type Action = Action;

    fn kind(&self) -> BackendKind {
        BackendKind::None
    }

    async fn start(&mut self, _opts: &StartOptions) -> Result<(), BackendError> {
        let x = Xfrm::open(self.timeout)
            .map_err(|e| BackendError::Unavailable("XFRM netlink".into(), e.to_string()))?;
        self.xfrm = Some(x);
        Ok(())
    }

    async fn observe(&mut self) -> Result<Observed, BackendError> {
        let started = Instant::now();
        let kernel = self.dump().await?;
        self.last_full = Some((started, started.elapsed()));
        let same = (self.cache.as_ref()).is_some_and(|c| observe::same_kernel(c, &kernel));
        self.news |= !same;
        debug!(
            "full XFRM observation: {} SAs and {} policies of ours{} ({} ms)",
            kernel.sas.len(),
            kernel.policies.len(),
            if same { ", as kept" } else { "" },
            started.elapsed().as_millis()
        );
        self.cache = Some(kernel.clone());
        Ok(self.finish(kernel))
    }

    /// Reads back only what changed since the last observation (tunnels whose configuration
    /// changed, objects the last pass wrote) and the objects of the scope's tunnels (a pass an
    /// XFRM event drove reads back what vanished): the kernel view is cached and the full
    /// dump's timing is this backend's own (below). An observation over every tunnel (the
    /// periodic pass) with nothing new since the last one is marked `repeated`.
    async fn observe_in(
        &mut self,
        desired: &Desired,
        scope: &Scope,
    ) -> Result<Observed, BackendError> {
        let changed = self.seen.changed(desired);
        self.seen.remember(desired);
        let mut targets = std::mem::take(&mut self.verify);
        targets.extend(Targets::of_confs(&changed, &self.generation.generations));
        if let Scope::Tunnels(names) = scope {
            let confs: Vec<_> = (names.iter())
                .filter_map(|n| desired.tunnels.get(n))
                .map(|t| Arc::clone(&t.conf))
                .collect();
            targets.extend(Targets::of_confs(&confs, &self.generation.generations));
        }
        self.news |= !changed.is_empty() || targets.count() > 0 || self.applied;
        self.applied = false;
        let mut obs = self.observe_targets(targets).await?;
        if *scope == Scope::All {
            obs.repeated = !std::mem::take(&mut self.news);
            if obs.repeated {
                debug!("nothing new in XFRM since the last pass: no plan, no status");
            }
        }
        Ok(obs)
    }

    fn repeats_last(&self, observed: &Observed) -> bool {
        observed.repeated
    }

    fn plan(&self, desired: &Desired, observed: &Observed) -> Vec<Action> {
        plan::plan(&self.resolve(desired, observed), observed)
    }

    async fn apply(
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

    fn status(&self, desired: &Desired, observed: &Observed) -> BTreeMap<String, LiveStatus> {
        self.status_in(desired, observed, &Scope::All)
    }

    /// Conflicts between tunnels are judged over all of them, the status of the scope's only.
    fn status_in(
        &self,
        desired: &Desired,
        observed: &Observed,
        scope: &Scope,
    ) -> BTreeMap<String, LiveStatus> {
        let mut wants = self.resolve(desired, observed);
        if let Scope::Tunnels(names) = scope {
            wants.retain(|name, _| names.contains(name));
        }
        status::status(&wants, observed)
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        let obs = self.observe().await?;
        let mut report = ApplyReport::default();
        let pols = obs
            .policies
            .keys()
            .map(|id| (None, Op::DelPolicy(*id)))
            .collect();
        self.write(pols, &[], &mut report).await?;
        let sas = obs.sas.keys().map(|id| (None, Op::DelSa(*id))).collect();
        self.write(sas, &[], &mut report).await?;
        if obs.guards.is_some() {
            let del = self
                .nft("remove the nftables guard")
                .args(["delete", "table", "inet", nft::TABLE])
                .run_checked()
                .await;
            if let Err(e) = del {
                warn!("{e}");
            }
        }
        if let Err(e) = self.retiring.clear() {
            warn!("{e}");
        }
        // Our SAs are gone: the next start must not re-create them under the same keys.
        self.generation.forget().map_err(io_error)
    }

    /// Ours when it carries our ownership tags; our own doing when our request socket sent
    /// the request that caused it.
    fn xfrm_origin(&self, event: &XfrmEvent) -> Origin {
        if !event.tagged_static() {
            Origin::Foreign
        } else if self.xfrm.as_ref().is_some_and(|x| x.port() == event.sender) {
            Origin::Ourselves
        } else {
            Origin::Others
        }
    }

    fn events(&mut self) -> Option<mpsc::Receiver<BackendEvent>> {
        self.events_rx.take()
    }
}
