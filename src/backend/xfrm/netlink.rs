//! Our thin layer over netlink-packet-xfrm: build the few messages we send, read dumps into
//! [`super::types`] values (dropping key bytes at once), and keep nothing of an error but the
//! kernel's error code. The batching socket underneath is [`super::socket`].

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::error::XfrmError;
use super::socket::Socket;
use super::types::{Dir, Flow, PRIORITY, PolicyId, Proto, REQID, SaId, SaStats};
use super::want::SaWant;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_xfrm::{
    AF_INET, AF_INET6, Address, AlgAead, IPPROTO_ESP, Id, LifetimeConfig, ReplayEsn, Selector,
    UserPolicyId, UserPolicyInfo, UserSaId, UserSaInfo, UserTemplate, XFRM_INF,
    XFRM_MODE_TRANSPORT, XFRM_POLICY_ALLOW, XFRM_POLICY_IN, XFRM_POLICY_OUT, XFRM_STATE_ESN,
    XfrmAttrs, XfrmMessage, policy, state,
};

const AEAD: &[u8] = b"rfc4106(gcm(aes))";
const ICV_BITS: u32 = 128;
const REPLAY_WINDOW: u32 = 128;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_GRE: u8 = 47;

/// A policy from the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedPolicy {
    /// `None` when the selector is not one we could ever want (not a host pair, other
    /// protocol): such a policy cannot conflict with ours.
    pub id: Option<PolicyId>,
    pub ours: bool,
    pub spi: u32,
}

/// An SA from the dump, without its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedSa {
    pub id: SaId,
    pub ours: bool,
    pub stats: SaStats,
}

/// One write to the kernel. Its `Display` (what failed, in an error) is only formatted when
/// it fails: a cold start of 10,000 tunnels is 40,000 writes.
#[derive(Debug)]
pub enum Op<'a> {
    AddSa(Dir, &'a SaWant),
    SetPolicy { id: PolicyId, spi: u32 },
    DelPolicy(PolicyId),
    DelSa(SaId),
}

impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddSa(dir, sa) => write!(f, "add {dir} SA {}", sa.id),
            Op::SetPolicy { id, .. } => write!(f, "set {id} policy"),
            Op::DelPolicy(id) => write!(f, "remove {id} policy"),
            Op::DelSa(id) => write!(f, "remove SA {id}"),
        }
    }
}

/// Our XFRM requests over one [`Socket`].
pub struct Xfrm {
    pub(super) socket: Socket,
}

impl Xfrm {
    /// Opens the socket; must run inside the tokio runtime.
    pub fn open(timeout: Duration) -> Result<Self, XfrmError> {
        Ok(Self {
            socket: Socket::open(timeout)?,
        })
    }

    pub async fn dump_policies(&mut self) -> Result<Vec<DumpedPolicy>, XfrmError> {
        let msg = XfrmMessage::GetPolicy(policy::DelGetMessage::default());
        self.socket
            .dump(msg, NLM_F_REQUEST | NLM_F_DUMP, policy_of)
            .await
    }

    /// Each reply holds the SA's key: only the few fields we need are kept, as it arrives.
    pub async fn dump_sas(&mut self) -> Result<Vec<DumpedSa>, XfrmError> {
        let msg = XfrmMessage::GetDumpSa(state::GetDumpMessage::default());
        self.socket
            .dump(msg, NLM_F_REQUEST | NLM_F_DUMP, sa_of)
            .await
    }

    /// The object the kernel holds under our SA's identity (dst, SPI, ESP), ours or not.
    pub async fn get_sa(&mut self, id: &SaId) -> Result<Option<DumpedSa>, XfrmError> {
        let msg = XfrmMessage::GetSa(sa_id(id));
        Ok(self.socket.get(msg).await?.and_then(sa_of))
    }

