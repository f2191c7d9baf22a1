//! Logins in progress: created at `/auth/login`, consumed exactly once at `/auth/callback`.
//!
//! Starting a login costs an attacker one request, so pending logins are capped per browser
//! binding and per client address: a new one evicts the oldest beyond the cap. Expired ones
//! are pruned by the housekeeping task.

use super::{Store, StoreError, with_pool};

#[derive(Debug, Clone)]
pub struct NewLoginState {
    /// Hex SHA-256 of the `state` parameter.
    pub state_hash: String,
    /// Hex SHA-256 of the browser-binding cookie.
    pub binding_hash: String,
    /// The client's address group (its IPv4 address or IPv6 /64), when known.
    pub client_ip: Option<String>,
    pub nonce: String,
    pub pkce_verifier: String,
    pub idp: String,
    pub redirect_to: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// Started with `signup=1`: a new user from an unknown domain may be provisioned.
    pub signup: bool,
    /// A step-up login: what the ID token must show (JSON of [`crate::strength::StepUp`]).
    pub step_up: Option<String>,
    /// The account it is for, when known (`login_hint`, or the signed-in user stepping up).
    pub account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LoginState {
    pub nonce: String,
    pub pkce_verifier: String,
    pub idp: String,
    pub redirect_to: String,
    pub created_at: i64,
    pub signup: bool,
    pub step_up: Option<String>,
    pub account: Option<String>,
}

/// How many logins may be pending at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLoginCaps {
    /// Per browser binding: one per open tab is plenty.
    pub per_browser: i64,
    /// Per client address: a script that never sends the binding cookie back gets a new
    /// binding every time, so this is what bounds it.
    pub per_client: i64,
}

impl Store {
    /// Records a started login, then evicts the oldest pending logins of its browser binding
    /// and of its client address beyond `caps`. Eviction is best effort and separate from the
    /// insert: concurrent starts from one client may contend for the same rows (PostgreSQL can
    /// report a deadlock), and that must not fail a login; the next start trims again.
    pub async fn insert_login_state(
        &self,
        s: &NewLoginState,
        caps: PendingLoginCaps,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO login_states (state_hash, binding_hash, client_ip, nonce, \
                 pkce_verifier, idp, redirect_to, created_at, expires_at, signup, step_up, \
                 account) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&s.state_hash)
            .bind(&s.binding_hash)
            .bind(s.client_ip.as_deref())
            .bind(&s.nonce)
            .bind(&s.pkce_verifier)
            .bind(&s.idp)
            .bind(&s.redirect_to)
            .bind(s.created_at)
            .bind(s.expires_at)
            .bind(s.signup)
            .bind(s.step_up.as_deref())
            .bind(s.account.as_deref())
            .execute(pool)
            .await?;
        });
        for attempt in 1..=3 {
            match self.evict_pending_logins(s, caps).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() && attempt < 3 => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "could not trim pending logins; the next start will");
                    break;
                }
            }
        }
        Ok(())
    }

    async fn evict_pending_logins(
        &self,
        s: &NewLoginState,
        caps: PendingLoginCaps,
    ) -> Result<(), StoreError> {
        // Keeps the newest `$2` rows of a group: deletes every row at or below the seq of the
        // first one past them (no such row: nothing to delete).
        const EVICT_BY_BINDING: &str = "DELETE FROM login_states WHERE binding_hash = $1 \
             AND seq <= (SELECT seq FROM login_states WHERE binding_hash = $1 \
                         ORDER BY seq DESC LIMIT 1 OFFSET $2)";
        const EVICT_BY_CLIENT: &str = "DELETE FROM login_states WHERE client_ip = $1 \
             AND seq <= (SELECT seq FROM login_states WHERE client_ip = $1 \
                         ORDER BY seq DESC LIMIT 1 OFFSET $2)";
        with_pool!(self, |pool| {
            sqlx::query(EVICT_BY_BINDING)
                .bind(&s.binding_hash)
                .bind(caps.per_browser)
                .execute(pool)
                .await?;
            if let Some(ip) = &s.client_ip {
                sqlx::query(EVICT_BY_CLIENT)
                    .bind(ip)
                    .bind(caps.per_client)
                    .execute(pool)
                    .await?;
            }
        });
        Ok(())
    }

    /// Deletes and returns the login state for this `state`, but only for the browser that
    /// started it and only before it expires. A single atomic statement, so a replayed or
    /// concurrent callback finds nothing. A state presented by another browser is left alone,
    /// so an attacker cannot burn a victim's login.
    pub async fn consume_login_state(
        &self,
        state_hash: &str,
        binding_hash: &str,
        now: i64,
    ) -> Result<Option<LoginState>, StoreError> {
        let state = with_pool!(self, |pool| {
            sqlx::query_as(
                "DELETE FROM login_states \
                 WHERE state_hash = $1 AND binding_hash = $2 AND expires_at > $3 \
                 RETURNING nonce, pkce_verifier, idp, redirect_to, created_at, signup, step_up, \
                 account",
            )
            .bind(state_hash)
            .bind(binding_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(state)
    }

    /// Whether a login state exists for this `state` at all (any browser): only to tell a
    /// replay from a state that never existed in the audit detail.
    pub async fn login_state_exists(&self, state_hash: &str) -> Result<bool, StoreError> {
        let row: Option<(String,)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT state_hash FROM login_states WHERE state_hash = $1")
                .bind(state_hash)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.is_some())
    }
}
