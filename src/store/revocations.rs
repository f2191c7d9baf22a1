//! The shared list of revocations that cached sessions must not outlive.
//!
//! Whoever disables a user, revokes sessions or changes roles (a replica or the CLI) adds a row
//! in the same transaction. Every replica reads new rows (polling, woken early by PostgreSQL
//! `NOTIFY` or by the CLI) and drops the matching cache entries.

use uuid::Uuid;

use super::sql::insert_revocation;
use super::{Store, StoreError, with_pool};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Revocation {
    pub id: i64,
    pub user_id: Option<Uuid>,
    /// Hex SHA-256 of one session's token: only that session.
    pub session_hash: Option<String>,
    pub created_at: i64,
}

/// What a revocation covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationScope {
    Session(String),
    User(Uuid),
    Everyone,
}

impl Revocation {
    pub fn scope(&self) -> RevocationScope {
        match (&self.session_hash, self.user_id) {
            (Some(hash), _) => RevocationScope::Session(hash.clone()),
            (None, Some(user)) => RevocationScope::User(user),
            (None, None) => RevocationScope::Everyone,
        }
    }
}

impl Store {
    /// Revocations created at or after `since` (Unix seconds), oldest first. Readers re-read a
    /// window rather than "after the last id", because with concurrent writers ids can commit
    /// out of order.
    pub async fn revocations_since(&self, since: i64) -> Result<Vec<Revocation>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, user_id, session_hash, created_at FROM revocations \
                 WHERE created_at >= $1 ORDER BY id",
            )
            .bind(since)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Adds a revocation outside any other transaction.
    pub async fn publish_revocation(
        &self,
        user_id: Option<Uuid>,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| insert_revocation!(pool, user_id, None, now));
        Ok(())
    }
}
