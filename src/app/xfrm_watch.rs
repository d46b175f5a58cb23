//! Reacting to the kernel's XFRM notifications (`backend::xfrm::events`), in every backend.
//!
//! A policy or SA of one of our tunnels that vanishes behind our back (deleted by hand or by
//! another program, hard-expired) makes that tunnel alone the scope of the next pass, which
//! runs at once: the loss is logged, repaired where the backend can, and its status written
//! within a second instead of at the next periodic pass. A flush, or notifications lost to a
//! full receive buffer, make it a pass over every tunnel, each named.
//!
//! An event concerns the desired tunnels whose selector it names (addresses, protocol, port;
//! an SA without a selector, by its addresses); whose doing it is the backend says
//! ([`Origin`]): foreign objects and our own writes cause nothing. The IKE daemons remove
//! their SAs themselves when they rekey: an SA that leaves while a newer one of the same
//! tunnel, direction and selector (seen arriving since start-up) remains is a rekey, counted,
//! not a loss.
//! Events about a tunnel that a pass of ours changed in the last [`QUIET`] are the daemon
//! carrying out our own unloads: no reaction (the periodic pass still checks it). More than
//! [`MANY`] tunnels at once (an IKE daemon stopping removes all its policies) make one summary
//! line and a pass over every tunnel, not a line per tunnel.
//!
//! Without the subscription (no permission, an old kernel) the monitor logs it once and relies
//! on the periodic pass, as before.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::backend::xfrm::events::{self, Change, EventSelector, Flushed, SaRef, XfrmEvent};
use crate::backend::xfrm::types::SaId;
use crate::backend::{LiveStatus, Origin, Scope};
use crate::model::{Desired, TunnelConf};

/// After a pass of ours changed a tunnel, its IKE daemon's removals are our own doing.
const QUIET: Duration = Duration::from_secs(5);
/// More tunnels than this losing objects in one batch (an IKE daemon stopped, a mass delete)
/// make one summary line and a pass over every tunnel instead of a line each.
const MANY: usize = 64;

const IPPROTO_UDP: u8 = 17;
const IPPROTO_GRE: u8 = 47;

/// What kind of object of a tunnel vanished, for the counts (and their metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Vanished {
    /// A policy deleted by someone else.
    Policy,
    /// An SA deleted by someone else, not replaced by a rekey.
    Sa,
    /// A policy or SA that reached its hard lifetime.
    Expired,
}

impl Vanished {
    pub fn as_str(self) -> &'static str {
        match self {
            Vanished::Policy => "policy",
            Vanished::Sa => "sa",
            Vanished::Expired => "expire",
        }
    }
}

/// Per-tunnel counts of what the notifications showed; a removed tunnel's are dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct XfrmEventCounts {
    /// Outbound SAs replaced by a newer one (IKE rekeys, static-key rotations).
    pub rekeys: BTreeMap<String, u64>,
    /// Objects that vanished behind our back and made the tunnel reconciled.
    pub vanished: BTreeMap<(String, Vanished), u64>,
}

/// What a batch of events asks for: reconcile these tunnels. "Every tunnel" names them all
/// rather than asking for a pass over everything: such a pass may trust what the backend kept
/// (the static-key backend reads back only what changed), while a pass over named tunnels
/// reads their objects back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaction {
    pub tunnels: BTreeSet<String>,
}

/// The state the reaction needs between events.
#[derive(Debug, Default)]
pub struct XfrmWatch {
    /// Off in `--dry-run`, which owns no kernel state.
    enabled: bool,
    /// Desired tunnels by remote address, for [`Desired`] at `index_generation`.
    index: BTreeMap<IpAddr, Vec<String>>,
    index_generation: Option<u64>,
    /// The SAs of each tunnel seen arriving and not yet gone, with "outbound" and their
    /// selector (a UDP tunnel's IKE connections have one Child SA each, told apart by port).
    alive: BTreeMap<String, BTreeMap<SaId, (bool, Option<EventSelector>)>>,
    counts: XfrmEventCounts,
    /// When the last pass that changed something ended, and what it covered.
    applied: Option<(Instant, Scope)>,
}

