//! Signing keys for minted tokens, shared by every replica through the database.

use super::{BackendKind, Store, StoreError, with_pool, with_write_tx};

/// The advisory lock key that serializes creating the first signing key (PostgreSQL): any
/// constant gatehouse uses for nothing else.
const FIRST_KEY_LOCK: i64 = 0x6761_7465_6b65_7931; // "gatekey1"

/// How far apart two replicas' clocks (and start moments) may be when they race to create the
/// first key.
pub const START_SKEW_SECONDS: i64 = 60;

/// A stored key; the private part is encrypted (see [`crate::tokens::keys`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: String,
    pub public_jwk: String,
    pub private_key: String,
    pub created_at: i64,
    pub activates_at: i64,
}

impl Store {
    pub async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, public_jwk, private_key, created_at, \
                 activates_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&key.kid)
            .bind(&key.algorithm)
            .bind(&key.public_jwk)
            .bind(&key.private_key)
            .bind(key.created_at)
            .bind(key.activates_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Stores `key` unless a key is active already, or about to be (within
    /// [`START_SKEW_SECONDS`] of `key.created_at`: another replica's first key, made a moment
    /// later by its clock, counts); true if it was stored. Replicas starting
    /// together on an empty database race here, and exactly one of them may create the first
    /// key: PostgreSQL serializes them with a transaction-scoped advisory lock (a plain "insert
    /// where none exists" lets two through under READ COMMITTED), SQLite with its write lock.
    pub async fn insert_first_signing_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        let postgres = self.kind() == BackendKind::Postgres;
        let inserted = with_write_tx!(self, |tx| {
            if postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(FIRST_KEY_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, public_jwk, private_key, created_at, \
                 activates_at) SELECT $1, $2, $3, $4, $5, $6 \
                 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE activates_at <= $7)",
            )
            .bind(&key.kid)
            .bind(&key.algorithm)
            .bind(&key.public_jwk)
            .bind(&key.private_key)
            .bind(key.created_at)
            .bind(key.activates_at)
            .bind(key.created_at + START_SKEW_SECONDS)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Every key, oldest activation first (and, within a second, oldest first).
    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let keys = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT kid, algorithm, public_jwk, private_key, created_at, activates_at \
                 FROM signing_keys ORDER BY activates_at, seq",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(keys)
    }

    pub async fn delete_signing_keys(&self, kids: &[String]) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for kid in kids {
            deleted += with_pool!(self, |pool| {
                sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                    .bind(kid)
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
        }
        Ok(deleted)
    }
}
