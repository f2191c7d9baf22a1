//! Users, their IdP identities and roles, and just-in-time provisioning.

use serde::Serialize;
use uuid::Uuid;

use super::app_tokens::revoke_app_tokens_of_user;
use super::sql::{insert_audit, insert_revocation, like_pattern};
use super::{Actor, AuditEvent, AuditKind, Outcome, Store, StoreError, with_pool, with_write_tx};
use crate::email::Email;
use crate::provisioning::Vouching;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub org_id: Option<Uuid>,
    pub enabled: bool,
    pub created_at: i64,
    pub roles: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    name: Option<String>,
    org_id: Option<Uuid>,
    enabled: bool,
    created_at: i64,
}

impl UserRow {
    fn with_roles(self, roles: Vec<String>) -> User {
        User {
            id: self.id,
            email: self.email,
            name: self.name,
            org_id: self.org_id,
            enabled: self.enabled,
            created_at: self.created_at,
            roles,
        }
    }
}

/// A role an IdP's claims grant (`[[idp]] role_claims`), replaced at each login through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MappedRole {
    pub idp: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct IdentityRow {
    pub issuer: String,
    pub subject: String,
    pub idp: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub created_at: i64,
    pub last_login_at: i64,
}

/// A first or repeated sign-in, as the broker saw it after validating the ID token.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    pub issuer: String,
    pub subject: String,
    pub idp: String,
    /// Required for a first sign-in; a returning identity may have none.
    pub email: Option<Email>,
    /// `Some(true)` only when the IdP asserted the JSON boolean `true`.
    pub email_verified: Option<bool>,
    /// What the email may do: [`crate::provisioning::vouch`] decides.
    pub vouching: Vouching,
    pub name: Option<String>,
    pub new_users_enabled: bool,
    /// Whether a new user may be created (sign-ups: see `provisioning.open_signup`); when
    /// not, an unknown identity whose email no user has is refused with `NotFound`.
    pub may_create: bool,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisionOutcome {
    /// The identity was known.
    Existing(User),
    /// A new identity was attached to the user who already had this (verified) email.
    Linked(User),
    /// A new user was created.
    Created(User),
}

impl ProvisionOutcome {
    pub fn user(&self) -> &User {
        match self {
            Self::Existing(u) | Self::Linked(u) | Self::Created(u) => u,
        }
    }
}

const USER_COLUMNS: &str = "id, email, name, org_id, enabled, created_at";

