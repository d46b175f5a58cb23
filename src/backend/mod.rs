//! The one interface every IKE (or no-IKE) backend implements.
//!
//! A pass of the daemon is `observe` → `plan` → `apply` → `status`:
//! - [`Backend::observe`] reads what the IKE daemon or the kernel holds now (I/O);
//! - [`Backend::plan`] compares it with the desired state and returns the minimal list of
//!   actions (pure, unit-tested without root);
//! - [`Backend::apply`] carries the actions out (I/O) and reports per-tunnel failures;
//! - [`Backend::status`] derives each tunnel's live state from an observation (pure).
//!
//! Backends must never touch state they did not create, and must never replace an
//! established SA that is still wanted: `plan` on an unchanged desired state and an
//! observation of a converged system returns no actions.

pub mod command;
pub mod dry_run;
pub mod files;
pub mod ike_view;
pub mod initiator;
pub mod libreswan;
mod live_status;
#[cfg(test)]
mod noop_edit_tests;
pub mod pidwatch;
pub mod secrets;
pub mod strongswan_stroke;
pub mod strongswan_vici;
pub mod templates;
pub mod vici;
pub mod xfrm;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;

use thiserror::Error;
use tokio::sync::mpsc;

use crate::model::Desired;
pub use live_status::{Details, Lines, LiveStatus};
use xfrm::events::XfrmEvent;

/// Which backend `--ike-daemon` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    StrongSwan,
    Libreswan,
    /// `--ike-daemon=none`: static keys programmed straight into kernel XFRM.
    None,
}

impl BackendKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "strongswan" => Some(Self::StrongSwan),
            "libreswan" => Some(Self::Libreswan),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::StrongSwan => "strongswan",
            Self::Libreswan => "libreswan",
            Self::None => "none",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend failure that stops a whole pass (the IKE daemon is unreachable, netlink refused
/// the socket). Per-tunnel failures go in [`ApplyReport::errors`] instead. Messages must never
/// contain a secret: wrap netlink errors, which echo the request.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("{what}: {detail}")]
    Io { what: String, detail: String },
    #[error("{0} is not available: {1}")]
    Unavailable(String, String),
    #[error("timed out after {secs} seconds trying to {what}")]
    Timeout { what: String, secs: u64 },
}

/// Live state of one tunnel as a backend sees it; written to `external_ids:ipsec-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveState {
    /// Configured, nothing observed yet (or the backend cannot tell).
    Configured,
    /// Loaded; IKE or the first Child SA is being negotiated.
    Negotiating,
    /// Every connection of the tunnel has an established Child SA (or installed SAs).
    Up,
    /// Loaded but not established, and not currently negotiating.
    Down,
    /// The backend failed to apply this tunnel; see `LiveStatus::error`.
    Error,
}

impl LiveState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Configured => "configured",
            Self::Negotiating => "negotiating",
            Self::Up => "up",
            Self::Down => "down",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for LiveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of [`Backend::apply`]: tunnels whose actions failed, with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub errors: BTreeMap<String, String>,
    /// Number of actions carried out (for logs and benchmarks).
    pub applied: usize,
}

/// Something happened in the IKE daemon or the kernel that may change a tunnel's state
/// (a VICI `child-updown` event, a netlink notification, the daemon restarted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEvent {
    /// Observe again and update status; no new plan is needed.
    StateChanged,
    /// The IKE daemon went away and came back: plan and apply again from scratch.
    DaemonRestarted,
}

/// Whose doing a kernel XFRM change on one of our tunnels' selectors is (see `xfrm::events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Not an object of ours: never reacted to.
    Foreign,
    /// Our own write (the static-key backend's apply): nothing to repair.
    Ourselves,
    /// An object of ours that someone else changed: reconcile its tunnel.
    Others,
    /// An object our IKE daemon installed. The daemon also removes its objects itself (rekeys,
    /// a peer going away, our own unloads): reconcile the tunnel, unless the SA was replaced
    /// by a newer one or a pass of ours just changed the tunnel.
    Daemon,
}

/// Which tunnels a pass must look at. A pass caused by an OVSDB change looks only at the
/// tunnels that change touched, so that it costs what it changed, not the number of tunnels;
/// the periodic pass, backend events, `refresh` and the first pass look at everything (and
/// so repair drift and pick up state changes of the other tunnels within one period).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// These tunnel names (desired or not: a removed tunnel is cleaned up through its name).
    Tunnels(BTreeSet<String>),
}

