//! `diagnose` against real charons (strongSwan legacy mode), two network namespaces each with
//! its ovsdb-server, our monitor and the charon it starts: the IKE layers' findings come from
//! what charon really holds. A Child SA installs where the kernel has ESP, never where it has
//! none.

mod common;

use std::time::Duration;

use common::kernel;
use common::monitor::wait_for;
use common::netns::NetnsPair;
use common::strongswan_netns::Node;

const T: Duration = Duration::from_secs(40);

fn psk_tunnel(node: &Node, peer: &str, psk: &str) {
    node.db.add_tunnel(
        "vx",
        "vxlan",
        &[format!("remote_ip={peer}"), format!("psk={psk}")],
    );
}

/// Retries `setup` then `diagnose` until `code` shows: the monitor repairs what a test breaks
/// by hand at its next periodic pass, which may come in between.
fn broken_by_hand(node: &Node, code: &str, setup: impl Fn()) -> String {
    for _ in 0..3 {
        setup();
        // One reply for the code and the text: the monitor may repair in between two.
        let text = node.mon.appctl_ok(&["diagnose", "vx"]);
        if text.contains(&format!(" {code}: ")) {
            return text;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("{code} never reported");
}

fn pair_with_psks(left_psk: &str, right_psk: &str) -> (NetnsPair, Node, Node) {
    let pair = NetnsPair::new("dg");
    let left = Node::start(&pair.left);
    let right = Node::start(&pair.right);
    psk_tunnel(&left, "192.0.2.2", left_psk);
    psk_tunnel(&right, "192.0.2.1", right_psk);
    for node in [&left, &right] {
        wait_for("connections loaded", T, || {
            node.ipsec("statusall").contains("vx-out-1{")
        });
    }
    (pair, left, right)
}

#[test]
fn wrong_psk_deleted_connection_and_stopped_charon() {
    let (_pair, left, _right) = pair_with_psks("alpha-secret-1", "beta-secret-2");

    // Different PSKs: charon's trap starts IKE on the first packet and authentication fails.
    wait_for("an authentication failure", T, || {
        left.poke_udp("192.0.2.2", 4789);
        std::thread::sleep(Duration::from_millis(300));
        left.charon_log().contains("AUTHENTICATION_FAILED")
    });
    let c = left.mon.diagnose_codes("vx");
    assert!(c.contains(&"ike-sa-missing".to_owned()), "{c:?}");
    assert!(!c.contains(&"conn-not-loaded".to_owned()), "{c:?}");
    let text = left.mon.appctl_ok(&["diagnose", "vx"]);
    assert!(
        text.contains("ok   connections  loaded: vx-in-1, vx-out-1")
            && text.contains("ike-sa-missing: vx-in-1: no IKE SA"),
        "{text}"
    );
    assert!(
        !text.contains("alpha-secret") && !text.contains("beta-secret"),
        "{text}"
    );

    // The trap policies of a connection removed by hand: the outbound traffic has none.
    let text = broken_by_hand(&left, "policy-missing", || {
        left.ipsec("stroke unroute vx-out-1");
    });
    assert!(
        text.contains(
            "error policy-missing: no out policy of the tunnel for 192.0.2.1 -> 192.0.2.2 udp dport 4789"
        ),
        "{text}"
    );

    // A connection deleted behind the monitor's back: not loaded.
    let text = broken_by_hand(&left, "conn-not-loaded", || {
        left.ipsec("stroke delete vx-out-1");
    });
    assert!(
        text.contains("FAIL connections  not loaded: vx-out-1"),
        "{text}"
    );

    // charon stopped: the daemon layer fails.
    left.ipsec("stop");
    let c = left.mon.diagnose_codes("vx");
    assert_eq!(
        c.first().map(String::as_str),
        Some("ike-daemon-down"),
        "{c:?}"
    );
    let all = left.mon.appctl_ok(&["diagnose"]);
    assert!(
        all.contains("FAIL IKE daemon")
            && all.contains("error ike-daemon-down: strongSwan cannot be reached"),
        "{all}"
    );
}

#[test]
fn ike_up_and_the_child_sa_layer_on_this_kernel() {
    let (_pair, left, right) = pair_with_psks("alpha-secret-1", "alpha-secret-1");
    // Traffic from each end hits its trap: the IKE SA, and where the kernel has ESP the Child
    // SA of both connections (vx-out-1 from the left, vx-in-1 from the right).
    let children = kernel::expect(2, 0);
    wait_for("the IKE SA and the Child SAs this kernel allows", T, || {
        left.poke_udp("192.0.2.2", 4789);
        right.poke_udp("192.0.2.1", 4789);
        std::thread::sleep(Duration::from_millis(300));
        let st = left.ipsec("statusall");
        st.contains("ESTABLISHED") && st.matches("INSTALLED, TRANSPORT").count() >= children
    });
    let c = left.mon.wait_negotiated_findings("vx", T);
    assert!(!c.contains(&"policy-missing".to_owned()), "{c:?}");
    let text = left.mon.appctl_ok(&["diagnose", "vx"]);
    assert!(
        text.contains("ok   IKE SA       established")
            && text.contains(
                "ok   policy out   src 192.0.2.1/32 dst 192.0.2.2/32 proto udp dport 4789 dir out"
            ),
        "{text}"
    );
}
