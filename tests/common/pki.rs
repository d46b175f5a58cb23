//! Certificates for the certificate-lifecycle tests, made with the real `openssl`: CAs, and
//! host certificates (CN and SAN DNS = the host name) issued by one of them, with a new key
//! or an existing one (renewal with the same key).

use std::path::{Path, PathBuf};
use std::process::Command;

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed (tests/deps)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA `<dir>/<name>.pem` (key `<name>.key`) with subject `CN=<name>`.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let cert = dir.join(format!("{name}.pem"));
    make_ca_at(name, &cert, &dir.join(format!("{name}.key")));
    cert
}

/// A self-signed CA with subject `CN=<cn>`, its certificate at `cert` and its key at `key`.
pub fn make_ca_at(cn: &str, cert: &Path, key: &Path) {
    let subj = format!("/CN={cn}");
    let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subj];
    args.extend(EC);
    let (k, c) = (key.display().to_string(), cert.display().to_string());
    args.extend(["-keyout", &k, "-out", &c]);
    openssl(&args);
}

/// A new RSA key at `key` (mode 0600), for [`issue`] to use: pluto's conns
/// (`leftrsasigkey=%cert`) sign with RSA.
pub fn rsa_key(key: &Path) {
    let k = key.display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &k,
    ]);
}

/// A certificate for `host` signed by CA `ca` (from [`make_ca`] in `dir`), written to `out`.
/// Its key is `key`, created when the file does not exist yet and reused when it does.
pub fn issue(dir: &Path, ca: &str, host: &str, key: &Path, out: &Path) {
    let (ca_cert, ca_key) = (dir.join(format!("{ca}.pem")), dir.join(format!("{ca}.key")));
    issue_by(&ca_cert, &ca_key, host, key, out);
}

/// [`issue`] by the CA whose certificate and key are `ca_cert` and `ca_key`. The request and
/// the extensions are written next to `out`.
pub fn issue_by(ca_cert: &Path, ca_key: &Path, host: &str, key: &Path, out: &Path) {
    let (k, o) = (key.display().to_string(), out.display().to_string());
    let csr = out.with_extension("csr").display().to_string();
    let subj = format!("/CN={host}");
    let mut args = vec!["req", "-new", "-subj", &subj, "-out", &csr];
    if key.exists() {
        args.extend(["-key", &k]);
    } else {
        args.extend(EC);
        args.extend(["-keyout", &k]);
    }
    openssl(&args);
    let ext = out.with_extension("ext");
    std::fs::write(&ext, format!("subjectAltName=DNS:{host}\n")).expect("ext");
    let (cc, ck, e) = (
        ca_cert.display().to_string(),
        ca_key.display().to_string(),
        ext.display().to_string(),
    );
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &csr,
        "-CA",
        &cc,
        "-CAkey",
        &ck,
        "-CAcreateserial",
        "-extfile",
        &e,
        "-out",
        &o,
    ]);
}

/// Writes the concatenation of `parts` to `out` (a CA bundle), replacing it atomically.
pub fn bundle(out: &Path, parts: &[&Path]) {
    let mut text = Vec::new();
    for p in parts {
        text.extend(std::fs::read(p).expect("bundle member"));
    }
    replace(out, &text);
}

/// Replaces `path` with `bytes` by rename, as certificate tools do.
pub fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Rewrites the private key at `key` in its algorithm's traditional format (PKCS#1 for RSA,
/// SEC1 for EC), as older tools write keys.
pub fn traditional(key: &Path) {
    let tmp = key.with_extension("trad");
    let (k, t) = (key.display().to_string(), tmp.display().to_string());
    openssl(&["pkey", "-traditional", "-in", &k, "-out", &t]);
    std::fs::rename(&tmp, key).expect("rename");
}

/// Replaces the bundle at `path` with one whose first member is not a certificate, and
/// returns the `ipsec-error` the monitor must give its tunnels.
pub fn break_bundle(path: &Path) -> String {
    replace(
        path,
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    format!(
        "CA bundle '{}': member 1 is not a valid X.509 certificate",
        path.display()
    )
}

/// The start of a CA rotation in `dir`: CAs `ca1` and `ca2` ([`make_ca`]); `left` and
/// `right` with `<host>-cert.pem` issued by CA1 (keys `<host>-key.pem`); each host's bundle
/// `<host>-ca.pem` with CA2 first, so that a daemon reading only a bundle's first member
/// would reject CA1's certificates. Returns CA2's certificate.
pub fn two_hosts_trusting_both_cas(dir: &Path) -> PathBuf {
    let (ca1, ca2) = (make_ca(dir, "ca1"), make_ca(dir, "ca2"));
    for host in ["left", "right"] {
        let key = dir.join(format!("{host}-key.pem"));
        issue(
            dir,
            "ca1",
            host,
            &key,
            &dir.join(format!("{host}-cert.pem")),
        );
        bundle(&dir.join(format!("{host}-ca.pem")), &[&ca2, &ca1]);
    }
    ca2
}
