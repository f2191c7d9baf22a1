//! `EncryptedAssertion` (XML Encryption) with the SP key named by `sp_key_file` (cargo feature
//! `saml`): the content key is RSA-OAEP (`rsa-1_5` is refused: Bleichenbacher), the assertion
//! AES-GCM or AES-CBC. Every failure is the same error, so the answer cannot serve as a
//! padding oracle. The decrypted assertion is screened and verified like a plain one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::symm::{Cipher, Crypter, Mode};

use super::facts::{XMLENC_NS, child, text};
use super::messages::ASSERTION_NS;
use super::metadata::is;
use super::verify::SpKey;

const RSA_OAEP: [&str; 2] = [
    "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
    "http://www.w3.org/2009/xmlenc11#rsa-oaep",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("the assertion is encrypted and this identity provider has no sp_key_file")]
    NoKey,
    #[error("the encrypted assertion could not be decrypted with the SP key ({0})")]
    Failed(&'static str),
}

/// The plaintext `Assertion` XML of the response's `EncryptedAssertion`. `allow_cbc`: the
/// ciphertext was signed (AES-CBC has no integrity of its own; else only AES-GCM).
pub fn decrypt(
    response: roxmltree::Node<'_, '_>,
    key: Option<&SpKey>,
    allow_cbc: bool,
) -> Result<String, DecryptError> {
    let key = key.ok_or(DecryptError::NoKey)?;
    let encrypted = response
        .children()
        .find(|n| is(n, ASSERTION_NS, "EncryptedAssertion"))
        .ok_or(DecryptError::Failed("no EncryptedAssertion"))?;
    let data = child(encrypted, XMLENC_NS, "EncryptedData")
        .ok_or(DecryptError::Failed("no EncryptedData"))?;
    // The key is inside the data's KeyInfo, or a sibling of the data.
    let encrypted_key = encrypted
        .descendants()
        .find(|n| is(n, XMLENC_NS, "EncryptedKey"))
        .ok_or(DecryptError::Failed("no EncryptedKey"))?;
    let key_method = method(encrypted_key)?;
    if !RSA_OAEP.contains(&key_method) {
        return Err(DecryptError::Failed("key transport is not RSA-OAEP"));
    }
    let content_key = rsa_oaep(key, &cipher_value(encrypted_key)?)?;
    let content_method = method(data)?;
    if content_method.ends_with("-cbc") && !allow_cbc {
        return Err(DecryptError::Failed(
            "AES-CBC content in an unsigned response",
        ));
    }
    let plaintext = match content_method {
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => {
            cbc(Cipher::aes_128_cbc(), &content_key, &cipher_value(data)?)?
        }
        "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => {
            cbc(Cipher::aes_256_cbc(), &content_key, &cipher_value(data)?)?
        }
        "http://www.w3.org/2009/xmlenc11#aes128-gcm" => {
            gcm(Cipher::aes_128_gcm(), &content_key, &cipher_value(data)?)?
        }
        "http://www.w3.org/2009/xmlenc11#aes256-gcm" => {
            gcm(Cipher::aes_256_gcm(), &content_key, &cipher_value(data)?)?
        }
        _ => return Err(DecryptError::Failed("content cipher not supported")),
    };
    String::from_utf8(plaintext).map_err(|_| DecryptError::Failed("plaintext is not UTF-8"))
}

fn method<'a>(node: roxmltree::Node<'a, '_>) -> Result<&'a str, DecryptError> {
    child(node, XMLENC_NS, "EncryptionMethod")
        .and_then(|m| m.attribute("Algorithm"))
        .ok_or(DecryptError::Failed("no EncryptionMethod"))
}

fn cipher_value(node: roxmltree::Node<'_, '_>) -> Result<Vec<u8>, DecryptError> {
    let value = child(node, XMLENC_NS, "CipherData")
        .and_then(|d| child(d, XMLENC_NS, "CipherValue"))
        .map(text)
        .ok_or(DecryptError::Failed("no CipherValue"))?;
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(compact)
        .map_err(|_| DecryptError::Failed("CipherValue is not base64"))
}

fn rsa_oaep(key: &SpKey, wrapped: &[u8]) -> Result<Vec<u8>, DecryptError> {
    let rsa = key
        .key()
        .rsa()
        .map_err(|_| DecryptError::Failed("SP key"))?;
    let mut out = vec![0u8; rsa.size() as usize];
    let n = rsa
        .private_decrypt(wrapped, &mut out, openssl::rsa::Padding::PKCS1_OAEP)
        .map_err(|_| DecryptError::Failed("key unwrap"))?;
    out.truncate(n);
    Ok(out)
}

/// AES-CBC with the IV in front and XML Encryption's padding (the last byte is the length).
fn cbc(cipher: Cipher, key: &[u8], data: &[u8]) -> Result<Vec<u8>, DecryptError> {
    let iv_len = cipher.iv_len().unwrap_or(16);
    if key.len() != cipher.key_len()
        || data.len() <= iv_len
        || !(data.len() - iv_len).is_multiple_of(16)
    {
        return Err(DecryptError::Failed("content"));
    }
    let (iv, body) = data.split_at(iv_len);
    let mut crypter = Crypter::new(cipher, Mode::Decrypt, key, Some(iv))
        .map_err(|_| DecryptError::Failed("content"))?;
    crypter.pad(false);
    let mut out = vec![0u8; body.len() + 16];
    let mut n = crypter
        .update(body, &mut out)
        .map_err(|_| DecryptError::Failed("content"))?;
    n += crypter
        .finalize(&mut out[n..])
        .map_err(|_| DecryptError::Failed("content"))?;
    out.truncate(n);
    let pad = usize::from(*out.last().ok_or(DecryptError::Failed("content"))?);
    if pad == 0 || pad > 16 || pad > out.len() {
        return Err(DecryptError::Failed("content"));
    }
    out.truncate(out.len() - pad);
    Ok(out)
}

/// AES-GCM: a 12-byte IV in front, the 16-byte tag at the end.
fn gcm(cipher: Cipher, key: &[u8], data: &[u8]) -> Result<Vec<u8>, DecryptError> {
    if key.len() != cipher.key_len() || data.len() < 12 + 16 {
        return Err(DecryptError::Failed("content"));
    }
    let (iv, rest) = data.split_at(12);
    let (body, tag) = rest.split_at(rest.len() - 16);
    openssl::symm::decrypt_aead(cipher, key, Some(iv), &[], body, tag)
        .map_err(|_| DecryptError::Failed("content"))
}
