use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::backend::xfrm::generation::GenerationStore;
use crate::backend::xfrm::types::{Flow, Generations, Proto, SaStats};
use crate::backend::xfrm::want::SaWant;
use crate::backend::xfrm::want::resolve;
use crate::model::{
    Auth, Desired, DesiredTunnel, Family, Secret, StaticKeying, TunnelConf, TunnelType,
};

const PEER_GEN: [u8; 16] = [9; 16];

pub(crate) fn conf(name: &str, remote: &str, psk: &str, next: Option<&str>) -> TunnelConf {
    TunnelConf {
        name: name.into(),
        kind: TunnelType::Geneve,
        local_ip: Some("192.0.2.1".parse().unwrap()),
        remote_ip: remote.parse().unwrap(),
        family: Family::V4,
        dst_port: None,
        auth: Auth::Psk(Secret::new(psk)),
        pki: None,
        custom: BTreeMap::new(),
        static_keying: StaticKeying {
            psk_next: next.map(Secret::new),
            peer_generation: Some(PEER_GEN),
        },
    }
}

fn desired(confs: Vec<TunnelConf>) -> Desired {
    Desired {
        tunnels: confs
            .into_iter()
            .map(|c| {
                let t = DesiredTunnel {
                    version: 1,
                    conf: Arc::new(c),
                };
                (t.conf.name.clone(), t)
            })
            .collect(),
        ..Default::default()
    }
}

