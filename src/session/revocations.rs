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
use crate::clock::unix_now;
use crate::store::{Revocation, RevocationScope, Store, StoreError};

/// Rows are re-read for this long, so rows committed out of id order, or stamped by a writer
/// whose clock lags ours, are still seen.
const WINDOW_SECONDS: i64 = 300;
const PG_CHANNEL: &str = "gatehouse_revocations";

pub struct RevocationSync {
    store: Store,
    sessions: Sessions,
    /// Bearer callers' users are cached too, and revoked the same way.
    bearer: Arc<Bearer>,
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
    pub fn new(store: Store, sessions: Sessions, bearer: Arc<Bearer>) -> Arc<Self> {
        Arc::new(Self {
            store,
            sessions,
            bearer,
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

    /// Polls every `interval` (sooner when woken) until the process ends.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        if let Some(pool) = self.store.postgres_pool().cloned() {
            tokio::spawn(listen_postgres(pool, self.clone()));
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
            }
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "could not read revocations");
            }
        }
    }
}

/// Wakes the poller on every `NOTIFY gatehouse_revocations` (sent by a trigger on insert).
async fn listen_postgres(pool: sqlx::PgPool, sync: Arc<RevocationSync>) {
    loop {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(PG_CHANNEL).await?;
            loop {
                listener.recv().await?;
                sync.wake.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        if let Err(e) = listener.await {
            tracing::warn!(error = %e, "LISTEN {PG_CHANNEL} failed; relying on polling, retrying in 5s");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
