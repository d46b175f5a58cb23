//! Certificate lifecycle against REAL charons in strongSwan legacy (stroke) mode: two network
//! namespaces, each with its own ovsdb-server, our monitor and the charon it restarts. A CA
//! bundle trusts every member (charon's `cacert=` reads only a file's first certificate, so
//! the monitor writes one `ca` section and file per member); renewed certificates and keys,
//! written in place or at new paths, reach the running charon without touching the
//! established IKE_SA or renaming the conns; a
//! malformed bundle or a key of another certificate makes the tunnel `invalid`.
//!
//! The proof is the IKE_SA's unique id and, where the kernel has ESP (the QEMU tier's cargo
//! run, `tests/e2e/run.sh --cargo-tier strongswan_stroke_certs`), the Child SAs' SPIs,
//! unchanged while credentials are reloaded; and the peer's log naming the CA that vouched
//! for the new certificate at the next authentication (the IKE_SA taken down with
//! `ipsec down` and initiated again: stroke has no re-auth command).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::kernel;
use common::monitor::{iface_key, wait_for};
use common::netns::NetnsPair;
use common::pki::{break_bundle, bundle, issue, replace, traditional, two_hosts_trusting_both_cas};
use common::strongswan_netns::Node;

const T: Duration = Duration::from_secs(45);

/// Times charon's log says CA `ca` vouched for a peer.
fn trusted_by(node: &Node, ca: &str) -> usize {
    node.charon_log()
        .matches(&format!("using trusted ca certificate \"CN={ca}\""))
        .count()
}

/// The CA certificates charon holds (their subjects), from `ipsec listcacerts`.
fn cacerts(node: &Node) -> Vec<String> {
    let mut out: Vec<String> = node
        .ipsec("listcacerts")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("subject:"))
        .map(|s| s.trim().trim_matches('"').to_owned())
        .collect();
    out.sort();
    out
}

/// The established IKE_SAs, by name and unique id (`gnv-out-1[3]`).
fn ike_sas(node: &Node) -> Vec<String> {
    node.ipsec("statusall")
        .lines()
        .filter(|l| l.contains(": ESTABLISHED"))
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_owned())
        .collect()
}

/// What must survive a credential reload: the established IKE_SAs and, on a kernel with ESP,
/// the Child SAs' SPIs.
fn sas(node: &Node) -> (Vec<String>, Vec<String>) {
    let mut spis: Vec<String> = NetnsPair::xfrm_sas(&node.ns)
        .iter()
        .filter(|sa| sa.contains(" proto esp "))
        .filter_map(|sa| {
            sa.split(" spi ")
                .nth(1)?
                .split(' ')
                .next()
                .map(str::to_owned)
        })
        .collect();
    spis.sort();
    (ike_sas(node), spis)
}

/// Sends a datagram from `node` to both addresses: the one to the peer hits the trap policy,
/// the one to itself stays local. Only one side pokes: two initiating at once would make two
/// IKE_SAs.
fn poke(node: &Node) {
    for ip in ["192.0.2.1", "192.0.2.2"] {
        node.poke_udp(ip, 6081);
    }
}

/// Pokes from `a` until `done`; on timeout the panic shows both charons' logs.
fn poke_until(a: &Node, b: &Node, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < T,
            "timed out waiting for {what}\n{} charon:\n{}\n{} charon:\n{}",
            a.ns,
            a.charon_log(),
            b.ns,
            b.charon_log(),
        );
        poke(a);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends traffic into the trap policies until both nodes hold the IKE_SA.
fn wait_ike(left: &Node, right: &Node, what: &str) {
    poke_until(left, right, what, || {
        ike_sas(left).len() == 1 && ike_sas(right).len() == 1
    });
}

/// The tunnel's outbound connection: its name carries the tunnel's published version.
fn out_conn(node: &Node) -> String {
    let version = iface_key(&node.db, "gnv", "ipsec-version").expect("ipsec-version");
    format!("gnv-out-{version}")
}