impl XfrmWatch {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    /// Joins the kernel's XFRM groups; `None` (logged once) when disabled or refused.
    pub fn subscribe(&self) -> Option<mpsc::Receiver<XfrmEvent>> {
        if !self.enabled {
            return None;
        }
        match events::subscribe() {
            Ok(rx) => Some(rx),
            Err(e) => {
                info!(
                    "cannot subscribe to XFRM events ({e}): changes made behind our back are noticed by the periodic pass"
                );
                None
            }
        }
    }

    pub fn counts(&self) -> &XfrmEventCounts {
        &self.counts
    }

    /// The vanished counts as `(interface, object, count)`, the metric's series.
    pub fn vanished_series(&self) -> impl Iterator<Item = (String, &'static str, u64)> + '_ {
        self.counts
            .vanished
            .iter()
            .map(|((name, what), n)| (name.clone(), what.as_str(), *n))
    }

    /// A pass over `covered` changed something: the daemon's removals that follow are ours.
    pub fn applied(&mut self, covered: &Scope, now: Instant) {
        self.applied = Some((now, covered.clone()));
    }

    /// The reaction to `events`; `origin` is the backend's verdict on each.
    pub fn on_events(
        &mut self,
        events: &[XfrmEvent],
        origin: impl Fn(&XfrmEvent) -> Origin,
        desired: &Desired,
        generation: u64,
        now: Instant,
    ) -> Reaction {
        if self.index_generation != Some(generation) {
            self.reindex(desired, generation);
        }
        let mut out = Reaction::default();
        let mut lines = Vec::new();
        let mut everything = false;
        for ev in events {
            match &ev.change {
                Change::Flushed(what) => {
                    let what = match what {
                        Flushed::Sas => "SA",
                        Flushed::Policies => "policy",
                    };
                    warn!("every XFRM {what} was removed at once (a flush): checking every tunnel");
                    everything = true;
                }
                Change::Overrun => {
                    warn!(
                        "XFRM notifications were lost (receive buffer full): checking every tunnel"
                    );
                    everything = true;
                }
                Change::SaSoftExpired(sa) => debug!("XFRM {sa} reached its soft lifetime"),
                Change::SaAdded(sa) => {
                    if origin(ev) != Origin::Foreign {
                        for (t, outbound) in self.sa_tunnels(sa, desired) {
                            let kind = (outbound, sa.selector);
                            self.alive.entry(t).or_default().insert(sa.id, kind);
                        }
                    }
                }
                Change::SaGone(sa, why) => {
                    let origin = origin(ev);
                    if origin == Origin::Foreign {
                        continue;
                    }
                    for (t, outbound) in self.sa_tunnels(sa, desired) {
                        let alive = self.alive.entry(t.clone()).or_default();
                        alive.remove(&sa.id);
                        let replaced = alive.values().any(|k| *k == (outbound, sa.selector));
                        if replaced && outbound {
                            *self.counts.rekeys.entry(t.clone()).or_default() += 1;
                        }
                        let kind = match why {
                            events::Gone::Deleted => Vanished::Sa,
                            events::Gone::Expired => Vanished::Expired,
                        };
                        let react = match origin {
                            Origin::Others => true,
                            Origin::Daemon => !replaced && !self.quiet(&t, now),
                            Origin::Foreign | Origin::Ourselves => false,
                        };
                        if react {
                            let line = self.vanished(t, kind, &format!("{sa} was {why}"), origin);
                            lines.push(line);
                        }
                    }
                }
                Change::PolicyGone(p, why) => {
                    let origin = origin(ev);
                    let kind = match why {
                        events::Gone::Deleted => Vanished::Policy,
                        events::Gone::Expired => Vanished::Expired,
                    };
                    for t in self.selector_tunnels(&p.selector, desired) {
                        let react = match origin {
                            Origin::Others => true,
                            Origin::Daemon => !self.quiet(&t, now),
                            Origin::Foreign | Origin::Ourselves => false,
                        };
                        if react {
                            let line = self.vanished(t, kind, &format!("{p} was {why}"), origin);
                            lines.push(line);
                        }
                    }
                }
            }
        }
        if lines.len() > MANY {
            warn!(
                "XFRM objects of {} tunnels vanished at once ({}, ...): checking every tunnel",
                lines.len(),
                lines.first().map_or("", |(_, l)| l.as_str())
            );
            lines.iter().for_each(|(_, l)| debug!("{l}"));
            everything = true;
        } else {
            lines.iter().for_each(|(_, l)| warn!("{l}"));
        }
        out.tunnels.extend(lines.into_iter().map(|(t, _)| t));
        if everything {
            out.tunnels.extend(desired.tunnels.keys().cloned());
        }
        out
    }

    /// `live` with a section of what the notifications showed for tunnel `name`, if anything.
    pub fn show(&self, name: &str, live: Option<&LiveStatus>) -> Option<LiveStatus> {
        let counts = self.counts();
        let mut lines: Vec<String> = (counts.vanished.iter())
            .filter(|((t, _), _)| t == name)
            .map(|((_, kind), n)| format!("{} vanished: {n}", kind.as_str()))
            .collect();
        if let Some(n) = counts.rekeys.get(name) {
            lines.push(format!("rekeys: {n}"));
        }
        if lines.is_empty() {
            return None;
        }
        let mut live = live
            .cloned()
            .unwrap_or_else(|| LiveStatus::new(crate::backend::LiveState::Configured));
        live.add_details("XFRM events", lines);
        Some(live)
    }

    /// Counts an object of `tunnel` that vanished; returns the tunnel and the log line.
    fn vanished(
        &mut self,
        tunnel: String,
        kind: Vanished,
        what: &str,
        origin: Origin,
    ) -> (String, String) {
        let by = if origin == Origin::Others {
            " behind our back"
        } else {
            ""
        };
        let line = format!("{tunnel}: XFRM {what}{by}: reconciling {tunnel}");
        *self
            .counts
            .vanished
            .entry((tunnel.clone(), kind))
            .or_default() += 1;
        (tunnel, line)
    }

    fn quiet(&self, tunnel: &str, now: Instant) -> bool {
        self.applied.as_ref().is_some_and(|(at, scope)| {
            now.saturating_duration_since(*at) < QUIET && scope.covers(tunnel)
        })
    }

    /// Rebuilds the address index, and forgets what is kept of tunnels no longer desired.
    fn reindex(&mut self, desired: &Desired, generation: u64) {
        self.index.clear();
        for (name, t) in &desired.tunnels {
            self.index
                .entry(t.conf.remote_ip)
                .or_default()
                .push(name.clone());
        }
        self.index_generation = Some(generation);
        let wanted = |t: &String| desired.tunnels.contains_key(t);
        self.alive.retain(|t, _| wanted(t));
        self.counts.rekeys.retain(|t, _| wanted(t));
        self.counts.vanished.retain(|(t, _), _| wanted(t));
    }

    /// The desired tunnels between these two addresses (either way round).
    fn between<'d>(
        &self,
        a: IpAddr,
        b: IpAddr,
        desired: &'d Desired,
    ) -> Vec<(&'d TunnelConf, bool)> {
        let mut out = Vec::new();
        for (remote, local, outbound) in [(b, a, true), (a, b, false)] {
            for name in self.index.get(&remote).into_iter().flatten() {
                if let Some(t) = desired.tunnels.get(name)
                    && t.conf.local_ip.is_none_or(|l| l == local)
                {
                    out.push((&*t.conf, outbound));
                }
            }
        }
        out
    }

