//! Certificate findings of a certificate-mode tunnel: `cert-expired`, `cert-expiring`,
//! `cert-name-mismatch`, `cert-key-mismatch`, `cert-not-signed-by-ca` and
//! `key-file-readable-by-others`.
//!
//! What it reads: the tunnel's own certificate, private key and CA certificate
//! (`Open_vSwitch:other_config:certificate`, `private_key`, `ca_cert`) and, for a
//! self-signed peer, `options:remote_cert`, through `model::cert` (x509-parser, the same
//! cache the model uses). The private key's public half comes from `model::key`, which the
//! model's own key check uses too (a mismatch also makes the tunnel `invalid`); its
//! permission bits from `stat`. The peer's certificate of a
//! CA-signed tunnel is only seen by the IKE daemon, so its name is not checked here.
//!
//! Expiry is judged at `now` against `--cert-expiry-warning-days`. A PSK tunnel has no
//! certificate findings.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::{Code, Finding, Severity};
use crate::model::cert::{CertInfo, CertSource, FsCertSource};
use crate::model::key;
use crate::model::{Auth, TunnelConf};
use crate::status::time::rfc3339;

/// Default of `--cert-expiry-warning-days`.
pub const DEFAULT_WARNING_DAYS: u32 = 30;

/// A certificate file and what reading it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFile {
    pub path: PathBuf,
    pub info: Result<CertInfo, String>,
}

/// The private key file: its permission bits and its public key (DER SPKI), never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub path: PathBuf,
    pub mode: Result<u32, String>,
    pub public_key: Result<Vec<u8>, String>,
}

/// Everything the certificate checks look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertsInput {
    /// Seconds since the epoch.
    pub now: i64,
    pub warning_days: u32,
    pub local: Option<CertFile>,
    pub ca: Option<CertFile>,
    pub peer: Option<CertFile>,
    pub key: Option<KeyFile>,
}

/// The UTC date and time of `t` (seconds since the epoch).
pub fn date(t: i64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(t.max(0).unsigned_abs()))
}

/// `cert-expired` or `cert-expiring` for one certificate, if either applies.
pub fn expiry(role: &str, file: &CertFile, now: i64, warning_days: u32) -> Option<Finding> {
    let info = file.info.as_ref().ok()?;
    let path = file.path.display();
    let when = date(info.not_after);
    if now >= info.not_after {
        return Some(Finding::new(
            Code::CertExpired,
            Severity::Error,
            format!(
                "the {role} certificate {path} ({}) expired on {when}",
                info.subject
            ),
            format!("replace {path} with a renewed certificate"),
        ));
    }
    let left = (info.not_after - now) / 86_400;
    (left < i64::from(warning_days)).then(|| {
        Finding::new(
            Code::CertExpiring,
            Severity::Warning,
            format!(
                "the {role} certificate {path} ({}) expires on {when}, in {left} days",
                info.subject
            ),
            format!("renew {path} before {when}"),
        )
    })
}

/// All certificate findings of `conf`.
pub fn check(conf: &TunnelConf, input: &CertsInput) -> Vec<Finding> {
    if matches!(conf.auth, Auth::Psk(_)) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (role, file) in [
        ("local", &input.local),
        ("CA", &input.ca),
        ("peer", &input.peer),
    ] {
        if let Some(f) = file {
            out.extend(expiry(role, f, input.now, input.warning_days));
        }
    }
    if let (Auth::SelfSigned { remote_name, .. }, Some(peer)) = (&conf.auth, &input.peer)
        && let Ok(info) = &peer.info
        && info.cn != *remote_name
        && !info.sans.iter().any(|s| s == remote_name)
    {
        out.push(Finding::new(
            Code::CertNameMismatch,
            Severity::Error,
            format!(
                "options:remote_name {remote_name:?} is neither the CN nor a subject alternative name of the peer certificate {} ({})",
                peer.path.display(),
                info.subject
            ),
            format!("set options:remote_name to {:?}, or give the peer's own certificate", info.cn),
        ));
    }
    if let (Some(local), Some(key)) = (&input.local, &input.key) {
        out.extend(key_findings(local, key));
    }
    if let (Auth::CaSigned { .. }, Some(local), Some(ca)) = (&conf.auth, &input.local, &input.ca)
        && let (Ok(cert), Ok(ca_info)) = (&local.info, &ca.info)
        && cert.signed_by(ca_info) == Ok(false)
    {
        out.push(Finding::new(
            Code::CertNotSignedByCa,
            Severity::Error,
            format!(
                "the local certificate {} ({}) is not signed by the CA {} ({}); peers trusting that CA reject it",
                local.path.display(),
                cert.subject,
                ca.path.display(),
                ca_info.subject
            ),
            format!(
                "use a certificate issued by {} or point other_config:ca_cert at its issuer",
                ca_info.subject
            ),
        ));
    }
    out
}

fn key_findings(local: &CertFile, key: &KeyFile) -> Vec<Finding> {
    let mut out = Vec::new();
    let path = key.path.display();
    if let Ok(mode) = key.mode
        && mode & 0o044 != 0
    {
        out.push(Finding::new(
            Code::KeyFileReadableByOthers,
            Severity::Warning,
            format!(
                "the private key {path} has mode {:04o}: readable by its group or by everyone",
                mode & 0o7777
            ),
            format!("chmod 600 {path}"),
        ));
    }
    match (&local.info, &key.public_key) {
        (Ok(cert), Ok(public)) if key::belongs(cert, public) != Some(true) => {
            out.push(Finding::new(
                Code::CertKeyMismatch,
                Severity::Error,
                format!(
                    "the private key {path} does not belong to the local certificate {} ({})",
                    local.path.display(),
                    cert.subject
                ),
                "set other_config:private_key to the certificate's own key, or the certificate to the key's",
            ));
        }
        (Ok(_), Err(reason)) => out.push(Finding::new(
            Code::CertKeyMismatch,
            Severity::Warning,
            format!("cannot check that the private key {path} belongs to the local certificate: {reason}"),
            format!("check that {path} is an unencrypted PEM private key readable by the monitor"),
        )),
        _ => {}
    }
    out
}

/// Reads what [`check`] needs for `conf`: the certificates, the key's mode and public key
/// through `certs`.
pub fn gather(
    conf: &TunnelConf,
    certs: &mut FsCertSource,
    now: i64,
    warning_days: u32,
) -> CertsInput {
    let mut read = |path: &Path| CertFile {
        path: path.to_owned(),
        info: certs.read(path).map_err(|e| e.to_string()),
    };
    let pki = conf.pki.as_deref();
    let local = pki.map(|p| read(&p.certificate));
    let ca = pki.and_then(|p| p.ca_cert.as_deref()).map(&mut read);
    let peer = match &conf.auth {
        Auth::SelfSigned { remote_cert, .. } => Some(read(remote_cert)),
        _ => None,
    };
    let key = pki.map(|p| KeyFile {
        path: p.private_key.clone(),
        mode: std::fs::metadata(&p.private_key)
            .map(|m| m.permissions().mode())
            .map_err(|e| e.to_string()),
        public_key: certs.key_public(&p.private_key),
    });
    CertsInput {
        now,
        warning_days,
        local,
        ca,
        peer,
        key,
    }
}

#[cfg(test)]
#[path = "certs_tests.rs"]
mod tests;
