//! Why a login failed: the detail for logs and the audit trail, a fixed reason label for
//! metrics, and a message fit for the person at the browser.

use http::StatusCode;

use crate::saml::response::SamlError;
use crate::saml::rules::Refusal;
use crate::session::SessionError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("identity provider configuration: {0}")]
    Config(String),
    #[error("the identity provider answered with error {error:?}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Idp {
        error: String,
        description: Option<String>,
    },
    #[error("bad callback request: {0}")]
    BadCallback(String),
    #[error("no login is in progress in this browser (missing login cookie)")]
    NoBinding,
    #[error("{0}")]
    StateInvalid(&'static str),
    /// A real pending login's state, presented by a browser other than the one that started it:
    /// someone replaying a victim's callback.
    #[error("state belongs to another browser")]
    ForeignState,
    #[error("the callback's iss {0:?} is not this login's identity provider")]
    IssuerMismatch(String),
    #[error("identity provider unreachable: {0}")]
    Unreachable(String),
    #[error("code exchange failed: {0}")]
    TokenExchange(String),
    #[error("ID token rejected: {0}")]
    IdToken(String),
    #[error("userinfo failed: {0}")]
    Userinfo(String),
    #[error("{0}")]
    Provisioning(String),
    /// A new user whose domain belongs to no org and no IdP, without `signup=1`.
    #[error("no account for {0} (sign-up not requested)")]
    NoAccount(String),
    /// The IdP's answer did not show the strength this login asked for: what was missing.
    #[error("the identity provider did not establish {0}")]
    InsufficientAuthentication(String),
    /// A SAML response or message refused (its reason names the rule).
    #[error("SAML: {0}")]
    Saml(#[from] crate::saml::response::SamlError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl LoginError {
    /// A label from a fixed set, for metrics and `gatehouse audit`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Idp { .. } => "idp_error",
            Self::BadCallback(_) => "bad_callback",
            Self::NoBinding => "state_not_bound",
            Self::StateInvalid(_) | Self::ForeignState => "state_invalid",
            Self::IssuerMismatch(_) => "issuer_mismatch",
            Self::Unreachable(_) => "idp_unreachable",
            Self::TokenExchange(_) => "token_exchange_failed",
            Self::IdToken(_) => "id_token_invalid",
            Self::Userinfo(_) => "userinfo_failed",
            Self::Provisioning(_) => "provisioning_refused",
            Self::NoAccount(_) => "no_account",
            Self::InsufficientAuthentication(_) => "insufficient_authentication",
            Self::Saml(e) => e.reason(),
            Self::Store(_) | Self::Session(_) => "internal_error",
        }
    }

    /// A callback that matches no login in progress at all (no state, an unknown one, no
    /// binding cookie): costs a client nothing to send, so it is sampled in the audit trail.
    pub fn is_unsolicited(&self) -> bool {
        matches!(self, Self::NoBinding | Self::StateInvalid(_))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unreachable(_) | Self::Store(_) | Self::Session(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Saml(SamlError::NoMetadata) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Saml(SamlError::Refused(Refusal::Status { .. })) => StatusCode::FORBIDDEN,
            Self::Provisioning(_) | Self::NoAccount(_) | Self::InsufficientAuthentication(_) => {
                StatusCode::FORBIDDEN
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// What the error page says. Never internal details.
    pub fn user_message(&self) -> String {
        match self {
            Self::Idp { error, .. } if error == "access_denied" => {
                "Sign-in was cancelled or refused at your identity provider.".into()
            }
            Self::Idp { .. } => "Your identity provider could not sign you in.".into(),
            Self::NoBinding
            | Self::StateInvalid(_)
            | Self::ForeignState
            | Self::BadCallback(_)
            | Self::IssuerMismatch(_) => {
                "This sign-in link is invalid, expired or was already used. Sign-in links only \
                 work once, in the browser that started them."
                    .into()
            }
            Self::Unreachable(_) => {
                "Your identity provider cannot be reached right now. Please try again in a moment."
                    .into()
            }
            Self::TokenExchange(_) | Self::IdToken(_) | Self::Userinfo(_) => {
                "Your identity provider's answer could not be verified, so you were not signed in."
                    .into()
            }
            Self::Saml(SamlError::Refused(refusal @ Refusal::Status { .. })) => {
                format!("Your identity provider did not sign you in: {refusal}.")
            }
            Self::Saml(SamlError::NoMetadata) => {
                "Your identity provider cannot be reached right now. Please try again in a moment."
                    .into()
            }
            Self::Saml(SamlError::Refused(Refusal::InResponseTo)) => {
                "This sign-in answer is not for a sign-in started in this browser, so you were \
                 not signed in. Start again from this browser."
                    .into()
            }
            Self::Saml(_) => {
                "Your identity provider's answer could not be verified, so you were not signed in."
                    .into()
            }
            // Provisioning messages are written for the user.
            Self::Provisioning(message) => message.clone(),
            Self::NoAccount(email) => format!(
                "There is no account for {email}. Ask your administrator for access, or use \
                 your organization's sign-up link."
            ),
            Self::InsufficientAuthentication(missing) => format!(
                "This page needs {missing}, and your identity provider did not confirm it. \
                 You were not signed in again; your previous session is unchanged."
            ),
            Self::Config(_) | Self::Store(_) | Self::Session(_) => {
                "Sign-in is temporarily unavailable. Please try again in a moment.".into()
            }
        }
    }
}
