//! Signing keys for minted tokens: generated here, stored in the database with the private
//! part encrypted (XChaCha20-Poly1305 under `token.encryption_key`; the key id, algorithm and
//! activation time as associated data, so a row cannot be moved or re-timed), and shared by
//! every replica. The published public key is always derived from the decrypted private key:
//! someone who can write the table but lacks the encryption key cannot slip in a key of theirs.
//!
//! Lifecycle: a key is published in the JWKS from creation; it signs from `activates_at` until
//! a newer key activates; it stays published until the tokens it signed have expired
//! (`token.ttl_seconds` after its successor took over), then it is pruned.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::SigningAlgorithm;
use crate::store::StoredKey;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("minted tokens need token.encryption_key or token.encryption_key_env; {0}")]
    NoEncryptionKey(String),
    #[error(
        "token.encryption_key must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)"
    )]
    BadEncryptionKey,
    #[error("signing key {0} cannot be decrypted with token.encryption_key (a different key?)")]
    Decrypt(String),
    #[error("signing key {kid}: {message}")]
    Invalid { kid: String, message: String },
    #[error("cannot generate a signing key: {0}")]
    Generate(String),
}

/// Encrypts and decrypts the private parts of stored keys.
pub struct KeyVault {
    cipher: XChaCha20Poly1305,
}

impl KeyVault {
    pub fn new(key: &SecretString) -> Result<Self, KeyError> {
        let bytes = STANDARD
            .decode(key.expose_secret().trim())
            .map_err(|_| KeyError::BadEncryptionKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadEncryptionKey)?;
        Ok(Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    pub(crate) fn seal(&self, aad: &[u8], der: &[u8]) -> Result<String, KeyError> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| KeyError::Generate(e.to_string()))?;
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: der, aad })
            .map_err(|_| KeyError::Generate("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    pub(crate) fn open(&self, kid: &str, aad: &[u8], stored: &str) -> Result<Vec<u8>, KeyError> {
        let bytes = STANDARD
            .decode(stored)
            .map_err(|_| KeyError::Decrypt(kid.to_owned()))?;
        if bytes.len() < 24 {
            return Err(KeyError::Decrypt(kid.to_owned()));
        }
        let (nonce, sealed) = bytes.split_at(24);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| KeyError::Decrypt(kid.to_owned()))
    }
}

/// A key ready to sign, with its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
    pub public_jwk: Value,
    pub created_at: i64,
    pub activates_at: i64,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("activates_at", &self.activates_at)
            .finish()
    }
}

fn jwt_algorithm(a: SigningAlgorithm) -> Algorithm {
    match a {
        SigningAlgorithm::EdDSA => Algorithm::EdDSA,
        SigningAlgorithm::ES256 => Algorithm::ES256,
        SigningAlgorithm::RS256 => Algorithm::RS256,
    }
}

fn encoding_key(algorithm: Algorithm, der: &[u8]) -> EncodingKey {
    match algorithm {
        Algorithm::EdDSA => EncodingKey::from_ed_der(der),
        Algorithm::ES256 => EncodingKey::from_ec_der(der),
        _ => EncodingKey::from_rsa_der(der),
    }
}

/// A fresh private key in the DER form `jsonwebtoken` signs with (PKCS#8 for EdDSA and ES256,
/// PKCS#1 for RSA).
fn generate_der(algorithm: SigningAlgorithm) -> Result<Vec<u8>, KeyError> {
    let failed = |e: String| KeyError::Generate(e);
    match algorithm {
        SigningAlgorithm::EdDSA => {
            use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
            let mut secret_key = [0u8; 32];
            getrandom::fill(&mut secret_key).map_err(|e| failed(e.to_string()))?;
            // PKCS#8 v1 (no public key inside): the form jsonwebtoken reads an Ed25519 key in.
            let pair = KeypairBytes {
                secret_key,
                public_key: None,
            };
            Ok(pair
                .to_pkcs8_der()
                .map_err(|e| failed(e.to_string()))?
                .as_bytes()
                .to_vec())
        }
        SigningAlgorithm::ES256 => {
            use p256::pkcs8::EncodePrivateKey;
            let key = p256::SecretKey::random(&mut rand_core::OsRng);
            Ok(key
                .to_pkcs8_der()
                .map_err(|e| failed(e.to_string()))?
                .as_bytes()
                .to_vec())
        }
        SigningAlgorithm::RS256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                .map_err(|e| failed(e.to_string()))?;
            Ok(key
                .to_pkcs1_der()
                .map_err(|e| failed(e.to_string()))?
                .as_bytes()
                .to_vec())
        }
    }
}

/// What the encryption binds a stored key to.
fn associated_data(kid: &str, algorithm: &str, activates_at: i64) -> Vec<u8> {
    format!("gatehouse-signing-key-v1\0{kid}\0{algorithm}\0{activates_at}").into_bytes()
}

