//! The NSS database with the real certutil, pk12util and openssl: import, unchanged
//! re-check, content change, deletion, and no PKCS#12 file left behind.

mod common;

use std::process::Command;
use std::time::Duration;

use common::libreswan::self_signed;
use ovs_monitor_ipsec::backend::libreswan::nss::{CertSource, Nss};

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (install libnss3-tools and openssl)"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p12_leftovers() -> usize {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("ovs-monitor-ipsec-p12.")
            })
        })
        .count()
}

#[tokio::test(flavor = "current_thread")]
async fn import_recheck_replace_and_delete() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("nss");
    std::fs::create_dir(&db).unwrap();
    run(&[
        "certutil",
        "-N",
        "--empty-password",
        "-d",
        &format!("sql:{}", db.display()),
    ]);
    self_signed(d.path(), "left");
    self_signed(d.path(), "right");
    let nss = Nss::new(&db, Duration::from_secs(30));
    let local = CertSource::Local {
        cert: d.path().join("left-cert.pem"),
        key: d.path().join("left-privkey.pem"),
    };
    let peer = CertSource::Peer(d.path().join("right-cert.pem"));

    assert!(nss.ensure("ovs_certkey_left", &local).await.unwrap());
    assert!(nss.ensure("ovs_cert_right", &peer).await.unwrap());
    assert_eq!(
        p12_leftovers(),
        0,
        "the PKCS#12 file with our key was left behind"
    );
    let listed: Vec<String> = nss.list().await.unwrap().into_iter().collect();
    assert_eq!(listed, ["ovs_cert_right", "ovs_certkey_left"]);
    // Unchanged files: nothing to do.
    assert!(!nss.ensure("ovs_certkey_left", &local).await.unwrap());
    assert!(!nss.ensure("ovs_cert_right", &peer).await.unwrap());

    // The peer rotated its certificate: the stale one is replaced, not duplicated.
    self_signed(d.path(), "right");
    assert!(nss.ensure("ovs_cert_right", &peer).await.unwrap());
    assert!(!nss.ensure("ovs_cert_right", &peer).await.unwrap());

    nss.delete("ovs_cert_right").await.unwrap();
    nss.delete("ovs_certkey_left").await.unwrap();
    assert!(nss.list().await.unwrap().is_empty());
}
