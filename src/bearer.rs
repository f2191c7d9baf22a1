//! Bearer-JWT callers: `Authorization: Bearer <JWT>` issued by the issuers routes name.
//!
//! A token is verified once (signature by a key from its issuer's JWKS, accepted algorithm,
//! `exp`/`nbf`) and then cached by its SHA-256 until it expires, so a repeated token costs a
//! hash and a map lookup. What depends on the route (issuer, audience, token type, scopes) is
//! checked by [`crate::decision`] on the cached claims, every time.
//!
//! `(iss, sub)` is looked up in the identities table; the answer (a user, or none) is cached
//! like a session and dropped by the same revocations.
//!
//! Each issuer's keys come from `[[issuer]] jwks_uri` or from its discovery document. They are
//! fetched at start-up and refreshed in the background; an unknown `kid` triggers at most one
//! refetch a minute; keys stay in use while the issuer is unreachable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use moka::sync::Cache;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use url::Url;
use uuid::Uuid;

use crate::config::{IssuerConfig, Settings};
use crate::identity::{Identity, MintSlot, Principal, SignedIn, VerifiedToken};
use crate::jwt::{self, JwksCache, JwtError};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::strength::Authentication;
use crate::tokens::Minter;

pub const ISSUER_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-issuer");
pub const SUBJECT_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-subject");
pub const SCOPE_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-scope");

/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Keys are refreshed in the background this often.
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Tokens longer than this are refused unread.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// The token cannot be accepted: 401 `invalid_token`.
    #[error("{0}")]
    Invalid(String),
    /// The issuer's keys cannot be had right now: 503.
    #[error("cannot verify the token now: {0}")]
    Unavailable(String),
}

/// The `Authorization` header of a request, as far as bearer routes care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No `Authorization: Bearer`.
    None,
    Token(&'a str),
    /// Repeated, or not a well-formed bearer credential.
    Malformed(&'static str),
}

/// Reads `Authorization: Bearer <token>`. Another scheme (`Basic`) counts as no bearer token.
pub fn presented(headers: &HeaderMap) -> Presented<'_> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Presented::None;
    };
    if values.next().is_some() {
        return Presented::Malformed("more than one Authorization header");
    }
    let Ok(value) = value.to_str() else {
        return Presented::Malformed("the Authorization header is not text");
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Presented::None;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Presented::None;
    }
    let token = token.trim();
    // RFC 6750 b64token, which every JWT is.
    let well_formed = !token.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if well_formed {
        Presented::Token(token)
    } else {
        Presented::Malformed("the bearer token is not well-formed")
    }
}

/// Where one issuer's keys come from.
struct IssuerKeys {
    issuer: String,
    /// `[[issuer]] jwks_uri`, else found by discovery.
    configured: Option<Url>,
    http: reqwest::Client,
    jwks: OnceCell<Arc<JwksCache>>,
}

impl IssuerKeys {
    async fn cache(&self) -> Result<&Arc<JwksCache>, BearerError> {
        self.jwks
            .get_or_try_init(|| async {
                let uri = match &self.configured {
                    Some(uri) => uri.clone(),
                    None => discover_jwks_uri(&self.http, &self.issuer).await?,
                };
                Ok(Arc::new(JwksCache::new(
                    uri,
                    self.http.clone(),
                    JWKS_REFETCH_INTERVAL,
                    JWKS_REFRESH_INTERVAL,
                )))
            })
            .await
    }
}

async fn discover_jwks_uri(http: &reqwest::Client, issuer: &str) -> Result<Url, BearerError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let unavailable = |e: String| BearerError::Unavailable(format!("discovery of {issuer}: {e}"));
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if !response.status().is_success() {
        return Err(unavailable(format!("status {}", response.status())));
    }
    let body = jwt::jwks::read_capped(response, 256 * 1024)
        .await
        .map_err(unavailable)?;
    let document: Value = serde_json::from_slice(&body).map_err(|e| unavailable(e.to_string()))?;
    // The document must be the issuer's own (OIDC Discovery §4.3).
    if document.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(unavailable(
            "the discovery document names another issuer".into(),
        ));
    }
    document
        .get("jwks_uri")
        .and_then(Value::as_str)
        .and_then(|u| Url::parse(u).ok())
        .filter(|u| matches!(u.scheme(), "https" | "http"))
        .ok_or_else(|| unavailable("no jwks_uri".into()))
}

