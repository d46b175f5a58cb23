//! The host's whole XFRM state, read-only, for `diagnose`: every policy with its selector,
//! priority, action, mark and templates, and every SA with its counters, other programs'
//! objects included. The backend's own dump ([`super::netlink`]) keeps only the objects it
//! could ever want; diagnose must also see a host VPN's policies to tell whether one of them
//! captures a tunnel's traffic. Works under every backend (the IKE daemons' policies are XFRM
//! policies too). Key bytes are dropped as each message arrives.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_xfrm::{
    Address, Selector, UserPolicyInfo, UserSaInfo, XFRM_MODE_TUNNEL, XFRM_POLICY_BLOCK,
    XFRM_POLICY_FWD, XFRM_POLICY_IN, XFRM_POLICY_OUT, XfrmAttrs, XfrmMessage, policy, state,
};

use super::error::XfrmError;
use super::netlink::{Xfrm, ip_of};

/// The direction of a policy, `fwd` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyDir {
    In,
    Out,
    Fwd,
}

impl PolicyDir {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
            Self::Fwd => "fwd",
        }
    }
}

/// One side of a selector: `addr/len`; `None` when the selector has no family (any address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: Option<IpAddr>,
    pub len: u8,
}

/// A policy selector as the kernel holds it (ports in host order, masks as given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSelector {
    pub src: Prefix,
    pub dst: Prefix,
    /// IP protocol; 0 is any.
    pub proto: u8,
    pub sport: u16,
    pub sport_mask: u16,
    pub dport: u16,
    pub dport_mask: u16,
    /// 0: any device.
    pub ifindex: i32,
}

/// One template of a policy (what SA the traffic must go through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTemplate {
    pub proto: u8,
    pub reqid: u32,
    pub tunnel_mode: bool,
    /// `level required` (the kernel drops matching traffic without an SA); false for
    /// `level use`, which lets it pass in clear.
    pub required: bool,
}

/// One policy of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    pub dir: PolicyDir,
    pub selector: HostSelector,
    pub priority: u32,
    /// The kernel's index (it grows as policies are added; the low bits hold the direction).
    pub index: u32,
    /// `action block`: matching traffic is dropped.
    pub block: bool,
    /// `(value, mask)` of the policy's mark; mask 0 matches every packet.
    pub mark: (u32, u32),
    /// Non-zero: the policy applies to traffic of that XFRM interface only.
    pub if_id: u32,
    pub templates: Vec<HostTemplate>,
}

/// One SA of the host, without its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSa {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub spi: u32,
    pub proto: u8,
    pub reqid: u32,
    /// The selector's IP protocol (0: any) and ports (0: any).
    pub sel_proto: u8,
    pub sel_sport: u16,
    pub sel_dport: u16,
    pub packets: u64,
    pub bytes: u64,
}

/// Everything XFRM holds on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostXfrm {
    pub policies: Vec<HostPolicy>,
    pub sas: Vec<HostSa>,
}

impl Xfrm {
    /// Dumps every policy (main type) and every SA of the host.
    pub async fn dump_host(&mut self) -> Result<HostXfrm, XfrmError> {
        let policies = self
            .socket
            .dump(
                XfrmMessage::GetPolicy(policy::DelGetMessage::default()),
                NLM_F_REQUEST | NLM_F_DUMP,
                |m| match m {
                    XfrmMessage::AddPolicy(p) => host_policy(&p.user_policy_info, &p.nlas),
                    _ => None,
                },
            )
            .await?;
        let sas = self.dump_host_sas().await?;
        Ok(HostXfrm { policies, sas })
    }

    /// Dumps every SA of the host (diagnose's second counter sample, the metrics' traffic).
    pub async fn dump_host_sas(&mut self) -> Result<Vec<HostSa>, XfrmError> {
        self.socket
            .dump(
                XfrmMessage::GetDumpSa(state::GetDumpMessage::default()),
                NLM_F_REQUEST | NLM_F_DUMP,
                |m| match m {
                    XfrmMessage::AddSa(s) => host_sa(&s.user_sa_info),
                    _ => None,
                },
            )
            .await
    }
}

fn prefix(a: &Address, family: u16, len: u8) -> Prefix {
    Prefix {
        addr: ip_of(a, family),
        len,
    }
}

fn host_selector(s: &Selector) -> HostSelector {
    HostSelector {
        src: prefix(&s.saddr, s.family, s.prefixlen_s),
        dst: prefix(&s.daddr, s.family, s.prefixlen_d),
        proto: s.proto,
        sport: s.sport,
        sport_mask: s.sport_mask,
        dport: s.dport,
        dport_mask: s.dport_mask,
        ifindex: s.ifindex,
    }
}

fn host_policy(info: &UserPolicyInfo, nlas: &[XfrmAttrs]) -> Option<HostPolicy> {
    let dir = match info.direction {
        XFRM_POLICY_IN => PolicyDir::In,
        XFRM_POLICY_OUT => PolicyDir::Out,
        XFRM_POLICY_FWD => PolicyDir::Fwd,
        _ => return None,
    };
    let mut p = HostPolicy {
        dir,
        selector: host_selector(&info.selector),
        priority: info.priority,
        index: info.index,
        block: info.action == XFRM_POLICY_BLOCK,
        mark: (0, 0),
        if_id: 0,
        templates: Vec::new(),
    };
    for a in nlas {
        match a {
            XfrmAttrs::Template(ts) => p.templates.extend(ts.iter().map(|t| HostTemplate {
                proto: t.id.proto,
                reqid: t.reqid,
                tunnel_mode: t.mode == XFRM_MODE_TUNNEL,
                required: t.optional == 0,
            })),
            XfrmAttrs::Mark(m) => p.mark = (m.value, m.mask),
            XfrmAttrs::IfId(id) => p.if_id = *id,
            _ => {}
        }
    }
    Some(p)
}

fn host_sa(info: &UserSaInfo) -> Option<HostSa> {
    Some(HostSa {
        src: ip_of(&info.saddr, info.family)?,
        dst: ip_of(&info.id.daddr, info.family)?,
        spi: info.id.spi,
        proto: info.id.proto,
        reqid: info.reqid,
        sel_proto: info.selector.proto,
        sel_sport: info.selector.sport,
        sel_dport: info.selector.dport,
        packets: info.lifetime_cur.packets,
        bytes: info.lifetime_cur.bytes,
    })
}
