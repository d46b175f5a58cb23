//! Pure planning: the minimal, ordered action list that makes the kernel match the wants.
//!
//! Order matters for safety: inbound SAs, then outbound SAs, then policies (an out-policy
//! switching to a new SPI is one atomic update), then the nftables guard, then removals.
//! Nothing is ever replaced in place: a new key has a new SPI, so adds never collide with
//! what is in use, and an SA already present with the expected SPI is adopted as is.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::types::{Dir, Flow, Guard, Observed, PolicyId, SaId};
use super::want::{SaWant, Wants};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// An SA the tunnel's generation already created is gone: re-created with the same key,
    /// an outbound one would restart its sequence numbers (nonce reuse) and an inbound one its
    /// replay window (replay). Draw a new generation for this tunnel only (its keys change,
    /// no other tunnel's do) and plan again.
    RenewGeneration {
        tunnel: String,
        /// The tunnel's identity in key derivation (its out-flow).
        flow: Flow,
        sa: SaId,
    },
    AddSa {
        tunnel: String,
        dir: Dir,
        sa: SaWant,
    },
    /// Creates or atomically replaces our policy; `spi` 0 means any SA of ours.
    SetPolicy {
        tunnel: String,
        id: PolicyId,
        spi: u32,
    },
    /// Brings the nftables guard to `add`/`del`; `create` when the table is missing.
    Guard {
        create: bool,
        add: Vec<Guard>,
        del: Vec<Guard>,
    },
    DelPolicy(PolicyId),
    /// Start the grace period of an SA that is no longer wanted.
    Retire(SaId),
    /// An SA in its grace period is wanted again (its tunnel was added back before the grace
    /// ended, or a rotation went back to the old PSK): adopted as it is, its deadline dropped,
    /// so a later removal grants a full grace period again.
    Keep(SaId),
    DelSa(SaId),
}

/// What the log line of every [`Action::SetPolicy`] holds between the tunnel and the policy
/// (`<tunnel>: set <policy> policy (spi ...)`), and how a guard change's starts: tests that
/// expect nothing to be changed look for their absence.
pub const SET_POLICY: &str = ": set ";
pub const GUARD_CHANGED: &str = "nftables guard:";

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::RenewGeneration { tunnel, sa, .. } => write!(
                f,
                "{tunnel}: SA {sa} was created before and is gone; drawing a new key generation for this tunnel"
            ),
            Action::AddSa { tunnel, dir, sa } => write!(f, "{tunnel}: add {dir} SA {}", sa.id),
            Action::SetPolicy { tunnel, id, spi } => {
                write!(f, "{tunnel}{SET_POLICY}{id} policy (spi 0x{spi:08x})")
            }
            Action::Guard { create, add, del } => write!(
                f,
                "{GUARD_CHANGED} {}{} added, {} removed",
                if *create { "table created, " } else { "" },
                add.len(),
                del.len()
            ),
            Action::DelPolicy(id) => write!(f, "remove stale {id} policy"),
            Action::Retire(sa) => write!(f, "retire SA {sa} (removed after the grace period)"),
            Action::Keep(sa) => write!(f, "keep SA {sa}: wanted again in its grace period"),
            Action::DelSa(sa) => write!(f, "remove SA {sa}"),
        }
    }
}

/// The actions that bring `obs` to `wants`; empty when converged.
pub fn plan(wants: &Wants, obs: &Observed) -> Vec<Action> {
    let ok = || {
        wants
            .iter()
            .filter_map(|(n, w)| Some((n, w.as_ref().ok()?)))
    };
    // Re-creating an SA a generation already created would restart its sequence numbers
    // (outbound: nonce reuse) or its replay window (inbound: replay) under the same key. Every
    // tunnel affected draws its own generation (a flush affects all of them at once), and
    // nothing else happens in this pass: the next plans with the new keys.
    let renew: Vec<Action> = ok()
        .filter_map(|(name, w)| {
            let (_, sa) = w
                .sas()
                .find(|(_, sa)| !obs.sas.contains_key(&sa.id) && obs.used.contains(&sa.id))?;
            Some(Action::RenewGeneration {
                tunnel: name.clone(),
                flow: w.out_flow,
                sa: sa.id,
            })
        })
        .collect();
    if !renew.is_empty() {
        return renew;
    }
    let mut actions = Vec::new();
    let mut wanted_sas = BTreeSet::new();
    for dir in [Dir::In, Dir::Out] {
        for (name, w) in ok() {
            for (d, sa) in w.sas().filter(|(d, _)| *d == dir) {
                wanted_sas.insert(sa.id);
                if obs.retiring.contains_key(&sa.id) && obs.sas.contains_key(&sa.id) {
                    actions.push(Action::Keep(sa.id));
                }
                // A refused add waits for the backend's retry pass (see `Refusal`).
                if !obs.sas.contains_key(&sa.id) && !obs.refused.contains_key(&sa.id) {
                    actions.push(Action::AddSa {
                        tunnel: name.clone(),
                        dir: d,
                        sa: sa.clone(),
                    });
                }
            }
        }
    }
    let mut wanted_policies = BTreeMap::new();
    for (name, w) in ok() {
        for (id, spi) in [(w.out_policy(), w.out_spi()), (w.in_policy(), 0)] {
            wanted_policies.insert(id, spi);
            if obs.policies.get(&id) != Some(&spi) {
                actions.push(Action::SetPolicy {
                    tunnel: name.clone(),
                    id,
                    spi,
                });
            }
        }
    }
    let guards: BTreeSet<Guard> = ok()
        .map(|(_, w)| Guard {
            remote: w.out_flow.dst,
            local: w.out_flow.src,
            proto: w.out_flow.proto,
        })
        .collect();
    match &obs.guards {
        None if guards.is_empty() => {}
        None => actions.push(Action::Guard {
            create: true,
            add: guards.into_iter().collect(),
            del: Vec::new(),
        }),
        Some(have) => {
            let add: Vec<Guard> = guards.difference(have).copied().collect();
            let del: Vec<Guard> = have.difference(&guards).copied().collect();
            if !add.is_empty() || !del.is_empty() {
                actions.push(Action::Guard {
                    create: false,
                    add,
                    del,
                });
            }
        }
    }
    actions.extend(
        obs.policies
            .keys()
            .filter(|id| !wanted_policies.contains_key(*id))
            .map(|id| Action::DelPolicy(*id)),
    );
    for id in obs.sas.keys().filter(|id| !wanted_sas.contains(*id)) {
        match (obs.retiring.get(id), obs.now) {
            (Some(deadline), Some(now)) if *deadline <= now => actions.push(Action::DelSa(*id)),
            (Some(_), _) => {}
            (None, _) => actions.push(Action::Retire(*id)),
        }
    }
    actions
}

#[cfg(test)]
pub(crate) mod tests;
