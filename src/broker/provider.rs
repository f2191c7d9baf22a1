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
use crate::provisioning::EmailTrust;

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
    /// The email domains this IdP may vouch for.
    pub email_trust: EmailTrust,
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
            email_trust: EmailTrust::of(&config),
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
        // Many IdPs leave these out of the ID token and serve them from userinfo. When the
        // token has the email, a userinfo failure is not fatal: the email just counts as
        // unverified (some IdPs, Entra ID among them, never send `email_verified`).
        if identity.email.is_none() || identity.email_verified.is_none() {
            let access_token = response.access_token().secret();
            if let Err(e) = self.fill_from_userinfo(&mut identity, access_token).await {
                if identity.email.is_none() {
                    return Err(e);
                }
                tracing::warn!(idp = %self.config.name, error = %e, "userinfo failed; treating the email as unverified");
            }
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
    let claims = id_token.claims(&verifier, nonce)?.clone();
    // openidconnect leaves `azp` unchecked; DESIGN.md: when present it must be us.
    if let Some(azp) = claims.authorized_party()
        && azp.as_str() != client.client_id().as_str()
    {
        return Err(ClaimsVerificationError::InvalidAudience(format!(
            "authorized party (azp) is `{}`, not this client",
            azp.as_str()
        )));
    }
    Ok(claims)
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
    use openidconnect::core::{
        CoreHmacKey, CoreJsonWebKey, CoreResponseType, CoreRsaPrivateSigningKey,
        CoreSubjectIdentifierType,
    };
    use openidconnect::{
        Audience, AuthUrl, EmptyAdditionalClaims, EmptyAdditionalProviderMetadata, JsonWebKeyId,
        JsonWebKeySetUrl, LogoutProviderMetadata, PrivateSigningKey, ResponseTypes, StandardClaims,
        SubjectIdentifier,
    };
    use serde_json::json;

    const ISSUER: &str = "https://idp.test";
    const CLIENT: &str = "gatehouse";
    const SECRET: &str = "client-secret";

    fn rsa_key(pem: &str, kid: &str) -> CoreRsaPrivateSigningKey {
        CoreRsaPrivateSigningKey::from_pem(pem, Some(JsonWebKeyId::new(kid.into()))).unwrap()
    }

    fn trusted_key() -> CoreRsaPrivateSigningKey {
        rsa_key(
            include_str!("../../tests/fixtures/id-token-test-key.pem"),
            "k1",
        )
    }

    /// A client whose JWKS holds only the trusted key, as discovery would build it.
    fn client(keys: Vec<CoreJsonWebKey>) -> OidcClient {
        let metadata = ProviderMetadataWithLogout::new(
            IssuerUrl::new(ISSUER.into()).unwrap(),
            AuthUrl::new(format!("{ISSUER}/auth")).unwrap(),
            JsonWebKeySetUrl::new(format!("{ISSUER}/jwks")).unwrap(),
            vec![ResponseTypes::new(vec![CoreResponseType::Code])],
            vec![CoreSubjectIdentifierType::Public],
            vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256],
            LogoutProviderMetadata {
                end_session_endpoint: None,
                additional_metadata: EmptyAdditionalProviderMetadata {},
            },
        )
        .set_jwks(CoreJsonWebKeySet::new(keys));
        CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(CLIENT.into()),
            Some(ClientSecret::new(SECRET.into())),
        )
    }

    /// What to put in a token, relative to now.
    struct Spec {
        iss: &'static str,
        aud: Vec<&'static str>,
        azp: Option<&'static str>,
        exp: i64,
        iat: i64,
        nonce: Option<&'static str>,
    }

    impl Default for Spec {
        fn default() -> Self {
            Self {
                iss: ISSUER,
                aud: vec![CLIENT],
                azp: None,
                exp: 300,
                iat: 0,
                nonce: Some("n-1"),
            }
        }
    }

    fn claims(spec: &Spec) -> CoreIdTokenClaims {
        let now = Utc::now();
        CoreIdTokenClaims::new(
            IssuerUrl::new(spec.iss.into()).unwrap(),
            spec.aud
                .iter()
                .map(|a| Audience::new((*a).into()))
                .collect(),
            now + chrono::Duration::seconds(spec.exp),
            now + chrono::Duration::seconds(spec.iat),
            StandardClaims::new(SubjectIdentifier::new("alice".into())),
            EmptyAdditionalClaims {},
        )
        .set_nonce(spec.nonce.map(|n| Nonce::new(n.into())))
        .set_authorized_party(spec.azp.map(|a| ClientId::new(a.into())))
    }

    fn signed(
        spec: &Spec,
        key: &impl PrivateSigningKey<VerificationKey = CoreJsonWebKey>,
        alg: CoreJwsSigningAlgorithm,
    ) -> CoreIdToken {
        CoreIdToken::new(claims(spec), key, alg, None, None).unwrap()
    }

    fn check(token: &CoreIdToken) -> Result<(), String> {
        let client = client(vec![trusted_key().as_verification_key()]);
        verify_with(&client, token, &Nonce::new("n-1".into()))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The ID token rules of DESIGN.md, one row each.
    #[test]
    fn id_token_validation_table() {
        let rs256 = CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256;
        let key = trusted_key();
        let cases: Vec<(&str, Spec, bool)> = vec![
            ("valid", Spec::default(), true),
            (
                "issuer differs",
                Spec {
                    iss: "https://idp.test/",
                    ..Spec::default()
                },
                false,
            ),
            (
                "issuer of another tenant",
                Spec {
                    iss: "https://evil.test",
                    ..Spec::default()
                },
                false,
            ),
            (
                "audience is another client",
                Spec {
                    aud: vec!["other-client"],
                    ..Spec::default()
                },
                false,
            ),
            (
                "extra untrusted audience, no azp",
                Spec {
                    aud: vec![CLIENT, "other-client"],
                    ..Spec::default()
                },
                false,
            ),
            (
                "azp names another client",
                Spec {
                    azp: Some("other-client"),
                    ..Spec::default()
                },
                false,
            ),
            (
                "azp names us",
                Spec {
                    azp: Some(CLIENT),
                    ..Spec::default()
                },
                true,
            ),
            (
                "expired within leeway",
                Spec {
                    exp: -10,
                    ..Spec::default()
                },
                true,
            ),
            (
                "expired",
                Spec {
                    exp: -120,
                    ..Spec::default()
                },
                false,
            ),
            (
                "issued slightly in the future",
                Spec {
                    iat: 30,
                    ..Spec::default()
                },
                true,
            ),
            (
                "issued in the future",
                Spec {
                    iat: 600,
                    exp: 900,
                    ..Spec::default()
                },
                false,
            ),
            (
                "nonce differs",
                Spec {
                    nonce: Some("n-2"),
                    ..Spec::default()
                },
                false,
            ),
            (
                "nonce missing",
                Spec {
                    nonce: None,
                    ..Spec::default()
                },
                false,
            ),
        ];
        for (what, spec, ok) in cases {
            let result = check(&signed(&spec, &key, rs256.clone()));
            assert_eq!(result.is_ok(), ok, "{what}: {result:?}");
        }
    }

    #[test]
    fn keys_only_from_the_issuers_jwks_and_no_weak_algorithms() {
        let rs256 = CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256;
        let spec = Spec::default();
        let other_pem = include_str!("../../tests/fixtures/other-test-key.pem");
        // A key the JWKS does not list (unknown kid): the "unknown key" error that triggers the
        // one JWKS refetch.
        let unknown = signed(&spec, &rsa_key(other_pem, "k2"), rs256.clone());
        let client = client(vec![trusted_key().as_verification_key()]);
        let err = verify_with(&client, &unknown, &Nonce::new("n-1".into())).unwrap_err();
        assert!(
            matches!(
                err,
                ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey
                )
            ),
            "{err:?}"
        );
        // Another key claiming the trusted kid: the signature does not verify.
        let forged = signed(&spec, &rsa_key(other_pem, "k1"), rs256);
        assert!(check(&forged).is_err());
        // HS256 with the client secret: symmetric algorithms are not accepted.
        let hs = signed(
            &spec,
            &CoreHmacKey::new(SECRET),
            CoreJwsSigningAlgorithm::HmacSha256,
        );
        assert!(check(&hs).is_err(), "HS256 accepted");
        // alg none: refused whether or not it even parses.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&spec)).unwrap());
        let none =
            serde_json::from_value::<CoreIdToken>(Value::String(format!("{header}.{payload}.")));
        if let Ok(token) = none {
            assert!(check(&token).is_err(), "alg none accepted");
        }
    }

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
