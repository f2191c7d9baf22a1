//! PKCE with S256 only (RFC 7636): the shapes of a verifier and a challenge, and whether one
//! answers the other.

use oauth2::{PkceCodeChallenge, PkceCodeVerifier};
use subtle::ConstantTimeEq;

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
pub(super) fn is_code_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// An S256 challenge: the base64url (unpadded) SHA-256 of the verifier, so 43 characters.
pub(super) fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `verifier` answers `challenge` (S256), compared in constant time.
pub(super) fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    if !is_code_verifier(verifier) {
        return false;
    }
    let computed =
        PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.to_owned()));
    computed
        .as_str()
        .as_bytes()
        .ct_eq(challenge.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_table() {
        // Computed apart (Python: base64url(sha256(verifier)), unpadded).
        let verifier = "gatehouse-pkce-test-verifier-0123456789abcdefghij";
        let challenge = "eqLTgpHwtrnI9uufUliW8SiafuazC_pE4DqpooFd0Kw";
        assert!(is_s256_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            verifier,
            "eqLTgpHwtrnI9uufUliW8SiafuazC_pE4DqpooFd0Kx"
        ));
        assert!(!pkce_matches(&verifier.replace('g', "h"), challenge));
        // plain: the verifier as its own challenge is refused
        assert!(!pkce_matches(challenge, challenge));
        for bad in [
            "",
            "short",
            &"a".repeat(42),
            &"a".repeat(129),
            &format!("{}!", "a".repeat(43)),
        ] {
            assert!(!is_code_verifier(bad), "{bad:?}");
            assert!(!pkce_matches(bad, challenge), "never panics on {bad:?}");
        }
        assert!(is_code_verifier(&"a~._-".repeat(20)));
        for bad in [
            "",
            &"a".repeat(42),
            &"a".repeat(44),
            &format!("{}=", "a".repeat(42)),
            &format!("{}+", "a".repeat(42)),
        ] {
            assert!(!is_s256_challenge(bad), "{bad:?}");
        }
    }
}
