//! The fleet CA: created once by `gantry init`, it issues the controller's server
//! certificate, admin certificates and node certificates. Keys are ECDSA P-256.
//!
//! Files in the controller directory (mode 0700):
//! - `ca.key` (0600), `ca.crt` — the fleet CA;
//! - `controller.key` (0600), `controller.crt` — the QUIC server certificate, for
//!   [`CONTROLLER_SERVER_NAME`]; join tokens pin its SHA-256;
//! - `admin.identity` (0600) — the first admin's certificate, key, the CA and the
//!   controller address: everything the CLI needs.
//!
//! Node certificates are issued for a public key the node sends; its private key never
//! leaves the node. Certificates carry the node name (`<name>.node.gantry`) for people;
//! the controller identifies a connection by the certificate's SHA-256 in its store,
//! which is also what revocation marks.

use std::path::{Path, PathBuf};

use gantry_shared::protocol::CONTROLLER_SERVER_NAME;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SignatureAlgorithm,
};

/// Certificate failures.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the public key is not an uncompressed ECDSA P-256 point (65 bytes, 0x04 first)")]
    BadPublicKey,
    #[error("the certificate's validity cannot be encoded: {0}")]
    Validity(String),
}

const CA_NAME: &str = "Gantry fleet CA";

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "Gantry");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    params
}

/// When a leaf certificate is valid, in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before_ms: u64,
    pub not_after_ms: u64,
}

impl Validity {
    /// Valid from a little before `now_ms` (clocks differ) for `lifetime`.
    pub fn starting(now_ms: u64, lifetime: std::time::Duration) -> Self {
        Self {
            not_before_ms: now_ms.saturating_sub(CLOCK_SKEW_MS),
            not_after_ms: now_ms.saturating_add(lifetime.as_millis() as u64),
        }
    }
}

/// How far a peer's clock may be behind: certificates start this much before issuance.
const CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

fn date(ms: u64) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000).cast_signed())
        .map_err(|e| CaError::Validity(e.to_string()))
}

fn leaf_params(
    common_name: &str,
    dns_names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    validity: Validity,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::new(dns_names)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.not_before = date(validity.not_before_ms)?;
    params.not_after = date(validity.not_after_ms)?;
    Ok(params)
}

/// A public key a peer sent: an uncompressed P-256 point.
#[derive(Debug, Clone)]
pub struct PeerPublicKey(Vec<u8>);

impl PeerPublicKey {
    pub fn from_hex(text: &str) -> Result<Self, CaError> {
        let bytes = gantry_shared::bundle::signing::from_hex(text).ok_or(CaError::BadPublicKey)?;
        if bytes.len() != 65 || bytes[0] != 0x04 {
            return Err(CaError::BadPublicKey);
        }
        Ok(Self(bytes))
    }
}

impl PublicKeyData for PeerPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// A fresh P-256 key pair: (private key PEM, public key hex) — what a node or an admin
/// makes for itself before asking for a certificate.
pub fn new_key_pair() -> Result<(String, String), CaError> {
    let key = KeyPair::generate()?;
    Ok((
        key.serialize_pem(),
        gantry_shared::bundle::signing::to_hex(key.public_key_raw()),
    ))
}

/// PEM texts of a new CA, controller certificate and first admin.
#[derive(Debug, Clone)]
pub struct NewFleet {
    pub ca_key_pem: String,
    pub ca_cert_pem: String,
    pub controller_key_pem: String,
    pub controller_cert_pem: String,
    pub admin_key_pem: String,
    pub admin_cert_pem: String,
}

/// The loaded CA, able to issue certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates the CA, the controller certificate and the first admin certificate.
    pub fn create_fleet(admin_name: &str, admin_validity: Validity) -> Result<NewFleet, CaError> {
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params().self_signed(&ca_key)?;
        let ca = Self {
            cert_pem: ca_cert.pem(),
            issuer: Issuer::new(ca_params(), KeyPair::from_pem(&ca_key.serialize_pem())?),
        };
        let controller_key = KeyPair::generate()?;
        // The controller's certificate is what join tokens pin: it lives as long as the CA.
        let controller_cert = leaf_params(
            CONTROLLER_SERVER_NAME,
            vec![CONTROLLER_SERVER_NAME.to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity {
                not_before_ms: 1_735_689_600_000,
                not_after_ms: 2_366_841_600_000,
            },
        )?
        .signed_by(&controller_key, &ca.issuer)?;
        let admin_key = KeyPair::generate()?;
        let (admin_key_pem, admin_public) = (
            admin_key.serialize_pem(),
            gantry_shared::bundle::signing::to_hex(admin_key.public_key_raw()),
        );
        let admin_cert_pem = ca.issue_admin(
            admin_name,
            &PeerPublicKey::from_hex(&admin_public)?,
            admin_validity,
        )?;
        Ok(NewFleet {
            ca_key_pem: ca_key.serialize_pem(),
            ca_cert_pem: ca.cert_pem.clone(),
            controller_key_pem: controller_key.serialize_pem(),
            controller_cert_pem: controller_cert.pem(),
            admin_key_pem,
            admin_cert_pem,
        })
    }

    /// Loads the CA from `ca.key` and `ca.crt` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| CaError::Read { path, source })
        };
        let key = KeyPair::from_pem(&read("ca.key")?)?;
        Ok(Self {
            cert_pem: read("ca.crt")?,
            issuer: Issuer::new(ca_params(), key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A client certificate naming node `name`, for its public key.
    pub fn issue_node(
        &self,
        name: &str,
        key: &PeerPublicKey,
        validity: Validity,
    ) -> Result<String, CaError> {
        let params = leaf_params(
            name,
            vec![format!("{name}.node.gantry")],
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )?;
        Ok(params.signed_by(key, &self.issuer)?.pem())
    }

    /// A client certificate naming admin `name`, for its public key.
    pub fn issue_admin(
        &self,
        name: &str,
        key: &PeerPublicKey,
        validity: Validity,
    ) -> Result<String, CaError> {
        let params = leaf_params(
            name,
            vec![format!("{name}.admin.gantry")],
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )?;
        Ok(params.signed_by(key, &self.issuer)?.pem())
    }
}

/// SHA-256 of the first certificate in a PEM text.
pub fn pem_fingerprint(pem: &str) -> Result<String, gantry_shared::tls::TlsError> {
    let certs = gantry_shared::tls::certificates_from_pem(pem, "certificate")?;
    Ok(gantry_shared::tls::fingerprint(&certs[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_certificates_build_tls_configurations() {
        let fleet = Ca::create_fleet(
            "root",
            Validity::starting(
                gantry_net::clock::now_ms(),
                std::time::Duration::from_secs(3600),
            ),
        )
        .unwrap();
        gantry_shared::tls::server_config(
            &fleet.ca_cert_pem,
            &fleet.controller_cert_pem,
            &fleet.controller_key_pem,
        )
        .unwrap();
        gantry_shared::tls::client_config(
            &fleet.ca_cert_pem,
            &fleet.admin_cert_pem,
            &fleet.admin_key_pem,
        )
        .unwrap();
    }

    #[test]
    fn bad_public_keys_are_refused() {
        assert!(PeerPublicKey::from_hex("04").is_err());
        assert!(PeerPublicKey::from_hex(&"05".repeat(65)).is_err());
        assert!(PeerPublicKey::from_hex(&format!("04{}", "00".repeat(64))).is_ok());
    }
}
