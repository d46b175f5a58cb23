//! strongSwan VICI mode against REAL charons: two network namespaces, a charon in each, an
//! ovsdb-server and our monitor per node (the monitor runs in the node's namespace, as it does
//! beside charon on a real host: that is where it looks up its own address), tunnels created
//! with the real ovs-vsctl.
//!
//! The IKE_SA establishes and the trap policies install on any kernel with XFRM; the CHILD_SAs
//! install where the kernel has ESP (tests/common/kernel.rs probes it). The tests assert one
//! IKE_SA per tunnel on each node, both children configured, trap policies on the tunnel's
//! real ports, the monitor's status in OVSDB (`up` with ESP, `down` without) and
//! `tunnels/show`, its recovery from a charon crash, and the removal of the tunnel's SAs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::kernel;
use common::monitor::{iface_key, wait_for};
use common::netns::NetnsPair;
use common::vici::{Node, make_pki, policies, require_strongswan};
use common::xfrm_events::{median_max, policy_ids, timed_delete};
use ovs_monitor_ipsec::backend::secrets::psk_hex;
use ovs_monitor_ipsec::model::Secret;

const T: Duration = Duration::from_secs(20);

#[test]
fn psk_vxlan_on_a_custom_port_establishes_ike_and_survives_a_charon_crash() {
    require_strongswan();
    let net = NetnsPair::new("vc");
    let tmp = tempfile::tempdir().unwrap();
    let left = Node::start(&net.left, &tmp.path().join("left"));
    let mut right = Node::start(&net.right, &tmp.path().join("right"));
    let opts = |ip: &str| {
        vec![
            format!("remote_ip={ip}"),
            "psk=swordfish".into(),
            "dst_port=4790".into(),
        ]
    };
    right.add_tunnel("vxlan", &opts("192.0.2.1"));
    left.add_tunnel("vxlan", &opts("192.0.2.2"));

    wait_for("IKE_SA established on both sides", T, || {
        left.ike_established() && right.ike_established()
    });
    // Both children were negotiated inside that IKE_SA (and installed only with ESP).
    wait_for("both children attempted", T, || {
        let log = left.charon.log() + &right.charon.log();
        log.contains("tun-in-1") && log.contains("tun-out-1")
    });
    // ONE IKE_SA per tunnel on each node, started by the end with the lower address only.
    assert_eq!((left.ike_sa_count(), right.ike_sa_count()), (1, 1));
    assert!(left.charon.log().contains("initiating IKE_SA tun-1"));
    assert!(!right.charon.log().contains("initiating IKE_SA"));
    // One connection carrying both children: in on our port, out to the peer's port from
    // any source port.
    for node in [&left, &right] {
        let conns = node.conns();
        assert_eq!(conns.matches("list-conn event").count(), 1, "{conns}");
        assert!(conns.contains("{tun-1 {"), "{conns}");
        assert!(
            conns.contains("tun-in-1 {mode=TRANSPORT")
                && conns.contains("local-ts=[dynamic[udp/4790]] remote-ts=[dynamic[udp]]"),
            "{conns}"
        );
        assert!(
            conns.contains("tun-out-1 {mode=TRANSPORT")
                && conns.contains("local-ts=[dynamic[udp]] remote-ts=[dynamic[udp/4790]]"),
            "{conns}"
        );
    }
    // Trap policies with the tunnel's real port in both directions; the outbound one does not
    // pin a source port (geneve/vxlan pick a random one per flow).
    let pol = policies(&net.left);
    let find = |dir: &str, sel: &str| pol.iter().any(|p| p.contains(sel) && p.contains(dir));
    let to_peer = "src 192.0.2.1/32 dst 192.0.2.2/32 proto udp dport 4790 ";
    assert!(find("dir out", to_peer), "{pol:?}");
    assert!(
        find(
            "dir in",
            "src 192.0.2.2/32 dst 192.0.2.1/32 proto udp sport 4790 "
        ),
        "{pol:?}"
    );
    assert!(
        find(
            "dir out",
            "src 192.0.2.1/32 dst 192.0.2.2/32 proto udp sport 4790 "
        ),
        "{pol:?}"
    );
    assert!(
        find(
            "dir in",
            "src 192.0.2.2/32 dst 192.0.2.1/32 proto udp dport 4790 "
        ),
        "{pol:?}"
    );
    assert!(
        !pol.iter().any(|p| p.contains("4789")),
        "default port used instead of dst_port: {pol:?}"
    );
    // The PSK went to charon's memory only: not on disk in any form secrets files use.
    let forms = psk_forms("swordfish");
    assert!(!left.conns().contains("swordfish"));
    for f in walk(tmp.path()) {
        let text = match std::fs::read(&f) {
            Ok(text) => text,
            // Removed since the listing: it holds nothing any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot check {} for the PSK: {e}", f.display()),
        };
        for form in &forms {
            assert!(
                !text.windows(form.len()).any(|w| w == form.as_bytes()),
                "PSK on disk in {} (as {form})",
                f.display()
            );
        }
    }
    let log = left.mon.log();
    for form in &forms {
        assert!(
            !log.contains(form.as_str()),
            "PSK in the monitor log (as {form})"
        );
    }
    // The monitor learns it from charon's ike-updown event.
    wait_for("tunnels/show lists the IKE_SA", T, || {
        left.mon
            .appctl_ok(&["tunnels/show"])
            .contains("tun-1: ESTABLISHED")
    });
    let show = left.mon.appctl_ok(&["tunnels/show"]);
    assert!(
        show.contains("tun-1: children tun-in-1, tun-out-1"),
        "{show}"
    );
    wait_outcome(&left, &net.left);

    // charon crashes: the tunnel says why it is down.
    right.charon.kill();
    wait_for("right ipsec-error about charon", T, || {
        iface_key(&right.db, "tun", "ipsec-error").is_some_and(|e| e.contains("VICI"))
    });
    assert!(iface_key(&right.db, "tun", "ipsec-state").as_deref() == Some("down"));
    // charon is back: everything is reloaded and IKE comes up again, started by the restarted
    // end even though its address is higher (the peer still holds the old IKE_SA and would
    // never start one); INITIAL_CONTACT makes the peer drop the stale one.
    right.charon.restart();
    right.mon.wait_log("charon is back");
    wait_for("right connection reloaded", T, || {
        right.conns().contains("{tun-1 {")
    });
    wait_for("right error cleared", T, || {
        iface_key(&right.db, "tun", "ipsec-error").is_none()
    });
    wait_for("IKE_SA re-established", T, || right.ike_established());
    wait_for("the stale IKE_SA gone on the left", T, || {
        left.charon.log().contains("destroying duplicate IKE_SA")
    });
    assert_eq!((left.ike_sa_count(), right.ike_sa_count()), (1, 1));

    // The tunnel is deleted: its connection AND its IKE_SA go (unload-conn alone leaves an
    // established IKE_SA and its CHILD_SAs, with their kernel state, in place).
    left.db.vsctl(&["del-port", "br-ipsec", "tun"]);
    wait_for("left's IKE_SA closed after the tunnel's removal", T, || {
        left.ike_sa_count() == 0
    });
    assert!(!left.conns().contains("{tun-1 {"), "{}", left.conns());
    wait_for("left's CHILD_SAs removed with the IKE_SA", T, || {
        NetnsPair::xfrm_sas(&net.left).is_empty()
    });
}

