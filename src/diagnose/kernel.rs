//! The kernel layers of a tunnel, from a dump of the host's XFRM state: a policy in each
//! direction that takes the tunnel's real traffic (`policy-missing`), nobody else's policy
//! winning over ours (`foreign-policy-shadows`), outbound traffic that cannot leave in clear
//! (`cleartext-not-guarded`), an ESP SA in each direction (`sa-missing`) and inbound packets
//! when outbound ones flow (`no-inbound-traffic`).
//!
//! Which policy wins follows the kernel's lookup (`xfrm_policy_lookup_bytype`): among the
//! policies whose selector, mark and interface id match the packet, the lowest `priority`
//! value wins; between equal priorities the one inserted first, which we read from the
//! kernel's policy index (it grows with every policy added). A policy is "ours" when the
//! static-key backend tagged it (its priority and reqid), or, under an IKE daemon, when its
//! selector is exactly the tunnel's host pair and protocol and its templates are ESP: the
//! policies our connections make the daemon install. Any other matching policy is foreign.
//! Pure.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{Checks, Code, Finding, Host, Severity};
use crate::backend::BackendKind;
use crate::backend::xfrm::host::{HostPolicy, HostSa, HostXfrm, PolicyDir, Prefix};
use crate::backend::xfrm::types::{PRIORITY, REQID};
use crate::model::{TunnelConf, TunnelType};

const IPPROTO_UDP: u8 = 17;
const IPPROTO_GRE: u8 = 47;
const IPPROTO_ESP: u8 = 50;
const REFRESH: &str = "ovs-appctl -t ovs-monitor-ipsec refresh";

/// The tunnel's traffic: UDP to `dport` (geneve, vxlan) or GRE, between two hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flows {
    pub local: IpAddr,
    pub remote: IpAddr,
    pub proto: u8,
    /// The UDP destination port; `None` for GRE.
    pub dport: Option<u16>,
}

impl Flows {
    pub fn of(conf: &TunnelConf, local: IpAddr) -> Self {
        Self {
            local,
            remote: conf.remote_ip,
            proto: match conf.kind {
                TunnelType::Gre => IPPROTO_GRE,
                TunnelType::Geneve | TunnelType::Vxlan => IPPROTO_UDP,
            },
            dport: conf.udp_port(),
        }
    }

    /// (source, destination) of the traffic in `dir`.
    fn ends(&self, dir: PolicyDir) -> (IpAddr, IpAddr) {
        match dir {
            PolicyDir::Out => (self.local, self.remote),
            PolicyDir::In | PolicyDir::Fwd => (self.remote, self.local),
        }
    }

    fn describe(&self, dir: PolicyDir) -> String {
        let (s, d) = self.ends(dir);
        match self.dport {
            Some(p) => format!("{s} -> {d} udp dport {p}"),
            None => format!("{s} -> {d} gre"),
        }
    }
}

