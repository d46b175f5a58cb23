//! strongSwan VICI mode against REAL charons, continued: self-signed certificates, an IPv6
//! underlay, `ipsec_skb_mark` drop shunts, certificate rotation by content, and drift repair
//! (our connection unloaded by hand comes back; an administrator's connection is never
//! touched). Same set-up as `tests/strongswan_vici.rs`: two namespaces, a charon, an
//! ovsdb-server and our monitor per node. The right node always loads first, so the left one
//! (the lower address, the initiator) brings the IKE_SA up at once.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::monitor::{iface_key, wait_for};
use common::netns::NetnsPair;
use common::vici::{Node, make_pki, make_self_signed, policies, require_strongswan};
use ovs_monitor_ipsec::backend::strongswan_vici::plan::UNLOAD_CONNECTION;

const T: Duration = Duration::from_secs(20);

/// Two started nodes and their namespaces; `dir` holds charons' files and the PKI.
struct Pair {
    net: NetnsPair,
    left: Node,
    right: Node,
    _tmp: tempfile::TempDir,
    pki: std::path::PathBuf,
}

fn pair() -> Pair {
    require_strongswan();
    let net = NetnsPair::new("vk");
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let left = Node::start(&net.left, &tmp.path().join("left"));
    let right = Node::start(&net.right, &tmp.path().join("right"));
    Pair {
        net,
        left,
        right,
        _tmp: tmp,
        pki,
    }
}

impl Pair {
    /// Each node's certificate and key in `other_config`, plus `extra` (e.g. `ca_cert`).
    fn set_pki(&self, extra: &[(&str, String)]) {
        for (node, me) in [(&self.right, "right"), (&self.left, "left")] {
            let mut kv = vec![
                format!("certificate={}", self.file(&format!("{me}-cert.pem"))),
                format!("private_key={}", self.file(&format!("{me}-privkey.pem"))),
            ];
            kv.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
            node.set_global(&kv);
        }
    }

    fn file(&self, name: &str) -> String {
        self.pki.join(name).display().to_string()
    }

    fn both_up(&self) {
        wait_for("IKE_SA established on both nodes", T, || {
            self.left.ike_established() && self.right.ike_established()
        });
    }
}

#[test]
fn self_signed_certificates_pin_the_peer_and_bring_up_one_ike_sa() {
    let p = pair();
    make_self_signed(&p.pki);
    p.set_pki(&[]);
    p.right.add_tunnel(
        "geneve",
        &[
            "remote_ip=192.0.2.1".into(),
            format!("remote_cert={}", p.file("left-cert.pem")),
        ],
    );
    p.left.add_tunnel(
        "geneve",
        &[
            "remote_ip=192.0.2.2".into(),
            format!("remote_cert={}", p.file("right-cert.pem")),
        ],
    );
    p.both_up();
    assert_eq!((p.left.ike_sa_count(), p.right.ike_sa_count()), (1, 1));
    let sas = p.left.sas();
    assert!(
        sas.contains("local-id=left") && sas.contains("remote-id=right"),
        "{sas}"
    );
    assert_eq!(
        iface_key(&p.left.db, "tun", "ipsec-auth").as_deref(),
        Some("self-signed")
    );
    // No private key left charon's memory onto disk or into the log.
    assert!(!p.left.mon.log().contains("PRIVATE KEY"));
}

