//! One configured identity provider: discovery and authorize URLs (PKCE S256) with the
//! `openidconnect` crate, the code exchange with `oauth2`, ID token validation with
//! [`crate::jwt`] against the issuer's JWKS, userinfo and RP-initiated logout.
//!
//! The ID token is verified by gatehouse's own JWT rules rather than `openidconnect`'s typed
//! claims: those refuse a whole token over one odd claim (Amazon Cognito sends
//! `"email_verified": "true"`, a string), where gatehouse only needs to count such a value as
//! not verified.
//!
//! Discovery is lazy and retried: an IdP that is down when gatehouse starts must not stop
//! ext_authz from serving. Keys come only from the issuer's JWKS; a token signed with a `kid`
//! we do not know triggers one JWKS refetch, at most once a minute.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{ExtraTokenFields, StandardRevocableToken, StandardTokenResponse};
use openidconnect::core::{CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreIdToken};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, LoginHint, LogoutRequest, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout,
    RedirectUrl, Scope,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::error::LoginError;
use crate::clock::unix_now;
use crate::config::{IdpConfig, ResponseMode};
use crate::jwt::jwks::read_capped;
use crate::jwt::{self, Expect, JwksCache, JwtError, KeySet};
use crate::provisioning::EmailTrust;
use crate::store::LoginFacts;
use crate::strength::{MFA_AMR, StepUp};

type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The token endpoint's answer with the ID token as a plain string: its claims are read by
/// [`verify_id_token`], not by a typed parser that would refuse the whole response.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawIdToken {
    #[serde(default)]
    id_token: Option<String>,
}

impl ExtraTokenFields for RawIdToken {}

type CodeResponse = StandardTokenResponse<RawIdToken, BasicTokenType>;

type CodeClient = oauth2::Client<
    BasicErrorResponse,
    CodeResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A login start checks that the IdP answers, at most this often (seconds), so a browser is
/// not sent to an IdP that is down; the answer is reused meanwhile.
const REACHABILITY_TTL_SECONDS: i64 = 5;
const REACHABILITY_TIMEOUT: Duration = Duration::from_secs(2);
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Keys are refreshed once this old, so a key the IdP withdraws stops being trusted.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Userinfo responses larger than this are refused.
const MAX_USERINFO_BYTES: usize = 64 * 1024;
/// `exp` may be this far in the past (clock skew between us and the IdP).
const EXP_LEEWAY_SECONDS: u64 = 30;
/// `iat` may be this far in the future.
const IAT_LEEWAY_SECONDS: i64 = 60;

/// The claims gatehouse uses, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    /// `Some(true)` only for the JSON boolean `true`.
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    /// `amr`, `acr`, `auth_time` and `sid` from the ID token (never from userinfo: they speak
    /// about this login).
    pub login: LoginFacts,
    /// The claims `[[idp]] role_claims` names, from the ID token or else from userinfo.
    pub role_claims: serde_json::Map<String, Value>,
}

pub struct Provider {
    pub config: IdpConfig,
    /// The email domains this IdP may vouch for.
    pub email_trust: EmailTrust,
    secret: Option<ClientSecret>,
    redirect_url: RedirectUrl,
    http: reqwest::Client,
    discovered: RwLock<Option<Arc<Discovered>>>,
    /// Serializes discovery.
    discovering: tokio::sync::Mutex<()>,
    /// When reachability was last probed (Unix seconds), and whether the IdP answered.
    probed_at: AtomicI64,
    reachable: AtomicBool,
}

struct Discovered {
    metadata: ProviderMetadataWithLogout,
    /// Builds authorize URLs.
    client: OidcClient,
    /// Redeems codes.
    code_client: CodeClient,
    jwks: Arc<JwksCache>,
}

/// A login request about to be sent to the IdP.
pub struct AuthorizeRequest<'a> {
    pub state: &'a str,
    pub nonce: &'a str,
    pub pkce_challenge: PkceCodeChallenge,
    pub login_hint: Option<&'a str>,
    /// The org's extra parameters (its SSO `connection`, …), over the IdP's own.
    pub org_params: Option<&'a BTreeMap<String, String>>,
    /// A step-up: what the IdP must establish this time.
    pub step_up: Option<&'a StepUp>,
}

