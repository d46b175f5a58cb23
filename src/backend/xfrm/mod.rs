//! `--ike-daemon=none`: static keys programmed straight into kernel XFRM, with an nftables
//! guard that drops cleartext tunnel traffic. The design (key derivation, SPIs, ownership
//! tags, generations, rotation, failure modes) is in `docs/static-keying.md`.
//!
//! The pass follows the backend contract: `observe` dumps policies and SAs (our tagged ones,
//! and the foreign ones only to avoid conflicts), lists our nftables table and reads
//! `/proc/net/xfrm_stat`; `want::resolve` and `plan::plan` are pure; `apply` (`apply.rs`) sends the writes
//! in batches on one netlink socket and one `nft -f -`; `status` is pure. Keys are derived once
//! per tunnel configuration and generation (`want::WantCache`), and a periodic pass that
//! observes nothing new stops after observing (`Backend::repeats_last`): at 10,000 tunnels an
//! idle monitor otherwise planned and computed 10,000 statuses every 15 s.

mod apply;
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
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use self::error::XfrmError;
use self::events::XfrmEvent;
use self::generation::GenerationStore;
use self::netlink::{Op, Xfrm};
use self::observe::{Seen, Targets};
use self::plan::Action;
use self::retiring::RetiringStore;
use self::types::{Observed, Refusal, SaId};
use self::want::{WantCache, Wants};
use super::command::Cmd;
use super::files::under_root;
use super::{
    ApplyReport, Backend, BackendError, BackendEvent, BackendKind, LiveStatus, Origin, Scope,
    StartOptions,
};
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

/// What the backend takes from the command line; `app::setup` builds it.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--root-prefix`: the run directory's files are below it.
    pub root: PathBuf,
    /// `--static-rekey-grace`: how long a replaced SA stays installed.
    pub rekey_grace: Duration,
    /// `--command-timeout`: the limit of every `nft` command.
    pub timeout: Duration,
}

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
    pub fn new(config: &Config) -> Result<Self, BackendError> {
        let run_file = |name| under_root(&config.root, &paths::rundir().join(name));
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
            grace: config.rekey_grace,
            timeout: config.timeout,
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
        self.apply_actions(desired, actions).await
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
