//! The one-time secrets local sign-in sends by email: a 6-digit code (typed) and a link token
//! (clicked), both stored only as hashes. A code's hash is salted with its flow, so the same
//! six digits in two flows never share a hash.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::session::OpaqueToken;
use crate::session::token::RandomError;

/// Attempts one emailed code allows; the next is refused even if right.
pub const CODE_ATTEMPTS: i64 = 5;
/// Failed steps one flow (a sign-in in progress) survives.
pub const FLOW_FAILURES: i64 = 5;

/// A uniformly random 6-digit code (rejection sampling: no modulo bias).
pub fn new_code() -> Result<String, RandomError> {
    loop {
        let mut bytes = [0u8; 4];
        OpaqueToken::fill(&mut bytes)?;
        let n = u32::from_le_bytes(bytes);
        // The largest multiple of 10^6 that fits: values above it would favour low codes.
        if n < 4_294_000_000 {
            return Ok(format!("{:06}", n % 1_000_000));
        }
    }
}

/// The stored form of `code` for the flow whose token hash is `flow_hash`.
pub fn code_hash(flow_hash: &str, code: &str) -> String {
    let digest = Sha256::digest(format!("gatehouse-code:{flow_hash}:{}", code.trim()).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `typed` is the code stored as `stored`, compared in constant time.
pub fn code_matches(flow_hash: &str, typed: &str, stored: &str) -> bool {
    let typed = typed.trim().replace(' ', "");
    if typed.len() != 6 || !typed.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    bool::from(
        code_hash(flow_hash, &typed)
            .as_bytes()
            .ct_eq(stored.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_match_only_their_flow() {
        let code = new_code().unwrap();
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        let stored = code_hash("flow-a", &code);
        assert!(code_matches("flow-a", &code, &stored));
        assert!(code_matches("flow-a", &format!(" {code} "), &stored));
        assert!(!code_matches("flow-b", &code, &stored));
        let other = if code == "000000" { "000001" } else { "000000" };
        assert!(!code_matches("flow-a", other, &stored));
        for junk in ["", "12345", "1234567", "abcdef"] {
            assert!(!code_matches("flow-a", junk, &stored));
        }
    }
}
