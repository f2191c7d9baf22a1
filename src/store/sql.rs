//! SQL that several tables' operations share: the audit and revocation rows written inside
//! another operation's transaction (so the change, its audit event and the cache revocation
//! commit together), and `LIKE` patterns. A leaf of the store: it imports none of its siblings.

pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit_events \
    (at, kind, outcome, user_id, actor, idp, ip, user_agent, detail) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Records `$event` on the transaction or connection `$conn`.
macro_rules! insert_audit {
    ($conn:expr, $event:expr) => {{
        let event: &$crate::store::AuditEvent = $event;
        sqlx::query($crate::store::sql::INSERT_AUDIT)
            .bind(event.at)
            .bind(event.kind.as_str())
            .bind(event.outcome.as_str())
            .bind(event.user_id)
            .bind(event.actor.as_deref())
            .bind(event.idp.as_deref())
            .bind(event.ip.as_deref())
            .bind(event.user_agent.as_deref())
            .bind(event.detail.as_deref())
            .execute($conn)
            .await?;
    }};
}
pub(crate) use insert_audit;

pub(super) const INSERT_REVOCATION: &str =
    "INSERT INTO revocations (user_id, session_hash, created_at) VALUES ($1, $2, $3)";

/// Adds a revocation on `$conn` at `$now`: of one session (`$session_hash: Option<&str>`), else
/// of every session of `$user_id` (`Option<Uuid>`), else of every session.
macro_rules! insert_revocation {
    ($conn:expr, $user_id:expr, $session_hash:expr, $now:expr) => {{
        let user_id: Option<uuid::Uuid> = $user_id;
        let session_hash: Option<&str> = $session_hash;
        sqlx::query($crate::store::sql::INSERT_REVOCATION)
            .bind(user_id)
            .bind(session_hash)
            .bind($now)
            .execute($conn)
            .await?;
    }};
}
pub(crate) use insert_revocation;

/// A `LIKE` pattern matching `text` anywhere, with `\` as the escape character. Emails are
/// stored with ASCII lower-cased, so the needle is too.
pub(super) fn like_pattern(text: &str) -> String {
    let needle = text
        .to_ascii_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{needle}%")
}
