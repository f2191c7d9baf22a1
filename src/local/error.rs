//! Why a local sign-in step failed: a message for the person, a status, and an RFC 6749-style
//! error code for the API. Wrong credentials of every kind share one message, so an answer
//! never tells whether an account exists or is blocked.

use http::StatusCode;

use super::mailer::MailError;
use super::password::{PasswordError, Weak};
use super::totp::TotpError;
use crate::limits::Refusal;
use crate::session::SessionError;
use crate::session::token::RandomError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Unknown, expired, finished, or killed by failures.
    #[error("this sign-in has expired or was already used")]
    FlowInvalid,
    /// The org does not allow this method: the message names its sign-in.
    #[error("{0}")]
    NotAllowed(String),
    /// A wrong password, code or TOTP (or an unknown or blocked account: the same answer).
    #[error("{0}")]
    Rejected(&'static str),
    /// The emailed code was tried too often: a new one must be sent.
    #[error("too many attempts at this code")]
    CodeSpent,
    /// A step that needs another first (e.g. TOTP before a password).
    #[error("{0}")]
    OutOfOrder(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Weak(#[from] Weak),
    /// The address proved itself but has no account and may not sign up.
    #[error("there is no account for {0}")]
    NoAccount(String),
    /// Provisioning refused (an address another sign-in owns).
    #[error("{0}")]
    Provisioning(String),
    #[error("the account is not enabled")]
    Disabled,
    #[error("the email could not be sent: {0}")]
    Mail(#[from] MailError),
    #[error("over a limit")]
    Limited(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Totp(#[from] TotpError),
    #[error("{0}")]
    Internal(String),
}

impl From<RandomError> for LocalError {
    fn from(e: RandomError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// The one message for any wrong first factor.
pub const WRONG_PASSWORD: &str = "The email address or password is not correct.";
pub const WRONG_CODE: &str = "The code is not correct, or it has expired.";

impl LocalError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::FlowInvalid
            | Self::Rejected(_)
            | Self::CodeSpent
            | Self::OutOfOrder(_)
            | Self::BadRequest(_)
            | Self::Weak(_) => StatusCode::BAD_REQUEST,
            Self::NotAllowed(_) | Self::NoAccount(_) | Self::Provisioning(_) | Self::Disabled => {
                StatusCode::FORBIDDEN
            }
            Self::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Mail(_) | Self::Store(_) | Self::Session(_) | Self::Password(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Totp(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// RFC 6749 §5.2-style code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            Self::FlowInvalid | Self::Rejected(_) | Self::CodeSpent => "invalid_grant",
            Self::OutOfOrder(_) | Self::BadRequest(_) | Self::Weak(_) => "invalid_request",
            Self::NotAllowed(_) | Self::NoAccount(_) | Self::Provisioning(_) | Self::Disabled => {
                "access_denied"
            }
            Self::Limited(_) => "slow_down",
            Self::Mail(_) | Self::Store(_) | Self::Session(_) | Self::Password(_) => {
                "temporarily_unavailable"
            }
            Self::Totp(_) | Self::Internal(_) => "server_error",
        }
    }

    /// What the person is told: the details of outages stay in the log.
    pub fn user_message(&self) -> String {
        match self {
            Self::FlowInvalid => "This sign-in has expired or was already used. Please start again.".into(),
            Self::CodeSpent => "This code was tried too many times. Ask for a new one.".into(),
            Self::NoAccount(email) => format!("There is no account for {email}."),
            Self::Disabled => "Your account is not enabled yet.".into(),
            Self::Mail(_) => "We could not send the email just now. Nothing was lost: please try again in a few minutes.".into(),
            Self::Limited(r) => format!("Too many attempts. Please wait {} seconds and try again.", r.retry_after_seconds),
            Self::Store(_) | Self::Session(_) | Self::Password(_) => {
                "Sign-in is temporarily unavailable. Please try again in a moment.".into()
            }
            Self::Totp(_) | Self::Internal(_) => "Something went wrong on our side.".into(),
            Self::Weak(w) => format!("Please choose a stronger password: {w}."),
            other => other.to_string(),
        }
    }

    /// A short label for metrics and the audit trail.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::FlowInvalid => "flow_invalid",
            Self::NotAllowed(_) => "method_not_allowed",
            Self::Rejected(_) => "rejected",
            Self::CodeSpent => "code_spent",
            Self::OutOfOrder(_) => "out_of_order",
            Self::BadRequest(_) => "bad_request",
            Self::Weak(_) => "weak_password",
            Self::NoAccount(_) => "no_account",
            Self::Provisioning(_) => "provisioning",
            Self::Disabled => "disabled",
            Self::Mail(_) => "email_failed",
            Self::Limited(_) => "rate_limited",
            Self::Store(_) | Self::Session(_) => "store",
            Self::Password(_) => "password_pool",
            Self::Totp(_) | Self::Internal(_) => "internal",
        }
    }
}
