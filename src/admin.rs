//! The admin operations: one implementation behind the CLI (`gatehouse org|user|session|keys|
//! audit`) and the admin API (`/admin/v1/*`). Each records its actor in the audit trail and
//! returns plain data, which the CLI prints and the API serializes.
//!
//! Changes that cached sessions must not outlive are written together with a revocation (see
//! [`crate::session::revocations`]); the caller makes its own replica apply it at once.

use std::str::FromStr;

use chrono::DateTime;
use serde::Serialize;
use uuid::Uuid;

use crate::config::Settings;
use crate::email::Email;
use crate::local::methods::{self as local_methods, Method};
use crate::local::password::{PasswordPool, check_strength};
use crate::session::{self, Lifetimes};
pub use crate::store::Actor;
use crate::store::{
    AuditEvent, AuditFilter, AuditKind, AuditRecord, IdentityRow, MappedRole, Org, OrgSignInChange,
    Outcome, PasswordChange, Store, StoreError, User,
};

/// Page sizes: the default, and the most one request may ask for.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The database failed: unavailable, or an internal error (logged, not shown in full).
    #[error(transparent)]
    Store(StoreError),
    #[error("signing keys: {0}")]
    Keys(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Self::NotFound(m),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::Invalid(m) => Self::Invalid(m),
            other => Self::Store(other),
        }
    }
}

/// The CLI, run by the operating-system user in `$USER` (when set).
pub fn cli_actor() -> Actor {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty());
    Actor::from(
        user.map_or_else(|| "cli".to_owned(), |u| format!("cli:{u}"))
            .as_str(),
    )
}

fn event(actor: &Actor, kind: AuditKind, now: i64) -> AuditEvent {
    AuditEvent::new(kind, Outcome::Success, now).by(actor)
}

/// A user named by id or by email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(Uuid),
    Email(String),
}

impl FromStr for UserRef {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match Uuid::parse_str(s.trim()) {
            Ok(id) => Self::Id(id),
            Err(_) => Self::Email(s.trim().to_owned()),
        })
    }
}

impl std::fmt::Display for UserRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Email(email) => write!(f, "{email}"),
        }
    }
}

/// One user with everything `user show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct UserDetail {
    #[serde(flatten)]
    pub user: User,
    pub org: Option<Org>,
    pub identities: Vec<IdentityRow>,
    /// The roles that come from IdP claims (`roles` holds them too): a login through that
    /// IdP replaces them, and `revoke` cannot remove them.
    pub idp_roles: Vec<MappedRole>,
    pub live_sessions: i64,
}