#[derive(Clone)]
enum CachedUser {
    Unknown,
    Known {
        user: Arc<SignedIn>,
        org_requires_mfa: bool,
    },
}

/// Every issuer some route of `settings` accepts bearer tokens from (with repeats).
fn route_issuers(settings: &Settings) -> impl Iterator<Item = &String> {
    settings
        .policy
        .routes()
        .iter()
        .filter_map(|r| r.bearer.as_ref())
        .flat_map(|b| b.issuers.iter())
}

/// The bearer service: verification with a cache, and `(iss, sub)` → local user.
pub struct Bearer {
    issuers: HashMap<String, IssuerKeys>,
    /// gatehouse itself as an issuer (`public_url`): access tokens it signed for `[[client]]`
    /// apps, verified with the shared key ring directly (see [`Bearer::with_local_issuer`]).
    local: Option<Arc<Minter>>,
    tokens: Cache<[u8; 32], Arc<VerifiedToken>>,
    users: Cache<Arc<(String, String)>, CachedUser>,
    store: Store,
    metrics: Arc<Metrics>,
    /// Bumped by every `forget*`, like the session cache's.
    generation: AtomicU64,
}

/// Per-entry expiry: a verified token is cached until its `exp`.
struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<VerifiedToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        token: &Arc<VerifiedToken>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let left = token
            .expires_at
            .saturating_add(LEEWAY_SECONDS as i64)
            .saturating_sub(crate::clock::unix_now());
        Some(Duration::from_secs(u64::try_from(left.max(0)).unwrap_or(0)))
    }
}

impl Bearer {
    /// Every issuer some route accepts, with `[[issuer]]` overrides.
    pub fn new(
        settings: &Settings,
        store: Store,
        metrics: Arc<Metrics>,
        http: reqwest::Client,
    ) -> Self {
        let overrides: HashMap<&str, &IssuerConfig> = settings
            .issuers
            .iter()
            .map(|i| (i.issuer.as_str(), i))
            .collect();
        let issuers = route_issuers(settings)
            .map(|issuer| {
                (
                    issuer.clone(),
                    IssuerKeys {
                        issuer: issuer.clone(),
                        configured: overrides.get(issuer.as_str()).map(|o| o.jwks_uri.clone()),
                        http: http.clone(),
                        jwks: OnceCell::new(),
                    },
                )
            })
            .collect();
        Self {
            issuers,
            local: None,
            tokens: Cache::builder()
                .max_capacity(settings.session.cache_max_entries)
                .expire_after(UntilExpiry)
                .build(),
            users: Cache::builder()
                .max_capacity(settings.session.cache_max_entries)
                .time_to_live(Duration::from_secs(settings.session.cache_ttl_seconds))
                .support_invalidation_closures()
                .build(),
            store,
            metrics,
            generation: AtomicU64::new(0),
        }
    }

    /// Accepts gatehouse's own access tokens (issuer `public_url`, RFC 9068 `typ: at+jwt`),
    /// verified with `minter`'s keys in memory: no HTTP fetch of our own JWKS, and a key
    /// rotated in the database verifies once this replica has re-read the keys (every 10 s,
    /// when the CLI asks, or when a token names a `kid` it does not know yet).
    pub fn with_local_issuer(mut self, minter: Arc<Minter>) -> Self {
        self.issuers.remove(minter.issuer());
        self.local = Some(minter);
        self
    }

    fn local_issuer(&self, issuer: &str) -> Option<&Arc<Minter>> {
        self.local.as_ref().filter(|m| m.issuer() == issuer)
    }

    /// Bearer issuers that routes in `settings` accept and this service does not know: their
    /// keys are fetched from start-up on, so adding one needs a restart.
    pub fn unknown_issuers(&self, settings: &Settings) -> Vec<String> {
        let mut unknown: Vec<String> = route_issuers(settings)
            .filter(|issuer| !self.issuers.contains_key(issuer.as_str()))
            .filter(|issuer| self.local_issuer(issuer).is_none())
            .cloned()
            .collect();
        unknown.sort();
        unknown.dedup();
        unknown
    }

