//! Reading a Response: the shape of the document as received (one Response, one assertion,
//! signatures only where they belong, unique IDs, allowed algorithms), and the facts of the
//! verified assertion. Pure, over screened XML.
//!
//! The shape rule is what makes signature wrapping (XSW 1–8) fail whatever the verifier keeps:
//! every wrapping attack adds a second Response or Assertion, or moves the signed one under
//! another element (an `Object`, `Extensions`, another assertion). The document must hold
//! exactly one Response (its root) and exactly one Assertion or EncryptedAssertion, a child of
//! that root; and the element whose data is used must be the one the signature verified (its
//! ID is compared after the reduction to signed content).

use std::collections::{BTreeMap, HashSet};

use super::messages::{ASSERTION_NS, DSIG_NS, PROTOCOL_NS};
use super::metadata::is;
use super::rules::{AssertionFacts, ResponseFacts};

pub const XMLENC_NS: &str = "http://www.w3.org/2001/04/xmlenc#";

/// Signature and digest algorithms accepted: SHA-256 or stronger, RSA or ECDSA.
const STRONG: [&str; 10] = [
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
    "http://www.w3.org/2001/04/xmlenc#sha384",
];
/// Transforms and canonicalizations a SAML signature needs; xmlsec would also run XPath,
/// XPointer and XSLT ones, before the signature is known to be good.
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const TRANSFORMS: [&str; 4] = [
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    EXC_C14N,
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/2006/12/xml-c14n11",
];
/// Accepted only with `allow_sha1`.
const SHA1: [&str; 2] = [
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "http://www.w3.org/2000/09/xmldsig#sha1",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("the message is not XML: {0}")]
    Xml(String),
    #[error("the root element is not a SAML Response")]
    NotResponse,
    #[error("the document holds {0} Response elements (signature wrapping?)")]
    Responses(usize),
    #[error("the response holds {0} assertions; exactly one is accepted (signature wrapping?)")]
    Assertions(usize),
    #[error("the assertion is not a direct child of the Response (signature wrapping?)")]
    AssertionMisplaced,
    #[error(
        "a Signature is outside the Response and Assertion it could sign (signature wrapping?)"
    )]
    SignatureMisplaced,
    #[error("the ID {0:?} appears twice")]
    DuplicateId(String),
    #[error("the {0} element has no ID")]
    NoId(&'static str),
    #[error("the signature uses {0}, which is not allowed (SHA-256 or stronger, RSA or ECDSA)")]
    Algorithm(String),
    #[error(
        "the verified content is not this response or its assertion (signature over another element)"
    )]
    SignedElsewhere,
    #[error("the signature is not a plain enveloped one over its parent ({0})")]
    SignatureForm(&'static str),
}

/// The one assertion a well-shaped Response carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carried {
    Plain { id: String },
    Encrypted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub response_id: String,
    pub carried: Carried,
}

/// Checks the shape of a received Response document (see the module docs); the algorithms
/// are [`check_algorithms`]'s, once the IdP (and its `allow_sha1`) is known.
pub fn shape(doc: &roxmltree::Document<'_>) -> Result<Shape, ShapeError> {
    let root = doc.root_element();
    if !is(&root, PROTOCOL_NS, "Response") {
        return Err(ShapeError::NotResponse);
    }
    let count = |ns: &str, local: &str| doc.descendants().filter(|n| is(n, ns, local)).count();
    let responses = count(PROTOCOL_NS, "Response");
    if responses != 1 {
        return Err(ShapeError::Responses(responses));
    }
    let assertions: Vec<_> = doc
        .descendants()
        .filter(|n| is(n, ASSERTION_NS, "Assertion") || is(n, ASSERTION_NS, "EncryptedAssertion"))
        .collect();
    let assertion = match assertions.as_slice() {
        [one] => *one,
        all => return Err(ShapeError::Assertions(all.len())),
    };
    if assertion.parent_element() != Some(root) {
        return Err(ShapeError::AssertionMisplaced);
    }
    // Nested encrypted content is opaque here; its own shape is checked after decryption.
    for signature in doc.descendants().filter(|n| is(n, DSIG_NS, "Signature")) {
        if signature
            .ancestors()
            .any(|a| is(&a, XMLENC_NS, "EncryptedData"))
        {
            continue;
        }
        let parent = signature.parent_element();
        let plain_assertion = is(&assertion, ASSERTION_NS, "Assertion");
        if parent != Some(root) && !(plain_assertion && parent == Some(assertion)) {
            return Err(ShapeError::SignatureMisplaced);
        }
        if let Some(parent) = parent {
            enveloped(signature, parent)?;
        }
    }
    let mut ids = HashSet::new();
    for node in doc.descendants().filter(|n| n.is_element()) {
        for attribute in node.attributes() {
            if matches!(attribute.name(), "ID" | "Id" | "id")
                && !ids.insert(attribute.value().to_owned())
            {
                return Err(ShapeError::DuplicateId(attribute.value().to_owned()));
            }
        }
    }
    let response_id = root
        .attribute("ID")
        .ok_or(ShapeError::NoId("Response"))?
        .to_owned();
    let carried = if is(&assertion, ASSERTION_NS, "Assertion") {
        Carried::Plain {
            id: assertion
                .attribute("ID")
                .ok_or(ShapeError::NoId("Assertion"))?
                .to_owned(),
        }
    } else {
        Carried::Encrypted
    };
    Ok(Shape {
        response_id,
        carried,
    })
}