/// Initiates the tunnel's connection from `node` without waiting (`stroke up-nb`): after a
/// failed CHILD_SA the kernel's acquire for the trap policy blocks new ones for 30 s.
fn up(node: &Node) {
    let out = Command::new("nsenter")
        .args(["-t", &node.mon.pid().to_string(), "-m", "-n"])
        .args(["/usr/lib/ipsec/stroke", "up-nb", &out_conn(node)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Takes `node`'s IKE_SA down and waits until a new one is up with `peer_ca` having vouched
/// for `node` on `peer` once more.
fn reauth(node: &Node, peer: &Node, peer_ca: &str) {
    let before = trusted_by(peer, peer_ca);
    let old = ike_sas(node);
    node.ipsec(&format!("down '{}'", old[0]));
    up(node);
    let what = format!("a new authentication trusting {peer_ca}");
    poke_until(node, peer, &what, || {
        trusted_by(peer, peer_ca) > before && ike_sas(node).len() == 1 && ike_sas(node) != old
    });
}

fn set_pki(node: &Node, cert: &Path, key: &Path, ca: &Path) {
    node.db.vsctl(&[
        "set",
        "Open_vSwitch",
        ".",
        &format!("other_config:certificate={}", cert.display()),
        &format!("other_config:private_key={}", key.display()),
        &format!("other_config:ca_cert={}", ca.display()),
    ]);
}

/// The certificate-reload passes `node`'s monitor logged.
fn reloads(node: &Node) -> usize {
    node.mon
        .log_count("reloading StrongSwan credentials and connections")
}

#[test]
fn stroke_trusts_every_bundle_member_and_loads_renewed_certificates_without_teardown() {
    let net = NetnsPair::new("scrt");
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path();
    let ca2 = two_hosts_trusting_both_cas(pki);
    let p = |f: &str| pki.join(f);
    let left = Node::start(&net.left);
    let right = Node::start(&net.right);
    for (node, me, peer, peer_ip) in [
        (&left, "left", "right", "192.0.2.2"),
        (&right, "right", "left", "192.0.2.1"),
    ] {
        set_pki(
            node,
            &p(&format!("{me}-cert.pem")),
            &p(&format!("{me}-key.pem")),
            &p(&format!("{me}-ca.pem")),
        );
        node.db.add_tunnel(
            "gnv",
            "geneve",
            &[
                format!("remote_ip={peer_ip}"),
                format!("remote_name={peer}"),
            ],
        );
    }
    wait_ike(
        &left,
        &right,
        "IKE_SA established through the bundle's second CA",
    );
    if kernel::has_esp() {
        poke_until(&left, &right, "the Child SAs", || {
            sas(&left).1.len() == 2 && sas(&right).1.len() == 2
        });
    }
    assert!(trusted_by(&left, "ca1") >= 1 && trusted_by(&left, "ca2") == 0);
    assert_eq!(cacerts(&left), ["CN=ca1", "CN=ca2"]);

    // Right renewed by CA2, same key, written in place: reloaded without touching the IKE_SA.
    let (lsa, rsa) = (sas(&left), sas(&right));
    let before = reloads(&right);
    let renewed = p("right-cert.new");
    issue(pki, "ca2", "right", &p("right-key.pem"), &renewed);
    replace(&p("right-cert.pem"), &std::fs::read(&renewed).unwrap());
    wait_for("the renewed certificate reloaded on right", T, || {
        right.mon.appctl_ok(&["refresh"]);
        reloads(&right) > before
    });
    assert_eq!((sas(&left), sas(&right)), (lsa.clone(), rsa.clone()));
    // The next authentication uses it: left now trusts right through CA2.
    reauth(&right, &left, "ca2");

    // A file touched without a change costs nothing.
    let before = (reloads(&left), left.mon.log_count("Refreshing StrongSwan"));
    let now = std::time::SystemTime::now();
    for f in ["left-cert.pem", "left-key.pem", "left-ca.pem"] {
        let file = std::fs::File::options().append(true).open(p(f)).unwrap();
        file.set_modified(now).unwrap();
    }
    left.mon.appctl_ok(&["refresh"]);
    left.mon.appctl_ok(&["refresh"]);
    assert_eq!(
        (reloads(&left), left.mon.log_count("Refreshing StrongSwan")),
        before
    );

    // Left renewed by CA2 with a new key, both files replaced in place.
    let (cert2, key2) = (p("left-cert.new"), p("left-key.new"));
    issue(pki, "ca2", "left", &key2, &cert2);
    // In SEC1, as older tools write EC keys: charon finds the type itself (`: PKCS8`).
    traditional(&key2);
    let rsa = sas(&right);
    let before = reloads(&left);
    replace(&p("left-key.pem"), &std::fs::read(&key2).unwrap());
    replace(&p("left-cert.pem"), &std::fs::read(&cert2).unwrap());
    wait_for("the new certificate and key reloaded on left", T, || {
        left.mon.appctl_ok(&["refresh"]);
        reloads(&left) > before
    });
    assert_eq!(sas(&right), rsa);
    // The new key file was written 0644: named in a warning, its content nowhere in the log.
    left.mon
        .assert_exposed_key_warned_not_logged(&p("left-key.pem"));
    reauth(&left, &right, "ca2");

    // Left renewed by CA1 at NEW paths (the key copied as is): the tunnel keeps its version,
    // so its conns keep their names and charon its IKE_SA; `ipsec update` re-adds the conns
    // with the new `leftcert=`, and the next authentication presents the new certificate.
    let (cert3, key3) = (p("left-cert-2027.pem"), p("left-key-2027.pem"));
    std::fs::copy(p("left-key.pem"), &key3).unwrap();
    issue(pki, "ca1", "left", &key3, &cert3);
    let (lsa, rsa, conn) = (sas(&left), sas(&right), out_conn(&left));
    let loaded_new = format!("loaded certificate \"CN=left\" from '{}'", cert3.display());
    set_pki(&left, &cert3, &key3, &p("left-ca.pem"));
    left.mon.wait_log("credential files moved, keeping version");
    wait_for("charon to load the certificate at its new path", T, || {
        left.mon.appctl_ok(&["refresh"]);
        left.charon_log().contains(&loaded_new)
    });
    assert_eq!(out_conn(&left), conn);
    assert_eq!((sas(&left), sas(&right)), (lsa, rsa));
    assert!(
        !left.mon.log().contains("is outdated"),
        "{}",
        left.mon.log()
    );
    // Right trusted left through CA2 so far: CA1 vouching now proves the new certificate.
    reauth(&left, &right, "ca1");
    // Renewed in place at its new path (by CA2 again, for the CA steps below): the stamps
    // follow the new path, so charon reloads it as any renewal in place.
    let before = reloads(&left);
    let cert4 = p("left-cert-2027.new");
    issue(pki, "ca2", "left", &key3, &cert4);
    let rsa = sas(&right);
    replace(&cert3, &std::fs::read(&cert4).unwrap());
    wait_for(
        "the certificate renewed at its new path reloaded",
        T,
        || {
            left.mon.appctl_ok(&["refresh"]);
            reloads(&left) > before
        },
    );
    assert_eq!((sas(&right), out_conn(&left)), (rsa, conn));
    reauth(&left, &right, "ca2");

    // Both drop CA1: only its section goes, CA2's stays, the IKE_SA stays.
    let (lsa, rsa) = (sas(&left), sas(&right));
    let ca_files = |node: &Node| {
        let mut v: Vec<String> = std::fs::read_dir(node.root.join("etc/ipsec.d/ovs-cacerts"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let both = ca_files(&left);
    assert_eq!(both.len(), 2, "{both:?}");
    for host in ["left", "right"] {
        bundle(&p(&format!("{host}-ca.pem")), &[&ca2]);
    }
    wait_for("CA1 unloaded", T, || {
        left.mon.appctl_ok(&["refresh"]);
        right.mon.appctl_ok(&["refresh"]);
        cacerts(&left) == ["CN=ca2"] && cacerts(&right) == ["CN=ca2"]
    });
    let kept = ca_files(&left);
    assert!(kept.len() == 1 && both.contains(&kept[0]), "{kept:?}");
    assert_eq!((sas(&left), sas(&right)), (lsa, rsa));
    reauth(&right, &left, "ca2");

    // A malformed bundle makes the tunnel invalid, naming the file and the member; the CAs
    // loaded stay, the other node is untouched, and the fixed file brings the tunnel back.
    let reason = break_bundle(&p("left-ca.pem"));
    wait_for("the tunnel invalid for its bundle", T, || {
        left.mon.appctl_ok(&["refresh"]);
        iface_key(&left.db, "gnv", "ipsec-state").as_deref() == Some("invalid")
    });
    assert_eq!(iface_key(&left.db, "gnv", "ipsec-error"), Some(reason));
    assert_eq!(
        (cacerts(&left), ca_files(&left)),
        (vec!["CN=ca2".into()], kept)
    );
    assert_eq!(cacerts(&right), ["CN=ca2"]);
    bundle(&p("left-ca.pem"), &[&ca2]);
    wait_for("the tunnel loaded again", T, || {
        left.mon.appctl_ok(&["refresh"]);
        iface_key(&left.db, "gnv", "ipsec-state").as_deref() != Some("invalid")
            && left
                .ipsec("statusall")
                .contains(&format!("{}{{", out_conn(&left)))
    });
    up(&left);
    wait_ike(&left, &right, "the tunnel back with the fixed bundle");

    // A key of another certificate: invalid, naming both files and nothing of the key.
    set_pki(
        &left,
        &p("left-cert.pem"),
        &p("right-key.pem"),
        &p("left-ca.pem"),
    );
    wait_for("the tunnel invalid for its key", T, || {
        iface_key(&left.db, "gnv", "ipsec-state").as_deref() == Some("invalid")
    });
    let err = iface_key(&left.db, "gnv", "ipsec-error").unwrap();
    assert_eq!(
        err,
        format!(
            "the private key '{}' does not belong to the certificate '{}' (CN=left)",
            p("right-key.pem").display(),
            p("left-cert.pem").display()
        )
    );
    let key_text = std::fs::read_to_string(p("right-key.pem")).unwrap();
    assert!(key_text.lines().skip(1).all(|l| !err.contains(l)));
}