    /// Fetches every issuer's keys now, then refreshes them every `interval`, until the
    /// process ends. A failure is logged and retried on the next round (sooner at first).
    pub async fn keep_keys_fresh(self: Arc<Self>, interval: Duration) {
        // One task per issuer: an issuer that never answers delays no other.
        for issuer in self.issuers.keys() {
            let (this, issuer) = (self.clone(), issuer.clone());
            tokio::spawn(async move { this.keep_issuer_fresh(&issuer, interval).await });
        }
    }

    async fn keep_issuer_fresh(&self, issuer: &str, interval: Duration) {
        let mut retry = Duration::from_secs(1);
        while let Err(e) = self.refresh(issuer).await {
            tracing::warn!(issuer = %issuer, error = %e, "issuer keys not fetched yet; retrying");
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(interval);
        }
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh(issuer).await {
                tracing::warn!(issuer = %issuer, error = %e, "issuer keys not refreshed; keeping the last ones");
            }
        }
    }

    async fn refresh(&self, issuer: &str) -> Result<(), BearerError> {
        let Some(keys) = self.issuers.get(issuer) else {
            return Ok(());
        };
        let result = match keys.cache().await {
            Ok(cache) => cache.refresh().await.map(|_| ()).map_err(unavailable),
            Err(e) => Err(e),
        };
        self.metrics.record_jwks_refresh(result.is_ok());
        result
    }

    /// Verifies `token` (or finds it verified), without any route's rules.
    pub async fn verify(&self, token: &str, now: i64) -> Result<Arc<VerifiedToken>, BearerError> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(verified) = self.tokens.get(&hash) {
            if verified.expires_at.saturating_add(LEEWAY_SECONDS as i64) <= now {
                self.tokens.invalidate(&hash);
                return Err(BearerError::Invalid("the token has expired".into()));
            }
            if self.key_still_published(&verified) {
                self.metrics.bearer_cache_hit();
                return Ok(verified);
            }
            // The issuer withdrew the key: verify again (against the keys it publishes now).
            self.tokens.invalidate(&hash);
        }
        self.metrics.bearer_cache_miss();
        let verified = Arc::new(self.verify_uncached(token, &hash).await?);
        self.tokens.insert(hash, verified.clone());
        Ok(verified)
    }

    /// Whether the key a cached token was verified with is still in its issuer's JWKS.
    fn key_still_published(&self, token: &VerifiedToken) -> bool {
        if let Some(local) = self.local_issuer(&token.issuer) {
            return local.verification_keys().has(token.kid.as_deref());
        }
        self.issuers
            .get(&token.issuer)
            .and_then(|keys| keys.jwks.get())
            .and_then(|cache| cache.current())
            .is_some_and(|current| current.has(token.kid.as_deref()))
    }

    async fn verify_uncached(
        &self,
        token: &str,
        hash: &[u8; 32],
    ) -> Result<VerifiedToken, BearerError> {
        // Which issuer's keys to use: read unverified, then required to match after.
        #[derive(Deserialize)]
        struct IssuerOnly {
            iss: String,
        }
        let claimed = jsonwebtoken::dangerous::insecure_decode_claims::<IssuerOnly>(token)
            .map_err(|_| BearerError::Invalid("not a JWT with an issuer".into()))?
            .iss;
        if let Some(local) = self.local_issuer(&claimed) {
            return self.verify_local(token, hash, local).await;
        }
        let Some(keys) = self.issuers.get(&claimed) else {
            return Err(BearerError::Invalid(format!(
                "tokens from issuer {claimed:?} are not accepted"
            )));
        };
        let cache = keys.cache().await?;
        let current = cache.keys().await.map_err(unavailable)?;
        let expect = jwt::Expect {
            issuer: &claimed,
            audiences: None,
            leeway_seconds: LEEWAY_SECONDS,
            subject_required: true,
        };
        self.metrics.bearer_verification();
        let verified = match jwt::verify::<AccessClaims>(token, &current, &expect) {
            Err(JwtError::UnknownKey(_)) => {
                let refreshed = cache
                    .refetch_for_unknown_key(&current)
                    .await
                    .map_err(unavailable)?;
                jwt::verify::<AccessClaims>(token, &refreshed, &expect)
            }
            other => other,
        }
        .map_err(|e| BearerError::Invalid(e.to_string()))?;
        VerifiedToken::new(verified.header_typ, verified.kid, verified.claims, hash)
    }

    /// One of gatehouse's own access tokens. Only those declared access tokens (`typ: at+jwt`)
    /// are accepted: the minted `x-gatehouse-jwt` has the same issuer and keys, and an
    /// upstream that receives one must not be able to present it at the edge as a credential.
    async fn verify_local(
        &self,
        token: &str,
        hash: &[u8; 32],
        local: &Minter,
    ) -> Result<VerifiedToken, BearerError> {
        let expect = jwt::Expect {
            issuer: local.issuer(),
            audiences: None,
            leeway_seconds: LEEWAY_SECONDS,
            subject_required: true,
        };
        self.metrics.bearer_verification();
        let verified =
            match jwt::verify::<AccessClaims>(token, &local.verification_keys(), &expect) {
                Err(JwtError::UnknownKey(_)) => {
                    // Another replica may have rotated a moment ago: re-read the key table.
                    local
                        .reload_for_unknown_key()
                        .await
                        .map_err(|e| BearerError::Unavailable(e.to_string()))?;
                    jwt::verify::<AccessClaims>(token, &local.verification_keys(), &expect)
                }
                other => other,
            }
            .map_err(|e| BearerError::Invalid(e.to_string()))?;
        let declared_access_token = verified.header_typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !declared_access_token {
            return Err(BearerError::Invalid(
                "a gatehouse token that is not an access token (typ at+jwt)".into(),
            ));
        }
        VerifiedToken::new(verified.header_typ, verified.kid, verified.claims, hash)
    }

    /// The local user behind a verified token, if any (cached).
    pub async fn principal(&self, token: &VerifiedToken) -> Result<Option<Principal>, StoreError> {
        let user = match self.users.get(&token.identity) {
            Some(cached) => cached,
            None => self.load_user(token.identity.clone()).await?,
        };
        Ok(match user {
            CachedUser::Unknown => None,
            CachedUser::Known {
                user,
                org_requires_mfa,
            } => Some(Principal {
                user,
                sid: token.sid.clone(),
                minted: token.minted.clone(),
                expires_at: token.expires_at,
                auth: if org_requires_mfa {
                    Arc::new(Authentication {
                        org_requires_mfa,
                        ..(*token.auth).clone()
                    })
                } else {
                    token.auth.clone()
                },
            }),
        })
    }

    /// The user behind `key` (issuer, subject), from the store: each read through
    /// [`Store::request_read`], so a silent database fails the check closed in bounded time and
    /// is noticed.
    async fn load_user(&self, key: Arc<(String, String)>) -> Result<CachedUser, StoreError> {
        let now = crate::clock::unix_now();
        let mut loaded = CachedUser::Unknown;
        for _ in 0..2 {
            let before = self.generation.load(Ordering::SeqCst);
            let user = if self.local_issuer(&key.0).is_some() {
                // gatehouse's own tokens name the local user id, not an IdP subject.
                match Uuid::parse_str(&key.1) {
                    Ok(id) => {
                        let store = self.store.clone();
                        let lookup = async move { store.user_by_id(id).await };
                        self.store.request_read("user lookup", now, lookup).await?
                    }
                    Err(_) => None,
                }
            } else {
                let (store, key) = (self.store.clone(), key.clone());
                let lookup = async move { store.user_by_identity(&key.0, &key.1).await };
                self.store
                    .request_read("identity lookup", now, lookup)
                    .await?
            };
            loaded = match user {
                None => CachedUser::Unknown,
                Some(u) => {
                    let org_requires_mfa = match u.org_id {
                        Some(org) => {
                            let store = self.store.clone();
                            let lookup = async move { store.org_requires_mfa(org).await };
                            self.store.request_read("org lookup", now, lookup).await?
                        }
                        None => false,
                    };
                    CachedUser::Known {
                        user: Arc::new(SignedIn::new(Identity {
                            user_id: u.id,
                            email: u.email,
                            org_id: u.org_id,
                            roles: u.roles,
                            enabled: u.enabled,
                            impersonator_id: None,
                        })),
                        org_requires_mfa,
                    }
                }
            };
            // A revocation during the lookup may predate its answer: cache only a stable one.
            if self.generation.load(Ordering::SeqCst) == before {
                self.users.insert(key.clone(), loaded.clone());
                break;
            }
        }
        Ok(loaded)
    }

    /// Drops the cached user behind every token of `user_id`.
    pub fn forget_user(&self, user_id: Uuid) {
        // The generation first (see `Sessions::forget`).
        self.generation.fetch_add(1, Ordering::SeqCst);
        let result = self.users.invalidate_entries_if(move |_, cached| {
            matches!(cached, CachedUser::Known { user, .. } if user.identity.user_id == user_id)
        });
        if result.is_err() {
            self.users.invalidate_all();
        }
    }

    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.users.invalidate_all();
    }
}

