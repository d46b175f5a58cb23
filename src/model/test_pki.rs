//! Certificates for the model's unit tests, made by the real `openssl`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `openssl req -newkey` arguments for a P-256 key.
pub const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// A self-signed certificate `<dir>/<name>.pem` with subject `CN=<cn>` and its unencrypted
/// key `<dir>/<name>.key`, made with `newkey` (e.g. [`EC`] or `["-newkey", "rsa:2048"]`).
/// Returns (certificate, key).
pub fn self_signed(dir: &Path, name: &str, cn: &str, newkey: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={cn}")])
        .args(newkey)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed (/usr/bin/openssl) for these tests");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