impl Provider {
    /// `email_trust`: which email domains it may vouch for (see [`EmailTrust::of`]).
    pub fn new(
        config: IdpConfig,
        email_trust: EmailTrust,
        redirect_url: &str,
        http: reqwest::Client,
    ) -> Result<Self, LoginError> {
        let secret = match (&config.client_secret, &config.client_secret_env) {
            (Some(secret), _) => Some(ClientSecret::new(secret.expose_secret().to_owned())),
            (None, Some(var)) => Some(ClientSecret::new(std::env::var(var).map_err(|_| {
                LoginError::Config(format!(
                    "idp {:?}: client_secret_env names {var}, which is not set",
                    config.name
                ))
            })?)),
            (None, None) => None,
        };
        let redirect_url = RedirectUrl::new(redirect_url.to_owned())
            .map_err(|e| LoginError::Config(format!("callback URL: {e}")))?;
        Ok(Self {
            email_trust,
            config,
            secret,
            redirect_url,
            http,
            discovered: RwLock::new(None),
            discovering: tokio::sync::Mutex::new(()),
            probed_at: AtomicI64::new(i64::MIN),
            reachable: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn current(&self) -> Option<Arc<Discovered>> {
        self.discovered.read().ok().and_then(|d| d.clone())
    }

    /// The discovered provider, discovering it now if needed.
    async fn discovered(&self) -> Result<Arc<Discovered>, LoginError> {
        if let Some(d) = self.current() {
            return Ok(d);
        }
        let _guard = self.discovering.lock().await;
        if let Some(d) = self.current() {
            return Ok(d);
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| LoginError::Config(format!("issuer: {e}")))?;
        let metadata = tokio::time::timeout(
            DISCOVERY_TIMEOUT,
            ProviderMetadataWithLogout::discover_async(issuer, &self.http),
        )
        .await
        .map_err(|_| LoginError::Unreachable("discovery timed out".into()))?
        .map_err(|e| LoginError::Unreachable(format!("discovery failed: {e}")))?;
        let discovered = Arc::new(self.build(metadata)?);
        // The first ID token needs the keys: fetch them now rather than at the callback.
        if let Err(e) = discovered.jwks.keys().await {
            tracing::warn!(idp = %self.config.name, error = %e, "JWKS not fetched yet; will retry at the callback");
        }
        tracing::info!(idp = %self.config.name, issuer = %self.config.issuer, "identity provider discovered");
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(discovered.clone());
        }
        Ok(discovered)
    }

    fn build(&self, metadata: ProviderMetadataWithLogout) -> Result<Discovered, LoginError> {
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            self.secret.clone(),
        )
        .set_redirect_uri(self.redirect_url.clone());
        let token_url = metadata
            .token_endpoint()
            .cloned()
            .ok_or_else(|| LoginError::Unreachable("the IdP publishes no token endpoint".into()))?;
        // The same client_secret_basic authentication openidconnect's client uses.
        let mut code_client = oauth2::Client::new(ClientId::new(self.config.client_id.clone()))
            .set_token_uri(token_url)
            .set_redirect_uri(self.redirect_url.clone());
        if let Some(secret) = &self.secret {
            code_client = code_client.set_client_secret(secret.clone());
        }
        let jwks = Arc::new(JwksCache::new(
            metadata.jwks_uri().url().clone(),
            self.http.clone(),
            JWKS_REFETCH_INTERVAL,
            JWKS_MAX_AGE,
        ));
        Ok(Discovered {
            metadata,
            client,
            code_client,
            jwks,
        })
    }

    /// Whether the IdP answers its discovery URL, probed at most every few seconds: a login
    /// start refuses with a clear page rather than sending the browser to an IdP that is down.
    pub async fn ensure_reachable(&self, now: i64) -> Result<(), LoginError> {
        let probed_at = self.probed_at.load(Ordering::Relaxed);
        let reachable = if now.saturating_sub(probed_at) < REACHABILITY_TTL_SECONDS {
            self.reachable.load(Ordering::Relaxed)
        } else {
            let url = format!(
                "{}/.well-known/openid-configuration",
                self.config.issuer.trim_end_matches('/')
            );
            let answered = tokio::time::timeout(REACHABILITY_TIMEOUT, self.http.get(&url).send())
                .await
                .is_ok_and(|r| r.is_ok_and(|r| r.status().is_success()));
            self.reachable.store(answered, Ordering::Relaxed);
            self.probed_at.store(now, Ordering::Relaxed);
            if !answered {
                tracing::warn!(idp = %self.config.name, %url, "identity provider unreachable");
            }
            answered
        };
        if reachable {
            Ok(())
        } else {
            Err(LoginError::Unreachable(format!(
                "{} does not answer",
                self.config.issuer
            )))
        }
    }

    /// Discovers in the background, so the first login does not wait.
    pub async fn warm_up(&self) {
        if let Err(e) = self.discovered().await {
            tracing::warn!(idp = %self.config.name, error = %e, "identity provider not reachable yet; will retry at first login");
        }
    }

    /// The URL to send the browser to.
    pub async fn authorize_url(&self, req: AuthorizeRequest<'_>) -> Result<Url, LoginError> {
        let d = self.discovered().await?;
        let state = req.state.to_owned();
        let nonce = req.nonce.to_owned();
        let mut auth = d
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(req.pkce_challenge);
        for scope in self.config.scopes.iter().filter(|s| *s != "openid") {
            auth = auth.add_scope(Scope::new(scope.clone()));
        }
        if self.config.response_mode == ResponseMode::FormPost {
            auth = auth.add_extra_param("response_mode", "form_post");
        }
        if let Some(hint) = req.login_hint {
            auth = auth.set_login_hint(LoginHint::new(hint.to_owned()));
        }
        let mut params = self.config.extra_params.clone();
        if let Some(org) = req.org_params {
            params.extend(org.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        for (key, value) in params {
            auth = auth.add_extra_param(key, value);
        }
        if let Some(step_up) = req.step_up {
            let mut acr_values = step_up.acr_values.clone();
            if step_up.mfa {
                acr_values.extend(self.config.mfa_acr_values.iter().cloned());
            }
            if !acr_values.is_empty() {
                auth = auth.add_extra_param("acr_values", acr_values.join(" "));
            }
            if let Some(max_age) = step_up.max_age {
                auth = auth.add_extra_param("max_age", max_age.to_string());
            }
            // An IdP treats acr_values as a wish and may answer from its existing session
            // without asking again: make it authenticate now.
            if step_up.mfa || !step_up.acr_values.is_empty() {
                auth = auth.add_prompt(CoreAuthPrompt::Login);
            }
        }
        let (url, _, _) = auth.url();
        Ok(url)
    }

    /// The strength this IdP's answer shows: its `amr`, plus `mfa` when its `acr` is one of
    /// the IdP's `mfa_acr_values`.
    pub fn strength_of(&self, login: &LoginFacts) -> Vec<String> {
        let mut amr = login.amr.clone();
        if login
            .acr
            .as_ref()
            .is_some_and(|acr| self.config.mfa_acr_values.contains(acr))
            && !amr.iter().any(|m| m == MFA_AMR)
        {
            amr.push(MFA_AMR.to_owned());
        }
        amr.sort();
        amr.dedup();
        amr
    }

    /// Exchanges the code (with the PKCE verifier) and validates the ID token against `nonce`.
    /// Returns the validated identity and the raw ID token (kept for logout's
    /// `id_token_hint`).
    pub async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<(VerifiedIdentity, String), LoginError> {
        let d = self.discovered().await?;
        let response: CodeResponse = d
            .code_client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| LoginError::TokenExchange(describe_token_error(&e)))?;
        let id_token = response
            .extra_fields()
            .id_token
            .clone()
            .ok_or_else(|| LoginError::IdToken("the token response has no id_token".into()))?;
        let expect = IdTokenExpect {
            issuer: &self.config.issuer,
            client_id: &self.config.client_id,
            nonce,
            now: unix_now(),
        };
        let keys = d.jwks.keys().await.map_err(jwks_unreachable)?;
        let claims = match verify_id_token(&id_token, &keys, &expect) {
            Err(JwtError::UnknownKey(kid)) => {
                // The IdP may have rotated its keys: refetch once (rate-limited) and retry.
                let refreshed = d
                    .jwks
                    .refetch_for_unknown_key(&keys)
                    .await
                    .map_err(jwks_unreachable)?;
                if !Arc::ptr_eq(&refreshed, &keys) {
                    tracing::info!(idp = %self.config.name, kid = ?kid, keys = refreshed.len(), "refetched JWKS after an unknown key id");
                }
                verify_id_token(&id_token, &refreshed, &expect)
            }
            other => other,
        }
        .map_err(|e| LoginError::IdToken(e.to_string()))?;
        let mut identity = claims.into_identity(self.config.role_claims.keys());
        let role_claims_missing = self
            .config
            .role_claims
            .keys()
            .any(|claim| !identity.role_claims.contains_key(claim));
        // Many IdPs leave these out of the ID token and serve them from userinfo. When the
        // token has the email, a userinfo failure is not fatal: the email just counts as
        // unverified (some IdPs, Entra ID among them, never send `email_verified`).
        if identity.email.is_none() || identity.email_verified.is_none() || role_claims_missing {
            let access_token = response.access_token().secret();
            if let Err(e) = self.fill_from_userinfo(&mut identity, access_token).await {
                if identity.email.is_none() {
                    return Err(e);
                }
                tracing::warn!(idp = %self.config.name, error = %e, "userinfo failed; treating the email as unverified");
            }
        }
        Ok((identity, id_token))
    }

    /// Reads claims the ID token left out from the userinfo endpoint. Its `sub` must equal the
    /// token's. Parsed by hand rather than with `openidconnect`'s userinfo client so that a
    /// non-boolean `email_verified` (some IdPs send `"true"`) counts as unverified instead of
    /// failing the whole login.
    async fn fill_from_userinfo(
        &self,
        identity: &mut VerifiedIdentity,
        access_token: &str,
    ) -> Result<(), LoginError> {
        let Some(endpoint) = self
            .current()
            .and_then(|d| d.metadata.userinfo_endpoint().map(|u| u.url().clone()))
        else {
            return Ok(()); // no userinfo endpoint: what the ID token said is all there is
        };
        let response = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| LoginError::Userinfo(e.to_string()))?;
        if !response.status().is_success() {
            return Err(LoginError::Userinfo(format!(
                "status {}",
                response.status()
            )));
        }
        let body = read_capped(response, MAX_USERINFO_BYTES)
            .await
            .map_err(LoginError::Userinfo)?;
        let body: Value = serde_json::from_slice(&body)
            .map_err(|e| LoginError::Userinfo(format!("not JSON: {e}")))?;
        merge_userinfo(identity, &body)?;
        for claim in self.config.role_claims.keys() {
            if !identity.role_claims.contains_key(claim)
                && let Some(value) = body.get(claim)
            {
                identity.role_claims.insert(claim.clone(), value.clone());
            }
        }
        Ok(())
    }

    /// Verifies a back-channel logout token from this IdP (OIDC Back-Channel Logout 1.0 §2.6):
    /// signed by a key from its JWKS, `iss` exact, `aud` this client, `iat`, `exp`, a
    /// `jti`, the back-channel logout event, `sub` or `sid`, and no `nonce` (so an ID token
    /// cannot pass for one). Replay (`jti`) is the caller's to check.
    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutClaims, LogoutError> {
        let d = self
            .discovered()
            .await
            .map_err(|e| LogoutError::Unavailable(e.to_string()))?;
        let keys = d
            .jwks
            .keys()
            .await
            .map_err(|e| LogoutError::Unavailable(e.to_string()))?;
        let audiences = [self.config.client_id.clone()];
        let expect = Expect {
            issuer: &self.config.issuer,
            audiences: Some(&audiences),
            leeway_seconds: EXP_LEEWAY_SECONDS,
            subject_required: false,
        };
        let verified = match jwt::verify::<LogoutClaims>(token, &keys, &expect) {
            Err(JwtError::UnknownKey(_)) => {
                let refreshed = d
                    .jwks
                    .refetch_for_unknown_key(&keys)
                    .await
                    .map_err(|e| LogoutError::Unavailable(e.to_string()))?;
                jwt::verify::<LogoutClaims>(token, &refreshed, &expect)
            }
            other => other,
        }
        .map_err(|e| LogoutError::Invalid(e.to_string()))?;
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

    /// Where to send the browser to end the IdP session too, when configured and supported.
    pub fn logout_url(&self, id_token: Option<&str>, post_logout: &str) -> Option<Url> {
        if !self.config.logout_at_idp {
            return None;
        }
        let d = self.current()?;
        let endpoint = d
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let mut request = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.config.client_id.clone()));
        if let Some(token) = id_token
            .and_then(|t| serde_json::from_value::<CoreIdToken>(Value::String(t.to_owned())).ok())
        {
            request = request.set_id_token_hint(&token);
        }
        if let Ok(redirect) = PostLogoutRedirectUrl::new(post_logout.to_owned()) {
            request = request.set_post_logout_redirect_uri(redirect);
        }
        Some(request.http_get_url())
    }
}

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