/// A signature xmlsec may process: exactly one `Reference`, to its parent by ID, with only
/// enveloped-signature and canonicalization transforms (exclusive C14N's `InclusiveNamespaces`
/// allowed); no `Object` (nor a `Manifest` in one) and no `RetrievalMethod`. xmlsec digests
/// every reference before it checks the signature value, so anything else (a `file:` or
/// `http:` URI, an XSLT transform) would be work done, or a request made, for whoever sent
/// the message.
pub fn enveloped(
    signature: roxmltree::Node<'_, '_>,
    parent: roxmltree::Node<'_, '_>,
) -> Result<(), ShapeError> {
    let form = ShapeError::SignatureForm;
    let signed_info = child(signature, DSIG_NS, "SignedInfo").ok_or(form("no SignedInfo"))?;
    let references: Vec<_> = signature
        .descendants()
        .filter(|n| is(n, DSIG_NS, "Reference"))
        .collect();
    let [reference] = references.as_slice() else {
        return Err(form("exactly one Reference"));
    };
    if reference.parent_element() != Some(signed_info) {
        return Err(form("the Reference is outside SignedInfo"));
    }
    let target = parent
        .attribute("ID")
        .map(|id| format!("#{id}"))
        .ok_or(form("the signed element has no ID"))?;
    if reference.attribute("URI") != Some(target.as_str()) {
        return Err(form("the Reference must name its parent's ID"));
    }
    let unwanted = ["Object", "Manifest", "RetrievalMethod"];
    if signature
        .descendants()
        .any(|n| unwanted.iter().any(|u| is(&n, DSIG_NS, u)))
    {
        return Err(form("an Object, Manifest or RetrievalMethod"));
    }
    let steps = signature
        .descendants()
        .filter(|n| is(n, DSIG_NS, "Transform") || is(n, DSIG_NS, "CanonicalizationMethod"));
    for step in steps {
        let algorithm = step.attribute("Algorithm").unwrap_or_default();
        if !TRANSFORMS.contains(&algorithm) {
            return Err(form("a transform other than enveloped-signature and C14N"));
        }
        let parameters_ok = step
            .children()
            .filter(|c| c.is_element())
            .all(|c| algorithm == EXC_C14N && is(&c, EXC_C14N, "InclusiveNamespaces"));
        if !parameters_ok {
            return Err(form("a transform with parameters"));
        }
    }
    Ok(())
}

/// Every `SignatureMethod` and `DigestMethod` is strong (SHA-1 only when allowed).
pub fn check_algorithms(doc: &roxmltree::Document<'_>, allow_sha1: bool) -> Result<(), ShapeError> {
    // Inside `SignedInfo` only: an encrypted key's OAEP digest is not a signature's.
    for method in doc
        .descendants()
        .filter(|n| is(n, DSIG_NS, "SignatureMethod") || is(n, DSIG_NS, "DigestMethod"))
        .filter(|n| n.ancestors().any(|a| is(&a, DSIG_NS, "SignedInfo")))
    {
        let algorithm = method.attribute("Algorithm").unwrap_or_default();
        let allowed = STRONG.contains(&algorithm) || (allow_sha1 && SHA1.contains(&algorithm));
        if !allowed {
            return Err(ShapeError::Algorithm(algorithm.to_owned()));
        }
    }
    Ok(())
}

/// In the document reduced to verified content, the element whose data is used: the Response
/// (when it was signed) or else the Assertion, with the IDs the received document showed.
/// Returns whether the Response itself was signed.
pub fn signed_root(reduced: &roxmltree::Document<'_>, shape: &Shape) -> Result<bool, ShapeError> {
    let root = reduced.root_element();
    if is(&root, PROTOCOL_NS, "Response") && root.attribute("ID") == Some(&shape.response_id) {
        return Ok(true);
    }
    match &shape.carried {
        Carried::Plain { id }
            if is(&root, ASSERTION_NS, "Assertion") && root.attribute("ID") == Some(id) =>
        {
            Ok(false)
        }
        _ => Err(ShapeError::SignedElsewhere),
    }
}

