//! An IdP's SAML metadata: the entityID, the single sign-on and single logout endpoints
//! (HTTP-Redirect binding) and the signing certificates. Pure: screened XML in, the facts or
//! the reason out. Metadata that gives no way to verify a response (no signing certificate)
//! or no identity that lasts (only transient NameIDs) is refused, so a bad copy never
//! replaces a good one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::messages::{BINDING_REDIRECT, DSIG_NS, METADATA_NS};
use super::rules::NAME_ID_TRANSIENT;
use super::screen::{Hostile, Limits, screen};

/// What gatehouse uses of an IdP's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpMetadata {
    pub entity_id: String,
    /// `SingleSignOnService` with the HTTP-Redirect binding.
    pub sso_url: String,
    /// `SingleLogoutService` with the HTTP-Redirect binding, if any: where `LogoutRequest`s go.
    pub slo_url: Option<String>,
    /// Its `ResponseLocation` (else `slo_url`): where `LogoutResponse`s go.
    pub slo_response_url: Option<String>,
    /// DER certificates with `use="signing"` or no `use`.
    pub signing_certs: Vec<Vec<u8>>,
    pub name_id_formats: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("the metadata is refused by the XML screen: {0}")]
    Hostile(#[from] Hostile),
    #[error("the metadata is not XML: {0}")]
    Xml(String),
    #[error("the metadata has no EntityDescriptor with an IDPSSODescriptor")]
    NoIdp,
    #[error("the metadata names {0} identity providers (EntitiesDescriptor); point at one")]
    Several(usize),
    #[error("the IdP has no entityID")]
    NoEntityId,
    #[error("the IdP has no SingleSignOnService with the HTTP-Redirect binding")]
    NoRedirectSso,
    #[error("the IdP publishes no signing certificate, so its responses cannot be verified")]
    NoSigningCertificate,
    #[error("a signing certificate is not base64 DER")]
    BadCertificate,
    #[error("the metadata names the entityID {found:?}, {why}")]
    EntityId { found: String, why: &'static str },
    #[error(
        "the IdP offers only transient NameIDs, which change at every login: configure it to \
         send a persistent NameID for this service provider"
    )]
    TransientOnly,
}

/// Metadata documents are larger than messages (many certificates, long descriptions).
fn limits() -> Limits {
    Limits {
        max_bytes: 1024 * 1024,
        max_elements: 20_000,
        ..Limits::default()
    }
}

