//! Pure: what the kernel must hold for each desired tunnel, or why the tunnel cannot be
//! programmed. Shared by the planner and the status so both judge a tunnel the same way.
//!
//! A tunnel's keys take two HKDF runs per SA: 20,000 SAs at 10,000 tunnels, twice a pass (plan
//! and status). [`WantCache`] keeps each tunnel's derivation while its configuration and
//! generation stay the same, so a pass derives only for the tunnels that changed; the
//! conflict checks between tunnels still run over all of them (set look-ups, no hashing).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::derive::{Context, Key, derive};
use super::types::{Dir, Flow, Generations, Observed, PolicyId, Proto, SaId};
use crate::model::{Auth, Desired, Secret, TunnelConf, TunnelType};

/// Why a tunnel is down while it waits for its peer's generation.
pub const WAITING_FOR_PEER: &str = "waiting for options:ipsec_peer_generation (the peer's external_ids:ipsec-generation); inbound traffic is dropped until then";

/// One SA to hold, with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaWant {
    pub id: SaId,
    pub flow: Flow,
    pub key: Key,
}

/// Everything one tunnel needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelWant {
    /// This tunnel's own generation (usually the node's), published in its OVSDB row.
    pub generation: [u8; 16],
    /// Local → remote.
    pub out_flow: Flow,
    /// Keys bind both ends' generations: both SAs are `None` until the peer's is known.
    pub out_sa: Option<SaWant>,
    /// Inbound SA of the current PSK.
    pub in_sa: Option<SaWant>,
    /// Inbound SA of `ipsec_psk_next` (rotation phase 1).
    pub in_next: Option<SaWant>,
    /// `ipsec_psk_next` is set.
    pub rotating: bool,
}

impl TunnelWant {
    pub fn in_flow(&self) -> Flow {
        self.out_flow.reversed()
    }

    pub fn out_policy(&self) -> PolicyId {
        PolicyId {
            dir: Dir::Out,
            flow: self.out_flow,
        }
    }

    pub fn in_policy(&self) -> PolicyId {
        PolicyId {
            dir: Dir::In,
            flow: self.in_flow(),
        }
    }

    /// The SPI the out-policy's template names: the outbound SA's, or 0 (any SA of ours for
    /// this pair; there is none until the peer's generation is known, so the kernel drops).
    pub fn out_spi(&self) -> u32 {
        self.out_sa.as_ref().map_or(0, |s| s.id.spi)
    }

    /// Inbound SAs first: they must exist before anything depends on them.
    pub fn sas(&self) -> impl Iterator<Item = (Dir, &SaWant)> {
        self.in_sa
            .iter()
            .chain(&self.in_next)
            .map(|s| (Dir::In, s))
            .chain(self.out_sa.iter().map(|s| (Dir::Out, s)))
    }
}

/// Each desired tunnel, by name: what it needs, or the reason it cannot be programmed. Shared
/// with [`WantCache`] (a copy of every tunnel's keys and selectors per pass was ~0.7 KB a
/// tunnel at the pass's peak).
pub type Wants = BTreeMap<String, Want>;

/// One tunnel's entry of [`Wants`].
pub type Want = Result<Arc<TunnelWant>, String>;

/// Resolves every desired tunnel against our generations and what the kernel holds, deriving
/// every key afresh (see [`WantCache::resolve`]).
pub fn resolve(desired: &Desired, obs: &Observed) -> Wants {
    WantCache::default().resolve(desired, obs)
}

/// Each desired tunnel's [`tunnel_want`] with the configuration it was derived from.
#[derive(Debug, Default)]
pub struct WantCache(BTreeMap<String, (Arc<TunnelConf>, Want)>);

