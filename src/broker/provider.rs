//! One configured identity provider: discovery and authorize URLs (PKCE S256) with the
//! `openidconnect` crate, the code exchange with `oauth2`, the issuer's JWKS for the ID token
//! ([`super::id_token`]) and logout tokens ([`super::logout_token`]), userinfo and
//! RP-initiated logout.
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
use super::id_token::{
    EXP_LEEWAY_SECONDS, IdTokenExpect, VerifiedIdentity, merge_userinfo, verify_id_token,
};
use super::logout_token::{self, LogoutClaims, LogoutError};
use crate::clock::unix_now;
use crate::config::{IdpConfig, ResponseMode};
use crate::jwt::jwks::read_capped;
use crate::jwt::{self, Expect, JwksCache, JwtError};
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
        logout_token::accept(verified)
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

fn jwks_unreachable(e: JwtError) -> LoginError {
    LoginError::Unreachable(format!("JWKS: {e}"))
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

/// The strength an IdP's answer shows: its `amr`, plus `mfa` when its `acr` (SAML: the
/// `AuthnContextClassRef`) is one of the IdP's `mfa_acr_values`.
pub fn strength_of(mfa_acr_values: &[String], login: &LoginFacts) -> Vec<String> {
    let mut amr = login.amr.clone();
    if login
        .acr
        .as_ref()
        .is_some_and(|acr| mfa_acr_values.contains(acr))
        && !amr.iter().any(|m| m == MFA_AMR)
    {
        amr.push(MFA_AMR.to_owned());
    }
    amr.sort();
    amr.dedup();
    amr
}
