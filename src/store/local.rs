//! Local sign-in's tables: credentials and lockout per user, sign-ins in progress (flows),
//! recovery codes and password resets. Every secret is stored as a hash (codes, links, flow
//! tokens, recovery codes), an argon2 PHC string (passwords) or sealed (TOTP secrets).

use uuid::Uuid;

use super::app_tokens::revoke_app_tokens_of_user;
use super::sql::{insert_audit, insert_revocation};
use super::{Actor, AuditEvent, AuditKind, Outcome, Store, StoreError, with_pool, with_write_tx};

/// A user's local credentials and lockout state.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Credentials {
    pub password_hash: Option<String>,
    pub totp_secret: Option<String>,
    pub totp_pending: Option<String>,
    pub failed_attempts: i64,
    pub locked_until: Option<i64>,
}

impl Credentials {
    pub fn locked_at(&self, now: i64) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }
}

/// A sign-in in progress.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Flow {
    pub token_hash: String,
    pub email: String,
    /// The `[[client]]` of an API flow; `None` for a browser's.
    pub client_id: Option<String>,
    pub redirect_to: Option<String>,
    pub signup: bool,
    pub code_hash: Option<String>,
    pub code_expires_at: Option<i64>,
    pub code_attempts: i64,
    /// `email` or `pwd`, once the first factor passed.
    pub first_factor: Option<String>,
    pub user_id: Option<Uuid>,
    pub failures: i64,
    pub expires_at: i64,
}

const FLOW_COLUMNS: &str = "token_hash, email, client_id, redirect_to, signup, code_hash, \
    code_expires_at, code_attempts, first_factor, user_id, failures, expires_at";

#[derive(Debug, Clone)]
pub struct NewFlow {
    pub token_hash: String,
    pub email: String,
    pub client_id: Option<String>,
    pub redirect_to: Option<String>,
    pub signup: bool,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A new password and what it ends.
#[derive(Debug, Clone)]
pub struct PasswordChange {
    pub user_id: Uuid,
    pub hash: String,
    /// `password_set`, `password_changed` or `password_reset`.
    pub kind: AuditKind,
    /// The session that made the change survives it (a change while signed in); every other
    /// session of the user ends, and so do their apps' refresh tokens.
    pub keep_session: Option<String>,
    /// A reset link consumed in the same transaction.
    pub reset_hash: Option<String>,
}

impl Store {
    // === credentials and lockout ===

    pub async fn credentials(&self, user_id: Uuid) -> Result<Credentials, StoreError> {
        let row: Option<Credentials> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT password_hash, totp_secret, totp_pending, failed_attempts, locked_until \
                 FROM local_credentials WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.unwrap_or_default())
    }

    /// Counts a failed local attempt. At `threshold` failures the account's local sign-in is
    /// blocked until `now + lock_seconds` (and the count starts again); returns `true` when
    /// this failure started a block, audited as `account_locked`.
    pub async fn record_local_failure(
        &self,
        user_id: Uuid,
        threshold: i64,
        lock_seconds: i64,
        event: &AuditEvent,
        now: i64,
    ) -> Result<bool, StoreError> {
        let locked = with_write_tx!(self, |tx| {
            ensure_row(&mut tx, user_id, now).await?;
            let (failures,): (i64,) = sqlx::query_as(
                "UPDATE local_credentials SET failed_attempts = failed_attempts + 1, \
                 updated_at = $2 WHERE user_id = $1 RETURNING failed_attempts",
            )
            .bind(user_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let locks = failures >= threshold;
            if locks {
                sqlx::query(
                    "UPDATE local_credentials SET failed_attempts = 0, locked_until = $2 \
                     WHERE user_id = $1",
                )
                .bind(user_id)
                .bind(now.saturating_add(lock_seconds))
                .execute(&mut *tx)
                .await?;
                insert_audit!(&mut *tx, event);
            }
            locks
        });
        Ok(locked)
    }

    /// A successful local sign-in clears the failure count.
    pub async fn clear_local_failures(&self, user_id: Uuid, now: i64) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE local_credentials SET failed_attempts = 0, updated_at = $2 \
                 WHERE user_id = $1 AND failed_attempts <> 0",
            )
            .bind(user_id)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Lifts a block (and the failure count), audited as `account_unlocked`. Returns whether
    /// there was a block to lift.
    pub async fn unlock_local(
        &self,
        user_id: Uuid,
        actor: impl Into<Actor>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let actor: Actor = actor.into();
        let was_locked = with_write_tx!(self, |tx| {
            let locked: Option<(Option<i64>,)> =
                sqlx::query_as("SELECT locked_until FROM local_credentials WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            sqlx::query(
                "UPDATE local_credentials SET failed_attempts = 0, locked_until = NULL, \
                 updated_at = $2 WHERE user_id = $1",
            )
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let event = AuditEvent::new(AuditKind::AccountUnlocked, Outcome::Success, now)
                .user(user_id)
                .by(&actor);
            insert_audit!(&mut *tx, &event);
            locked
                .and_then(|(until,)| until)
                .is_some_and(|until| until > now)
        });
        Ok(was_locked)
    }

