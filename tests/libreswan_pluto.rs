//! Our monitor against real pluto, Libreswan 4.10 and 5 (unpacked in /opt/lsw and /opt/lsw5
//! by tests/deps/libreswan.sh), one per network namespace, each with its own ovsdb-server, in
//! the three authentication modes. The IKE SA must establish; on a kernel with ESP the Child
//! SAs install and the tunnel is up, on one without (this project's build machine) the Child
//! SA fails and the monitor must say so (negotiating, with the reason) without crashing
//! (tests/common/kernel.rs probes which). In the certificate modes the NSS database pluto
//! reads is filled by our monitor alone.

mod common;

use common::kernel;
use common::libreswan::{REAL_IPSEC, REAL_IPSEC_V5};
use common::libreswan_pair::{
    AUTHENTICATED, Pair, SIDES, T, ca_signed_tunnel, make_self_signed, other, self_signed_tunnel,
};
use common::monitor::{iface_key, wait_for};
use common::ovsdb_server::tunnel_port_args;

#[test]
fn v4_psk_tunnels_establish_ike_after_one_batched_initiate() {
    psk_tunnels(Pair::start("lsw4p", REAL_IPSEC));
}

#[test]
fn v5_psk_tunnels_establish_ike_after_one_batched_initiate() {
    psk_tunnels(Pair::start("lsw5p", REAL_IPSEC_V5));
}

#[test]
fn v4_self_signed_certificates_establish_ike_from_an_nss_database_we_filled() {
    self_signed_certificates(REAL_IPSEC, "lsw4s");
}

#[test]
fn v5_self_signed_certificates_establish_ike_from_an_nss_database_we_filled() {
    self_signed_certificates(REAL_IPSEC_V5, "lsw5s");
}

#[test]
fn v4_ca_signed_certificates_establish_ike_from_an_nss_database_we_filled() {
    ca_signed_certificates(REAL_IPSEC, "lsw4c");
}

#[test]
fn v5_ca_signed_certificates_establish_ike_from_an_nss_database_we_filled() {
    ca_signed_certificates(REAL_IPSEC_V5, "lsw5c");
}

#[test]
fn v4_switch_from_self_signed_to_ca_on_the_same_nss_database_establishes_ike() {
    self_signed_then_ca(REAL_IPSEC, "lsw4x");
}

#[test]
fn v5_switch_from_self_signed_to_ca_on_the_same_nss_database_establishes_ike() {
    self_signed_then_ca(REAL_IPSEC_V5, "lsw5x");
}

#[test]
fn v4_peer_certificate_removed_and_added_back_loads_again() {
    peer_certificate_back(REAL_IPSEC, "lsw4b");
}

#[test]
fn v5_peer_certificate_removed_and_added_back_loads_again() {
    peer_certificate_back(REAL_IPSEC_V5, "lsw5b");
}

#[test]
fn v4_peer_certificate_deleted_by_hand_fails_with_a_reason() {
    peer_certificate_deleted_by_hand(REAL_IPSEC, "lsw4h", "see pluto's log");
}

#[test]
fn v5_peer_certificate_deleted_by_hand_fails_with_a_reason() {
    peer_certificate_deleted_by_hand(REAL_IPSEC_V5, "lsw5h", "pubkey could not be loaded");
}

fn psk_tunnels(pair: Pair) {
    // Both tunnels in one transaction: the first pass starts both outbound conns at once.
    pair.vsctl(|_, peer| {
        let opts = [format!("remote_ip={peer}"), "psk=swordfish".to_owned()];
        let mut v = tunnel_port_args("tun", "vxlan", &opts);
        v.push("--".into());
        v.extend(tunnel_port_args("gnv", "geneve", &opts));
        v
    });
    pair.wait_ike(4);
    // Both tunnels share the one IKE SA pluto negotiates with the peer.
    pair.wait_outcome("tun");
    pair.wait_outcome("gnv");
    // diagnose reads pluto's status: conns loaded and the IKE SA up; the Child SA and the
    // kernel SAs are there only where the kernel has ESP.
    for m in &pair.monitors {
        let text = m.appctl_ok(&["diagnose", "tun"]);
        let child_sa = match kernel::has_esp() {
            true => !text.contains("child-sa-missing") && !text.contains("sa-missing"),
            false => text.contains("error child-sa-missing: tun-in-1"),
        };
        assert!(
            text.contains("ok   connections  loaded: tun-in-1, tun-out-1")
                && text.contains("ok   IKE SA       established")
                && child_sa
                && !text.contains("swordfish"),
            "{text}"
        );
    }
    for (p, m) in pair.plutos.iter().zip(&pair.monitors) {
        let show = m.appctl_ok(&["tunnels/show"]);
        assert!(
            show.contains("tun-out-1") && show.contains("gnv-out-1"),
            "{show}"
        );
        // One whack initiated both outbound conns, through their start alias.
        let calls = p.calls();
        let first = calls.iter().find(|c| c.contains("--initiate"));
        assert!(
            first.is_some_and(|c| c.contains("--name ovs-monitor-ipsec:start:")),
            "{calls:#?}"
        );
        for conn in ["tun-out-1", "gnv-out-1"] {
            wait_for(&format!("pluto to initiate {conn}"), T, || {
                p.log().lines().any(|l| {
                    l.contains(&format!("\"{conn}\""))
                        && (l.contains("initiating") || l.contains("queue Child SA"))
                })
            });
            assert!(
                m.log()
                    .contains(&format!("Starting ipsec connection {conn}"))
            );
        }
    }
    // The PSK reached pluto hex-encoded and was accepted: the IKE SA authenticated with it.
    let secrets = std::fs::read_to_string(pair.plutos[0].root.join("etc/ipsec.secrets")).unwrap();
    assert!(secrets.contains("PSK 0x"), "{secrets}");
    pair.wait_pluto_log("authenticated peer using authby=secret");
}