    /// The policy the kernel holds on this selector and direction, ours or not.
    pub async fn get_policy(&mut self, id: &PolicyId) -> Result<Option<DumpedPolicy>, XfrmError> {
        let msg = XfrmMessage::GetPolicy(policy_id(id));
        Ok(self.socket.get(msg).await?.and_then(policy_of))
    }

    /// The sender the kernel names in its notifications about our requests.
    pub fn port(&self) -> u32 {
        self.socket.port()
    }

    /// Runs `ops` in batches; one result per op, in order.
    pub async fn run<'a>(
        &mut self,
        ops: impl Iterator<Item = &'a Op<'a>> + Send,
    ) -> Vec<Result<(), XfrmError>> {
        self.socket.write(&mut ops.map(message)).await
    }
}

/// The request for `op` and its flags; the batch adds `NLM_F_ACK` where it wants one.
fn message(op: &Op<'_>) -> (XfrmMessage, u16) {
    let write = NLM_F_REQUEST;
    match op {
        Op::AddSa(_, sa) => (add_sa(sa), write | NLM_F_CREATE | NLM_F_EXCL),
        Op::SetPolicy { id, spi } => (set_policy(id, *spi), write),
        Op::DelPolicy(id) => (XfrmMessage::DeletePolicy(policy_id(id)), write),
        Op::DelSa(id) => (XfrmMessage::DeleteSa(sa_id(id)), write),
    }
}

/// How a delete or get names a policy: selector and direction.
fn policy_id(id: &PolicyId) -> policy::DelGetMessage {
    policy::DelGetMessage {
        user_policy_id: UserPolicyId {
            selector: selector(&id.flow),
            index: 0,
            direction: direction(id.dir),
        },
        nlas: Vec::new(),
    }
}

/// How a delete or get names an SA: (dst, SPI, ESP), with its source.
fn sa_id(id: &SaId) -> state::DelGetMessage {
    state::DelGetMessage {
        user_sa_id: UserSaId {
            daddr: Address::from_ip(&id.dst),
            spi: id.spi,
            family: family(&id.dst),
            proto: IPPROTO_ESP,
        },
        nlas: vec![XfrmAttrs::SrcAddr(Address::from_ip(&id.src))],
    }
}

fn forever() -> LifetimeConfig {
    LifetimeConfig {
        soft_byte_limit: XFRM_INF,
        hard_byte_limit: XFRM_INF,
        soft_packet_limit: XFRM_INF,
        hard_packet_limit: XFRM_INF,
        ..Default::default()
    }
}

fn add_sa(sa: &SaWant) -> XfrmMessage {
    let mut alg_name = [0u8; 64];
    alg_name[..AEAD.len()].copy_from_slice(AEAD);
    let info = UserSaInfo {
        selector: selector(&sa.flow),
        // netlink-packet-xfrm converts the SPI to network order itself: host order here.
        id: Id {
            daddr: Address::from_ip(&sa.id.dst),
            spi: sa.id.spi,
            proto: IPPROTO_ESP,
        },
        saddr: Address::from_ip(&sa.id.src),
        lifetime_cfg: forever(),
        reqid: REQID,
        family: family(&sa.id.dst),
        mode: XFRM_MODE_TRANSPORT,
        flags: XFRM_STATE_ESN,
        ..Default::default()
    };
    XfrmMessage::AddSa(state::ModifyMessage {
        user_sa_info: info,
        nlas: vec![
            XfrmAttrs::EncryptionAlgAead(AlgAead {
                alg_name,
                alg_key_len: u32::try_from(sa.key.0.len() * 8).unwrap_or(160),
                alg_icv_len: ICV_BITS,
                alg_key: sa.key.0.to_vec(),
            }),
            XfrmAttrs::ReplayStateEsn(ReplayEsn {
                bmp_len: REPLAY_WINDOW / 32,
                replay_window: REPLAY_WINDOW,
                bmp: vec![0; (REPLAY_WINDOW / 32) as usize],
                ..Default::default()
            }),
        ],
    })
}