impl Scope {
    /// Whether tunnel `name` is in the scope.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Tunnels(names) => names.contains(name),
        }
    }
}

/// Options common to every backend, from the command line.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Restart the IKE daemon at start-up (false with `--no-restart-ike-daemon`).
    pub restart_ike_daemon: bool,
}

/// One IPsec backend. See the module documentation for the contract.
pub trait Backend: Send + 'static {
    /// What [`Backend::observe`] returns: parsed `ipsec status`, VICI `list-sas`, an XFRM dump.
    type Observed: Send + Sync + Default + 'static;
    /// One step of a plan; `Display` gives the log line ("load conn tun-in-2").
    type Action: fmt::Display + fmt::Debug + Send + 'static;

    fn kind(&self) -> BackendKind;

    /// Called once before the first pass.
    fn start(
        &mut self,
        opts: &StartOptions,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Reads the current state of the IKE daemon or the kernel.
    fn observe(&mut self) -> impl Future<Output = Result<Self::Observed, BackendError>> + Send;

    /// Pure: the actions that make `observed` match `desired`. Empty when converged.
    fn plan(&self, desired: &Desired, observed: &Self::Observed) -> Vec<Self::Action>;

    /// Carries out `actions`. Per-tunnel failures go in the report; only failures that make
    /// the whole backend unusable are errors.
    fn apply(
        &mut self,
        desired: &Desired,
        actions: Vec<Self::Action>,
    ) -> impl Future<Output = Result<ApplyReport, BackendError>> + Send;

    /// Pure: the live state of every desired tunnel, by name.
    fn status(&self, desired: &Desired, observed: &Self::Observed) -> BTreeMap<String, LiveStatus>;

    /// [`Backend::observe`] for a pass over `scope` only. A backend may observe less (only
    /// those tunnels' state); [`Backend::plan_in`] and [`Backend::status_in`] then get the
    /// same scope. The default observes everything.
    fn observe_in(
        &mut self,
        desired: &Desired,
        scope: &Scope,
    ) -> impl Future<Output = Result<Self::Observed, BackendError>> + Send {
        let _ = (desired, scope);
        self.observe()
    }

    /// [`Backend::plan`] for a pass over `scope`: it must plan at least what `scope`'s
    /// tunnels need, and may plan for the others too (the default plans everything).
    fn plan_in(
        &self,
        desired: &Desired,
        observed: &Self::Observed,
        scope: &Scope,
    ) -> Vec<Self::Action> {
        let _ = scope;
        self.plan(desired, observed)
    }

    /// True when `observed` holds nothing the last pass over every tunnel had not seen (same
    /// desired state, nothing read, written or expired since): plan and status would repeat
    /// that pass's, so the pass ends here and its outcome stands. Lets an idle periodic pass
    /// cost nothing at 10,000 tunnels; the default never claims it.
    fn repeats_last(&self, observed: &Self::Observed) -> bool {
        let _ = observed;
        false
    }

    /// [`Backend::status`] of the desired tunnels in `scope` only. The default computes
    /// every tunnel's and keeps the scope's.
    fn status_in(
        &self,
        desired: &Desired,
        observed: &Self::Observed,
        scope: &Scope,
    ) -> BTreeMap<String, LiveStatus> {
        let mut live = self.status(desired, observed);
        if let Scope::Tunnels(names) = scope {
            live.retain(|name, _| names.contains(name));
        }
        live
    }

    /// Read-only, for `diagnose`: what the IKE daemon holds now for each desired tunnel (each
    /// connection loaded or not, its IKE and Child SA). Never changes state. The default
    /// reports nothing, and diagnose relies on the live status.
    fn diagnose_view(
        &mut self,
        desired: &Desired,
    ) -> impl Future<Output = ike_view::IkeView> + Send {
        let _ = desired;
        std::future::ready(ike_view::IkeView::NotReported)
    }

    /// `exit` with cleanup: remove everything this monitor created.
    fn cleanup(&mut self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Whose doing a kernel XFRM notification is. The default suits the IKE backends, whose
    /// daemon installs the kernel objects and picks their reqids: any object on a tunnel's
    /// selector is the daemon's.
    fn xfrm_origin(&self, event: &XfrmEvent) -> Origin {
        let _ = event;
        Origin::Daemon
    }

    /// Events that should trigger a new observation; `None` when the backend has none and
    /// relies on the periodic pass.
    fn events(&mut self) -> Option<mpsc::Receiver<BackendEvent>> {
        None
    }
}