impl WantCache {
    /// Resolves every desired tunnel against our generations and what the kernel holds.
    /// Tunnels are taken in name order, so when two claim the same traffic or SPI the later
    /// one fails. A tunnel is derived again only when its configuration (the registry keeps an
    /// unchanged tunnel's `Arc`) or its generation changed; tunnels no longer desired are
    /// forgotten.
    pub fn resolve(&mut self, desired: &Desired, obs: &Observed) -> Wants {
        let mut flows: BTreeSet<PolicyId> = BTreeSet::new();
        let mut spis: BTreeSet<(IpAddr, u32)> = BTreeSet::new();
        let mut kept = BTreeMap::new();
        let wants = desired
            .tunnels
            .iter()
            .map(|(name, t)| {
                let fresh = |(conf, want): &(Arc<TunnelConf>, Want)| {
                    Arc::ptr_eq(conf, &t.conf)
                        && want
                            .as_ref()
                            .map_or(true, |w| obs.generations.of(&w.out_flow) == &w.generation)
                };
                let want = match self.0.remove(name) {
                    Some(c) if fresh(&c) => c.1,
                    _ => tunnel_want(&t.conf, &obs.generations).map(Arc::new),
                };
                kept.insert(name.clone(), (Arc::clone(&t.conf), want.clone()));
                let want = want.and_then(|w| check_conflicts(w, obs, &mut flows, &mut spis));
                (name.clone(), want)
            })
            .collect();
        self.0 = kept;
        wants
    }
}

pub fn tunnel_want(conf: &TunnelConf, generations: &Generations) -> Result<TunnelWant, String> {
    let Auth::Psk(psk) = &conf.auth else {
        return Err("static keys (--ike-daemon=none) need options:psk".into());
    };
    let local = conf
        .local_ip
        .ok_or("options:local_ip is required with --ike-daemon=none")?;
    let proto = match conf.kind {
        TunnelType::Gre => Proto::Gre,
        TunnelType::Geneve | TunnelType::Vxlan => Proto::Udp(conf.udp_port().unwrap_or(0)),
    };
    let out_flow = Flow {
        src: local,
        dst: conf.remote_ip,
        proto,
    };
    let in_flow = out_flow.reversed();
    let generation = generations.of(&out_flow);
    let peer = conf.static_keying.peer_generation;
    let inbound = |s: &Secret| peer.map(|g| sa_want(s, in_flow, &g, generation));
    Ok(TunnelWant {
        generation: *generation,
        out_flow,
        out_sa: peer.map(|g| sa_want(psk, out_flow, generation, &g)),
        in_sa: inbound(psk),
        in_next: conf.static_keying.psk_next.as_ref().and_then(inbound),
        rotating: conf.static_keying.psk_next.is_some(),
    })
}

fn sa_want(psk: &Secret, flow: Flow, sender: &[u8; 16], receiver: &[u8; 16]) -> SaWant {
    let d = derive(
        psk.expose().as_bytes(),
        Context {
            flow: &flow,
            sender,
            receiver,
        },
    );
    SaWant {
        id: SaId {
            src: flow.src,
            dst: flow.dst,
            spi: d.spi,
        },
        flow,
        key: d.key,
    }
}

fn check_conflicts(
    w: Arc<TunnelWant>,
    obs: &Observed,
    flows: &mut BTreeSet<PolicyId>,
    spis: &mut BTreeSet<(IpAddr, u32)>,
) -> Result<Arc<TunnelWant>, String> {
    for p in [w.out_policy(), w.in_policy()] {
        if obs.foreign_policies.contains(&p) {
            return Err(format!(
                "a policy not created by ovs-monitor-ipsec already selects {}; it is left alone",
                p.flow
            ));
        }
        if flows.contains(&p) {
            return Err(format!(
                "another tunnel already selects {}: tunnels must differ in addresses, type or port",
                p.flow
            ));
        }
    }
    for (_, sa) in w.sas() {
        let key = (sa.id.dst, sa.id.spi);
        if obs.foreign_sas.contains(&key) || spis.contains(&key) {
            return Err(format!(
                "SPI collision: SPI 0x{:08x} to {} is already in use; rotate the PSK (options:ipsec_psk_next)",
                sa.id.spi, sa.id.dst
            ));
        }
    }
    flows.extend([w.out_policy(), w.in_policy()]);
    spis.extend(w.sas().map(|(_, s)| (s.id.dst, s.id.spi)));
    Ok(w)
}