    // === passwords ===

    /// Stores a new password; in the same transaction ends the user's other sessions and
    /// their apps' refresh tokens, consumes the reset link (if any), and audits the change.
    /// Returns `false` (and changes nothing) when the reset link was already used.
    pub async fn set_password(
        &self,
        change: &PasswordChange,
        event: &AuditEvent,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = with_write_tx!(self, |tx| {
            if let Some(reset) = &change.reset_hash {
                let used = sqlx::query(
                    "UPDATE password_resets SET used_at = $2 \
                     WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
                )
                .bind(reset)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if used.rows_affected() == 0 {
                    return Ok(false);
                }
            }
            ensure_row(&mut tx, change.user_id, now).await?;
            sqlx::query(
                "UPDATE local_credentials SET password_hash = $2, password_changed_at = $3, \
                 failed_attempts = 0, locked_until = CASE WHEN $4 THEN NULL ELSE locked_until END, \
                 updated_at = $3 WHERE user_id = $1",
            )
            .bind(change.user_id)
            .bind(&change.hash)
            .bind(now)
            // A reset proves the mailbox: it lifts a block too.
            .bind(change.reset_hash.is_some())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL \
                 AND ($3 IS NULL OR id_hash <> $3)",
            )
            .bind(change.user_id)
            .bind(now)
            .bind(change.keep_session.as_deref())
            .execute(&mut *tx)
            .await?;
            revoke_app_tokens_of_user!(tx, Some(change.user_id), now);
            insert_revocation!(&mut *tx, Some(change.user_id), None, now);
            insert_audit!(&mut *tx, event);
            true
        });
        Ok(done)
    }

    /// Replaces a hash with one of today's parameters (same password).
    pub async fn rehash_password(
        &self,
        user_id: Uuid,
        old: &str,
        new: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE local_credentials SET password_hash = $3, updated_at = $4 \
                 WHERE user_id = $1 AND password_hash = $2",
            )
            .bind(user_id)
            .bind(old)
            .bind(new)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn insert_password_reset(
        &self,
        token_hash: &str,
        user_id: Uuid,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(token_hash)
            .bind(user_id)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The user a reset link is for, while it is unused and unexpired (it is consumed by
    /// [`Store::set_password`]).
    pub async fn password_reset_user(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<Uuid>, StoreError> {
        let row: Option<(Uuid,)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT user_id FROM password_resets \
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(id,)| id))
    }

    // === TOTP ===

    /// Records an enrollment's secret (sealed) until its first code confirms it.
    pub async fn set_totp_pending(
        &self,
        user_id: Uuid,
        sealed: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_write_tx!(self, |tx| {
            ensure_row(&mut tx, user_id, now).await?;
            sqlx::query(
                "UPDATE local_credentials SET totp_pending = $2, updated_at = $3 WHERE user_id = $1",
            )
            .bind(user_id)
            .bind(sealed)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Makes the pending secret the user's TOTP secret, with `step` used and new recovery
    /// codes; audited as `mfa_enrolled`. `false` if the pending secret changed meanwhile.
    pub async fn confirm_totp(
        &self,
        user_id: Uuid,
        sealed: &str,
        step: i64,
        recovery_hashes: &[String],
        event: &AuditEvent,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = with_write_tx!(self, |tx| {
            let moved = sqlx::query(
                "UPDATE local_credentials SET totp_secret = totp_pending, totp_pending = NULL, \
                 totp_enrolled_at = $3, totp_last_step = $4, updated_at = $3 \
                 WHERE user_id = $1 AND totp_pending = $2",
            )
            .bind(user_id)
            .bind(sealed)
            .bind(now)
            .bind(step)
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            for hash in recovery_hashes {
                sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                    .bind(user_id)
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
            }
            insert_audit!(&mut *tx, event);
            true
        });
        Ok(done)
    }

    /// Uses TOTP time step `step`: `true` only if it is later than the last one used
    /// (atomic, so a code works once even with two replicas racing).
    pub async fn use_totp_step(&self, user_id: Uuid, step: i64) -> Result<bool, StoreError> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE local_credentials SET totp_last_step = $2 WHERE user_id = $1 \
                 AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < $2)",
            )
            .bind(user_id)
            .bind(step)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Uses a recovery code: `true` the first time only.
    pub async fn use_recovery_code(
        &self,
        user_id: Uuid,
        hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE recovery_codes SET used_at = $3 \
                 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
            )
            .bind(user_id)
            .bind(hash)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Removes the user's TOTP and recovery codes (they enroll again at their next sign-in
    /// if MFA is required), audited as `mfa_reset`. Returns whether they had TOTP.
    pub async fn reset_mfa(
        &self,
        user_id: Uuid,
        actor: impl Into<Actor>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let actor: Actor = actor.into();
        let had = with_write_tx!(self, |tx| {
            let done = sqlx::query(
                "UPDATE local_credentials SET totp_secret = NULL, totp_pending = NULL, \
                 totp_enrolled_at = NULL, totp_last_step = NULL, updated_at = $2 \
                 WHERE user_id = $1 AND totp_secret IS NOT NULL",
            )
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            let event = AuditEvent::new(AuditKind::MfaReset, Outcome::Success, now)
                .user(user_id)
                .by(&actor);
            insert_audit!(&mut *tx, &event);
            done.rows_affected() > 0
        });
        Ok(had)
    }

    // === flows ===

    pub async fn insert_flow(&self, flow: &NewFlow) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO local_flows (token_hash, email, client_id, redirect_to, signup, \
                 created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&flow.token_hash)
            .bind(&flow.email)
            .bind(flow.client_id.as_deref())
            .bind(flow.redirect_to.as_deref())
            .bind(flow.signup)
            .bind(flow.created_at)
            .bind(flow.expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// A live flow (unexpired, not killed by failures).
    pub async fn flow(
        &self,
        token_hash: &str,
        max_failures: i64,
        now: i64,
    ) -> Result<Option<Flow>, StoreError> {
        let row: Option<Flow> = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {FLOW_COLUMNS} FROM local_flows \
                 WHERE token_hash = $1 AND expires_at > $2 AND failures < $3"
            ))
            .bind(token_hash)
            .bind(now)
            .bind(max_failures)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// The flow an emailed link belongs to, while its code is valid.
    pub async fn flow_by_link(
        &self,
        link_hash: &str,
        now: i64,
    ) -> Result<Option<Flow>, StoreError> {
        let row: Option<Flow> = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {FLOW_COLUMNS} FROM local_flows \
                 WHERE link_hash = $1 AND expires_at > $2 AND code_expires_at > $2"
            ))
            .bind(link_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Stores a newly sent code and link (replacing any earlier ones).
    pub async fn set_flow_code(
        &self,
        token_hash: &str,
        code_hash: &str,
        link_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE local_flows SET code_hash = $2, link_hash = $3, code_expires_at = $4, \
                 code_attempts = 0 WHERE token_hash = $1",
            )
            .bind(token_hash)
            .bind(code_hash)
            .bind(link_hash)
            .bind(expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Counts an attempt at the flow's code; returns the attempts made, this one included.
    pub async fn count_code_attempt(&self, token_hash: &str) -> Result<i64, StoreError> {
        let row: Option<(i64,)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "UPDATE local_flows SET code_attempts = code_attempts + 1 \
                 WHERE token_hash = $1 RETURNING code_attempts",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map_or(i64::MAX, |(n,)| n))
    }

    /// Records that the first factor passed for `user_id`; burns the code and link. `false`
    /// if the code was used meanwhile (only with `burn_code`).
    pub async fn pass_first_factor(
        &self,
        token_hash: &str,
        factor: &str,
        user_id: Uuid,
        burn_code: bool,
    ) -> Result<bool, StoreError> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE local_flows SET first_factor = $2, user_id = $3, code_hash = NULL, \
                 link_hash = NULL, code_expires_at = NULL \
                 WHERE token_hash = $1 AND (NOT $4 OR code_hash IS NOT NULL)",
            )
            .bind(token_hash)
            .bind(factor)
            .bind(user_id)
            .bind(burn_code)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Counts a failed step; returns the failures so far.
    pub async fn count_flow_failure(&self, token_hash: &str) -> Result<i64, StoreError> {
        let row: Option<(i64,)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "UPDATE local_flows SET failures = failures + 1 \
                 WHERE token_hash = $1 RETURNING failures",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map_or(i64::MAX, |(n,)| n))
    }

    /// Ends a flow (success, or abandoned). `false` if it was already gone: a second request
    /// finishing the same flow must not get a second session.
    pub async fn delete_flow(&self, token_hash: &str) -> Result<bool, StoreError> {
        let done = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM local_flows WHERE token_hash = $1")
                .bind(token_hash)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// Deletes expired flows and reset links.
    pub async fn prune_local(&self, now: i64) -> Result<u64, StoreError> {
        let (flows, resets) = with_pool!(self, |pool| {
            let flows = sqlx::query("DELETE FROM local_flows WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?;
            let resets = sqlx::query("DELETE FROM password_resets WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?;
            (flows.rows_affected(), resets.rows_affected())
        });
        Ok(flows + resets)
    }
}

/// Makes sure the user has a credentials row, so the updates that follow find one.
async fn ensure_row<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    user_id: Uuid,
    now: i64,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'q> Uuid: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
{
    sqlx::query(
        "INSERT INTO local_credentials (user_id, updated_at) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
