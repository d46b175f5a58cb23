//! Pluto's NSS certificate database, driven with `certutil` and `pk12util` (called by bare
//! name, as the Python monitor does) and `openssl` for the PKCS#12 bundle of our key.
//!
//! Nicknames: `ovs_certkey_<CN>` for our certificate and key and `ovs_cert_<CN>` for a peer's
//! self-signed certificate (the ones OVS's tests and operators expect), `ovs-ca-<id>` for
//! each CA of the `ca_cert` bundle (`super::certs`). Only nicknames with these prefixes, and
//! `ovs_cert_cacert` (the single CA of earlier versions, removed when found), are ever
//! touched.
//!
//! An import first compares what the database holds under the nickname with the file (the
//! set of base64 certificate bodies) and replaces it only when they differ; a stale entry
//! left by a run that died during a certificate rotation is deleted until the nickname is
//! gone (NSS allows several certificates under one nickname). A peer's certificate is never
//! deleted merely because no tunnel wants it any more ([`is_peer`], docs/libreswan.md):
//! pluto keeps a copy that breaks if the same certificate is imported again.
//!
//! pluto does not see every change of the database at once: it verifies peers against a
//! cache of the root CAs it listed from NSS, kept as long as verifications keep happening.
//! After a pass changed the database, `apply` makes pluto drop it
//! (`version::Commands::reload_certs`); otherwise a CA imported after a self-signed phase, or
//! a re-issued CA, fails every peer with SEC_ERROR_UNTRUSTED_ISSUER.
//!
//! The private key reaches `pk12util` through a PKCS#12 file made by `mkstemp` (mode 0600,
//! unpredictable name) and removed as soon as the import ends, whatever its outcome.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use x509_parser::pem::Pem;

use crate::backend::command::{Cmd, CommandError};

/// Nickname prefix of certificates (CA and peers).
pub const CERT_PREFIX: &str = "ovs_cert_";
/// Nickname prefix of our certificate with its private key.
pub const CERTKEY_PREFIX: &str = "ovs_certkey_";
/// Nickname prefix of the CAs of a bundle (the member's id follows).
pub const CA_PREFIX: &str = "ovs-ca-";
/// Nickname of the CA certificate in earlier versions (one CA, not a bundle).
pub const OLD_CA_NICK: &str = "ovs_cert_cacert";

/// How often a mismatched nickname is deleted before giving up.
const MAX_DELETES: usize = 8;

#[derive(Debug, Error)]
pub enum NssError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create a private temporary file in {dir}: {source}")]
    Temp { dir: PathBuf, source: nix::Error },
    #[error("{nick} still differs from {path} after {MAX_DELETES} deletions")]
    Stuck { nick: String, path: PathBuf },
}

/// Is `nick` one of ours?
pub fn is_ours(nick: &str) -> bool {
    nick.starts_with(CERT_PREFIX) || nick.starts_with(CERTKEY_PREFIX) || nick.starts_with(CA_PREFIX)
}

/// Is `nick` a peer's self-signed certificate (`ovs_cert_<CN>`, not the CA)? A peer sends
/// that same certificate in every IKE_AUTH, and once pluto has seen it, a copy stays in
/// pluto's NSS cache tied to the database object it found then: deleting the object and
/// importing the same certificate again leaves pluto unable to use it ("could not extract
/// CKAID") until it restarts. Such nicknames are therefore never deleted while pluto runs.
pub fn is_peer(nick: &str) -> bool {
    nick.starts_with(CERT_PREFIX) && nick != OLD_CA_NICK
}

/// What a nickname holds and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CertSource {
    /// Our certificate and private key (`ovs_certkey_<CN>`).
    Local { cert: PathBuf, key: PathBuf },
    /// One CA of the bundle (`ovs-ca-<id>`), DER, trusted for peers' certificates.
    Ca(Vec<u8>),
    /// A peer's self-signed certificate (`ovs_cert_<CN>`).
    Peer(PathBuf),
}