fn unavailable(e: JwtError) -> BearerError {
    BearerError::Unavailable(e.to_string())
}

/// `aud` is a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audiences {
    One(String),
    Many(Vec<String>),
}

/// The access-token claims gatehouse reads. Loose where issuers differ: `scope` is a
/// space-separated string (RFC 9068, Auth0), `scp` an array or a string (Okta, Entra ID).
#[derive(Debug, Deserialize)]
struct AccessClaims {
    iss: String,
    sub: String,
    #[serde(default)]
    aud: Option<Audiences>,
    exp: serde_json::Number,
    #[serde(default)]
    scope: Option<Value>,
    #[serde(default)]
    scp: Option<Value>,
    #[serde(default)]
    nonce: Option<Value>,
    #[serde(default)]
    at_hash: Option<Value>,
    #[serde(default)]
    c_hash: Option<Value>,
    /// Keycloak marks token types in a claim: `ID` for ID tokens.
    #[serde(default)]
    typ: Option<Value>,
    /// How the user authenticated, for step-up rules (RFC 9470: many IdPs copy these from
    /// the login into access tokens).
    #[serde(default)]
    amr: Option<Value>,
    #[serde(default)]
    acr: Option<Value>,
    #[serde(default)]
    auth_time: Option<Value>,
}

