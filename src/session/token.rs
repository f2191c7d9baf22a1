//! Opaque random tokens (session ids, login `state`, browser binding) and their hashes.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// 256 bits from the operating system's CSPRNG.
const TOKEN_BYTES: usize = 32;
/// Unpadded base64url length of [`TOKEN_BYTES`].
const TOKEN_LEN: usize = 43;

/// A secret random token. Its `Debug` output is redacted; only its hash is ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueToken(String);

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(getrandom::Error);

impl OpaqueToken {
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(RandomError)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Fills `bytes` from the operating system's CSPRNG.
    pub fn fill(bytes: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(bytes).map_err(RandomError)
    }

    /// Accepts exactly the shape [`generate`](Self::generate) produces; anything else
    /// (garbage, oversized, padded) is `None` without touching the store.
    pub fn parse(raw: &str) -> Option<Self> {
        let well_formed = raw.len() == TOKEN_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueToken(…)")
    }
}

/// SHA-256 of a token: the key under which sessions and login states are stored and cached.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Parses the form [`to_hex`](Self::to_hex) produces.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// The first 8 bytes in hex: enough to correlate (`sid` of minted tokens, logs), never
    /// enough to look a session up.
    pub fn short_hex(&self) -> String {
        self.to_hex().chars().take(16).collect()
    }

    pub fn to_hex(&self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate logs.
        write!(f, "TokenHash({}…)", &self.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_unique_and_parse() {
        let a = OpaqueToken::generate().unwrap();
        let b = OpaqueToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), TOKEN_LEN);
        assert_eq!(OpaqueToken::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.hash().to_hex().len(), 64);
        assert_eq!(TokenHash::from_hex(&a.hash().to_hex()), Some(a.hash()));
        assert_eq!(TokenHash::from_hex("zz"), None);
        assert_eq!(TokenHash::from_hex(&"g".repeat(64)), None);
        assert_ne!(a.hash(), b.hash());
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn parse_rejects_anything_else() {
        let ok = "A".repeat(TOKEN_LEN);
        assert!(OpaqueToken::parse(&ok).is_some());
        for bad in [
            String::new(),
            "A".repeat(TOKEN_LEN - 1),
            "A".repeat(TOKEN_LEN + 1),
            "A".repeat(10_000),
            format!("{}=", "A".repeat(TOKEN_LEN - 1)),
            format!("{}+", "A".repeat(TOKEN_LEN - 1)),
            format!("{}é", "A".repeat(TOKEN_LEN - 2)),
            format!("{} ", "A".repeat(TOKEN_LEN - 1)),
        ] {
            assert!(OpaqueToken::parse(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn hash_is_sha256_hex() {
        let token = OpaqueToken("abc".into());
        assert_eq!(
            token.hash().to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