fn contains(p: &Prefix, ip: IpAddr) -> bool {
    let Some(net) = p.addr else { return true };
    let bits = |a: IpAddr| -> (u128, u32) {
        match a {
            IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    };
    let ((n, width), (a, w2)) = (bits(net), bits(ip));
    if width != w2 {
        return false;
    }
    let len = u32::from(p.len).min(width);
    if len == 0 {
        return true;
    }
    let shift = width - len;
    (n >> shift) == (a >> shift)
}

/// Whether `p` takes the tunnel's packets in `dir` carrying `mark`. The source port of
/// geneve and vxlan packets varies (a hash of the inner flow): a policy that matches only
/// some source ports takes only part of the traffic, which is reported as `Some(false)`.
fn takes(p: &HostPolicy, f: &Flows, dir: PolicyDir, mark: u32) -> Option<bool> {
    let s = &p.selector;
    let (src, dst) = f.ends(dir);
    let port_ok = |port: u16, mask: u16| mask == 0 || (port ^ s.dport) & mask == 0;
    let matched = p.dir == dir
        && p.if_id == 0
        && mark & p.mark.1 == p.mark.0 & p.mark.1
        && contains(&s.src, src)
        && contains(&s.dst, dst)
        && (s.proto == 0 || s.proto == f.proto)
        && (s.dport_mask == 0 || f.dport.is_some_and(|d| port_ok(d, s.dport_mask)));
    matched.then_some(s.sport_mask == 0)
}

fn ours(p: &HostPolicy, f: &Flows, dir: PolicyDir, kind: BackendKind) -> bool {
    if kind == BackendKind::None {
        return p.priority == PRIORITY && p.templates.iter().any(|t| t.reqid == REQID);
    }
    let (src, dst) = f.ends(dir);
    let host = |ip: IpAddr| if ip.is_ipv4() { 32 } else { 128 };
    let s = &p.selector;
    !p.block
        && !p.templates.is_empty()
        && p.templates.iter().all(|t| t.proto == IPPROTO_ESP)
        && s.src.addr == Some(src)
        && s.dst.addr == Some(dst)
        && s.src.len == host(src)
        && s.dst.len == host(dst)
        && s.proto == f.proto
}

/// True when `a` is looked up before `b`.
fn wins(a: &HostPolicy, b: &HostPolicy) -> bool {
    (a.priority, a.index) < (b.priority, b.index)
}

/// How a person would write the policy (as `ip xfrm policy` prints it, in short).
pub fn describe(p: &HostPolicy) -> String {
    let s = &p.selector;
    let pre = |x: &Prefix| match x.addr {
        Some(a) => format!("{a}/{}", x.len),
        None => "any".to_owned(),
    };
    let mut out = format!(
        "src {} dst {} proto {}",
        pre(&s.src),
        pre(&s.dst),
        match s.proto {
            0 => "any".to_owned(),
            IPPROTO_UDP => "udp".to_owned(),
            IPPROTO_GRE => "gre".to_owned(),
            n => n.to_string(),
        }
    );
    if s.sport_mask != 0 {
        out.push_str(&format!(" sport {}", s.sport));
    }
    if s.dport_mask != 0 {
        out.push_str(&format!(" dport {}", s.dport));
    }
    out.push_str(&format!(" dir {} priority {}", p.dir.as_str(), p.priority));
    if p.mark.1 != 0 {
        out.push_str(&format!(" mark 0x{:x}/0x{:x}", p.mark.0, p.mark.1));
    }
    if p.block {
        out.push_str(" action block");
    }
    for t in &p.templates {
        out.push_str(&format!(
            " tmpl proto {} reqid {} mode {}{}",
            if t.proto == IPPROTO_ESP {
                "esp".to_owned()
            } else {
                t.proto.to_string()
            },
            t.reqid,
            if t.tunnel_mode { "tunnel" } else { "transport" },
            if t.required { "" } else { " level use" }
        ));
    }
    out
}

/// The host's XFRM state indexed once per `diagnose`, so that N tunnels cost N look-ups and
/// not N scans of every policy and SA: policies on an exact host pair by direction and
/// addresses, the others (wider selectors, which may take any tunnel's traffic) in one list,
/// SAs by their addresses, and the second sample's SAs by identity.
#[derive(Debug, Default)]
pub struct XfrmIndex<'a> {
    exact: HashMap<(PolicyDir, IpAddr, IpAddr), Vec<&'a HostPolicy>>,
    wide: Vec<&'a HostPolicy>,
    sas: HashMap<(IpAddr, IpAddr), Vec<&'a HostSa>>,
    later: HashMap<(IpAddr, IpAddr, u32), &'a HostSa>,
}

impl<'a> XfrmIndex<'a> {
    /// `later`: the SAs dumped again after the counter sample.
    pub fn new(x: &'a HostXfrm, later: &'a [HostSa]) -> Self {
        let mut ix = XfrmIndex::default();
        let full = |p: &Prefix| p.addr.filter(|a| u32::from(p.len) == width(*a));
        for p in &x.policies {
            match (full(&p.selector.src), full(&p.selector.dst)) {
                (Some(s), Some(d)) => ix.exact.entry((p.dir, s, d)).or_default().push(p),
                _ => ix.wide.push(p),
            }
        }
        // SPI 0: the larval state of a pending acquire, not an SA.
        for sa in x
            .sas
            .iter()
            .filter(|s| s.proto == IPPROTO_ESP && s.spi != 0)
        {
            ix.sas.entry((sa.src, sa.dst)).or_default().push(sa);
        }
        ix.later = later
            .iter()
            .filter(|s| s.proto == IPPROTO_ESP)
            .map(|s| ((s.src, s.dst, s.spi), s))
            .collect();
        ix
    }

    /// Every policy that may take traffic from `src` to `dst` in `dir`.
    fn policies(
        &self,
        dir: PolicyDir,
        src: IpAddr,
        dst: IpAddr,
    ) -> impl Iterator<Item = &'a HostPolicy> {
        self.exact
            .get(&(dir, src, dst))
            .into_iter()
            .flatten()
            .chain(&self.wide)
            .copied()
    }

    fn sas(&self, src: IpAddr, dst: IpAddr) -> &[&'a HostSa] {
        self.sas.get(&(src, dst)).map_or(&[], Vec::as_slice)
    }
}

fn width(a: IpAddr) -> u32 {
    if a.is_ipv4() { 32 } else { 128 }
}

/// Adds the kernel layers for the tunnel's `flows`.
pub fn check(f: &Flows, host: &Host<'_>, out: &mut Checks) {
    let xfrm = match host.xfrm {
        Ok(x) => x,
        Err(e) => {
            out.layer("kernel", false, format!("not checked: {e}"));
            return;
        }
    };
    for dir in [PolicyDir::Out, PolicyDir::In] {
        policies(f, dir, xfrm, host, out);
    }
    let (src, dst) = f.ends(PolicyDir::Fwd);
    let ours_fwd = xfrm
        .policies(PolicyDir::Fwd, src, dst)
        .filter(|p| takes(p, f, PolicyDir::Fwd, host.packet_mark) == Some(true))
        .any(|p| ours(p, f, PolicyDir::Fwd, host.kind));
    if ours_fwd {
        out.layer("policy fwd", true, "present");
    }
    sas(f, xfrm, host, out);
}