/// Building a [`VerifiedToken`] from the claims of a token whose signature checked out.
impl VerifiedToken {
    fn new(
        header_typ: Option<String>,
        kid: Option<String>,
        c: AccessClaims,
        hash: &[u8; 32],
    ) -> Result<Self, BearerError> {
        let words = |v: &Value| -> Vec<String> {
            match v {
                Value::String(s) => s.split_whitespace().map(String::from).collect(),
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let mut scopes: Vec<String> = c.scope.iter().chain(c.scp.iter()).flat_map(words).collect();
        scopes.sort();
        scopes.dedup();
        let declared_access_token = header_typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        let id_token_claims = c.nonce.is_some()
            || c.at_hash.is_some()
            || c.c_hash.is_some()
            || c.typ.as_ref().and_then(Value::as_str) == Some("ID");
        let audiences = match c.aud {
            None => Vec::new(),
            Some(Audiences::One(a)) => vec![a],
            Some(Audiences::Many(list)) => list,
        };
        // Values an upstream could not tell apart (two subjects both sent as "") are refused.
        let value = |claim: &str, s: &str| {
            HeaderValue::from_str(s).map_err(|_| {
                BearerError::Invalid(format!("the {claim} claim cannot be sent as a header"))
            })
        };
        let headers = vec![
            (ISSUER_HEADER, value("iss", &c.iss)?),
            (SUBJECT_HEADER, value("sub", &c.sub)?),
            (SCOPE_HEADER, value("scope", &scopes.join(" "))?),
        ];
        let sid: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let mut amr = c.amr.as_ref().map(words).unwrap_or_default();
        amr.sort();
        amr.dedup();
        let auth = Authentication {
            idp: None,
            amr,
            acr: c.acr.as_ref().and_then(Value::as_str).map(String::from),
            auth_time: c.auth_time.as_ref().and_then(Value::as_i64),
            org_requires_mfa: false,
        };
        Ok(Self {
            auth: Arc::new(auth),
            identity: Arc::new((c.iss.clone(), c.sub.clone())),
            kid,
            issuer: c.iss,
            subject: c.sub,
            audiences,
            scopes,
            // `as` saturates: an absurd exp becomes i64::MAX, and every use saturates too.
            expires_at: c.exp.as_f64().map_or(0, |e| e as i64),
            looks_like_id_token: id_token_claims && !declared_access_token,
            headers,
            sid: sid.into(),
            minted: Arc::new(MintSlot::default()),
        })
    }
}

#[cfg(test)]
impl VerifiedToken {
    /// A token with these claims, for decision tables.
    pub fn for_tests(iss: &str, aud: &[&str], scopes: &[&str], looks_like_id_token: bool) -> Self {
        let claims = serde_json::json!({
            "iss": iss, "sub": "sub-1", "aud": aud, "exp": i64::MAX / 2, "scope": scopes.join(" "),
        });
        let mut token = Self::new(
            None,
            None,
            serde_json::from_value(claims).expect("claims"),
            &[0; 32],
        )
        .expect("valid claims");
        token.looks_like_id_token = looks_like_id_token;
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_header_table() {
        let cases: &[(&[&str], Presented<'_>)] = &[
            (&[], Presented::None),
            (&["Basic dXNlcjpwdw=="], Presented::None),
            (&["Bearer abc.def.ghi"], Presented::Token("abc.def.ghi")),
            (&["bearer  abc.def.ghi "], Presented::Token("abc.def.ghi")),
            (&["Bearer"], Presented::None),
            (
                &["Bearer a b"],
                Presented::Malformed("the bearer token is not well-formed"),
            ),
            (
                &["Bearer a\"b"],
                Presented::Malformed("the bearer token is not well-formed"),
            ),
            (
                &["Bearer a.b.c", "Bearer d.e.f"],
                Presented::Malformed("more than one Authorization header"),
            ),
        ];
        for (values, want) in cases {
            let mut headers = HeaderMap::new();
            for v in *values {
                headers.append(http::header::AUTHORIZATION, v.parse().unwrap());
            }
            assert_eq!(presented(&headers), *want, "{values:?}");
        }
    }

    #[test]
    fn claims_become_scopes_and_token_types() {
        let claims = |v: Value| serde_json::from_value::<AccessClaims>(v).unwrap();
        let base = serde_json::json!({"iss": "https://i/", "sub": "s", "exp": 10});
        let with = |extra: Value| {
            let mut v = base.clone();
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        let t = VerifiedToken::new(
            None,
            None,
            claims(with(serde_json::json!({"scope": "read write read"}))),
            &[0; 32],
        )
        .unwrap();
        assert_eq!(t.scopes, vec!["read", "write"]);
        assert!(!t.looks_like_id_token);
        let t = VerifiedToken::new(
            None,
            None,
            claims(with(
                serde_json::json!({"scp": ["a", "b"], "aud": ["x", "y"]}),
            )),
            &[0; 32],
        )
        .unwrap();
        assert_eq!(
            (t.scopes.clone(), t.audiences.clone()),
            (vec!["a".into(), "b".into()], vec!["x".into(), "y".into()])
        );
        let t = VerifiedToken::new(
            None,
            None,
            claims(with(serde_json::json!({"nonce": "n", "aud": "client"}))),
            &[0; 32],
        )
        .unwrap();
        assert!(t.looks_like_id_token);
        let t = VerifiedToken::new(
            Some("at+jwt".into()),
            None,
            claims(with(serde_json::json!({"nonce": "n"}))),
            &[0; 32],
        )
        .unwrap();
        assert!(!t.looks_like_id_token, "declared an access token");
        let t = VerifiedToken::new(
            None,
            None,
            claims(with(serde_json::json!({"typ": "ID"}))),
            &[0; 32],
        )
        .unwrap();
        assert!(t.looks_like_id_token);
        assert_eq!(t.sid.len(), 16);
    }
}
