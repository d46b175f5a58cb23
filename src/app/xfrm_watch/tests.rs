use std::sync::Arc;

use super::*;
use crate::backend::xfrm::events::{Gone, PolicyDir, PolicyRef};
use crate::model::{Auth, DesiredTunnel, Secret, TunnelType};

const LOCAL: &str = "192.0.2.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `gnv` (geneve to .2, port 6081) and `gre` (gre to .2): two tunnels to one peer.
fn desired() -> Desired {
    let mut d = Desired::default();
    for (name, kind) in [("gnv", TunnelType::Geneve), ("gre", TunnelType::Gre)] {
        let mut conf = TunnelConf::new(name, kind, ip("192.0.2.2"), Auth::Psk(Secret::new("x")));
        conf.local_ip = Some(ip(LOCAL));
        let t = DesiredTunnel {
            version: 1,
            conf: Arc::new(conf),
        };
        d.tunnels.insert(name.to_owned(), t);
    }
    d
}

fn sel(src: &str, dst: &str, proto: u8, dport: Option<u16>) -> EventSelector {
    EventSelector {
        src: ip(src),
        dst: ip(dst),
        hosts: true,
        proto,
        sport: None,
        dport,
    }
}

fn policy_gone(s: EventSelector) -> XfrmEvent {
    XfrmEvent {
        sender: 0,
        change: Change::PolicyGone(
            PolicyRef {
                dir: PolicyDir::Out,
                selector: s,
                priority: None,
                reqids: Vec::new(),
                mark: None,
            },
            Gone::Deleted,
        ),
    }
}

fn sa(spi: u32, outbound: bool) -> SaRef {
    let (src, dst) = if outbound {
        (LOCAL, "192.0.2.2")
    } else {
        ("192.0.2.2", LOCAL)
    };
    SaRef {
        id: SaId {
            src: ip(src),
            dst: ip(dst),
            spi,
        },
        selector: Some(sel(src, dst, IPPROTO_GRE, None)),
        reqid: 1,
        mark: None,
    }
}

fn ev(change: Change) -> XfrmEvent {
    XfrmEvent { sender: 0, change }
}

fn names(r: &Reaction) -> Vec<&str> {
    r.tunnels.iter().map(String::as_str).collect()
}

#[test]
fn a_deleted_policy_names_only_the_tunnel_of_its_protocol_and_port_in_either_direction() {
    let d = desired();
    let mut w = XfrmWatch::new(true);
    let now = Instant::now();
    let daemon = |_: &XfrmEvent| Origin::Daemon;
    let out = sel(LOCAL, "192.0.2.2", IPPROTO_UDP, Some(6081));
    let r = w.on_events(&[policy_gone(out)], daemon, &d, 1, now);
    assert_eq!(names(&r), ["gnv"]);
    let back = sel("192.0.2.2", LOCAL, IPPROTO_GRE, None);
    let r = w.on_events(&[policy_gone(back)], daemon, &d, 1, now);
    assert_eq!(names(&r), ["gre"]);
    // Another port, another peer, a subnet selector: not ours.
    for s in [
        sel(LOCAL, "192.0.2.2", IPPROTO_UDP, Some(4789)),
        sel(LOCAL, "192.0.2.3", IPPROTO_GRE, None),
        EventSelector {
            hosts: false,
            ..sel(LOCAL, "192.0.2.2", IPPROTO_GRE, None)
        },
    ] {
        let r = w.on_events(&[policy_gone(s)], daemon, &d, 1, now);
        assert_eq!(r, Reaction::default(), "{s}");
    }
    assert_eq!(
        w.counts().vanished.get(&("gnv".into(), Vanished::Policy)),
        Some(&1)
    );
    // Foreign objects and our own writes cause nothing.
    for origin in [Origin::Foreign, Origin::Ourselves] {
        let r = w.on_events(&[policy_gone(out)], |_| origin, &d, 1, now);
        assert_eq!(r, Reaction::default());
    }
}

