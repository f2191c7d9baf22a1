//! The checks a SAML Response must pass after its signature is verified and it has been
//! reduced to what was signed: status, issuer, destination, recipient, audience, the request
//! it answers, time, and the NameID. Pure: plain facts in, the assertion to use or the reason
//! out; table-tested. (The signature, the replay cache and the XML screen are elsewhere.)

use std::collections::BTreeMap;

pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
pub const NAME_ID_TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
/// Clock skew allowed on `NotBefore` and `NotOnOrAfter`.
pub const SKEW_SECONDS: i64 = 60;
/// The longest an assertion may be valid from now: its ID is remembered (replay) until then.
/// IdPs use minutes.
pub const MAX_VALIDITY_SECONDS: i64 = 24 * 3600;

/// What a verified Response says (Unix seconds for times).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    /// The top-level `StatusCode` value, and the second-level one if any.
    pub status: String,
    pub sub_status: Option<String>,
    pub status_message: Option<String>,
    pub destination: Option<String>,
    pub in_response_to: Option<String>,
    pub issuer: Option<String>,
    /// Whether the Response itself was signed (else its own fields are the sender's word, and
    /// only the assertion's confirmation can bind it to a request).
    pub signed: bool,
    /// The one assertion (decrypted if it was encrypted); responses with none or several are
    /// refused before this.
    pub assertion: Option<AssertionFacts>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssertionFacts {
    pub id: String,
    pub issuer: String,
    pub name_id: String,
    pub name_id_format: Option<String>,
    /// The bearer `SubjectConfirmationData`.
    pub recipient: Option<String>,
    pub confirmation_in_response_to: Option<String>,
    pub confirmation_not_on_or_after: Option<i64>,
    /// `Conditions`.
    pub not_before: Option<i64>,
    pub not_on_or_after: Option<i64>,
    /// Each `AudienceRestriction`'s audiences: every one must name this SP.
    pub audience_restrictions: Vec<Vec<String>>,
    pub authn_instant: Option<i64>,
    pub authn_context: Option<String>,
    /// `AuthnStatement/@SessionIndex`, sent back in a `LogoutRequest`.
    pub session_index: Option<String>,
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// What this SP expects of the Response.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub acs_url: &'a str,
    pub sp_entity_id: &'a str,
    pub idp_entity_id: &'a str,
    /// The ID of the `AuthnRequest` this browser's login sent; `None`: IdP-initiated.
    pub request_id: Option<&'a str>,
    pub allow_idp_initiated: bool,
    pub now: i64,
}

/// Why a Response is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the identity provider answered {status}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        status: String,
        message: Option<String>,
    },
    #[error("the response has no assertion")]
    NoAssertion,
    #[error("the issuer {0:?} is not this identity provider")]
    Issuer(String),
    #[error("Destination {0:?} is not this service's ACS URL")]
    Destination(Option<String>),
    #[error("Recipient {0:?} is not this service's ACS URL")]
    Recipient(Option<String>),
    #[error("the assertion's Audience does not name this service ({0:?})")]
    Audience(Vec<String>),
    #[error("InResponseTo does not match a login started in this browser")]
    InResponseTo,
    #[error("an unsolicited (IdP-initiated) response, and allow_idp_initiated is off")]
    Unsolicited,
    #[error("the assertion is not valid yet (NotBefore is {0})")]
    NotYetValid(i64),
    #[error("the assertion has expired (NotOnOrAfter was {0})")]
    Expired(i64),
    #[error("the assertion has no NotOnOrAfter")]
    NoExpiry,
    #[error("the assertion is valid for too long (until {0})")]
    ValidTooLong(i64),
    #[error("the NameID is empty")]
    NoNameId,
    #[error("a transient NameID changes at every login and cannot identify an account")]
    TransientNameId,
}

impl Refusal {
    /// The audit reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Status { .. } => "saml_status",
            Self::NoAssertion | Self::NoNameId | Self::TransientNameId => "saml_subject",
            Self::Issuer(_) => "saml_issuer",
            Self::Destination(_) | Self::Recipient(_) => "saml_destination",
            Self::Audience(_) => "saml_audience",
            Self::InResponseTo => "saml_in_response_to",
            Self::Unsolicited => "saml_unsolicited",
            Self::NotYetValid(_) | Self::Expired(_) | Self::NoExpiry | Self::ValidTooLong(_) => {
                "saml_time"
            }
        }
    }
}

