//! The shared list of revocations that cached sessions must not outlive.
//!
//! Whoever disables a user, revokes sessions or changes roles (a replica or the CLI) adds a row
//! in the same transaction. Every replica reads new rows (polling, woken early by PostgreSQL
//! `NOTIFY` or by the CLI) and drops the matching cache entries.

use uuid::Uuid;

use super::{Store, StoreError, with_pool};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Revocation {
    pub id: i64,
    /// `None`: every session.
    pub user_id: Option<Uuid>,
    pub created_at: i64,
}

pub(super) const INSERT_REVOCATION: &str =
    "INSERT INTO revocations (user_id, created_at) VALUES ($1, $2)";

/// Adds a revocation for `$user_id` (`Option<Uuid>`) at `$now` on `$conn`.
macro_rules! insert_revocation {
    ($conn:expr, $user_id:expr, $now:expr) => {{
        let user_id: Option<uuid::Uuid> = $user_id;
        sqlx::query($crate::store::revocations::INSERT_REVOCATION)
            .bind(user_id)
            .bind($now)
            .execute($conn)
            .await?;
    }};
}
pub(crate) use insert_revocation;

impl Store {
    /// Revocations created at or after `since` (Unix seconds), oldest first. Readers re-read a
    /// window rather than "after the last id", because with concurrent writers ids can commit
    /// out of order.
    pub async fn revocations_since(&self, since: i64) -> Result<Vec<Revocation>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, user_id, created_at FROM revocations WHERE created_at >= $1 ORDER BY id",
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
        with_pool!(self, |pool| insert_revocation!(pool, user_id, now));
        Ok(())
    }
}
