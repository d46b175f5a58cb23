//! What a pass reads from the kernel: everything, or only what a change touched.
//!
//! A full observation dumps every SA and policy and lists the nftables table: 40,000 objects
//! at 10,000 tunnels, which made a one-tunnel change cost minutes in the QEMU guest. So the
//! backend keeps the last observation and, on a pass driven by a change, reads back only the
//! objects of the tunnels whose configuration changed (their old and new SAs and policies) and
//! the objects the previous apply wrote, with one `XFRM_MSG_GETSA` (dst, SPI, ESP) or
//! `XFRM_MSG_GETPOLICY` (selector, direction) each. A GET answers with whatever the kernel holds
//! under that identity, ours or foreign, and it is classified exactly as a dumped object is, so
//! the adopt, collision and foreign rules are the same in both kinds of pass.
//!
//! Full observations happen at start-up, on the retry pass, after a failed GET, when there is
//! more to read back than a dump costs (a cold start, a new generation), and otherwise at most
//! every 15 s and at most once per four times their own duration: they are what notices
//! changes made by hand or by other programs. A pass in between that no change drove (the
//! periodic pass, a backend event) plans on the kept observation. The nftables guard is not
//! listed in a targeted pass: the backend updates its copy from the scripts `nft` accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::netlink::{DumpedPolicy, DumpedSa};
use super::plan::Action;
use super::types::{Generations, Observed, PolicyId, SaId};
use super::want::tunnel_want;
use crate::model::{Desired, TunnelConf};

/// The configuration of every tunnel at the last observation, to tell which ones changed.
/// `Arc` identity is enough: the registry keeps an unchanged tunnel's `Arc`.
#[derive(Debug, Default)]
pub struct Seen(BTreeMap<String, Arc<TunnelConf>>);

impl Seen {
    /// The old and new configurations of the tunnels added, removed or changed since the last
    /// [`Seen::remember`].
    pub fn changed(&self, desired: &Desired) -> Vec<Arc<TunnelConf>> {
        let mut out = Vec::new();
        for (name, t) in &desired.tunnels {
            match self.0.get(name) {
                Some(old) if Arc::ptr_eq(old, &t.conf) => {}
                old => {
                    out.extend(old.cloned());
                    out.push(Arc::clone(&t.conf));
                }
            }
        }
        out.extend(
            self.0
                .iter()
                .filter(|(name, _)| !desired.tunnels.contains_key(*name))
                .map(|(_, c)| Arc::clone(c)),
        );
        out
    }

    pub fn remember(&mut self, desired: &Desired) {
        self.0 = desired
            .tunnels
            .iter()
            .map(|(n, t)| (n.clone(), Arc::clone(&t.conf)))
            .collect();
    }
}

/// Kernel objects to read back in a targeted observation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub sas: BTreeSet<SaId>,
    pub policies: BTreeSet<PolicyId>,
}

impl Targets {
    /// Every SA and policy these configurations want under `generations`.
    pub fn of_confs(confs: &[Arc<TunnelConf>], generations: &Generations) -> Self {
        let mut t = Self::default();
        for w in confs
            .iter()
            .filter_map(|c| tunnel_want(c, generations).ok())
        {
            t.sas.extend(w.sas().map(|(_, s)| s.id));
            t.policies.extend([w.out_policy(), w.in_policy()]);
        }
        t
    }

    /// The objects `actions` create, change or remove.
    pub fn touched_by(actions: &[Action]) -> Self {
        let mut t = Self::default();
        for a in actions {
            match a {
                Action::AddSa { sa, .. } => {
                    t.sas.insert(sa.id);
                }
                Action::DelSa(id) => {
                    t.sas.insert(*id);
                }
                Action::SetPolicy { id, .. } | Action::DelPolicy(id) => {
                    t.policies.insert(*id);
                }
                Action::RenewGeneration { .. }
                | Action::Guard { .. }
                | Action::Retire(_)
                | Action::Keep(_) => {}
            }
        }
        t
    }

    pub fn extend(&mut self, other: Targets) {
        self.sas.extend(other.sas);
        self.policies.extend(other.policies);
    }

    pub fn count(&self) -> usize {
        self.sas.len() + self.policies.len()
    }
}

/// Whether two observations hold the same kernel and nftables state (what a dump reads; the
/// backend's own bookkeeping is added afterwards). A periodic dump that finds what the kept
/// observation holds brings nothing new: no plan, no status (see `Backend::repeats_last`).
pub fn same_kernel(a: &Observed, b: &Observed) -> bool {
    a.policies == b.policies
        && a.foreign_policies == b.foreign_policies
        && a.sas == b.sas
        && a.foreign_sas == b.foreign_sas
        && a.guards == b.guards
        && a.esp_seen == b.esp_seen
        && a.nft_error == b.nft_error
        && a.xfrm_stat == b.xfrm_stat
}

/// The kernel's part of a full observation, from its dumps: our objects with what we read of
/// them, other programs' only as the identities they occupy. A policy on a selector we could
/// never want is left out.
pub fn of_dump(policies: Vec<DumpedPolicy>, sas: Vec<DumpedSa>) -> Observed {
    let mut obs = Observed::default();
    for p in policies {
        match (p.id, p.ours) {
            (Some(id), true) => {
                obs.policies.insert(id, p.spi);
            }
            (Some(id), false) => {
                obs.foreign_policies.insert(id);
            }
            (None, _) => {}
        }
    }
    for s in sas {
        if s.ours {
            obs.sas.insert(s.id, s.stats);
        } else {
            obs.foreign_sas.insert((s.id.dst, s.id.spi));
        }
    }
    obs
}

