//! First-party app tokens: authorization codes and refresh tokens, stored by the hex SHA-256
//! of the token only.
//!
//! A code is consumed exactly once (`DELETE … RETURNING`). Refresh tokens come in families:
//! the first one is issued for a code, and each use rotates it (the old one is marked used,
//! a new one joins the family). The family has one absolute expiry that rotation does not
//! extend. Presenting a used token again is reuse: the whole family is revoked, so the
//! newer token (held by the legitimate app or by a thief, nobody can tell which) fails too.

use uuid::Uuid;

use super::sql::insert_audit;
use super::{AuditEvent, Store, StoreError, with_pool, with_write_tx};

/// Used (rotated) refresh tokens are kept this long, so that presenting one again is
/// recognized as reuse and revokes its family; after that it is simply unknown (refused).
const USED_TOKEN_RETENTION_SECONDS: i64 = 7 * 24 * 3600;
/// Revoked families are kept a day (a replayed code or token is still told apart).
const REVOKED_RETENTION_SECONDS: i64 = 24 * 3600;

/// Revokes every refresh token of `$user_id` (everyone's for `None`) and deletes their
/// unredeemed codes, on `$conn`: called in the same transaction as a user disable or a
/// session revocation, so the user's apps lose access at the same moment as their browser.
macro_rules! revoke_app_tokens_of_user {
    ($conn:expr, $user_id:expr, $now:expr) => {{
        let user_id: Option<uuid::Uuid> = $user_id;
        sqlx::query(
            "UPDATE app_refresh_tokens SET revoked_at = $2 \
             WHERE ($1 IS NULL OR user_id = $1) AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind($now)
        .execute(&mut *$conn)
        .await?;
        sqlx::query("DELETE FROM app_codes WHERE ($1 IS NULL OR user_id = $1)")
            .bind(user_id)
            .execute(&mut *$conn)
            .await?;
    }};
}
pub(crate) use revoke_app_tokens_of_user;

/// A code to store at `/auth/authorize`.
#[derive(Debug, Clone)]
pub struct NewAppCode {
    pub code_hash: String,
    pub client_id: String,
    /// As the app sent it (a loopback URI carries the app's port): the token request must
    /// repeat it exactly.
    pub redirect_uri: String,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    pub scope: Option<String>,
    pub user_id: Uuid,
    pub session_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A consumed code.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AppCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scope: Option<String>,
    pub user_id: Uuid,
    pub session_hash: String,
    pub expires_at: i64,
}

/// A refresh token to store.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub token_hash: String,
    pub family_id: Uuid,
    pub client_id: String,
    pub user_id: Uuid,
    pub scope: Option<String>,
    /// The code the family was issued for (first token of a family only).
    pub code_hash: Option<String>,
    pub session_hash: Option<String>,
    /// How the user signed in for the session that authorized the family (JSON of
    /// [`crate::strength::AuthClaims`]).
    pub auth: Option<String>,
    pub created_at: i64,
    pub family_expires_at: i64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was live: marked used, and the new token stored in its family.
    Rotated(RefreshGrant),
    /// Never issued, or purged.
    Unknown,
    /// Its family was revoked (reuse, `/auth/revoke`, user disabled, sessions revoked).
    Revoked,
    /// Its family's absolute lifetime is over.
    Expired,
    /// Issued to another client: refused, nothing changed.
    OtherClient,
    /// Its user is not enabled.
    UserDisabled,
    /// A scope beyond what the family was granted was asked for: refused, nothing changed.
    ScopeExceeded,
    /// Already used: the whole family is now revoked (and the reuse audited).
    Reused { user_id: Uuid },
}

/// What a live refresh token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshGrant {
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub scope: Option<String>,
    pub auth: Option<String>,
    pub family_expires_at: i64,
}

/// What `/auth/revoke` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyRevocation {
    Revoked {
        user_id: Uuid,
    },
    /// Unknown, or already revoked: nothing to do (RFC 7009 answers 200 all the same).
    Nothing,
    /// The token belongs to another client.
    OtherClient,
}

#[derive(sqlx::FromRow)]
struct PresentedRow {
    family_id: Uuid,
    client_id: String,
    user_id: Uuid,
    scope: Option<String>,
    session_hash: Option<String>,
    auth: Option<String>,
    family_expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
    enabled: bool,
}