/// The result of a change: the user after it, and whether anything changed.
#[derive(Debug, Clone, Serialize)]
pub struct UserChange {
    pub user: User,
    pub changed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[derive(Serialize)]
pub struct CreatedSession {
    pub user: User,
    pub user_created: bool,
    /// The cookie value: shown once, stored only as a hash.
    pub token: String,
    pub cookie_name: String,
}

impl std::fmt::Debug for CreatedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedSession")
            .field("user", &self.user.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub kid: String,
    pub algorithm: String,
    pub activates_at: i64,
    /// `current` (signs now), `next` (published, signs from `activates_at`) or `retired`
    /// (published until its tokens have expired).
    pub state: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct RotatedKey {
    pub kid: String,
    pub activates_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    /// Newest first.
    pub events: Vec<AuditRecord>,
    /// Pass as `cursor` for older events; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Audit filters as the API, the page and the CLI receive them: text, parsed in one place.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    /// A user id, an email, or part of an email.
    pub user: Option<String>,
    pub kind: Option<String>,
    pub outcome: Option<String>,
    pub idp: Option<String>,
    /// RFC 3339, a date (`2026-11-28`, UTC midnight), or Unix seconds.
    pub since: Option<String>,
    /// Same forms; a bare date means the end of that day.
    pub until: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The operations, for one actor.
pub struct Admin<'a> {
    store: &'a Store,
    settings: &'a Settings,
    actor: Actor,
}

impl<'a> Admin<'a> {
    pub fn new(store: &'a Store, settings: &'a Settings, actor: Actor) -> Self {
        Self {
            store,
            settings,
            actor,
        }
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    // === orgs ===

    pub async fn list_orgs(&self) -> Result<Vec<Org>, AdminError> {
        Ok(self.store.list_orgs().await?)
    }

    pub async fn create_org(
        &self,
        name: &str,
        domains: &[String],
        auto_enable: bool,
        now: i64,
    ) -> Result<Org, AdminError> {
        if domains.is_empty() {
            return Err(AdminError::Invalid(
                "an org needs at least one domain".into(),
            ));
        }
        let org = self
            .store
            .create_org(name, domains, auto_enable, now)
            .await?;
        let event = event(&self.actor, AuditKind::OrgCreated, now).detail(format!(
            "{} ({})",
            org.name,
            org.domains.join(",")
        ));
        self.store.record_audit(&event).await?;
        Ok(org)
    }

    /// One org, by name or id.
    pub async fn find_org(&self, org: &str) -> Result<Org, AdminError> {
        self.store
            .org_by_name_or_id(org)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no org {org:?}")))
    }

    /// Changes an org's sign-in settings (`gatehouse org set`, `PATCH /admin/v1/orgs/{org}`).
    /// A named IdP must be configured. Audited as `org_updated`.
    pub async fn set_org_signin(
        &self,
        org: &str,
        change: &OrgSignInChange,
        now: i64,
    ) -> Result<Org, AdminError> {
        if let Some(idp) = change
            .idp
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty())
            && !self.settings.idps.iter().any(|i| i.name == idp)
        {
            let known: Vec<&str> = self.settings.idps.iter().map(|i| i.name.as_str()).collect();
            return Err(AdminError::Invalid(format!(
                "no [[idp]] is called {idp:?} (configured: {known:?})"
            )));
        }
        let mut change = change.clone();
        if let Some(list) = &change.methods {
            change.methods = Some(self.checked_methods(list)?);
        }
        Ok(self
            .store
            .set_org_signin(org, &change, self.actor.clone(), now)
            .await?)
    }

    /// An org's method list, parsed and checked against `[local]`; empty means the default.
    fn checked_methods(&self, list: &[String]) -> Result<Vec<String>, AdminError> {
        if list.iter().all(|m| m.trim().is_empty()) {
            return Ok(Vec::new());
        }
        let methods = local_methods::parse_list(&list.join(",")).map_err(AdminError::Invalid)?;
        let Some(local) = &self.settings.local else {
            if methods.iter().any(|m| m.is_local()) {
                return Err(AdminError::Invalid(
                    "local sign-in is not configured: add a [local] section (and [email]) first"
                        .into(),
                ));
            }
            return Ok(methods.iter().map(|m| m.as_str().to_owned()).collect());
        };
        if methods.contains(&Method::Totp) && local.mfa == local_methods::MfaPolicy::Off {
            return Err(AdminError::Invalid(
                "totp is listed but TOTP is off (local.mfa = \"off\")".into(),
            ));
        }
        Ok(methods.iter().map(|m| m.as_str().to_owned()).collect())
    }

    // === local credentials ===

    /// Sets a user's local password (`gatehouse user set-password`): the strength rules
    /// apply, their org must allow passwords, and their other sessions and refresh tokens end.
    pub async fn set_password(
        &self,
        user: &UserRef,
        password: String,
        now: i64,
    ) -> Result<User, AdminError> {
        let Some(local) = &self.settings.local else {
            return Err(AdminError::Invalid(
                "local sign-in is not configured ([local])".into(),
            ));
        };
        let user = self.find_user(user).await?;
        let email = Email::parse(&user.email).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let org = self.store.org_for_domain(email.domain()).await?;
        let realm = crate::local::realm_of(local, &self.settings.idps, email.domain(), org);
        if !realm.allows(Method::Password) {
            return Err(AdminError::Invalid(format!(
                "{} may not use a password: {}",
                user.email,
                realm.refusal()
            )));
        }
        let product = self
            .settings
            .email
            .as_ref()
            .map_or("gatehouse", |e| e.product_name.as_str());
        check_strength(&password, &user.email, product, local.password_min_length)
            .map_err(|w| AdminError::Invalid(format!("password refused: {w}")))?;
        let pool = PasswordPool::new().map_err(|e| AdminError::Invalid(e.to_string()))?;
        let hash = pool
            .hash(secrecy::SecretString::from(password))
            .await
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        let event = event(&self.actor, AuditKind::PasswordSet, now)
            .user(user.id)
            .detail("set by an operator; other sessions and refresh tokens ended");
        self.store
            .set_password(
                &PasswordChange {
                    user_id: user.id,
                    hash,
                    kind: AuditKind::PasswordSet,
                    keep_session: None,
                    reset_hash: None,
                },
                &event,
                now,
            )
            .await?;
        Ok(user)
    }

    /// Lifts a block on a user's local sign-in. `changed`: there was one.
    pub async fn unlock(&self, user: &UserRef, now: i64) -> Result<UserChange, AdminError> {
        let user = self.find_user(user).await?;
        let changed = self
            .store
            .unlock_local(user.id, self.actor.clone(), now)
            .await?;
        Ok(UserChange { user, changed })
    }

    /// Removes a user's TOTP. `changed`: they had it.
    pub async fn mfa_reset(&self, user: &UserRef, now: i64) -> Result<UserChange, AdminError> {
        let user = self.find_user(user).await?;
        let changed = self
            .store
            .reset_mfa(user.id, self.actor.clone(), now)
            .await?;
        Ok(UserChange { user, changed })
    }

    // === users ===

    pub async fn find_user(&self, user: &UserRef) -> Result<User, AdminError> {
        let found = match user {
            UserRef::Id(id) => self.store.user_by_id(*id).await?,
            UserRef::Email(email) => self.store.user_by_email(email).await?,
        };
        found.ok_or_else(|| AdminError::NotFound(format!("no user {user}")))
    }

    /// Users by email: those containing `search` if given, after `cursor`.
    pub async fn list_users(
        &self,
        search: Option<&str>,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<UserPage, AdminError> {
        let limit = page_size(limit)?;
        let search = search.map(str::trim).filter(|s| !s.is_empty());
        let mut users = self.store.list_users(search, cursor, limit + 1).await?;
        let more = users.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        users.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_cursor = more
            .then(|| users.last().map(|u| u.email.clone()))
            .flatten();
        Ok(UserPage { users, next_cursor })
    }

    pub async fn user_detail(&self, user: &UserRef, now: i64) -> Result<UserDetail, AdminError> {
        let user = self.find_user(user).await?;
        let org = match user.org_id {
            Some(id) => self.store.org_by_id(id).await?,
            None => None,
        };
        let identities = self.store.identities_of(user.id).await?;
        let idp_roles = self.store.idp_roles_of(user.id).await?;
        let live_sessions = self.store.count_live_sessions(user.id, now).await?;
        Ok(UserDetail {
            user,
            org,
            identities,
            idp_roles,
            live_sessions,
        })
    }

    /// Enables or disables a user; disabling ends their sessions.
    pub async fn set_enabled(
        &self,
        user: &UserRef,
        enabled: bool,
        now: i64,
    ) -> Result<UserChange, AdminError> {
        let found = self.find_user(user).await?;
        let changed = self
            .store
            .set_user_enabled(found.id, enabled, &self.actor, now)
            .await?;
        Ok(UserChange {
            user: self.find_user(&UserRef::Id(found.id)).await?,
            changed,
        })
    }

    /// Grants (`grant`) or revokes a role.
    pub async fn set_role(
        &self,
        user: &UserRef,
        role: &str,
        grant: bool,
        now: i64,
    ) -> Result<UserChange, AdminError> {
        let found = self.find_user(user).await?;
        let changed = self
            .store
            .set_role(found.id, role, grant, &self.actor, now)
            .await?;
        if !grant && !changed {
            // Nothing granted by hand to revoke: if the role comes from an IdP, say so rather
            // than report a silent no-op while the user keeps it.
            let mapped = self.store.idp_roles_of(found.id).await?;
            if let Some(m) = mapped.iter().find(|m| m.role == role.trim()) {
                return Err(AdminError::Conflict(format!(
                    "{} has the role {:?} from identity provider {:?} (its role_claims); each \
                     sign-in through it sets it again: change the mapping or the user's \
                     groups at the IdP",
                    found.email, m.role, m.idp
                )));
            }
        }
        Ok(UserChange {
            user: self.find_user(&UserRef::Id(found.id)).await?,
            changed,
        })
    }

    /// Removes an IdP identity from a user (ending their sessions). Not found when the user
    /// has no such identity.
    pub async fn unlink_identity(
        &self,
        user: &UserRef,
        issuer: &str,
        subject: &str,
        now: i64,
    ) -> Result<User, AdminError> {
        let found = self.find_user(user).await?;
        let removed = self
            .store
            .unlink_identity(found.id, issuer, subject, &self.actor, now)
            .await?;
        if !removed {
            return Err(AdminError::NotFound(format!(
                "{} has no identity ({issuer}, {subject})",
                found.email
            )));
        }
        Ok(found)
    }

    // === sessions ===

    /// Creates a session (and the user, if new, by the usual org and enablement rules).
    pub async fn create_session(
        &self,
        email: &str,
        now: i64,
    ) -> Result<CreatedSession, AdminError> {
        let (user, user_created) = self
            .store
            .ensure_user(
                email,
                self.settings.provisioning.new_users_enabled,
                &self.actor,
                now,
            )
            .await?;
        let lifetimes = Lifetimes::from_config(&self.settings.session);
        let token = session::create(self.store, lifetimes, user.id, now)
            .await
            .map_err(|e| match e {
                session::SessionError::Store(se) => AdminError::from(se),
                other => AdminError::Invalid(other.to_string()),
            })?;
        let event = event(&self.actor, AuditKind::SessionCreated, now).user(user.id);
        self.store.record_audit(&event).await?;
        Ok(CreatedSession {
            user,
            user_created,
            token: token.as_str().to_owned(),
            cookie_name: self.settings.cookie_name().to_owned(),
        })
    }

    /// Ends every live session of one user, or of everyone (`None`). Returns how many.
    pub async fn revoke_sessions(
        &self,
        user: Option<&UserRef>,
        now: i64,
    ) -> Result<u64, AdminError> {
        let user_id = match user {
            Some(u) => Some(self.find_user(u).await?.id),
            None => None,
        };
        Ok(self
            .store
            .revoke_sessions(user_id, &self.actor, now)
            .await?)
    }

    // === signing keys ===

    pub async fn keys(&self, now: i64) -> Result<Vec<KeyView>, AdminError> {
        let keys = self.store.signing_keys().await?;
        let current = keys
            .iter()
            .rev()
            .find(|k| k.activates_at <= now)
            .map(|k| k.kid.clone());
        Ok(keys
            .into_iter()
            .map(|k| KeyView {
                state: if Some(&k.kid) == current.as_ref() {
                    "current"
                } else if k.activates_at > now {
                    "next"
                } else {
                    "retired"
                },
                kid: k.kid,
                algorithm: k.algorithm,
                activates_at: k.activates_at,
            })
            .collect())
    }

    /// Adds a signing key (see `gatehouse keys rotate`).
    pub async fn rotate_key(&self, at_once: bool, now: i64) -> Result<RotatedKey, AdminError> {
        let (kid, activates_at) = crate::tokens::rotate(self.settings, self.store, now, at_once)
            .await
            .map_err(|e| match e {
                crate::tokens::TokenError::Store(se) => AdminError::from(se),
                other => AdminError::Keys(other.to_string()),
            })?;
        let event = event(&self.actor, AuditKind::KeyRotated, now)
            .detail(format!("kid {kid}, signs from {}", rfc3339(activates_at)));
        self.store.record_audit(&event).await?;
        Ok(RotatedKey { kid, activates_at })
    }

    // === audit ===

    /// Events matching `query`, newest first, a page at a time.
    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, AdminError> {
        let limit = page_size(query.limit)?;
        let mut filter = AuditFilter {
            kind: parse_opt(query.kind.as_deref(), "kind", AuditKind::parse, || {
                let known: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("one of: {}", known.join(", "))
            })?,
            outcome: parse_opt(query.outcome.as_deref(), "outcome", Outcome::parse, || {
                "success or failure".into()
            })?,
            idp: nonempty(query.idp.as_deref()).map(str::to_owned),
            since: parse_opt(
                query.since.as_deref(),
                "since",
                |s| parse_time(s, false),
                || "RFC 3339, a date (YYYY-MM-DD) or Unix seconds".into(),
            )?,
            until: parse_opt(
                query.until.as_deref(),
                "until",
                |s| parse_time(s, true),
                || "RFC 3339, a date (YYYY-MM-DD) or Unix seconds".into(),
            )?,
            before_id: parse_opt(
                query.cursor.as_deref(),
                "cursor",
                |c| c.parse().ok(),
                || "a next_cursor value".into(),
            )?,
            limit: Some(limit + 1),
            ..AuditFilter::default()
        };
        if let Some(user) = nonempty(query.user.as_deref()) {
            // An id, an exact email (canonical form), else part of an email.
            match user.parse::<UserRef>() {
                Ok(UserRef::Id(id)) => filter.user_id = Some(id),
                Ok(UserRef::Email(text)) => {
                    match self.store.user_by_email(&text).await {
                        Ok(Some(u)) => filter.user_id = Some(u.id),
                        // Not a whole address, or nobody's: a search.
                        Ok(None) | Err(StoreError::Invalid(_)) => {
                            filter.email_contains = Some(text);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(never) => match never {},
            }
        }
        let mut events = self.store.list_audit(&filter).await?;
        let more = events.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_cursor = more
            .then(|| events.last().map(|e| e.id.to_string()))
            .flatten();
        Ok(AuditPage {
            events,
            next_cursor,
        })
    }
}

fn page_size(limit: Option<i64>) -> Result<i64, AdminError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(AdminError::Invalid(format!(
            "limit {n}: must be between 1 and {MAX_PAGE}"
        ))),
    }
}

fn nonempty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Parses an optional filter value; an empty one means no filter.
fn parse_opt<T>(
    value: Option<&str>,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
    expected: impl Fn() -> String,
) -> Result<Option<T>, AdminError> {
    match nonempty(value) {
        None => Ok(None),
        Some(v) => parse(v).map(Some).ok_or_else(|| {
            AdminError::Invalid(format!(
                "{name}={v:?} is not valid: expected {}",
                expected()
            ))
        }),
    }
}

/// RFC 3339, a date (`YYYY-MM-DD`: the start of that day in UTC, or its last second with
/// `end_of_day`), or Unix seconds.
pub fn parse_time(value: &str, end_of_day: bool) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.timestamp());
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let start = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
        return Some(if end_of_day { start + 86_399 } else { start });
    }
    value.parse::<i64>().ok().filter(|t| *t >= 0)
}

pub fn rfc3339(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        // (input, end_of_day, expected)
        let cases = [
            ("2026-11-28T00:00:00Z", false, Some(1_795_824_000)),
            ("2026-11-28T01:00:00+01:00", false, Some(1_795_824_000)),
            ("2026-11-28", false, Some(1_795_824_000)),
            ("2026-11-28", true, Some(1_795_824_000 + 86_399)),
            ("1795824000", false, Some(1_795_824_000)),
            ("-5", false, None),
            ("yesterday", false, None),
            ("2026-13-01", false, None),
        ];
        for (input, end, expected) in cases {
            assert_eq!(parse_time(input, end), expected, "{input}");
        }
    }

    #[test]
    fn user_refs() {
        let id = Uuid::new_v4();
        assert_eq!(id.to_string().parse::<UserRef>(), Ok(UserRef::Id(id)));
        assert_eq!(
            " a@b.test ".parse::<UserRef>(),
            Ok(UserRef::Email("a@b.test".into()))
        );
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_size(Some(1)).unwrap(), 1);
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(MAX_PAGE + 1)).is_err());
    }
}
