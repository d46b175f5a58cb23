//! A backend that plans connections by name and remembers what it "loaded", without talking
//! to any IKE daemon or to the kernel.
//!
//! It stands in for the real backends until they land, so that the daemon, the OVSDB status
//! and the control socket can be exercised end to end; it also proves the reconcile contract:
//! after a converged pass, an unchanged desired state plans nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{ApplyReport, Backend, BackendError, BackendKind, LiveState, LiveStatus, StartOptions};
use crate::model::Desired;
use crate::plan::diff_sets;

/// The stand-in backend for `kind`.
#[derive(Debug)]
pub struct DryRun {
    kind: BackendKind,
    loaded: BTreeSet<String>,
}

impl DryRun {
    pub fn new(kind: BackendKind) -> Self {
        Self {
            kind,
            loaded: BTreeSet::new(),
        }
    }
}

/// How the log lines of [`DryAction`]s start (tests look for their absence).
pub const WOULD_LOAD: &str = "dry run: would load connection";
pub const WOULD_UNLOAD: &str = "dry run: would unload connection";

/// A connection to load or unload, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryAction {
    Load(String),
    Unload(String),
}

impl fmt::Display for DryAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DryAction::Load(c) => write!(f, "{WOULD_LOAD} {c}"),
            DryAction::Unload(c) => write!(f, "{WOULD_UNLOAD} {c}"),
        }
    }
}

fn wanted(desired: &Desired) -> BTreeSet<String> {
    desired
        .tunnels
        .values()
        .flat_map(|t| t.conn_names())
        .collect()
}

impl Backend for DryRun {
    type Observed = BTreeSet<String>;
    type Action = DryAction;

    fn kind(&self) -> BackendKind {
        self.kind
    }

    async fn start(&mut self, _opts: &StartOptions) -> Result<(), BackendError> {
        Ok(())
    }

    async fn observe(&mut self) -> Result<Self::Observed, BackendError> {
        Ok(self.loaded.clone())
    }

    fn plan(&self, desired: &Desired, observed: &Self::Observed) -> Vec<DryAction> {
        let d = diff_sets(&wanted(desired), observed);
        d.remove
            .into_iter()
            .map(DryAction::Unload)
            .chain(d.add.into_iter().map(DryAction::Load))
            .collect()
    }

    async fn apply(
        &mut self,
        _desired: &Desired,
        actions: Vec<DryAction>,
    ) -> Result<ApplyReport, BackendError> {
        let applied = actions.len();
        for a in actions {
            match a {
                DryAction::Load(c) => self.loaded.insert(c),
                DryAction::Unload(c) => self.loaded.remove(&c),
            };
        }
        Ok(ApplyReport {
            errors: BTreeMap::new(),
            applied,
        })
    }

    fn status(&self, desired: &Desired, observed: &Self::Observed) -> BTreeMap<String, LiveStatus> {
        desired
            .tunnels
            .iter()
            .map(|(name, t)| {
                let conns = t.conn_names();
                let mut st = LiveStatus::new(LiveState::Configured);
                st.add_details(
                    "Connections loaded (dry run, no IKE daemon)",
                    conns.iter().filter(|c| observed.contains(*c)),
                );
                st.shrink_to_fit();
                (name.clone(), st)
            })
            .collect()
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        self.loaded.clear();
        Ok(())
    }
}
