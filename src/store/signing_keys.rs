//! Signing keys for minted tokens, shared by every replica through the database.

use super::{Store, StoreError, with_pool};

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