pub fn parse(xml: &[u8]) -> Result<IdpMetadata, MetadataError> {
    screen(xml, limits())?;
    let text = std::str::from_utf8(xml).map_err(|_| Hostile::NotUtf8)?;
    let doc = roxmltree::Document::parse(text).map_err(|e| MetadataError::Xml(e.to_string()))?;
    let idps: Vec<_> = doc
        .descendants()
        .filter(|n| is(n, METADATA_NS, "IDPSSODescriptor"))
        .collect();
    let descriptor = match idps.as_slice() {
        [] => return Err(MetadataError::NoIdp),
        [one] => *one,
        several => return Err(MetadataError::Several(several.len())),
    };
    let entity = descriptor
        .ancestors()
        .find(|n| is(n, METADATA_NS, "EntityDescriptor"))
        .ok_or(MetadataError::NoIdp)?;
    let entity_id = entity
        .attribute("entityID")
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or(MetadataError::NoEntityId)?
        .to_owned();
    let redirect = |name: &str| {
        descriptor
            .children()
            .filter(|n| is(n, METADATA_NS, name))
            .find(|n| n.attribute("Binding") == Some(BINDING_REDIRECT))
    };
    let sso_url = redirect("SingleSignOnService")
        .and_then(|n| n.attribute("Location"))
        .ok_or(MetadataError::NoRedirectSso)?
        .to_owned();
    let slo = redirect("SingleLogoutService");
    let slo_url = slo.and_then(|n| n.attribute("Location")).map(String::from);
    let slo_response_url = slo
        .and_then(|n| n.attribute("ResponseLocation"))
        .map(String::from)
        .or_else(|| slo_url.clone());
    let mut signing_certs = Vec::new();
    for key in descriptor
        .children()
        .filter(|n| is(n, METADATA_NS, "KeyDescriptor"))
        .filter(|n| matches!(n.attribute("use"), None | Some("signing")))
    {
        for cert in key
            .descendants()
            .filter(|n| is(n, DSIG_NS, "X509Certificate"))
        {
            let b64: String = cert
                .text()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            let der = STANDARD
                .decode(b64)
                .map_err(|_| MetadataError::BadCertificate)?;
            if der.is_empty() {
                return Err(MetadataError::BadCertificate);
            }
            signing_certs.push(der);
        }
    }
    if signing_certs.is_empty() {
        return Err(MetadataError::NoSigningCertificate);
    }
    let name_id_formats: Vec<String> = descriptor
        .children()
        .filter(|n| is(n, METADATA_NS, "NameIDFormat"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_owned())
        .collect();
    if !name_id_formats.is_empty() && name_id_formats.iter().all(|f| f == NAME_ID_TRANSIENT) {
        return Err(MetadataError::TransientOnly);
    }
    Ok(IdpMetadata {
        entity_id,
        sso_url,
        slo_url,
        slo_response_url,
        signing_certs,
        name_id_formats,
    })
}

/// An element `local` in namespace `ns`.
pub(crate) fn is(node: &roxmltree::Node<'_, '_>, ns: &str, local: &str) -> bool {
    node.is_element() && node.tag_name().name() == local && node.tag_name().namespace() == Some(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(descriptor_body: &str) -> String {
        format!(
            "<md:EntityDescriptor xmlns:md=\"{METADATA_NS}\" xmlns:ds=\"{DSIG_NS}\" \
             entityID=\"https://idp.test/saml\"><md:IDPSSODescriptor \
             protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">{descriptor_body}\
             </md:IDPSSODescriptor></md:EntityDescriptor>"
        )
    }

    const KEY: &str = "<md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data>\
        <ds:X509Certificate>\n  AQID\n</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>";
    const ENC_KEY: &str = "<md:KeyDescriptor use=\"encryption\"><ds:KeyInfo><ds:X509Data>\
        <ds:X509Certificate>BAUG</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>";
    const SSO: &str = "<md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" \
        Location=\"https://idp.test/post\"/><md:SingleSignOnService \
        Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"https://idp.test/sso\"/>";
    const SLO: &str = "<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" \
        Location=\"https://idp.test/slo\" ResponseLocation=\"https://idp.test/slo-done\"/>";

    #[test]
    fn reads_what_gatehouse_uses() {
        let m = parse(
            doc(&format!(
                "{ENC_KEY}{KEY}{SLO}<md:NameIDFormat>{}</md:NameIDFormat>{SSO}",
                super::super::messages::NAME_ID_PERSISTENT
            ))
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(m.entity_id, "https://idp.test/saml");
        assert_eq!(m.sso_url, "https://idp.test/sso");
        assert_eq!(m.slo_url.as_deref(), Some("https://idp.test/slo"));
        assert_eq!(
            m.slo_response_url.as_deref(),
            Some("https://idp.test/slo-done")
        );
        assert_eq!(
            m.signing_certs,
            vec![vec![1, 2, 3]],
            "the encryption key is not a signing key"
        );
    }

    #[test]
    fn refuses_metadata_that_cannot_serve() {
        let transient = format!("{KEY}{SSO}<md:NameIDFormat>{NAME_ID_TRANSIENT}</md:NameIDFormat>");
        let bad_cert = "<md:KeyDescriptor><ds:KeyInfo><ds:X509Data><ds:X509Certificate>@@\
            </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
            .to_owned()
            + SSO;
        let cases: Vec<(String, MetadataError)> = vec![
            (doc(SSO), MetadataError::NoSigningCertificate),
            (
                doc(&format!("{ENC_KEY}{SSO}")),
                MetadataError::NoSigningCertificate,
            ),
            (doc(KEY), MetadataError::NoRedirectSso),
            (doc(&transient), MetadataError::TransientOnly),
            (doc(&bad_cert), MetadataError::BadCertificate),
            (
                format!("<md:EntityDescriptor xmlns:md=\"{METADATA_NS}\" entityID=\"x\"/>"),
                MetadataError::NoIdp,
            ),
            (
                doc(&format!("{KEY}{SSO}"))
                    .replace("entityID=\"https://idp.test/saml\"", "entityID=\" \""),
                MetadataError::NoEntityId,
            ),
            (
                format!(
                    "<md:EntitiesDescriptor xmlns:md=\"{METADATA_NS}\">{}{}</md:EntitiesDescriptor>",
                    doc(&format!("{KEY}{SSO}"))
                        .replace(&format!(" xmlns:md=\"{METADATA_NS}\""), ""),
                    doc(&format!("{KEY}{SSO}"))
                        .replace(&format!(" xmlns:md=\"{METADATA_NS}\""), ""),
                ),
                MetadataError::Several(2),
            ),
            (
                format!(
                    "<!DOCTYPE x [<!ENTITY a \"b\">]>{}",
                    doc(&format!("{KEY}{SSO}"))
                ),
                MetadataError::Hostile(Hostile::Doctype),
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(parse(xml.as_bytes()), Err(want), "{xml}");
        }
    }
}