/// Inserts a new user on `$tx`. With `$by_domain`, it joins the org owning the exact email
/// domain (and is enabled if that org auto-enables); it is also enabled when
/// `$new_users_enabled`. Evaluates to the `UserRow`.
macro_rules! insert_user {
    ($tx:expr, $email:expr, $name:expr, $by_domain:expr, $new_users_enabled:expr, $now:expr) => {{
        let email: &Email = $email;
        // A non-ASCII local part is never placed by its domain (see crate::provisioning),
        // whoever creates the user.
        let org: Option<(Uuid, bool)> = if $by_domain && email.local_part().is_ascii() {
            // Org domains are ASCII, lower-case: a non-ASCII domain finds no org.
            sqlx::query_as(
                "SELECT o.id, o.auto_enable FROM organizations o \
                 JOIN org_domains d ON d.org_id = o.id WHERE d.domain = $1",
            )
            .bind(email.domain())
            .fetch_optional(&mut *$tx)
            .await?
        } else {
            None
        };
        let row = UserRow {
            id: Uuid::new_v4(),
            email: email.as_str().to_owned(),
            name: $name,
            org_id: org.map(|(id, _)| id),
            enabled: $new_users_enabled || org.is_some_and(|(_, auto)| auto),
            created_at: $now,
        };
        sqlx::query(
            "INSERT INTO users (id, email, name, org_id, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(row.id)
        .bind(&row.email)
        .bind(row.name.as_deref())
        .bind(row.org_id)
        .bind(row.enabled)
        .bind(row.created_at)
        .execute(&mut *$tx)
        .await?;
        row
    }};
}

impl Store {
    /// The user with this address, in canonical form (see [`Email`]).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let email = Email::parse(email)?;
        let row: Option<UserRow> = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
            ))
            .bind(email.as_str())
            .fetch_optional(pool)
            .await?
        });
        self.attach_roles(row).await
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = with_pool!(self, |pool| {
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        self.attach_roles(row).await
    }

    /// The user an IdP identity `(issuer, subject)` belongs to.
    pub async fn user_by_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT u.id, u.email, u.name, u.org_id, u.enabled, u.created_at \
                 FROM identities i JOIN users u ON u.id = i.user_id \
                 WHERE i.issuer = $1 AND i.subject = $2",
            )
            .bind(issuer)
            .bind(subject)
            .fetch_optional(pool)
            .await?
        });
        self.attach_roles(row).await
    }

    /// The user with this email, or `NotFound` naming it.
    pub async fn require_user(&self, email: &str) -> Result<User, StoreError> {
        self.user_by_email(email)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no user with email {email:?}")))
    }

    async fn attach_roles(&self, row: Option<UserRow>) -> Result<Option<User>, StoreError> {
        match row {
            Some(row) => {
                let roles = self.roles_of(row.id).await?;
                Ok(Some(row.with_roles(roles)))
            }
            None => Ok(None),
        }
    }

    /// Users by email, after `after` (the paging cursor), whose email contains `search`
    /// (ASCII case-insensitive) when given; at most `limit`.
    pub async fn list_users(
        &self,
        search: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<User>, StoreError> {
        let pattern = search.map(like_pattern);
        let rows: Vec<UserRow> = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {USER_COLUMNS} FROM users \
                 WHERE ($1 IS NULL OR email > $1) AND ($2 IS NULL OR email LIKE $2 ESCAPE '\\') \
                 ORDER BY email LIMIT $3"
            ))
            .bind(after)
            .bind(pattern.as_deref())
            .bind(limit.clamp(1, 10_000))
            .fetch_all(pool)
            .await?
        });
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // The page's roles in one query.
        let placeholders: Vec<String> = (1..=rows.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT user_id, role FROM effective_roles WHERE user_id IN ({}) ORDER BY role",
            placeholders.join(",")
        );
        let roles: Vec<(Uuid, String)> = with_pool!(self, |pool| {
            let mut query = sqlx::query_as(&sql);
            for row in &rows {
                query = query.bind(row.id);
            }
            query.fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|row| {
                let mine = roles
                    .iter()
                    .filter(|(u, _)| *u == row.id)
                    .map(|(_, r)| r.clone())
                    .collect();
                row.with_roles(mine)
            })
            .collect())
    }

    /// Removes an IdP identity from a user and ends the user's sessions (one of them may
    /// have come through it). Returns whether the identity existed.
    pub async fn unlink_identity(
        &self,
        user_id: Uuid,
        issuer: &str,
        subject: &str,
        actor: impl Into<Actor>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let actor: Actor = actor.into();
        let removed = with_write_tx!(self, |tx| {
            let done = sqlx::query(
                "DELETE FROM identities WHERE user_id = $1 AND issuer = $2 AND subject = $3",
            )
            .bind(user_id)
            .bind(issuer)
            .bind(subject)
            .execute(&mut *tx)
            .await?;
            let removed = done.rows_affected() > 0;
            if removed {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $2 \
                     WHERE (user_id = $1 OR impersonator_id = $1) AND revoked_at IS NULL",
                )
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                revoke_app_tokens_of_user!(tx, Some(user_id), now);
                // Also drops cached bearer lookups of this (iss, sub) on every replica.
                insert_revocation!(&mut *tx, Some(user_id), None, now);
                let event = AuditEvent::new(AuditKind::IdentityUnlinked, Outcome::Success, now)
                    .user(user_id)
                    .by(&actor)
                    .detail(format!("{issuer} {subject}"));
                insert_audit!(&mut *tx, &event);
            }
            removed
        });
        Ok(removed)
    }

    pub async fn roles_of(&self, user_id: Uuid) -> Result<Vec<String>, StoreError> {
        let roles: Vec<(String,)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT role FROM effective_roles WHERE user_id = $1 ORDER BY role")
                .bind(user_id)
                .fetch_all(pool)
                .await?
        });
        Ok(roles.into_iter().map(|(r,)| r).collect())
    }

    pub async fn identities_of(&self, user_id: Uuid) -> Result<Vec<IdentityRow>, StoreError> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT issuer, subject, idp, email, email_verified, created_at, last_login_at \
                 FROM identities WHERE user_id = $1 ORDER BY created_at",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// The user with this email, created (by the same org and enablement rules as SSO
    /// provisioning) when missing. Returns whether it was created.
    pub async fn ensure_user(
        &self,
        email: &str,
        new_users_enabled: bool,
        actor: impl Into<Actor>,
        now: i64,
    ) -> Result<(User, bool), StoreError> {
        let actor: Actor = actor.into();
        let email = Email::parse(email)?;
        if let Some(user) = self.user_by_email(email.as_str()).await? {
            return Ok((user, false));
        }
        let created = async {
            Ok::<_, StoreError>(with_write_tx!(self, |tx| {
                // An admin vouches for the address: place it by domain.
                let row = insert_user!(tx, &email, None, true, new_users_enabled, now);
                let event = AuditEvent::new(AuditKind::UserCreated, Outcome::Success, now)
                    .user(row.id)
                    .by(&actor);
                insert_audit!(&mut *tx, &event);
                row
            }))
        }
        .await;
        match created {
            Ok(row) => Ok((row.with_roles(Vec::new()), true)),
            // Someone created it meanwhile.
            Err(e) if e.is_unique_violation() => {
                Ok((self.require_user(email.as_str()).await?, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Enables or disables a user. Disabling also revokes every session of the user. Returns
    /// whether anything changed.
    pub async fn set_user_enabled(
        &self,
        user_id: Uuid,
        enabled: bool,
        actor: impl Into<Actor>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let actor: Actor = actor.into();
        let changed = with_write_tx!(self, |tx| {
            let done = sqlx::query(
                "UPDATE users SET enabled = $2, updated_at = $3 WHERE id = $1 AND enabled <> $2",
            )
            .bind(user_id)
            .bind(enabled)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let changed = done.rows_affected() > 0;
            if changed {
                if !enabled {
                    // Their own sessions, and those in which they impersonate someone.
                    sqlx::query(
                        "UPDATE sessions SET revoked_at = $2 \
                         WHERE (user_id = $1 OR impersonator_id = $1) AND revoked_at IS NULL",
                    )
                    .bind(user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    // Their apps' refresh tokens end with their sessions.
                    revoke_app_tokens_of_user!(tx, Some(user_id), now);
                }
                insert_revocation!(&mut *tx, Some(user_id), None, now);
                let kind = if enabled {
                    AuditKind::UserEnabled
                } else {
                    AuditKind::UserDisabled
                };
                let event = AuditEvent::new(kind, Outcome::Success, now)
                    .user(user_id)
                    .by(&actor);
                insert_audit!(&mut *tx, &event);
            }
            changed
        });
        Ok(changed)
    }

    /// Grants (`grant = true`) or revokes a role. Returns whether anything changed.
    pub async fn set_role(
        &self,
        user_id: Uuid,
        role: &str,
        grant: bool,
        actor: impl Into<Actor>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let actor: Actor = actor.into();
        let role = role.trim();
        if role.is_empty() || role.contains(',') || role.chars().any(char::is_control) {
            return Err(StoreError::Invalid(format!(
                "{role:?} is not a valid role name (non-empty, no comma)"
            )));
        }
        let changed = with_write_tx!(self, |tx| {
            let done = if grant {
                sqlx::query(
                    "INSERT INTO user_roles (user_id, role, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(user_id)
                .bind(role)
                .bind(now)
                .execute(&mut *tx)
                .await?
            } else {
                sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
                    .bind(user_id)
                    .bind(role)
                    .execute(&mut *tx)
                    .await?
            };
            let changed = done.rows_affected() > 0;
            if changed {
                // Impersonation was allowed for the roles both parties had when it started:
                // any change on either side ends it (the impersonator may have lost the role,
                // the target may now outrank them).
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $2 WHERE impersonator_id IS NOT NULL \
                     AND (impersonator_id = $1 OR user_id = $1) AND revoked_at IS NULL",
                )
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                insert_revocation!(&mut *tx, Some(user_id), None, now);
                let kind = if grant {
                    AuditKind::RoleGranted
                } else {
                    AuditKind::RoleRevoked
                };
                let event = AuditEvent::new(kind, Outcome::Success, now)
                    .user(user_id)
                    .by(&actor)
                    .detail(role);
                insert_audit!(&mut *tx, &event);
            }
            changed
        });
        Ok(changed)
    }

    /// The roles IdP claims grant `user_id`, as `(idp, role)`, sorted.
    pub async fn idp_roles_of(&self, user_id: Uuid) -> Result<Vec<MappedRole>, StoreError> {
        let rows: Vec<MappedRole> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT idp, role FROM idp_roles WHERE user_id = $1 ORDER BY role, idp")
                .bind(user_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Replaces the roles `idp`'s claims grant `user_id` (`[[idp]] role_claims`) with
    /// `roles`, at a login through that IdP. Roles granted by hand are a separate set and never
    /// touched. When the set changed: audited (`roles_mapped`, listing what came and went) and
    /// every replica drops the user's cached sessions. Returns whether it changed.
    pub async fn set_idp_roles(
        &self,
        user_id: Uuid,
        idp: &str,
        roles: &[String],
        now: i64,
    ) -> Result<bool, StoreError> {
        let changed = with_write_tx!(self, |tx| {
            let current: Vec<(String,)> = sqlx::query_as(
                "SELECT role FROM idp_roles WHERE user_id = $1 AND idp = $2 ORDER BY role",
            )
            .bind(user_id)
            .bind(idp)
            .fetch_all(&mut *tx)
            .await?;
            let current: Vec<String> = current.into_iter().map(|(r,)| r).collect();
            let added: Vec<&String> = roles.iter().filter(|r| !current.contains(r)).collect();
            let removed: Vec<&String> = current.iter().filter(|r| !roles.contains(r)).collect();
            for role in &removed {
                sqlx::query("DELETE FROM idp_roles WHERE user_id = $1 AND idp = $2 AND role = $3")
                    .bind(user_id)
                    .bind(idp)
                    .bind(role.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            for role in &added {
                sqlx::query(
                    "INSERT INTO idp_roles (user_id, idp, role, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(user_id)
                .bind(idp)
                .bind(role.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let changed = !added.is_empty() || !removed.is_empty();
            if changed {
                insert_revocation!(&mut *tx, Some(user_id), None, now);
                let event = AuditEvent::new(AuditKind::RolesMapped, Outcome::Success, now)
                    .user(user_id)
                    .idp(idp)
                    .detail(format!("added {added:?}, removed {removed:?}"));
                insert_audit!(&mut *tx, &event);
            }
            changed
        });
        Ok(changed)
    }

    /// Maps an IdP identity to a local user, in one transaction:
    /// 1. a known `(issuer, subject)` → its user;
    /// 2. else, when the email may link (verified by an IdP trusted for its domain, linking
    ///    on: see [`crate::provisioning`]), the user with that address (canonical form, so a
    ///    non-ASCII address only matches byte for byte) gets this identity added, unless an
    ///    identity nobody vouched for created that user (someone may have squatted the address
    ///    before its owner arrived);
    /// 3. else a new user, placed in the org of its exact domain only when the email may be
    ///    placed (and so enabled only by that org's auto-enable or `new_users_enabled`). When
    ///    linking or placement was held back, a `provisioning_limited` event says why. An email
    ///    that belongs to another user is refused, not linked.
    ///
    /// Concurrent first logins of one identity produce one user: the loser of the race hits a
    /// unique constraint, and the retry finds the winner's rows.
    pub async fn provision(&self, req: &ProvisionRequest) -> Result<ProvisionOutcome, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.provision_once(req).await {
                Err(e) if attempt < 5 && (e.is_unique_violation() || e.is_retryable()) => {
                    tracing::debug!(error = %e, attempt, "provisioning raced, retrying");
                }
                other => return other,
            }
        }
    }

    async fn provision_once(&self, req: &ProvisionRequest) -> Result<ProvisionOutcome, StoreError> {
        let audit = |kind: AuditKind, outcome: Outcome, user_id: Uuid| {
            AuditEvent::new(kind, outcome, req.now)
                .user(user_id)
                .idp(req.idp.clone())
                .client(req.ip.clone(), req.user_agent.clone())
                .detail(format!("iss={} sub={}", req.issuer, req.subject))
        };
        let email = req.email.as_ref().map(Email::as_str);
        let outcome = with_write_tx!(self, |tx| {
            let known: Option<UserRow> = sqlx::query_as(
                "SELECT u.id, u.email, u.name, u.org_id, u.enabled, u.created_at \
                 FROM identities i JOIN users u ON u.id = i.user_id \
                 WHERE i.issuer = $1 AND i.subject = $2",
            )
            .bind(&req.issuer)
            .bind(&req.subject)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = known {
                // `vouched` speaks for the account's address, not for whatever address the
                // IdP now asserts: a squatter who later verifies an address of their own must
                // not make the squatted account linkable.
                let vouched_for_account = req.vouching.vouched && email == Some(row.email.as_str());
                sqlx::query(
                    "UPDATE identities SET email = $3, email_verified = $4, vouched = $5, \
                     last_login_at = $6 WHERE issuer = $1 AND subject = $2",
                )
                .bind(&req.issuer)
                .bind(&req.subject)
                .bind(email)
                .bind(req.email_verified)
                .bind(vouched_for_account)
                .bind(req.now)
                .execute(&mut *tx)
                .await?;
                Ok::<_, StoreError>((Kind::Existing, row))
            } else {
                let Some(email) = req.email.as_ref() else {
                    return Err(StoreError::Invalid(
                        "the identity provider did not provide an email address".into(),
                    ));
                };
                let holder: Option<UserRow> = sqlx::query_as(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
                ))
                .bind(email.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let (kind, row) = match holder {
                    Some(row) if req.vouching.link => {
                        // NULL (an identity from before gatehouse recorded this) counts as
                        // unvouched: its verification may have been for a Unicode lookalike
                        // or by an IdP not trusted for the domain.
                        let (unvouched,): (i64,) = sqlx::query_as(
                            "SELECT COUNT(*) FROM identities WHERE user_id = $1 \
                             AND COALESCE(vouched, FALSE) = FALSE",
                        )
                        .bind(row.id)
                        .fetch_one(&mut *tx)
                        .await?;
                        if unvouched > 0 {
                            return Err(StoreError::Conflict(format!(
                                "an account for {email} already has a sign-in that did not prove \
                                 the address (or that predates gatehouse recording it), so it \
                                 was not linked to yours; an administrator must resolve this"
                            )));
                        }
                        (Kind::Linked, row)
                    }
                    Some(_) => {
                        let why = req
                            .vouching
                            .describe_limits()
                            .unwrap_or_else(|| "linking by email is switched off".to_owned());
                        return Err(StoreError::Conflict(format!(
                            "another account already uses {email}, and {why}, so the accounts \
                             were not linked"
                        )));
                    }
                    None if !req.may_create => {
                        return Err(StoreError::NotFound(format!(
                            "there is no account for {email}"
                        )));
                    }
                    None => {
                        let row = insert_user!(
                            tx,
                            email,
                            req.name.clone(),
                            req.vouching.place_in_org,
                            req.new_users_enabled,
                            req.now
                        );
                        (Kind::Created, row)
                    }
                };
                sqlx::query(
                    "INSERT INTO identities (issuer, subject, user_id, idp, email, email_verified, \
                     vouched, created_at, last_login_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                )
                .bind(&req.issuer)
                .bind(&req.subject)
                .bind(row.id)
                .bind(&req.idp)
                .bind(email.as_str())
                .bind(req.email_verified)
                .bind(req.vouching.vouched)
                .bind(req.now)
                .execute(&mut *tx)
                .await?;
                let event_kind = match kind {
                    Kind::Linked => AuditKind::IdentityLinked,
                    _ => AuditKind::UserProvisioned,
                };
                insert_audit!(&mut *tx, &audit(event_kind, Outcome::Success, row.id));
                if let (Kind::Created, Some(why)) = (&kind, req.vouching.describe_limits()) {
                    let event = audit(AuditKind::ProvisioningLimited, Outcome::Failure, row.id)
                        .detail(format!(
                            "{email} not linked to an existing account or placed in an org by \
                             its domain: {why}"
                        ));
                    insert_audit!(&mut *tx, &event);
                }
                Ok((kind, row))
            }
        })?;
        let (kind, row) = outcome;
        let roles = self.roles_of(row.id).await?;
        let user = row.with_roles(roles);
        Ok(match kind {
            Kind::Existing => ProvisionOutcome::Existing(user),
            Kind::Linked => ProvisionOutcome::Linked(user),
            Kind::Created => ProvisionOutcome::Created(user),
        })
    }
}

enum Kind {
    Existing,
    Linked,
    Created,
}
