//! The authorization server for the company's own apps (`[[client]]`): public clients (no
//! secret), native or single-page, that get access and refresh tokens for the signed-in user.
//!
//! - `GET /auth/authorize`: code flow with PKCE S256 only (RFC 7636, RFC 9700). The client and
//!   its redirect URI are checked first; until both are known good, errors are a page, never a
//!   redirect. Without a session the browser goes through the normal `/auth/login` and comes
//!   back. With an enabled user's session, a single-use code (60 s, stored by hash, bound to
//!   the client, redirect URI, challenge, user and session) goes back with `state` and `iss`
//!   (RFC 9207).
//! - `POST /auth/token`: the code (with its verifier) or a refresh token for a short-lived JWT
//!   access token (RFC 9068, signed with gatehouse's shared keys) and a new refresh token.
//!   Refresh tokens rotate on every use; a used one presented again revokes its whole family
//!   (RFC 9700 §4.14.2), and a family ends at its absolute expiry whatever the rotations.
//! - `POST /auth/revoke` (RFC 7009): revokes a refresh token's family.
//!
//! Disabling a user or revoking their sessions revokes their refresh tokens in the same
//! transaction (see `store::app_tokens`). Access tokens live minutes and are accepted on bearer
//! routes naming `public_url` as an issuer, where the local user is loaded on every check (a
//! disabled user's token is refused there).
//!
//! Handlers return plain data ([`Reply`] for the browser-facing authorize endpoint,
//! [`TokenReply`] for the JSON endpoints); [`http`] turns them into responses.

mod authorize;
pub mod clients;
pub mod config;
mod pkce;
mod token;

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};

use crate::config::Settings;
use crate::limits::{Limits, Refusal};
use crate::metrics::Metrics;
use crate::session::Sessions;
use crate::session::token::RandomError;
use crate::store::{Store, StoreError};
use crate::tokens::{Minter, TokenError};
use crate::web::unique_params;
pub use clients::{AppClient, AppClients};

