//! `diagnose` against real charons driven over VICI (`--strongswan-mode=vici`): the IKE layers
//! come from charon's own `list-conns` and `list-sas`. The Child SA layer is what the kernel
//! allows: installed where it has ESP, `child-sa-missing` where it has none.

mod common;

use std::time::Duration;

use common::monitor::wait_for;
use common::netns::NetnsPair;
use common::vici::{Node, require_strongswan};

const T: Duration = Duration::from_secs(40);

#[test]
fn child_sa_layer_on_this_kernel_and_dead_charon() {
    require_strongswan();
    let net = NetnsPair::new("dv");
    let tmp = tempfile::tempdir().unwrap();
    let mut left = Node::start(&net.left, &tmp.path().join("left"));
    let right = Node::start(&net.right, &tmp.path().join("right"));
    for (node, peer) in [(&right, "192.0.2.1"), (&left, "192.0.2.2")] {
        node.add_tunnel(
            "geneve",
            &[format!("remote_ip={peer}"), "psk=swordfish-vici".into()],
        );
    }
    wait_for("the IKE SA", T, || left.ike_established());
    let c = left.mon.wait_negotiated_findings("tun", T);
    assert!(!c.contains(&"conn-not-loaded".to_owned()), "{c:?}");
    let text = left.mon.appctl_ok(&["diagnose", "tun"]);
    assert!(
        text.contains("ok   connections  loaded: tun-in-1, tun-out-1")
            && text.contains("ok   IKE SA       established")
            && !text.contains("swordfish"),
        "{text}"
    );

    // charon gone: the daemon layer fails first.
    left.charon.kill();
    let c = left.mon.diagnose_codes("tun");
    assert_eq!(
        c.first().map(String::as_str),
        Some("ike-daemon-down"),
        "{c:?}"
    );
}