impl CertSource {
    /// The certificate file whose content the nickname follows; `None` for a bundle member
    /// (its nickname names its content).
    pub fn cert_path(&self) -> Option<&Path> {
        match self {
            Self::Local { cert, .. } => Some(cert),
            Self::Peer(p) => Some(p),
            Self::Ca(_) => None,
        }
    }

    /// The certificates (DER) the nickname must hold.
    fn bodies(&self) -> Result<BTreeSet<Vec<u8>>, NssError> {
        match self {
            Self::Ca(der) => Ok(BTreeSet::from([der.clone()])),
            Self::Local { cert: path, .. } | Self::Peer(path) => {
                let text = std::fs::read(path).map_err(|e| NssError::Read {
                    path: path.clone(),
                    source: e,
                })?;
                Ok(pem_bodies(&text))
            }
        }
    }

    /// What the source is, for errors.
    fn shown(&self) -> PathBuf {
        self.cert_path()
            .map_or_else(|| PathBuf::from("the CA bundle"), Path::to_owned)
    }
}

/// The NSS database at `sql:<dir>`.
#[derive(Debug, Clone)]
pub struct Nss {
    db: String,
    timeout: Duration,
    tmp_dir: PathBuf,
}

impl Nss {
    pub fn new(dir: &Path, timeout: Duration) -> Self {
        Self {
            db: format!("sql:{}", dir.display()),
            timeout,
            tmp_dir: std::env::temp_dir(),
        }
    }

    fn certutil(&self, what: String) -> Cmd {
        Cmd::new("certutil", what, self.timeout)
    }

    /// Our nicknames present in the database.
    pub async fn list(&self) -> Result<BTreeSet<String>, NssError> {
        let out = self
            .certutil("list the NSS database".into())
            .args(["-L", "-d", &self.db])
            .run_checked()
            .await?;
        Ok(parse_list(&out.stdout))
    }

    /// Makes `nick` hold exactly the certificate(s) of `source`; returns whether the database
    /// changed.
    pub async fn ensure(&self, nick: &str, source: &CertSource) -> Result<bool, NssError> {
        let want = source.bodies()?;
        for _ in 0..MAX_DELETES {
            let have = self.bodies(nick).await?;
            if have.is_empty() {
                self.import(nick, source).await?;
                return Ok(true);
            }
            if have == want {
                return Ok(false);
            }
            tracing::info!("Mismatched certificate {nick} in the NSS database, removing.");
            self.delete(nick).await?;
        }
        Err(NssError::Stuck {
            nick: nick.to_owned(),
            path: source.shown(),
        })
    }

    /// Certificate bodies under `nick`; empty when the nickname is absent.
    async fn bodies(&self, nick: &str) -> Result<BTreeSet<Vec<u8>>, NssError> {
        let out = self
            .certutil(format!("read certificate {nick}"))
            .args(["-L", "-d", &self.db, "-a", "-n", nick])
            .run()
            .await?;
        // certutil exits 255 with "could not find certificate named" when it is absent.
        Ok(if out.code == 0 {
            pem_bodies(out.stdout.as_bytes())
        } else {
            BTreeSet::new()
        })
    }

    async fn import(&self, nick: &str, source: &CertSource) -> Result<(), NssError> {
        match source {
            CertSource::Ca(der) => self.add_der(nick, der, "CT,,").await,
            CertSource::Peer(p) => self.add_cert(nick, p, "P,P,P").await,
            CertSource::Local { cert, key } => self.add_certkey(nick, cert, key).await,
        }
    }

    async fn add_cert(&self, nick: &str, path: &Path, trust: &str) -> Result<(), NssError> {
        self.certutil(format!("import certificate {nick}"))
            .args(["-A", "-a", "-i"])
            .arg(path.display().to_string())
            .args(["-d", &self.db, "-n", nick, "-t", trust])
            .run_checked()
            .await?;
        Ok(())
    }

    /// Imports one DER certificate through a private temporary file (`certutil -A` reads
    /// only the first certificate of a file, so bundle members go one by one).
    async fn add_der(&self, nick: &str, der: &[u8], trust: &str) -> Result<(), NssError> {
        let tmp = TempFile::new(&self.tmp_dir)?;
        std::fs::write(&tmp.0, der).map_err(|e| NssError::Write {
            path: tmp.0.clone(),
            source: e,
        })?;
        self.certutil(format!("import certificate {nick}"))
            .arg("-A")
            .arg("-i")
            .arg(tmp.0.display().to_string())
            .args(["-d", &self.db, "-n", nick, "-t", trust])
            .run_checked()
            .await?;
        Ok(())
    }

