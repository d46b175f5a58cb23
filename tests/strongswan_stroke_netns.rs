//! strongSwan legacy mode against real charons: two network namespaces, each with its own
//! ovsdb-server, our monitor and the charon that monitor restarts. The IKE_SA establishes on
//! any kernel with XFRM; the CHILD_SAs install only where it has ESP (tests/common/kernel.rs
//! probes it): we assert the IKE_SA, the trap policies with the tunnel's real ports, and our
//! status in OVSDB for the kernel at hand.

mod common;

use std::time::{Duration, Instant};

use common::kernel;
use common::monitor::{iface_key, wait_for};
use ovs_monitor_ipsec::backend::pidwatch;

use common::netns::NetnsPair;
use common::pki::traditional;
use common::strongswan_netns::{Node, make_pki};
use common::xfrm_events::{median_max, policy_ids, timed_delete};

const T: Duration = Duration::from_secs(30);

fn add_tunnel(node: &Node, name: &str, kind: &str, opts: &[String]) {
    node.db.add_tunnel(name, kind, opts);
}

/// Sends traffic into the trap policy until the IKE_SA is up; on timeout the panic shows
/// charon's log and status.
fn wait_ike_established(node: &Node, peer_ip: &str, port: u16) {
    let start = std::time::Instant::now();
    loop {
        node.poke_udp(peer_ip, port);
        let st = node.ipsec("statusall");
        if st.contains("ESTABLISHED") {
            return;
        }
        assert!(
            start.elapsed() < T,
            "no IKE_SA after {T:?}:\n{st}\ncharon log:\n{}\nmonitor log:\n{}",
            node.charon_log(),
            node.mon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn psk_vxlan_on_a_custom_port_establishes_ike_with_policies_on_that_port() {
    let pair = NetnsPair::new("ss");
    let left = Node::start(&pair.left);
    let right = Node::start(&pair.right);
    for (node, peer) in [(&left, "192.0.2.2"), (&right, "192.0.2.1")] {
        add_tunnel(
            node,
            "tun",
            "vxlan",
            &[
                format!("remote_ip={peer}"),
                "psk=swordfish".into(),
                "dst_port=4790".into(),
            ],
        );
    }
    for node in [&left, &right] {
        wait_for("both connections loaded in charon", T, || {
            let st = node.ipsec("statusall");
            st.contains("tun-in-1{") && st.contains("tun-out-1{")
        });
    }
    // Trap policies carry the tunnel's real port, in both directions.
    let pol = left.xfrm_policies();
    assert!(pol.contains("proto udp dport 4790"), "{pol}");
    assert!(pol.contains("proto udp sport 4790"), "{pol}");
    assert!(
        !pol.contains("4789"),
        "the default port must not be used:\n{pol}"
    );

    wait_ike_established(&left, "192.0.2.2", 4790);
    let st = right.ipsec("statusall");
    assert!(
        st.contains("ESTABLISHED"),
        "the peer sees the IKE_SA too:\n{st}"
    );
    wait_outcome(&left, &right, 4790);
    let show = left.mon.appctl_ok(&["tunnels/show"]);
    assert!(show.contains("ESTABLISHED"), "{show}");
    assert!(show.contains("tun-in-1: loaded, routed"), "{show}");
    assert!(
        left.charon_log()
            .contains("authentication of '192.0.2.2' with pre-shared key successful"),
        "charon accepted the hex-encoded PSK"
    );
}

/// Our status on this kernel: with ESP the CHILD_SAs install once traffic from each end hits
/// its trap policy, and the tunnel is up; without, the IKE_SA is up and the CHILD_SA cannot
/// install: negotiating.
fn wait_outcome(left: &Node, right: &Node, port: u16) {
    let want = kernel::expect("up", "negotiating");
    wait_for(&format!("ipsec-state={want}"), T, || {
        left.poke_udp("192.0.2.2", port);
        right.poke_udp("192.0.2.1", port);
        left.mon.appctl_ok(&["refresh"]);
        iface_key(&left.db, "tun", "ipsec-state").as_deref() == Some(want)
    });
    if kernel::has_esp() {
        NetnsPair::assert_esp_sas(&left.ns, "proto udp");
    }
}

#[test]
fn ca_signed_geneve_establishes_ike() {
    let pair = NetnsPair::new("ss");
    let left = Node::start(&pair.left);
    let right = Node::start(&pair.right);
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    // Left's RSA key in PKCS#1, right's in PKCS#8: charon reads both (`: PKCS8`).
    traditional(&pki.path().join("left-key.pem"));
    let p = |f: &str| pki.path().join(f).display().to_string();
    for (node, me, peer, peer_ip) in [
        (&left, "left", "right", "192.0.2.2"),
        (&right, "right", "left", "192.0.2.1"),
    ] {
        node.db.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:certificate={}", p(&format!("{me}-cert.pem"))),
            &format!("other_config:private_key={}", p(&format!("{me}-key.pem"))),
            &format!("other_config:ca_cert={}", p("ca-cert.pem")),
        ]);
        add_tunnel(
            node,
            "gnv",
            "geneve",
            &[
                format!("remote_ip={peer_ip}"),
                format!("remote_name={peer}"),
            ],
        );
    }
    for node in [&left, &right] {
        wait_for("connections loaded", T, || {
            node.ipsec("statusall").contains("gnv-out-1{")
        });
    }
    assert!(left.xfrm_policies().contains("dport 6081"));
    if std::panic::catch_unwind(|| wait_ike_established(&left, "192.0.2.2", 6081)).is_err() {
        panic!("peer charon log:\n{}", right.charon_log());
    }
    let st = left.ipsec("statusall");
    assert!(
        st.contains("[left]...192.0.2.2[right]"),
        "certificate identities:\n{st}"
    );
}

/// charon installs the tunnel's trap policies; one deleted by hand is noticed within a
/// second (the XFRM notifications), and only that tunnel is reconciled. charon does not put
/// a trap policy back by itself and still reports the connection routed, so the pass finds
/// nothing to repair; the SAs, which this kernel cannot hold, need the QEMU tier.
#[test]
fn a_trap_policy_deleted_by_hand_is_noticed_within_a_second() {
    let pair = NetnsPair::new("ss");
    let left = Node::start(&pair.left);
    let peer = format!("remote_ip={}", "192.0.2.2");
    add_tunnel(
        &left,
        "tun",
        "geneve",
        &[peer.clone(), "psk=swordfish".into()],
    );
    add_tunnel(&left, "other", "gre", &[peer, "psk=swordfish".into()]);
    wait_for("trap policies", T, || {
        policy_ids(&pair.left, "dport 6081").len() == 2
            && policy_ids(&pair.left, "sport 6081").len() == 2
            && !policy_ids(&pair.left, "proto gre").is_empty()
    });
    // charon's removals right after a pass of ours changed a tunnel are our own doing.
    std::thread::sleep(Duration::from_secs(6));
    let ids: Vec<Vec<String>> = ["dport 6081", "sport 6081"]
        .iter()
        .flat_map(|f| policy_ids(&pair.left, f))
        .collect();
    let noticed = "was deleted: reconciling tun";
    let times: Vec<Duration> = ids
        .iter()
        .map(|id| timed_delete(&pair.left, &left.mon, id, noticed))
        .collect();
    let (median, max) = median_max(&times);
    eprintln!(
        "strongSwan stroke, trap policy deleted by hand: noticed median {median:?} max {max:?}"
    );
    assert!(median < Duration::from_secs(1), "{times:?}");
    let log = left.mon.log();
    assert!(
        log.contains("tun: XFRM out policy 192.0.2.1 -> 192.0.2.2 udp dport 6081 was deleted"),
        "{log}"
    );
    assert!(!log.contains("reconciling other"), "{log}");
    let show = left.mon.appctl_ok(&["tunnels/show"]);
    assert!(
        show.contains(&format!("policy vanished: {}", ids.len())),
        "{show}"
    );
}

/// Issue 22: a connection charon loses (`ipsec stroke delete`, as after a crash the starter
/// does not replay) soon after our last `update` is back within 20 s (one periodic pass),
/// and the established IKE_SA of another tunnel, to another peer address, is not touched.
#[test]
fn a_connection_deleted_in_charon_is_restored_within_20_s_without_touching_another_ike_sa() {
    let pair = NetnsPair::new("ssd");
    for (ns, dev, addr) in [
        (&pair.left, "v0", "192.0.2.11/24"),
        (&pair.right, "v1", "192.0.2.12/24"),
    ] {
        let ok = std::process::Command::new("ip")
            .args(["-n", ns, "addr", "add", addr, "dev", dev])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip addr add {addr}");
    }
    let left = Node::start(&pair.left);
    let right = Node::start(&pair.right);
    for (node, peer, me, peer2) in [
        (&left, "192.0.2.2", "192.0.2.11", "192.0.2.12"),
        (&right, "192.0.2.1", "192.0.2.12", "192.0.2.11"),
    ] {
        add_tunnel(
            node,
            "a",
            "vxlan",
            &[format!("remote_ip={peer}"), "psk=swordfish".into()],
        );
        add_tunnel(
            node,
            "b",
            "gre",
            &[
                format!("remote_ip={peer2}"),
                format!("local_ip={me}"),
                "psk=marlin".into(),
            ],
        );
    }
    for node in [&left, &right] {
        wait_for("connections loaded in charon", T, || {
            let st = node.ipsec("statusall");
            st.contains("a-out-1{") && st.contains("b-1:")
        });
    }
    wait_ike_established(&left, "192.0.2.2", 4789);
    // The IKE_SA's SPI pair, e.g. `2d7fa6b1c2d44a3e_i* 3f64f1e0d1a4e5b0_r`.
    let ike = |st: &str| -> Vec<String> {
        st.lines()
            .filter_map(|l| l.split_once("IKEv2 SPIs: "))
            .map(|(_, spis)| spis.split(',').next().unwrap_or_default().to_owned())
            .collect()
    };
    let before = ike(&left.ipsec("statusall"));
    assert_eq!(
        before.len(),
        1,
        "one IKE_SA, tunnel a's:\n{}",
        left.ipsec("statusall")
    );

    left.ipsec("stroke delete b-1");
    let lost = std::time::Instant::now();
    assert!(
        !left.ipsec("statusall").contains("b-1:"),
        "charon dropped b-1"
    );
    wait_for("b-1 back in charon", Duration::from_secs(40), || {
        left.ipsec("statusall").contains("b-1:")
    });
    let took = lost.elapsed();
    println!("stroke with charon: b-1 restored after {took:?}");
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}:\n{}",
        left.mon.log()
    );
    let st = left.ipsec("statusall");
    assert_eq!(ike(&st), before, "tunnel a's IKE_SA untouched:\n{st}");
    assert!(st.contains("ESTABLISHED"), "{st}");
}

