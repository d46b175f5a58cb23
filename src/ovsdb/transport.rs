//! Opening a byte stream to a [`Remote`]: unix socket, TCP, or TLS over TCP.
//!
//! TLS follows OVS's model, not the web's: both sides present certificates signed by the CA
//! named in the configuration, and the server's chain is verified against that CA, but its
//! host name is not checked (OVS compares no names; certificates in OVS deployments name
//! switches, not hosts). The key, certificate and CA are re-read on every connection, so
//! rotated files take effect at the next reconnect.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::error::OvsdbError;
use super::remote::Remote;

/// The PEM files of an `ssl:` connection (OVS's `--private-key`, `--certificate`, `--ca-cert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub private_key: PathBuf,
    pub certificate: PathBuf,
    pub ca_cert: PathBuf,
}

/// Any connected byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub async fn connect(
    remote: &Remote,
    tls: Option<&TlsFiles>,
) -> Result<Box<dyn Stream>, OvsdbError> {
    match remote {
        Remote::Unix(path) => Ok(Box::new(UnixStream::connect(path).await?)),
        Remote::Tcp(host, port) => Ok(Box::new(tcp(host, *port).await?)),
        Remote::Ssl(host, port) => {
            let files = tls.ok_or_else(|| {
                OvsdbError::Tls(
                    "ssl remote needs a private key, certificate and CA certificate".into(),
                )
            })?;
            let connector = TlsConnector::from(Arc::new(client_config(files)?));
            let stream = tcp(host, *port).await?;
            let tls = connector.connect(server_name(host), stream).await?;
            Ok(Box::new(tls))
        }
    }
}

async fn tcp(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port)).await?;
    // Updates are small and latency matters more than packet count.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The name handed to rustls; it is never compared (see [`AnyNameVerifier`]), but SNI needs
/// a syntactically valid one.
fn server_name(host: &str) -> ServerName<'static> {
    match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_owned())
            .unwrap_or_else(|_| ServerName::IpAddress(IpAddr::from([127, 0, 0, 1]).into())),
    }
}

fn client_config(files: &TlsFiles) -> Result<ClientConfig, OvsdbError> {
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.ca_cert)? {
        roots.add(ca).map_err(|e| tls_file(&files.ca_cert, e))?;
    }
    let key = PrivateKeyDer::from_pem_file(&files.private_key)
        // The error text of a key parse never includes key bytes, but stay terse anyway.
        .map_err(|_| tls_file(&files.private_key, "no usable PEM private key"))?;
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| OvsdbError::Tls(e.to_string()))?;
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OvsdbError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyNameVerifier(webpki)))
        .with_client_auth_cert(read_certs(&files.certificate)?, key)
        .map_err(|e| OvsdbError::Tls(e.to_string()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, OvsdbError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_file(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_file(path, e))?;
    if certs.is_empty() {
        return Err(tls_file(path, "no PEM certificate"));
    }
    Ok(certs)
}

fn tls_file(path: &Path, reason: impl ToString) -> OvsdbError {
    OvsdbError::TlsFile {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Full WebPKI chain verification against our CA, except that a name mismatch is accepted.
#[derive(Debug)]
struct AnyNameVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_accepts_ips_and_names() {
        assert!(matches!(server_name("192.0.2.1"), ServerName::IpAddress(_)));
        assert!(matches!(server_name("::1"), ServerName::IpAddress(_)));
        assert!(matches!(
            server_name("ovsdb.example"),
            ServerName::DnsName(_)
        ));
        assert!(matches!(server_name("bad name!"), ServerName::IpAddress(_)));
    }

    #[test]
    fn missing_tls_files_name_the_path() {
        let files = TlsFiles {
            private_key: "/nonexistent/key.pem".into(),
            certificate: "/nonexistent/cert.pem".into(),
            ca_cert: "/nonexistent/ca.pem".into(),
        };
        let e = client_config(&files).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