fn jwks_unreachable(e: JwtError) -> LoginError {
    LoginError::Unreachable(format!("JWKS: {e}"))
}

/// What an ID token must say for this login.
#[derive(Debug, Clone)]
pub struct IdTokenExpect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Unix seconds, for `iat`.
    pub now: i64,
}

/// `aud` is a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audiences {
    One(String),
    Many(Vec<String>),
}

/// The ID token claims gatehouse reads. The profile claims are loose JSON values: a value of
/// an unexpected type counts as absent (or, for `email_verified`, as not verified) instead of
/// refusing the token.
#[derive(Debug, Deserialize)]
pub struct IdTokenClaims {
    iss: String,
    sub: String,
    aud: Audiences,
    iat: serde_json::Number,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    email: Option<Value>,
    #[serde(default)]
    email_verified: Option<Value>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    amr: Option<Value>,
    #[serde(default)]
    acr: Option<Value>,
    /// Loose, like the profile claims: an odd type counts as absent.
    #[serde(default)]
    auth_time: Option<Value>,
    #[serde(default)]
    sid: Option<Value>,
    /// Everything else, for `role_claims`.
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

impl IdTokenClaims {
    /// The identity, keeping the claims named in `role_claims` (role mapping).
    pub fn into_identity<'a>(
        mut self,
        role_claims: impl Iterator<Item = &'a String>,
    ) -> VerifiedIdentity {
        let mut amr: Vec<String> = match &self.amr {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        amr.sort();
        amr.dedup();
        let login = LoginFacts {
            amr,
            acr: self.acr.as_ref().and_then(Value::as_str).map(String::from),
            auth_time: self.auth_time.as_ref().and_then(Value::as_i64),
            idp_subject: Some(self.sub.clone()),
            idp_sid: self.sid.as_ref().and_then(Value::as_str).map(String::from),
        };
        let role_claims = role_claims
            .filter_map(|claim| self.other.remove(claim).map(|v| (claim.clone(), v)))
            .collect();
        VerifiedIdentity {
            login,
            role_claims,
            issuer: self.iss,
            subject: self.sub,
            email: self
                .email
                .as_ref()
                .and_then(Value::as_str)
                .map(String::from),
            email_verified: match self.email_verified {
                Some(Value::Bool(b)) => Some(b),
                Some(other) => {
                    // Not verified, and not asked again of userinfo, which would say the same.
                    tracing::info!(value = %other, "email_verified is not a boolean; treating the email as unverified");
                    Some(false)
                }
                None => None,
            },
            name: self.name.as_ref().and_then(Value::as_str).map(String::from),
        }
    }
}

/// Validates an ID token (OIDC Core §3.1.3.7): a signature by a key from the issuer's JWKS
/// with an accepted algorithm, `iss` exact, `aud` is this client and no one else, `azp` (when
/// present) is this client, `exp` (with leeway), `iat` not in the future, and `nonce` is this
/// login's.
pub fn verify_id_token(
    token: &str,
    keys: &KeySet,
    expect: &IdTokenExpect<'_>,
) -> Result<IdTokenClaims, JwtError> {
    let audiences = [expect.client_id.to_owned()];
    let claims: IdTokenClaims = jwt::verify(
        token,
        keys,
        &Expect {
            issuer: expect.issuer,
            audiences: Some(&audiences),
            leeway_seconds: EXP_LEEWAY_SECONDS,
            subject_required: true,
        },
    )?
    .claims;
    let invalid = |m: String| Err(JwtError::Invalid(m));
    let others: Vec<&String> = match &claims.aud {
        Audiences::One(a) => vec![a],
        Audiences::Many(list) => list.iter().collect(),
    }
    .into_iter()
    .filter(|a| a.as_str() != expect.client_id)
    .collect();
    if !others.is_empty() {
        return invalid(format!("the token is also for other audiences: {others:?}"));
    }
    if let Some(azp) = &claims.azp
        && azp != expect.client_id
    {
        return invalid(format!(
            "authorized party (azp) is {azp:?}, not this client"
        ));
    }
    let iat = claims.iat.as_f64().unwrap_or(f64::MAX);
    if iat > (expect.now + IAT_LEEWAY_SECONDS) as f64 {
        return invalid(format!("issued in the future (iat {iat})"));
    }
    match &claims.nonce {
        Some(n) if n == expect.nonce => Ok(claims),
        Some(_) => invalid("the nonce is not this login's".into()),
        None => invalid("the token has no nonce".into()),
    }
}

/// Applies a userinfo response: `sub` must match; fills only what is still missing.
pub fn merge_userinfo(identity: &mut VerifiedIdentity, body: &Value) -> Result<(), LoginError> {
    match body.get("sub").and_then(Value::as_str) {
        Some(sub) if sub == identity.subject => {}
        Some(_) => {
            return Err(LoginError::Userinfo(
                "userinfo is about another subject than the ID token".into(),
            ));
        }
        None => return Err(LoginError::Userinfo("userinfo has no sub".into())),
    }
    let email = body.get("email").and_then(Value::as_str);
    // Verification speaks about an address: only take it for the address we are using.
    let same_address = match (&identity.email, email) {
        (Some(ours), Some(theirs)) => ours.eq_ignore_ascii_case(theirs),
        (None, _) => true,
        (Some(_), None) => false,
    };
    if identity.email.is_none() {
        identity.email = email.map(String::from);
    }
    if identity.email_verified.is_none() && same_address {
        identity.email_verified = body.get("email_verified").and_then(Value::as_bool);
    }
    if identity.name.is_none() {
        identity.name = body.get("name").and_then(Value::as_str).map(String::from);
    }
    Ok(())
}

fn describe_token_error<E: std::error::Error>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    const ISSUER: &str = "https://idp.test";
    const CLIENT: &str = "gatehouse";
    const SECRET: &str = "client-secret";
    const TRUSTED_PEM: &str = include_str!("../../tests/fixtures/id-token-test-key.pem");
    const OTHER_PEM: &str = include_str!("../../tests/fixtures/other-test-key.pem");

