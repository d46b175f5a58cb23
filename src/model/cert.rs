//! Certificate facts the model needs (the CN), read through a [`CertSource`] so the model
//! stays pure. [`FsCertSource`] reads PEM or DER files with x509-parser and caches by file
//! identity.
//!
//! The Python monitor ran `openssl x509 -subject` on every OVSDB change and took the CN with a
//! regex that needed a comma after it, so a certificate whose subject is only `CN=foo` (or
//! ends with the CN) had "no CN". We read the subject's attributes, so the CN is found
//! wherever it sits.
//!
//! The cache key is (path, device, inode, mtime, size), taken with `fstat` on the opened file
//! so it describes exactly the bytes we read: a rewritten or replaced file is parsed again,
//! an untouched one is not. Outcomes, failures included, are cached, since the same bytes give
//! the same answer. Files are opened non-blocking and must be regular files of at most
//! [`MAX_CERT_SIZE`] bytes, so a path to a FIFO or `/dev/zero` cannot stall the daemon.

use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use super::bundle::{BundleError, CaBundle, parse_bundle};
use super::grammar::shown;

/// Largest certificate file we read. Real certificates are a few KiB.
pub const MAX_CERT_SIZE: u64 = 1 << 20;

/// What the model (and `diagnose`) learns from a certificate file. Certificates are public:
/// every field may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's CN, wherever it sits in the subject.
    pub cn: String,
    /// SHA-256 of the DER certificate, so backends can notice a changed file at the same path.
    pub sha256: [u8; 32],
    /// The subject, as OpenSSL's one-line form (`CN=foo, O=bar`).
    pub subject: String,
    /// Validity, in seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// Subject alternative names: DNS names, IP addresses and e-mail addresses.
    pub sans: Vec<String>,
    /// The DER certificate, for signature checks.
    pub der: Arc<[u8]>,
}

impl CertInfo {
    /// The DER `SubjectPublicKeyInfo`, to compare with a private key's public half.
    pub fn spki(&self) -> Option<Vec<u8>> {
        X509Certificate::from_der(&self.der)
            .ok()
            .map(|(_, c)| c.public_key().raw.to_vec())
    }

    /// Whether `ca`'s key signed this certificate; `Err` when the algorithm is not supported
    /// or a certificate cannot be read.
    pub fn signed_by(&self, ca: &CertInfo) -> Result<bool, String> {
        let (Ok((_, cert)), Ok((_, ca))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&ca.der),
        ) else {
            return Err("cannot parse the certificates".to_owned());
        };
        match cert.verify_signature(Some(ca.public_key())) {
            Ok(()) => Ok(true),
            Err(X509Error::SignatureVerificationError) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Reads certificate facts; errors are human-readable reasons ("cannot read /x: No such file").
pub trait CertSource {
    fn cert_info(&mut self, path: &Path) -> Result<CertInfo, String>;
    /// The DER public key of the private key at `path` (see [`super::key`]).
    fn key_public(&mut self, path: &Path) -> Result<Vec<u8>, String>;
    /// The CA bundle at `path` (see [`super::bundle`]).
    fn ca_bundle(&mut self, path: &Path) -> Result<Arc<CaBundle>, BundleError>;
}

/// Why a certificate could not give a CN. Paths are shown escaped when unusual.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CertError {
    #[error("cannot read '{path}': {detail}")]
    Read { path: String, detail: String },
    #[error("'{path}' is not a PEM or DER certificate")]
    NotCertificate { path: String },
    #[error("certificate '{path}' has no CN in its subject")]
    NoCn { path: String },
}

/// The identity of the bytes behind a path, as `fstat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    size: u64,
}

impl FileId {
    fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            size: meta.size(),
        }
    }
}

/// A path's last outcome and the identity of the file it came from.
type Cache<T> = HashMap<PathBuf, (FileId, T)>;

/// Reads certificates, private keys (their public half only) and CA bundles from the file
/// system, caching each path's last outcome.
#[derive(Debug, Default)]
pub struct FsCertSource {
    cache: Cache<Result<CertInfo, CertError>>,
    keys: Cache<Result<Vec<u8>, String>>,
    bundles: Cache<Result<Arc<CaBundle>, BundleError>>,
}

/// `path` opened non-blocking, if it is a regular file, and its identity.
fn open_regular(path: &Path) -> Result<(File, FileId), String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    Ok((file, FileId::of(&meta)))
}

/// The cached outcome for `path` if its file is unchanged, else `parse` of its bytes (cached).
fn cached<T: Clone>(
    cache: &mut Cache<T>,
    path: &Path,
    read_error: impl Fn(String) -> T,
    parse: impl FnOnce(Vec<u8>) -> T,
) -> T {
    let (file, id) = match open_regular(path) {
        Ok(f) => f,
        Err(e) => return read_error(e),
    };
    if let Some((cached_id, outcome)) = cache.get(path)
        && *cached_id == id
    {
        return outcome.clone();
    }
    let outcome = match read_limited(file) {
        Ok(bytes) => parse(bytes),
        Err(e) => read_error(e.to_string()),
    };
    cache.insert(path.to_owned(), (id, outcome.clone()));
    outcome
}

