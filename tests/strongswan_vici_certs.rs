//! Certificate lifecycle against REAL charons in VICI mode (network namespaces, one charon,
//! ovsdb-server and monitor per node): a CA bundle trusts every member, and renewed
//! certificates — in place or at new paths, with the same key or with a new one — are loaded
//! into the running charon without touching the established IKE_SA; a forced
//! re-authentication then uses them.
//!
//! This kernel has no esp4, so the CHILD_SAs cannot install here and their SPIs cannot be
//! compared: the QEMU tier (tests/e2e) proves the Child SA survives. Here the proof is the
//! IKE_SA's unique id, unchanged while credentials are loaded, and the peer's log naming the
//! CA that vouched for the new certificate at the re-authentication.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::monitor::{iface_key, wait_for};
use common::netns::NetnsPair;
use common::pki::{break_bundle, bundle, issue, make_ca, replace};
use common::vici::{Node, require_strongswan};

const T: Duration = Duration::from_secs(45);

/// Times charon's log says CA `ca` vouched for a peer.
fn trusted_by(node: &Node, ca: &str) -> usize {
    node.charon
        .log()
        .matches(&format!("using trusted ca certificate \"CN={ca}\""))
        .count()
}

/// Certificates with subject `CN=<cn>` that `node`'s charon holds.
fn certs_of(node: &Node, cn: &str) -> usize {
    (node.charon.swanctl_out(&["--list-certs"]))
        .matches(&format!("\"CN={cn}\""))
        .count()
}

/// The authorities this monitor loaded into `node`'s charon.
fn authorities(node: &Node) -> Vec<String> {
    let out = node.charon.swanctl_out(&["--list-authorities"]);
    out.lines()
        .filter(|l| l.starts_with("ovs-ca-"))
        .map(|l| l.trim_end_matches(':').to_owned())
        .collect()
}

