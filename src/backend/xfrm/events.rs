//! The kernel's XFRM notifications as typed events, for every backend.
//!
//! Without them a policy or SA deleted behind the monitor's back (by hand, by another program,
//! by a flush) or hard-expired was noticed only by the next periodic pass, up to 15 s later.
//! The kernel multicasts every change of its SA and policy databases to the `XFRMNLGRP_SA`,
//! `XFRMNLGRP_POLICY` and `XFRMNLGRP_EXPIRE` groups; [`subscribe`] joins them
//! ([`super::socket::Subscription`] is the transport) and turns each message into an
//! [`XfrmEvent`] carrying what identifies the object (selector, SPI, reqid, mark, policy
//! priority and template reqids), never its keys: SA notifications carry the key, which is
//! dropped as the message is read, as in a dump.
//!
//! Which tunnel an event concerns, and whether it is the monitor's own doing, is decided above
//! (`Backend::xfrm_origin`, `app::xfrm_watch`): the static-key backend by its ownership tags and
//! by the sender (the kernel names the netlink port of the request that caused a change; ours
//! is the request socket's), the IKE backends, whose daemons install the objects, by selector.

use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_xfrm::{
    IPPROTO_ESP, Selector, UserPolicyInfo, UserSaInfo, XFRM_POLICY_FWD, XFRM_POLICY_IN,
    XFRM_POLICY_OUT, XFRMNLGRP_EXPIRE, XFRMNLGRP_POLICY, XFRMNLGRP_SA, XfrmAttrs, XfrmMessage,
    nlas::Mark,
};
use tokio::sync::mpsc;
use tracing::warn;

use super::error::XfrmError;
use super::netlink::ip_of;
use super::socket::Subscription;
use super::types::{PRIORITY, REQID, SaId};

/// Events queued between the socket task and the event loop; when the loop is busy longer,
/// the socket's buffer takes the rest and then overflows into [`Change::Overrun`].
const QUEUE: usize = 1024;

const IPPROTO_UDP: u8 = 17;
const IPPROTO_GRE: u8 = 47;

/// One notification of the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfrmEvent {
    /// The netlink port of the request that caused it (0: the kernel itself, or a program that
    /// leaves it 0, as `ip` does).
    pub sender: u32,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An SA was added or updated (a new SA of a tunnel that has one is a rekey).
    SaAdded(SaRef),
    /// An SA was deleted, or hard-expired (the kernel deleted it).
    SaGone(SaRef, Gone),
    /// An SA reached its soft limit: its IKE daemon rekeys it; nothing to do.
    SaSoftExpired(SaRef),
    /// A policy was deleted, or hard-expired.
    PolicyGone(PolicyRef, Gone),
    /// Every SA (`ip xfrm state flush`) or every policy was removed at once.
    Flushed(Flushed),
    /// Notifications were lost (the receive buffer overflowed): anything may have changed.
    Overrun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    Deleted,
    Expired,
}

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Gone::Deleted => "deleted",
            Gone::Expired => "hard-expired",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    Sas,
    Policies,
}

/// What a selector names, when it is one of IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSelector {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Both prefixes are host prefixes (/32, /128): the only selectors of tunnels.
    pub hosts: bool,
    /// IP protocol, 0 for any.
    pub proto: u8,
    /// Ports, when the selector names one exactly.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

impl fmt::Display for EventSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.src, self.dst)?;
        match self.proto {
            0 => {}
            IPPROTO_UDP => f.write_str(" udp")?,
            IPPROTO_GRE => f.write_str(" gre")?,
            p => write!(f, " proto {p}")?,
        }
        if let Some(p) = self.sport {
            write!(f, " sport {p}")?;
        }
        if let Some(p) = self.dport {
            write!(f, " dport {p}")?;
        }
        Ok(())
    }
}

/// An ESP SA of an event, without its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaRef {
    pub id: SaId,
    /// `None` when the SA has no IPv4/IPv6 selector (the IKE daemon did not set one).
    pub selector: Option<EventSelector>,
    pub reqid: u32,
    pub mark: Option<Mark>,
}

