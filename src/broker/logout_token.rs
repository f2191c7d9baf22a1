//! Back-channel logout tokens (OIDC Back-Channel Logout 1.0 §2.4–2.6): what one must hold
//! beyond a valid signature, `iss`, `aud` and `exp` (checked by [`crate::jwt`] with the IdP's
//! keys, in [`super::provider::Provider::verify_logout_token`]). Acting on one is
//! [`super::backchannel`]'s.

use serde::Deserialize;
use serde_json::Value;

use crate::jwt::Verified;

/// The back-channel logout event's identifier (the key in `events`).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Why a logout token was not acted on.
#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    #[error("invalid logout token: {0}")]
    Invalid(String),
    #[error("logout token already used (jti replay)")]
    Replayed,
    #[error("cannot verify the logout token now: {0}")]
    Unavailable(String),
}

/// The claims of a back-channel logout token. Signature, `iss`, `aud` and `exp` are checked
/// by the JWT layer; [`LogoutClaims::check`] does the rest.
#[derive(Debug, Deserialize)]
pub struct LogoutClaims {
    pub iss: String,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub sid: Option<String>,
    #[serde(default)]
    iat: Option<serde_json::Number>,
    pub exp: serde_json::Number,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    events: Option<Value>,
    #[serde(default)]
    nonce: Option<Value>,
}

impl LogoutClaims {
    fn check(&self) -> Result<(), LogoutError> {
        let invalid = |m: &str| Err(LogoutError::Invalid(m.to_owned()));
        if self.nonce.is_some() {
            return invalid("a logout token must not carry a nonce");
        }
        if self.iat.is_none() {
            return invalid("the iat claim is missing");
        }
        if self.jti.as_deref().is_none_or(str::is_empty) {
            return invalid("the jti claim is missing");
        }
        let event_ok = self
            .events
            .as_ref()
            .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
            .is_some_and(Value::is_object);
        if !event_ok {
            return invalid("the events claim has no back-channel logout event");
        }
        if self.sub.is_none() && self.sid.is_none() {
            return invalid("neither sub nor sid names what to log out");
        }
        Ok(())
    }

    /// Unix seconds, for keeping the `jti` until the token would expire anyway.
    pub fn expires_at(&self) -> i64 {
        self.exp.as_i64().unwrap_or(i64::MAX)
    }
}

/// The rest of §2.6 for a token whose signature, `iss`, `aud` and `exp` checked out: `typ` is
/// `logout+jwt` when present, and the claims hold (see [`LogoutClaims::check`]).
pub fn accept(verified: Verified<LogoutClaims>) -> Result<LogoutClaims, LogoutError> {
    if let Some(typ) = &verified.header_typ
        && !typ.eq_ignore_ascii_case("logout+jwt")
        && !typ.eq_ignore_ascii_case("JWT")
    {
        return Err(LogoutError::Invalid(format!(
            "typ {typ:?} is not logout+jwt"
        )));
    }
    verified.claims.check()?;
    Ok(verified.claims)
}