fn set_policy(id: &PolicyId, spi: u32) -> XfrmMessage {
    let fam = family(&id.flow.src);
    XfrmMessage::UpdatePolicy(policy::ModifyMessage {
        user_policy_info: UserPolicyInfo {
            selector: selector(&id.flow),
            lifetime_cfg: forever(),
            priority: PRIORITY,
            direction: direction(id.dir),
            action: XFRM_POLICY_ALLOW,
            ..Default::default()
        },
        nlas: vec![XfrmAttrs::Template(vec![UserTemplate {
            id: Id {
                spi,
                proto: IPPROTO_ESP,
                ..Default::default()
            },
            family: fam,
            reqid: REQID,
            mode: XFRM_MODE_TRANSPORT,
            // optional = 0: level required, so cleartext matching the policy is dropped.
            optional: 0,
            aalgos: u32::MAX,
            ealgos: u32::MAX,
            calgos: u32::MAX,
            ..Default::default()
        }])],
    })
}

fn family(ip: &IpAddr) -> u16 {
    if ip.is_ipv4() { AF_INET } else { AF_INET6 }
}

fn direction(d: Dir) -> u8 {
    match d {
        Dir::In => XFRM_POLICY_IN,
        Dir::Out => XFRM_POLICY_OUT,
    }
}

fn selector(flow: &Flow) -> Selector {
    let host = if flow.src.is_ipv4() { 32 } else { 128 };
    let (proto, dport, dport_mask) = match flow.proto {
        Proto::Udp(p) => (IPPROTO_UDP, p, u16::MAX),
        Proto::Gre => (IPPROTO_GRE, 0, 0),
    };
    Selector {
        daddr: Address::from_ip(&flow.dst),
        saddr: Address::from_ip(&flow.src),
        dport,
        dport_mask,
        family: family(&flow.src),
        prefixlen_d: host,
        prefixlen_s: host,
        proto,
        ..Default::default()
    }
}

pub(super) fn ip_of(a: &Address, fam: u16) -> Option<IpAddr> {
    match fam {
        AF_INET => Some(IpAddr::V4(a.to_ipv4())),
        AF_INET6 => Some(IpAddr::V6(a.to_ipv6())),
        _ => None,
    }
}

/// The flow a selector describes, when it is a host-to-host udp-port or gre selector.
fn flow_of(s: &Selector) -> Option<Flow> {
    let host = if s.family == AF_INET { 32 } else { 128 };
    if s.prefixlen_s != host || s.prefixlen_d != host {
        return None;
    }
    let proto = match (s.proto, s.dport_mask) {
        (IPPROTO_UDP, u16::MAX) => Proto::Udp(s.dport),
        (IPPROTO_GRE, _) => Proto::Gre,
        _ => return None,
    };
    Some(Flow {
        src: ip_of(&s.saddr, s.family)?,
        dst: ip_of(&s.daddr, s.family)?,
        proto,
    })
}

/// What we keep of a policy the kernel sent (in a dump or a `GETPOLICY` answer).
pub(crate) fn policy_of(m: XfrmMessage) -> Option<DumpedPolicy> {
    match m {
        XfrmMessage::AddPolicy(p) => Some(dumped_policy(&p.user_policy_info, &p.nlas)),
        _ => None,
    }
}

/// What we keep of an SA the kernel sent (in a dump or a `GETSA` answer): no key bytes.
pub(crate) fn sa_of(m: XfrmMessage) -> Option<DumpedSa> {
    match m {
        XfrmMessage::AddSa(s) => dumped_sa(&s.user_sa_info, &s.nlas),
        _ => None,
    }
}