/// A new key, sealed for storage. Its id is random (base64url, 16 bytes).
pub fn generate(
    vault: &KeyVault,
    algorithm: SigningAlgorithm,
    now: i64,
    activates_at: i64,
) -> Result<StoredKey, KeyError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| KeyError::Generate(e.to_string()))?;
    let kid = URL_SAFE_NO_PAD.encode(id);
    let alg = jwt_algorithm(algorithm);
    let der = generate_der(algorithm)?;
    let public_jwk = public_jwk(&kid, alg, &encoding_key(alg, &der))?;
    let algorithm = format!("{alg:?}");
    let aad = associated_data(&kid, &algorithm, activates_at);
    Ok(StoredKey {
        private_key: vault.seal(&aad, &der)?,
        kid,
        algorithm,
        public_jwk: public_jwk.to_string(),
        created_at: now,
        activates_at,
    })
}

fn public_jwk(kid: &str, alg: Algorithm, key: &EncodingKey) -> Result<Value, KeyError> {
    let invalid = |message: String| KeyError::Invalid {
        kid: kid.to_owned(),
        message,
    };
    let mut jwk = Jwk::from_encoding_key(key, alg).map_err(|e| invalid(e.to_string()))?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(
        format!("{alg:?}")
            .parse::<KeyAlgorithm>()
            .map_err(|e| invalid(e.to_string()))?,
    );
    serde_json::to_value(&jwk).map_err(|e| invalid(e.to_string()))
}

/// Opens a stored key.
pub fn open(vault: &KeyVault, stored: &StoredKey) -> Result<SigningKey, KeyError> {
    let invalid = |message: String| KeyError::Invalid {
        kid: stored.kid.clone(),
        message,
    };
    let algorithm: Algorithm = stored
        .algorithm
        .parse()
        .map_err(|_| invalid(format!("unknown algorithm {:?}", stored.algorithm)))?;
    let aad = associated_data(&stored.kid, &stored.algorithm, stored.activates_at);
    let der = vault.open(&stored.kid, &aad, &stored.private_key)?;
    let encoding = encoding_key(algorithm, &der);
    // Derived, never read from the row (whose `public_jwk` is for people reading the table).
    let public_jwk = public_jwk(&stored.kid, algorithm, &encoding)?;
    Ok(SigningKey {
        kid: stored.kid.clone(),
        algorithm,
        encoding,
        public_jwk,
        created_at: stored.created_at,
        activates_at: stored.activates_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> KeyVault {
        KeyVault::new(&SecretString::from(STANDARD.encode([7u8; 32]))).unwrap()
    }

    #[test]
    fn keys_round_trip_and_sign_verifiably() {
        for algorithm in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::ES256,
            SigningAlgorithm::RS256,
        ] {
            let v = vault();
            let stored = generate(&v, algorithm, 100, 100).unwrap();
            assert!(!stored.private_key.contains(&stored.kid));
            let key = open(&v, &stored).unwrap();
            let mut header = jsonwebtoken::Header::new(key.algorithm);
            header.kid = Some(key.kid.clone());
            let claims =
                serde_json::json!({"sub": "x", "iss": "https://gw", "exp": 4_000_000_000u64});
            let token = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
            let keys = crate::jwt::KeySet::from_json(
                serde_json::json!({"keys": [key.public_jwk]})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap();
            let verified = crate::jwt::verify::<Value>(
                &token,
                &keys,
                &crate::jwt::Expect {
                    issuer: "https://gw",
                    audiences: None,
                    leeway_seconds: 0,
                    subject_required: true,
                },
            );
            assert!(verified.is_ok(), "{algorithm:?}: {verified:?}");
            // Another vault key cannot open it; a row moved to another kid cannot either.
            let other = KeyVault::new(&SecretString::from(STANDARD.encode([8u8; 32]))).unwrap();
            assert!(matches!(open(&other, &stored), Err(KeyError::Decrypt(_))));
            let moved = StoredKey {
                kid: "another".into(),
                ..stored.clone()
            };
            assert!(matches!(open(&v, &moved), Err(KeyError::Decrypt(_))));
            let retimed = StoredKey {
                activates_at: 0,
                ..stored.clone()
            };
            assert!(matches!(open(&v, &retimed), Err(KeyError::Decrypt(_))));
            // A public key written into the row is ignored: the published one is derived.
            let swapped = StoredKey {
                public_jwk: "{\"kty\":\"OKP\",\"x\":\"attacker\"}".into(),
                ..stored.clone()
            };
            assert_eq!(open(&v, &swapped).unwrap().public_jwk, key.public_jwk);
        }
    }

    #[test]
    fn encryption_key_must_be_32_bytes() {
        for bad in ["", "not base64!", &STANDARD.encode([1u8; 16])] {
            assert!(KeyVault::new(&SecretString::from(bad.to_owned())).is_err());
        }
    }
}
