//! TOTP (RFC 6238: SHA-1, 6 digits, 30-second steps, one step of skew either way), the
//! enrollment QR code (SVG, drawn server-side), and recovery codes.
//!
//! A code is accepted only for a time step later than the last one used: the store enforces
//! that atomically, so a code can never be used twice, even on two replicas at once.

use qrcode::QrCode;
use qrcode::render::svg;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};

pub const STEP_SECONDS: i64 = 30;
const DIGITS: usize = 6;
/// 160 bits, as RFC 4226 recommends for SHA-1.
const SECRET_BYTES: usize = 20;
pub const RECOVERY_CODES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("cannot generate a secret: {0}")]
    Random(String),
    #[error("invalid TOTP secret: {0}")]
    Secret(String),
    #[error("cannot draw the QR code: {0}")]
    Qr(String),
}

fn totp(secret: &[u8]) -> Result<TOTP, TotpError> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECONDS.unsigned_abs(),
        secret.to_vec(),
    )
    .map_err(|e| TotpError::Secret(e.to_string()))
}

/// A new random secret.
pub fn new_secret() -> Result<Vec<u8>, TotpError> {
    let mut secret = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut secret).map_err(|e| TotpError::Random(e.to_string()))?;
    Ok(secret)
}

/// The secret as authenticator apps take it typed in (base32, no padding).
pub fn secret_text(secret: &[u8]) -> String {
    Secret::Raw(secret.to_vec())
        .to_encoded()
        .to_string()
        .trim_end_matches('=')
        .to_owned()
}

/// The time step `code` is valid for at `now` (±1 step), if any. Compared in constant time.
pub fn matching_step(secret: &[u8], code: &str, now: i64) -> Result<Option<i64>, TotpError> {
    let code = code.trim().replace(' ', "");
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let totp = totp(secret)?;
    let current = now.div_euclid(STEP_SECONDS);
    let mut found = None;
    for step in [current - 1, current, current + 1] {
        let Ok(at) = u64::try_from(step * STEP_SECONDS) else {
            continue;
        };
        let expected = totp.generate(at);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    Ok(found)
}

/// The code for `now` (tests and the CLI's diagnostics).
pub fn code_at(secret: &[u8], now: i64) -> Result<String, TotpError> {
    Ok(totp(secret)?.generate(u64::try_from(now).unwrap_or(0)))
}

/// `otpauth://totp/Issuer:email?secret=…&issuer=…` (the Key Uri Format authenticators read).
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let label: String =
        url::form_urlencoded::byte_serialize(format!("{issuer}:{account}").as_bytes()).collect();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("secret", &secret_text(secret))
        .append_pair("issuer", issuer)
        .append_pair("algorithm", "SHA1")
        .append_pair("digits", "6")
        .append_pair("period", "30");
    format!(
        "otpauth://totp/{}?{}",
        label.replace('+', "%20"),
        query.finish()
    )
}

/// The URI as an SVG QR code, for inlining in the enrollment page.
pub fn qr_svg(uri: &str) -> Result<String, TotpError> {
    let code = QrCode::new(uri.as_bytes()).map_err(|e| TotpError::Qr(e.to_string()))?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

/// Ten recovery codes (`xxxxx-xxxxx`, 50 bits each) and their hashes.
pub fn recovery_codes() -> Result<Vec<(String, String)>, TotpError> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 10];
            getrandom::fill(&mut bytes).map_err(|e| TotpError::Random(e.to_string()))?;
            let chars: String = bytes
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
                .collect();
            let code = format!("{}-{}", &chars[..5], &chars[5..]);
            let hash = recovery_hash(&code);
            Ok((code, hash))
        })
        .collect()
}

/// The stored form of a recovery code (typed with or without the dash, any case).
pub fn recovery_hash(code: &str) -> String {
    let normalized: String = code
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let digest = Sha256::digest(format!("gatehouse-recovery:{normalized}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `input` looks like a recovery code rather than a TOTP code.
pub fn is_recovery_code(input: &str) -> bool {
    input
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .count()
        == 10
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 (8-digit values; the 6-digit code is their last 6 digits).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (time, eight) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            assert_eq!(code_at(secret, time).unwrap(), eight[2..], "t={time}");
        }
    }

    #[test]
    fn one_step_of_skew_and_no_more() {
        let secret = new_secret().unwrap();
        let now = 1_700_000_015;
        let step = now / STEP_SECONDS;
        let code = code_at(&secret, now).unwrap();
        assert_eq!(matching_step(&secret, &code, now).unwrap(), Some(step));
        assert_eq!(
            matching_step(&secret, &code, now + STEP_SECONDS).unwrap(),
            Some(step)
        );
        assert_eq!(
            matching_step(&secret, &code, now - STEP_SECONDS).unwrap(),
            Some(step)
        );
        assert_eq!(
            matching_step(&secret, &code, now + 3 * STEP_SECONDS).unwrap(),
            None
        );
        for junk in ["", "12345", "1234567", "abcdef", "12 34 5x"] {
            assert_eq!(matching_step(&secret, junk, now).unwrap(), None, "{junk:?}");
        }
    }

    #[test]
    fn enrollment_material() {
        let secret = new_secret().unwrap();
        let text = secret_text(&secret);
        assert_eq!(text.len(), 32);
        let uri = otpauth_uri(&secret, "Acme", "a@acme.test");
        assert!(
            uri.starts_with("otpauth://totp/Acme%3Aa%40acme.test?secret="),
            "{uri}"
        );
        assert!(uri.contains("issuer=Acme"));
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg"));
        let codes = recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let (code, hash) = &codes[0];
        assert!(is_recovery_code(code));
        assert_eq!(recovery_hash(&code.to_uppercase().replace('-', "")), *hash);
        assert!(!is_recovery_code("123456"));
    }
}
