//! Certificate facts the model needs (the CN), read through a [`CertSource`] so the model
//! stays pure. `FsCertSource` reads PEM files with x509-parser and caches by file identity.

use std::path::Path;

/// What the model learns from a certificate file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's CN, wherever it sits in the subject.
    pub cn: String,
    /// SHA-256 of the DER certificate, so backends can notice a changed file at the same path.
    pub sha256: [u8; 32],
}

/// Reads certificate facts; errors are human-readable reasons ("cannot read /x: No such file").
pub trait CertSource {
    fn cert_info(&mut self, path: &Path) -> Result<CertInfo, String>;
}
