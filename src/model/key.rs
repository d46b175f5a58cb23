//! Does a private key belong to a certificate? The model makes a certificate tunnel `invalid`
//! when it does not (every backend would fail to sign with it), and `diagnose` reports it as
//! `cert-key-mismatch`; both use [`public_key`] and [`belongs`].
//!
//! The key is parsed in-process (rustls with ring: PKCS#8, PKCS#1 RSA and SEC1 EC keys in PEM
//! or DER) and only its public half leaves this module. Key bytes are zeroed after use, and
//! no error carries anything read from the file. A key rustls cannot load (an encrypted key, a
//! curve or size ring does not support) gives `Err`: nothing can be said about it, so the
//! model leaves the tunnel alone and `diagnose` says it could not check.

use rustls::crypto::ring::sign::any_supported_type;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::cert::CertInfo;

/// The DER `SubjectPublicKeyInfo` of the private key in `bytes` (PEM, or else DER). `bytes`
/// is zeroed before returning.
pub fn public_key(bytes: &mut [u8]) -> Result<Vec<u8>, String> {
    let out = public_key_of(bytes);
    bytes.fill(0);
    out
}

fn public_key_of(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let der = match PrivateKeyDer::from_pem_slice(bytes) {
        Ok(der) => der,
        Err(_) => PrivateKeyDer::try_from(bytes.to_vec())
            .map_err(|_| "not a PEM or DER private key (or an encrypted one)".to_owned())?,
    };
    let key = any_supported_type(&der)
        .map_err(|_| "a private key of a kind that cannot be checked here".to_owned())?;
    key.public_key()
        .map(|spki| spki.as_ref().to_vec())
        .ok_or_else(|| "a private key without a public key to compare".to_owned())
}

/// Whether the key whose public half is `key_spki` belongs to `cert`: the public key bits are
/// compared, not the algorithm parameters' encoding. `None` when either cannot be parsed.
pub fn belongs(cert: &CertInfo, key_spki: &[u8]) -> Option<bool> {
    let cert_spki = cert.spki()?;
    let bits = |der: &[u8]| {
        SubjectPublicKeyInfo::from_der(der)
            .ok()
            .map(|(_, s)| s.subject_public_key.data.to_vec())
    };
    Some(bits(&cert_spki)? == bits(key_spki)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cert::parse;
    use crate::model::test_pki::{EC, self_signed};
    use std::path::Path;
    use std::process::Command;

    /// A self-signed certificate and its key (their bytes).
    fn make(dir: &Path, name: &str, newkey: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let (cert, key) = self_signed(dir, name, "k", newkey);
        (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())
    }

    #[test]
    fn a_key_belongs_to_its_certificate_only() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, mut key_a) = make(dir.path(), "a", &EC);
        let (_, mut key_b) = make(dir.path(), "b", &EC);
        let (cert_r, _) = make(dir.path(), "r", &["-newkey", "rsa:2048"]);
        let cert_a = parse(&cert_a, String::new).unwrap();
        let cert_r = parse(&cert_r, String::new).unwrap();
        let spki_a = public_key(&mut key_a).unwrap();
        assert!(key_a.iter().all(|b| *b == 0), "the key bytes are zeroed");
        assert_eq!(belongs(&cert_a, &spki_a), Some(true));
        assert_eq!(
            belongs(&cert_a, &public_key(&mut key_b).unwrap()),
            Some(false)
        );
        // PKCS#1 RSA, as older tools write it.
        let rsa1 = dir.path().join("r1.key");
        let out = Command::new("openssl")
            .args(["pkey", "-traditional", "-out"])
            .arg(&rsa1)
            .arg("-in")
            .arg(dir.path().join("r.key"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let mut rsa1 = std::fs::read(rsa1).unwrap();
        assert!(String::from_utf8_lossy(&rsa1).contains("BEGIN RSA PRIVATE KEY"));
        assert_eq!(
            belongs(&cert_r, &public_key(&mut rsa1).unwrap()),
            Some(true)
        );
        assert_eq!(belongs(&cert_r, &spki_a), Some(false));
    }

    #[test]
    fn what_is_not_a_usable_key_is_an_error_without_content() {
        let mut junk =
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n".to_vec();
        let err = public_key(&mut junk).unwrap_err();
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let mut text = b"secret text".to_vec();
        assert!(public_key(&mut text).is_err());
    }
}