    fn rsa_key(pem: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
    }

    /// The issuer's JWKS: the trusted key's public half as `k1`.
    fn jwks() -> KeySet {
        let mut jwk = Jwk::from_encoding_key(&rsa_key(TRUSTED_PEM), Algorithm::RS256).unwrap();
        jwk.common.key_id = Some("k1".into());
        KeySet::from_json(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap()
    }

    fn now() -> i64 {
        unix_now()
    }

    /// A token with the usual claims, `changes` merged over them (`null` removes one).
    fn claims(changes: Value) -> Value {
        let mut c = json!({
            "iss": ISSUER, "sub": "alice", "aud": CLIENT, "exp": now() + 300, "iat": now(),
            "nonce": "n-1", "email": "alice@acme.test", "email_verified": true,
        });
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn signed(claims: &Value, key: &EncodingKey, alg: Algorithm, kid: Option<&str>) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(String::from);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn check(token: &str) -> Result<IdTokenClaims, JwtError> {
        verify_id_token(
            token,
            &jwks(),
            &IdTokenExpect {
                issuer: ISSUER,
                client_id: CLIENT,
                nonce: "n-1",
                now: now(),
            },
        )
    }

    /// The ID token rules of DESIGN.md, one row each.
    #[test]
    fn id_token_validation_table() {
        let key = rsa_key(TRUSTED_PEM);
        let t = now();
        let cases: Vec<(&str, Value, bool)> = vec![
            ("valid", json!({}), true),
            ("issuer differs", json!({"iss": "https://idp.test/"}), false),
            (
                "issuer of another tenant",
                json!({"iss": "https://evil.test"}),
                false,
            ),
            ("no issuer", json!({"iss": null}), false),
            (
                "audience is another client",
                json!({"aud": "other-client"}),
                false,
            ),
            ("audience list with us", json!({"aud": [CLIENT]}), true),
            (
                "extra untrusted audience, no azp",
                json!({"aud": [CLIENT, "other-client"]}),
                false,
            ),
            (
                "extra untrusted audience, azp us",
                json!({"aud": [CLIENT, "other"], "azp": CLIENT}),
                false,
            ),
            ("no audience", json!({"aud": null}), false),
            (
                "azp names another client",
                json!({"azp": "other-client"}),
                false,
            ),
            ("azp names us", json!({"azp": CLIENT}), true),
            ("expired within leeway", json!({"exp": t - 10}), true),
            ("expired", json!({"exp": t - 120}), false),
            ("no exp", json!({"exp": null}), false),
            (
                "issued slightly in the future",
                json!({"iat": t + 30}),
                true,
            ),
            (
                "issued in the future",
                json!({"iat": t + 600, "exp": t + 900}),
                false,
            ),
            ("not valid yet", json!({"nbf": t + 600}), false),
            ("nonce differs", json!({"nonce": "n-2"}), false),
            ("nonce missing", json!({"nonce": null}), false),
            ("no subject", json!({"sub": null}), false),
        ];
        for (what, changes, ok) in cases {
            let token = signed(&claims(changes), &key, Algorithm::RS256, Some("k1"));
            let result = check(&token);
            assert_eq!(result.is_ok(), ok, "{what}: {result:?}");
        }
    }

    #[test]
    fn keys_only_from_the_issuers_jwks_and_no_weak_algorithms() {
        let c = claims(json!({}));
        // A key the JWKS does not list (unknown kid): the error that triggers the refetch.
        let unknown = signed(&c, &rsa_key(OTHER_PEM), Algorithm::RS256, Some("k2"));
        assert_eq!(
            check(&unknown).err(),
            Some(JwtError::UnknownKey(Some("k2".into())))
        );
        // Another key claiming the trusted kid: the signature does not verify.
        let forged = signed(&c, &rsa_key(OTHER_PEM), Algorithm::RS256, Some("k1"));
        assert!(matches!(check(&forged), Err(JwtError::Invalid(_))));
        // No kid: the only key is tried, and the signature decides.
        let no_kid = signed(&c, &rsa_key(TRUSTED_PEM), Algorithm::RS256, None);
        assert!(check(&no_kid).is_ok());
        // HS256 with the client secret, or with the RSA public key as the HMAC secret: symmetric
        // algorithms are never accepted.
        let public_key = public_key_text();
        for secret in [SECRET.as_bytes(), public_key.as_bytes()] {
            let hs = signed(
                &c,
                &EncodingKey::from_secret(secret),
                Algorithm::HS256,
                Some("k1"),
            );
            assert!(
                matches!(check(&hs), Err(JwtError::Algorithm(_))),
                "HS256 accepted"
            );
        }
        // alg none does not even parse.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(c.to_string());
        assert!(matches!(
            check(&format!("{header}.{payload}.")),
            Err(JwtError::Malformed(_))
        ));
        for garbage in ["", "a.b.c", "not a token", &"x".repeat(10_000)] {
            assert!(check(garbage).is_err(), "{garbage:?}");
        }
    }

    /// The RSA public key as published (its JWK text): what an attacker would use as the HMAC
    /// secret in the classic algorithm-confusion attack.
    fn public_key_text() -> String {
        let jwk = Jwk::from_encoding_key(&rsa_key(TRUSTED_PEM), Algorithm::RS256).unwrap();
        serde_json::to_string(&jwk).unwrap()
    }

    /// Only the JSON boolean `true` verifies an email. Anything else in `email_verified` (Amazon
    /// Cognito sends the string "true") is accepted and counts as not verified; absent means
    /// "ask userinfo".
    #[test]
    fn email_verified_table() {
        let key = rsa_key(TRUSTED_PEM);
        let cases = [
            (json!(true), Some(true)),
            (json!(false), Some(false)),
            (json!("true"), Some(false)),
            (json!("True"), Some(false)),
            (json!(1), Some(false)),
            (json!({"value": true}), Some(false)),
            (Value::Null, None),
        ];
        for (value, want) in cases {
            let token = signed(
                &claims(json!({ "email_verified": value })),
                &key,
                Algorithm::RS256,
                Some("k1"),
            );
            let identity = check(&token)
                .unwrap_or_else(|e| panic!("{value}: {e}"))
                .into_identity(std::iter::empty());
            assert_eq!(identity.email_verified, want, "{value}");
            assert_eq!(identity.email.as_deref(), Some("alice@acme.test"));
        }
        // Other profile claims of an odd type are dropped, not fatal.
        let token = signed(
            &claims(json!({"email": 42, "name": {"en": "x"}})),
            &key,
            Algorithm::RS256,
            Some("k1"),
        );
        let identity = check(&token).unwrap().into_identity(std::iter::empty());
        assert_eq!((identity.email, identity.name), (None, None));
    }

    #[test]
    fn login_facts_and_role_claims_come_from_the_id_token() {
        let key = rsa_key(TRUSTED_PEM);
        let token = signed(
            &claims(json!({
                "amr": ["pwd", "mfa", "pwd"], "acr": "urn:mfa", "auth_time": 1234,
                "sid": "op-session", "groups": ["eng", "ops"], "department": "x",
            })),
            &key,
            Algorithm::RS256,
            Some("k1"),
        );
        let wanted = ["groups".to_owned(), "roles".to_owned()];
        let identity = check(&token).unwrap().into_identity(wanted.iter());
        assert_eq!(identity.login.amr, vec!["mfa", "pwd"]);
        assert_eq!(identity.login.acr.as_deref(), Some("urn:mfa"));
        assert_eq!(identity.login.auth_time, Some(1234));
        assert_eq!(identity.login.idp_sid.as_deref(), Some("op-session"));
        assert_eq!(identity.login.idp_subject.as_deref(), Some("alice"));
        assert_eq!(
            identity.role_claims.len(),
            1,
            "only named claims, only present ones"
        );
        assert_eq!(identity.role_claims["groups"], json!(["eng", "ops"]));
        // A lone string amr counts; odd types are dropped.
        let token = signed(
            &claims(json!({"amr": "otp", "acr": 5, "auth_time": "soon"})),
            &key,
            Algorithm::RS256,
            Some("k1"),
        );
        let identity = check(&token).unwrap().into_identity(std::iter::empty());
        assert_eq!(identity.login.amr, vec!["otp"]);
        assert_eq!((identity.login.acr, identity.login.auth_time), (None, None));
    }

    fn identity() -> VerifiedIdentity {
        VerifiedIdentity {
            issuer: "https://idp/".into(),
            subject: "alice".into(),
            email: None,
            email_verified: None,
            name: None,
            login: LoginFacts::default(),
            role_claims: serde_json::Map::new(),
        }
    }

    #[test]
    fn userinfo_merge_table() {
        let cases = [
            (
                json!({"sub": "alice", "email": "a@x.test", "email_verified": true}),
                Some(Some(true)),
            ),
            (
                json!({"sub": "alice", "email": "a@x.test", "email_verified": false}),
                Some(Some(false)),
            ),
            // Only the JSON boolean counts.
            (
                json!({"sub": "alice", "email": "a@x.test", "email_verified": "true"}),
                Some(None),
            ),
            (
                json!({"sub": "alice", "email": "a@x.test", "email_verified": 1}),
                Some(None),
            ),
            (json!({"sub": "alice", "email": "a@x.test"}), Some(None)),
            // Another subject, or none: refused.
            (
                json!({"sub": "mallory", "email": "a@x.test", "email_verified": true}),
                None,
            ),
            (json!({"email": "a@x.test", "email_verified": true}), None),
        ];
        for (body, want) in cases {
            let mut id = identity();
            let result = merge_userinfo(&mut id, &body);
            match want {
                None => assert!(result.is_err(), "{body}"),
                Some(verified) => {
                    assert!(result.is_ok(), "{body}");
                    assert_eq!(id.email_verified, verified, "{body}");
                    assert_eq!(id.email.as_deref(), Some("a@x.test"));
                }
            }
        }
        // What the ID token said wins.
        let mut id = identity();
        id.email = Some("token@x.test".into());
        id.email_verified = Some(false);
        merge_userinfo(
            &mut id,
            &json!({"sub": "alice", "email": "other@x.test", "email_verified": true}),
        )
        .unwrap();
        assert_eq!(
            (id.email.as_deref(), id.email_verified),
            (Some("token@x.test"), Some(false))
        );
        // Userinfo's verification of another address says nothing about the token's.
        let mut id = identity();
        id.email = Some("token@x.test".into());
        let other = json!({"sub": "alice", "email": "other@x.test", "email_verified": true});
        merge_userinfo(&mut id, &other).unwrap();
        assert_eq!(id.email_verified, None);
        let mut id = identity();
        id.email = Some("Token@X.test".into());
        let same = json!({"sub": "alice", "email": "token@x.test", "email_verified": true});
        merge_userinfo(&mut id, &same).unwrap();
        assert_eq!(id.email_verified, Some(true));
    }
}