pub const AUTHORIZE_PATH: &str = "/auth/authorize";
pub const TOKEN_PATH: &str = "/auth/token";
pub const REVOKE_PATH: &str = "/auth/revoke";
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// Why a token or revocation request fails: RFC 6749 §5.2 errors, plus the failures of the
/// layers below (never shown to the client beyond their error code).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    #[error("invalid_client: {0}")]
    InvalidClient(String),
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    /// A used refresh token came back: its family is revoked. `invalid_grant` to the client.
    #[error("invalid_grant: refresh token reused; its family is revoked")]
    Reused,
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(String),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// Over a `[limits]` bucket: 429 with `Retry-After`.
    #[error("too many token requests ({})", .0.limit.name())]
    RateLimited(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl AppError {
    /// The OAuth error code (also the metric's `result`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient(_) => "invalid_client",
            Self::InvalidGrant(_) | Self::Reused => "invalid_grant",
            Self::InvalidScope(_) => "invalid_scope",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::RateLimited(_) => "too_many_requests",
            Self::Store(_) => "temporarily_unavailable",
            Self::Token(_) | Self::Random(_) => "server_error",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidClient(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Token(_) | Self::Random(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn metric_result(&self) -> &'static str {
        match self {
            Self::Reused => "reused",
            other => other.code(),
        }
    }

    /// What the client is told: the code, and for its own mistakes a description (written
    /// here, never an internal error's text).
    pub fn reply(&self) -> TokenReply {
        let description = match self {
            Self::InvalidRequest(d)
            | Self::InvalidClient(d)
            | Self::InvalidGrant(d)
            | Self::InvalidScope(d)
            | Self::UnauthorizedClient(d) => Some(d.as_str()),
            Self::Reused => Some("the refresh token was already used"),
            Self::UnsupportedGrantType => {
                Some("grant_type must be authorization_code or refresh_token")
            }
            Self::RateLimited(_) => Some("too many requests; wait for Retry-After seconds"),
            Self::Store(_) | Self::Token(_) | Self::Random(_) => None,
        };
        let mut body = json!({ "error": self.code() });
        if let Some(d) = description {
            body["error_description"] = Value::String(d.to_owned());
        }
        TokenReply {
            status: self.status(),
            body: Some(body),
            retry_after: match self {
                Self::RateLimited(refused) => Some(refused.retry_after_seconds),
                _ => None,
            },
        }
    }
}

/// What `/auth/token` and `/auth/revoke` answer: JSON (or an empty body), always `no-store`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenReply {
    pub status: StatusCode,
    /// `None`: an empty body (a revocation).
    pub body: Option<Value>,
    /// `Retry-After` seconds, for a 429.
    pub retry_after: Option<u64>,
}

/// The request's form or query pairs: the single-valued ones, and the names that came more
/// than once (ambiguous: refused).
pub struct Params {
    values: std::collections::HashMap<String, String>,
    repeated: Vec<String>,
}

impl Params {
    pub fn parse(raw: &[u8]) -> Self {
        let (values, repeated) = unique_params(raw);
        Self { values, repeated }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str) -> Result<&str, AppError> {
        self.get(name)
            .ok_or_else(|| AppError::InvalidRequest(format!("{name} is required")))
    }
}

/// The authorization server.
pub struct Apps {
    clients: AppClients,
    limits: Arc<Limits>,
    store: Store,
    sessions: Sessions,
    minter: Arc<Minter>,
    metrics: Arc<Metrics>,
    cookie_name: String,
    /// `public_url` without a trailing slash: `iss` of the tokens and of RFC 9207 answers.
    issuer: String,
    welcome_path: String,
    access_ttl: i64,
    refresh_ttl: i64,
    code_ttl: i64,
}

fn seconds(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `scope` as a sorted, deduplicated list (space-separated on the wire).
fn scope_list(scope: Option<&str>) -> Vec<String> {
    let mut list: Vec<String> = scope
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    list.sort();
    list.dedup();
    list
}

fn scope_string(list: &[String]) -> Option<String> {
    (!list.is_empty()).then(|| list.join(" "))
}

/// `uri` with these query parameters added (percent-encoded), by string: the URI the app
/// registered is used as it is, never re-serialized.
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{}", query.finish())
}

impl Apps {
    pub fn new(
        settings: &Settings,
        store: Store,
        sessions: Sessions,
        minter: Arc<Minter>,
        limits: Arc<Limits>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            clients: AppClients::new(&settings.clients, &settings.token.audience),
            limits,
            store,
            sessions,
            minter,
            metrics,
            cookie_name: settings.cookie_name().to_owned(),
            issuer: settings.public_origin(),
            welcome_path: settings.login.welcome_path.clone(),
            access_ttl: seconds(settings.app_tokens.access_token_ttl_seconds),
            refresh_ttl: seconds(settings.app_tokens.refresh_token_ttl_seconds),
            code_ttl: seconds(settings.app_tokens.code_ttl_seconds),
        }
    }

    /// Whether a page of `origin` may read token and revocation answers (CORS).
    pub fn cors_allows(&self, origin: &str) -> bool {
        self.clients.cors_allows(origin)
    }

    /// RFC 8414 authorization server metadata.
    pub fn metadata(&self) -> Value {
        let iss = &self.issuer;
        json!({
            "issuer": iss,
            "authorization_endpoint": format!("{iss}{AUTHORIZE_PATH}"),
            "token_endpoint": format!("{iss}{TOKEN_PATH}"),
            "revocation_endpoint": format!("{iss}{REVOKE_PATH}"),
            "jwks_uri": format!("{iss}/.well-known/jwks.json"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "authorization_response_iss_parameter_supported": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::redirect::RedirectPolicy;

    #[test]
    fn scopes_and_query_building() {
        assert_eq!(scope_list(Some("write read  read")), vec!["read", "write"]);
        assert!(scope_list(None).is_empty());
        assert_eq!(scope_string(&[]), None);
        assert_eq!(
            with_query(
                "http://127.0.0.1:5000/cb",
                &[("code", "a b"), ("state", "x&y=z")]
            ),
            "http://127.0.0.1:5000/cb?code=a+b&state=x%26y%3Dz"
        );
        assert_eq!(
            with_query("com.example.app:/cb?x=1", &[("error", "access_denied")]),
            "com.example.app:/cb?x=1&error=access_denied"
        );
    }

    /// The login's `rd` takes the authorize request back, whatever its query holds.
    #[test]
    fn the_login_returns_to_the_authorize_request() {
        let policy = RedirectPolicy::new(url::Url::parse("https://auth.example.com").unwrap(), &[]);
        let query = "response_type=code&client_id=cli&redirect_uri=http%3A%2F%2F127.0.0.1%3A51234%2Fcb\
                     &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
                     &code_challenge_method=S256&state=a%2Fb%3Fc&scope=read+write";
        let rd = format!("{AUTHORIZE_PATH}?{query}");
        assert_eq!(policy.target(Some(&rd)).as_str(), rd);
    }

    #[test]
    fn errors_say_only_what_the_client_needs() {
        let reply = AppError::Store(StoreError::Timeout("secret internals")).reply();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            reply.body,
            Some(json!({"error": "temporarily_unavailable"}))
        );
        let reply = AppError::InvalidClient("unknown client_id".into()).reply();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.body.as_ref().and_then(|b| b["error"].as_str()),
            Some("invalid_client")
        );
        let reply = AppError::Reused.reply();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            reply.body.as_ref().and_then(|b| b["error"].as_str()),
            Some("invalid_grant")
        );
        assert_eq!(AppError::Reused.metric_result(), "reused");
    }
}
