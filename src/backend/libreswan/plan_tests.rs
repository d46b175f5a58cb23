//! The pure reconcile plan: what a pass does for each state pluto and the files are in.

use std::collections::BTreeMap;
use std::time::Duration;

use super::plan::{self, Action, DeleteWhy, Memory, Observed, Pending};
use super::status::PlutoStatus;
use super::tests::*;
use crate::model::{Auth, Desired, Global, Secret, SkbMark, TunnelType};

pub(super) fn observed(loaded: &[&str], active: &[&str]) -> Observed {
    Observed {
        pluto: PlutoStatus {
            loaded: loaded.iter().map(|s| s.to_string()).collect(),
            active: active.iter().map(|s| s.to_string()).collect(),
            ..PlutoStatus::default()
        },
        conf_hash: Some([0; 32]),
        secrets_hash: Some([1; 32]),
        ..Observed::default()
    }
}

const FILES: Option<([u8; 32], [u8; 32])> = Some(([0; 32], [1; 32]));

fn vx(version: u64) -> Desired {
    let mut t = tunnel(
        "vx1",
        TunnelType::Vxlan,
        "192.0.2.2",
        Auth::Psk(Secret::new("x")),
        None,
    );
    t.version = version;
    Desired {
        global: Global::default(),
        tunnels: BTreeMap::from([("vx1".into(), t)]),
    }
}

fn conn(c: &str) -> String {
    c.to_owned()
}

#[test]
fn cold_start_adds_inbound_and_starts_outbound() {
    let a = plan::plan(&vx(1), &observed(&[], &[]), &Memory::default(), None);
    assert_eq!(
        a,
        [
            Action::WriteFiles,
            Action::Add {
                conn: conn("vx1-in-1")
            },
            Action::Start {
                conn: conn("vx1-out-1")
            },
        ]
    );
}

#[test]
fn converged_plans_nothing() {
    let o = observed(&["vx1-in-1", "vx1-out-1"], &["vx1-in-1", "vx1-out-1"]);
    assert!(plan::plan(&vx(1), &o, &Memory::default(), FILES).is_empty());
}

#[test]
fn modify_deletes_the_old_version_we_own_only() {
    let mut m = Memory::default();
    m.owned.extend([conn("vx1-in-1"), conn("vx1-out-1")]);
    let o = observed(&["vx1-in-1", "vx1-out-1", "admin-1"], &["vx1-in-1"]);
    let a = plan::plan(&vx(2), &o, &m, FILES);
    assert_eq!(
        a,
        [
            Action::Delete {
                conn: conn("vx1-in-1"),
                why: DeleteWhy::Outdated
            },
            Action::Delete {
                conn: conn("vx1-out-1"),
                why: DeleteWhy::Outdated
            },
            Action::Add {
                conn: conn("vx1-in-2")
            },
            Action::Start {
                conn: conn("vx1-out-2")
            },
        ]
    );
    assert_eq!(a[0].to_string(), "vx1-in-1 is outdated, removing");
}

/// Found by the fault-injection soak (tests/chaos): a monitor killed after writing the new
/// version's file, before deleting the old version's conns, left them in pluto for good: the
/// restarted monitor knew only the conns named in the file it found.
#[test]
fn an_old_version_a_killed_run_left_is_deleted() {
    let o = observed(&["vx1-in-1", "vx1-out-1", "admin-1", "vx1x-in-1"], &[]);
    let a = plan::plan(&vx(2), &o, &Memory::default(), FILES);
    let deleted: Vec<&Action> = a
        .iter()
        .filter(|a| matches!(a, Action::Delete { .. }))
        .collect();
    assert_eq!(
        deleted,
        [
            &Action::Delete {
                conn: conn("vx1-in-1"),
                why: DeleteWhy::Outdated
            },
            &Action::Delete {
                conn: conn("vx1-out-1"),
                why: DeleteWhy::Outdated
            },
        ]
    );
}

