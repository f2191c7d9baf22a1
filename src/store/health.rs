//! Whether the database answers, as this process has seen it.
//!
//! The request paths that touch the database report what happened ([`Store::observe`]); a
//! background probe ([`Store::probe`]) notices when it answers again, so recovery needs no
//! request to risk it. While the database is down, cached sessions may be served stale for a
//! bounded time (`session.stale_while_db_down_seconds`), and `/readyz` fails.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::{Store, StoreError, with_pool};

/// Shared by every clone of a [`Store`].
#[derive(Debug, Default)]
pub struct Health {
    /// Unix seconds when reads began to fail; 0 while they work.
    reads_down_since: AtomicI64,
    /// Unix seconds when writes began to fail (disk full, read-only); 0 while they work.
    /// Reads alone do not prove that such an outage is over.
    writes_down_since: AtomicI64,
}

/// What kind of statement it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Health {
    /// When the current outage began, if the database is down for reads or writes.
    pub fn down_since(&self) -> Option<i64> {
        [self.reads_down_since(), self.writes_down_since()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When reads began to fail, if they fail.
    pub fn reads_down_since(&self) -> Option<i64> {
        nonzero(self.reads_down_since.load(Ordering::Relaxed))
    }

    fn writes_down_since(&self) -> Option<i64> {
        nonzero(self.writes_down_since.load(Ordering::Relaxed))
    }

    pub fn is_up(&self) -> bool {
        self.down_since().is_none()
    }

    /// Whether writes are known to fail while reads work.
    fn writes_failing(&self) -> bool {
        self.writes_down_since().is_some()
    }

    fn mark_down(&self, access: Access, error: &StoreError, now: i64) {
        let since = match access {
            Access::Read => &self.reads_down_since,
            Access::Write => &self.writes_down_since,
        };
        if since
            .compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::error!(error = %error, ?access, "database unavailable");
        }
    }

    fn mark_up(&self, access: Access) {
        let was_down = self.down_since().is_some();
        self.reads_down_since.store(0, Ordering::Relaxed);
        if access == Access::Write {
            self.writes_down_since.store(0, Ordering::Relaxed);
        }
        if was_down && self.is_up() {
            tracing::warn!("database available again");
        }
    }
}

fn nonzero(at: i64) -> Option<i64> {
    (at != 0).then_some(at)
}

impl StoreError {
    /// Whether this says the database cannot be used right now (unreachable, refusing
    /// connections, out of space, locked), as opposed to a problem with the statement or data.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Unavailable(_) => true,
            Self::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                        sqlite_unavailable(&code)
                    } else {
                        postgres_unavailable(&code)
                    }
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// SQLite result codes (extended codes carry the primary one in the low byte): busy, locked,
/// read-only, I/O error, corrupt, full, cannot open, not a database.
fn sqlite_unavailable(code: &str) -> bool {
    code.parse::<i32>()
        .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 8 | 10 | 11 | 13 | 14 | 26))
}

/// PostgreSQL SQLSTATEs of connection trouble, resource exhaustion (disk full, too many
/// connections), operator intervention (shutdown), system and internal errors, and 55000,
/// which is what `ALLOW_CONNECTIONS false` answers.
fn postgres_unavailable(code: &str) -> bool {
    ["08", "53", "57", "58", "XX"]
        .iter()
        .any(|class| code.starts_with(class))
        || code == "55000"
}

impl Store {
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Records what a request-path statement said about the database's availability.
    pub fn observe<T>(&self, access: Access, result: &Result<T, StoreError>, now: i64) {
        match result {
            Ok(_) => self.health.mark_up(access),
            Err(e) => self.observe_error(access, e, now),
        }
    }

