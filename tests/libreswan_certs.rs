//! Certificate lifecycle against REAL plutos (Libreswan 4.10 and 5, network namespaces, one
//! pluto, ovsdb-server and monitor per node): every CA of a `ca_cert` bundle is in pluto's
//! NSS database under its own nickname with CA trust, and renewed certificates — the same key
//! or a new one, written in place or at new paths (ours, and a self-signed peer's
//! `remote_cert`) — are imported by content into the running pluto without touching its SAs
//! or renaming its conns; a forced re-authentication then uses them. Every `certutil`/`pk12util`
//! call of the monitor is logged (`Pluto::start_monitor`), which proves that a changed bundle
//! touches only its changed members and an unchanged file touched costs nothing.
//!
//! Where the kernel has no ESP (this build machine) the Child SAs cannot install, and the
//! monitor replaces conns that never come up, so SAs cannot be compared across a renewal:
//! the proof is then the conns' names (a configuration change would give them a new version)
//! and the absence of any "outdated" deletion. With ESP (the QEMU tier's cargo rows) the
//! Child SAs' SPIs in `ipsec trafficstatus` and the IKE SA's serial must stay as they were.

mod common;

use std::path::{Path, PathBuf};

use common::kernel;
use common::libreswan::{Pluto, REAL_IPSEC, REAL_IPSEC_V5};
use common::libreswan_pair::{AUTHENTICATED, Pair, SIDES, T, ca_signed_tunnel, other};
use common::monitor::{iface_key, wait_for};
use common::pki::{bundle, issue, make_ca, replace, rsa_key};

#[test]
fn v4_ca_bundle_members_in_nss_and_renewed_certificates_load_without_teardown() {
    bundle_and_renewal(REAL_IPSEC, "lcrt4");
}

#[test]
fn v5_ca_bundle_members_in_nss_and_renewed_certificates_load_without_teardown() {
    bundle_and_renewal(REAL_IPSEC_V5, "lcrt5");
}

#[test]
fn v4_self_signed_certificates_renewed_at_new_paths_keep_the_conns() {
    self_signed_at_new_paths(REAL_IPSEC, "lmov4");
}

#[test]
fn v5_self_signed_certificates_renewed_at_new_paths_keep_the_conns() {
    self_signed_at_new_paths(REAL_IPSEC_V5, "lmov5");
}

/// Our CA nicknames in `p`'s NSS database, each with its trust flags.
fn ca_nicknames(p: &Pluto) -> Vec<(String, String)> {
    p.nss_nicknames()
        .lines()
        .filter(|l| l.starts_with("ovs-ca-"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.to_owned()))
        })
        .collect()
}