/// Inserts one refresh token on `$conn`.
macro_rules! insert_refresh_token {
    ($conn:expr, $token:expr) => {{
        let t: &NewRefreshToken = $token;
        sqlx::query(
            "INSERT INTO app_refresh_tokens (token_hash, family_id, client_id, user_id, scope, \
             code_hash, session_hash, created_at, family_expires_at, auth) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&t.token_hash)
        .bind(t.family_id)
        .bind(&t.client_id)
        .bind(t.user_id)
        .bind(t.scope.as_deref())
        .bind(t.code_hash.as_deref())
        .bind(t.session_hash.as_deref())
        .bind(t.created_at)
        .bind(t.family_expires_at)
        .bind(t.auth.as_deref())
        .execute($conn)
        .await?;
    }};
}

const REVOKE_FAMILY: &str =
    "UPDATE app_refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL";

impl Store {
    /// Stores a code, and its `app_authorized` event, in one transaction.
    pub async fn insert_app_code(
        &self,
        code: &NewAppCode,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        with_write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO app_codes (code_hash, client_id, redirect_uri, code_challenge, \
                 scope, user_id, session_hash, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&code.code_hash)
            .bind(&code.client_id)
            .bind(&code.redirect_uri)
            .bind(&code.code_challenge)
            .bind(code.scope.as_deref())
            .bind(code.user_id)
            .bind(&code.session_hash)
            .bind(code.created_at)
            .bind(code.expires_at)
            .execute(&mut *tx)
            .await?;
            insert_audit!(&mut *tx, event);
        });
        Ok(())
    }

    /// Deletes and returns the code: one atomic statement, so two concurrent exchanges cannot
    /// both have it. Returned even when expired (the caller refuses it): presenting a code
    /// burns it either way.
    pub async fn consume_app_code(&self, code_hash: &str) -> Result<Option<AppCode>, StoreError> {
        let code = with_pool!(self, |pool| {
            sqlx::query_as(
                "DELETE FROM app_codes WHERE code_hash = $1 \
                 RETURNING client_id, redirect_uri, code_challenge, scope, user_id, \
                 session_hash, expires_at",
            )
            .bind(code_hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(code)
    }

    /// A code came back after it was redeemed (RFC 6749 §4.1.2): revokes the refresh family
    /// issued for it and records `event` (with the family's user) when there was one. Returns
    /// whether a live family was revoked.
    pub async fn revoke_family_of_code(
        &self,
        code_hash: &str,
        event: &AuditEvent,
        now: i64,
    ) -> Result<bool, StoreError> {
        let revoked = with_write_tx!(self, |tx| {
            let family: Option<(Uuid, Uuid)> = sqlx::query_as(
                "SELECT family_id, user_id FROM app_refresh_tokens WHERE code_hash = $1",
            )
            .bind(code_hash)
            .fetch_optional(&mut *tx)
            .await?;
            match family {
                Some((family_id, user_id)) => {
                    let done = sqlx::query(REVOKE_FAMILY)
                        .bind(family_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    let revoked = done.rows_affected() > 0;
                    if revoked {
                        insert_audit!(&mut *tx, &event.clone().user(user_id));
                    }
                    revoked
                }
                None => false,
            }
        });
        Ok(revoked)
    }

    /// The user a refresh token belongs to, if it exists (for per-account limits before any
    /// change).
    pub async fn refresh_token_owner(&self, token_hash: &str) -> Result<Option<Uuid>, StoreError> {
        let row: Option<(Uuid,)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT user_id FROM app_refresh_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(user,)| user))
    }

    /// Stores the first refresh token of a new family, and its `app_token_issued` event.
    pub async fn insert_refresh_family(
        &self,
        token: &NewRefreshToken,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        with_write_tx!(self, |tx| {
            insert_refresh_token!(&mut *tx, token);
            insert_audit!(&mut *tx, event);
        });
        Ok(())
    }

    /// Presents the refresh token `presented_hash` for `client_id` at `now`, in one
    /// transaction. When it is live, it is marked used and `next_hash` joins its family
    /// (`issued` is recorded); when it was used before, the family is revoked (`reused` is
    /// recorded). Two concurrent rotations of one token cannot both succeed: the loser's
    /// conditional update finds it used, which counts as reuse. `within_scope`: the scopes
    /// asked for, which must all have been granted to the family (RFC 6749 §6).
    #[allow(clippy::too_many_arguments)]
    pub async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        client_id: &str,
        next_hash: &str,
        within_scope: Option<&[String]>,
        now: i64,
        issued: &AuditEvent,
        reused: &AuditEvent,
    ) -> Result<Rotation, StoreError> {
        let rotation = with_write_tx!(self, |tx| {
            let row: Option<PresentedRow> = sqlx::query_as(
                "SELECT t.family_id, t.client_id, t.user_id, t.scope, t.session_hash, t.auth, \
                 t.family_expires_at, t.used_at, t.revoked_at, u.enabled \
                 FROM app_refresh_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.token_hash = $1",
            )
            .bind(presented_hash)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                None => Rotation::Unknown,
                Some(row) if row.client_id != client_id => Rotation::OtherClient,
                Some(row) if row.revoked_at.is_some() => Rotation::Revoked,
                Some(row) if row.family_expires_at <= now => Rotation::Expired,
                // (A used token goes on to reuse detection, whatever it asks for.)
                Some(row)
                    if row.used_at.is_none()
                        && within_scope.is_some_and(|wanted| {
                            let granted: Vec<&str> = row
                                .scope
                                .as_deref()
                                .unwrap_or_default()
                                .split(' ')
                                .collect();
                            wanted.iter().any(|w| !granted.contains(&w.as_str()))
                        }) =>
                {
                    Rotation::ScopeExceeded
                }
                Some(row) => {
                    let marked = if row.used_at.is_none() && row.enabled {
                        sqlx::query(
                            "UPDATE app_refresh_tokens SET used_at = $2 WHERE token_hash = $1 \
                             AND used_at IS NULL AND revoked_at IS NULL",
                        )
                        .bind(presented_hash)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                            == 1
                    } else {
                        false
                    };
                    if marked {
                        let next = NewRefreshToken {
                            token_hash: next_hash.to_owned(),
                            family_id: row.family_id,
                            client_id: row.client_id.clone(),
                            user_id: row.user_id,
                            scope: row.scope.clone(),
                            code_hash: None,
                            session_hash: row.session_hash.clone(),
                            auth: row.auth.clone(),
                            created_at: now,
                            family_expires_at: row.family_expires_at,
                        };
                        insert_refresh_token!(&mut *tx, &next);
                        insert_audit!(&mut *tx, &issued.clone().user(row.user_id));
                        Rotation::Rotated(RefreshGrant {
                            family_id: row.family_id,
                            user_id: row.user_id,
                            scope: row.scope,
                            auth: row.auth,
                            family_expires_at: row.family_expires_at,
                        })
                    } else if !row.enabled {
                        Rotation::UserDisabled
                    } else {
                        // Used before (or by a concurrent request a moment ago): reuse.
                        // Only the request that revokes the family records it: on PostgreSQL,
                        // concurrent losers read the token before the winner committed, and
                        // each came here; the revocation's row locks order them, and the
                        // later ones find nothing left to revoke.
                        let revoked = sqlx::query(REVOKE_FAMILY)
                            .bind(row.family_id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if revoked > 0 {
                            insert_audit!(&mut *tx, &reused.clone().user(row.user_id));
                        }
                        Rotation::Reused {
                            user_id: row.user_id,
                        }
                    }
                }
            }
        });
        Ok(rotation)
    }

    /// RFC 7009: revokes the family of the refresh token `token_hash` when it was issued to
    /// `client_id`, recording `event`.
    pub async fn revoke_refresh_family(
        &self,
        token_hash: &str,
        client_id: &str,
        event: &AuditEvent,
        now: i64,
    ) -> Result<FamilyRevocation, StoreError> {
        let outcome = with_write_tx!(self, |tx| {
            let row: Option<(Uuid, String, Uuid)> = sqlx::query_as(
                "SELECT family_id, client_id, user_id FROM app_refresh_tokens \
                 WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                None => FamilyRevocation::Nothing,
                Some((_, owner, _)) if owner != client_id => FamilyRevocation::OtherClient,
                Some((family_id, _, user_id)) => {
                    let done = sqlx::query(REVOKE_FAMILY)
                        .bind(family_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() > 0 {
                        insert_audit!(&mut *tx, &event.clone().user(user_id));
                        FamilyRevocation::Revoked { user_id }
                    } else {
                        FamilyRevocation::Nothing
                    }
                }
            }
        });
        Ok(outcome)
    }

    /// Deletes expired codes, expired families, revoked families after a day and used
    /// tokens after [`USED_TOKEN_RETENTION_SECONDS`]. Run by the housekeeping task.
    pub async fn purge_expired_app_tokens(&self, now: i64) -> Result<u64, StoreError> {
        let deleted = with_write_tx!(self, |tx| {
            let codes = sqlx::query("DELETE FROM app_codes WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let tokens = sqlx::query(
                "DELETE FROM app_refresh_tokens WHERE family_expires_at < $1 \
                 OR revoked_at < $2 OR used_at < $3",
            )
            .bind(now)
            .bind(now - REVOKED_RETENTION_SECONDS)
            .bind(now - USED_TOKEN_RETENTION_SECONDS)
            .execute(&mut *tx)
            .await?;
            codes.rows_affected() + tokens.rows_affected()
        });
        Ok(deleted)
    }
}