/// Checks `response` against `expected`; returns the assertion to use.
pub fn check<'r>(
    response: &'r ResponseFacts,
    expected: &Expected<'_>,
) -> Result<&'r AssertionFacts, Refusal> {
    if response.status != STATUS_SUCCESS {
        let status = match &response.sub_status {
            Some(sub) => format!("{} ({sub})", short(&response.status)),
            None => short(&response.status).to_owned(),
        };
        return Err(Refusal::Status {
            status,
            message: response.status_message.clone(),
        });
    }
    if response.destination.as_deref() != Some(expected.acs_url) {
        return Err(Refusal::Destination(response.destination.clone()));
    }
    if let Some(issuer) = &response.issuer
        && issuer != expected.idp_entity_id
    {
        return Err(Refusal::Issuer(issuer.clone()));
    }
    let assertion = response.assertion.as_ref().ok_or(Refusal::NoAssertion)?;
    if assertion.issuer != expected.idp_entity_id {
        return Err(Refusal::Issuer(assertion.issuer.clone()));
    }
    match expected.request_id {
        Some(id) => {
            // An unsigned Response's InResponseTo is anyone's to write: then the signed
            // confirmation must name the request.
            let confirmed = match assertion.confirmation_in_response_to.as_deref() {
                Some(c) => c == id,
                None => response.signed,
            };
            let answers = response.in_response_to.as_deref() == Some(id) && confirmed;
            if !answers {
                return Err(Refusal::InResponseTo);
            }
        }
        None => {
            if response.in_response_to.is_some() || assertion.confirmation_in_response_to.is_some()
            {
                // Answers a request this browser did not send (another browser's, or none).
                return Err(Refusal::InResponseTo);
            }
            if !expected.allow_idp_initiated {
                return Err(Refusal::Unsolicited);
            }
        }
    }
    if assertion.recipient.as_deref() != Some(expected.acs_url) {
        return Err(Refusal::Recipient(assertion.recipient.clone()));
    }
    let restrictions = &assertion.audience_restrictions;
    if restrictions.is_empty()
        || !restrictions
            .iter()
            .all(|r| r.iter().any(|a| a == expected.sp_entity_id))
    {
        return Err(Refusal::Audience(restrictions.concat()));
    }
    let now = expected.now;
    if let Some(not_before) = assertion.not_before
        && now + SKEW_SECONDS < not_before
    {
        return Err(Refusal::NotYetValid(not_before));
    }
    let ends = [
        assertion.not_on_or_after,
        assertion.confirmation_not_on_or_after,
    ];
    if ends.iter().all(Option::is_none) {
        return Err(Refusal::NoExpiry);
    }
    if let Some(end) = ends
        .into_iter()
        .flatten()
        .find(|end| now - SKEW_SECONDS >= *end)
    {
        return Err(Refusal::Expired(end));
    }
    if let Some(end) = ends
        .into_iter()
        .flatten()
        .find(|end| *end > now + MAX_VALIDITY_SECONDS)
    {
        return Err(Refusal::ValidTooLong(end));
    }
    if assertion.name_id.trim().is_empty() {
        return Err(Refusal::NoNameId);
    }
    if assertion.name_id_format.as_deref() == Some(NAME_ID_TRANSIENT) {
        return Err(Refusal::TransientNameId);
    }
    Ok(assertion)
}

