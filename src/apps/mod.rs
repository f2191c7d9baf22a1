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

pub mod clients;
pub mod routes;

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use oauth2::{PkceCodeChallenge, PkceCodeVerifier};
use serde::Serialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::broker::client_group;
use crate::broker::{Client as Who, LOGIN_PATH, Reply};
use crate::clock::unix_now;
use crate::config::Settings;
use crate::identity::SessionCaller;
use crate::limits::{Limit, Limits, Refusal};
use crate::metrics::Metrics;
use crate::pages;
use crate::session::cookie::{self, TokenCookie};
use crate::session::token::RandomError;
use crate::session::{OpaqueToken, Sessions};
use crate::store::{
    AuditEvent, AuditKind, FamilyRevocation, NewAppCode, NewRefreshToken, Outcome, Rotation, Store,
    StoreError, User,
};
use crate::strength::AuthClaims;
use crate::tokens::{Minter, TokenError};
pub use clients::{Client, Clients};

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
    fn reply(&self) -> TokenReply {
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

/// What one token response grants besides the user: the scope, how the user signed in, the
/// new refresh token, and when its family ends.
struct Issue<'a> {
    scope: Option<&'a str>,
    auth: &'a AuthClaims,
    refresh: &'a OpaqueToken,
    family_expires_at: i64,
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

/// The claims of an app's access token (RFC 9068), with the local identity like the minted
/// upstream token's.
#[derive(Debug, Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: Uuid,
    aud: &'a str,
    client_id: &'a str,
    iat: i64,
    exp: i64,
    jti: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    email: &'a str,
    org: Option<Uuid>,
    roles: &'a [String],
    /// How the user signed in (step-up rules on bearer routes read these).
    #[serde(flatten)]
    auth: &'a AuthClaims,
}

/// The request's form or query pairs: the single-valued ones, and the names that came more
/// than once (ambiguous: refused).
pub struct Params {
    values: std::collections::HashMap<String, String>,
    repeated: Vec<String>,
}

impl Params {
    pub fn parse(raw: &[u8]) -> Self {
        let (values, repeated) = crate::server::http::unique_params(raw);
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
    clients: Clients,
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

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn is_code_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// An S256 challenge: the base64url (unpadded) SHA-256 of the verifier, so 43 characters.
fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `verifier` answers `challenge` (S256), compared in constant time.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    if !is_code_verifier(verifier) {
        return false;
    }
    let computed =
        PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.to_owned()));
    computed
        .as_str()
        .as_bytes()
        .ct_eq(challenge.as_bytes())
        .into()
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

