//! ed25519 signatures with key ids, over exact bytes with a purpose prefix.
//!
//! A signature covers `context || message`, where the context names what is signed
//! (`gantry bundle manifest v1\0`, `gantry trust policy v1\0`): a signature made for one
//! kind of document can never be replayed as a signature on another. A key id is the
//! first 16 hexadecimal digits of the SHA-256 of the raw 32-byte public key.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most signatures a bundle or policy may carry.
pub const MAX_SIGNATURES: usize = 64;
/// The only algorithm of schema 1.
pub const ALGORITHM: &str = "ed25519";

/// What a signature is for; part of the signed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    BundleManifest,
    TrustPolicy,
}

impl Purpose {
    fn context(self) -> &'static [u8] {
        match self {
            Self::BundleManifest => b"gantry bundle manifest v1\0",
            Self::TrustPolicy => b"gantry trust policy v1\0",
        }
    }
}

/// Key material problems.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PKCS#8 PEM ed25519 private key: {0}")]
    PrivateKey(String),
    #[error("not a PEM ed25519 public key: {0}")]
    PublicKey(String),
    #[error("public key {0:?} is not 64 hexadecimal digits of an ed25519 key")]
    PublicKeyHex(String),
    #[error(
        "public key {0} is a weak ed25519 key (a point of small order): signatures could be forged for it without its private key; generate a real key with `gantry keygen`"
    )]
    WeakPublicKey(String),
}

/// Refuses a key of small order: any message "verifies" against such a key with a
/// signature anybody can make (R = identity, S = 0), so it can never be trusted.
fn refuse_weak(key: VerifyingKey) -> Result<VerifyingKey, KeyError> {
    if key.is_weak() {
        Err(KeyError::WeakPublicKey(to_hex(key.as_bytes())))
    } else {
        Ok(key)
    }
}

/// Lowercase hexadecimal.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Decodes lowercase or uppercase hexadecimal.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The key id of a public key.
pub fn key_id(key: &VerifyingKey) -> String {
    to_hex(&Sha256::digest(key.as_bytes())[..8])
}

/// Parses a PKCS#8 PEM private key.
pub fn private_key_from_pem(pem: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::PrivateKey(e.to_string()))
}

/// Encodes a private key as PKCS#8 PEM.
pub fn private_key_to_pem(key: &SigningKey) -> String {
    key.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .expect("an ed25519 key always encodes")
        .to_string()
}

/// Parses a PEM (SPKI) public key.
pub fn public_key_from_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(pem)
        .map_err(|e| KeyError::PublicKey(e.to_string()))
        .and_then(refuse_weak)
}

/// Encodes a public key as PEM (SPKI).
pub fn public_key_to_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .expect("an ed25519 key always encodes")
}

/// Parses a public key written as 64 hexadecimal digits.
pub fn public_key_from_hex(text: &str) -> Result<VerifyingKey, KeyError> {
    let bytes: [u8; 32] = from_hex(text)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KeyError::PublicKeyHex(text.to_owned()))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| KeyError::PublicKeyHex(text.to_owned()))
        .and_then(refuse_weak)
}

/// One signature as stored in a bundle or policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub key_id: String,
    pub algorithm: String,
    /// 128 hexadecimal digits.
    pub signature: String,
}

/// Why one signature does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("algorithm {0:?} is not supported (only ed25519)")]
    Algorithm(String),
    #[error("the signature is not 128 hexadecimal digits")]
    Encoding,
    #[error("the key id does not match the key that is said to have signed")]
    KeyIdMismatch,
    #[error("the signature does not match these bytes (signed a different document, or altered)")]
    Mismatch,
    #[error("the key is a weak ed25519 key (small order); nothing it signs counts")]
    WeakKey,
}

/// Signs `message` for `purpose`.
pub fn sign(key: &SigningKey, purpose: Purpose, message: &[u8]) -> Signature {
    let signature = key.sign(&[purpose.context(), message].concat());
    Signature {
        key_id: key_id(&key.verifying_key()),
        algorithm: ALGORITHM.to_owned(),
        signature: to_hex(&signature.to_bytes()),
    }
}

