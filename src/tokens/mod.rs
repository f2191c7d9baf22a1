//! The token gatehouse mints for upstreams (`x-gatehouse-jwt`): the local identity (stable user
//! UUID, org, roles) signed by a key every replica shares, so a service behind the proxy can
//! trust one token instead of a set of headers.
//!
//! A token is minted once per session (or bearer token) and re-used until a third of its
//! lifetime is left: a check on a cached session does no signing. `/.well-known/jwks.json`
//! publishes the keys; see [`keys`] for their lifecycle.

pub mod keys;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::HeaderValue;
use jsonwebtoken::Header;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::Settings;
use crate::identity::{Minted, Principal};
use crate::jwt::KeySet;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
pub use keys::{KeyError, KeyVault, SigningKey};

/// Replicas re-read the key table this often (and when the CLI asks them to).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// How far a replica may lag behind the key table: added to every key-timing margin.
const RELOAD_LAG_SECONDS: i64 = RELOAD_INTERVAL.as_secs() as i64;
/// A token naming an unknown `kid` re-reads the key table at most this often.
const UNKNOWN_KID_RELOAD: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no signing key is active")]
    NoKey,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The claims of a minted token (DESIGN.md).
#[derive(Debug, Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: Uuid,
    aud: &'a str,
    iat: i64,
    exp: i64,
    email: &'a str,
    org: Option<Uuid>,
    roles: &'a [String],
    sid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<Actor>,
}

#[derive(Debug, Serialize)]
struct Actor {
    sub: Uuid,
}

/// The keys this replica knows, oldest activation first.
#[derive(Debug, Default)]
struct KeyRing {
    keys: Vec<Arc<SigningKey>>,
}

impl KeyRing {
    /// The key that signs at `now`: the last one whose activation has passed.
    fn current(&self, now: i64) -> Option<&Arc<SigningKey>> {
        self.keys.iter().rev().find(|k| k.activates_at <= now)
    }

    /// When each key stopped signing (its successor's activation), if it has.
    fn superseded_at(&self, index: usize, now: i64) -> Option<i64> {
        self.keys
            .get(index + 1..)
            .and_then(|later| later.iter().map(|k| k.activates_at).find(|at| *at <= now))
    }

    /// Keys verifiers need: every key not yet active, the current one, and retired ones whose
    /// tokens may still be alive.
    fn published(&self, now: i64, ttl: i64) -> Vec<&Arc<SigningKey>> {
        (0..self.keys.len())
            .filter(|&i| self.superseded_at(i, now).is_none_or(|at| at + ttl > now))
            .filter_map(|i| self.keys.get(i))
            .collect()
    }

    /// Keys whose every token has expired: safe to delete.
    fn expired(&self, now: i64, ttl: i64) -> Vec<String> {
        (0..self.keys.len())
            .filter(|&i| {
                self.superseded_at(i, now)
                    .is_some_and(|at| at + ttl + 60 < now)
            })
            .filter_map(|i| self.keys.get(i).map(|k| k.kid.clone()))
            .collect()
    }
}

/// Signs tokens with the shared keys.
pub struct Minter {
    store: Store,
    vault: KeyVault,
    settings: TokenSettings,
    ring: RwLock<Arc<KeyRing>>,
    /// The public keys of `ring`, for verifying gatehouse's own access tokens.
    verification: RwLock<Arc<KeySet>>,
    /// When an unknown `kid` last made this replica re-read the keys (rate limit).
    last_reload: std::sync::Mutex<Option<std::time::Instant>>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Clone)]
struct TokenSettings {
    issuer: String,
    audience: String,
    ttl: i64,
    /// How long a retired key stays published: the longest lifetime of anything it signs
    /// (minted tokens, and `[[client]]` apps' access tokens).
    retention: i64,
    algorithm: crate::config::SigningAlgorithm,
}