impl fmt::Display for SaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SA {}", self.id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDir {
    In,
    Out,
    Fwd,
}

/// A policy of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    pub dir: PolicyDir,
    pub selector: EventSelector,
    /// `None` when the notification does not carry the policy's settings.
    pub priority: Option<u32>,
    /// The reqids of its templates.
    pub reqids: Vec<u32>,
    pub mark: Option<Mark>,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.dir {
            PolicyDir::In => "in",
            PolicyDir::Out => "out",
            PolicyDir::Fwd => "fwd",
        };
        write!(f, "{dir} policy {}", self.selector)
    }
}

impl XfrmEvent {
    /// Whether the object carries the static-key backend's ownership tags (reqid, and for a
    /// policy its priority and only template): see `docs/static-keying.md`.
    pub fn tagged_static(&self) -> bool {
        match &self.change {
            Change::SaAdded(sa) | Change::SaGone(sa, _) | Change::SaSoftExpired(sa) => {
                sa.reqid == REQID
            }
            Change::PolicyGone(p, _) => p.priority == Some(PRIORITY) && p.reqids == [REQID],
            Change::Flushed(_) | Change::Overrun => false,
        }
    }
}

/// Joins the SA, policy and expire groups; the events arrive on the returned channel until
/// it is dropped. Fails when the kernel refuses the socket or a group (no permission, no
/// XFRM): the caller then relies on the periodic pass. Must run inside the tokio runtime.
pub fn subscribe() -> Result<mpsc::Receiver<XfrmEvent>, XfrmError> {
    let mut sub = Subscription::open(&[XFRMNLGRP_SA, XFRMNLGRP_POLICY, XFRMNLGRP_EXPIRE])?;
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        loop {
            let events: Vec<XfrmEvent> = match sub.recv().await {
                Ok(Some(msgs)) => msgs.into_iter().filter_map(parse).collect(),
                Ok(None) => vec![XfrmEvent {
                    sender: 0,
                    change: Change::Overrun,
                }],
                Err(e) => {
                    warn!(
                        "XFRM events stopped ({e}): changes made behind our back wait for the periodic pass"
                    );
                    return;
                }
            };
            for ev in events {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// The event a notification describes; `None` for the ones that need no reaction (policies
/// added, acquires, and what we cannot read).
pub fn parse(msg: NetlinkMessage<XfrmMessage>) -> Option<XfrmEvent> {
    let sender = msg.header.port_number;
    let NetlinkPayload::InnerMessage(m) = msg.payload else {
        return None;
    };
    let change = match m {
        XfrmMessage::AddSa(s) | XfrmMessage::UpdateSa(s) => {
            Change::SaAdded(sa_ref(&s.user_sa_info, &s.nlas)?)
        }
        XfrmMessage::DeleteSa(d) => {
            let info = d.nlas.iter().find_map(|a| match a {
                XfrmAttrs::SaInfo(i) => Some(i),
                _ => None,
            })?;
            Change::SaGone(sa_ref(info, &d.nlas)?, Gone::Deleted)
        }
        XfrmMessage::Expire(e) => {
            let sa = sa_ref(&e.expire.state, &[])?;
            match e.expire.hard {
                0 => Change::SaSoftExpired(sa),
                _ => Change::SaGone(sa, Gone::Expired),
            }
        }
        XfrmMessage::DeletePolicy(d) => {
            let info = d.nlas.iter().find_map(|a| match a {
                XfrmAttrs::PolicyInfo(i) => Some(i),
                _ => None,
            });
            // The policy itself comes along; the id's selector is all zeros when the policy
            // was deleted by index (`ip xfrm policy delete dir out index N`).
            let sel = info.map_or(&d.user_policy_id.selector, |i| &i.selector);
            let p = policy_ref(sel, d.user_policy_id.direction, info, &d.nlas)?;
            Change::PolicyGone(p, Gone::Deleted)
        }
        XfrmMessage::PolicyExpire(e) if e.expire.hard != 0 => {
            let pol = &e.expire.pol;
            let p = policy_ref(&pol.selector, pol.direction, Some(pol), &e.nlas)?;
            Change::PolicyGone(p, Gone::Expired)
        }
        XfrmMessage::FlushSa(_) => Change::Flushed(Flushed::Sas),
        XfrmMessage::FlushPolicy(_) => Change::Flushed(Flushed::Policies),
        _ => return None,
    };
    Some(XfrmEvent { sender, change })
}

fn mark(nlas: &[XfrmAttrs]) -> Option<Mark> {
    nlas.iter().find_map(|a| match a {
        XfrmAttrs::Mark(m) => Some(*m),
        _ => None,
    })
}

fn selector(s: &Selector) -> Option<EventSelector> {
    let host = match s.family {
        netlink_packet_xfrm::AF_INET => 32,
        netlink_packet_xfrm::AF_INET6 => 128,
        _ => return None,
    };
    let port = |p: u16, mask: u16| (mask == u16::MAX).then_some(p);
    Some(EventSelector {
        src: ip_of(&s.saddr, s.family)?,
        dst: ip_of(&s.daddr, s.family)?,
        hosts: s.prefixlen_s == host && s.prefixlen_d == host,
        proto: s.proto,
        sport: port(s.sport, s.sport_mask),
        dport: port(s.dport, s.dport_mask),
    })
}

/// Only ESP SAs: the only kind any backend installs. SPI 0 is the kernel's larval state for an
/// ACQUIRE (an IKE daemon is asked to negotiate an SA), which expires by itself and was never a
/// tunnel's SA.
fn sa_ref(info: &UserSaInfo, nlas: &[XfrmAttrs]) -> Option<SaRef> {
    if info.id.proto != IPPROTO_ESP || info.id.spi == 0 {
        return None;
    }
    Some(SaRef {
        id: SaId {
            src: ip_of(&info.saddr, info.family)?,
            dst: ip_of(&info.id.daddr, info.family)?,
            spi: info.id.spi,
        },
        selector: selector(&info.selector),
        reqid: info.reqid,
        mark: mark(nlas),
    })
}

fn policy_ref(
    sel: &Selector,
    dir: u8,
    info: Option<&UserPolicyInfo>,
    nlas: &[XfrmAttrs],
) -> Option<PolicyRef> {
    let dir = match dir {
        XFRM_POLICY_IN => PolicyDir::In,
        XFRM_POLICY_OUT => PolicyDir::Out,
        XFRM_POLICY_FWD => PolicyDir::Fwd,
        _ => return None,
    };
    Some(PolicyRef {
        dir,
        selector: selector(sel)?,
        priority: info.map(|i| i.priority),
        reqids: nlas
            .iter()
            .filter_map(|a| match a {
                XfrmAttrs::Template(t) => Some(t.iter().map(|t| t.reqid)),
                _ => None,
            })
            .flatten()
            .collect(),
        mark: mark(nlas),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_xfrm::{
        AF_INET, Address, Id, UserExpire, UserPolicyId, UserTemplate, monitor::ExpireMessage,
        policy, state,
    };

    /// Serialises `m` as the kernel would send it, and parses it back as the socket does.
    fn wire(m: XfrmMessage, sender: u32) -> Option<XfrmEvent> {
        let mut header = NetlinkHeader::default();
        header.port_number = sender;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(m));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        parse(NetlinkMessage::deserialize(&buf).unwrap())
    }

    fn sel() -> Selector {
        Selector {
            saddr: Address::from_ip(&"192.0.2.1".parse().unwrap()),
            daddr: Address::from_ip(&"192.0.2.2".parse().unwrap()),
            dport: 6081,
            dport_mask: u16::MAX,
            family: AF_INET,
            prefixlen_s: 32,
            prefixlen_d: 32,
            proto: IPPROTO_UDP,
            ..Default::default()
        }
    }

    fn sa_info(reqid: u32) -> UserSaInfo {
        UserSaInfo {
            selector: sel(),
            id: Id {
                daddr: Address::from_ip(&"192.0.2.2".parse().unwrap()),
                spi: 0xc0ffee01,
                proto: IPPROTO_ESP,
            },
            saddr: Address::from_ip(&"192.0.2.1".parse().unwrap()),
            reqid,
            family: AF_INET,
            ..Default::default()
        }
    }

    #[test]
    fn a_deleted_policy_carries_selector_direction_priority_template_and_sender() {
        let info = UserPolicyInfo {
            selector: sel(),
            priority: PRIORITY,
            direction: XFRM_POLICY_OUT,
            ..Default::default()
        };
        let tmpl = UserTemplate {
            reqid: REQID,
            ..Default::default()
        };
        let m = XfrmMessage::DeletePolicy(policy::DelGetMessage {
            user_policy_id: UserPolicyId {
                selector: sel(),
                index: 0,
                direction: XFRM_POLICY_OUT,
            },
            nlas: vec![XfrmAttrs::PolicyInfo(info), XfrmAttrs::Template(vec![tmpl])],
        });
        let ev = wire(m, 4242).unwrap();
        assert_eq!(ev.sender, 4242);
        assert!(ev.tagged_static());
        let Change::PolicyGone(p, Gone::Deleted) = &ev.change else {
            panic!("{ev:?}")
        };
        assert_eq!(
            p.to_string(),
            "out policy 192.0.2.1 -> 192.0.2.2 udp dport 6081"
        );
        assert!(p.selector.hosts);
    }

    #[test]
    fn a_policy_deleted_by_index_is_known_by_the_policy_it_carries() {
        let info = UserPolicyInfo {
            selector: sel(),
            direction: XFRM_POLICY_OUT,
            index: 17,
            ..Default::default()
        };
        // The kernel's notification of a deletion by index: the id has the index only.
        let m = XfrmMessage::DeletePolicy(policy::DelGetMessage {
            user_policy_id: UserPolicyId {
                selector: Selector::default(),
                index: 17,
                direction: XFRM_POLICY_OUT,
            },
            nlas: vec![XfrmAttrs::PolicyInfo(info)],
        });
        let ev = wire(m, 0).unwrap();
        let Change::PolicyGone(p, Gone::Deleted) = &ev.change else {
            panic!("{ev:?}")
        };
        assert_eq!(
            p.to_string(),
            "out policy 192.0.2.1 -> 192.0.2.2 udp dport 6081"
        );
    }

    #[test]
    fn sa_deletes_and_expires_are_read_and_foreign_reqids_are_not_tagged() {
        let m = XfrmMessage::DeleteSa(state::DelGetMessage {
            user_sa_id: Default::default(),
            nlas: vec![XfrmAttrs::SaInfo(sa_info(7))],
        });
        let ev = wire(m, 0).unwrap();
        assert!(!ev.tagged_static());
        let Change::SaGone(sa, Gone::Deleted) = &ev.change else {
            panic!("{ev:?}")
        };
        assert_eq!(sa.to_string(), "SA 192.0.2.1 -> 192.0.2.2 spi 0xc0ffee01");
        assert_eq!(sa.selector.map(|s| s.dport), Some(Some(6081)));
        for (hard, gone) in [(0, false), (1, true)] {
            let m = XfrmMessage::Expire(ExpireMessage {
                expire: UserExpire {
                    state: sa_info(REQID),
                    hard,
                },
            });
            let ev = wire(m, 0).unwrap();
            assert!(ev.tagged_static());
            assert_eq!(
                matches!(ev.change, Change::SaGone(_, Gone::Expired)),
                gone,
                "{ev:?}"
            );
        }
    }

    #[test]
    fn larval_acquire_states_are_no_sas() {
        let mut larval = sa_info(0);
        larval.id.spi = 0;
        let m = XfrmMessage::Expire(ExpireMessage {
            expire: UserExpire {
                state: larval,
                hard: 1,
            },
        });
        assert_eq!(wire(m, 0), None);
    }

    #[test]
    fn added_policies_need_no_reaction_and_flushes_are_events() {
        let m = XfrmMessage::AddPolicy(policy::ModifyMessage::default());
        assert_eq!(wire(m, 0), None);
        let m = XfrmMessage::FlushSa(state::FlushMessage::default());
        assert_eq!(wire(m, 0).unwrap().change, Change::Flushed(Flushed::Sas));
    }
}