/// Checks one signature by `key` over `message` for `purpose`.
pub fn verify(
    key: &VerifyingKey,
    purpose: Purpose,
    message: &[u8],
    signature: &Signature,
) -> Result<(), SignatureProblem> {
    if signature.algorithm != ALGORITHM {
        return Err(SignatureProblem::Algorithm(signature.algorithm.clone()));
    }
    if signature.key_id != key_id(key) {
        return Err(SignatureProblem::KeyIdMismatch);
    }
    let bytes: [u8; 64] = from_hex(&signature.signature)
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureProblem::Encoding)?;
    let signature = ed25519_dalek::Signature::from_bytes(&bytes);
    // Strict: refuses weak keys and non-canonical signatures, so no signature counts that
    // was not made with the key's private half.
    if key.is_weak() {
        return Err(SignatureProblem::WeakKey);
    }
    key.verify_strict(&[purpose.context(), message].concat(), &signature)
        .map_err(|_| SignatureProblem::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn signatures_verify_and_bind_purpose_and_bytes() {
        let k = key(1);
        let sig = sign(&k, Purpose::BundleManifest, b"manifest");
        assert_eq!(
            verify(
                &k.verifying_key(),
                Purpose::BundleManifest,
                b"manifest",
                &sig
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                &k.verifying_key(),
                Purpose::BundleManifest,
                b"manifesT",
                &sig
            ),
            Err(SignatureProblem::Mismatch)
        );
        assert_eq!(
            verify(&k.verifying_key(), Purpose::TrustPolicy, b"manifest", &sig),
            Err(SignatureProblem::Mismatch),
            "a manifest signature is not a policy signature"
        );
        assert_eq!(
            verify(
                &key(2).verifying_key(),
                Purpose::BundleManifest,
                b"manifest",
                &sig
            ),
            Err(SignatureProblem::KeyIdMismatch)
        );
    }

    #[test]
    fn keys_round_trip_through_pem_and_hex() {
        let k = key(7);
        let back = private_key_from_pem(&private_key_to_pem(&k)).unwrap();
        assert_eq!(back.to_bytes(), k.to_bytes());
        let public = public_key_from_pem(&public_key_to_pem(&k.verifying_key())).unwrap();
        assert_eq!(public, k.verifying_key());
        assert_eq!(
            public_key_from_hex(&to_hex(public.as_bytes())).unwrap(),
            public
        );
        assert!(public_key_from_hex("zz").is_err());
        assert_eq!(key_id(&public).len(), 16);
    }

    /// The identity point, encoded: the simplest key of small order.
    const IDENTITY: [u8; 32] = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };

    #[test]
    fn weak_key_is_refused_as_hex_and_as_pem() {
        let err = public_key_from_hex(&to_hex(&IDENTITY)).unwrap_err();
        assert!(matches!(err, KeyError::WeakPublicKey(_)), "{err}");
        assert!(err.to_string().contains("weak ed25519 key"), "{err}");
        let weak = VerifyingKey::from_bytes(&IDENTITY).unwrap();
        let pem = public_key_to_pem(&weak);
        assert!(matches!(
            public_key_from_pem(&pem),
            Err(KeyError::WeakPublicKey(_))
        ));
    }

    #[test]
    fn forged_signature_for_a_weak_key_does_not_count() {
        // R = identity, S = 0 satisfies the cofactored equation for a small-order key and
        // any message: the forgery needs no private key at all.
        let weak = VerifyingKey::from_bytes(&IDENTITY).unwrap();
        let mut forged = [0u8; 64];
        forged[..32].copy_from_slice(&IDENTITY);
        let signature = Signature {
            key_id: key_id(&weak),
            algorithm: ALGORITHM.to_owned(),
            signature: to_hex(&forged),
        };
        assert_eq!(
            verify(&weak, Purpose::BundleManifest, b"any manifest", &signature),
            Err(SignatureProblem::WeakKey)
        );
    }
}