fn policies(f: &Flows, dir: PolicyDir, xfrm: &XfrmIndex<'_>, host: &Host<'_>, out: &mut Checks) {
    let name = match dir {
        PolicyDir::Out => "policy out",
        _ => "policy in",
    };
    let (src, dst) = f.ends(dir);
    let matching: Vec<(&HostPolicy, bool)> = xfrm
        .policies(dir, src, dst)
        .filter_map(|p| takes(p, f, dir, host.packet_mark).map(|whole| (p, whole)))
        .collect();
    let mine = matching
        .iter()
        .filter(|(p, whole)| *whole && ours(p, f, dir, host.kind))
        .map(|(p, _)| *p)
        .min_by_key(|p| (p.priority, p.index));
    let mut ok = true;
    match mine {
        Some(p) => out.layer(name, true, describe(p)),
        None => {
            ok = false;
            out.layer(name, false, format!("missing for {}", f.describe(dir)));
            out.find(Finding::new(
                Code::PolicyMissing,
                Severity::Error,
                format!("no {} policy of the tunnel for {}", dir.as_str(), f.describe(dir)),
                format!(
                    "run `{REFRESH}`; if it stays missing, the IKE daemon did not install it (see the Child SA layer and the daemon's log)"
                ),
            ));
        }
    }
    for (p, _) in matching
        .iter()
        .filter(|(p, _)| !ours(p, f, dir, host.kind))
        .filter(|(p, _)| mine.is_none_or(|m| wins(p, m)))
    {
        ok = false;
        out.find(Finding::new(
            Code::ForeignPolicyShadows,
            Severity::Error,
            format!(
                "a policy this monitor did not create takes the tunnel's {} traffic{}: {}",
                dir.as_str(),
                mine.map(|m| format!(" before ours (priority {})", m.priority))
                    .unwrap_or_default(),
                describe(p)
            ),
            "have the program that owns that policy give it a larger priority value than ours, or narrow its selector so it leaves the tunnel's traffic alone",
        ));
    }
    if dir == PolicyDir::Out {
        let winner = matching
            .iter()
            .filter(|(_, whole)| *whole)
            .map(|(p, _)| *p)
            .min_by_key(|p| (p.priority, p.index));
        let guarded = winner.is_some_and(|p| {
            p.block || (!p.templates.is_empty() && p.templates.iter().all(|t| t.required))
        });
        if !guarded && winner.is_some() {
            ok = false;
            out.find(Finding::new(
                Code::CleartextNotGuarded,
                Severity::Warning,
                format!(
                    "if the tunnel's SA went away its traffic ({}) would leave in clear: the policy that takes it does not require an SA",
                    f.describe(dir)
                ),
                "set options:ipsec_skb_mark (a drop shunt) or keep the policy at level required (no auto=route with level use, no passthrough policy)",
            ));
        }
    }
    if !ok && let Some(l) = out.layers.iter_mut().rev().find(|l| l.name == name) {
        l.ok = false;
    }
}

fn sas(f: &Flows, xfrm: &XfrmIndex<'_>, host: &Host<'_>, out: &mut Checks) {
    let (sa_out, sa_in) = (xfrm.sas(f.local, f.remote), xfrm.sas(f.remote, f.local));
    let spis = |v: &[&HostSa]| {
        v.iter()
            .map(|s| format!("0x{:08x}", s.spi))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (dir, v) in [("out", sa_out), ("in", sa_in)] {
        let name = if dir == "out" { "SA out" } else { "SA in" };
        if v.is_empty() {
            out.layer(name, false, "missing");
            out.find(Finding::new(
                Code::SaMissing,
                Severity::Error,
                format!("no {dir}bound ESP SA between {} and {}", f.local, f.remote),
                "look at the Child SA layer (IKE backends) or the tunnel's error (static keys: the peer generation and psk must match); `modprobe esp4 esp6` if the kernel refuses SAs",
            ));
        } else {
            out.layer(name, true, format!("spi {}", spis(v)));
        }
    }
    let Some(after) = host.sampled else {
        return;
    };
    let grew = |v: &[&HostSa]| -> u64 {
        v.iter()
            .map(|s| {
                xfrm.later
                    .get(&(s.src, s.dst, s.spi))
                    .map_or(0, |l| l.packets.saturating_sub(s.packets))
            })
            .sum()
    };
    if sa_out.is_empty() {
        return;
    }
    let (o, i) = (grew(sa_out), grew(sa_in));
    let secs = after.as_secs_f64();
    let text = format!("+{o} packets out, +{i} in over {secs:.1} s");
    if o > 0 && i == 0 {
        out.layer("traffic", false, text);
        out.find(Finding::new(
            Code::NoInboundTraffic,
            Severity::Warning,
            format!(
                "{o} packets left through the outbound SA in {secs:.1} s and none came in from {}",
                f.remote
            ),
            "check the peer (its own diagnose), and that ESP (IP protocol 50, or UDP 4500 with NAT-T) from the peer is not dropped on the way",
        ));
    } else {
        out.layer("traffic", true, text);
    }
}
