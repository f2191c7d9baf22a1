//! Logins in progress: created at `/auth/login`, consumed exactly once at `/auth/callback`.

use super::{Store, StoreError, with_pool};

#[derive(Debug, Clone)]
pub struct NewLoginState {
    /// Hex SHA-256 of the `state` parameter.
    pub state_hash: String,
    /// Hex SHA-256 of the browser-binding cookie.
    pub binding_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub idp: String,
    pub redirect_to: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LoginState {
    pub nonce: String,
    pub pkce_verifier: String,
    pub idp: String,
    pub redirect_to: String,
    pub created_at: i64,
}

impl Store {
    pub async fn insert_login_state(&self, s: &NewLoginState) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO login_states (state_hash, binding_hash, nonce, pkce_verifier, idp, \
                 redirect_to, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&s.state_hash)
            .bind(&s.binding_hash)
            .bind(&s.nonce)
            .bind(&s.pkce_verifier)
            .bind(&s.idp)
            .bind(&s.redirect_to)
            .bind(s.created_at)
            .bind(s.expires_at)
            .execute(pool)
            .await?;
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
                 RETURNING nonce, pkce_verifier, idp, redirect_to, created_at",
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