/// Puts what a GET of `id` found (or that nothing is there) into the observation.
///
/// An SA that was there and is gone (the grace period of a rotation ended, or the tunnel was
/// removed) also leaves the ESP seen from the peer: that set is read with the full
/// observation, before the removal, so its entry for the SA is stale. Kept, it would make the
/// status call the removed SA's SPI one "for which no key is installed here" until the next
/// full observation, and put a working tunnel down for up to one period.
pub fn patch_sa(obs: &mut Observed, id: &SaId, found: Option<DumpedSa>) {
    let was_there = obs.sas.remove(id).is_some() | obs.foreign_sas.remove(&(id.dst, id.spi));
    match found {
        Some(s) if s.ours => {
            obs.sas.insert(s.id, s.stats);
        }
        Some(s) => {
            obs.foreign_sas.insert((s.id.dst, s.id.spi));
        }
        None if was_there => {
            obs.esp_seen.remove(id);
        }
        None => {}
    }
}

/// Puts what a GET of `id` found (or that nothing is there) into the observation.
pub fn patch_policy(obs: &mut Observed, id: &PolicyId, found: Option<DumpedPolicy>) {
    obs.policies.remove(id);
    obs.foreign_policies.remove(id);
    match found {
        Some(p) if p.ours => {
            obs.policies.insert(*id, p.spi);
        }
        Some(_) => {
            obs.foreign_policies.insert(*id);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::xfrm::types::{Dir, Flow, Proto, SaStats};
    use crate::model::DesiredTunnel;

    fn desired(confs: &[(&str, Arc<TunnelConf>)]) -> Desired {
        Desired {
            tunnels: confs
                .iter()
                .map(|(n, c)| {
                    let t = DesiredTunnel {
                        version: 1,
                        conf: Arc::clone(c),
                    };
                    ((*n).to_owned(), t)
                })
                .collect(),
            ..Default::default()
        }
    }

    fn conf(remote: &str) -> Arc<TunnelConf> {
        Arc::new(crate::backend::xfrm::plan::tests::conf(
            remote, remote, "a", None,
        ))
    }

    #[test]
    fn only_added_changed_and_removed_tunnels_are_read_back() {
        let (a, b, c) = (conf("192.0.2.2"), conf("192.0.2.3"), conf("192.0.2.4"));
        let mut seen = Seen::default();
        let many: Vec<(String, Arc<TunnelConf>)> = (0..100)
            .map(|i| (format!("u{i}"), conf("192.0.2.9")))
            .collect();
        let mut all: Vec<(&str, Arc<TunnelConf>)> = many
            .iter()
            .map(|(n, c)| (n.as_str(), Arc::clone(c)))
            .collect();
        all.extend([("a", Arc::clone(&a)), ("b", Arc::clone(&b))]);
        seen.remember(&desired(&all));
        assert!(seen.changed(&desired(&all)).is_empty(), "a tick reads all");
        // a removed, b modified (new Arc), c added: 1 + 2 + 1 configurations, whatever N is.
        let b2 = conf("192.0.2.3");
        all.retain(|(n, _)| !matches!(*n, "a" | "b"));
        all.extend([("b", Arc::clone(&b2)), ("c", Arc::clone(&c))]);
        let changed = seen.changed(&desired(&all));
        assert_eq!(changed.len(), 4);
        let t = Targets::of_confs(&changed, &Generations::default());
        // Each tunnel: in and out SA, in and out policy (b's old and new are equal here).
        assert_eq!((t.sas.len(), t.policies.len()), (6, 6));
    }

    #[test]
    fn a_get_that_finds_a_foreign_object_makes_it_foreign_and_a_missing_one_is_forgotten() {
        let flow = Flow {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            proto: Proto::Gre,
        };
        let pid = PolicyId {
            dir: Dir::Out,
            flow,
        };
        let sid = SaId {
            src: flow.src,
            dst: flow.dst,
            spi: 0x1234,
        };
        let mut obs = Observed::default();
        obs.policies.insert(pid, 0x1234);
        obs.sas.insert(sid, SaStats::default());
        let foreign_p = DumpedPolicy {
            id: Some(pid),
            ours: false,
            spi: 0,
        };
        let foreign_s = DumpedSa {
            id: sid,
            ours: false,
            stats: SaStats::default(),
        };
        patch_policy(&mut obs, &pid, Some(foreign_p));
        patch_sa(&mut obs, &sid, Some(foreign_s));
        assert!(obs.policies.is_empty() && obs.foreign_policies.contains(&pid));
        assert!(obs.sas.is_empty() && obs.foreign_sas.contains(&(sid.dst, sid.spi)));
        patch_policy(&mut obs, &pid, None);
        patch_sa(&mut obs, &sid, None);
        assert!(obs.foreign_policies.is_empty() && obs.foreign_sas.is_empty());
    }

    #[test]
    fn an_sa_read_back_as_gone_takes_its_stale_esp_seen_entry_with_it() {
        let sa = |spi| SaId {
            src: "192.0.2.2".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            spi,
        };
        let (retired, never_ours) = (sa(0x1111), sa(0x2222));
        let mut obs = Observed::default();
        obs.sas.insert(retired, SaStats::default());
        obs.esp_seen.extend([retired, never_ours]);
        patch_sa(&mut obs, &retired, None);
        patch_sa(&mut obs, &never_ours, None);
        // The removed SA's entry predates its removal; an SPI that never had an SA here is
        // still what the peer sends with (the unknown-key diagnosis needs it).
        assert_eq!(obs.esp_seen.iter().collect::<Vec<_>>(), [&never_ours]);
    }
}