#[test]
fn pending_conns_wait_then_are_brought_up_or_found_defunct() {
    let mut o = observed(&["vx1-in-1", "vx1-out-1"], &[]);
    let young = Duration::from_secs(3);
    o.pending.insert(conn("vx1-in-1"), (Pending::Added, young));
    o.pending
        .insert(conn("vx1-out-1"), (Pending::Started, young));
    assert!(plan::plan(&vx(1), &o, &Memory::default(), FILES).is_empty());

    let old = Duration::from_secs(16);
    o.pending.insert(conn("vx1-in-1"), (Pending::Added, old));
    o.pending.insert(conn("vx1-out-1"), (Pending::Started, old));
    let a = plan::plan(&vx(1), &o, &Memory::default(), FILES);
    assert_eq!(
        a,
        [
            Action::BringUp {
                conn: conn("vx1-in-1"),
                went_down: false
            },
            Action::Delete {
                conn: conn("vx1-out-1"),
                why: DeleteWhy::Defunct
            },
        ]
    );
    assert_eq!(a[0].to_string(), "Bringing up ipsec connection vx1-in-1");
    assert!(a[1].to_string().contains("defunct"));
}

/// Real status of pluto 4.10 and 5.2 with one half-open IKE SA of `tun-out-1` (see
/// status.rs), as initiator (retransmitting IKE_AUTH) or responder (waiting for it).
fn half_open(version: u32, side: &str) -> Observed {
    let text = match (version, side) {
        (4, "initiator") => {
            include_str!("../../../tests/golden/libreswan/status-v4-half-open-initiator.txt")
        }
        (4, _) => include_str!("../../../tests/golden/libreswan/status-v4-half-open-responder.txt"),
        (_, "initiator") => {
            include_str!("../../../tests/golden/libreswan/status-v5-half-open-initiator.txt")
        }
        _ => include_str!("../../../tests/golden/libreswan/status-v5-half-open-responder.txt"),
    };
    Observed {
        pluto: PlutoStatus::parse(text),
        ..observed(&[], &[])
    }
}

fn tun() -> Desired {
    let t = tunnel(
        "tun",
        TunnelType::Geneve,
        "192.0.2.2",
        Auth::Psk(Secret::new("x")),
        None,
    );
    Desired {
        global: Global::default(),
        tunnels: BTreeMap::from([("tun".into(), t)]),
    }
}

/// The actions on `tun-out-1` when it has been pending `how` for `age`.
fn out_actions(o: &mut Observed, how: Pending, age: Duration) -> Vec<Action> {
    o.pending.insert(conn("tun-out-1"), (how, age));
    plan::plan(&tun(), o, &Memory::default(), FILES)
        .into_iter()
        .filter(|a| a.to_string().contains("tun-out-1"))
        .collect()
}

#[test]
fn a_half_open_ike_sa_is_left_to_pluto_until_the_negotiation_limit() {
    for (version, state) in [(4, "STATE_V2_PARENT_I2"), (5, "IKE_AUTH_I")] {
        let mut o = half_open(version, "initiator");
        let waiting = [Action::Negotiating {
            conn: conn("tun-out-1"),
            state: state.into(),
        }];
        for age in [16, 45, 119] {
            let a = out_actions(&mut o, Pending::Started, Duration::from_secs(age));
            assert_eq!(a, waiting, "v{version} at {age} s");
        }
        assert!(!waiting[0].to_string().contains("defunct"));
        // Bounded: a negotiation that never ends is deleted and reloaded like any other.
        let a = out_actions(&mut o, Pending::Started, plan::NEGOTIATION_LIMIT);
        assert_eq!(
            a,
            [Action::Delete {
                conn: conn("tun-out-1"),
                why: DeleteWhy::Defunct
            }],
            "v{version}"
        );
        // Nothing negotiating (the attempt failed and pluto gave up): defunct at 15 s.
        o.pluto.negotiating.clear();
        let a = out_actions(&mut o, Pending::Started, Duration::from_secs(16));
        assert!(
            matches!(a[..], [Action::Delete { .. }]),
            "v{version}: {a:?}"
        );
    }
}

#[test]
fn a_responder_being_negotiated_by_the_peer_is_not_initiated_too() {
    for (version, state) in [(4, "STATE_V2_PARENT_R1"), (5, "IKE_SA_INIT_R")] {
        let mut o = half_open(version, "responder");
        let a = out_actions(&mut o, Pending::Added, Duration::from_secs(16));
        assert_eq!(
            a,
            [Action::Negotiating {
                conn: conn("tun-out-1"),
                state: state.into(),
            }],
            "v{version}"
        );
        let a = out_actions(&mut o, Pending::Added, plan::NEGOTIATION_LIMIT);
        assert!(
            matches!(a[..], [Action::BringUp { .. }]),
            "v{version}: {a:?}"
        );
    }
}

