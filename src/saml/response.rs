//! From the POSTed `SAMLResponse` to the facts of one verified assertion, in the order that
//! does the least work for a hostile message: bounded decoding and the XML screen first, then
//! the document's shape and algorithms, then the signatures (xmlsec), then decryption, and
//! only then the facts. The rules on those facts ([`super::rules`]) need the login state and
//! are the caller's.

use super::binding::{BindingError, post_decode};
use super::decrypt::{DecryptError, decrypt};
use super::facts::{self, Carried, ShapeError, XMLENC_NS};
use super::messages::{ASSERTION_NS, DSIG_NS};
use super::metadata::is;
use super::rules::{Refusal, ResponseFacts};
use super::screen::{Hostile, Limits, screen};
use super::verify::{SpKey, VerifyError, reduce_to_signed};

/// Why a SAML message was refused. `reason()` is the audit reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamlError {
    #[error("{0}")]
    Binding(#[from] BindingError),
    #[error("{0}")]
    Hostile(#[from] Hostile),
    #[error("{0}")]
    Shape(#[from] ShapeError),
    #[error("{0}")]
    Verify(#[from] VerifyError),
    #[error("{0}")]
    Decrypt(#[from] DecryptError),
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("the assertion {0:?} was already used (replay)")]
    Replayed(String),
    #[error("no SAML identity provider has the entityID {0:?}")]
    UnknownIssuer(String),
    #[error("more than one SAML identity provider names the entityID {0:?}")]
    AmbiguousIssuer(String),
    #[error("the identity provider's metadata has not been loaded yet")]
    NoMetadata,
    #[error("signing the request: {0}")]
    Signing(String),
}

impl SamlError {
    /// The audit reason (`login_failed` detail prefix) and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Binding(_) => "saml_binding",
            Self::Hostile(_) => "saml_hostile_xml",
            Self::Shape(ShapeError::Algorithm(_)) => "saml_weak_algorithm",
            Self::Shape(_) => "saml_wrapping",
            Self::Verify(VerifyError::SigAlg(_)) => "saml_weak_algorithm",
            Self::Verify(_) => "saml_signature",
            Self::Decrypt(_) => "saml_decryption",
            Self::Refused(r) => r.reason(),
            Self::Replayed(_) => "saml_replay",
            Self::UnknownIssuer(_) | Self::AmbiguousIssuer(_) => "saml_unknown_issuer",
            Self::NoMetadata => "idp_unreachable",
            Self::Signing(_) => "saml_signing",
        }
    }
}

/// The decoded, screened XML of a `SAMLResponse` form field.
pub fn receive(encoded: &str) -> Result<String, SamlError> {
    let limits = Limits::default();
    let xml = post_decode(encoded, limits.max_bytes)?;
    screen(&xml, limits)?;
    String::from_utf8(xml).map_err(|_| SamlError::Hostile(Hostile::NotUtf8))
}

/// The Response's own `Issuer` (to find the IdP of an unsolicited response), before any
/// verification: used only to choose which certificates to verify with.
pub fn claimed_issuer(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let root = doc.root_element();
    facts::child(root, ASSERTION_NS, "Issuer")
        .or_else(|| {
            facts::child(root, ASSERTION_NS, "Assertion")
                .and_then(|a| facts::child(a, ASSERTION_NS, "Issuer"))
        })
        .map(facts::text)
}

/// What verifying needs of the IdP and the SP.
pub struct Verification<'a> {
    pub certs: &'a [Vec<u8>],
    pub allow_sha1: bool,
    pub sp_key: Option<&'a SpKey>,
}

