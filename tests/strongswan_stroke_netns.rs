//! strongSwan legacy mode against real charons: two network namespaces, each with its own
//! ovsdb-server, our monitor and the charon that monitor restarts. The IKE_SA establishes on
//! any kernel with XFRM; the CHILD_SAs install only where it has ESP (tests/common/kernel.rs
//! probes it): we assert the IKE_SA, the trap policies with the tunnel's real ports, and our
//! status in OVSDB for the kernel at hand.

mod common;

use std::time::Duration;

use common::kernel;
use common::monitor::{iface_key, wait_for};

use common::netns::NetnsPair;
use common::strongswan_netns::{Node, make_pki};

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
