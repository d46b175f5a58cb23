//! CA bundles: a `ca_cert` file may hold several PEM certificates (the old and the new CA
//! during a rotation), and every one of them is trusted.
//!
//! The IKE daemons do not read bundles themselves: charon's certificate loader (the stroke
//! `cacert=` file, VICI `load-authority`) takes the first certificate of a PEM file and
//! silently ignores the rest, and `certutil -A` imports one certificate per nickname. So the
//! backends split a bundle into its members and load each under a name derived from the
//! member's SHA-256 ([`BundleCa::id`]): a member that stays in the bundle keeps its name,
//! so a changed bundle adds and removes exactly the changed CAs ([`diff`]).
//!
//! A bundle is all or nothing: a block that is not a certificate, or a certificate that does
//! not parse, rejects the whole file with a reason that names the file and the member's
//! position, never its content (a private key pasted by mistake must not reach a log).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use super::grammar::shown;

/// One CA of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleCa {
    /// The certificate, DER-encoded (charon and `certutil` both accept DER).
    pub der: Vec<u8>,
    /// SHA-256 of `der`.
    pub sha256: [u8; 32],
    /// The subject, for logs (`CN=ca2, O=example`).
    pub subject: String,
}

impl BundleCa {
    /// A stable name for this member: the first 8 bytes of its SHA-256 in hex.
    pub fn id(&self) -> String {
        self.sha256[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A bundle file as read: its members and the file's SHA-256 (what a backend records as
/// loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub members: Vec<BundleCa>,
}

/// Why a bundle was rejected. Paths are shown escaped when unusual.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BundleError {
    #[error("cannot read CA bundle '{path}': {detail}")]
    Read { path: String, detail: String },
    #[error("CA bundle '{path}' holds no certificate")]
    Empty { path: String },
    #[error("CA bundle '{path}': member {index} is a {label} block, not a certificate")]
    NotCertificate {
        path: String,
        index: usize,
        label: String,
    },
    #[error("CA bundle '{path}': member {index} is not a valid X.509 certificate")]
    Malformed { path: String, index: usize },
}

/// The CAs of a bundle file, in file order, duplicates dropped. A file without any PEM block
/// is read as one DER certificate. The shell reads the file (`cert::FsCertSource`).
pub fn parse_bundle(bytes: &[u8], path: &Path) -> Result<CaBundle, BundleError> {
    let shown_path = || shown(&path.to_string_lossy()).into_owned();
    let mut ders = Vec::new();
    for (i, pem) in Pem::iter_from_buffer(bytes).enumerate() {
        let index = i + 1;
        let pem = pem.map_err(|_| BundleError::Malformed {
            path: shown_path(),
            index,
        })?;
        if pem.label != "CERTIFICATE" && pem.label != "X509 CERTIFICATE" {
            return Err(BundleError::NotCertificate {
                path: shown_path(),
                index,
                label: shown(&pem.label).into_owned(),
            });
        }
        ders.push((index, pem.contents));
    }
    if ders.is_empty() {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(BundleError::Empty { path: shown_path() });
        }
        ders.push((1, bytes.to_vec()));
    }
    let mut out: Vec<BundleCa> = Vec::with_capacity(ders.len());
    for (index, der) in ders {
        let subject = match X509Certificate::from_der(&der) {
            Ok(([], cert)) => cert.subject().to_string(),
            _ => {
                return Err(BundleError::Malformed {
                    path: shown_path(),
                    index,
                });
            }
        };
        let sha256: [u8; 32] = Sha256::digest(&der).into();
        if !out.iter().any(|c| c.sha256 == sha256) {
            out.push(BundleCa {
                der,
                sha256,
                subject,
            });
        }
    }
    Ok(CaBundle {
        path: path.to_owned(),
        sha256: Sha256::digest(bytes).into(),
        members: out,
    })
}