fn audited(event: AuditEvent, who: &Who) -> AuditEvent {
    event.client(who.ip.map(|ip| ip.to_string()), who.user_agent.clone())
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
            clients: Clients::new(&settings.clients, &settings.token.audience),
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

    // === /auth/authorize ===

    /// `GET /auth/authorize?<raw_query>`.
    pub async fn authorize(&self, raw_query: &str, headers: &HeaderMap, who: &Who) -> Reply {
        let params = Params::parse(raw_query.as_bytes());
        // Until the client and its redirect URI are known good, nothing goes to a redirect URI.
        if params
            .repeated
            .iter()
            .any(|n| n == "client_id" || n == "redirect_uri")
        {
            return error_page("The request names its application or return address twice.");
        }
        let Some(client) = params.get("client_id").and_then(|id| self.clients.get(id)) else {
            return error_page("This application is not registered.");
        };
        let Some(redirect_uri) = params
            .get("redirect_uri")
            .filter(|uri| client.redirect_uri_matches(uri))
        else {
            return error_page("This application's return address is not registered.");
        };
        let state = params.get("state");
        let back = |error: &str, description: &str| {
            self.error_redirect(redirect_uri, state, error, description)
        };

        if let Some(name) = params.repeated.first() {
            return back("invalid_request", &format!("{name} is repeated"));
        }
        if params.get("response_type") != Some("code") {
            return back(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
        if params.get("code_challenge_method") != Some("S256") {
            return back(
                "invalid_request",
                "PKCE is required, with code_challenge_method=S256",
            );
        }
        let Some(challenge) = params
            .get("code_challenge")
            .filter(|c| is_s256_challenge(c))
        else {
            return back(
                "invalid_request",
                "code_challenge must be a base64url SHA-256 (43 characters)",
            );
        };
        let scopes = scope_list(params.get("scope"));
        if !client.allows_scopes(&scopes) {
            return back(
                "invalid_scope",
                "a requested scope is not allowed for this application",
            );
        }

        let now = unix_now();
        let session = match cookie::find(headers, &self.cookie_name) {
            TokenCookie::Present(token) => Some(token),
            TokenCookie::Absent | TokenCookie::Duplicated | TokenCookie::Malformed => None,
        };
        let caller = match &session {
            Some(token) => self.sessions.resolve(token, now).await,
            None => SessionCaller::Anonymous,
        };
        let principal = match caller {
            SessionCaller::User(p) => p,
            SessionCaller::Anonymous if params.get("prompt") == Some("none") => {
                return back("login_required", "no one is signed in");
            }
            SessionCaller::Anonymous => {
                // The normal browser login, back to this very request afterwards.
                let rd: String = url::form_urlencoded::byte_serialize(
                    format!("{AUTHORIZE_PATH}?{raw_query}").as_bytes(),
                )
                .collect();
                return Reply::Redirect {
                    location: format!("{LOGIN_PATH}?rd={rd}"),
                    cookies: Vec::new(),
                };
            }
            SessionCaller::Unavailable => {
                return back("temporarily_unavailable", "please try again in a moment");
            }
        };
        let (Some(token), identity) = (session, &principal.user.identity) else {
            return back("server_error", "no session");
        };
        if !identity.enabled {
            return Reply::Redirect {
                location: self.welcome_path.clone(),
                cookies: Vec::new(),
            };
        }
        if identity.impersonator_id.is_some() {
            // Support staff acting as a user get no credentials of that user's to take away.
            return back(
                "access_denied",
                "applications cannot be authorized while impersonating",
            );
        }

        let code = match OpaqueToken::generate() {
            Ok(code) => code,
            Err(e) => {
                tracing::error!(error = %e, "no code for an app");
                return back("server_error", "please try again");
            }
        };
        let record = NewAppCode {
            code_hash: code.hash().to_hex(),
            client_id: client.id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            code_challenge: challenge.to_owned(),
            scope: scope_string(&scopes),
            user_id: identity.user_id,
            session_hash: token.hash().to_hex(),
            created_at: now,
            expires_at: now.saturating_add(self.code_ttl),
        };
        let event = audited(
            AuditEvent::new(AuditKind::AppAuthorized, Outcome::Success, now)
                .user(identity.user_id)
                .detail(format!("client_id={}", client.id)),
            who,
        );
        if let Err(e) = self.store.insert_app_code(&record, &event).await {
            tracing::warn!(error = %e, client_id = %client.id, "could not store an app's code");
            return back("temporarily_unavailable", "please try again in a moment");
        }
        let mut pairs = vec![("code", code.as_str())];
        if let Some(state) = state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", &self.issuer));
        Reply::Redirect {
            location: with_query(redirect_uri, &pairs),
            cookies: Vec::new(),
        }
    }

    /// An error for a verified redirect URI (RFC 6749 §4.1.2.1, with RFC 9207 `iss`).
    fn error_redirect(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        error: &str,
        description: &str,
    ) -> Reply {
        let mut pairs = vec![("error", error), ("error_description", description)];
        if let Some(state) = state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", &self.issuer));
        Reply::Redirect {
            location: with_query(redirect_uri, &pairs),
            cookies: Vec::new(),
        }
    }

    // === /auth/token ===

    /// `POST /auth/token` with a form body (`form`: whether it was sent as
    /// `application/x-www-form-urlencoded`).
    pub async fn token(&self, body: &[u8], form: bool, who: &Who) -> TokenReply {
        // Per client address before any parsing or store work; per account once the code or
        // refresh token says whose it is.
        if let Some(refused) = self.address_over_limit(who, "any").await {
            return refused;
        }
        let params = Params::parse(body);
        let grant = match params.get("grant_type") {
            Some("authorization_code") => "authorization_code",
            Some("refresh_token") => "refresh_token",
            _ => "other",
        };
        let result = if form {
            self.grant(&params, who).await
        } else {
            Err(AppError::InvalidRequest(
                "the body must be application/x-www-form-urlencoded".into(),
            ))
        };
        match result {
            Ok(body) => {
                self.metrics.record_app_token(grant, "issued");
                TokenReply {
                    status: StatusCode::OK,
                    body: Some(body),
                    retry_after: None,
                }
            }
            Err(e) => {
                match &e {
                    AppError::Store(_) | AppError::Token(_) | AppError::Random(_) => {
                        tracing::warn!(error = %e, grant, "token request failed")
                    }
                    AppError::Reused => {
                        tracing::warn!(grant, "refresh token reused: family revoked")
                    }
                    _ => tracing::debug!(error = %e, grant, "token request refused"),
                }
                self.metrics.record_app_token(grant, e.metric_result());
                e.reply()
            }
        }
    }

    /// The 429 for a client address over `token_calls_per_ip` (counted under `grant`), if it is.
    async fn address_over_limit(&self, who: &Who, grant: &'static str) -> Option<TokenReply> {
        let e = self
            .limit(Limit::TokenCallsPerIp, who.ip.map(client_group), who)
            .await
            .err()?;
        self.metrics.record_app_token(grant, e.metric_result());
        Some(e.reply())
    }

    /// Takes a token from `key`'s bucket of `limit`; the first refusal a minute is audited.
    async fn limit(&self, limit: Limit, key: Option<String>, who: &Who) -> Result<(), AppError> {
        let Some(key) = key else { return Ok(()) };
        let now = unix_now();
        let Err(refused) = self.limits.check(limit, &key, now) else {
            return Ok(());
        };
        if refused.first_in_window {
            let event = audited(
                AuditEvent::new(AuditKind::RateLimited, Outcome::Failure, now)
                    .detail(format!("{} over its limit", limit.name())),
                who,
            );
            if let Err(e) = self.store.record_audit(&event).await {
                tracing::warn!(error = %e, "could not audit a rate limit");
            }
        }
        Err(AppError::RateLimited(refused))
    }

    fn client(&self, params: &Params) -> Result<&Arc<Client>, AppError> {
        let id = params.required("client_id")?;
        self.clients
            .get(id)
            .ok_or_else(|| AppError::InvalidClient("unknown client_id".into()))
    }

    async fn grant(&self, params: &Params, who: &Who) -> Result<Value, AppError> {
        if let Some(name) = params.repeated.first() {
            return Err(AppError::InvalidRequest(format!("{name} is repeated")));
        }
        let client = self.client(params)?;
        match params.get("grant_type") {
            Some("authorization_code") => self.exchange_code(client, params, who).await,
            Some("refresh_token") => self.refresh(client, params, who).await,
            Some(_) => Err(AppError::UnsupportedGrantType),
            None => Err(AppError::InvalidRequest("grant_type is required".into())),
        }
    }

    async fn exchange_code(
        &self,
        client: &Client,
        params: &Params,
        who: &Who,
    ) -> Result<Value, AppError> {
        let code = params.required("code")?;
        let redirect_uri = params.required("redirect_uri")?;
        let verifier = params.required("code_verifier")?;
        if !is_code_verifier(verifier) {
            return Err(AppError::InvalidRequest(
                "code_verifier must be 43 to 128 unreserved characters (RFC 7636)".into(),
            ));
        }
        let invalid =
            || AppError::InvalidGrant("the code is invalid, expired or already used".into());
        let Some(code) = OpaqueToken::parse(code) else {
            return Err(invalid());
        };
        let code_hash = code.hash().to_hex();
        let now = unix_now();
        // Presenting a code burns it, whatever happens next.
        let Some(stored) = self.store.consume_app_code(&code_hash).await? else {
            // Redeemed before? Then someone else has it too (RFC 6749 §4.1.2): the tokens
            // issued for it are revoked.
            let event = audited(
                AuditEvent::new(AuditKind::AppTokenRevoked, Outcome::Failure, now).detail(format!(
                    "client_id={} authorization code replayed",
                    client.id
                )),
                who,
            );
            if self
                .store
                .revoke_family_of_code(&code_hash, &event, now)
                .await?
            {
                tracing::warn!(client_id = %client.id, "authorization code replayed: its refresh tokens are revoked");
            }
            return Err(invalid());
        };
        if stored.expires_at <= now || stored.client_id != client.id {
            return Err(invalid());
        }
        self.limit(
            Limit::TokenCallsPerAccount,
            Some(stored.user_id.to_string()),
            who,
        )
        .await?;
        if stored.redirect_uri != redirect_uri {
            return Err(AppError::InvalidGrant(
                "redirect_uri is not the one the code was issued for".into(),
            ));
        }
        if !pkce_matches(verifier, &stored.code_challenge) {
            return Err(AppError::InvalidGrant(
                "code_verifier does not match the code_challenge".into(),
            ));
        }
        // The sign-in that approved the code must still be on, and its user enabled.
        let Some(session) = self.store.load_session(&stored.session_hash, now).await? else {
            return Err(AppError::InvalidGrant(
                "the sign-in session has ended".into(),
            ));
        };
        let auth = AuthClaims {
            amr: session.amr,
            acr: session.acr,
            auth_time: session.auth_time,
        };
        let user = self.enabled_user(stored.user_id).await?;
        let refresh = OpaqueToken::generate()?;
        let family_expires_at = now.saturating_add(self.refresh_ttl);
        let answer = self.tokens(
            client,
            &user,
            Issue {
                scope: stored.scope.as_deref(),
                auth: &auth,
                refresh: &refresh,
                family_expires_at,
            },
            now,
        )?;
        let family = NewRefreshToken {
            token_hash: refresh.hash().to_hex(),
            family_id: Uuid::new_v4(),
            client_id: client.id.clone(),
            user_id: user.id,
            scope: stored.scope.clone(),
            code_hash: Some(code_hash),
            session_hash: Some(stored.session_hash),
            auth: serde_json::to_string(&auth).ok(),
            created_at: now,
            family_expires_at,
        };
        let event = audited(
            AuditEvent::new(AuditKind::AppTokenIssued, Outcome::Success, now)
                .user(user.id)
                .detail(format!("client_id={} grant=authorization_code", client.id)),
            who,
        );
        self.store.insert_refresh_family(&family, &event).await?;
        Ok(answer)
    }

    async fn refresh(
        &self,
        client: &Client,
        params: &Params,
        who: &Who,
    ) -> Result<Value, AppError> {
        let presented = params.required("refresh_token")?;
        let requested = params.get("scope").map(|s| scope_list(Some(s)));
        let invalid = |why: &str| AppError::InvalidGrant(why.to_owned());
        let Some(presented) = OpaqueToken::parse(presented) else {
            return Err(invalid("unknown refresh token"));
        };
        let next = OpaqueToken::generate()?;
        let now = unix_now();
        // Checked before the rotation: a refusal must not cost the app its token.
        let owner = self
            .store
            .refresh_token_owner(&presented.hash().to_hex())
            .await?;
        self.limit(
            Limit::TokenCallsPerAccount,
            owner.map(|o| o.to_string()),
            who,
        )
        .await?;
        let event = |kind, outcome, grant: &str| {
            audited(
                AuditEvent::new(kind, outcome, now)
                    .detail(format!("client_id={} grant={grant}", client.id)),
                who,
            )
        };
        let rotation = self
            .store
            .rotate_refresh_token(
                &presented.hash().to_hex(),
                &client.id,
                &next.hash().to_hex(),
                requested.as_deref(),
                now,
                &event(AuditKind::AppTokenIssued, Outcome::Success, "refresh_token"),
                &event(
                    AuditKind::RefreshTokenReused,
                    Outcome::Failure,
                    "refresh_token",
                ),
            )
            .await?;
        let grant = match rotation {
            Rotation::Rotated(grant) => grant,
            Rotation::Reused { .. } => return Err(AppError::Reused),
            Rotation::Unknown => return Err(invalid("unknown refresh token")),
            Rotation::Revoked => return Err(invalid("the refresh token was revoked")),
            Rotation::Expired => return Err(invalid("the refresh token has expired")),
            Rotation::OtherClient => {
                return Err(invalid("the refresh token was issued to another client"));
            }
            Rotation::UserDisabled => return Err(invalid("the account is not enabled")),
            Rotation::ScopeExceeded => {
                return Err(AppError::InvalidScope(
                    "scope may only narrow what was granted".into(),
                ));
            }
        };
        let user = self.enabled_user(grant.user_id).await?;
        let scope = match &requested {
            Some(list) => scope_string(list),
            None => grant.scope.clone(),
        };
        let auth: AuthClaims = grant
            .auth
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        self.tokens(
            client,
            &user,
            Issue {
                scope: scope.as_deref(),
                auth: &auth,
                refresh: &next,
                family_expires_at: grant.family_expires_at,
            },
            now,
        )
    }

    async fn enabled_user(&self, id: Uuid) -> Result<User, AppError> {
        self.store
            .user_by_id(id)
            .await?
            .filter(|u| u.enabled)
            .ok_or_else(|| AppError::InvalidGrant("the account is not enabled".into()))
    }

    /// The token response: a newly signed access token, and `refresh`.
    fn tokens(
        &self,
        client: &Client,
        user: &User,
        issue: Issue<'_>,
        now: i64,
    ) -> Result<Value, AppError> {
        let Issue {
            scope,
            auth,
            refresh,
            family_expires_at,
        } = issue;
        // Never past the family: when refreshing is over, so is access.
        let exp = now
            .saturating_add(self.access_ttl)
            .min(family_expires_at)
            .max(now + 1);
        let claims = AccessClaims {
            iss: &self.issuer,
            sub: user.id,
            aud: &client.audience,
            client_id: &client.id,
            iat: now,
            exp,
            jti: Uuid::new_v4(),
            scope,
            email: &user.email,
            org: user.org_id,
            roles: &user.roles,
            auth,
        };
        let access_token = self.minter.sign_access_token(&claims, now)?;
        let mut body = json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": exp - now,
            "refresh_token": refresh.as_str(),
        });
        if let Some(scope) = scope {
            body["scope"] = Value::String(scope.to_owned());
        }
        Ok(body)
    }

    // === /auth/revoke ===

    /// `POST /auth/revoke` (RFC 7009). Refresh tokens revoke their family; anything else
    /// (unknown tokens, access tokens, which expire within minutes) is answered 200 too.
    pub async fn revoke(&self, body: &[u8], form: bool, who: &Who) -> TokenReply {
        if let Some(refused) = self.address_over_limit(who, "revoke").await {
            return refused;
        }
        let params = Params::parse(body);
        let result = if form {
            self.revoke_token(&params, who).await
        } else {
            Err(AppError::InvalidRequest(
                "the body must be application/x-www-form-urlencoded".into(),
            ))
        };
        match result {
            Ok(result) => {
                self.metrics.record_app_token("revoke", result);
                TokenReply {
                    status: StatusCode::OK,
                    body: None,
                    retry_after: None,
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "revocation refused");
                self.metrics.record_app_token("revoke", e.metric_result());
                e.reply()
            }
        }
    }

    async fn revoke_token(&self, params: &Params, who: &Who) -> Result<&'static str, AppError> {
        if let Some(name) = params.repeated.first() {
            return Err(AppError::InvalidRequest(format!("{name} is repeated")));
        }
        let client = self.client(params)?;
        let token = params.required("token")?;
        let Some(token) = OpaqueToken::parse(token) else {
            return Ok("unknown");
        };
        let now = unix_now();
        let event = audited(
            AuditEvent::new(AuditKind::AppTokenRevoked, Outcome::Success, now)
                .detail(format!("client_id={} by the app", client.id)),
            who,
        );
        match self
            .store
            .revoke_refresh_family(&token.hash().to_hex(), &client.id, &event, now)
            .await?
        {
            FamilyRevocation::Revoked { .. } => Ok("revoked"),
            FamilyRevocation::Nothing => Ok("unknown"),
            FamilyRevocation::OtherClient => Err(AppError::UnauthorizedClient(
                "the token was issued to another client".into(),
            )),
        }
    }
}

