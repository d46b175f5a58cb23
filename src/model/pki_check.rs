//! The files a certificate tunnel depends on, beyond the certificate's CN, checked while the
//! tunnel is validated so that every backend gets the same answer: the private key must
//! belong to the certificate, and a CA-signed tunnel's CA bundle must parse as a whole. A
//! failure makes the tunnel `invalid` with a reason that names the files, never their content.
//!
//! A key that cannot be read or parsed here (encrypted, a kind ring does not load) is left to
//! the IKE daemon and to `diagnose`: only a key known to be another certificate's is refused.

use super::cert::CertSource;
use super::grammar::shown;
use super::key;
use super::types::{Auth, Pki};

/// `Err` is the tunnel's invalid reason (with its leading ": ").
pub(super) fn check(pki: &Pki, auth: &Auth, certs: &mut dyn CertSource) -> Result<(), String> {
    if let (Ok(cert), Ok(key)) = (
        certs.cert_info(&pki.certificate),
        certs.key_public(&pki.private_key),
    ) && key::belongs(&cert, &key) == Some(false)
    {
        return Err(format!(
            ": the private key '{}' does not belong to the certificate '{}' ({})",
            shown(&pki.private_key.to_string_lossy()),
            shown(&pki.certificate.to_string_lossy()),
            cert.subject
        ));
    }
    if let (Auth::CaSigned { .. }, Some(ca)) = (auth, &pki.ca_cert) {
        certs.ca_bundle(ca).map_err(|e| format!(": {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bundle::BundleError;
    use crate::model::cert::FsCertSource;
    use crate::model::cert::fake::FakeCerts;
    use crate::model::test_pki::{EC, self_signed};
    use std::path::{Path, PathBuf};

    fn ca_signed() -> Auth {
        Auth::CaSigned {
            remote_name: "peer".into(),
        }
    }

    fn pki(dir: &Path, cert: &str, key: &str) -> Pki {
        Pki {
            certificate: dir.join(format!("{cert}.pem")),
            private_key: dir.join(format!("{key}.key")),
            ca_cert: Some(dir.join(format!("{cert}.pem"))),
            local_name: "k".into(),
        }
    }

    /// A self-signed certificate `<name>.pem` (CN `k`) and its key `<name>.key`.
    fn make(dir: &Path, name: &str) -> PathBuf {
        self_signed(dir, name, "k", &EC).1
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_the_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let key_a = make(dir.path(), "a");
        make(dir.path(), "b");
        let mut certs = FsCertSource::new();
        assert_eq!(
            check(&pki(dir.path(), "a", "a"), &ca_signed(), &mut certs),
            Ok(())
        );
        let err = check(&pki(dir.path(), "a", "b"), &ca_signed(), &mut certs).unwrap_err();
        assert_eq!(
            err,
            format!(
                ": the private key '{}' does not belong to the certificate '{}' (CN=k)",
                dir.path().join("b.key").display(),
                dir.path().join("a.pem").display()
            )
        );
        let key_text = std::fs::read_to_string(key_a).unwrap();
        assert!(key_text.lines().skip(1).all(|l| !err.contains(l)));
        // A key that cannot be parsed is not judged here.
        std::fs::write(dir.path().join("c.key"), "not a key").unwrap();
        assert_eq!(
            check(&pki(dir.path(), "a", "c"), &ca_signed(), &mut certs),
            Ok(())
        );
    }

    #[test]
    fn a_malformed_bundle_refuses_ca_signed_tunnels_only() {
        let p = Pki {
            certificate: "/etc/ovs/cert.pem".into(),
            private_key: "/etc/ovs/key.pem".into(),
            ca_cert: Some("/etc/ovs/ca.pem".into()),
            local_name: "host1".into(),
        };
        let mut certs = FakeCerts::with(&[("/etc/ovs/cert.pem", "host1")]);
        assert_eq!(check(&p, &ca_signed(), &mut certs), Ok(()));
        certs.bad_bundles.insert(
            "/etc/ovs/ca.pem".into(),
            BundleError::Malformed {
                path: "/etc/ovs/ca.pem".into(),
                index: 2,
            },
        );
        assert_eq!(
            check(&p, &ca_signed(), &mut certs),
            Err(": CA bundle '/etc/ovs/ca.pem': member 2 is not a valid X.509 certificate".into())
        );
        let self_signed = Auth::SelfSigned {
            remote_cert: "/peer.pem".into(),
            remote_name: "host2".into(),
        };
        assert_eq!(check(&p, &self_signed, &mut certs), Ok(()));
    }
}
