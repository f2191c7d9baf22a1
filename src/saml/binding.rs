//! The two SAML bindings gatehouse speaks, as bytes: HTTP-Redirect (`base64(DEFLATE(xml))` in
//! a query parameter) and HTTP-POST (`base64(xml)` in a form field). Decoding is bounded
//! before it allocates: a DEFLATE bomb (a few KiB that inflate to gigabytes) stops at the
//! limit, and an oversized POST is refused from its encoded length.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;

use super::verify::{RSA_SHA256, SpKey, VerifyError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("the message is not valid base64")]
    Base64,
    #[error("the message is not valid DEFLATE data")]
    Deflate,
    #[error("the message is larger than {0} bytes (decoded)")]
    TooLarge(usize),
}

/// A message the SP sends by HTTP-Redirect: where, as whom, and whether it is signed.
pub struct Outgoing<'a> {
    pub destination: &'a str,
    pub issuer: &'a str,
    pub relay_state: Option<&'a str>,
    /// Signs the query (RSA-SHA256) when set.
    pub key: Option<&'a SpKey>,
}

/// The redirect URL carrying `xml` as `param` (`SAMLRequest` or `SAMLResponse`), with
/// `RelayState`, and signed over the query as the binding says (§3.4.4.1) when the SP has a
/// key. The destination's own query parameters stay.
pub fn redirect_url(out: &Outgoing<'_>, param: &str, xml: &str) -> Result<String, VerifyError> {
    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let mut query = format!("{param}={}", enc(&redirect_encode(xml)));
    if let Some(relay) = out.relay_state {
        query.push_str(&format!("&RelayState={}", enc(relay)));
    }
    if let Some(key) = out.key {
        query.push_str(&format!("&SigAlg={}", enc(RSA_SHA256)));
        let signature = key.sign_redirect(&query)?;
        query.push_str(&format!("&Signature={}", enc(&STANDARD.encode(signature))));
    }
    let separator = if out.destination.contains('?') {
        '&'
    } else {
        '?'
    };
    Ok(format!("{}{separator}{query}", out.destination))
}

/// HTTP-Redirect: the value of `SAMLRequest`/`SAMLResponse` before URL-encoding.
pub fn redirect_encode(xml: &str) -> String {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(xml.as_bytes());
    let deflated = encoder.finish().unwrap_or_default();
    STANDARD.encode(deflated)
}

/// HTTP-Redirect: the XML of a `SAMLRequest`/`SAMLResponse` value (already URL-decoded), at
/// most `max_bytes` once inflated.
pub fn redirect_decode(value: &str, max_bytes: usize) -> Result<Vec<u8>, BindingError> {
    // Compressed data is never larger than what it inflates to (plus a little).
    if value.len() / 4 * 3 > max_bytes.saturating_add(1024) {
        return Err(BindingError::TooLarge(max_bytes));
    }
    let deflated = STANDARD
        .decode(value.trim())
        .map_err(|_| BindingError::Base64)?;
    let mut xml = Vec::new();
    DeflateDecoder::new(deflated.as_slice())
        .take(
            u64::try_from(max_bytes)
                .unwrap_or(u64::MAX)
                .saturating_add(1),
        )
        .read_to_end(&mut xml)
        .map_err(|_| BindingError::Deflate)?;
    if xml.len() > max_bytes {
        return Err(BindingError::TooLarge(max_bytes));
    }
    Ok(xml)
}

/// HTTP-POST: the XML of a `SAMLResponse`/`SAMLRequest` form field, refused from its encoded
/// length when it would exceed `max_bytes`.
pub fn post_decode(value: &str, max_bytes: usize) -> Result<Vec<u8>, BindingError> {
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() / 4 * 3 > max_bytes.saturating_add(3) {
        return Err(BindingError::TooLarge(max_bytes));
    }
    let xml = STANDARD.decode(compact).map_err(|_| BindingError::Base64)?;
    if xml.len() > max_bytes {
        return Err(BindingError::TooLarge(max_bytes));
    }
    Ok(xml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_round_trip_and_bombs() {
        let xml = "<samlp:AuthnRequest ID=\"_1\"/>";
        assert_eq!(
            redirect_decode(&redirect_encode(xml), 1024).unwrap(),
            xml.as_bytes()
        );
        // 64 MiB of zeros deflate to ~64 KiB: refused at the limit, not inflated.
        let bomb = redirect_encode(&"\0".repeat(64 * 1024 * 1024));
        assert!(bomb.len() < 200 * 1024, "{}", bomb.len());
        assert_eq!(
            redirect_decode(&bomb, 256 * 1024),
            Err(BindingError::TooLarge(256 * 1024))
        );
        assert_eq!(redirect_decode("!!!", 1024), Err(BindingError::Base64));
        assert_eq!(
            redirect_decode(&STANDARD.encode(b"not deflate at all, really"), 1024),
            Err(BindingError::Deflate)
        );
    }

    #[test]
    fn post_is_bounded_by_its_encoded_length() {
        let xml = "<samlp:Response/>";
        let encoded = STANDARD.encode(xml);
        let wrapped = format!("{}\r\n{}", &encoded[..8], &encoded[8..]);
        assert_eq!(post_decode(&wrapped, 1024).unwrap(), xml.as_bytes());
        let huge = STANDARD.encode(vec![b'x'; 10 * 1024 * 1024]);
        assert_eq!(
            post_decode(&huge, 256 * 1024),
            Err(BindingError::TooLarge(256 * 1024))
        );
        assert_eq!(post_decode("%%%", 1024), Err(BindingError::Base64));
    }
}