impl Minter {
    /// Loads the keys, creating the first one if there is none (on the first replica that
    /// starts). Fails when the encryption key is missing or cannot open the stored keys.
    pub async fn start(
        settings: &Settings,
        store: Store,
        metrics: Arc<Metrics>,
        now: i64,
    ) -> Result<Self, TokenError> {
        let secret = encryption_key(settings)?;
        let minter = Self {
            store,
            vault: KeyVault::new(&secret)?,
            settings: TokenSettings {
                issuer: settings.public_origin(),
                audience: settings.token.audience.clone(),
                ttl: i64::try_from(settings.token.ttl_seconds).unwrap_or(300),
                retention: i64::try_from(
                    settings
                        .token
                        .ttl_seconds
                        .max(settings.app_tokens.access_token_ttl_seconds),
                )
                .unwrap_or(86_400),
                algorithm: settings.token.algorithm,
            },
            ring: RwLock::new(Arc::new(KeyRing::default())),
            verification: RwLock::new(Arc::new(KeySet::default())),
            last_reload: std::sync::Mutex::new(None),
            metrics,
        };
        minter.reload().await?;
        if minter.ring().current(now).is_none() {
            let key = keys::generate(&minter.vault, minter.settings.algorithm, now, now)?;
            // Another replica starting at the same moment may win; then its key is the one.
            if minter.store.insert_first_signing_key(&key).await? {
                tracing::info!(kid = %key.kid, algorithm = %key.algorithm, "created the first token signing key");
            }
            minter.reload().await?;
        }
        Ok(minter)
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the key table (another replica or the CLI may have rotated).
    pub async fn reload(&self) -> Result<(), TokenError> {
        let stored = self.store.signing_keys().await?;
        let keys = stored
            .iter()
            .map(|s| keys::open(&self.vault, s).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        // Every key in the ring verifies: published ones, and retired ones until pruned.
        let document = json!({ "keys": keys.iter().map(|k| &k.public_jwk).collect::<Vec<_>>() });
        let verification = KeySet::from_json(document.to_string().as_bytes())
            .map_err(|e| TokenError::Sign(format!("public keys: {e}")))?;
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(KeyRing { keys });
        *self
            .verification
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(verification);
        Ok(())
    }

    /// The issuer of everything this minter signs: `public_url` without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// The public keys that verify tokens signed here (gatehouse's own access tokens).
    pub fn verification_keys(&self) -> Arc<KeySet> {
        self.verification
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the keys for a token naming a `kid` this replica does not know (another
    /// replica may have rotated a moment ago), at most once per [`UNKNOWN_KID_RELOAD`].
    /// Returns whether it re-read.
    pub async fn reload_for_unknown_key(&self) -> Result<bool, TokenError> {
        {
            let mut last = self
                .last_reload
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_RELOAD) {
                return Ok(false);
            }
            *last = Some(std::time::Instant::now());
        }
        self.reload().await?;
        Ok(true)
    }

    /// Signs an access token for a `[[client]]` app (RFC 9068: header `typ: at+jwt`) with the
    /// current key. `claims` carry `iss`, `sub`, `aud`, `exp` and the rest.
    pub fn sign_access_token(
        &self,
        claims: &impl Serialize,
        now: i64,
    ) -> Result<String, TokenError> {
        let ring = self.ring();
        let key = ring.current(now).ok_or(TokenError::NoKey)?;
        let mut header = Header::new(key.algorithm);
        header.kid = Some(key.kid.clone());
        header.typ = Some("at+jwt".to_owned());
        let token = jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        self.metrics.token_signed();
        Ok(token)
    }

    /// Reloads every [`RELOAD_INTERVAL`] and deletes keys whose tokens have all expired.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        loop {
            tick.tick().await;
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "could not reload token signing keys; keeping the loaded ones");
                continue;
            }
            let now = crate::clock::unix_now();
            let expired = self
                .ring()
                .expired(now, self.settings.retention + RELOAD_LAG_SECONDS);
            if !expired.is_empty() {
                match self.store.delete_signing_keys(&expired).await {
                    Ok(n) => tracing::info!(
                        keys = n,
                        "pruned token signing keys whose tokens have expired"
                    ),
                    Err(e) => tracing::warn!(error = %e, "could not prune signing keys"),
                }
            }
        }
    }

    /// The token for this principal: the cached one while more than a third of its lifetime
    /// is left and it was minted for the same user state, else a newly signed one.
    pub fn token_for(&self, principal: &Principal, now: i64) -> Result<HeaderValue, TokenError> {
        let mut slot = principal
            .minted
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(minted) = slot.as_ref()
            && Arc::ptr_eq(&minted.for_user, &principal.user)
            && minted.expires_at > now
            // A third of its lifetime left, or already as long as the credential allows.
            && ((minted.expires_at - now) * 3 > self.settings.ttl
                || minted.expires_at >= principal.expires_at)
        {
            return Ok(minted.value.clone());
        }
        let (value, expires_at) = self.sign(principal, now)?;
        *slot = Some(Box::new(Minted {
            for_user: principal.user.clone(),
            value: value.clone(),
            expires_at,
        }));
        Ok(value)
    }

    fn sign(&self, principal: &Principal, now: i64) -> Result<(HeaderValue, i64), TokenError> {
        let ring = self.ring();
        let key = ring.current(now).ok_or(TokenError::NoKey)?;
        let id = &principal.user.identity;
        // Never longer than the session or bearer token it stands for.
        let exp = now
            .saturating_add(self.settings.ttl)
            .min(principal.expires_at)
            .max(now + 1);
        let claims = Claims {
            iss: &self.settings.issuer,
            sub: id.user_id,
            aud: &self.settings.audience,
            iat: now,
            exp,
            email: &id.email,
            org: id.org_id,
            roles: &id.roles,
            sid: &principal.sid,
            act: id.impersonator_id.map(|sub| Actor { sub }),
        };
        let mut header = Header::new(key.algorithm);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        self.metrics.token_signed();
        let value = HeaderValue::from_str(&token).map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok((value, exp))
    }

    /// The JWKS document: every published key.
    pub fn jwks(&self, now: i64) -> Value {
        let ring = self.ring();
        let keys: Vec<&Value> = ring
            // A replica that has not reloaded yet may still sign with a retired key for up
            // to a reload interval.
            .published(now, self.settings.retention + RELOAD_LAG_SECONDS)
            .into_iter()
            .map(|k| &k.public_jwk)
            .collect();
        json!({ "keys": keys })
    }

    /// The discovery document for minted tokens.
    pub fn openid_configuration(&self) -> Value {
        let ring = self.ring();
        let mut algorithms: Vec<String> = ring
            .keys
            .iter()
            .map(|k| format!("{:?}", k.algorithm))
            .collect();
        algorithms.sort();
        algorithms.dedup();
        json!({
            "issuer": self.settings.issuer,
            "jwks_uri": format!("{}/.well-known/jwks.json", self.settings.issuer),
            "id_token_signing_alg_values_supported": algorithms,
            "subject_types_supported": ["public"],
            "response_types_supported": ["code"],
        })
    }
}

