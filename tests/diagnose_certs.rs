//! The certificate checks of `diagnose` on certificates and keys made by the real `openssl`:
//! expiring in 3 days, expired, the wrong CN, a key of another certificate, a 0644 key, a
//! certificate signed by another CA; and the running monitor's `external_ids:ipsec-warning`
//! and `error` state for expiring and expired certificates.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::monitor::{Monitor, iface_key, wait_for};
use common::ovsdb_server::OvsdbServer;
use ovs_monitor_ipsec::diagnose::certs::{self, CertsInput};
use ovs_monitor_ipsec::diagnose::{Code, Finding, Severity};
use ovs_monitor_ipsec::model::cert::FsCertSource;
use ovs_monitor_ipsec::model::{Auth, Pki, TunnelConf, TunnelType};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (tests/deps/strongswan-vici.packages)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory of keys and certificates: `name.key` and `name.pem`.
struct Pkid(tempfile::TempDir);

impl Pkid {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn path(&self, f: &str) -> PathBuf {
        self.0.path().join(f)
    }

    /// An OVSDB server whose `other_config` points at `name.pem` and `name.key`.
    fn ovsdb_with_own(&self, name: &str) -> OvsdbServer {
        let db = OvsdbServer::start();
        let p = |ext: &str| self.path(&format!("{name}.{ext}")).display().to_string();
        db.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:certificate={}", p("pem")),
            &format!("other_config:private_key={}", p("key")),
        ]);
        db
    }

    /// A self-signed certificate `name.pem` (CN `cn`, valid `days`), key `name.key` (0600).
    fn self_signed(&self, name: &str, cn: &str, days: u32) -> &Self {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        openssl(
            self.0.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                &days.to_string(),
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &key,
                "-out",
                &pem,
            ],
        );
        std::fs::set_permissions(self.path(&key), std::fs::Permissions::from_mode(0o600)).unwrap();
        self
    }

    /// `name.pem` (CN `cn`) signed by `ca`, valid from `start` to `end` (`YYYYMMDDhhmmssZ`).
    fn signed(&self, name: &str, cn: &str, ca: &str, start: &str, end: &str) -> &Self {
        let dir = self.0.path();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        std::fs::set_permissions(self.path(&key), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\n\
             default_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n",
        )
        .unwrap();
        if !dir.join("serial").exists() {
            std::fs::write(dir.join("serial"), "01\n").unwrap();
            std::fs::write(dir.join("index.txt"), "").unwrap();
        }
        openssl(
            dir,
            &[
                "ca",
                "-config",
                "ca.cnf",
                "-batch",
                "-notext",
                "-startdate",
                start,
                "-enddate",
                end,
                "-in",
                &csr,
                "-cert",
                &format!("{ca}.pem"),
                "-keyfile",
                &format!("{ca}.key"),
                "-out",
                &pem,
            ],
        );
        self
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `YYYYMMDDhhmmssZ` `days` from now (negative: in the past).
fn stamp(days: i64) -> String {
    let t = now() + days * 86_400;
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%Y%m%d%H%M%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn tunnel(pki: &Pkid, auth: Auth, local: &str, key: &str, ca: Option<&str>) -> TunnelConf {
    let mut c = TunnelConf::new(
        "tun0",
        TunnelType::Geneve,
        "192.0.2.2".parse().unwrap(),
        auth,
    );
    c.pki = Some(Arc::new(Pki {
        certificate: pki.path(&format!("{local}.pem")),
        private_key: pki.path(&format!("{key}.key")),
        ca_cert: ca.map(|c| pki.path(&format!("{c}.pem"))),
        local_name: "me".into(),
    }));
    c
}

fn diagnose(c: &TunnelConf) -> Vec<Finding> {
    let input: CertsInput = certs::gather(
        c,
        &mut FsCertSource::new(),
        now(),
        certs::DEFAULT_WARNING_DAYS,
    );
    certs::check(c, &input)
}

fn codes(f: &[Finding]) -> Vec<(Code, Severity)> {
    f.iter().map(|f| (f.code, f.severity)).collect()
}

#[test]
fn self_signed_peer_expiring_renamed_and_key_problems() {
    let pki = Pkid::new();
    pki.self_signed("me", "me", 365)
        .self_signed("peer", "peer", 3)
        .self_signed("other", "other", 365);
    let peer = |name: &str| Auth::SelfSigned {
        remote_cert: pki.path("peer.pem"),
        remote_name: name.into(),
    };
    // Healthy apart from the peer's certificate, which expires in 3 days.
    let f = diagnose(&tunnel(&pki, peer("peer"), "me", "me", None));
    assert_eq!(
        codes(&f),
        [(Code::CertExpiring, Severity::Warning)],
        "{f:?}"
    );
    assert!(
        f[0].message.contains("CN=peer") && f[0].message.contains("expires on"),
        "{f:?}"
    );

    // remote_name is not the peer certificate's CN.
    let f = diagnose(&tunnel(&pki, peer("bob"), "me", "me", None));
    assert!(
        codes(&f).contains(&(Code::CertNameMismatch, Severity::Error)),
        "{f:?}"
    );

    // The key of another certificate, readable by everyone.
    std::fs::set_permissions(
        pki.path("other.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let f = diagnose(&tunnel(&pki, peer("peer"), "me", "other", None));
    let got = codes(&f);
    assert!(
        got.contains(&(Code::CertKeyMismatch, Severity::Error)),
        "{f:?}"
    );
    assert!(
        got.contains(&(Code::KeyFileReadableByOthers, Severity::Warning)),
        "{f:?}"
    );
    // No finding carries key material.
    let key = std::fs::read_to_string(pki.path("other.key")).unwrap();
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for finding in &f {
        let text = format!("{} {}", finding.message, finding.hint);
        assert!(
            !text.contains(&body[..20]) && !text.contains("PRIVATE KEY"),
            "{text}"
        );
    }
}

#[test]
fn ca_signed_expired_and_signed_by_another_ca() {
    let pki = Pkid::new();
    pki.self_signed("ca", "ca", 365)
        .self_signed("rogue", "rogue", 365);
    pki.signed("me", "me", "ca", &stamp(-10), &stamp(100));
    let auth = Auth::CaSigned {
        remote_name: "peer".into(),
    };
    assert_eq!(
        diagnose(&tunnel(&pki, auth.clone(), "me", "me", Some("ca"))),
        []
    );

    pki.signed("old", "old", "ca", &stamp(-10), &stamp(-1));
    let f = diagnose(&tunnel(&pki, auth.clone(), "old", "old", Some("ca")));
    assert_eq!(codes(&f), [(Code::CertExpired, Severity::Error)], "{f:?}");
    assert!(
        f[0].message.contains("CN=old") && f[0].message.contains("expired on"),
        "{f:?}"
    );

    pki.signed("stray", "stray", "rogue", &stamp(-10), &stamp(100));
    let f = diagnose(&tunnel(&pki, auth, "stray", "stray", Some("ca")));
    assert_eq!(
        codes(&f),
        [(Code::CertNotSignedByCa, Severity::Error)],
        "{f:?}"
    );
    assert!(
        f[0].message.contains("CN=stray") && f[0].message.contains("CN=ca"),
        "{f:?}"
    );
}

#[test]
fn the_monitor_warns_of_an_expiring_certificate_and_fails_an_expired_one() {
    let pki = Pkid::new();
    pki.self_signed("me", "me", 365)
        .self_signed("soon", "peer", 3)
        .self_signed("fresh", "peer", 365)
        .self_signed("ca", "ca", 365);
    pki.signed("old", "peer", "ca", &stamp(-10), &stamp(-1));
    let db = pki.ovsdb_with_own("me");
    let p = |f: &str| pki.path(f).display().to_string();
    let cert_of = |f: &str| format!("remote_cert={}", p(f));
    db.add_tunnel(
        "gnv0",
        "geneve",
        &[
            "remote_ip=192.0.2.2",
            "remote_name=peer",
            &cert_of("soon.pem"),
        ],
    );
    let mon = Monitor::start(&db, &["--cert-expiry-warning-days=10"]);
    let long = Duration::from_secs(60);
    wait_for("ipsec-warning", long, || {
        iface_key(&db, "gnv0", "ipsec-warning").is_some_and(|w| w.contains("CN=peer"))
    });
    let warning = iface_key(&db, "gnv0", "ipsec-warning").unwrap_or_default();
    assert!(
        warning.contains("soon.pem") && warning.contains("expires on"),
        "{warning}"
    );
    mon.wait_log("soon.pem (CN=peer) expires on");
    assert_eq!(mon.log_count("soon.pem (CN=peer) expires on"), 1);

    // An expired peer certificate: the tunnel is in error with that reason.
    db.vsctl(&[
        "set",
        "Interface",
        "gnv0",
        &format!("options:{}", cert_of("old.pem")),
    ]);
    wait_for("ipsec-state error", long, || {
        iface_key(&db, "gnv0", "ipsec-state").as_deref() == Some("error")
    });
    let error = iface_key(&db, "gnv0", "ipsec-error").unwrap_or_default();
    assert!(
        error.contains("old.pem") && error.contains("expired on"),
        "{error}"
    );
    assert_eq!(iface_key(&db, "gnv0", "ipsec-warning"), None);

    // Renewed: no warning, no error.
    db.vsctl(&[
        "set",
        "Interface",
        "gnv0",
        &format!("options:{}", cert_of("fresh.pem")),
    ]);
    wait_for("the error to clear", long, || {
        iface_key(&db, "gnv0", "ipsec-state").as_deref() != Some("error")
    });
    assert_eq!(iface_key(&db, "gnv0", "ipsec-error"), None);
    assert_eq!(iface_key(&db, "gnv0", "ipsec-warning"), None);
}

#[test]
fn diagnose_through_appctl_judges_expiry_by_the_flag_and_names_a_readable_key() {
    // The local certificate expires in 20 days, the peer's in 3, and the key is 0644. With
    // `--cert-expiry-warning-days=10` only the peer's is close enough to warn about (the
    // default of 30 would name both).
    let pki = Pkid::new();
    pki.self_signed("me", "me", 20)
        .self_signed("soon", "peer", 3);
    std::fs::set_permissions(pki.path("me.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let key_text = std::fs::read_to_string(pki.path("me.key")).unwrap();
    let db = pki.ovsdb_with_own("me");
    let p = |f: &str| pki.path(f).display().to_string();
    db.add_tunnel(
        "gnv0",
        "geneve",
        &[
            "remote_ip=192.0.2.2",
            "remote_name=peer",
            &format!("remote_cert={}", p("soon.pem")),
        ],
    );
    let mon = Monitor::start(&db, &["--cert-expiry-warning-days=10"]);
    // The monitor answers before it has read the tunnel.
    wait_for("the tunnel known", Duration::from_secs(60), || {
        mon.appctl(&["diagnose", "gnv0"]).status.success()
    });
    wait_for("the tunnel in diagnose", Duration::from_secs(60), || {
        mon.diagnose_codes("gnv0")
            .contains(&"cert-expiring".to_owned())
    });
    let json: serde_json::Value =
        serde_json::from_str(&mon.appctl_ok(&["diagnose", "gnv0", "--json"])).unwrap();
    let findings = json[0]["findings"].as_array().unwrap();
    let of = |code: &str| -> Vec<String> {
        (findings.iter())
            .filter(|f| f["code"] == code)
            .map(|f| f["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let expiring = of("cert-expiring");
    assert_eq!(expiring.len(), 1, "{json}");
    assert!(
        expiring[0].contains("peer certificate") && expiring[0].contains("soon.pem"),
        "{json}"
    );
    let readable = of("key-file-readable-by-others");
    assert_eq!(readable.len(), 1, "{json}");
    assert!(readable[0].contains("me.key"), "{json}");

    let text = mon.appctl_ok(&["diagnose", "gnv0"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("  FAIL certificate ") && l.contains("me valid until "))
            && text.contains("warning cert-expiring: the peer certificate")
            && text.contains("key-file-readable-by-others: "),
        "{text}"
    );
    // The key's bytes appear nowhere.
    let body: String = (key_text.lines())
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for out in [&text, &json.to_string()] {
        assert!(!out.contains(&body[..32]), "{out}");
    }
}