/// Verifies the screened `xml` and returns its facts with the one verified assertion.
/// Blocking (xmlsec): run it off the async workers.
pub fn verify(xml: &str, v: &Verification<'_>) -> Result<ResponseFacts, SamlError> {
    let doc = parse(xml)?;
    let shape = facts::shape(&doc)?;
    facts::check_algorithms(&doc, v.allow_sha1)?;
    let mut response = facts::response_facts(doc.root_element());
    let outer_signed = doc.descendants().any(|n| {
        is(&n, DSIG_NS, "Signature") && !n.ancestors().any(|a| is(&a, XMLENC_NS, "EncryptedData"))
    });
    if !outer_signed && matches!(shape.carried, Carried::Plain { .. }) {
        return Err(VerifyError::Unsigned.into());
    }
    if outer_signed {
        let reduced = reduce_to_signed(xml, v.certs, v.allow_sha1)?;
        let reduced = parse(&reduced)?;
        let response_signed = facts::signed_root(&reduced, &shape)?;
        let root = reduced.root_element();
        if response_signed {
            // The same fields, read from what was verified.
            response = facts::response_facts(root);
            response.signed = true;
        }
        match &shape.carried {
            Carried::Plain { id } => {
                let assertion = if response_signed {
                    facts::child(root, ASSERTION_NS, "Assertion")
                        .filter(|a| a.attribute("ID") == Some(id.as_str()))
                        .ok_or(ShapeError::SignedElsewhere)?
                } else {
                    root
                };
                response.assertion = Some(facts::assertion_facts(assertion));
                return Ok(response);
            }
            // Signed ciphertext: the decrypted assertion needs no signature of its own.
            Carried::Encrypted => {
                let plain = decrypt(root, v.sp_key, true)?;
                response.assertion = Some(decrypted_assertion(&plain, v, true)?);
                return Ok(response);
            }
        }
    }
    // Unsigned ciphertext: only an authenticated cipher (AES-GCM), so tampering cannot be
    // probed (CBC has no integrity of its own).
    let plain = decrypt(doc.root_element(), v.sp_key, false)?;
    response.assertion = Some(decrypted_assertion(&plain, v, false)?);
    Ok(response)
}

/// The facts of a decrypted assertion: screened like a message, one `Assertion` root, and
/// signed itself unless the ciphertext was.
fn decrypted_assertion(
    xml: &str,
    v: &Verification<'_>,
    ciphertext_signed: bool,
) -> Result<super::rules::AssertionFacts, SamlError> {
    screen(xml.as_bytes(), Limits::default())?;
    let doc = parse(xml)?;
    let root = doc.root_element();
    let nested = doc
        .descendants()
        .filter(|n| is(n, ASSERTION_NS, "Assertion"))
        .count();
    if !is(&root, ASSERTION_NS, "Assertion") || nested != 1 {
        return Err(ShapeError::Assertions(nested).into());
    }
    let id = root.attribute("ID").ok_or(ShapeError::NoId("Assertion"))?;
    facts::check_algorithms(&doc, v.allow_sha1)?;
    let signatures: Vec<_> = doc
        .descendants()
        .filter(|n| is(n, DSIG_NS, "Signature"))
        .collect();
    for signature in &signatures {
        if signature.parent_element() != Some(root) {
            return Err(ShapeError::SignatureMisplaced.into());
        }
        facts::enveloped(*signature, root)?;
    }
    let signed = !signatures.is_empty();
    if !signed {
        if ciphertext_signed {
            return Ok(facts::assertion_facts(root));
        }
        return Err(VerifyError::Unsigned.into());
    }
    let reduced = reduce_to_signed(xml, v.certs, v.allow_sha1)?;
    let reduced = parse(&reduced)?;
    let verified = reduced.root_element();
    if !is(&verified, ASSERTION_NS, "Assertion") || verified.attribute("ID") != Some(id) {
        return Err(ShapeError::SignedElsewhere.into());
    }
    Ok(facts::assertion_facts(verified))
}

fn parse(xml: &str) -> Result<roxmltree::Document<'_>, SamlError> {
    roxmltree::Document::parse(xml).map_err(|e| ShapeError::Xml(e.to_string()).into())
}