/// A charon killed with SIGKILL (starter with it, as a crash of the service) is noticed from
/// its pid file within a second or two, not at the next periodic pass (15 s): every tunnel
/// reports that charon does not answer. Started again, it is noticed as well, and the
/// tunnel's connections are in the new charon with the error gone.
#[test]
fn a_killed_charon_is_noticed_at_once_and_the_tunnels_recover_when_it_returns() {
    let pair = NetnsPair::new("ssk");
    let left = Node::start(&pair.left);
    add_tunnel(
        &left,
        "tun",
        "geneve",
        &["remote_ip=192.0.2.2".into(), "psk=swordfish".into()],
    );
    wait_for("tun's connections in charon", T, || {
        left.ipsec("statusall").contains("tun-out-1")
    });
    // Let the pass that loaded them finish, so that the next one is the watch's.
    std::thread::sleep(Duration::from_secs(2));
    let exited = "charon (pid";
    let dead = "charon does not answer";
    let before = left.mon.log_count(dead);
    assert_eq!(left.ike_pids().len(), 2, "starter and charon pids");
    let killed = Instant::now();
    left.kill_ike();
    wait_for("the monitor noticing charon's death", T, || {
        left.mon
            .log()
            .lines()
            .any(|l| l.contains(exited) && l.contains(pidwatch::EXITED))
    });
    let noticed = killed.elapsed();
    wait_for("the pass after it", T, || left.mon.log_count(dead) > before);
    let reported = killed.elapsed();
    eprintln!(
        "strongSwan stroke, charon killed: noticed in {noticed:?}, tunnels failed in {reported:?}"
    );
    assert!(
        reported < Duration::from_secs(3),
        "reported after {reported:?}: {}",
        left.mon.log()
    );
    wait_for("the tunnel's status naming the dead charon", T, || {
        iface_key(&left.db, "tun", "ipsec-error").is_some_and(|e| e.contains(dead))
    });
    let started = Instant::now();
    left.start_ike();
    wait_for("the error gone once charon is back", T, || {
        iface_key(&left.db, "tun", "ipsec-error").is_none()
    });
    let back = started.elapsed();
    eprintln!("strongSwan stroke, charon back: status clean after {back:?}");
    // The watch's pass, not the periodic one (every 15 s).
    assert!(back < Duration::from_secs(10), "clean after {back:?}");
    assert!(left.ipsec("statusall").contains("tun-out-1"));
    let log = left.mon.log();
    assert!(!log.contains("swordfish"), "the PSK was logged");
}
