//! One reconcile pass over a backend: observe → plan → apply → observe → status.
//!
//! A pass covers a [`Scope`]: every tunnel, or only those an OVSDB change touched. The
//! outcome's `live` then holds the scope's tunnels only (plus those whose apply failed), and
//! the event loop merges it into what it knew of the others, so a one-tunnel change does not
//! compute, compare and write the status of every tunnel. A pass whose observation the backend
//! calls a repeat of the last one ([`Backend::repeats_last`]: the idle periodic pass of the
//! static-key backend) stops after observing.
//!
//! Logging: one summary line at info per pass that changes something, each action at debug
//! (a cold start of 10,000 tunnels is 40,000 actions), each failure at warn.

use std::collections::BTreeMap;

use tracing::{debug, info, warn};

use crate::backend::{Backend, LiveState, LiveStatus, Scope};
use crate::model::Desired;

/// What a pass learned, for OVSDB status and `tunnels/show`.
#[derive(Debug)]
pub struct PassOutcome {
    /// The live state of the desired tunnels `covered`.
    pub live: BTreeMap<String, LiveStatus>,
    /// Which tunnels `live` describes: a desired tunnel in it that is absent from `live`
    /// has no live state.
    pub covered: Scope,
    pub apply_errors: BTreeMap<String, String>,
    /// Set when the backend could not be observed or applied at all.
    pub backend_error: Option<String>,
    /// Number of actions carried out.
    pub applied: usize,
    /// The backend saw nothing new ([`Backend::repeats_last`]): the last outcome stands.
    pub repeated: bool,
}

impl Default for PassOutcome {
    fn default() -> Self {
        Self {
            live: BTreeMap::new(),
            covered: Scope::All,
            apply_errors: BTreeMap::new(),
            backend_error: None,
            applied: 0,
            repeated: false,
        }
    }
}

/// Runs one pass over `scope`. Never fails: a backend error becomes `backend_error` and
/// every tunnel (whatever the scope) is reported `down` with that reason, so the problem
/// shows in OVSDB.
pub async fn run<B: Backend>(backend: &mut B, desired: &Desired, scope: Scope) -> PassOutcome {
    let observed = match backend.observe_in(desired, &scope).await {
        Ok(o) => o,
        Err(e) => return failed(desired, format!("cannot observe {}: {e}", backend.kind())),
    };
    if backend.repeats_last(&observed) {
        return PassOutcome {
            repeated: true,
            ..Default::default()
        };
    }
    let actions = backend.plan_in(desired, &observed, &scope);
    if actions.is_empty() {
        return PassOutcome {
            live: backend.status_in(desired, &observed, &scope),
            covered: scope,
            ..Default::default()
        };
    }
    // The actions carry what apply needs: free the observation (megabytes at 10,000 tunnels)
    // before apply allocates its own. A backend may also share parts of its observation with
    // its own state (VICI): dropped before `apply` changes that state, they are not copied.
    drop(observed);
    let planned = actions.len();
    for a in &actions {
        debug!("{a}");
    }
    let report = match backend.apply(desired, actions).await {
        Ok(r) => r,
        Err(e) => {
            return failed(
                desired,
                format!("cannot apply changes to {}: {e}", backend.kind()),
            );
        }
    };
    info!(
        "{}: {planned} actions planned, {} applied, {} tunnels failed",
        backend.kind(),
        report.applied,
        report.errors.len()
    );
    for (tunnel, err) in &report.errors {
        warn!("{tunnel}: {err}");
    }
    // Status must describe the state after the actions, not before; a tunnel whose action
    // failed is looked at too, in scope or not.
    let covered = match scope {
        Scope::All => Scope::All,
        Scope::Tunnels(mut names) => {
            names.extend(report.errors.keys().cloned());
            Scope::Tunnels(names)
        }
    };
    let live = match backend.observe_in(desired, &covered).await {
        Ok(o) => backend.status_in(desired, &o, &covered),
        Err(e) => return failed(desired, format!("cannot observe {}: {e}", backend.kind())),
    };
    PassOutcome {
        live,
        covered,
        apply_errors: report.errors,
        backend_error: None,
        applied: report.applied,
        repeated: false,
    }
}

fn failed(desired: &Desired, reason: String) -> PassOutcome {
    warn!("{reason}");
    let live = desired
        .tunnels
        .keys()
        .map(|name| {
            let st = LiveStatus::failed(LiveState::Down, reason.as_str());
            (name.clone(), st)
        })
        .collect();
    PassOutcome {
        live,
        backend_error: Some(reason),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use crate::backend::dry_run::DryRun;

    #[tokio::test(flavor = "current_thread")]
    async fn second_pass_on_unchanged_desired_applies_nothing() {
        let mut b = DryRun::new(BackendKind::StrongSwan);
        let desired = Desired::default();
        assert_eq!(run(&mut b, &desired, Scope::All).await.applied, 0);
    }
}
