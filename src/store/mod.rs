//! Persistence: users, identities, orgs, roles, sessions, login state, audit, revocations.
//!
//! One [`Store`] over either a SQLite or a PostgreSQL pool, chosen by the URL scheme. Each query
//! is written once (`$1` placeholders work in both) and compiled for both native drivers by the
//! [`with_pool!`] and [`with_write_tx!`] macros, so there is no runtime SQL dialect switch and no
//! `Any` driver. Timestamps are Unix seconds (`BIGINT`), ids are UUIDs (`uuid` in PostgreSQL,
//! 16-byte `BLOB` in SQLite).

mod app_tokens;
mod audit;
mod health;
mod local;
mod login_states;
mod orgs;
mod revocations;
mod sessions;
mod signing_keys;
mod sql;
mod users;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use app_tokens::{
    AppCode, FamilyRevocation, NewAppCode, NewRefreshToken, RefreshGrant, Rotation,
};
pub use audit::{Actor, AuditEvent, AuditFilter, AuditKind, AuditRecord, Outcome};
pub use health::{Access, Health};
pub use local::{Credentials, Flow, NewFlow, PasswordChange};
pub use login_states::{LoginState, NewLoginState, PendingLoginCaps};
pub use orgs::{Org, OrgSignInChange};
pub use revocations::{Revocation, RevocationScope};
pub use sessions::{LoginFacts, NewSession, SessionRecord, SessionTouch};
pub use signing_keys::StoredKey;
pub use users::{IdentityRow, MappedRole, ProvisionOutcome, ProvisionRequest, User};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// Refused without asking: reads are known to fail (see [`Store::request_read`]).
    #[error("{0}: the database is unavailable")]
    Unavailable(&'static str),
}

impl From<crate::email::EmailError> for StoreError {
    fn from(e: crate::email::EmailError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl StoreError {
    /// A unique-constraint violation: two writers raced for the same row.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }

    /// SQLite's "database is locked" after the busy timeout, or PostgreSQL's serialization
    /// failure: the transaction may simply be retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(e)) => {
                matches!(
                    e.code().as_deref(),
                    Some("5" | "6" | "517" | "40001" | "40P01")
                )
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Cheap to clone: a handle to a connection pool.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    health: Arc<Health>,
    /// Statements running or waiting for a connection (see [`Store::pool_stats`]).
    in_flight: Arc<AtomicI64>,
    /// How long a request-path read may take ([`Store::bounded`]).
    read_timeout: Duration,
}

/// Counts a statement in flight while alive.
pub(crate) struct InFlight(Arc<AtomicI64>);

impl InFlight {
    pub(crate) fn enter(counter: &Arc<AtomicI64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection pool right now, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
    /// Statements waiting for a connection: those in flight beyond the connections in use.
    /// Approximate, as the two counts are read a moment apart.
    pub waiting: u32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("kind", &self.kind()).finish()
    }
}

/// Runs `$body` with `$pool` bound to the native pool of either backend.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {{
        let _in_flight = $crate::store::InFlight::enter(&$store.in_flight);
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    }};
}

/// Runs `$body` inside a write transaction and commits it when `$body` evaluates without an
/// early `?` return (which rolls back). SQLite takes the write lock up front (`BEGIN
/// IMMEDIATE`), so a transaction that reads then writes cannot fail halfway on a lock upgrade.
macro_rules! with_write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let _in_flight = $crate::store::InFlight::enter(&$store.in_flight);
        match &$store.backend {
            $crate::store::Backend::Sqlite(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::store::Backend::Postgres(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    }};
}

pub(crate) use {with_pool, with_write_tx};

/// SQLite's page cache per pooled connection, in KiB: hot index pages of the session and user
/// tables fit (sessions found in the database are cached in memory above it anyway).
const SQLITE_PAGE_CACHE_KIB: u32 = 1024;

/// `database.timeout_ms`'s default: the one source of it.
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 2_000;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                // Each connection keeps its own page cache; bounded, so the pool's share of
                // the RSS is known (SQLite's default is about 2 MiB per connection).
                .pragma("cache_size", format!("-{SQLITE_PAGE_CACHE_KIB}"));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(options)
                .await?;
            Backend::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(3))
                .connect(url)
                .await?;
            Backend::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        Ok(Self {
            backend,
            health: Arc::default(),
            in_flight: Arc::default(),
            read_timeout: Duration::from_millis(DEFAULT_READ_TIMEOUT_MS),
        })
    }

    /// Bounds request-path reads (and the readiness probe) by `timeout` (`database.timeout_ms`).
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    pub fn pool_stats(&self) -> PoolStats {
        let (size, idle, max) = with_pool_stats(&self.backend);
        let in_use = size.saturating_sub(idle);
        let in_flight = u32::try_from(self.in_flight.load(Ordering::Relaxed)).unwrap_or(0);
        PoolStats {
            in_use,
            idle,
            max,
            waiting: in_flight.saturating_sub(in_use),
        }
    }

    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }

    /// The PostgreSQL pool, for `LISTEN`.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Postgres(pool) => Some(pool),
            Backend::Sqlite(_) => None,
        }
    }
}

fn with_pool_stats(backend: &Backend) -> (u32, u32, u32) {
    match backend {
        Backend::Sqlite(p) => (
            p.size(),
            u32::try_from(p.num_idle()).unwrap_or(u32::MAX),
            p.options().get_max_connections(),
        ),
        Backend::Postgres(p) => (
            p.size(),
            u32::try_from(p.num_idle()).unwrap_or(u32::MAX),
            p.options().get_max_connections(),
        ),
    }
}

/// A URL safe to print: the password, if any, replaced.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
