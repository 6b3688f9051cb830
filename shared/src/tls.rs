//! TLS configurations for the fleet's QUIC connections (rustls with the ring provider,
//! TLS 1.3 only, ALPN `gantry/1`).
//!
//! - The controller requires client certificates from the fleet CA but lets a client
//!   without one connect, because enrollment happens before a node has a certificate;
//!   every request other than enrollment is refused on such a connection.
//! - Enrolled nodes and admins verify the controller against the fleet CA, by the name
//!   [`crate::protocol::CONTROLLER_SERVER_NAME`].
//! - A node enrolling verifies the controller by the SHA-256 of its certificate, pinned in
//!   the join token.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::protocol::ALPN;

/// TLS set-up failures. Each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the {what} PEM")]
    NoCertificate { what: &'static str },
    #[error("the {what} PEM is not valid: {message}")]
    Pem { what: &'static str, message: String },
    #[error("TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
    #[error("client verifier configuration failed: {0}")]
    Verifier(String),
    #[error("the {what} was not issued by this CA: {message}")]
    NotIssued { what: &'static str, message: String },
    #[error("the signature does not verify with the {what}'s key")]
    BadSignature { what: &'static str },
}

/// What a certificate is for, to check it against a CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The controller's server certificate, by [`crate::protocol::CONTROLLER_SERVER_NAME`].
    Controller,
    /// A node's or admin's client certificate.
    Client,
}

/// Checks that `cert` was issued, for `role`, by the CA in `ca_pem`, and is valid at `now`.
pub fn verify_issued_by(
    ca_pem: &str,
    cert: &CertificateDer<'_>,
    role: Role,
    now: std::time::SystemTime,
) -> Result<(), TlsError> {
    let now = UnixTime::since_unix_epoch(
        now.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let roots = Arc::new(roots(ca_pem)?);
    let (what, result) = match role {
        Role::Controller => {
            let verifier =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
            let name = ServerName::try_from(crate::protocol::CONTROLLER_SERVER_NAME)
                .expect("the controller's name is a DNS name");
            (
                "controller certificate",
                verifier
                    .verify_server_cert(cert, &[], &name, &[], now)
                    .map(|_| ()),
            )
        }
        Role::Client => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            (
                "client certificate",
                verifier.verify_client_cert(cert, &[], now).map(|_| ()),
            )
        }
    };
    result.map_err(|e| TlsError::NotIssued {
        what,
        message: e.to_string(),
    })
}

/// Checks an ECDSA P-256 signature (SHA-256, ASN.1 DER) over `message` by the key of `cert`.
pub fn verify_signed_by(
    cert: &CertificateDer<'_>,
    what: &'static str,
    message: &[u8],
    signature: &[u8],
) -> Result<(), TlsError> {
    let cert = webpki::EndEntityCert::try_from(cert).map_err(|e| TlsError::Pem {
        what,
        message: e.to_string(),
    })?;
    cert.verify_signature(webpki::ring::ECDSA_P256_SHA256, message, signature)
        .map_err(|_| TlsError::BadSignature { what })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a certificate's DER, lowercase hexadecimal: the fingerprint tokens pin and
/// the controller keys identities by.
pub fn fingerprint(cert: &[u8]) -> String {
    crate::bundle::signing::to_hex(&Sha256::digest(cert))
}

/// Parses the certificates of a PEM bundle.
pub fn certificates_from_pem(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

/// Parses a PKCS#8 private key PEM.
pub fn private_key_from_pem(
    pem: &str,
    what: &'static str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem {
        what,
        message: e.to_string(),
    })
}

fn roots(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates_from_pem(ca_pem, "CA certificate")? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The controller's server configuration.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certificates_from_pem(cert_pem, "controller certificate")?,
            private_key_from_pem(key_pem, "controller key")?,
        )?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A client configuration with a fleet certificate, verifying the controller by the CA.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(
            certificates_from_pem(cert_pem, "client certificate")?,
            private_key_from_pem(key_pem, "client key")?,
        )?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A client configuration for an HTTPS server outside the fleet (a telemetry receiver):
/// the server verified by name against the CAs in `ca_pem` (the site's, or the system's
/// bundle), TLS 1.2 or 1.3, HTTP/1.1; with `client` (certificate chain, key) where the
/// server asks for a certificate.
pub fn https_client_config(
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _unusable) =
        roots.add_parsable_certificates(certificates_from_pem(ca_pem, "CA certificate")?);
    if added == 0 {
        return Err(TlsError::NoCertificate {
            what: "CA certificate (none usable as a trust anchor)",
        });
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert_pem, key_pem)) => builder.with_client_auth_cert(
            certificates_from_pem(cert_pem, "client certificate")?,
            private_key_from_pem(key_pem, "client key")?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration without a certificate, verifying the controller by the fleet
/// CA: a node whose certificate expired renews by proof of possession over it.
pub fn anonymous_client_config(ca_pem: &str) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A client configuration without a certificate that accepts only the controller
/// certificate whose SHA-256 is `pin` (enrollment).
pub fn pinned_client_config(pin: &str) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = PinnedServer {
        pin: pin.to_ascii_lowercase(),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Accepts exactly the server certificate with the pinned SHA-256.
#[derive(Debug)]
struct PinnedServer {
    pin: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