/// What to change so that the members loaded (by [`BundleCa::id`]) become `wanted`: the
/// members to add and the ids to remove. Members loaded and still wanted are left alone.
pub fn diff<'a>(
    loaded: &BTreeSet<String>,
    wanted: &'a [BundleCa],
) -> (Vec<&'a BundleCa>, Vec<String>) {
    let ids: BTreeSet<String> = wanted.iter().map(BundleCa::id).collect();
    let add = wanted
        .iter()
        .filter(|c| !loaded.contains(&c.id()))
        .collect();
    let remove = loaded.difference(&ids).cloned().collect();
    (add, remove)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cert::{CertSource, FsCertSource};
    use crate::model::test_pki::{EC, self_signed};

    fn read_bundle(path: &Path) -> Result<Vec<BundleCa>, BundleError> {
        FsCertSource::new()
            .ca_bundle(path)
            .map(|b| b.members.clone())
    }

    /// A self-signed CA (PEM), with its key next to it.
    fn make_ca(dir: &Path, cn: &str) -> PathBuf {
        self_signed(dir, cn, cn, &EC).0
    }

    fn cat(dir: &Path, name: &str, parts: &[&Path]) -> PathBuf {
        let mut text = b"# a comment line outside the blocks\n".to_vec();
        for p in parts {
            text.extend(std::fs::read(p).unwrap());
        }
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn every_member_of_a_bundle_is_read_in_order_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let (ca1, ca2) = (make_ca(dir.path(), "ca1"), make_ca(dir.path(), "ca2"));
        let bundle = cat(dir.path(), "b.pem", &[&ca1, &ca2, &ca1]);
        let cas = read_bundle(&bundle).unwrap();
        let subjects: Vec<&str> = cas.iter().map(|c| c.subject.as_str()).collect();
        assert_eq!(subjects, ["CN=ca1", "CN=ca2"]);
        assert_eq!(cas[0].id().len(), 16);
        assert_ne!(cas[0].id(), cas[1].id());
        // A single CA, and the same CA as DER, give the same member.
        let single = read_bundle(&ca1).unwrap();
        assert_eq!(single, cas[..1]);
        let der = dir.path().join("ca1.der");
        std::fs::write(&der, &cas[0].der).unwrap();
        assert_eq!(read_bundle(&der).unwrap(), single);
    }

    #[test]
    fn a_bad_member_rejects_the_bundle_naming_the_file_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let ca1 = make_ca(dir.path(), "ca1");
        let key = dir.path().join("ca1.key");
        let with_key = cat(dir.path(), "k.pem", &[&ca1, &key]);
        let err = read_bundle(&with_key).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "CA bundle '{}': member 2 is a \"PRIVATE KEY\" block, not a certificate",
                with_key.display()
            )
        );
        let key_text = std::fs::read_to_string(&key).unwrap();
        let body = key_text.lines().nth(1).unwrap();
        assert!(!err.contains(body));

        let junk = dir.path().join("junk.pem");
        let mut text = std::fs::read(&ca1).unwrap();
        text.extend(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        std::fs::write(&junk, text).unwrap();
        assert_eq!(
            read_bundle(&junk).unwrap_err(),
            BundleError::Malformed {
                path: junk.display().to_string(),
                index: 2
            }
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "\n").unwrap();
        assert!(matches!(
            read_bundle(&empty),
            Err(BundleError::Empty { .. })
        ));
        let text = dir.path().join("text.pem");
        std::fs::write(&text, "not a certificate").unwrap();
        assert!(matches!(
            read_bundle(&text),
            Err(BundleError::Malformed { index: 1, .. })
        ));
        let err = read_bundle(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with("not a regular file"), "{err}");
    }

    #[test]
    fn diff_adds_and_removes_only_the_changed_members() {
        let dir = tempfile::tempdir().unwrap();
        let (ca1, ca2, ca3) = (
            make_ca(dir.path(), "ca1"),
            make_ca(dir.path(), "ca2"),
            make_ca(dir.path(), "ca3"),
        );
        let old = read_bundle(&cat(dir.path(), "old.pem", &[&ca1, &ca2])).unwrap();
        let new = read_bundle(&cat(dir.path(), "new.pem", &[&ca2, &ca3])).unwrap();
        let loaded: BTreeSet<String> = old.iter().map(BundleCa::id).collect();
        let (add, remove) = diff(&loaded, &new);
        assert_eq!(add, [&new[1]]);
        assert_eq!(add[0].subject, "CN=ca3");
        assert_eq!(remove, [old[0].id()]);
        // Nothing loaded: everything is added; the same bundle again: nothing to do.
        let (add, remove) = diff(&BTreeSet::new(), &new);
        assert_eq!((add.len(), remove.len()), (2, 0));
        let now: BTreeSet<String> = new.iter().map(BundleCa::id).collect();
        let (add, remove) = diff(&now, &new);
        assert!(add.is_empty() && remove.is_empty());
    }
}
