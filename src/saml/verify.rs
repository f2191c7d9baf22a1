//! XML-DSig verification (samael over xmlsec1; cargo feature `saml`) and the RSA signatures of
//! the HTTP-Redirect binding (OpenSSL, which samael already links).
//!
//! Only samael's `reduce_xml_to_signed_with_allowed_algorithms` is used, in the mode that
//! keeps verified content alone (`ValidateAndMarkNoAncestors`): every signature in the
//! document must verify with one of the IdP's metadata certificates (xmlsec is given the key,
//! so a `KeyInfo` in the message is never used), and the caller reads only what is left.
//! Callers screen the XML first: libxml2 is never shown a DTD.

use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};

/// SHA-256 or stronger, RSA or ECDSA (with `allow_sha1`, the caller's own algorithm check
/// decides, and samael is given no list).
const STRONG: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature does not verify with the identity provider's certificates: {0}")]
    Signature(String),
    #[error("no signature")]
    Unsigned,
    #[error("the redirect binding's SigAlg {0:?} is not allowed")]
    SigAlg(String),
    #[error("the SP key or an IdP certificate cannot be used: {0}")]
    Key(String),
}

/// `xml` reduced to the content its signatures cover, all of which verified with one of
/// `certs` (DER).
pub fn reduce_to_signed(
    xml: &str,
    certs: &[Vec<u8>],
    allow_sha1: bool,
) -> Result<String, VerifyError> {
    let certs: Vec<CertificateDer> = certs.iter().cloned().map(CertificateDer::from).collect();
    let allowed = if allow_sha1 { None } else { Some(&STRONG[..]) };
    Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        &certs,
        ReduceMode::ValidateAndMarkNoAncestors,
        allowed,
    )
    .map_err(|e| match e {
        samael::crypto::CryptoError::InvalidSignature => {
            VerifyError::Signature("invalid or missing signature".into())
        }
        other => VerifyError::Signature(other.to_string()),
    })
}

fn digest_of(sig_alg: &str, allow_sha1: bool) -> Result<openssl::hash::MessageDigest, VerifyError> {
    use openssl::hash::MessageDigest;
    Ok(match sig_alg {
        RSA_SHA256 | "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256" => {
            MessageDigest::sha256()
        }
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
        | "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384" => MessageDigest::sha384(),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
        | "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512" => MessageDigest::sha512(),
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1" if allow_sha1 => MessageDigest::sha1(),
        other => return Err(VerifyError::SigAlg(other.to_owned())),
    })
}

/// Verifies an HTTP-Redirect binding signature: `signed` is the raw query prefix as sent
/// (`SAMLRequest=…&RelayState=…&SigAlg=…`, still percent-encoded), `signature` the decoded
/// `Signature` bytes.
pub fn verify_redirect(
    signed: &str,
    sig_alg: &str,
    signature: &[u8],
    certs: &[Vec<u8>],
    allow_sha1: bool,
) -> Result<(), VerifyError> {
    let digest = digest_of(sig_alg, allow_sha1)?;
    for der in certs {
        let key = openssl::x509::X509::from_der(der)
            .and_then(|c| c.public_key())
            .map_err(|e| VerifyError::Key(e.to_string()))?;
        let verified = openssl::sign::Verifier::new(digest, &key)
            .and_then(|mut v| {
                v.update(signed.as_bytes())?;
                v.verify(signature)
            })
            .unwrap_or(false);
        if verified {
            return Ok(());
        }
    }
    Err(VerifyError::Signature(
        "the redirect binding signature".into(),
    ))
}

/// Whether a DER certificate from metadata holds a public key xmlsec can use.
pub fn check_certificate(der: &[u8]) -> Result<(), VerifyError> {
    openssl::x509::X509::from_der(der)
        .and_then(|c| c.public_key())
        .map(|_| ())
        .map_err(|e| VerifyError::Key(e.to_string()))
}

/// The DER of a PEM certificate.
pub fn cert_der_from_pem(pem: &[u8]) -> Result<Vec<u8>, VerifyError> {
    openssl::x509::X509::from_pem(pem)
        .and_then(|c| c.to_der())
        .map_err(|e| VerifyError::Key(e.to_string()))
}

/// The SP's key, to sign redirect-binding messages and decrypt assertions.
pub struct SpKey(openssl::pkey::PKey<openssl::pkey::Private>);

impl std::fmt::Debug for SpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpKey(..)")
    }
}

impl SpKey {
    pub fn from_pem(pem: &[u8]) -> Result<Self, VerifyError> {
        let key = openssl::pkey::PKey::private_key_from_pem(pem)
            .map_err(|e| VerifyError::Key(e.to_string()))?;
        if key.rsa().is_err() {
            return Err(VerifyError::Key("the SP key must be an RSA key".into()));
        }
        Ok(Self(key))
    }

    /// RSA-SHA256 over `signed` (the redirect binding's query prefix).
    pub fn sign_redirect(&self, signed: &str) -> Result<Vec<u8>, VerifyError> {
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.0)
                .map_err(|e| VerifyError::Key(e.to_string()))?;
        signer
            .update(signed.as_bytes())
            .and_then(|()| signer.sign_to_vec())
            .map_err(|e| VerifyError::Key(e.to_string()))
    }

    pub(crate) fn key(&self) -> &openssl::pkey::PKey<openssl::pkey::Private> {
        &self.0
    }
}