#[test]
fn ipv6_underlay_gets_ipv6_trap_policies_on_the_tunnel_port() {
    let p = pair();
    for (ns, dev, me) in [
        (&p.net.left, "v0", "2001:db8::1/64"),
        (&p.net.right, "v1", "2001:db8::2/64"),
    ] {
        ip(&["-n", ns, "addr", "add", me, "dev", dev, "nodad"]);
    }
    p.right.add_tunnel(
        "geneve",
        &["remote_ip=2001:db8::1".into(), "psk=swordfish".into()],
    );
    p.left.add_tunnel(
        "geneve",
        &["remote_ip=2001:db8::2".into(), "psk=swordfish".into()],
    );
    p.both_up();
    assert_eq!((p.left.ike_sa_count(), p.right.ike_sa_count()), (1, 1));
    assert!(p.left.sas().contains("remote-host=2001:db8::2"));
    let pol = policies(&p.net.left);
    let has = |sel: &str, dir: &str| pol.iter().any(|l| l.contains(sel) && l.contains(dir));
    assert!(
        has(
            "src 2001:db8::1/128 dst 2001:db8::2/128 proto udp dport 6081 ",
            "dir out"
        ),
        "{pol:?}"
    );
    assert!(
        has(
            "src 2001:db8::2/128 dst 2001:db8::1/128 proto udp dport 6081 ",
            "dir in"
        ),
        "{pol:?}"
    );
}

#[test]
fn skb_mark_installs_drop_policies_on_the_real_ports() {
    let p = pair();
    p.left.set_global(&["ipsec_skb_mark=0/1".into()]);
    p.left.add_tunnel(
        "vxlan",
        &[
            "remote_ip=192.0.2.2".into(),
            "psk=swordfish".into(),
            "dst_port=4790".into(),
        ],
    );
    wait_for("the shunts loaded", T, || {
        p.left.conns().contains("prevent_unencrypted_udp_4790")
    });
    let pol = policies(&p.net.left);
    let drop = |sel: &str| {
        pol.iter().any(|l| {
            l.contains(sel)
                && l.contains("dir out")
                && l.contains("action block")
                && l.contains("mark 0/0x1")
        })
    };
    // Marked packets to the tunnel's real port, the default ports, and GRE never leave in clear.
    for port in ["4790", "4789", "6081"] {
        assert!(drop(&format!("proto udp dport {port} ")), "{port}: {pol:?}");
    }
    assert!(drop("proto gre "), "{pol:?}");
    assert_eq!(
        iface_key(&p.left.db, "tun", "ipsec-state").as_deref(),
        Some("down"),
        "the shunts are not the tunnel"
    );
}

#[test]
fn a_renewed_certificate_is_reloaded_without_touching_the_ike_sa() {
    let p = pair();
    make_pki(&p.pki);
    p.set_pki(&[("ca_cert", p.file("cacert.pem"))]);
    for (node, peer, peer_ip) in [
        (&p.right, "left", "192.0.2.1"),
        (&p.left, "right", "192.0.2.2"),
    ] {
        node.add_tunnel(
            "geneve",
            &[
                format!("remote_ip={peer_ip}"),
                format!("remote_name={peer}"),
            ],
        );
    }
    wait_for("the IKE_SA on the left", T, || {
        p.left.ike_sa_id("tun-1").is_some()
    });
    let before = p.left.ike_sa_id("tun-1");
    let loads = p.left.mon.log_count("load certificate");

    // Same path, new content: the left certificate re-issued by the CA (same name).
    reissue(&p.pki, "left");
    p.left.mon.appctl_ok(&["refresh"]);
    wait_for("the new certificate loaded", T, || {
        p.left.mon.log_count("load certificate") > loads
    });
    wait_for("charon got the new certificate", T, || {
        p.left
            .charon
            .log()
            .matches("loaded certificate 'CN=left'")
            .count()
            == 2
    });
    // The IKE_SA authenticated with the old certificate stays: it is still valid.
    assert_eq!(
        p.left.ike_sa_id("tun-1"),
        before,
        "the IKE_SA was torn down: {}",
        p.left.sas()
    );
    assert!(!p.left.conns().contains("tun-2"), "the tunnel was renamed");
    assert!(!p.left.mon.log().contains(UNLOAD_CONNECTION));
}

