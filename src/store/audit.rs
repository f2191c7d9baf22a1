//! The audit trail: one row per auth action, written in the same transaction as the action
//! where there is one.

use serde::Serialize;
use uuid::Uuid;

use super::sql::{insert_audit, like_pattern};
use super::{Store, StoreError, with_pool};

/// What happened. The string forms are stable: `gatehouse audit --kind` filters on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    LoginStarted,
    LoginSucceeded,
    LoginFailed,
    UserProvisioned,
    IdentityLinked,
    /// A new user was not linked or placed in an org by its email: the detail says why.
    ProvisioningLimited,
    SessionCreated,
    SessionRevoked,
    Logout,
    UserCreated,
    UserEnabled,
    UserDisabled,
    RoleGranted,
    RoleRevoked,
    OrgCreated,
    IdentityUnlinked,
    KeyRotated,
    ImpersonationStarted,
    ImpersonationStopped,
    ImpersonationRefused,
    OrgUpdated,
    RateLimited,
    SuspiciousLogin,
    RolesMapped,
    BackchannelLogout,
    /// `/auth/authorize` issued a code to a `[[client]]` app.
    AppAuthorized,
    /// `/auth/token` issued tokens (code exchange or refresh); the detail names the grant.
    AppTokenIssued,
    /// An already-rotated refresh token came back: its whole family was revoked.
    RefreshTokenReused,
    /// A refresh token family was revoked (`/auth/revoke`, or a replayed code).
    AppTokenRevoked,
    /// Too many failed local attempts: the account's local sign-in is blocked for a while.
    AccountLocked,
    /// An operator lifted a block (`gatehouse user unlock`, the admin API).
    AccountUnlocked,
    /// A password was set or changed (the detail says which, and who).
    PasswordSet,
    /// A password was reset through an emailed link.
    PasswordReset,
    /// A user enrolled TOTP.
    MfaEnrolled,
    /// An operator removed a user's TOTP (`gatehouse user mfa-reset`).
    MfaReset,
    /// A sign-in email could not be sent (the SMTP server was down or refused it).
    EmailFailed,
}

impl AuditKind {
    pub const ALL: [Self; 36] = [
        Self::LoginStarted,
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::UserProvisioned,
        Self::IdentityLinked,
        Self::ProvisioningLimited,
        Self::SessionCreated,
        Self::SessionRevoked,
        Self::Logout,
        Self::UserCreated,
        Self::UserEnabled,
        Self::UserDisabled,
        Self::RoleGranted,
        Self::RoleRevoked,
        Self::OrgCreated,
        Self::IdentityUnlinked,
        Self::KeyRotated,
        Self::ImpersonationStarted,
        Self::ImpersonationStopped,
        Self::ImpersonationRefused,
        Self::OrgUpdated,
        Self::RateLimited,
        Self::SuspiciousLogin,
        Self::RolesMapped,
        Self::BackchannelLogout,
        Self::AppAuthorized,
        Self::AppTokenIssued,
        Self::RefreshTokenReused,
        Self::AppTokenRevoked,
        Self::AccountLocked,
        Self::AccountUnlocked,
        Self::PasswordSet,
        Self::PasswordReset,
        Self::MfaEnrolled,
        Self::MfaReset,
        Self::EmailFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginStarted => "login_started",
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::UserProvisioned => "user_provisioned",
            Self::IdentityLinked => "identity_linked",
            Self::ProvisioningLimited => "provisioning_limited",
            Self::SessionCreated => "session_created",
            Self::SessionRevoked => "session_revoked",
            Self::Logout => "logout",
            Self::UserCreated => "user_created",
            Self::UserEnabled => "user_enabled",
            Self::UserDisabled => "user_disabled",
            Self::RoleGranted => "role_granted",
            Self::RoleRevoked => "role_revoked",
            Self::OrgCreated => "org_created",
            Self::IdentityUnlinked => "identity_unlinked",
            Self::KeyRotated => "key_rotated",
            Self::ImpersonationStarted => "impersonation_started",
            Self::ImpersonationStopped => "impersonation_stopped",
            Self::ImpersonationRefused => "impersonation_refused",
            Self::OrgUpdated => "org_updated",
            Self::RateLimited => "rate_limited",
            Self::SuspiciousLogin => "suspicious_login",
            Self::RolesMapped => "roles_mapped",
            Self::BackchannelLogout => "backchannel_logout",
            Self::AppAuthorized => "app_authorized",
            Self::AppTokenIssued => "app_token_issued",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::AppTokenRevoked => "app_token_revoked",
            Self::AccountLocked => "account_locked",
            Self::AccountUnlocked => "account_unlocked",
            Self::PasswordSet => "password_set",
            Self::PasswordReset => "password_reset",
            Self::MfaEnrolled => "mfa_enrolled",
            Self::MfaReset => "mfa_reset",
            Self::EmailFailed => "email_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Success, Self::Failure]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// Who did something, as the audit trail records it: a name (`cli:<unix user>`, `admin-api`,
/// …) and, for network callers, their address and user agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl From<&Actor> for Actor {
    fn from(actor: &Actor) -> Self {
        actor.clone()
    }
}

impl From<&str> for Actor {
    fn from(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub at: i64,
    pub kind: AuditKind,
    pub outcome: Outcome,
    pub user_id: Option<Uuid>,
    /// Who did it, when not the user: `cli`, `admin-api`, an admin's email.
    pub actor: Option<String>,
    pub idp: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// A short reason or context, never a secret.
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, outcome: Outcome, at: i64) -> Self {
        Self {
            at,
            kind,
            outcome,
            user_id: None,
            actor: None,
            idp: None,
            ip: None,
            user_agent: None,
            detail: None,
        }
    }