fn dumped_policy(info: &UserPolicyInfo, nlas: &[XfrmAttrs]) -> DumpedPolicy {
    let dir = match info.direction {
        XFRM_POLICY_IN => Some(Dir::In),
        XFRM_POLICY_OUT => Some(Dir::Out),
        _ => None,
    };
    let templates: Vec<&UserTemplate> = nlas
        .iter()
        .filter_map(|a| match a {
            XfrmAttrs::Template(t) => Some(t.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    let ours = info.priority == PRIORITY
        && matches!(templates.as_slice(), [t] if t.reqid == REQID && t.id.proto == IPPROTO_ESP);
    DumpedPolicy {
        id: dir
            .zip(flow_of(&info.selector))
            .map(|(dir, flow)| PolicyId { dir, flow }),
        ours,
        spi: templates.first().map_or(0, |t| t.id.spi),
    }
}

fn dumped_sa(info: &UserSaInfo, nlas: &[XfrmAttrs]) -> Option<DumpedSa> {
    if info.id.proto != IPPROTO_ESP {
        return None;
    }
    let oseq = nlas.iter().find_map(|a| match a {
        XfrmAttrs::ReplayStateEsn(r) => Some((u64::from(r.oseq_hi) << 32) | u64::from(r.oseq)),
        XfrmAttrs::ReplayState(r) => Some(u64::from(r.oseq)),
        _ => None,
    });
    Some(DumpedSa {
        id: SaId {
            src: ip_of(&info.saddr, info.family)?,
            dst: ip_of(&info.id.daddr, info.family)?,
            spi: info.id.spi,
        },
        ours: info.reqid == REQID,
        stats: SaStats {
            bytes: info.lifetime_cur.bytes,
            packets: info.lifetime_cur.packets,
            oseq: oseq.unwrap_or(0),
            replay_drops: info.stats.replay,
            integrity_failed: info.stats.integrity_failed,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::xfrm::derive::Key;

    fn flow() -> Flow {
        Flow {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            proto: Proto::Udp(6081),
        }
    }

    #[test]
    fn selectors_round_trip_and_ours_is_recognised() {
        let f = flow();
        assert_eq!(flow_of(&selector(&f)), Some(f));
        let id = PolicyId {
            dir: Dir::Out,
            flow: f,
        };
        let XfrmMessage::UpdatePolicy(m) = set_policy(&id, 0x1234) else {
            panic!()
        };
        let d = dumped_policy(&m.user_policy_info, &m.nlas);
        assert_eq!(
            d,
            DumpedPolicy {
                id: Some(id),
                ours: true,
                spi: 0x1234
            }
        );
        let mut foreign = m.user_policy_info;
        foreign.priority = 0;
        assert!(!dumped_policy(&foreign, &m.nlas).ours);
    }

    #[test]
    fn sa_request_uses_gcm_128_icv_esn_and_replay_window_and_debug_hides_the_key() {
        let f = flow();
        let sa = SaWant {
            id: SaId {
                src: f.src,
                dst: f.dst,
                spi: 0xabcdef01,
            },
            flow: f,
            key: Key([0x5a; 20]),
        };
        let XfrmMessage::AddSa(m) = add_sa(&sa) else {
            panic!()
        };
        assert_eq!(m.user_sa_info.flags & XFRM_STATE_ESN, XFRM_STATE_ESN);
        assert_eq!(m.user_sa_info.lifetime_cfg.hard_byte_limit, XFRM_INF);
        assert!(
            m.nlas
                .iter()
                .any(|a| matches!(a, XfrmAttrs::EncryptionAlgAead(g)
            if g.alg_icv_len == 128 && g.alg_key_len == 160 && g.alg_name.starts_with(AEAD)))
        );
        assert!(
            m.nlas
                .iter()
                .any(|a| matches!(a, XfrmAttrs::ReplayStateEsn(r) if r.replay_window == 128))
        );
        let d = dumped_sa(&m.user_sa_info, &m.nlas).unwrap();
        assert_eq!((d.id, d.ours), (sa.id, true));
        assert!(!format!("{:?}", Op::AddSa(Dir::In, &sa)).contains("90, 90"));
    }

    #[test]
    fn kernel_errors_keep_only_the_code() {
        let e = XfrmError::Kernel { errno: 38 };
        assert_eq!(e.to_string(), "Function not implemented (os error 38)");
    }
}