    /// `read`, failing with [`StoreError::Timeout`] (an outage) past the read timeout: a
    /// half-open connection must not hold a check.
    async fn bounded<T>(
        &self,
        what: &'static str,
        read: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.read_timeout, read)
            .await
            .unwrap_or(Err(StoreError::Timeout(what)))
    }

    /// A read on a check's path. Refused at once while reads are known to fail (the probe
    /// notices recovery), so checks do not each wait out the timeout. Otherwise it runs to its
    /// end in a task of its own, bounded by the read timeout, and its outcome is recorded even
    /// when the caller is gone: Envoy gives up on a check after 250 ms (`ext_authz` timeout),
    /// long before the read timeout, and a silent database must still be noticed, or no later
    /// check would fail fast and no cached session be served stale.
    pub async fn request_read<T, Fut>(
        &self,
        what: &'static str,
        now: i64,
        read: Fut,
    ) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        if self.health.reads_down_since().is_some() {
            return Err(StoreError::Unavailable(what));
        }
        let store = self.clone();
        tokio::spawn(async move {
            let result = store.bounded(what, read).await;
            store.observe(Access::Read, &result, now);
            result
        })
        .await
        // The read panicked: fail closed, as for any error.
        .unwrap_or(Err(StoreError::Unavailable(what)))
    }

    /// Records a failed statement; only failures of availability count.
    pub fn observe_error(&self, access: Access, error: &StoreError, now: i64) {
        if error.is_unavailable() {
            self.health.mark_down(access, error, now);
        }
    }

    /// A round trip to the database (a read, plus a one-row write while writes are failing),
    /// each bounded by `timeout` (which counts as an outage of that kind), recorded in
    /// [`Health`]. For `/readyz` and the background probe.
    pub async fn probe(&self, now: i64, timeout: Duration) -> Result<(), StoreError> {
        let read = tokio::time::timeout(timeout, self.ping())
            .await
            .unwrap_or(Err(StoreError::Timeout("database read probe")));
        self.observe(Access::Read, &read, now);
        read?;
        if self.health.writes_failing() {
            let write = tokio::time::timeout(timeout, self.write_probe(now))
                .await
                .unwrap_or(Err(StoreError::Timeout("database write probe")));
            self.observe(Access::Write, &write, now);
            write?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    async fn write_probe(&self, now: i64) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO write_probes (id, at) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            )
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_codes() {
        // (code, unavailable)
        let sqlite = [
            ("5", true),     // SQLITE_BUSY
            ("517", true),   // SQLITE_BUSY_SNAPSHOT
            ("13", true),    // SQLITE_FULL
            ("14", true),    // SQLITE_CANTOPEN
            ("2067", false), // SQLITE_CONSTRAINT_UNIQUE
            ("1", false),    // SQLITE_ERROR (bad SQL)
        ];
        for (code, expected) in sqlite {
            assert_eq!(sqlite_unavailable(code), expected, "sqlite {code}");
        }
        let postgres = [
            ("08006", true), // connection failure
            ("57P01", true), // admin shutdown
            ("53100", true), // disk full
            ("55000", true), // database not accepting connections
            ("23505", false),
            ("42P01", false),
            ("40001", false),
        ];
        for (code, expected) in postgres {
            assert_eq!(postgres_unavailable(code), expected, "postgres {code}");
        }
    }

    #[test]
    fn health_follows_reads_and_writes() {
        let h = Health::default();
        let down = StoreError::Timeout("t");
        assert!(h.is_up());
        h.mark_down(Access::Read, &down, 100);
        h.mark_down(Access::Read, &down, 200);
        assert_eq!(
            h.down_since(),
            Some(100),
            "the first failure dates the outage"
        );
        h.mark_up(Access::Read);
        assert!(h.is_up());
        h.mark_down(Access::Write, &down, 300);
        h.mark_up(Access::Read);
        assert_eq!(
            h.down_since(),
            Some(300),
            "a read does not end a write outage"
        );
        assert_eq!(h.reads_down_since(), None);
        h.mark_down(Access::Read, &down, 400);
        h.mark_up(Access::Write);
        assert!(h.is_up(), "a write proves reads work too");
    }
}