/// `Requester` from `urn:oasis:names:tc:SAML:2.0:status:Requester`.
fn short(status: &str) -> &str {
    status.rsplit(':').next().unwrap_or(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACS: &str = "https://sp.test/auth/saml/acs";
    const SP: &str = "https://sp.test/auth/saml/bigcorp/metadata";
    const IDP: &str = "https://idp.bigcorp.test";
    const NOW: i64 = 1_800_000_000;

    fn good() -> ResponseFacts {
        ResponseFacts {
            status: STATUS_SUCCESS.into(),
            destination: Some(ACS.into()),
            in_response_to: Some("_req".into()),
            issuer: Some(IDP.into()),
            assertion: Some(AssertionFacts {
                id: "_a1".into(),
                issuer: IDP.into(),
                name_id: "u-123".into(),
                name_id_format: Some("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into()),
                recipient: Some(ACS.into()),
                confirmation_in_response_to: Some("_req".into()),
                confirmation_not_on_or_after: Some(NOW + 300),
                not_before: Some(NOW - 10),
                not_on_or_after: Some(NOW + 300),
                audience_restrictions: vec![vec![SP.into()]],
                ..AssertionFacts::default()
            }),
            signed: false,
            ..ResponseFacts::default()
        }
    }

    fn expected(request_id: Option<&'static str>, allow_idp_initiated: bool) -> Expected<'static> {
        Expected {
            acs_url: ACS,
            sp_entity_id: SP,
            idp_entity_id: IDP,
            request_id,
            allow_idp_initiated,
            now: NOW,
        }
    }

    type Edit = fn(&mut ResponseFacts);

    fn assertion(r: &mut ResponseFacts) -> &mut AssertionFacts {
        r.assertion.as_mut().unwrap()
    }

    #[test]
    fn every_rule_refuses_its_case() {
        let sp_initiated = expected(Some("_req"), false);
        let cases: Vec<(&str, Edit, Refusal)> = vec![
            (
                "status",
                |r| {
                    r.status = "urn:oasis:names:tc:SAML:2.0:status:Responder".into();
                    r.sub_status = Some("AuthnFailed".into());
                    r.status_message = Some("bad password".into());
                },
                Refusal::Status {
                    status: "Responder (AuthnFailed)".into(),
                    message: Some("bad password".into()),
                },
            ),
            (
                "no destination",
                |r| r.destination = None,
                Refusal::Destination(None),
            ),
            (
                "other destination",
                |r| r.destination = Some("https://evil.test/acs".into()),
                Refusal::Destination(Some("https://evil.test/acs".into())),
            ),
            (
                "response issuer",
                |r| r.issuer = Some("https://other-idp.test".into()),
                Refusal::Issuer("https://other-idp.test".into()),
            ),
            (
                "assertion issuer",
                |r| assertion(r).issuer = "https://other-idp.test".into(),
                Refusal::Issuer("https://other-idp.test".into()),
            ),
            ("no assertion", |r| r.assertion = None, Refusal::NoAssertion),
            (
                "another request",
                |r| r.in_response_to = Some("_other".into()),
                Refusal::InResponseTo,
            ),
            (
                "confirmation of another request",
                |r| assertion(r).confirmation_in_response_to = Some("_other".into()),
                Refusal::InResponseTo,
            ),
            (
                "no InResponseTo",
                |r| r.in_response_to = None,
                Refusal::InResponseTo,
            ),
            (
                "recipient",
                |r| assertion(r).recipient = Some("https://evil.test/acs".into()),
                Refusal::Recipient(Some("https://evil.test/acs".into())),
            ),
            (
                "no recipient",
                |r| assertion(r).recipient = None,
                Refusal::Recipient(None),
            ),
            (
                "audience",
                |r| assertion(r).audience_restrictions = vec![vec!["https://other-sp.test".into()]],
                Refusal::Audience(vec!["https://other-sp.test".into()]),
            ),
            (
                "no audience",
                |r| assertion(r).audience_restrictions.clear(),
                Refusal::Audience(vec![]),
            ),
            (
                "a second restriction without this SP",
                |r| {
                    assertion(r)
                        .audience_restrictions
                        .push(vec!["https://other-sp.test".into()])
                },
                Refusal::Audience(vec![SP.into(), "https://other-sp.test".into()]),
            ),
            (
                "an unsolicited assertion in an unsigned Response naming the request",
                |r| assertion(r).confirmation_in_response_to = None,
                Refusal::InResponseTo,
            ),
            (
                "valid for more than a day",
                |r| assertion(r).not_on_or_after = Some(NOW + MAX_VALIDITY_SECONDS + 1),
                Refusal::ValidTooLong(NOW + MAX_VALIDITY_SECONDS + 1),
            ),
            (
                "not yet valid",
                |r| assertion(r).not_before = Some(NOW + 61),
                Refusal::NotYetValid(NOW + 61),
            ),
            (
                "expired",
                |r| assertion(r).not_on_or_after = Some(NOW - 60),
                Refusal::Expired(NOW - 60),
            ),
            (
                "confirmation expired",
                |r| assertion(r).confirmation_not_on_or_after = Some(NOW - 61),
                Refusal::Expired(NOW - 61),
            ),
            (
                "no expiry",
                |r| {
                    assertion(r).not_on_or_after = None;
                    assertion(r).confirmation_not_on_or_after = None;
                },
                Refusal::NoExpiry,
            ),
            (
                "empty NameID",
                |r| assertion(r).name_id = " ".into(),
                Refusal::NoNameId,
            ),
            (
                "transient NameID",
                |r| assertion(r).name_id_format = Some(NAME_ID_TRANSIENT.into()),
                Refusal::TransientNameId,
            ),
        ];
        assert_eq!(
            check(&good(), &sp_initiated).map(|a| a.id.as_str()),
            Ok("_a1")
        );
        for (name, edit, refusal) in cases {
            let mut response = good();
            edit(&mut response);
            assert_eq!(check(&response, &sp_initiated), Err(refusal), "{name}");
        }
    }

    #[test]
    fn a_signed_response_binds_its_assertion_to_the_request() {
        let mut r = good();
        r.signed = true;
        assertion(&mut r).confirmation_in_response_to = None;
        assert!(check(&r, &expected(Some("_req"), false)).is_ok());
        r.in_response_to = Some("_other".into());
        assert_eq!(
            check(&r, &expected(Some("_req"), false)),
            Err(Refusal::InResponseTo)
        );
    }

    #[test]
    fn skew_is_sixty_seconds_either_way() {
        let e = expected(Some("_req"), false);
        let mut r = good();
        assertion(&mut r).not_before = Some(NOW + 60);
        assert!(check(&r, &e).is_ok(), "NotBefore within the skew");
        let mut r = good();
        assertion(&mut r).not_on_or_after = Some(NOW - 59);
        assert!(check(&r, &e).is_ok(), "NotOnOrAfter within the skew");
    }

    #[test]
    fn idp_initiated_only_when_allowed_and_unsolicited() {
        let mut unsolicited = good();
        unsolicited.in_response_to = None;
        assertion(&mut unsolicited).confirmation_in_response_to = None;
        assert_eq!(
            check(&unsolicited, &expected(None, false)),
            Err(Refusal::Unsolicited)
        );
        assert!(check(&unsolicited, &expected(None, true)).is_ok());
        // A response to someone's request, arriving where no login of this browser waits.
        assert_eq!(
            check(&good(), &expected(None, true)),
            Err(Refusal::InResponseTo)
        );
    }
}