    /// Tunnels whose traffic `sel` selects.
    fn selector_tunnels(&self, sel: &EventSelector, desired: &Desired) -> Vec<String> {
        if !sel.hosts {
            return Vec::new();
        }
        (self.between(sel.src, sel.dst, desired).into_iter())
            .filter(|(conf, _)| carries(conf, sel))
            .map(|(conf, _)| conf.name.clone())
            .collect()
    }

    /// Tunnels an SA belongs to, with "outbound": by its selector, or by its addresses when it
    /// has none.
    fn sa_tunnels(&self, sa: &SaRef, desired: &Desired) -> Vec<(String, bool)> {
        (self.between(sa.id.src, sa.id.dst, desired).into_iter())
            .filter(|(conf, _)| {
                sa.selector
                    .is_none_or(|s| s.proto == 0 && !s.hosts || carries(conf, &s))
            })
            .map(|(conf, outbound)| (conf.name.clone(), outbound))
            .collect()
    }
}

/// Whether a host-pair selector selects the tunnel's protocol (and port).
fn carries(conf: &TunnelConf, sel: &EventSelector) -> bool {
    match conf.udp_port() {
        None => sel.proto == IPPROTO_GRE,
        Some(port) => {
            sel.proto == IPPROTO_UDP && (sel.dport == Some(port) || sel.sport == Some(port))
        }
    }
}

#[cfg(test)]
mod tests;