    async fn add_certkey(&self, nick: &str, cert: &Path, key: &Path) -> Result<(), NssError> {
        let p12 = TempFile::new(&self.tmp_dir)?;
        let p12_path = p12.0.display().to_string();
        Cmd::new(
            "openssl",
            format!("bundle certificate and key {nick}"),
            self.timeout,
        )
        .args(["pkcs12", "-export", "-in"])
        .arg(cert.display().to_string())
        .arg("-inkey")
        .arg(key.display().to_string())
        .args(["-out", &p12_path, "-name", nick, "-passout", "pass:"])
        .run_checked()
        .await?;
        Cmd::new(
            "pk12util",
            format!("import certificate and key {nick}"),
            self.timeout,
        )
        .args(["-i", &p12_path, "-d", &self.db, "-W", ""])
        .run_checked()
        .await?;
        Ok(())
    }

    /// Deletes `nick` (with its private key for `ovs_certkey_*`).
    pub async fn delete(&self, nick: &str) -> Result<(), NssError> {
        let flag = if nick.starts_with(CERTKEY_PREFIX) {
            "-F"
        } else {
            "-D"
        };
        self.certutil(format!("delete certificate {nick}"))
            .args([flag, "-d", &self.db, "-n", nick])
            .run_checked()
            .await?;
        Ok(())
    }
}

/// A `mkstemp` file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(dir: &Path) -> Result<Self, NssError> {
        let (fd, path) =
            nix::unistd::mkstemp(&dir.join("ovs-monitor-ipsec-p12.XXXXXX")).map_err(|source| {
                NssError::Temp {
                    dir: dir.to_owned(),
                    source,
                }
            })?;
        drop(fd);
        Ok(Self(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Our nicknames in `certutil -L` output: the nickname column, left of the trust flags.
fn parse_list(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let (nick, trust) = l.trim_end().rsplit_once(char::is_whitespace)?;
            let nick = nick.trim_end();
            (trust.matches(',').count() == 2 && is_ours(nick)).then(|| nick.to_owned())
        })
        .collect()
}

/// The certificates (DER) of the PEM blocks in `text`; other blocks are ignored.
fn pem_bodies(text: &[u8]) -> BTreeSet<Vec<u8>> {
    Pem::iter_from_buffer(text)
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_keeps_only_our_nicknames() {
        let text = "\nCertificate Nickname                                         Trust Attributes\n                                                             SSL,S/MIME,JAR/XPI\n\novs_certkey_left                                             u,u,u\novs_cert_cacert                                              CT,, \novs-ca-0123456789abcdef                                      CT,, \nadmin cert                                                   CT,C,C\n";
        assert_eq!(
            parse_list(text).into_iter().collect::<Vec<_>>(),
            [
                "ovs-ca-0123456789abcdef",
                "ovs_cert_cacert",
                "ovs_certkey_left"
            ]
        );
    }

    #[test]
    fn only_peer_certificates_are_peers() {
        assert!(is_peer("ovs_cert_right"));
        assert!(!is_peer(OLD_CA_NICK));
        assert!(!is_peer("ovs-ca-0123456789abcdef"));
        assert!(!is_peer("ovs_certkey_left"));
        assert!(!is_peer("admin cert"));
    }

    #[test]
    fn pem_bodies_ignore_layout() {
        let a = "-----BEGIN CERTIFICATE-----\nAAAA\nBBBB\n-----END CERTIFICATE-----\n";
        let b = "junk\n-----BEGIN CERTIFICATE-----\r\nAAAABBBB\r\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(pem_bodies(a.as_bytes()), pem_bodies(b.as_bytes()));
        assert_eq!(pem_bodies(a.as_bytes()).len(), 1);
        assert!(pem_bodies(key.as_bytes()).is_empty());
    }
}
