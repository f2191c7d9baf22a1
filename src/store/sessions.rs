//! Sessions, keyed by the hex SHA-256 of their token.

use uuid::Uuid;

use super::app_tokens::revoke_app_tokens_of_user;
use super::sql::{insert_audit, insert_revocation};
use super::{Actor, AuditEvent, AuditKind, Outcome, Store, StoreError, with_pool, with_write_tx};

/// A session to insert.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id_hash: String,
    pub user_id: Uuid,
    pub impersonator_id: Option<Uuid>,
    pub idp: Option<String>,
    pub id_token: Option<String>,
    pub created_at: i64,
    pub idle_expires_at: i64,
    pub absolute_expires_at: i64,
    /// How the user authenticated at the IdP (empty for CLI and impersonation sessions).
    pub login: LoginFacts,
}

/// What the ID token said about a login, kept with the session: its strength for step-up
/// rules, and the IdP account and session (`sid`) for back-channel logout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginFacts {
    /// Sorted.
    pub amr: Vec<String>,
    pub acr: Option<String>,
    pub auth_time: Option<i64>,
    pub idp_subject: Option<String>,
    pub idp_sid: Option<String>,
}

/// A live (not revoked) session joined with its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub user_id: Uuid,
    pub impersonator_id: Option<Uuid>,
    pub email: String,
    pub org_id: Option<Uuid>,
    pub enabled: bool,
    pub roles: Vec<String>,
    pub idp: Option<String>,
    pub id_token: Option<String>,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub absolute_expires_at: i64,
    pub amr: Vec<String>,
    pub acr: Option<String>,
    pub auth_time: Option<i64>,
    /// The IdP's subject and session id for this sign-in (single logout).
    pub idp_subject: Option<String>,
    pub idp_sid: Option<String>,
    pub org_requires_mfa: bool,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    user_id: Uuid,
    impersonator_id: Option<Uuid>,
    email: String,
    org_id: Option<Uuid>,
    enabled: bool,
    idp: Option<String>,
    id_token: Option<String>,
    created_at: i64,
    last_seen_at: i64,
    absolute_expires_at: i64,
    roles: Option<String>,
    amr: Option<String>,
    acr: Option<String>,
    auth_time: Option<i64>,
    idp_subject: Option<String>,
    idp_sid: Option<String>,
    org_requires_mfa: Option<bool>,
}

/// A batched `last_seen` write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTouch {
    pub id_hash: String,
    pub last_seen_at: i64,
    pub idle_expires_at: i64,
}

