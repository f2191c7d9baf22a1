//! One configured identity provider, spoken to with the `openidconnect` crate: discovery,
//! authorize URLs (PKCE S256), code exchange, ID token validation, userinfo and RP-initiated
//! logout.
//!
//! Discovery is lazy and retried: an IdP that is down when gatehouse starts must not stop
//! ext_authz from serving. Keys come only from the issuer's JWKS; a token signed with a `kid`
//! we do not know triggers one JWKS refetch, at most once a minute.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenClaims, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm, CoreTokenResponse,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, LoginHint, LogoutRequest, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, Scope, SignatureVerificationError, TokenResponse,
};
use secrecy::ExposeSecret;
use serde_json::Value;
use url::Url;

use super::error::LoginError;
use crate::config::{IdpConfig, ResponseMode};

type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// `exp` may be this far in the past (clock skew between us and the IdP).
const EXP_LEEWAY_SECONDS: i64 = 30;
/// `iat` may be this far in the future.
const IAT_LEEWAY_SECONDS: i64 = 60;

/// Signing algorithms accepted for ID tokens: asymmetric only. No `none`, and no HS* (whose
/// "key" would be a public value or the client secret).
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// The claims gatehouse uses, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    /// `Some(true)` only for the JSON boolean `true`.
    pub email_verified: Option<bool>,
    pub name: Option<String>,
}

pub struct Provider {
    pub config: IdpConfig,
    secret: Option<ClientSecret>,
    redirect_url: RedirectUrl,
    http: reqwest::Client,
    discovered: RwLock<Option<Arc<Discovered>>>,
    /// Serializes discovery and JWKS refetches; holds the time of the last refetch.
    refresh: tokio::sync::Mutex<Option<Instant>>,
}

struct Discovered {
    metadata: ProviderMetadataWithLogout,
    client: OidcClient,
}

/// A login request about to be sent to the IdP.
pub struct AuthorizeRequest<'a> {
    pub state: &'a str,
    pub nonce: &'a str,
    pub pkce_challenge: PkceCodeChallenge,
    pub login_hint: Option<&'a str>,
}

impl Provider {
    pub fn new(
        config: IdpConfig,
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
            config,
            secret,
            redirect_url,
            http,
            discovered: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn current(&self) -> Option<Arc<Discovered>> {
        self.discovered.read().ok().and_then(|d| d.clone())
    }

    fn replace(&self, discovered: Discovered) -> Arc<Discovered> {
        let discovered = Arc::new(discovered);
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(discovered.clone());
        }
        discovered
    }

    /// The discovered provider, discovering it now if needed.
    async fn discovered(&self) -> Result<Arc<Discovered>, LoginError> {
        if let Some(d) = self.current() {
            return Ok(d);
        }
        let _guard = self.refresh.lock().await;
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
        tracing::info!(idp = %self.config.name, issuer = %self.config.issuer, "identity provider discovered");
        Ok(self.replace(self.build(metadata)))
    }

    fn build(&self, metadata: ProviderMetadataWithLogout) -> Discovered {
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            self.secret.clone(),
        )
        .set_redirect_uri(self.redirect_url.clone());
        Discovered { metadata, client }
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
        for (key, value) in &self.config.extra_params {
            auth = auth.add_extra_param(key.clone(), value.clone());
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
        let response: CoreTokenResponse = d
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| LoginError::TokenExchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| LoginError::TokenExchange(describe_token_error(&e)))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| LoginError::IdToken("the token response has no id_token".into()))?;
        let claims = self.verify(d, id_token, nonce).await?;
        let mut identity = VerifiedIdentity {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified(),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
        };
        // Many IdPs leave these out of the ID token and serve them from userinfo.
        if identity.email.is_none() || identity.email_verified.is_none() || identity.name.is_none()
        {
            let access_token = response.access_token().secret();
            self.fill_from_userinfo(&mut identity, access_token).await?;
        }
        Ok((identity, id_token.to_string()))
    }

    async fn verify(
        &self,
        d: Arc<Discovered>,
        id_token: &CoreIdToken,
        nonce: &str,
    ) -> Result<CoreIdTokenClaims, LoginError> {
        let nonce = Nonce::new(nonce.to_owned());
        match verify_with(&d.client, id_token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // The IdP may have rotated its keys: refetch once (rate-limited) and retry.
                let refreshed = self.refetch_jwks(&d).await?;
                verify_with(&refreshed.client, id_token, &nonce)
                    .map_err(|e| LoginError::IdToken(e.to_string()))
            }
            other => other.map_err(|e| LoginError::IdToken(e.to_string())),
        }
    }

    async fn refetch_jwks(&self, stale: &Arc<Discovered>) -> Result<Arc<Discovered>, LoginError> {
        let mut last = self.refresh.lock().await;
        if let Some(current) = self.current()
            && !Arc::ptr_eq(&current, stale)
        {
            return Ok(current); // another login refreshed it meanwhile
        }
        if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL) {
            return Err(LoginError::IdToken(
                "signed with an unknown key (JWKS refetched recently; not again yet)".into(),
            ));
        }
        *last = Some(Instant::now());
        let jwks = CoreJsonWebKeySet::fetch_async(stale.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| LoginError::Unreachable(format!("JWKS refetch failed: {e}")))?;
        tracing::info!(idp = %self.config.name, keys = jwks.keys().len(), "refetched JWKS after an unknown key id");
        let metadata = stale.metadata.clone().set_jwks(jwks);
        Ok(self.replace(self.build(metadata)))
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
        let body: Value = response
            .json()
            .await
            .map_err(|e| LoginError::Userinfo(format!("not JSON: {e}")))?;
        merge_userinfo(identity, &body)
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

fn verify_with(
    client: &OidcClient,
    id_token: &CoreIdToken,
    nonce: &Nonce,
) -> Result<CoreIdTokenClaims, ClaimsVerificationError> {
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs(ALLOWED_ALGS)
        .set_time_fn(|| Utc::now() - chrono::Duration::seconds(EXP_LEEWAY_SECONDS))
        .set_issue_time_verifier_fn(|iat| {
            if iat > Utc::now() + chrono::Duration::seconds(IAT_LEEWAY_SECONDS) {
                Err(format!("issued in the future ({iat})"))
            } else {
                Ok(())
            }
        });
    id_token.claims(&verifier, nonce).cloned()
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
    if identity.email.is_none() {
        identity.email = body.get("email").and_then(Value::as_str).map(String::from);
    }
    if identity.email_verified.is_none() {
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
    use serde_json::json;

    fn identity() -> VerifiedIdentity {
        VerifiedIdentity {
            issuer: "https://idp/".into(),
            subject: "alice".into(),
            email: None,
            email_verified: None,
            name: None,
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
    }
}