impl FsCertSource {
    pub fn new() -> Self {
        Self::default()
    }

    /// The CN and DER digest of the certificate at `path`, parsed again only if the file
    /// changed since the last call.
    pub fn read(&mut self, path: &Path) -> Result<CertInfo, CertError> {
        let shown_path = || shown(&path.to_string_lossy()).into_owned();
        cached(
            &mut self.cache,
            path,
            |detail| {
                Err(CertError::Read {
                    path: shown_path(),
                    detail,
                })
            },
            |bytes| parse(&bytes, shown_path),
        )
    }
}

impl CertSource for FsCertSource {
    fn cert_info(&mut self, path: &Path) -> Result<CertInfo, String> {
        self.read(path).map_err(|e| e.to_string())
    }

    fn key_public(&mut self, path: &Path) -> Result<Vec<u8>, String> {
        cached(
            &mut self.keys,
            path,
            |detail| {
                Err(format!(
                    "cannot read '{}': {detail}",
                    shown(&path.to_string_lossy())
                ))
            },
            |mut bytes| super::key::public_key(&mut bytes),
        )
    }

    fn ca_bundle(&mut self, path: &Path) -> Result<Arc<CaBundle>, BundleError> {
        cached(
            &mut self.bundles,
            path,
            |detail| {
                Err(BundleError::Read {
                    path: shown(&path.to_string_lossy()).into_owned(),
                    detail,
                })
            },
            |bytes| parse_bundle(&bytes, path).map(Arc::new),
        )
    }
}

/// Reads the whole file, refusing more than [`MAX_CERT_SIZE`] bytes.
pub(super) fn read_limited(file: File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(MAX_CERT_SIZE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CERT_SIZE {
        return Err(std::io::Error::other("file too large for a certificate"));
    }
    Ok(bytes)
}

/// The first `CERTIFICATE` PEM block, or else the whole file as DER.
pub(crate) fn parse(bytes: &[u8], shown_path: impl Fn() -> String) -> Result<CertInfo, CertError> {
    let pem_der = Pem::iter_from_buffer(bytes)
        .map_while(Result::ok)
        .find(|pem| pem.label == "CERTIFICATE" || pem.label == "X509 CERTIFICATE")
        .map(|pem| pem.contents);
    let der = pem_der.as_deref().unwrap_or(bytes);
    let cert = match X509Certificate::from_der(der) {
        Ok(([], cert)) => cert,
        _ => {
            return Err(CertError::NotCertificate { path: shown_path() });
        }
    };
    let cn = cert
        .subject()
        .iter_common_name()
        .find_map(|attr| attr.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| CertError::NoCn { path: shown_path() })?;
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) => Some((*s).to_owned()),
                    GeneralName::IPAddress(b) => ip_from_bytes(b).map(|ip| ip.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertInfo {
        cn: cn.to_owned(),
        sha256: Sha256::digest(der).into(),
        subject: cert.subject().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sans,
        der: der.into(),
    })
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(Into::into),
        16 => <[u8; 16]>::try_from(b).ok().map(Into::into),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A self-signed certificate with `subject`, made by the real `openssl`, in `dir`.
    fn make_cert(dir: &Path, name: &str, subject: &str, der: bool) -> PathBuf {
        let cert = dir.join(name);
        let key = dir.join(format!("{name}.key"));
        let mut cmd = Command::new("openssl");
        cmd.args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", subject])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
        if der {
            cmd.args(["-outform", "DER"]);
        }
        let out = cmd
            .output()
            .expect("openssl must be installed (/usr/bin/openssl) for these tests");
        assert!(
            out.status.success(),
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cert
    }

    fn der_of(pem_path: &Path) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(pem_path)
            .output()
            .expect("openssl must be installed");
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn cn_alone_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = make_cert(dir.path(), "a.pem", "/CN=foo", false);
        let info = FsCertSource::new().cert_info(&path).unwrap();
        assert_eq!(info.cn, "foo");
        let digest: [u8; 32] = Sha256::digest(der_of(&path)).into();
        assert_eq!(info.sha256, digest);
    }

    #[test]
    fn cn_in_the_middle_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = make_cert(dir.path(), "b.pem", "/O=x/CN=foo/OU=y", false);
        assert_eq!(FsCertSource::new().cert_info(&path).unwrap().cn, "foo");
    }

    #[test]
    fn der_certificate_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = make_cert(dir.path(), "c.der", "/O=x/CN=bar", true);
        assert_eq!(FsCertSource::new().cert_info(&path).unwrap().cn, "bar");
    }

    #[test]
    fn reasons() {
        let dir = tempfile::tempdir().unwrap();
        let no_cn = make_cert(dir.path(), "d.pem", "/O=x/OU=y", false);
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let mut certs = FsCertSource::new();
        assert_eq!(
            certs.cert_info(&no_cn).unwrap_err(),
            format!("certificate '{}' has no CN in its subject", no_cn.display())
        );
        assert_eq!(
            certs.cert_info(&junk).unwrap_err(),
            format!("'{}' is not a PEM or DER certificate", junk.display())
        );
        assert_eq!(
            certs.cert_info(&missing).unwrap_err(),
            format!(
                "cannot read '{}': No such file or directory (os error 2)",
                missing.display()
            )
        );
        let err = certs.cert_info(dir.path()).unwrap_err();
        assert!(err.ends_with("not a regular file"), "{err}");
    }

    #[test]
    fn a_private_key_is_not_a_certificate_and_is_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let cert = make_cert(dir.path(), "e.pem", "/CN=foo", false);
        let key = dir.path().join("e.pem.key");
        let err = FsCertSource::new().cert_info(&key).unwrap_err();
        assert!(err.contains("is not a PEM or DER certificate"), "{err}");
        assert!(!err.contains("PRIVATE") && err.len() < 200, "{err}");
        // A bundle with the key first still yields the certificate.
        let bundle = dir.path().join("bundle.pem");
        let mut text = std::fs::read(&key).unwrap();
        text.extend(std::fs::read(&cert).unwrap());
        std::fs::write(&bundle, text).unwrap();
        assert_eq!(FsCertSource::new().cert_info(&bundle).unwrap().cn, "foo");
    }

    #[test]
    fn cache_follows_file_identity() {
        let dir = tempfile::tempdir().unwrap();
        let foo = make_cert(dir.path(), "foo.pem", "/CN=foo", false);
        let bar = make_cert(dir.path(), "bar.pem", "/CN=bar", false);
        let path = dir.path().join("peer.pem");
        std::fs::copy(&foo, &path).unwrap();
        let mut certs = FsCertSource::new();
        assert_eq!(certs.cert_info(&path).unwrap().cn, "foo");
        assert_eq!(certs.cache.len(), 1);
        // Same file, same answer from the cache.
        assert_eq!(certs.cert_info(&path).unwrap().cn, "foo");
        // Replaced by rename (new inode): parsed again.
        let tmp = dir.path().join("peer.tmp");
        std::fs::copy(&bar, &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(certs.cert_info(&path).unwrap().cn, "bar");
        // Deleted: the cache must not hide it.
        std::fs::remove_file(&path).unwrap();
        assert!(
            certs
                .cert_info(&path)
                .unwrap_err()
                .starts_with("cannot read")
        );
    }

    #[test]
    fn oversized_and_odd_paths_are_refused_and_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_CERT_SIZE as usize + 1]).unwrap();
        let err = FsCertSource::new().cert_info(&big).unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let odd = dir.path().join("a\nb.pem");
        let err = FsCertSource::new().cert_info(&odd).unwrap_err();
        assert!(!err.contains('\n') && err.contains("\\n"), "{err}");
    }
}