fn empty() -> Observed {
    Observed {
        generations: Generations {
            node: [1; 16],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A kernel that does what the actions say (grace periods are 10 s).
fn simulate(obs: &mut Observed, actions: &[Action]) {
    for a in actions {
        match a {
            Action::RenewGeneration { flow, .. } => {
                let mut g = *obs.generations.of(flow);
                g[0] = g[0].wrapping_add(1);
                obs.generations.tunnels.insert(*flow, g);
            }
            Action::AddSa { sa, .. } => {
                obs.sas.insert(sa.id, SaStats::default());
                obs.used.insert(sa.id);
            }
            Action::SetPolicy { id, spi, .. } => {
                obs.policies.insert(*id, *spi);
            }
            Action::Guard { add, del, .. } => {
                let g = obs.guards.get_or_insert_with(Default::default);
                g.extend(add.iter().copied());
                del.iter().for_each(|d| {
                    g.remove(d);
                });
            }
            Action::DelPolicy(id) => {
                obs.policies.remove(id);
            }
            Action::Retire(id) => {
                obs.retiring
                    .insert(*id, obs.now.unwrap() + Duration::from_secs(10));
            }
            Action::DelSa(id) => {
                obs.sas.remove(id);
                obs.retiring.remove(id);
            }
            Action::Keep(id) => {
                obs.retiring.remove(id);
            }
        }
    }
}

fn converge(d: &Desired, obs: &mut Observed) -> Vec<Action> {
    obs.now.get_or_insert_with(Instant::now);
    let actions = plan(&resolve(d, obs), obs);
    simulate(obs, &actions);
    actions
}

fn kinds(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::RenewGeneration { .. } => "renew".into(),
            Action::AddSa { dir, .. } => format!("add-sa-{dir}"),
            Action::SetPolicy { id, .. } => format!("policy-{}", id.dir),
            Action::Guard { create, add, del } => {
                format!("guard{create}+{}-{}", add.len(), del.len())
            }
            Action::DelPolicy(id) => format!("del-policy-{}", id.dir),
            Action::Retire(_) => "retire".into(),
            Action::Keep(_) => "keep".into(),
            Action::DelSa(_) => "del-sa".into(),
        })
        .collect()
}

#[test]
fn add_installs_inbound_first_then_policies_then_guard_and_then_converges() {
    let d = desired(vec![conf("t1", "192.0.2.2", "a", None)]);
    let mut obs = empty();
    let first = converge(&d, &mut obs);
    assert_eq!(
        kinds(&first),
        [
            "add-sa-in",
            "add-sa-out",
            "policy-out",
            "policy-in",
            "guardtrue+1-0"
        ]
    );
    let Action::Guard { add, .. } = &first[4] else {
        panic!()
    };
    assert_eq!(add[0].proto, Proto::Udp(6081));
    assert!(
        converge(&d, &mut obs).is_empty(),
        "a converged kernel plans nothing"
    );
}

#[test]
fn restart_adopts_kernel_state_and_leaves_foreign_state_alone() {
    let d = desired(vec![conf("t1", "192.0.2.2", "a", None)]);
    let mut obs = empty();
    converge(&d, &mut obs);
    // A new monitor: no memory of grace periods, same generation file, plus foreign state.
    let foreign = PolicyId {
        dir: Dir::Out,
        flow: Flow {
            src: "198.51.100.1".parse().unwrap(),
            dst: "198.51.100.2".parse().unwrap(),
            proto: Proto::Gre,
        },
    };
    obs.foreign_policies.insert(foreign);
    obs.foreign_sas
        .insert(("198.51.100.2".parse().unwrap(), 0x1234));
    obs.retiring.clear();
    assert!(converge(&d, &mut obs).is_empty());
}

#[test]
fn changing_the_remote_replaces_policies_and_retires_old_sas() {
    let mut obs = empty();
    converge(&desired(vec![conf("t1", "192.0.2.2", "a", None)]), &mut obs);
    let d2 = desired(vec![conf("t1", "192.0.2.3", "a", None)]);
    let k = kinds(&converge(&d2, &mut obs));
    assert_eq!(
        k,
        [
            "add-sa-in",
            "add-sa-out",
            "policy-out",
            "policy-in",
            "guardfalse+1-1",
            "del-policy-in",
            "del-policy-out",
            "retire",
            "retire"
        ]
    );
    assert_eq!(kinds(&converge(&d2, &mut obs)), Vec::<String>::new());
    obs.now = obs.now.map(|n| n + Duration::from_secs(11));
    assert_eq!(kinds(&converge(&d2, &mut obs)), ["del-sa", "del-sa"]);
    assert_eq!(obs.sas.len(), 2);
}

#[test]
fn rotation_phase_one_adds_only_the_next_inbound_sa() {
    let mut obs = empty();
    converge(&desired(vec![conf("t1", "192.0.2.2", "a", None)]), &mut obs);
    let out_before = obs.policies.clone();
    let d = desired(vec![conf("t1", "192.0.2.2", "a", Some("b"))]);
    assert_eq!(kinds(&converge(&d, &mut obs)), ["add-sa-in"]);
    assert_eq!(
        obs.policies, out_before,
        "still sending with the current key"
    );
    assert!(converge(&d, &mut obs).is_empty());
}

#[test]
fn rotation_phase_two_switches_outbound_atomically_and_keeps_old_inbound_for_grace() {
    let mut obs = empty();
    converge(
        &desired(vec![conf("t1", "192.0.2.2", "a", Some("b"))]),
        &mut obs,
    );
    let d = desired(vec![conf("t1", "192.0.2.2", "b", None)]);
    let actions = converge(&d, &mut obs);
    assert_eq!(
        kinds(&actions),
        ["add-sa-out", "policy-out", "retire", "retire"],
        "no inbound add: the next key's inbound SA is already there"
    );
    assert_eq!(obs.sas.len(), 4, "old SAs linger during the grace period");
    obs.now = obs.now.map(|n| n + Duration::from_secs(11));
    assert_eq!(kinds(&converge(&d, &mut obs)), ["del-sa", "del-sa"]);
    assert!(converge(&d, &mut obs).is_empty());
}

#[test]
fn removing_a_tunnel_removes_policies_and_guard_then_sas() {
    let mut obs = empty();
    converge(&desired(vec![conf("t1", "192.0.2.2", "a", None)]), &mut obs);
    let none = desired(vec![]);
    assert_eq!(
        kinds(&converge(&none, &mut obs)),
        [
            "guardfalse+0-1",
            "del-policy-in",
            "del-policy-out",
            "retire",
            "retire"
        ]
    );
    obs.now = obs.now.map(|n| n + Duration::from_secs(11));
    assert_eq!(kinds(&converge(&none, &mut obs)), ["del-sa", "del-sa"]);
    assert!(obs.sas.is_empty() && obs.policies.is_empty());
}

#[test]
fn a_lost_outbound_sa_forces_a_new_generation_instead_of_reusing_its_key() {
    let d = desired(vec![conf("t1", "192.0.2.2", "a", None)]);
    let mut obs = empty();
    converge(&d, &mut obs);
    obs.sas.clear(); // `ip xfrm state flush` behind our back
    assert_eq!(kinds(&converge(&d, &mut obs)), ["renew"]);
    let again = converge(&d, &mut obs);
    assert_eq!(kinds(&again), ["add-sa-in", "add-sa-out", "policy-out"]);
}

#[test]
fn a_lost_inbound_sa_forces_a_new_generation_instead_of_a_fresh_replay_window() {
    let d = desired(vec![conf("t1", "192.0.2.2", "a", None)]);
    let mut obs = empty();
    converge(&d, &mut obs);
    let before = resolve(&d, &obs)["t1"].clone().unwrap();
    let in_id = before.in_sa.as_ref().unwrap().id;
    obs.sas.remove(&in_id); // `ip xfrm state delete` of the inbound SA only
    assert_eq!(kinds(&converge(&d, &mut obs)), ["renew"]);
    let after = resolve(&d, &obs)["t1"].clone().unwrap();
    assert_ne!(
        after.in_sa.as_ref().unwrap().key,
        before.in_sa.as_ref().unwrap().key
    );
    assert_ne!(
        after.out_sa.as_ref().unwrap().key,
        before.out_sa.as_ref().unwrap().key
    );
    assert_eq!(
        kinds(&converge(&d, &mut obs)),
        ["add-sa-in", "add-sa-out", "policy-out", "retire"]
    );
}

/// Node A's view and node B's view of the same tunnel agree on every key, and a new
/// generation on either end (its reboot) changes the keys of both directions.
#[test]
fn both_ends_derive_the_same_keys_and_a_reboot_on_either_end_changes_both_directions() {
    const A_GEN: [u8; 16] = [1; 16];
    let view = |local: &str, remote: &str, own: [u8; 16], peer: [u8; 16]| {
        let mut c = conf("t", remote, "a", None);
        c.local_ip = Some(local.parse().unwrap());
        c.static_keying.peer_generation = Some(peer);
        let obs = Observed {
            generations: Generations {
                node: own,
                ..Default::default()
            },
            ..Default::default()
        };
        resolve(&desired(vec![c]), &obs)["t"].clone().unwrap()
    };
    let key = |s: &Option<SaWant>| s.clone().map(|s| (s.id, s.key)).unwrap();
    let a = view("192.0.2.1", "192.0.2.2", A_GEN, PEER_GEN);
    let b = view("192.0.2.2", "192.0.2.1", PEER_GEN, A_GEN);
    assert_eq!(key(&a.out_sa), key(&b.in_sa));
    assert_eq!(key(&a.in_sa), key(&b.out_sa));
    for (own, peer) in [([3; 16], PEER_GEN), (A_GEN, [3; 16])] {
        let again = view("192.0.2.1", "192.0.2.2", own, peer);
        assert_ne!(key(&again.out_sa).1, key(&a.out_sa).1);
        assert_ne!(key(&again.in_sa).1, key(&a.in_sa).1);
    }
}

#[test]
fn without_the_peer_generation_only_the_policies_are_installed_and_outbound_drops() {
    let mut c = conf("t1", "192.0.2.2", "a", None);
    c.static_keying.peer_generation = None;
    let mut obs = empty();
    let actions = converge(&desired(vec![c]), &mut obs);
    assert_eq!(
        kinds(&actions),
        ["policy-out", "policy-in", "guardtrue+1-0"]
    );
    assert!(matches!(actions[0], Action::SetPolicy { spi: 0, .. }));
}

#[test]
fn conflicts_fail_the_tunnel_and_touch_nothing_foreign() {
    let d = desired(vec![
        conf("t1", "192.0.2.2", "a", None),
        conf("t2", "192.0.2.2", "b", None),
        conf("t3", "192.0.2.4", "c", None),
    ]);
    let mut obs = empty();
    let wants = resolve(&d, &obs);
    assert!(wants["t2"].as_ref().unwrap_err().contains("another tunnel"));
    let t3 = wants["t3"].as_ref().unwrap();
    let t3_out = t3.out_sa.as_ref().unwrap().id;
    obs.foreign_sas.insert((t3_out.dst, t3_out.spi));
    let p = PolicyId {
        dir: Dir::Out,
        flow: wants["t1"].as_ref().unwrap().out_flow,
    };
    obs.foreign_policies.insert(p);
    let wants = resolve(&d, &obs);
    assert!(wants["t1"].as_ref().unwrap_err().contains("not created by"));
    assert!(wants["t3"].as_ref().unwrap_err().contains("SPI collision"));
    assert!(wants["t2"].as_ref().unwrap_err().contains("not created by"));
    let actions = plan(&wants, &obs);
    assert!(
        actions
            .iter()
            .all(|a| !matches!(a, Action::DelPolicy(_) | Action::DelSa(_)))
    );
    assert!(!format!("{actions:?}").contains("\"a\""));
}

#[test]
fn a_peer_sending_with_an_unknown_spi_puts_the_tunnel_down_with_the_reason() {
    use crate::backend::LiveState;
    use crate::backend::xfrm::status::status;
    let d = desired(vec![conf("t1", "192.0.2.2", "a", None)]);
    let mut obs = empty();
    converge(&d, &mut obs);
    let in_sa = resolve(&d, &obs)["t1"].as_ref().unwrap().in_sa.clone();
    let seen = |spi| SaId {
        src: "192.0.2.2".parse().unwrap(),
        dst: "192.0.2.1".parse().unwrap(),
        spi,
    };
    // The peer's current key, and an unknown SPI from some other host: still up.
    obs.esp_seen.insert(in_sa.unwrap().id);
    obs.esp_seen.insert(SaId {
        src: "192.0.2.9".parse().unwrap(),
        ..seen(0x999)
    });
    assert_eq!(status(&resolve(&d, &obs), &obs)["t1"].state, LiveState::Up);
    // The peer rebooted and sends under a generation we have not been told.
    obs.esp_seen.insert(seen(0x1234));
    let st = &status(&resolve(&d, &obs), &obs)["t1"];
    assert_eq!(st.state, LiveState::Down);
    let why = st.error().unwrap();
    assert!(why.contains("SPI 0x00001234") && why.contains("options:ipsec_peer_generation"));
    // Nothing to do about it in the kernel: the planner stays converged.
    assert!(converge(&d, &mut obs).is_empty());
}

#[test]
fn refused_sas_wait_for_their_retry_so_one_new_tunnel_costs_only_its_own_actions() {
    use crate::backend::xfrm::types::Refusal;
    let mut confs: Vec<TunnelConf> = (10..60)
        .map(|i| conf(&format!("t{i}"), &format!("192.0.2.{i}"), "a", None))
        .collect();
    let d = desired(confs.clone());
    let mut obs = empty();
    let now = Instant::now();
    obs.now = Some(now);
    let first = plan(&resolve(&d, &obs), &obs);
    // The kernel (no esp4) refuses every SA: everything else is installed.
    for a in &first {
        match a {
            Action::AddSa { sa, .. } => {
                Arc::make_mut(&mut obs.refused).insert(
                    sa.id,
                    Refusal {
                        errno: libc::ENOSYS,
                    },
                );
            }
            _ => simulate(&mut obs, std::slice::from_ref(a)),
        }
    }
    assert!(plan(&resolve(&d, &obs), &obs).is_empty());
    let st = crate::backend::xfrm::status::status(&resolve(&d, &obs), &obs);
    let t10 = &st["t10"];
    assert_eq!(t10.state, crate::backend::LiveState::Error);
    let why = t10.error().unwrap();
    assert!(
        why.contains("cannot add in SA") && why.contains("esp4"),
        "{why}"
    );
    // One more tunnel: its own two SAs, two policies and one guard element, nothing else.
    confs.push(conf("t99", "192.0.2.99", "a", None));
    let d = desired(confs);
    assert_eq!(
        kinds(&plan(&resolve(&d, &obs), &obs)),
        [
            "add-sa-in",
            "add-sa-out",
            "policy-out",
            "policy-in",
            "guardfalse+1-0"
        ]
    );
    // The backend's retry pass (it no longer shares the refusals): every SA is tried again.
    obs.refused = Arc::default();
    assert_eq!(plan(&resolve(&d, &obs), &obs).len(), 2 * 51 + 3);
}

/// Removing a tunnel and adding it back unchanged, after its SAs are gone, must not re-create
/// them under their old keys; it must not disturb the other tunnels either: only the re-added
/// tunnel draws a generation, and the generation file brings it back after a restart.
#[test]
fn re_adding_one_tunnel_renews_only_its_generation_and_survives_a_restart() {
    use crate::backend::LiveState;
    use crate::backend::xfrm::status::status;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gen");
    let mut store = GenerationStore::load_or_create(&path).unwrap();
    let (t1, t2) = (
        conf("t1", "192.0.2.2", "a", None),
        conf("t2", "192.0.2.3", "b", None),
    );
    let both = desired(vec![t1.clone(), t2.clone()]);
    let mut obs = Observed {
        generations: store.generations.clone(),
        ..Default::default()
    };
    converge(&both, &mut obs);
    let before = resolve(&both, &obs);
    let t2_sas = |obs: &Observed| {
        let w = resolve(&both, obs)["t2"].clone().unwrap();
        let sas: Vec<_> = w.sas().map(|(_, s)| (s.id, s.key.clone())).collect();
        assert!(sas.iter().all(|(id, _)| obs.sas.contains_key(id)));
        sas
    };
    let t2_before = t2_sas(&obs);
    // t1 removed; its SAs go after the grace period; t1 added back unchanged.
    let only_t2 = desired(vec![t2.clone()]);
    converge(&only_t2, &mut obs);
    obs.now = obs.now.map(|n| n + Duration::from_secs(11));
    assert_eq!(kinds(&converge(&only_t2, &mut obs)), ["del-sa", "del-sa"]);
    let renew = plan(&resolve(&both, &obs), &obs);
    let [Action::RenewGeneration { tunnel, flow, .. }] = renew.as_slice() else {
        panic!("{renew:?}")
    };
    assert_eq!(tunnel, "t1");
    store.renew_tunnels(&[*flow]).unwrap();
    obs.generations = store.generations.clone();
    let again = converge(&both, &mut obs);
    assert_eq!(
        kinds(&again),
        [
            "add-sa-in",
            "add-sa-out",
            "policy-out",
            "policy-in",
            "guardfalse+1-0"
        ]
    );
    assert!(
        again.iter().all(|a| !format!("{a}").contains("t2")),
        "{again:?}"
    );
    assert_eq!(t2_sas(&obs), t2_before, "t2 keeps its keys and SPIs");
    let wants = resolve(&both, &obs);
    let (w1, w1_old) = (
        wants["t1"].as_ref().unwrap(),
        before["t1"].as_ref().unwrap(),
    );
    assert_ne!(w1.generation, obs.generations.node);
    assert_ne!(
        w1.in_sa.as_ref().unwrap().id,
        w1_old.in_sa.as_ref().unwrap().id
    );
    assert_ne!(
        w1.out_sa.as_ref().unwrap().key,
        w1_old.out_sa.as_ref().unwrap().key
    );
    // Published generations: t1 its own, t2 still the node's; t1 waits for the relay.
    obs.esp_seen.insert(w1_old.in_sa.as_ref().unwrap().id);
    let st = status(&wants, &obs);
    let hex = |g: &[u8; 16]| crate::backend::xfrm::types::generation_hex(g);
    assert_eq!(
        st["t1"].key(crate::status::keys::GENERATION),
        Some(hex(&w1.generation).as_str())
    );
    assert_eq!(
        st["t2"].key(crate::status::keys::GENERATION),
        Some(hex(&obs.generations.node).as_str())
    );
    assert_eq!(st["t2"].state, LiveState::Up);
    assert_eq!(st["t1"].state, LiveState::Down);
    assert!(st["t1"].error().unwrap().contains("ipsec_peer_generation"));
    // A monitor restart: the file gives back both generations; nothing to do.
    obs.generations = GenerationStore::load_or_create(&path).unwrap().generations;
    obs.retiring.clear();
    assert!(converge(&both, &mut obs).is_empty());
    // A reboot: the kernel state and the file (a tmpfs) are gone; a new node generation and no
    // tunnel's own, so both tunnels key with SAs this node never created, and nothing is renewed.
    std::fs::remove_file(&path).unwrap();
    let rebooted = GenerationStore::load_or_create(&path).unwrap();
    assert!(rebooted.generations.tunnels.is_empty() && rebooted.used.is_empty());
    let mut after = Observed {
        generations: rebooted.generations,
        ..Default::default()
    };
    assert!(!kinds(&converge(&both, &mut after)).contains(&"renew".to_owned()));
    assert_eq!(after.sas.len(), 4);
    assert!(
        after.sas.keys().all(|id| !obs.used.contains(id)),
        "{after:?}"
    );
}

#[test]
fn a_flush_of_everything_makes_every_tunnel_draw_its_own_generation_in_one_pass() {
    let d = desired(vec![
        conf("t1", "192.0.2.2", "a", None),
        conf("t2", "192.0.2.3", "b", None),
    ]);
    let mut obs = empty();
    converge(&d, &mut obs);
    obs.sas.clear();
    assert_eq!(kinds(&converge(&d, &mut obs)), ["renew", "renew"]);
    assert_eq!(obs.generations.tunnels.len(), 2);
    assert_eq!(
        kinds(&converge(&d, &mut obs)),
        [
            "add-sa-in",
            "add-sa-in",
            "add-sa-out",
            "add-sa-out",
            "policy-out",
            "policy-out"
        ]
    );
}

/// A tunnel added back unchanged before its SAs' grace period ended finds them still in the
/// kernel, with their sequence numbers and replay windows: they are adopted (no new generation,
/// no relay), and a later removal grants a full grace period again.
#[test]
fn re_adding_a_tunnel_within_the_grace_period_adopts_its_sas_without_a_new_generation() {
    let d = desired(vec![conf("t1", "192.0.2.2", "a", None)]);
    let none = desired(vec![]);
    let mut obs = empty();
    converge(&d, &mut obs);
    let sas = obs.sas.clone();
    assert_eq!(kinds(&converge(&none, &mut obs))[3..], ["retire", "retire"]);
    obs.now = obs.now.map(|n| n + Duration::from_secs(5));
    assert_eq!(
        kinds(&converge(&d, &mut obs)),
        ["keep", "keep", "policy-out", "policy-in", "guardfalse+1-0"]
    );
    assert!(obs.retiring.is_empty() && obs.generations.tunnels.is_empty());
    obs.now = obs.now.map(|n| n + Duration::from_secs(20));
    assert!(converge(&d, &mut obs).is_empty(), "nothing expires");
    assert_eq!(obs.sas, sas);
    assert_eq!(kinds(&converge(&none, &mut obs))[3..], ["retire", "retire"]);
}

/// The kept derivations never go stale: a tunnel whose configuration or own generation
/// changed gets new keys, the others keep theirs, and the result is always what deriving
/// everything afresh gives.
#[test]
fn cached_wants_follow_configuration_and_generation_changes() {
    use crate::backend::xfrm::want::WantCache;
    let mut cache = WantCache::default();
    let mut d = desired(vec![
        conf("t1", "192.0.2.2", "a", None),
        conf("t2", "192.0.2.3", "b", None),
    ]);
    let mut obs = empty();
    let first = cache.resolve(&d, &obs);
    assert_eq!(first, resolve(&d, &obs));
    assert_eq!(cache.resolve(&d, &obs), first, "nothing changed");

    // t1 draws its own generation: its keys change, t2's do not.
    let flow = first["t1"].as_ref().unwrap().out_flow;
    obs.generations.tunnels.insert(flow, [5; 16]);
    let renewed = cache.resolve(&d, &obs);
    assert_eq!(renewed, resolve(&d, &obs));
    assert_ne!(renewed["t1"], first["t1"]);
    assert_eq!(renewed["t2"], first["t2"]);

    // t2's PSK changes (a new configuration); t1 is removed and added back unchanged.
    let t1 = d.tunnels.remove("t1").unwrap();
    d.tunnels.insert(
        "t2".into(),
        DesiredTunnel {
            version: 2,
            conf: Arc::new(conf("t2", "192.0.2.3", "c", None)),
        },
    );
    assert_eq!(cache.resolve(&d, &obs), resolve(&d, &obs));
    d.tunnels.insert("t1".into(), t1);
    let again = cache.resolve(&d, &obs);
    assert_eq!(again, resolve(&d, &obs));
    assert_eq!(again["t1"], renewed["t1"]);
    assert_ne!(again["t2"], first["t2"]);
}
