//! The SAML messages gatehouse writes: the `AuthnRequest` (sent by HTTP-Redirect) and the SP
//! metadata an administrator hands to the customer. Every value is XML-escaped; request IDs
//! carry 128 random bits.

use quick_xml::escape::escape;

use crate::session::OpaqueToken;
use crate::session::token::RandomError;

pub const PROTOCOL_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const ASSERTION_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const METADATA_NS: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
pub const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
pub const NAME_ID_PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
pub const NAME_ID_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// What an `AuthnRequest` asks.
#[derive(Debug, Clone, Default)]
pub struct AuthnRequest<'a> {
    /// The IdP's SSO endpoint (HTTP-Redirect binding).
    pub destination: &'a str,
    pub acs_url: &'a str,
    pub sp_entity_id: &'a str,
    /// Step-up: make the user authenticate again.
    pub force_authn: bool,
    /// Step-up: `RequestedAuthnContext` (Comparison `exact`), e.g. an MFA class.
    pub authn_contexts: &'a [String],
}

/// A request to send: its ID (kept with the login state) and its XML (sent with
/// [`super::binding::redirect_url`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    pub id: String,
    pub xml: String,
}

/// `_` and 32 hex digits (128 random bits): an NCName, as `ID` must be.
pub fn new_id() -> Result<String, RandomError> {
    let mut bytes = [0u8; 16];
    OpaqueToken::fill(&mut bytes)?;
    Ok(format!(
        "_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

pub(crate) fn instant(now: i64) -> String {
    chrono::DateTime::from_timestamp(now, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The `AuthnRequest`.
pub fn authn_request(request: &AuthnRequest<'_>, now: i64) -> Result<SentRequest, RandomError> {
    let id = new_id()?;
    let force = if request.force_authn {
        " ForceAuthn=\"true\""
    } else {
        ""
    };
    let contexts = if request.authn_contexts.is_empty() {
        String::new()
    } else {
        let refs: String = request
            .authn_contexts
            .iter()
            .map(|c| {
                format!(
                    "<saml:AuthnContextClassRef>{}</saml:AuthnContextClassRef>",
                    escape(c.as_str())
                )
            })
            .collect();
        format!(
            "<samlp:RequestedAuthnContext Comparison=\"exact\">{refs}</samlp:RequestedAuthnContext>"
        )
    };
    let xml = format!(
        "<samlp:AuthnRequest xmlns:samlp=\"{PROTOCOL_NS}\" xmlns:saml=\"{ASSERTION_NS}\" \
         ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\" \
         AssertionConsumerServiceURL=\"{}\" ProtocolBinding=\"{BINDING_POST}\"{force}>\
         <saml:Issuer>{}</saml:Issuer>\
         <samlp:NameIDPolicy Format=\"{NAME_ID_PERSISTENT}\" AllowCreate=\"true\"/>{contexts}\
         </samlp:AuthnRequest>",
        instant(now),
        escape(request.destination),
        escape(request.acs_url),
        escape(request.sp_entity_id),
    );
    Ok(SentRequest { id, xml })
}

/// What the SP metadata publishes.
#[derive(Debug, Clone, Default)]
pub struct SpMetadata<'a> {
    pub entity_id: &'a str,
    pub acs_url: &'a str,
    /// The single-logout endpoint (HTTP-Redirect), when logout is on.
    pub slo_url: Option<&'a str>,
    /// The SP certificate (base64 DER), when requests are signed or assertions encrypted.
    pub certificate: Option<&'a str>,
    pub requests_signed: bool,
}

/// The SP's `EntityDescriptor`.
pub fn sp_metadata(m: &SpMetadata<'_>) -> String {
    let key = m
        .certificate
        .map(|cert| {
            let cert: String = cert.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            ["signing", "encryption"]
                .iter()
                .map(|usage| {
                    format!(
                        "<md:KeyDescriptor use=\"{usage}\"><ds:KeyInfo xmlns:ds=\"{DSIG_NS}\">\
                         <ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data>\
                         </ds:KeyInfo></md:KeyDescriptor>",
                        escape(cert.as_str())
                    )
                })
                .collect::<String>()
        })
        .unwrap_or_default();
    let slo = m
        .slo_url
        .map(|url| {
            format!(
                "<md:SingleLogoutService Binding=\"{BINDING_REDIRECT}\" Location=\"{}\"/>",
                escape(url)
            )
        })
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <md:EntityDescriptor xmlns:md=\"{METADATA_NS}\" entityID=\"{}\">\
         <md:SPSSODescriptor AuthnRequestsSigned=\"{}\" WantAssertionsSigned=\"true\" \
         protocolSupportEnumeration=\"{PROTOCOL_NS}\">{key}{slo}\
         <md:NameIDFormat>{NAME_ID_PERSISTENT}</md:NameIDFormat>\
         <md:NameIDFormat>{NAME_ID_EMAIL}</md:NameIDFormat>\
         <md:AssertionConsumerService Binding=\"{BINDING_POST}\" Location=\"{}\" index=\"0\" \
         isDefault=\"true\"/></md:SPSSODescriptor></md:EntityDescriptor>\n",
        escape(m.entity_id),
        m.requests_signed,
        escape(m.acs_url),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saml::binding::{Outgoing, redirect_decode, redirect_url};
    use crate::saml::screen::{Limits, screen};

    #[test]
    fn authn_requests_round_trip_through_the_redirect_binding() {
        let contexts =
            vec!["http://schemas.openid.net/pape/policies/2007/06/multi-factor".to_owned()];
        let sent = authn_request(
            &AuthnRequest {
                destination: "https://idp.test/sso?tenant=a&b=c",
                acs_url: "https://sp.test/auth/saml/acs",
                sp_entity_id: "https://sp.test/auth/saml/big&corp/metadata",
                force_authn: true,
                authn_contexts: &contexts,
            },
            1_800_000_000,
        )
        .unwrap();
        assert_eq!(sent.id.len(), 33);
        assert!(sent.id.starts_with('_'));
        assert_ne!(sent.id, new_id().unwrap(), "IDs are random");
        assert!(
            screen(sent.xml.as_bytes(), Limits::default()).is_ok(),
            "{}",
            sent.xml
        );
        for part in [
            "ForceAuthn=\"true\"",
            "IssueInstant=\"2027-01-15T08:00:00Z\"",
            "Destination=\"https://idp.test/sso?tenant=a&amp;b=c\"",
            "<saml:Issuer>https://sp.test/auth/saml/big&amp;corp/metadata</saml:Issuer>",
            "Comparison=\"exact\"",
            "ProtocolBinding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\"",
        ] {
            assert!(sent.xml.contains(part), "{part} in {}", sent.xml);
        }
        let out = Outgoing {
            destination: "https://idp.test/sso?tenant=a&b=c",
            issuer: "sp",
            relay_state: Some("state-1"),
            key: None,
        };
        let url = url::Url::parse(&redirect_url(&out, "SAMLRequest", &sent.xml).unwrap()).unwrap();
        let pairs: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["tenant"], "a", "the IdP's own parameters stay");
        assert_eq!(pairs["RelayState"], "state-1");
        assert!(!pairs.contains_key("Signature"), "no SP key, no signature");
        let xml = redirect_decode(&pairs["SAMLRequest"], 64 * 1024).unwrap();
        assert_eq!(String::from_utf8(xml).unwrap(), sent.xml);
        let plain = authn_request(
            &AuthnRequest {
                destination: "https://idp.test/sso",
                acs_url: "https://sp.test/auth/saml/acs",
                sp_entity_id: "sp",
                ..AuthnRequest::default()
            },
            0,
        )
        .unwrap();
        assert!(!plain.xml.contains("ForceAuthn") && !plain.xml.contains("RequestedAuthnContext"));
    }

    #[test]
    fn sp_metadata_names_the_endpoints_and_the_certificate() {
        let xml = sp_metadata(&SpMetadata {
            entity_id: "https://sp.test/auth/saml/bigcorp/metadata",
            acs_url: "https://sp.test/auth/saml/acs",
            slo_url: Some("https://sp.test/auth/saml/slo"),
            certificate: Some("MIIB\nAAAA"),
            requests_signed: true,
        });
        assert!(screen(xml.as_bytes(), Limits::default()).is_ok(), "{xml}");
        for part in [
            "entityID=\"https://sp.test/auth/saml/bigcorp/metadata\"",
            "AuthnRequestsSigned=\"true\"",
            "WantAssertionsSigned=\"true\"",
            "Location=\"https://sp.test/auth/saml/acs\"",
            "<md:SingleLogoutService",
            "<ds:X509Certificate>MIIBAAAA</ds:X509Certificate>",
            "use=\"encryption\"",
        ] {
            assert!(xml.contains(part), "{part} in {xml}");
        }
        let bare = sp_metadata(&SpMetadata {
            entity_id: "e\"><x",
            acs_url: "a",
            ..SpMetadata::default()
        });
        assert!(!bare.contains("KeyDescriptor") && !bare.contains("SingleLogout"));
        assert!(bare.contains("entityID=\"e&quot;&gt;&lt;x\""), "{bare}");
    }
}