/// Re-authenticates IKE_SA `ike` from `node` and waits until it is up again on both
/// nodes with `peer_ca` having vouched for the peer once more on `node`. (Without ESP the
/// IKE_SA has no CHILD_SA to recreate, so charon closes it and the monitor starts a new one.)
fn reauth(node: &Node, ike: &str, peer: &Node, peer_ca: &str) {
    let before = trusted_by(node, peer_ca);
    let out = node.charon.swanctl(&["--rekey", "--ike", ike, "--reauth"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(&format!("re-authentication trusting {peer_ca}"), T, || {
        trusted_by(node, peer_ca) > before && node.ike_established() && peer.ike_established()
    });
}

/// Two nodes whose certificates CA1 issued (`pki/<host>-cert.pem`, `pki/<host>-key.pem`), each
/// trusting its bundle `pki/<host>-ca.pem`, with a geneve tunnel authenticated by the CA
/// (`remote_name`) established between them. Fields drop in order: nodes, namespaces, files.
struct Pair {
    left: Node,
    right: Node,
    _net: NetnsPair,
    tmp: tempfile::TempDir,
}

impl Pair {
    /// The bundles list the CAs named (`ca1`, `ca2`), in that order.
    fn start(tag: &str, left_cas: &[&str], right_cas: &[&str]) -> Self {
        let net = NetnsPair::new(tag);
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        make_ca(&pki, "ca1");
        make_ca(&pki, "ca2");
        let p = |f: &str| pki.join(f);
        for (host, cas) in [("left", left_cas), ("right", right_cas)] {
            let key = p(&format!("{host}-key.pem"));
            issue(&pki, "ca1", host, &key, &p(&format!("{host}-cert.pem")));
            let members: Vec<_> = cas.iter().map(|ca| p(&format!("{ca}.pem"))).collect();
            let members: Vec<&Path> = members.iter().map(PathBuf::as_path).collect();
            bundle(&p(&format!("{host}-ca.pem")), &members);
        }
        let left = Node::start(&net.left, &tmp.path().join("left"));
        let right = Node::start(&net.right, &tmp.path().join("right"));
        for (node, me, peer, peer_ip) in [
            (&left, "left", "right", "192.0.2.2"),
            (&right, "right", "left", "192.0.2.1"),
        ] {
            node.set_global(&[
                format!("certificate={}", p(&format!("{me}-cert.pem")).display()),
                format!("private_key={}", p(&format!("{me}-key.pem")).display()),
                format!("ca_cert={}", p(&format!("{me}-ca.pem")).display()),
            ]);
            node.add_tunnel(
                "geneve",
                &[
                    format!("remote_ip={peer_ip}"),
                    format!("remote_name={peer}"),
                ],
            );
        }
        wait_for("IKE_SA established", T, || {
            left.ike_established() && right.ike_established()
        });
        Self {
            left,
            right,
            _net: net,
            tmp,
        }
    }

    /// A file of the PKI directory (`ca1.pem`, `ca1.key`, `left-cert.pem`...).
    fn p(&self, f: &str) -> PathBuf {
        self.tmp.path().join("pki").join(f)
    }
}

#[test]
fn ca_bundle_members_are_all_trusted_and_renewed_certificates_load_without_teardown() {
    require_strongswan();
    // CA2 first: a daemon that read only a bundle's first member would reject CA1's
    // certificates.
    let pair = Pair::start("vcrt", &["ca2", "ca1"], &["ca2", "ca1"]);
    let (left, right) = (&pair.left, &pair.right);
    let pki = pair.p("");
    let p = |f: &str| pair.p(f);
    assert!(trusted_by(left, "ca1") >= 1 && trusted_by(left, "ca2") == 0);
    let both = authorities(left);
    assert_eq!(both.len(), 2, "{both:?}");

    // Right renewed by CA2, same key, written in place: loaded without touching the IKE_SA.
    let ike = left.ike_sa_id("tun-1").expect("left IKE_SA");
    let rike = right.ike_sa_id("tun-1").expect("right IKE_SA");
    let before = certs_of(right, "right");
    let renewed = p("right-cert.new");
    issue(&pki, "ca2", "right", &p("right-key.pem"), &renewed);
    replace(&p("right-cert.pem"), &std::fs::read(&renewed).unwrap());
    wait_for("the renewed certificate in right's charon", T, || {
        certs_of(right, "right") > before
    });
    assert_eq!(right.ike_sa_id("tun-1").as_deref(), Some(rike.as_str()));
    assert_eq!(left.ike_sa_id("tun-1").as_deref(), Some(ike.as_str()));
    assert_eq!((left.ike_sa_count(), right.ike_sa_count()), (1, 1));
    // The next authentication uses it: left now trusts right through CA2.
    reauth(right, "tun-1", left, "ca1");
    wait_for("left vouched for right through CA2", T, || {
        trusted_by(left, "ca2") >= 1
    });

    // Left renewed by CA2 with a new key, both files replaced in place.
    let (cert2, key2) = (p("left-cert.new"), p("left-key.new"));
    issue(&pki, "ca2", "left", &key2, &cert2);
    let rike = right.ike_sa_id("tun-1").expect("right IKE_SA");
    let before = trusted_by(right, "ca2");
    replace(&p("left-key.pem"), &std::fs::read(&key2).unwrap());
    replace(&p("left-cert.pem"), &std::fs::read(&cert2).unwrap());
    wait_for("the new certificate in left's charon", T, || {
        certs_of(left, "left") >= 2
    });
    assert_eq!(right.ike_sa_id("tun-1").as_deref(), Some(rike.as_str()));
    assert_eq!(trusted_by(right, "ca2"), before);
    // The new key file was written 0644: named in a warning, its content nowhere in the log.
    left.mon
        .assert_exposed_key_warned_not_logged(&p("left-key.pem"));
    reauth(left, "tun-1", right, "ca2");
    wait_for("right vouched for left through CA2", T, || {
        trusted_by(right, "ca2") > before
    });

    // Left renewed by CA1 at NEW paths, the key copied as is (same key, same id in charon):
    // the tunnel keeps its version, so the connection keeps its name and charon its IKE_SA;
    // the next authentication presents the new certificate (right trusts it through CA1).
    let (cert3, key3) = (p("left-cert-2027.pem"), p("left-key-2027.pem"));
    std::fs::copy(p("left-key.pem"), &key3).unwrap();
    issue(&pki, "ca1", "left", &key3, &cert3);
    let (ike, rike) = (
        left.ike_sa_id("tun-1").expect("left IKE_SA"),
        right.ike_sa_id("tun-1").expect("right IKE_SA"),
    );
    let loaded = certs_of(left, "left");
    left.set_global(&[
        format!("certificate={}", cert3.display()),
        format!("private_key={}", key3.display()),
    ]);
    left.mon.wait_log("credential files moved, keeping version");
    wait_for(
        "the certificate at its new path in left's charon",
        T,
        || {
            left.mon.appctl_ok(&["refresh"]);
            certs_of(left, "left") > loaded
        },
    );
    assert_eq!(left.ike_sa_id("tun-1").as_deref(), Some(ike.as_str()));
    assert_eq!(right.ike_sa_id("tun-1").as_deref(), Some(rike.as_str()));
    assert!(
        !left.mon.log().contains("unload connection"),
        "{}",
        left.mon.log()
    );
    let before = trusted_by(right, "ca1");
    reauth(left, "tun-1", right, "ca2");
    wait_for("right vouched for left through CA1", T, || {
        trusted_by(right, "ca1") > before
    });
    // Renewed in place at its new path (by CA2 again, for the CA steps below).
    let cert4 = p("left-cert-2027.new");
    issue(&pki, "ca2", "left", &key3, &cert4);
    let loaded = certs_of(left, "left");
    let before = trusted_by(right, "ca2");
    replace(&cert3, &std::fs::read(&cert4).unwrap());
    wait_for(
        "the certificate renewed at its new path in left's charon",
        T,
        || {
            left.mon.appctl_ok(&["refresh"]);
            certs_of(left, "left") > loaded
        },
    );
    reauth(left, "tun-1", right, "ca2");
    wait_for("right vouched for left through CA2", T, || {
        trusted_by(right, "ca2") > before
    });

    // Both drop CA1: only its authority goes, CA2's stays as it was.
    let ike = left.ike_sa_id("tun-1").expect("left IKE_SA");
    for host in ["left", "right"] {
        bundle(&p(&format!("{host}-ca.pem")), &[&p("ca2.pem")]);
    }
    wait_for("CA1 unloaded", T, || authorities(left).len() == 1);
    let kept = authorities(left);
    assert!(both.contains(&kept[0]), "{kept:?} not among {both:?}");
    assert_eq!(left.ike_sa_id("tun-1").as_deref(), Some(ike.as_str()));
    reauth(right, "tun-1", left, "ca2");

    // A malformed bundle makes the tunnel invalid, naming the file and the member; the
    // other node's bundle is untouched, and the fixed file brings the tunnel back without an
    // OVSDB change.
    let reason = break_bundle(&p("left-ca.pem"));
    wait_for("the tunnel invalid", T, || {
        iface_key(&left.db, "tun", "ipsec-state").as_deref() == Some("invalid")
    });
    assert_eq!(iface_key(&left.db, "tun", "ipsec-error"), Some(reason));
    assert_eq!(authorities(right), kept);
    bundle(&p("left-ca.pem"), &[&p("ca2.pem")]);
    wait_for("the tunnel back with the fixed bundle", T, || {
        left.ike_established() && right.ike_established()
    });
    assert_eq!(authorities(left), kept);
}

/// Authorities an earlier run of the monitor left in charon (it was killed: no clean-up).
/// The restarted monitor adopts them: a member its bundle still lists is kept as it is (not
/// loaded again), one the bundle no longer lists is unloaded; the IKE_SA is untouched. Then
/// the bundle moves to a new path: its member, already in charon, is claimed for the new path
/// and kept when the old path is dropped (never unloaded and loaded again), and the tunnel
/// keeps its version and IKE_SA.
#[test]
fn authorities_already_in_charon_are_claimed_and_those_no_bundle_lists_are_unloaded() {
    require_strongswan();
    let mut pair = Pair::start("vadp", &["ca1", "ca2"], &["ca1"]);
    let pki = pair.p("");
    let p = |f: &str| pki.join(f);
    let ca1 = p("ca1.pem");
    let Pair { left, right, .. } = &mut pair;
    assert_eq!(authorities(left).len(), 2);
    // Right trusts CA1 only: its one authority is CA1's (the name is the member's digest).
    let ca1_only = authorities(right);
    assert_eq!(ca1_only.len(), 1);
    let ike = left.ike_sa_id("tun-1").expect("left IKE_SA");

    left.restart_monitor(|| bundle(&p("left-ca.pem"), &[&ca1]));
    wait_for("CA2's authority unloaded", T, || {
        authorities(left) == ca1_only
    });
    left.mon.wait_log(&format!(
        "is in charon already as {}: not loaded again",
        ca1_only[0]
    ));
    assert_eq!(left.ike_sa_id("tun-1").as_deref(), Some(ike.as_str()));
    // CA1 still vouches for right.
    reauth(left, "tun-1", right, "ca1");

    let ike = left.ike_sa_id("tun-1").expect("left IKE_SA");
    let moved = p("left-ca-moved.pem");
    bundle(&moved, &[&ca1]);
    left.set_global(&[format!("ca_cert={}", moved.display())]);
    left.mon.wait_log(&format!(
        "of {} is in charon already as {}: not loaded again",
        moved.display(),
        ca1_only[0]
    ));
    // The bundle's members are loaded by content: the tunnel keeps its version (`tun-1`)
    // and its IKE_SA.
    left.mon.wait_log("credential files moved, keeping version");
    assert_eq!(left.ike_sa_id("tun-1").as_deref(), Some(ike.as_str()));
    assert_eq!(authorities(left), ca1_only);
    reauth(left, "tun-1", right, "ca1");
}