#[test]
fn a_replaced_sa_is_a_rekey_and_a_lone_one_a_loss_unless_we_just_changed_the_tunnel() {
    let d = desired();
    let mut w = XfrmWatch::new(true);
    let now = Instant::now();
    let daemon = |_: &XfrmEvent| Origin::Daemon;
    let evs = [
        ev(Change::SaAdded(sa(1, true))),
        ev(Change::SaAdded(sa(2, false))),
        ev(Change::SaAdded(sa(3, true))),
        ev(Change::SaGone(sa(1, true), Gone::Deleted)),
    ];
    let r = w.on_events(&evs, daemon, &d, 1, now);
    assert_eq!(r, Reaction::default(), "a rekey is no loss");
    assert_eq!(w.counts().rekeys.get("gre"), Some(&1));
    let lost = [ev(Change::SaGone(sa(2, false), Gone::Expired))];
    let r = w.on_events(&lost, daemon, &d, 1, now);
    assert_eq!(names(&r), ["gre"]);
    assert_eq!(
        w.counts().vanished.get(&("gre".into(), Vanished::Expired)),
        Some(&1)
    );
    // Right after a pass of ours changed the tunnel, its daemon's removals are ours.
    w.applied(&Scope::Tunnels(["gre".to_owned()].into()), now);
    let gone = [ev(Change::SaGone(sa(3, true), Gone::Deleted))];
    assert_eq!(w.on_events(&gone, daemon, &d, 1, now), Reaction::default());
    let later = now + QUIET;
    let r = w.on_events(
        &[policy_gone(sel(LOCAL, "192.0.2.2", IPPROTO_GRE, None))],
        daemon,
        &d,
        1,
        later,
    );
    assert_eq!(names(&r), ["gre"]);
    // ...but never the removals someone else made.
    let r = w.on_events(&gone, |_| Origin::Others, &d, 1, now);
    assert_eq!(names(&r), ["gre"]);
}

#[test]
fn flushes_and_overruns_check_everything_and_removed_tunnels_are_forgotten() {
    let mut d = desired();
    let mut w = XfrmWatch::new(true);
    let now = Instant::now();
    // Every tunnel by name: a pass over named tunnels reads their objects back.
    for change in [Change::Flushed(Flushed::Policies), Change::Overrun] {
        let r = w.on_events(&[ev(change)], |_| Origin::Foreign, &d, 1, now);
        assert_eq!(names(&r), ["gnv", "gre"]);
    }
    let out = policy_gone(sel(LOCAL, "192.0.2.2", IPPROTO_GRE, None));
    w.on_events(std::slice::from_ref(&out), |_| Origin::Others, &d, 1, now);
    assert!(w.show("gre", None).is_some());
    d.tunnels.remove("gre");
    assert_eq!(
        w.on_events(&[out], |_| Origin::Others, &d, 2, now),
        Reaction::default()
    );
    assert!(w.counts().vanished.is_empty() && w.show("gre", None).is_none());
}

#[test]
fn many_tunnels_losing_objects_at_once_make_one_pass_over_everything() {
    let mut d = Desired::default();
    let mut events = Vec::new();
    for i in 0..=MANY {
        let remote = format!("198.51.100.{}", i + 1);
        let name = format!("t{i}");
        let conf = TunnelConf::new(
            &name,
            TunnelType::Gre,
            ip(&remote),
            Auth::Psk(Secret::new("x")),
        );
        let t = DesiredTunnel {
            version: 1,
            conf: Arc::new(conf),
        };
        d.tunnels.insert(name, t);
        events.push(policy_gone(sel(LOCAL, &remote, IPPROTO_GRE, None)));
    }
    let mut w = XfrmWatch::new(true);
    let r = w.on_events(&events, |_| Origin::Daemon, &d, 1, Instant::now());
    assert_eq!(r.tunnels.len(), MANY + 1);
    assert_eq!(w.counts().vanished.len(), MANY + 1);
}

#[test]
fn an_sa_of_the_other_child_of_a_udp_tunnel_is_no_replacement() {
    // geneve over IKE: the -in and -out connections each have a Child SA, one selecting the
    // local port, the other the remote one.
    let d = desired();
    let mut w = XfrmWatch::new(true);
    let now = Instant::now();
    let child = |spi, dport, sport| {
        let mut s = sa(spi, true);
        s.selector = Some(EventSelector {
            sport,
            ..sel(LOCAL, "192.0.2.2", IPPROTO_UDP, dport)
        });
        s
    };
    let evs = [
        ev(Change::SaAdded(child(1, Some(6081), None))),
        ev(Change::SaAdded(child(2, None, Some(6081)))),
        ev(Change::SaGone(child(1, Some(6081), None), Gone::Deleted)),
    ];
    let r = w.on_events(&evs, |_| Origin::Daemon, &d, 1, now);
    assert_eq!(names(&r), ["gnv"]);
    assert_eq!(w.counts().rekeys.get("gnv"), None);
}