#[test]
fn an_inbound_conn_is_not_initiated_while_the_peers_ike_sa_is_up() {
    // The IKE SA with the peer is established (tun-out-1 created it) and tun-in-1 has no
    // state yet: the peer is about to create its Child SA over that IKE SA.
    let mut o = observed(&["tun-in-1", "tun-out-1"], &["tun-out-1"]);
    o.pluto.ike_up.extend([conn("tun-in-1"), conn("tun-out-1")]);
    let in_actions = |o: &mut Observed, age: u64| -> Vec<Action> {
        o.pending
            .insert(conn("tun-in-1"), (Pending::Added, Duration::from_secs(age)));
        plan::plan(&tun(), o, &Memory::default(), FILES)
            .into_iter()
            .filter(|a| a.to_string().contains("tun-in-1"))
            .collect()
    };
    for age in [16, 119] {
        assert_eq!(
            in_actions(&mut o, age),
            [Action::Negotiating {
                conn: conn("tun-in-1"),
                state: plan::PEER_CHILD_AWAITED.into(),
            }],
            "at {age} s"
        );
    }
    // Bounded: a peer that never sends it gets ours.
    let a = in_actions(&mut o, plan::NEGOTIATION_LIMIT.as_secs());
    assert!(matches!(a[..], [Action::BringUp { .. }]), "{a:?}");
    // Without an IKE SA with the peer, the Python monitor's rule: bring it up at 15 s.
    o.pluto.ike_up.clear();
    let a = in_actions(&mut o, 16);
    assert!(matches!(a[..], [Action::BringUp { .. }]), "{a:?}");
}

#[test]
fn a_started_conn_over_an_established_ike_sa_is_initiated_not_deleted() {
    // Seen in the QEMU tier: both ends initiated at once, the peer's IKE SA superseded ours
    // and pluto dropped the Child SA queued for tun-out-1. tun-in-1 is established over the
    // IKE SA pluto lists under tun-out-1, so deleting tun-out-1 as defunct would delete that
    // IKE SA and tun-in-1's Child SA with it.
    let mut o = observed(&["tun-in-1", "tun-out-1"], &["tun-in-1"]);
    o.pluto.ike_up.extend([conn("tun-in-1"), conn("tun-out-1")]);
    let a = out_actions(&mut o, Pending::Started, Duration::from_secs(21));
    assert_eq!(
        a,
        [Action::BringUp {
            conn: conn("tun-out-1"),
            went_down: false,
        }]
    );
    assert_eq!(a[0].to_string(), "Bringing up ipsec connection tun-out-1");
    // With nothing established over the IKE SA, or no IKE SA, the Python monitor's rule
    // stands: deleted, and loaded again by the next pass.
    let defunct = |a: &[Action]| a.iter().any(|a| a.to_string().contains("defunct"));
    o.pluto.active.clear();
    let a = out_actions(&mut o, Pending::Started, Duration::from_secs(21));
    assert!(defunct(&a), "{a:?}");
    o.pluto.active.insert(conn("tun-in-1"));
    o.pluto.ike_up.clear();
    let a = out_actions(&mut o, Pending::Started, Duration::from_secs(21));
    assert!(defunct(&a), "{a:?}");
}

#[test]
fn an_ike_sa_with_a_child_sa_still_retried_says_both() {
    // pluto 5 on a kernel without ESP: IKE SA up, the refused Child SA retried (NEW_CHILD_I1).
    let mut o = observed(&["tun-in-1", "tun-out-1"], &[]);
    o.pluto.ike_up.extend([conn("tun-in-1"), conn("tun-out-1")]);
    o.pluto
        .negotiating
        .insert(conn("tun-out-1"), "NEW_CHILD_I1".into());
    let live = super::live::status(&tun(), &o);
    assert_eq!(live["tun"].state, crate::backend::LiveState::Negotiating);
    assert_eq!(
        live["tun"].error(),
        Some(
            "IKE SA established but no IPsec SA for tun-in-1, tun-out-1; \
             negotiating: tun-out-1 (NEW_CHILD_I1)"
        )
    );
}

#[test]
fn a_tunnel_with_a_half_open_ike_sa_is_negotiating_with_the_state_as_reason() {
    for (version, state) in [(4, "STATE_V2_PARENT_I2"), (5, "IKE_AUTH_I")] {
        let mut o = half_open(version, "initiator");
        o.pluto.loaded.insert(conn("tun-in-1"));
        let live = super::live::status(&tun(), &o);
        assert_eq!(live["tun"].state, crate::backend::LiveState::Negotiating);
        assert_eq!(
            live["tun"].error(),
            Some(format!("negotiating: tun-out-1 ({state})").as_str())
        );
    }
}

