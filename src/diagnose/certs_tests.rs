use std::sync::Arc;

use super::*;
use crate::model::{Pki, Secret, TunnelType};

const DAY: i64 = 86_400;
/// 2026-12-07T00:00:00Z.
const NOW: i64 = 1_796_601_600;

fn info(cn: &str, not_after: i64, sans: &[&str]) -> CertInfo {
    CertInfo {
        cn: cn.into(),
        sha256: [0; 32],
        subject: format!("CN={cn}"),
        not_before: 0,
        not_after,
        sans: sans.iter().map(|s| (*s).into()).collect(),
        der: Arc::from(&[][..]),
    }
}

fn file(path: &str, info: CertInfo) -> Option<CertFile> {
    Some(CertFile {
        path: path.into(),
        info: Ok(info),
    })
}

fn self_signed(remote_name: &str) -> TunnelConf {
    let mut c = TunnelConf::new(
        "t",
        TunnelType::Gre,
        "192.0.2.2".parse().unwrap(),
        Auth::SelfSigned {
            remote_cert: "/pki/peer.pem".into(),
            remote_name: remote_name.into(),
        },
    );
    c.pki = Some(Arc::new(Pki {
        certificate: "/pki/me.pem".into(),
        private_key: "/pki/me.key".into(),
        ca_cert: None,
        local_name: "me".into(),
    }));
    c
}

fn input() -> CertsInput {
    CertsInput {
        now: NOW,
        warning_days: 30,
        local: file("/pki/me.pem", info("me", NOW + 400 * DAY, &[])),
        ca: None,
        peer: file(
            "/pki/peer.pem",
            info("peer", NOW + 400 * DAY, &["peer.example", "192.0.2.2"]),
        ),
        key: None,
    }
}

fn codes(f: &[Finding]) -> Vec<(Code, Severity)> {
    f.iter().map(|f| (f.code, f.severity)).collect()
}

#[test]
fn healthy_certificates_and_psk_tunnels_have_no_findings() {
    assert_eq!(check(&self_signed("peer"), &input()), []);
    // The name may be a SAN as well as the CN.
    assert_eq!(check(&self_signed("peer.example"), &input()), []);
    assert_eq!(check(&self_signed("192.0.2.2"), &input()), []);
    let psk = TunnelConf::new(
        "p",
        TunnelType::Gre,
        "192.0.2.2".parse().unwrap(),
        Auth::Psk(Secret::new("x")),
    );
    let mut i = input();
    i.local = file("/pki/me.pem", info("me", NOW - DAY, &[]));
    assert_eq!(check(&psk, &i), []);
}

#[test]
fn expired_and_expiring_with_subject_and_date() {
    let mut i = input();
    i.local = file("/pki/me.pem", info("me", NOW - DAY, &[]));
    i.peer = file("/pki/peer.pem", info("peer", NOW + 3 * DAY, &[]));
    let f = check(&self_signed("peer"), &i);
    assert_eq!(
        codes(&f),
        [
            (Code::CertExpired, Severity::Error),
            (Code::CertExpiring, Severity::Warning)
        ]
    );
    assert_eq!(
        f[0].message,
        "the local certificate /pki/me.pem (CN=me) expired on 2026-12-06T00:00:00Z"
    );
    assert_eq!(
        f[1].message,
        "the peer certificate /pki/peer.pem (CN=peer) expires on 2026-12-10T00:00:00Z, in 3 days"
    );
    // Outside the warning window: nothing; the window is the flag's.
    i.warning_days = 2;
    assert_eq!(
        codes(&check(&self_signed("peer"), &i)),
        [(Code::CertExpired, Severity::Error)]
    );
}

#[test]
fn remote_name_must_be_the_cn_or_a_san() {
    let f = check(&self_signed("someone-else"), &input());
    assert_eq!(codes(&f), [(Code::CertNameMismatch, Severity::Error)]);
    assert!(
        f[0].message.contains("\"someone-else\"") && f[0].hint.contains("\"peer\""),
        "{f:?}"
    );
}

#[test]
fn key_mode_and_unreadable_key() {
    let mut i = input();
    i.key = Some(KeyFile {
        path: "/pki/me.key".into(),
        mode: Ok(0o100_644),
        public_key: Err("openssl pkey failed (exit code 1): bad decrypt".into()),
    });
    let f = check(&self_signed("peer"), &i);
    assert_eq!(
        codes(&f),
        [
            (Code::KeyFileReadableByOthers, Severity::Warning),
            (Code::CertKeyMismatch, Severity::Warning)
        ]
    );
    assert!(f[0].message.contains("mode 0644") && f[0].hint == "chmod 600 /pki/me.key");
    if let Some(k) = i.key.as_mut() {
        k.mode = Ok(0o100_600);
        k.public_key = Ok(vec![1, 2, 3]);
    }
    // A public key that is not the certificate's.
    assert_eq!(
        codes(&check(&self_signed("peer"), &i)),
        [(Code::CertKeyMismatch, Severity::Error)]
    );
}