/// The certificate NSS holds under `nick`, as PEM.
fn nss_pem(p: &Pluto, nick: &str) -> String {
    let db = format!("sql:{}", p.root.join("etc/ipsec.d").display());
    let out = std::process::Command::new("certutil")
        .args(["-L", "-d", &db, "-a", "-n", nick])
        .output()
        .expect("certutil");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The base64 body of a PEM file, without line breaks (to compare with [`nss_pem`]).
fn body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// What must not change while credentials are renewed: the conns in the config each monitor
/// wrote (a configuration change gives them a new version) and, with ESP, the IKE SAs'
/// serials and the Child SAs' SPIs on each side.
fn sa_snapshot(pair: &Pair) -> Vec<String> {
    let mut v = Vec::new();
    for p in &pair.plutos {
        let conf = std::fs::read_to_string(p.root.join("etc/ipsec.conf")).unwrap_or_default();
        v.extend(
            conf.lines()
                .filter(|l| l.starts_with("conn tun-"))
                .map(str::to_owned),
        );
        if kernel::has_esp() {
            v.extend(p.ike_sas());
            // The Child SAs' SPIs (`esp.<SPI>@<address>` on their state lines) and serials.
            v.extend(
                p.status()
                    .split_whitespace()
                    .filter(|w| w.starts_with("esp."))
                    .map(str::to_owned),
            );
            let ts = String::from_utf8_lossy(&p.whack(&["--trafficstatus"]).stdout).into_owned();
            v.extend(
                ts.split_whitespace()
                    .filter(|w| w.starts_with('#'))
                    .map(str::to_owned),
            );
        }
    }
    v
}

/// Whether pluto's log line `l` says a peer authenticated with a certificate CA `ca` issued
/// (4.10: "issued by CA 'CN=…'", 5: "issued by 'CN=…'").
fn vouched(l: &str, ca: &str) -> bool {
    l.contains(AUTHENTICATED) && l.contains("issued by") && l.contains(&format!("'CN={ca}'"))
}

/// Deletes every IKE SA of both plutos (and their Child SAs; one left behind would carry the
/// next Child SA without an IKE_AUTH): the tunnel comes up again with a full IKE_AUTH, in which
/// each side presents its certificate as NSS holds it now. Waits until both plutos
/// authenticated their peer again, `from`'s peer vouched for by `ca` (pluto names the CA that
/// issued the peer's certificate).
fn reauthenticate(pair: &Pair, from: usize, ca: &str) {
    let marks: Vec<usize> = pair.plutos.iter().map(|p| p.log().len()).collect();
    // Without ESP the monitor replaces the conns that never come up, so a state may be gone
    // by the time it is deleted; with ESP the tunnel's IKE SA must be there to delete.
    let mut deleted = 0;
    for p in &pair.plutos {
        for serial in p.ike_sas() {
            let out = p.try_whack(&["--deletestate", serial.trim_start_matches('#')]);
            deleted += usize::from(out.status.success());
        }
    }
    assert!(deleted > 0 || !kernel::has_esp(), "no IKE SA to delete");
    pair.wait_authenticated_since(&marks, &format!("re-authenticated through {ca}"));
    let peer = &pair.plutos[1 - from];
    let since = peer
        .log()
        .get(marks[1 - from]..)
        .unwrap_or_default()
        .to_owned();
    assert!(
        since.lines().any(|l| vouched(l, ca)),
        "the peer was not vouched for by {ca}:\n{since}"
    );
    pair.wait_outcome("tun");
}

/// Runs `step` and returns the NSS calls the monitors made meanwhile, once the database of
/// every side is as `settled` wants (each monitor is asked for a pass while waiting) and each
/// monitor that changed its database has made pluto reread it.
fn nss_calls_during(
    pair: &Pair,
    step: impl FnOnce(),
    mut settled: impl FnMut() -> bool,
) -> Vec<String> {
    let marks: Vec<(usize, usize)> = pair
        .plutos
        .iter()
        .map(|p| (p.nss_calls().len(), p.calls().len()))
        .collect();
    step();
    wait_for("the NSS databases to settle", T, || {
        for m in &pair.monitors {
            m.appctl_ok(&["refresh"]);
        }
        settled()
    });
    let mut all = Vec::new();
    for (p, (nss, ipsec)) in pair.plutos.iter().zip(marks) {
        let calls = p.nss_calls().split_off(nss);
        if !changes(&calls).is_empty() {
            wait_for("pluto to reread its certificates", T, || {
                p.calls()
                    .get(ipsec..)
                    .is_some_and(|c| c.iter().any(|c| c.contains("--rereadcerts")))
            });
        }
        all.extend(calls);
    }
    all
}

/// NSS calls that are more than the listing every pass makes.
fn changes(calls: &[String]) -> Vec<&String> {
    calls
        .iter()
        .filter(|c| !c.starts_with("certutil -L -d ") || c.contains(" -n "))
        .collect()
}

fn bundle_and_renewal(ipsec: &'static str, prefix: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path();
    let p = |f: &str| pki.join(f);
    let (ca1, ca2) = (make_ca(pki, "ca1"), make_ca(pki, "ca2"));
    for (side, _) in SIDES {
        rsa_key(&p(&format!("{side}-key.pem")));
        issue(
            pki,
            "ca1",
            side,
            &p(&format!("{side}-key.pem")),
            &p(&format!("{side}-cert.pem")),
        );
    }
    // CA2 first: a monitor that imported only a bundle's first member would leave CA1's
    // certificates unverifiable.
    bundle(&p("ca-cert.pem"), &[&ca2, &ca1]);
    let pair = Pair::start(prefix, ipsec);
    pair.vsctl(|side, peer| ca_signed_tunnel(pki, side, peer));
    pair.wait_ike(2);
    pair.wait_outcome("tun");
    for (pl, (side, _)) in pair.plutos.iter().zip(SIDES) {
        let cas = ca_nicknames(pl);
        assert_eq!(cas.len(), 2, "{}", pl.nss_nicknames());
        assert!(cas.iter().all(|(_, trust)| trust == "CT,,"), "{cas:?}");
        assert!(pl.nss_nicknames().contains(&format!("ovs_certkey_{side}")));
        // The peer's certificate was verified through CA1, the bundle's second member.
        assert!(
            pl.log().lines().any(|l| vouched(l, "ca1")),
            "{side}:\n{}",
            pl.log()
        );
    }
    let both_cas = ca_nicknames(&pair.plutos[0]);

    // Right re-issued by CA2 with the same key, written in place.
    renew(&pair, pki, 1, "ca2", false);
    reauthenticate(&pair, 1, "ca2");

    // Left re-issued by CA2 with a new key, both files replaced in place (the key 0644).
    renew(&pair, pki, 0, "ca2", true);
    let left_key = p("left-key.pem");
    pair.monitors[0].wait_log(&format!(
        "private key {} is readable by group or others (mode 0644)",
        left_key.display()
    ));
    let key_text = std::fs::read_to_string(&left_key).unwrap();
    for m in &pair.monitors {
        let log = m.log();
        assert!(
            key_text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .all(|l| !log.contains(l))
        );
    }
    reauthenticate(&pair, 0, "ca2");

    // Right re-issued by CA2 with a new key, written at NEW paths: the same conns (the tunnel
    // keeps its version), the new certificate and key imported under the same nickname.
    renew_at_new_paths(&pair, pki, 1, "ca2");
    reauthenticate(&pair, 1, "ca2");

    // The bundle loses CA1: CA1's nickname is deleted, nothing else is touched.
    let before = sa_snapshot(&pair);
    let calls = nss_calls_during(
        &pair,
        || bundle(&p("ca-cert.pem"), &[&ca2]),
        || pair.plutos.iter().all(|pl| ca_nicknames(pl).len() == 1),
    );
    let kept = ca_nicknames(&pair.plutos[0]);
    assert!(
        both_cas.contains(&kept[0]),
        "{kept:?} not among {both_cas:?}"
    );
    let ca2_pem = std::fs::read_to_string(&ca2).unwrap();
    assert_eq!(body(&nss_pem(&pair.plutos[0], &kept[0].0)), body(&ca2_pem));
    let gone = &both_cas.iter().find(|c| c.0 != kept[0].0).unwrap().0;
    let changed = changes(&calls);
    assert!(
        changed.len() == 2
            && changed
                .iter()
                .all(|c| c.starts_with("certutil -D ") && c.ends_with(&format!("-n {gone}"))),
        "only {gone} deleted on each side: {changed:#?}"
    );
    assert_eq!(sa_snapshot(&pair), before);
    reauthenticate(&pair, 1, "ca2");

    // Files touched (mtime only): no NSS call beyond the listing.
    let listed: Vec<usize> = pair.plutos.iter().map(|pl| pl.nss_calls().len()).collect();
    let calls = nss_calls_during(
        &pair,
        || {
            for f in [
                "ca-cert.pem",
                "left-cert.pem",
                "left-key.pem",
                "right-cert.pem",
            ] {
                let file = std::fs::File::options().append(true).open(p(f)).unwrap();
                file.set_modified(std::time::SystemTime::now()).unwrap();
            }
        },
        // Two passes on each side after the touch (each lists the database once).
        || {
            pair.plutos
                .iter()
                .zip(&listed)
                .all(|(pl, &n)| pl.nss_calls().len() >= n + 2)
        },
    );
    assert!(
        !calls.is_empty() && changes(&calls).is_empty(),
        "{calls:#?}"
    );

    // A malformed bundle makes the CA-signed tunnels invalid (so their conns go), naming the
    // file and the member; the CAs in NSS stay as they were.
    let calls = nss_calls_during(
        &pair,
        || {
            let mut text = std::fs::read(&ca2).unwrap();
            text.extend(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
            replace(&p("ca-cert.pem"), &text);
        },
        || {
            pair.dbs
                .iter()
                .all(|db| iface_key(db, "tun", "ipsec-state").as_deref() == Some("invalid"))
        },
    );
    assert!(changes(&calls).is_empty(), "{calls:#?}");
    let err = iface_key(&pair.dbs[0], "tun", "ipsec-error").unwrap();
    assert_eq!(
        err,
        format!(
            "CA bundle '{}': member 2 is not a valid X.509 certificate",
            p("ca-cert.pem").display()
        )
    );
    assert_eq!(ca_nicknames(&pair.plutos[0]), kept);
}

/// Re-issues side `i`'s certificate by `ca` (with a new key when `new_key`), writes it in
/// place, waits until its monitor imported it into pluto's NSS and checks that no conn or SA
/// changed meanwhile.
fn renew(pair: &Pair, pki: &Path, i: usize, ca: &str, new_key: bool) {
    let side = SIDES[i].0;
    let file = |f: &str| -> PathBuf { pki.join(format!("{side}-{f}")) };
    let key = if new_key {
        rsa_key(&file("key.new"));
        file("key.new")
    } else {
        file("key.pem")
    };
    issue(pki, ca, side, &key, &file("cert.new"));
    let pem = std::fs::read_to_string(file("cert.new")).unwrap();
    let before = sa_snapshot(pair);
    let nick = format!("ovs_certkey_{side}");
    let pl = &pair.plutos[i];
    let calls = nss_calls_during(
        pair,
        || {
            if new_key {
                replace(&file("key.pem"), &std::fs::read(&key).unwrap());
            }
            replace(&file("cert.pem"), pem.as_bytes());
        },
        || body(&nss_pem(pl, &nick)) == body(&pem),
    );
    assert_imported(&calls);
    assert!(
        !changes(&calls)
            .iter()
            .any(|c| c.contains("ovs-ca-") || c.contains(&format!("ovs_certkey_{}", other(side)))),
        "only {nick} touched: {calls:#?}"
    );
    assert_nothing_replaced(pair, &before, &format!("{side} renewed by {ca}"));
}

/// The NSS calls of a renewal include a `pk12util` import.
fn assert_imported(calls: &[String]) {
    assert!(
        changes(calls).iter().any(|c| c.starts_with("pk12util -i ")),
        "{calls:#?}"
    );
}

/// No monitor replaced an outdated conn, and the SAs are those of `before`.
fn assert_nothing_replaced(pair: &Pair, before: &[String], what: &str) {
    for m in &pair.monitors {
        assert!(!m.log().contains("is outdated"), "{}", m.log());
    }
    assert_eq!(sa_snapshot(pair), before, "{what}");
}

/// Re-issues side `i`'s certificate by `ca` with a new key, both at new paths set in OVSDB,
/// waits until its monitor imported them into pluto's NSS under the same nickname and checks
/// that no conn or SA changed meanwhile.
fn renew_at_new_paths(pair: &Pair, pki: &Path, i: usize, ca: &str) {
    let side = SIDES[i].0;
    let (cert, key) = (
        pki.join(format!("{side}-cert-2027.pem")),
        pki.join(format!("{side}-key-2027.pem")),
    );
    rsa_key(&key);
    issue(pki, ca, side, &key, &cert);
    let pem = std::fs::read_to_string(&cert).unwrap();
    let before = sa_snapshot(pair);
    let nick = format!("ovs_certkey_{side}");
    let pl = &pair.plutos[i];
    let calls = nss_calls_during(
        pair,
        || {
            pair.dbs[i].vsctl(&[
                "set",
                "Open_vSwitch",
                ".",
                &format!("other_config:certificate={}", cert.display()),
                &format!("other_config:private_key={}", key.display()),
            ]);
        },
        || body(&nss_pem(pl, &nick)) == body(&pem),
    );
    assert_imported(&calls);
    pair.monitors[i].wait_log("credential files moved, keeping version");
    assert_nothing_replaced(
        pair,
        &before,
        &format!("{side} renewed by {ca} at new paths"),
    );
}

/// Self-signed peers: right's certificate renewed (same key) and written at a new path,
/// right's `certificate` and left's `remote_cert` pointed at it. Both monitors import it by
/// content under the nicknames they had (ours with its key on right, the peer's on left), no
/// conn is renamed, and a fresh IKE_AUTH authenticates with it.
fn self_signed_at_new_paths(ipsec: &'static str, prefix: &str) {
    let (tmp, pair) = Pair::self_signed_up(prefix, ipsec);
    let pki = tmp.path();
    pair.wait_outcome("tun");
    // A new self-signed certificate for right, on its key, at a new path.
    let renewed = pki.join("2027");
    std::fs::create_dir_all(&renewed).unwrap();
    std::fs::copy(
        pki.join("right-privkey.pem"),
        renewed.join("right-privkey.pem"),
    )
    .unwrap();
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-days", "3", "-subj", "/CN=right", "-key"])
        .arg(renewed.join("right-privkey.pem"))
        .arg("-out")
        .arg(renewed.join("right-cert.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let new_cert = renewed.join("right-cert.pem");
    let pem = std::fs::read_to_string(&new_cert).unwrap();
    assert_ne!(
        body(&pem),
        body(&std::fs::read_to_string(pki.join("right-cert.pem")).unwrap())
    );
    let before = sa_snapshot(&pair);
    let (left, right) = (&pair.plutos[0], &pair.plutos[1]);
    let calls = nss_calls_during(
        &pair,
        || {
            pair.dbs[1].vsctl(&[
                "set",
                "Open_vSwitch",
                ".",
                &format!("other_config:certificate={}", new_cert.display()),
            ]);
            pair.dbs[0].vsctl(&[
                "set",
                "Interface",
                "tun",
                &format!("options:remote_cert={}", new_cert.display()),
            ]);
        },
        || {
            body(&nss_pem(right, "ovs_certkey_right")) == body(&pem)
                && body(&nss_pem(left, "ovs_cert_right")) == body(&pem)
        },
    );
    assert!(!changes(&calls).is_empty(), "{calls:#?}");
    for m in &pair.monitors {
        m.wait_log("credential files moved, keeping version");
        assert!(!m.log().contains("is outdated"), "{}", m.log());
    }
    assert_eq!(sa_snapshot(&pair), before);
    // A full IKE_AUTH with the new certificate on both sides.
    let marks: Vec<usize> = pair.plutos.iter().map(|p| p.log().len()).collect();
    for p in &pair.plutos {
        for serial in p.ike_sas() {
            p.try_whack(&["--deletestate", serial.trim_start_matches('#')]);
        }
    }
    pair.wait_authenticated_since(&marks, "with right's certificate from its new path");
    pair.wait_outcome("tun");
}