/// A [`CertSource`] for tests: CNs by path, and a count of lookups.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    /// Keys are unknown (nothing to check); bundles are empty unless `bad_bundles` holds their
    /// path.
    #[derive(Debug, Default)]
    pub(crate) struct FakeCerts {
        pub cns: HashMap<PathBuf, String>,
        pub lookups: usize,
        pub bad_bundles: HashMap<PathBuf, BundleError>,
    }

    impl FakeCerts {
        pub fn with(certs: &[(&str, &str)]) -> Self {
            Self {
                cns: certs
                    .iter()
                    .map(|(p, cn)| (PathBuf::from(p), (*cn).to_owned()))
                    .collect(),
                ..Self::default()
            }
        }
    }

    impl CertSource for FakeCerts {
        fn cert_info(&mut self, path: &Path) -> Result<CertInfo, String> {
            self.lookups += 1;
            match self.cns.get(path) {
                Some(cn) => Ok(CertInfo {
                    cn: cn.clone(),
                    sha256: Sha256::digest(cn.as_bytes()).into(),
                    subject: format!("CN={cn}"),
                    not_before: 0,
                    not_after: i64::MAX,
                    sans: Vec::new(),
                    der: Arc::from(&[][..]),
                }),
                None => Err(format!(
                    "cannot read '{}': No such file or directory (os error 2)",
                    path.display()
                )),
            }
        }

        fn key_public(&mut self, _: &Path) -> Result<Vec<u8>, String> {
            Err("a fake key".to_owned())
        }

        fn ca_bundle(&mut self, path: &Path) -> Result<Arc<CaBundle>, BundleError> {
            match self.bad_bundles.get(path) {
                Some(e) => Err(e.clone()),
                None => Ok(Arc::new(CaBundle {
                    path: path.to_owned(),
                    sha256: Sha256::digest(path.as_os_str().as_encoded_bytes()).into(),
                    members: Vec::new(),
                })),
            }
        }
    }
}