fn self_signed_certificates(ipsec: &'static str, prefix: &str) {
    let pki = tempfile::tempdir().unwrap();
    make_self_signed(pki.path());
    let pair = Pair::start(prefix, ipsec);
    pair.vsctl(|side, peer| self_signed_tunnel(pki.path(), side, peer));
    pair.wait_ike(2);
    pair.wait_outcome("tun");
    for (p, (side, _)) in pair.plutos.iter().zip(SIDES) {
        let nicks = p.nss_nicknames();
        assert!(
            nicks.contains(&format!("ovs_certkey_{side}"))
                && nicks.contains(&format!("ovs_cert_{}", other(side))),
            "{nicks}"
        );
    }
    pair.wait_pluto_log(AUTHENTICATED);
}

fn ca_signed_certificates(ipsec: &'static str, prefix: &str) {
    let pki = tempfile::tempdir().unwrap();
    common::strongswan_netns::make_pki(pki.path());
    let pair = Pair::start(prefix, ipsec);
    pair.vsctl(|side, peer| ca_signed_tunnel(pki.path(), side, peer));
    pair.wait_ike(2);
    pair.wait_outcome("tun");
    for (p, (side, _)) in pair.plutos.iter().zip(SIDES) {
        let nicks = p.nss_nicknames();
        assert!(
            nicks.contains(&format!("ovs_certkey_{side}")) && nicks.contains("ovs-ca-"),
            "{nicks}"
        );
    }
    pair.wait_pluto_log(AUTHENTICATED);
}

/// The upgrade path of the QEMU tier's nodes: the same CNs first with self-signed
/// certificates, then, on the same plutos and NSS databases, signed by a CA (the tunnel
/// removed, the PKI switched, the tunnel added again, as an operator would). pluto keeps
/// the root CAs it found in NSS in a cache (the self-signed certificates, CA:TRUE as
/// openssl makes them); unless the monitor makes it drop that cache, the new CA is not
/// among them and every authentication fails with SEC_ERROR_UNTRUSTED_ISSUER.
fn self_signed_then_ca(ipsec: &'static str, prefix: &str) {
    let (_self_pki, pair) = Pair::self_signed_up(prefix, ipsec);
    let ca_pki = tempfile::tempdir().unwrap();
    common::strongswan_netns::make_pki(ca_pki.path());

    let marks = pair.remove_tunnel();
    pair.vsctl(|side, peer| {
        let mut v: Vec<String> = ["remove", "Open_vSwitch", ".", "other_config"]
            .map(String::from)
            .to_vec();
        v.extend(["certificate", "private_key", "ca_cert"].map(String::from));
        v.push("--".into());
        v.extend(ca_signed_tunnel(ca_pki.path(), side, peer));
        v
    });
    pair.wait_authenticated_since(&marks, "with the CA-signed certificates");
    pair.wait_outcome("tun");
}

/// `del-port` then the same port again while pluto runs (an operator recreating a tunnel):
/// the peer's self-signed certificate leaves pluto's conns and comes back with the same
/// DER. The conns must load again and the IKE SA establish (found by the QEMU tier:
/// "NSS: could not extract CKAID from RSA certificate 'ovs_cert_right'" on every addconn).
fn peer_certificate_back(ipsec: &'static str, prefix: &str) {
    let (pki, pair) = Pair::self_signed_up(prefix, ipsec);

    let marks = pair.remove_tunnel();
    pair.vsctl(|side, peer| self_signed_tunnel(pki.path(), side, peer));
    pair.wait_authenticated_since(&marks, "after the certificate came back");
    pair.wait_outcome("tun");
}

/// What the monitor cannot prevent: an admin deletes the peer's certificate the monitor
/// kept (`certutil -D`) while pluto runs, then the tunnel comes back. pluto's stale copy
/// makes the conns fail to load; the monitor must report why, in pluto's words where pluto
/// prints them (5.x; 4.10's addconn prints nothing).
fn peer_certificate_deleted_by_hand(ipsec: &'static str, prefix: &str, why: &str) {
    let (pki, pair) = Pair::self_signed_up(prefix, ipsec);
    pair.vsctl(|_, _| ["del-port", "tun"].map(String::from).to_vec());
    for ((p, m), (side, _)) in pair.plutos.iter().zip(&pair.monitors).zip(SIDES) {
        let nick = format!("ovs_cert_{}", other(side));
        m.wait_log_for(&format!("Keeping unused certificate {nick}"), T);
        assert!(p.nss_nicknames().contains(&nick));
        let db = format!("sql:{}", p.root.join("etc/ipsec.d").display());
        let out = std::process::Command::new("certutil")
            .args(["-D", "-d", &db, "-n", &nick])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    pair.vsctl(|side, peer| self_signed_tunnel(pki.path(), side, peer));
    for db in &pair.dbs {
        wait_for("ipsec-error with pluto's reason", T, || {
            iface_key(db, "tun", "ipsec-error")
                .is_some_and(|e| e.contains("cannot load connection tun-") && e.contains(why))
        });
    }
}