#[test]
fn drift_is_repaired_and_an_administrators_connection_is_never_touched() {
    let p = pair();
    p.left.add_tunnel(
        "gre",
        &["remote_ip=192.0.2.2".into(), "psk=swordfish".into()],
    );
    wait_for("tun-1 loaded", T, || p.left.conns().contains("{tun-1 {"));
    // An administrator loads their own connection, with a name shaped like ours.
    let conf = p.left.charon.dir.join("admin.conf");
    std::fs::write(
        &conf,
        "connections {\n  admin-7 {\n    remote_addrs = 192.0.2.9\n    children {\n      admin-7 {\n        mode = tunnel\n        remote_ts = 10.9.0.0/16\n      }\n    }\n  }\n}\n",
    )
    .unwrap();
    let out = p
        .left
        .charon
        .swanctl(&["--load-conns", "--file", conf.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // `swanctl --load-conns` replaces every connection with the file's: ours is unloaded.
    assert!(!p.left.conns().contains("{tun-1 {"));

    // The monitor lists charon's connections again on its periodic pass (every 15 s; between
    // two, it knows them from its own loads and unloads): restored within two of them.
    wait_for("tun-1 restored", 2 * T, || {
        p.left.conns().contains("{tun-1 {")
    });
    let conns = p.left.conns();
    assert!(conns.contains("{admin-7 {"), "{conns}");
    assert!(
        !p.left
            .mon
            .log()
            .contains(&format!("{UNLOAD_CONNECTION} admin-7"))
    );
}

/// Re-issues `<name>-cert.pem` in `dir` from the same key and CA: same name, new content.
fn reissue(dir: &Path, name: &str) {
    let tmp = dir.join(format!("{name}-new.pem"));
    let key = dir.join(format!("{name}-privkey.pem"));
    let (ca, ca_key) = (dir.join("cacert.pem"), dir.join("ca-key.pem"));
    common::pki::issue_by(&ca, &ca_key, name, &key, &tmp);
    std::fs::rename(&tmp, dir.join(format!("{name}-cert.pem"))).unwrap();
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// Issue 22 in VICI mode: a connection charon lost (`swanctl --unload-conn`) is loaded again
/// within 20 s (the periodic pass lists charon's connections), and the established IKE_SA of
/// another tunnel, to another peer address, keeps its unique id.
#[test]
fn a_lost_connection_is_back_within_20_s_and_another_ike_sa_is_untouched() {
    let p = pair();
    for (ns, dev, addr) in [
        (&p.net.left, "v0", "192.0.2.11/24"),
        (&p.net.right, "v1", "192.0.2.12/24"),
    ] {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
    }
    for (node, peer, me, peer2) in [
        (&p.right, "192.0.2.1", "192.0.2.12", "192.0.2.11"),
        (&p.left, "192.0.2.2", "192.0.2.11", "192.0.2.12"),
    ] {
        node.add_tunnel(
            "gre",
            &[format!("remote_ip={peer}"), "psk=swordfish".into()],
        );
        node.add_iface(
            "t2",
            "gre",
            &[
                format!("remote_ip={peer2}"),
                format!("local_ip={me}"),
                "psk=marlin".into(),
            ],
        );
    }
    wait_for("both IKE_SAs on the left", T, || {
        p.left.ike_sa_id("tun-1").is_some() && p.left.ike_sa_id("t2-1").is_some()
    });
    let id = p.left.ike_sa_id("tun-1");
    p.left.charon.unload_conn("t2-1");
    let lost = std::time::Instant::now();
    assert!(!p.left.conns().contains("{t2-1 {"));
    wait_for("t2-1 loaded again", 2 * T, || {
        p.left.conns().contains("{t2-1 {")
    });
    let took = lost.elapsed();
    println!("VICI with charon: t2-1 restored after {took:?}");
    assert!(took < T, "took {took:?}:\n{}", p.left.mon.log());
    assert_eq!(p.left.ike_sa_id("tun-1"), id, "tun's IKE_SA untouched");
}