impl Store {
    pub async fn insert_session(&self, s: &NewSession) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO sessions (id_hash, user_id, impersonator_id, idp, id_token, created_at, \
                 last_seen_at, idle_expires_at, absolute_expires_at, amr, acr, auth_time, \
                 idp_subject, idp_sid) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&s.id_hash)
            .bind(s.user_id)
            .bind(s.impersonator_id)
            .bind(s.idp.as_deref())
            .bind(s.id_token.as_deref())
            .bind(s.created_at)
            .bind(s.idle_expires_at)
            .bind(s.absolute_expires_at)
            .bind((!s.login.amr.is_empty()).then(|| s.login.amr.join(" ")))
            .bind(s.login.acr.as_deref())
            .bind(s.login.auth_time)
            .bind(s.login.idp_subject.as_deref())
            .bind(s.login.idp_sid.as_deref())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The session with this hash unless it is revoked or past its absolute expiry. Idle
    /// expiry is left to the caller, which knows fresher `last_seen` values than the store.
    pub async fn load_session(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let row: Option<SessionRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                // One round trip: the roles come along, comma-joined (role names hold no
                // comma). A cold check is otherwise two queries.
                "SELECT s.user_id, s.impersonator_id, u.email, u.org_id, u.enabled, s.idp, \
                        s.id_token, s.created_at, s.last_seen_at, s.absolute_expires_at, \
                        (SELECT string_agg(r.role, ',' ORDER BY r.role) FROM effective_roles r \
                         WHERE r.user_id = s.user_id) AS roles, \
                        s.amr, s.acr, s.auth_time, s.idp_subject, s.idp_sid, \
                        (SELECT o.require_mfa FROM organizations o WHERE o.id = u.org_id) \
                         AS org_requires_mfa \
                 FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.id_hash = $1 AND s.revoked_at IS NULL AND s.absolute_expires_at > $2",
            )
            .bind(id_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        let Some(row) = row else { return Ok(None) };
        let roles = row
            .roles
            .as_deref()
            .map(|joined| joined.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(Some(SessionRecord {
            user_id: row.user_id,
            impersonator_id: row.impersonator_id,
            email: row.email,
            org_id: row.org_id,
            enabled: row.enabled,
            roles,
            idp: row.idp,
            id_token: row.id_token,
            created_at: row.created_at,
            last_seen_at: row.last_seen_at,
            absolute_expires_at: row.absolute_expires_at,
            amr: row
                .amr
                .as_deref()
                .map(|joined| joined.split(' ').map(str::to_owned).collect())
                .unwrap_or_default(),
            acr: row.acr,
            auth_time: row.auth_time,
            idp_subject: row.idp_subject,
            idp_sid: row.idp_sid,
            org_requires_mfa: row.org_requires_mfa.unwrap_or(false),
        }))
    }

    /// Writes a batch of `last_seen` updates. Never moves `last_seen` backwards.
    pub async fn touch_sessions(&self, touches: &[SessionTouch]) -> Result<(), StoreError> {
        if touches.is_empty() {
            return Ok(());
        }
        with_write_tx!(self, |tx| {
            for t in touches {
                sqlx::query(
                    "UPDATE sessions SET last_seen_at = $2, idle_expires_at = $3 \
                     WHERE id_hash = $1 AND last_seen_at < $2",
                )
                .bind(&t.id_hash)
                .bind(t.last_seen_at)
                .bind(t.idle_expires_at)
                .execute(&mut *tx)
                .await?;
            }
        });
        Ok(())
    }

    /// Revokes one session (logout). Returns its user, if it was live.
    pub async fn revoke_session(
        &self,
        id_hash: &str,
        event: Option<&AuditEvent>,
        now: i64,
    ) -> Result<Option<Uuid>, StoreError> {
        let user: Option<(Uuid,)> = with_write_tx!(self, |tx| {
            let user: Option<(Uuid,)> = sqlx::query_as(
                "UPDATE sessions SET revoked_at = $2 WHERE id_hash = $1 AND revoked_at IS NULL \
                 RETURNING user_id",
            )
            .bind(id_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((user_id,)) = user {
                // Other replicas may have it cached: tell them.
                insert_revocation!(&mut *tx, Some(user_id), Some(id_hash), now);
                if let Some(event) = event {
                    let event = event.clone().user(user_id);
                    insert_audit!(&mut *tx, &event);
                }
            }
            user
        });
        Ok(user.map(|(u,)| u))
    }

    /// Revokes every live session of one user (including those in which they impersonate
    /// someone), or of everyone (`None`). Returns how many.
    pub async fn revoke_sessions(
        &self,
        user_id: Option<Uuid>,
        actor: impl Into<Actor>,
        now: i64,
    ) -> Result<u64, StoreError> {
        let actor: Actor = actor.into();
        let count = with_write_tx!(self, |tx| {
            let done = sqlx::query(
                "UPDATE sessions SET revoked_at = $2 \
                 WHERE ($1 IS NULL OR user_id = $1 OR impersonator_id = $1) \
                 AND revoked_at IS NULL",
            )
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // The user's (or everyone's) app refresh tokens end with their sessions.
            revoke_app_tokens_of_user!(tx, user_id, now);
            insert_revocation!(&mut *tx, user_id, None, now);
            let mut event = AuditEvent::new(AuditKind::SessionRevoked, Outcome::Success, now)
                .by(&actor)
                .detail(format!("{} session(s)", done.rows_affected()));
            event.user_id = user_id;
            insert_audit!(&mut *tx, &event);
            done.rows_affected()
        });
        Ok(count)
    }

    /// Revokes the live sessions an IdP's back-channel logout names: the one with its `sid`
    /// (of that `sub`, when both are given), or every session of that `sub`. Each replica
    /// drops them from its cache. Returns their hashes.
    pub async fn revoke_idp_sessions(
        &self,
        idp: &str,
        subject: Option<&str>,
        sid: Option<&str>,
        event: &AuditEvent,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let hashes = with_write_tx!(self, |tx| {
            let revoked: Vec<(String, Uuid)> = sqlx::query_as(
                "UPDATE sessions SET revoked_at = $4 \
                 WHERE idp = $1 AND revoked_at IS NULL \
                 AND ($2 IS NULL OR idp_subject = $2) AND ($3 IS NULL OR idp_sid = $3) \
                 AND ($2 IS NOT NULL OR $3 IS NOT NULL) \
                 RETURNING id_hash, user_id",
            )
            .bind(idp)
            .bind(subject)
            .bind(sid)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for (hash, user_id) in &revoked {
                insert_revocation!(&mut *tx, Some(*user_id), Some(hash.as_str()), now);
                let event = event.clone().user(*user_id);
                insert_audit!(&mut *tx, &event);
            }
            revoked
                .into_iter()
                .map(|(hash, _)| hash)
                .collect::<Vec<_>>()
        });
        Ok(hashes)
    }

    /// Remembers a back-channel logout token's `jti` until `expires_at`. False when it was
    /// already seen (a replay).
    pub async fn first_use_of_logout_token(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO logout_tokens_seen (issuer, jti, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (issuer, jti) DO NOTHING",
            )
            .bind(issuer)
            .bind(jti)
            .bind(expires_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Remembers a SAML assertion's or `LogoutRequest`'s ID (per IdP entityID) until
    /// `expires_at`, on every replica. False when it was already accepted (a replay).
    pub async fn first_use_of_saml_message(
        &self,
        issuer: &str,
        message_id: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO saml_messages_seen (issuer, message_id, expires_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (issuer, message_id) DO NOTHING",
            )
            .bind(issuer)
            .bind(message_id)
            .bind(expires_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// How many live sessions a user has.
    pub async fn count_live_sessions(&self, user_id: Uuid, now: i64) -> Result<i64, StoreError> {
        let (count,): (i64,) = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
                 AND absolute_expires_at > $2 AND idle_expires_at > $2",
            )
            .bind(user_id)
            .bind(now)
            .fetch_one(pool)
            .await?
        });
        Ok(count)
    }

    /// Deletes sessions, login states and revocations that can no longer matter. Sessions are
    /// kept a day past their end so that `user show` and forensics can still see them.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let day = 24 * 3600;
        let deleted = with_write_tx!(self, |tx| {
            let sessions = sqlx::query(
                "DELETE FROM sessions WHERE absolute_expires_at < $1 OR idle_expires_at < $1 \
                 OR revoked_at < $1",
            )
            .bind(now - day)
            .execute(&mut *tx)
            .await?;
            let states = sqlx::query("DELETE FROM login_states WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let revocations = sqlx::query("DELETE FROM revocations WHERE created_at < $1")
                .bind(now - day)
                .execute(&mut *tx)
                .await?;
            let logout_tokens = sqlx::query("DELETE FROM logout_tokens_seen WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let saml_messages = sqlx::query("DELETE FROM saml_messages_seen WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sessions.rows_affected()
                + states.rows_affected()
                + revocations.rows_affected()
                + logout_tokens.rows_affected()
                + saml_messages.rows_affected()
        });
        Ok(deleted)
    }
}