/// The configured encryption key, or an error saying what is missing.
fn encryption_key(settings: &Settings) -> Result<secrecy::SecretString, KeyError> {
    settings.token_encryption_key().ok_or_else(|| {
        KeyError::NoEncryptionKey(match &settings.token.encryption_key_env {
            Some(var) => format!("{var} (named by token.encryption_key_env) is not set"),
            None => "neither is set".to_owned(),
        })
    })
}

/// `gatehouse keys rotate`: adds a key, published at once. `at_once`: it signs now, and keys
/// scheduled but not yet active are withdrawn (an emergency rotation must not be overtaken);
/// otherwise it signs after `token.rotation_delay_seconds`, plus a reload interval so that
/// every replica has published it before any signs with it. Returns its kid and activation.
pub async fn rotate(
    settings: &Settings,
    store: &Store,
    now: i64,
    at_once: bool,
) -> Result<(String, i64), TokenError> {
    let activates_at = if at_once {
        now
    } else {
        let delay = i64::try_from(settings.token.rotation_delay_seconds).unwrap_or(60);
        now + delay + RELOAD_LAG_SECONDS
    };
    let secret = encryption_key(settings)?;
    let vault = KeyVault::new(&secret)?;
    // The stored keys must open with this encryption key, or every replica would fail.
    for stored in store.signing_keys().await? {
        keys::open(&vault, &stored)?;
    }
    if at_once {
        let pending: Vec<String> = store
            .signing_keys()
            .await?
            .into_iter()
            .filter(|k| k.activates_at > now)
            .map(|k| k.kid)
            .collect();
        store.delete_signing_keys(&pending).await?;
    }
    let key = keys::generate(&vault, settings.token.algorithm, now, activates_at)?;
    store.insert_signing_key(&key).await?;
    Ok((key.kid, activates_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, activates_at: i64) -> Arc<SigningKey> {
        Arc::new(SigningKey {
            kid: kid.into(),
            algorithm: jsonwebtoken::Algorithm::EdDSA,
            encoding: jsonwebtoken::EncodingKey::from_secret(b"unused"),
            public_jwk: json!({"kid": kid}),
            created_at: activates_at,
            activates_at,
        })
    }

    /// Keys a, b (from 100), c (from 200, pre-published), with a token lifetime of 50.
    #[test]
    fn key_lifecycle_table() {
        let ring = KeyRing {
            keys: vec![key("a", 0), key("b", 100), key("c", 200)],
        };
        let kids = |keys: Vec<&Arc<SigningKey>>| -> Vec<String> {
            keys.iter().map(|k| k.kid.clone()).collect()
        };
        // now, current, published, prunable
        let cases: &[(i64, &str, &[&str], &[&str])] = &[
            (50, "a", &["a", "b", "c"], &[]),
            (120, "b", &["a", "b", "c"], &[]),
            (160, "b", &["b", "c"], &[]),
            (230, "c", &["b", "c"], &["a"]),
            (260, "c", &["c"], &["a"]),
            (320, "c", &["c"], &["a", "b"]),
        ];
        for (now, current, published, prunable) in cases {
            assert_eq!(
                ring.current(*now).map(|k| k.kid.as_str()),
                Some(*current),
                "now={now}"
            );
            assert_eq!(kids(ring.published(*now, 50)), *published, "now={now}");
            assert_eq!(ring.expired(*now, 50), *prunable, "now={now}");
        }
        assert!(KeyRing::default().current(0).is_none());
    }
}
