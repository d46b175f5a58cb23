//! strongSwan VICI mode against REAL charons: two network namespaces, a charon in each, an
//! ovsdb-server and our monitor per node, tunnels created with the real ovs-vsctl.
//!
//! This kernel has XFRM but no esp4: the IKE_SA establishes and the trap policies install,
//! the CHILD_SA cannot. The tests assert exactly that, plus the monitor's status in OVSDB and
//! `tunnels/show`, and its recovery from a charon crash.

mod common;

use std::path::Path;
use std::time::Duration;

use common::monitor::{Monitor, iface_key, wait_for};
use common::netns::NetnsPair;
use common::ovsdb_server::OvsdbServer;
use common::vici::{Charon, make_pki, require_strongswan};

const T: Duration = Duration::from_secs(20);

struct Node {
    charon: Charon,
    db: OvsdbServer,
    mon: Monitor,
}

impl Node {
    fn start(ns: &str, dir: &Path) -> Self {
        let charon = Charon::start(ns, dir);
        let db = OvsdbServer::start();
        let socket = format!("--vici-socket={}", charon.socket().display());
        let mon = Monitor::start_real(&db, &["--strongswan-mode=vici", &socket]);
        Self { charon, db, mon }
    }

    fn add_tunnel(&self, kind: &str, opts: &[String]) {
        let mut args: Vec<String> = [
            "--may-exist",
            "add-br",
            "br-ipsec",
            "--",
            "add-port",
            "br-ipsec",
            "tun",
            "--",
            "set",
            "interface",
            "tun",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("type={kind}"));
        args.extend(opts.iter().map(|o| format!("options:{o}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.db.vsctl(&args);
    }

    fn ike_established(&self) -> bool {
        self.charon
            .swanctl_out(&["--list-sas", "--raw"])
            .contains("state=ESTABLISHED")
    }

    fn conns(&self) -> String {
        self.charon.swanctl_out(&["--list-conns", "--raw"])
    }
}

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
    // Trap policies with the tunnel's real port, both directions of each connection.
    // Policies with the tunnel's real port: to the peer's port and to ours.
    let pol = NetnsPair::xfrm_policies(&net.left);
    let has = |src: &str, dst: &str| {
        pol.lines()
            .any(|l| l.starts_with(src) && l.contains(dst) && l.contains("proto udp dport 4790"))
    };
    assert!(has("src ", "dst 192.0.2.2/32"), "{pol}");
    assert!(has("src 192.0.2.2/32", "dst "), "{pol}");
    assert!(
        !pol.contains("4789"),
        "default port used instead of dst_port: {pol}"
    );
    // The PSK went to charon's memory only.
    assert!(!left.conns().contains("swordfish"));
    for f in walk(tmp.path()) {
        let text = std::fs::read(&f).unwrap_or_default();
        assert!(
            !text.windows(9).any(|w| w == b"swordfish"),
            "PSK on disk in {}",
            f.display()
        );
    }
    assert!(
        !left.mon.log().contains("swordfish"),
        "PSK in the monitor log"
    );
    let show = left.mon.appctl_ok(&["tunnels/show"]);
    assert!(show.contains("tun-out-1: ESTABLISHED"), "{show}");
    assert!(show.contains("Connections loaded in charon"), "{show}");
    // No ESP here: the CHILD_SA fails, so the tunnel is down, without error.
    wait_for("left ipsec-state=down", T, || {
        iface_key(&left.db, "tun", "ipsec-state").as_deref() == Some("down")
    });

    // charon crashes: the tunnel says why it is down.
    right.charon.kill();
    wait_for("right ipsec-error about charon", T, || {
        iface_key(&right.db, "tun", "ipsec-error").is_some_and(|e| e.contains("VICI"))
    });
    assert!(iface_key(&right.db, "tun", "ipsec-state").as_deref() == Some("down"));
    // charon is back: everything is reloaded and IKE comes up again.
    right.charon.restart();
    right.mon.wait_log("charon is back");
    wait_for("right connections reloaded", T, || {
        let c = right.conns();
        c.contains("tun-in-1") && c.contains("tun-out-1")
    });
    wait_for("right error cleared", T, || {
        iface_key(&right.db, "tun", "ipsec-error").is_none()
    });
    wait_for("IKE_SA re-established", T, || right.ike_established());
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
    wait_for("IKE_SA established with certificates", T, || {
        left.ike_established() && right.ike_established()
    });
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