/// The tunnel's state on this kernel once both ends negotiated: with ESP both CHILD_SAs
/// install and it is `up`; without, the CHILD_SAs fail and it is `down`, without error.
fn wait_outcome(node: &Node, ns: &str) {
    let want = kernel::expect("up", "down");
    wait_for(&format!("ipsec-state={want}"), T, || {
        iface_key(&node.db, "tun", "ipsec-state").as_deref() == Some(want)
    });
    if kernel::has_esp() {
        NetnsPair::assert_esp_sas(ns, "proto udp");
    } else {
        assert_eq!(iface_key(&node.db, "tun", "ipsec-error"), None);
    }
}

#[test]
fn ca_signed_geneve_establishes_ike_with_certificates_loaded_over_vici() {
    require_strongswan();
    let net = NetnsPair::new("vc");
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_pki(&pki);
    let left = Node::start(&net.left, &tmp.path().join("left"));
    let right = Node::start(&net.right, &tmp.path().join("right"));
    for (node, me, peer, peer_ip) in [
        (&left, "left", "right", "192.0.2.2"),
        (&right, "right", "left", "192.0.2.1"),
    ] {
        let p = |f: &str| pki.join(f).display().to_string();
        node.db.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:certificate={}", p(&format!("{me}-cert.pem"))),
            &format!(
                "other_config:private_key={}",
                p(&format!("{me}-privkey.pem"))
            ),
            &format!("other_config:ca_cert={}", p("cacert.pem")),
        ]);
        node.add_tunnel(
            "geneve",
            &[
                format!("remote_ip={peer_ip}"),
                format!("remote_name={peer}"),
            ],
        );
    }
    // left (the lower address) loaded first: its first IKE_SA was refused by a right that had
    // no connection yet, and it is started again on a later pass (RETRY_INITIATE, then the
    // next periodic pass: up to 15 s).
    wait_for("IKE_SA established with certificates", 2 * T, || {
        left.ike_established() && right.ike_established()
    });
    assert_eq!((left.ike_sa_count(), right.ike_sa_count()), (1, 1));
    let sas = left.charon.swanctl_out(&["--list-sas", "--raw"]);
    assert!(sas.contains("remote-id=right"), "{sas}");
    let pol = NetnsPair::xfrm_policies(&net.right);
    assert!(pol.contains("proto udp dport 6081"), "{pol}");
    let auths = left.charon.swanctl_out(&["--list-authorities", "--raw"]);
    assert!(auths.contains("ovs-ca"), "{auths}");
    assert_eq!(
        iface_key(&left.db, "tun", "ipsec-auth").as_deref(),
        Some("ca-signed")
    );
}