/// The Response-level facts (status, destination, issuer, InResponseTo) of `root`.
pub fn response_facts(root: roxmltree::Node<'_, '_>) -> ResponseFacts {
    let status = child(root, PROTOCOL_NS, "Status");
    let code = status.and_then(|s| child(s, PROTOCOL_NS, "StatusCode"));
    ResponseFacts {
        status: code
            .and_then(|c| c.attribute("Value"))
            .unwrap_or_default()
            .to_owned(),
        sub_status: code
            .and_then(|c| child(c, PROTOCOL_NS, "StatusCode"))
            .and_then(|c| c.attribute("Value"))
            .map(String::from),
        status_message: status
            .and_then(|s| child(s, PROTOCOL_NS, "StatusMessage"))
            .map(text),
        destination: root.attribute("Destination").map(String::from),
        in_response_to: root.attribute("InResponseTo").map(String::from),
        issuer: child(root, ASSERTION_NS, "Issuer").map(text),
        signed: false,
        assertion: None,
    }
}

/// The facts of a verified `Assertion` element.
pub fn assertion_facts(assertion: roxmltree::Node<'_, '_>) -> AssertionFacts {
    let subject = child(assertion, ASSERTION_NS, "Subject");
    let name_id = subject.and_then(|s| child(s, ASSERTION_NS, "NameID"));
    let confirmation = subject
        .into_iter()
        .flat_map(|s| s.children())
        .filter(|n| is(n, ASSERTION_NS, "SubjectConfirmation"))
        .find(|n| n.attribute("Method") == Some("urn:oasis:names:tc:SAML:2.0:cm:bearer"))
        .and_then(|c| child(c, ASSERTION_NS, "SubjectConfirmationData"));
    let conditions = child(assertion, ASSERTION_NS, "Conditions");
    let authn = child(assertion, ASSERTION_NS, "AuthnStatement");
    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for attribute in assertion
        .children()
        .filter(|n| is(n, ASSERTION_NS, "AttributeStatement"))
        .flat_map(|s| s.children())
        .filter(|n| is(n, ASSERTION_NS, "Attribute"))
    {
        let values: Vec<String> = attribute
            .children()
            .filter(|n| is(n, ASSERTION_NS, "AttributeValue"))
            .map(text)
            .collect();
        for name in [
            attribute.attribute("Name"),
            attribute.attribute("FriendlyName"),
        ]
        .into_iter()
        .flatten()
        {
            attributes
                .entry(name.to_owned())
                .or_default()
                .extend(values.iter().cloned());
        }
    }
    AssertionFacts {
        id: assertion.attribute("ID").unwrap_or_default().to_owned(),
        issuer: child(assertion, ASSERTION_NS, "Issuer")
            .map(text)
            .unwrap_or_default(),
        name_id: name_id.map(text).unwrap_or_default(),
        name_id_format: name_id
            .and_then(|n| n.attribute("Format"))
            .map(String::from),
        recipient: confirmation
            .and_then(|c| c.attribute("Recipient"))
            .map(String::from),
        confirmation_in_response_to: confirmation
            .and_then(|c| c.attribute("InResponseTo"))
            .map(String::from),
        confirmation_not_on_or_after: confirmation
            .and_then(|c| c.attribute("NotOnOrAfter"))
            .map(|t| instant(t).unwrap_or(i64::MIN)),
        not_before: conditions
            .and_then(|c| c.attribute("NotBefore"))
            .map(|t| instant(t).unwrap_or(i64::MAX)),
        not_on_or_after: conditions
            .and_then(|c| c.attribute("NotOnOrAfter"))
            .map(|t| instant(t).unwrap_or(i64::MIN)),
        audience_restrictions: conditions
            .into_iter()
            .flat_map(|c| c.children())
            .filter(|n| is(n, ASSERTION_NS, "AudienceRestriction"))
            .map(|r| {
                r.children()
                    .filter(|n| is(n, ASSERTION_NS, "Audience"))
                    .map(text)
                    .collect()
            })
            .collect(),
        authn_instant: authn
            .and_then(|a| a.attribute("AuthnInstant"))
            .and_then(instant),
        authn_context: authn
            .and_then(|a| child(a, ASSERTION_NS, "AuthnContext"))
            .and_then(|c| child(c, ASSERTION_NS, "AuthnContextClassRef"))
            .map(text),
        session_index: authn
            .and_then(|a| a.attribute("SessionIndex"))
            .map(String::from),
        attributes,
    }
}

pub(crate) fn child<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    ns: &str,
    local: &str,
) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| is(n, ns, local))
}

/// An element's text (all of it: the screen has refused comments, so there is one text run),
/// trimmed.
pub(crate) fn text(node: roxmltree::Node<'_, '_>) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<String>()
        .trim()
        .to_owned()
}

/// An `xs:dateTime` in Unix seconds. The callers read an unreadable bound as already passed
/// (an end) or never reached (a start), so it refuses rather than widens.
fn instant(value: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(value.trim())
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests;