    pub fn user(mut self, user_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn idp(mut self, idp: impl Into<String>) -> Self {
        self.idp = Some(idp.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(printable(&detail.into(), 512));
        self
    }

    /// The actor, with their address and user agent when known.
    pub fn by(self, actor: &Actor) -> Self {
        let event = self.actor(actor.name.clone());
        match (&actor.ip, &actor.user_agent) {
            (None, None) => event,
            (ip, ua) => event.client(ip.clone(), ua.clone()),
        }
    }

    pub fn client(mut self, ip: Option<String>, user_agent: Option<String>) -> Self {
        self.ip = ip;
        self.user_agent = user_agent.map(|ua| printable(&ua, 256));
        self
    }
}

/// Parts of an event can come from an attacker (an IdP's `error_description`, a user agent):
/// bounded, and with control characters (newlines, terminal escapes) replaced, so they cannot
/// forge lines in `gatehouse audit` or a log viewer.
fn printable(text: &str, max_chars: usize) -> String {
    text.chars()
        .take(max_chars)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// A recorded event, as listed by `gatehouse audit`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub outcome: String,
    pub user_id: Option<Uuid>,
    /// Filled from the users table when the user still exists.
    pub email: Option<String>,
    pub actor: Option<String>,
    pub idp: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user_id: Option<Uuid>,
    /// Events of users whose email contains this text (ASCII case-insensitive).
    pub email_contains: Option<String>,
    pub kind: Option<AuditKind>,
    pub outcome: Option<Outcome>,
    pub idp: Option<String>,
    /// At or after this time (Unix seconds).
    pub since: Option<i64>,
    /// At or before this time (Unix seconds).
    pub until: Option<i64>,
    /// Only events older than this event id: the paging cursor.
    pub before_id: Option<i64>,
    /// At most this many (default 1000).
    pub limit: Option<i64>,
}

/// A value bound to a dynamically built query.
enum Param {
    Uuid(Uuid),
    Text(String),
    Int(i64),
}

impl AuditFilter {
    /// The `WHERE` clause (with `$n` placeholders, which both backends accept) and its values.
    /// Built from the filters actually given, so each query can use its index.
    fn to_sql(&self) -> (String, Vec<Param>) {
        let mut clauses = Vec::new();
        let mut params = Vec::new();
        let mut add = |clause: &str, param: Param| {
            params.push(param);
            clauses.push(clause.replace('?', &format!("${}", params.len())));
        };
        if let Some(user) = self.user_id {
            add("a.user_id = ?", Param::Uuid(user));
        }
        if let Some(text) = &self.email_contains {
            add(
                "u.email LIKE ? ESCAPE '\\'",
                Param::Text(like_pattern(text)),
            );
        }
        if let Some(kind) = self.kind {
            add("a.kind = ?", Param::Text(kind.as_str().to_owned()));
        }
        if let Some(outcome) = self.outcome {
            add("a.outcome = ?", Param::Text(outcome.as_str().to_owned()));
        }
        if let Some(idp) = &self.idp {
            add("a.idp = ?", Param::Text(idp.clone()));
        }
        if let Some(since) = self.since {
            add("a.at >= ?", Param::Int(since));
        }
        if let Some(until) = self.until {
            add("a.at <= ?", Param::Int(until));
        }
        if let Some(before) = self.before_id {
            add("a.id < ?", Param::Int(before));
        }
        let limit = self.limit.unwrap_or(1000).clamp(1, 10_000);
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        (format!("{filter} ORDER BY a.id DESC LIMIT {limit}"), params)
    }
}

impl Store {
    /// Records an event on its own (for actions without a transaction, e.g. a failed login).
    pub async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        with_pool!(self, |pool| insert_audit!(pool, event));
        Ok(())
    }

    /// Events matching `filter`, newest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let (tail, params) = filter.to_sql();
        let sql = format!(
            "SELECT a.id, a.at, a.kind, a.outcome, a.user_id, u.email, a.actor, a.idp, a.ip, \
                    a.user_agent, a.detail \
             FROM audit_events a LEFT JOIN users u ON u.id = a.user_id {tail}"
        );
        let records = with_pool!(self, |pool| {
            let mut query = sqlx::query_as(&sql);
            for param in &params {
                query = match param {
                    Param::Uuid(v) => query.bind(*v),
                    Param::Text(v) => query.bind(v.as_str()),
                    Param::Int(v) => query.bind(*v),
                };
            }
            query.fetch_all(pool).await?
        });
        Ok(records)
    }

    /// Deletes events recorded before `before` (Unix seconds), a bounded batch at a time so a
    /// first prune of a large table does not hold locks for long. Returns how many.
    pub async fn prune_audit(&self, before: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let done = with_pool!(self, |pool| {
                sqlx::query(
                    "DELETE FROM audit_events WHERE id IN \
                     (SELECT id FROM audit_events WHERE at < $1 ORDER BY id LIMIT 10000)",
                )
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
            });
            total += done;
            if done < 10_000 {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacker_text_cannot_forge_lines() {
        let event = AuditEvent::new(AuditKind::LoginFailed, Outcome::Failure, 0)
            .detail("idp_error: x\n2026-01-01 login_succeeded \u{1b}[2J")
            .client(None, Some("ua\r\nforged".repeat(100)));
        let detail = event.detail.unwrap();
        assert!(
            !detail.contains('\n') && !detail.contains('\u{1b}'),
            "{detail:?}"
        );
        let ua = event.user_agent.unwrap();
        assert!(!ua.contains('\r') && ua.chars().count() == 256, "{ua:?}");
    }
}