/// `psk` as text and in the encodings secrets files use: the hex the project writes (`0x...`,
/// matched without the prefix so that any hex spelling of it is found) and base64 (`0s...`).
fn psk_forms(psk: &str) -> Vec<String> {
    use base64::Engine as _;
    let hex = psk_hex(&Secret::new(psk));
    vec![
        psk.to_owned(),
        hex.trim_start_matches("0x").to_owned(),
        base64::engine::general_purpose::STANDARD.encode(psk),
    ]
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// The end that leaves initiation to its peer holds the tunnel's trap policies, installed by
/// charon; one deleted by hand is noticed within a second and only that tunnel is reconciled
/// (charon keeps the connection routed, so there is nothing to repair). The SAs, which this
/// kernel cannot hold, need the QEMU tier.
#[test]
fn a_trap_policy_deleted_by_hand_is_noticed_within_a_second() {
    require_strongswan();
    let net = NetnsPair::new("vc");
    let tmp = tempfile::tempdir().unwrap();
    let right = Node::start(&net.right, &tmp.path().join("right"));
    right.add_tunnel(
        "geneve",
        &["remote_ip=192.0.2.1".into(), "psk=swordfish".into()],
    );
    wait_for("trap policies", T, || {
        policy_ids(&net.right, "6081").len() == 4
    });
    // charon's removals right after a pass of ours changed a tunnel are our own doing.
    std::thread::sleep(Duration::from_secs(6));
    let times: Vec<Duration> = policy_ids(&net.right, "6081")
        .iter()
        .map(|id| timed_delete(&net.right, &right.mon, id, "was deleted: reconciling tun"))
        .collect();
    let (median, max) = median_max(&times);
    eprintln!(
        "strongSwan VICI, trap policy deleted by hand: noticed median {median:?} max {max:?}"
    );
    assert!(median < Duration::from_secs(1), "{times:?}");
    let show = right.mon.appctl_ok(&["tunnels/show"]);
    assert!(show.contains("policy vanished: 4"), "{show}");
}
