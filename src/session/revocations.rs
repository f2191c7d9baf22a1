//! Keeps this replica's session cache in step with revocations made elsewhere (other replicas,
//! the CLI).
//!
//! Source of truth: the `revocations` table, written in the same transaction as each change.
//! This replica reads it on a timer, when PostgreSQL `NOTIFY`s a new row, and when asked to
//! through the admin listener (the CLI does so after each change, so that a revocation is in
//! effect when the command returns).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};

use super::{Sessions, TokenHash};
use crate::bearer::Bearer;
use crate::clock::{unix_now, unix_now_millis};
use crate::metrics::Metrics;
use crate::store::{Revocation, RevocationScope, Store, StoreError};

/// Rows are re-read for this long, so rows committed out of id order, or stamped by a writer
/// whose clock lags ours, are still seen.
const WINDOW_SECONDS: i64 = 300;
const PG_CHANNEL: &str = "gatehouse_revocations";
/// Reconnect delays of the listener: doubling from the first to the last.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

pub struct RevocationSync {
    store: Store,
    sessions: Sessions,
    /// Bearer callers' users are cached too, and revoked the same way.
    bearer: Arc<Bearer>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    wake: Notify,
}

struct State {
    /// Revocations older than this predate the process (and its empty cache).
    started_at: i64,
    /// Applied revocation ids, with their time, pruned past the window.
    applied: HashMap<i64, i64>,
}

impl RevocationSync {
    pub fn new(
        store: Store,
        sessions: Sessions,
        bearer: Arc<Bearer>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            sessions,
            bearer,
            metrics,
            state: Mutex::new(State {
                started_at: unix_now(),
                applied: HashMap::new(),
            }),
            wake: Notify::new(),
        })
    }

    /// Reads new revocations and drops the matching cache entries. Returns how many applied.
    pub async fn sync(&self) -> Result<usize, StoreError> {
        let mut state = self.state.lock().await;
        let now = unix_now();
        let since = state.started_at.max(now - WINDOW_SECONDS);
        let rows = self.store.revocations_since(since - 1).await?;
        let mut applied = 0;
        for row in rows {
            if state.applied.insert(row.id, row.created_at).is_some() {
                continue;
            }
            applied += 1;
            self.apply(&row);
        }
        state.applied.retain(|_, at| *at >= now - WINDOW_SECONDS);
        self.metrics.revocations_applied(applied);
        Ok(applied)
    }

    fn apply(&self, revocation: &Revocation) {
        match revocation.scope() {
            RevocationScope::Session(hex) => match TokenHash::from_hex(&hex) {
                Some(hash) => self.sessions.forget(&hash),
                None => self.sessions.forget_all(), // unreadable: be safe
            },
            RevocationScope::User(user) => {
                self.sessions.forget_user(user);
                self.bearer.forget_user(user);
            }
            RevocationScope::Everyone => {
                self.sessions.forget_all();
                self.bearer.forget_all();
            }
        }
    }

    /// Reads revocations every `poll` (never, when zero) and whenever woken, until the process
    /// ends. With PostgreSQL, a listener wakes it on every new row.
    pub async fn run(self: Arc<Self>, poll: Duration) {
        if let Some(pool) = self.store.postgres_pool().cloned() {
            // Until the listener is up, nothing is pushed: trust the cache less.
            self.set_pushed(false);
            tokio::spawn(self.clone().listen_postgres(pool));
        }
        loop {
            if poll.is_zero() {
                self.wake.notified().await;
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = self.wake.notified() => {}
                }
            }
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "could not read revocations");
            }
        }
    }

    fn set_pushed(&self, up: bool) {
        self.sessions.set_revocations_pushed(up);
        self.metrics.set_listener_up(up);
    }

    /// Holds a `LISTEN gatehouse_revocations` connection (a trigger `NOTIFY`s every new
    /// revocation) and wakes the reader on each notification. When the connection drops, it
    /// reconnects with backoff; meanwhile the session cache falls back to its short TTL.
    async fn listen_postgres(self: Arc<Self>, pool: sqlx::PgPool) {
        let mut delay = RECONNECT_FIRST;
        loop {
            match self.listen_once(&pool, &mut delay).await {
                Ok(()) => tracing::warn!("LISTEN {PG_CHANNEL}: connection lost; reconnecting"),
                Err(e) => tracing::warn!(
                    error = %e,
                    retry_in_ms = delay.as_millis(),
                    "LISTEN {PG_CHANNEL} failed; caching sessions for the fallback TTL meanwhile"
                ),
            }
            self.set_pushed(false);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_MAX);
        }
    }

    /// One listening connection, until it fails. Returns `Ok` when the connection was lost.
    async fn listen_once(
        &self,
        pool: &sqlx::PgPool,
        delay: &mut Duration,
    ) -> Result<(), sqlx::Error> {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        // Report a lost connection instead of reconnecting inside `try_recv`: the replica
        // must know that notifications may have been missed (and say so in its metrics).
        listener.eager_reconnect(false);
        listener.listen(PG_CHANNEL).await?;
        tracing::info!("LISTEN {PG_CHANNEL}: revocations are pushed to this replica");
        *delay = RECONNECT_FIRST;
        self.set_pushed(true);
        // Whatever was written while nobody listened.
        self.wake.notify_one();
        while let Some(notification) = listener.try_recv().await? {
            if let Some(lag) = notify_lag(notification.payload()) {
                self.metrics.record_notify_lag(lag);
            }
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// The payload is `<id> <written at, Unix milliseconds, database clock>`.
fn notify_lag(payload: &str) -> Option<Duration> {
    let written_ms: i64 = payload.split_once(' ')?.1.parse().ok()?;
    // A database clock ahead of ours reads as no lag, not a negative one.
    let lag_ms = unix_now_millis().saturating_sub(written_ms);
    Some(Duration::from_millis(u64::try_from(lag_ms).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_from_payload() {
        assert_eq!(notify_lag("42"), None, "older triggers send only the id");
        assert_eq!(notify_lag("42 x"), None);
        let lag = notify_lag("42 1").unwrap();
        assert!(lag > Duration::from_secs(1_000_000));
        assert_eq!(notify_lag("42 99999999999999"), Some(Duration::ZERO));
    }
}