#[test]
fn manual_deletion_needs_reconcile_and_is_restored() {
    let mut m = Memory::default();
    m.owned.extend([conn("vx1-in-1"), conn("vx1-out-1")]);
    let o = observed(&["vx1-in-1"], &["vx1-in-1"]);
    let a = plan::plan(&vx(1), &o, &m, FILES);
    assert_eq!(a.len(), 2);
    assert!(a[0].to_string().ends_with("need to reconcile"), "{}", a[0]);
    assert!(
        a[0].to_string()
            .starts_with("Active connections for port vx1 ")
    );
    assert_eq!(
        a[1],
        Action::Start {
            conn: conn("vx1-out-1")
        }
    );
}

#[test]
fn a_loaded_conn_that_went_down_is_brought_up() {
    let o = observed(&["vx1-in-1", "vx1-out-1"], &["vx1-in-1"]);
    let a = plan::plan(&vx(1), &o, &Memory::default(), FILES);
    assert_eq!(
        a[1].to_string(),
        "Connection vx1-out-1 went down, bringing it up"
    );
}

#[test]
fn shunts_follow_the_mark() {
    let mut d = vx(1);
    d.global.skb_mark = Some(SkbMark { value: 0, mask: 1 });
    let o = observed(&["vx1-in-1", "vx1-out-1"], &["vx1-in-1", "vx1-out-1"]);
    let a = plan::plan(&d, &o, &Memory::default(), FILES);
    assert_eq!(a.len(), 3);
    assert!(a.iter().all(|a| matches!(a, Action::LoadShunt { .. })));
}

#[test]
fn a_pass_over_one_tunnel_plans_its_conns_only() {
    // vx1 is new; gre1 and gnv1 are not in this pass's part of pluto's status (and the skb
    // mark's shunts are not either): nothing is planned for them.
    let mut d = psk_desired();
    d.global.skb_mark = Some(SkbMark { value: 0, mask: 1 });
    let scope = crate::backend::Scope::Tunnels(["vx1".to_string()].into());
    let memory = Memory {
        owned: ["vx1-in-9".to_string(), "gre1-1".to_string()].into(),
        shunt_mark: d.global.skb_mark,
        ..Memory::default()
    };
    let o = observed(&["vx1-in-9"], &[]);
    assert_eq!(
        plan::plan_in(&d, &o, &memory, FILES, &scope),
        [
            Action::Delete {
                conn: conn("vx1-in-9"),
                why: DeleteWhy::Outdated
            },
            Action::Add {
                conn: conn("vx1-in-1")
            },
            Action::Start {
                conn: conn("vx1-out-1")
            },
        ]
    );
    // The full pass over the same view loads everything that is missing.
    let full = plan::plan(&d, &o, &memory, FILES);
    assert!(full.contains(&Action::Start {
        conn: conn("gre1-1")
    }));
    assert!(full.iter().any(|a| matches!(a, Action::LoadShunt { .. })));
}