fn error_page(message: &str) -> Reply {
    Reply::Page {
        status: StatusCode::BAD_REQUEST,
        html: pages::message_page("Sign-in request refused", message, None),
        cookies: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::redirect::RedirectPolicy;

    #[test]
    fn pkce_s256_table() {
        // Computed apart (Python: base64url(sha256(verifier)), unpadded).
        let verifier = "gatehouse-pkce-test-verifier-0123456789abcdefghij";
        let challenge = "eqLTgpHwtrnI9uufUliW8SiafuazC_pE4DqpooFd0Kw";
        assert!(is_s256_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            verifier,
            "eqLTgpHwtrnI9uufUliW8SiafuazC_pE4DqpooFd0Kx"
        ));
        assert!(!pkce_matches(&verifier.replace('g', "h"), challenge));
        // plain: the verifier as its own challenge is refused
        assert!(!pkce_matches(challenge, challenge));
        for bad in [
            "",
            "short",
            &"a".repeat(42),
            &"a".repeat(129),
            &format!("{}!", "a".repeat(43)),
        ] {
            assert!(!is_code_verifier(bad), "{bad:?}");
            assert!(!pkce_matches(bad, challenge), "never panics on {bad:?}");
        }
        assert!(is_code_verifier(&"a~._-".repeat(20)));
        for bad in [
            "",
            &"a".repeat(42),
            &"a".repeat(44),
            &format!("{}=", "a".repeat(42)),
            &format!("{}+", "a".repeat(42)),
        ] {
            assert!(!is_s256_challenge(bad), "{bad:?}");
        }
    }

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