#[test]
fn a_gre_tunnel_is_started_by_the_lower_address_only() {
    let gre = |remote: &str| {
        let t = tunnel(
            "gre1",
            TunnelType::Gre,
            remote,
            Auth::Psk(Secret::new("x")),
            None,
        );
        Desired {
            global: Global::default(),
            tunnels: BTreeMap::from([("gre1".into(), t)]),
        }
    };
    // The end with the lower address starts it.
    let a = plan::plan(
        &gre("192.0.2.2"),
        &observed(&[], &[]),
        &Memory::default(),
        FILES,
    );
    assert_eq!(
        a,
        [Action::Start {
            conn: conn("gre1-1")
        }]
    );
    // The other end only loads it: both starting it makes pluto 4.10 drop, on each end, the
    // IKE SA it initiated as superseded, leaving two half Child SAs (module doc).
    let mut o = observed(&[], &[]);
    o.gre_answers.insert("gre1".into());
    let a = plan::plan(&gre("192.0.2.2"), &o, &Memory::default(), FILES);
    assert_eq!(
        a,
        [Action::Add {
            conn: conn("gre1-1")
        }]
    );
    // Loaded and waiting: left alone while the peer's negotiation is in progress, brought up
    // by this end after the grace when the peer started nothing.
    let mut o = observed(&["gre1-1"], &[]);
    o.gre_answers.insert("gre1".into());
    o.pending
        .insert(conn("gre1-1"), (Pending::Added, Duration::from_secs(16)));
    o.pluto
        .negotiating
        .insert(conn("gre1-1"), "STATE_V2_PARENT_R1".into());
    let a = plan::plan(&gre("192.0.2.2"), &o, &Memory::default(), FILES);
    assert_eq!(
        a,
        [Action::Negotiating {
            conn: conn("gre1-1"),
            state: "STATE_V2_PARENT_R1".into()
        }]
    );
    o.pluto.negotiating.clear();
    let a = plan::plan(&gre("192.0.2.2"), &o, &Memory::default(), FILES);
    assert_eq!(
        a,
        [Action::BringUp {
            conn: conn("gre1-1"),
            went_down: false
        }]
    );
    // Went down (loaded, not tracked): the end that starts brings it up at once, the other
    // waits one grace for it.
    let mut o = observed(&["gre1-1"], &[]);
    let reconcile = Action::Reconcile {
        port: "gre1".into(),
        active: vec![],
        desired: vec![conn("gre1-1")],
    };
    let a = plan::plan(&gre("192.0.2.2"), &o, &Memory::default(), FILES);
    assert_eq!(
        a,
        [
            reconcile.clone(),
            Action::BringUp {
                conn: conn("gre1-1"),
                went_down: true
            }
        ]
    );
    o.gre_answers.insert("gre1".into());
    let a = plan::plan(&gre("192.0.2.2"), &o, &Memory::default(), FILES);
    assert_eq!(
        a,
        [
            reconcile,
            Action::Await {
                conn: conn("gre1-1")
            }
        ]
    );
}

#[test]
fn a_restarted_monitor_adopts_what_pluto_is_negotiating() {
    // A monitor killed 5 s after starting vx1-out-1 and adding vx1-in-1: the new one tracks
    // nothing, pluto is negotiating the outbound Child SA over the IKE SA with the peer, and
    // the peer is about to create the inbound one over it. Initiating either would start a
    // second exchange (the inbound one crossing the peer's); both get a grace from now.
    let mut o = observed(&["vx1-in-1", "vx1-out-1"], &[]);
    o.pluto.ike_up = ["vx1-in-1", "vx1-out-1"].map(String::from).into();
    o.pluto.negotiating = BTreeMap::from([(conn("vx1-out-1"), conn("STATE_V2_NEW_CHILD_I1"))]);
    let memory = Memory {
        owned: ["vx1-in-1", "vx1-out-1"].map(String::from).into(),
        ..Memory::default()
    };
    let a = plan::plan(&vx(1), &o, &memory, FILES);
    assert_eq!(
        a[1..],
        [
            Action::Adopt {
                conn: conn("vx1-in-1"),
                pending: Pending::Added,
                state: plan::PEER_CHILD_AWAITED.into()
            },
            Action::Adopt {
                conn: conn("vx1-out-1"),
                pending: Pending::Started,
                state: conn("STATE_V2_NEW_CHILD_I1")
            },
        ]
    );
    assert!(matches!(a[0], Action::Reconcile { .. }), "{a:?}");
    assert_eq!(
        a[2].to_string(),
        "Connection vx1-out-1 is already negotiating (STATE_V2_NEW_CHILD_I1), not starting it again"
    );
    // Once tracked, the usual rules: within the grace nothing, past it the peer's Child SA
    // is still awaited and the outbound one still negotiating.
    for (age, want) in [(5, 0), (20, 2)] {
        o.pending = BTreeMap::from([
            (conn("vx1-in-1"), (Pending::Added, Duration::from_secs(age))),
            (
                conn("vx1-out-1"),
                (Pending::Started, Duration::from_secs(age)),
            ),
        ]);
        let a = plan::plan(&vx(1), &o, &memory, FILES);
        assert_eq!(a.len(), want, "{a:?}");
        assert!(
            a.iter().all(|a| matches!(a, Action::Negotiating { .. })),
            "{a:?}"
        );
    }
    // Nothing negotiating: down, brought up at once as before.
    o.pending.clear();
    o.pluto.negotiating.clear();
    o.pluto.ike_up.clear();
    let a = plan::plan(&vx(1), &o, &memory, FILES);
    assert!(
        a.iter()
            .filter(|a| !matches!(a, Action::Reconcile { .. }))
            .all(|a| matches!(
                a,
                Action::BringUp {
                    went_down: true,
                    ..
                }
            )),
        "{a:?}"
    );
}
