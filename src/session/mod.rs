//! Sessions: opaque tokens in a cookie, stored by hash, cached in memory.
//!
//! A check on a cached session does no I/O: the cache entry carries the identity, the upstream
//! headers and the expiry times. `last_seen` is kept in memory and written to the store at most
//! once a minute per session, by a background task. Revocations reach the cache directly on the
//! replica that made them and through [`revocations`] on the others.

pub mod cookie;
pub mod revocations;
pub mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use moka::sync::Cache;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::SessionConfig;
use crate::identity::{Identity, MintSlot, Principal, SessionCaller, SignedIn};
use crate::metrics::Metrics;
use crate::store::{
    Access, AuditEvent, LoginFacts, NewSession, SessionRecord, SessionTouch, Store, StoreError,
};
use crate::strength::Authentication;
pub use token::{OpaqueToken, TokenHash};

/// `last_seen` is written back at most this often per session.
const TOUCH_INTERVAL_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Random(#[from] token::RandomError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Session lifetimes, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub idle: i64,
    pub absolute: i64,
}

impl Lifetimes {
    pub fn from_config(c: &SessionConfig) -> Self {
        let seconds = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            idle: seconds(c.idle_timeout_seconds),
            absolute: seconds(c.absolute_timeout_seconds),
        }
    }
}

/// Whether a session is still usable at `now`. Pure, so the expiry rules are table-tested.
pub fn is_live(
    last_seen_at: i64,
    absolute_expires_at: i64,
    lifetimes: Lifetimes,
    now: i64,
) -> bool {
    now < absolute_expires_at && now < last_seen_at.saturating_add(lifetimes.idle)
}

/// A cache entry: what the store said about a token hash, and when.
#[derive(Clone)]
struct Cached {
    /// Unix seconds of the store read. Past the freshness TTL the entry is re-read; while the
    /// database is down it may still be served, for a bounded time.
    loaded_at: i64,
    /// `None`: the store has no live session under this hash. Tokens are never adopted, so a
    /// hash that is unknown now can never become valid: caching the miss is safe, and keeps a
    /// flood of random cookies from reaching the database twice.
    session: Option<Arc<LiveSession>>,
}

struct LiveSession {
    /// Its `expires_at` is the session's absolute expiry.
    principal: Principal,
    /// Most recent use seen by this replica.
    last_seen_at: AtomicI64,
    /// The `last_seen_at` value last handed to the store writer.
    last_written_at: AtomicI64,
}

/// How long cached answers are trusted.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// `session.cache_ttl_seconds`.
    pub ttl_seconds: u64,
    /// `session.fallback_cache_ttl_seconds`: the TTL while revocations may not be pushed.
    pub fallback_ttl_seconds: u64,
    /// `session.stale_while_db_down_seconds`.
    pub stale_seconds: u64,
    pub max_entries: u64,
}

impl CachePolicy {
    pub fn from_config(c: &SessionConfig) -> Self {
        Self {
            ttl_seconds: c.cache_ttl_seconds,
            fallback_ttl_seconds: c.fallback_cache_ttl_seconds.min(c.cache_ttl_seconds),
            stale_seconds: c.stale_while_db_down_seconds,
            max_entries: c.cache_max_entries,
        }
    }
}

/// The session service: create, resolve (cached), forget.
#[derive(Clone)]
pub struct Sessions {
    store: Store,
    cache: Cache<TokenHash, Cached>,
    lifetimes: Lifetimes,
    policy: CachePolicy,
    /// Cleared while revocations cannot be pushed to this replica (the PostgreSQL listener is
    /// down): entries are then trusted only for the fallback TTL.
    pushed: Arc<AtomicBool>,
    touches: mpsc::Sender<SessionTouch>,
    metrics: Arc<Metrics>,
    /// Bumped by every `forget*`: a load that overlapped one may have read the revoked state
    /// and must not be cached.
    generation: Arc<AtomicU64>,
}

impl Sessions {
    /// Builds the service and returns the background writer for `last_seen`, which the caller
    /// spawns.
    pub fn new(
        store: Store,
        lifetimes: Lifetimes,
        policy: CachePolicy,
        metrics: Arc<Metrics>,
    ) -> (Self, TouchWriter) {
        let evictions = metrics.clone();
        // Entries outlive their freshness by the stale window, to be there when the database
        // is not; a fresh database read replaces them before that.
        let keep = Duration::from_secs(policy.ttl_seconds.saturating_add(policy.stale_seconds));
        let cache = Cache::builder()
            .max_capacity(policy.max_entries)
            .time_to_live(keep.max(Duration::from_secs(1)))
            .support_invalidation_closures()
            .eviction_listener(move |_, _, cause| evictions.session_cache_eviction(cause))
            .build();
        let (touches, rx) = mpsc::channel(4096);
        let writer = TouchWriter {
            store: store.clone(),
            rx,
        };
        (
            Self {
                store,
                cache,
                lifetimes,
                policy,
                pushed: Arc::new(AtomicBool::new(true)),
                touches,
                metrics,
                generation: Arc::new(AtomicU64::new(0)),
            },
            writer,
        )
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// Entries in this replica's cache (approximate), for metrics.
    pub fn cached_entries(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Whether revocations reach this replica as they happen. While not, cached sessions are
    /// re-read after the fallback TTL instead of the normal one.
    pub fn set_revocations_pushed(&self, pushed: bool) {
        self.pushed.store(pushed, Ordering::Relaxed);
    }

    fn is_fresh(&self, entry: &Cached, now: i64) -> bool {
        let ttl = if self.pushed.load(Ordering::Relaxed) {
            self.policy.ttl_seconds
        } else {
            self.policy.fallback_ttl_seconds
        };
        now.saturating_sub(entry.loaded_at) < i64::try_from(ttl).unwrap_or(i64::MAX)
    }

    /// Whether a stale entry may stand in for the store at `now`: only during an outage, and
    /// not longer than `stale_while_db_down_seconds` after it began.
    fn may_serve_stale(&self, now: i64) -> bool {
        let window = i64::try_from(self.policy.stale_seconds).unwrap_or(i64::MAX);
        self.store
            .health()
            .down_since()
            .is_some_and(|since| now.saturating_sub(since) < window)
    }

    /// Who the session cookie `cookie_name` in `headers` belongs to at `now`.
    pub async fn caller(&self, headers: &HeaderMap, cookie_name: &str, now: i64) -> SessionCaller {
        match cookie::find(headers, cookie_name) {
            cookie::TokenCookie::Present(token) => self.resolve(&token, now).await,
            cookie::TokenCookie::Absent
            | cookie::TokenCookie::Duplicated
            | cookie::TokenCookie::Malformed => SessionCaller::Anonymous,
        }
    }

    /// Who holds `token` at `now`: a fresh cached answer when there is one, else one store
    /// lookup; a stale cached answer only while the database is down, within the window.
    pub async fn resolve(&self, token: &OpaqueToken, now: i64) -> SessionCaller {
        let hash = token.hash();
        let (entry, fresh_read) = match self.cache.get(&hash) {
            Some(entry) if self.is_fresh(&entry, now) => {
                self.metrics.session_cache_hit();
                (entry, false)
            }
            cached => match self.load_and_cache(&hash, now).await {
                Ok(entry) => {
                    self.metrics.session_cache_miss();
                    (entry, true)
                }
                Err(e) => match cached {
                    Some(stale) if self.may_serve_stale(now) => {
                        self.metrics.session_cache_stale();
                        (stale, false)
                    }
                    _ => {
                        tracing::warn!(error = %e, "session lookup failed; failing closed");
                        return SessionCaller::Unavailable;
                    }
                },
            },
        };
        let Some(session) = entry.session else {
            return SessionCaller::Anonymous;
        };
        let last_seen = session.last_seen_at.load(Ordering::Relaxed);
        if !is_live(last_seen, session.principal.expires_at, self.lifetimes, now) {
            if fresh_read {
                // The store agrees it is over: stop asking it on every request.
                self.cache.insert(
                    hash,
                    Cached {
                        loaded_at: now,
                        session: None,
                    },
                );
            } else {
                // Maybe another replica saw it used since: ask the store next time.
                self.cache.invalidate(&hash);
            }
            return SessionCaller::Anonymous;
        }
        self.touch(&hash, &session, now);
        SessionCaller::User(session.principal.clone())
    }

    /// Loads from the store and caches the result, unless a revocation ran during the load
    /// (then the result may predate it: load once more, and cache only a stable answer). Each
    /// read goes through [`Store::request_read`]: refused at once while reads are known to
    /// fail, bounded otherwise, and its outcome recorded.
    async fn load_and_cache(&self, hash: &TokenHash, now: i64) -> Result<Cached, StoreError> {
        let mut entry = None;
        for _ in 0..2 {
            let before = self.generation.load(Ordering::SeqCst);
            let loaded = self.load(hash, now).await?;
            if self.generation.load(Ordering::SeqCst) == before {
                self.cache.insert(*hash, loaded.clone());
                return Ok(loaded);
            }
            entry = Some(loaded);
        }
        Ok(entry.unwrap_or(Cached {
            loaded_at: now,
            session: None,
        }))
    }

    async fn load(&self, hash: &TokenHash, now: i64) -> Result<Cached, StoreError> {
        let (store, id_hash) = (self.store.clone(), hash.to_hex());
        // A cache miss must not hold a check past the read timeout: then it fails closed (503).
        let lookup = async move { store.load_session(&id_hash, now).await };
        let record = self
            .store
            .request_read("session lookup", now, lookup)
            .await?;
        let session = record.map(|r| LiveSession::from_record(r, hash));
        if let (Some(session), Some(previous)) = (&session, self.cache.get(hash))
            && let Some(previous) = previous.session
        {
            session.remember_use_since(&previous);
        }
        Ok(Cached {
            loaded_at: now,
            session: session.map(Arc::new),
        })
    }

    /// Records use in memory; hands a write to the background writer at most once a minute.
    fn touch(&self, hash: &TokenHash, session: &LiveSession, now: i64) {
        session.last_seen_at.fetch_max(now, Ordering::Relaxed);
        let written = session.last_written_at.load(Ordering::Relaxed);
        if now - written < TOUCH_INTERVAL_SECONDS {
            return;
        }
        // One check wins the right to write; the others see the new value and skip.
        if session
            .last_written_at
            .compare_exchange(written, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let touch = SessionTouch {
                id_hash: hash.to_hex(),
                last_seen_at: now,
                idle_expires_at: now.saturating_add(self.lifetimes.idle),
            };
            // A full queue only delays idle-expiry bookkeeping; never block a check on it.
            let _ = self.touches.try_send(touch);
        }
    }

    /// Creates a session for a user signed in at `idp` and returns its token (the only copy).
    pub async fn create(
        &self,
        user_id: Uuid,
        idp: Option<String>,
        id_token: Option<String>,
        login: LoginFacts,
        now: i64,
    ) -> Result<OpaqueToken, SessionError> {
        insert(
            &self.store,
            self.lifetimes,
            Origin {
                user_id,
                impersonator_id: None,
                idp,
                id_token,
                login,
            },
            now,
        )
        .await
    }

    /// Ends the session whose cookie `cookie_name` in `headers` holds, when a sign-in in this
    /// browser replaces it (a step-up keeps the user and gets a new session id): revoked in
    /// the store with `event` (every replica follows), then dropped here.
    pub async fn end_replaced(
        &self,
        headers: &HeaderMap,
        cookie_name: &str,
        event: &AuditEvent,
        now: i64,
    ) {
        let cookie::TokenCookie::Present(old) = cookie::find(headers, cookie_name) else {
            return;
        };
        let hash = old.hash();
        match self
            .store
            .revoke_session(&hash.to_hex(), Some(event), now)
            .await
        {
            Ok(_) => self.forget(&hash),
            Err(e) => tracing::warn!(error = %e, "could not end the session a sign-in replaced"),
        }
    }

    /// Drops one session from this replica's cache.
    /// (The generation moves first: a load that finishes between the two steps then sees it
    /// moved and does not cache; one that finished before is removed by the invalidation.)
    pub fn forget(&self, hash: &TokenHash) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate(hash);
    }

    /// Drops every cached session of a user (and cached misses, which are cheap to redo).
    pub fn forget_user(&self, user_id: Uuid) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let result = self
            .cache
            .invalidate_entries_if(move |_, entry| match &entry.session {
                Some(s) => {
                    let identity = &s.principal.user.identity;
                    identity.user_id == user_id || identity.impersonator_id == Some(user_id)
                }
                None => false,
            });
        if result.is_err() {
            // Only possible without `support_invalidation_closures`; be safe regardless.
            self.cache.invalidate_all();
        }
    }

    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }
}

impl LiveSession {
    /// Keeps what this replica knew before a re-read: its own last use may not have reached
    /// the store yet (writes are batched, off the request path), and dropping it would expire
    /// a session that is in use.
    fn remember_use_since(&self, previous: &LiveSession) {
        self.last_seen_at.fetch_max(
            previous.last_seen_at.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.last_written_at.fetch_max(
            previous.last_written_at.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    fn from_record(r: SessionRecord, hash: &TokenHash) -> Self {
        let auth = Authentication {
            idp: r.idp.clone(),
            amr: r.amr,
            acr: r.acr,
            auth_time: r.auth_time,
            org_requires_mfa: r.org_requires_mfa,
        };
        let identity = Identity {
            user_id: r.user_id,
            email: r.email,
            org_id: r.org_id,
            roles: r.roles,
            enabled: r.enabled,
            impersonator_id: r.impersonator_id,
        };
        Self {
            principal: Principal {
                user: Arc::new(SignedIn::new(identity)),
                sid: hash.short_hex().into(),
                minted: Arc::new(MintSlot::default()),
                expires_at: r.absolute_expires_at,
                auth: Arc::new(auth),
            },
            last_seen_at: AtomicI64::new(r.last_seen_at),
            last_written_at: AtomicI64::new(r.last_seen_at),
        }
    }
}

/// Creates a session in the store and returns its token (the only copy): a fresh 256-bit
/// token each time, only its hash stored. Needs no cache, so the CLI calls it directly.
pub async fn create(
    store: &Store,
    lifetimes: Lifetimes,
    user_id: Uuid,
    now: i64,
) -> Result<OpaqueToken, SessionError> {
    let origin = Origin {
        user_id,
        impersonator_id: None,
        idp: None,
        id_token: None,
        login: LoginFacts::default(),
    };
    insert(store, lifetimes, origin, now).await
}

/// Creates a session as `user_id` for `impersonator`, ending after `lifetimes.absolute`.
pub async fn create_impersonation(
    store: &Store,
    lifetimes: Lifetimes,
    user_id: Uuid,
    impersonator: Uuid,
    now: i64,
) -> Result<OpaqueToken, SessionError> {
    let origin = Origin {
        user_id,
        impersonator_id: Some(impersonator),
        idp: None,
        id_token: None,
        login: LoginFacts::default(),
    };
    insert(store, lifetimes, origin, now).await
}

/// Who a new session is for and how they signed in.
struct Origin {
    user_id: Uuid,
    impersonator_id: Option<Uuid>,
    idp: Option<String>,
    id_token: Option<String>,
    login: LoginFacts,
}

async fn insert(
    store: &Store,
    lifetimes: Lifetimes,
    origin: Origin,
    now: i64,
) -> Result<OpaqueToken, SessionError> {
    let token = OpaqueToken::generate()?;
    store
        .insert_session(&NewSession {
            id_hash: token.hash().to_hex(),
            user_id: origin.user_id,
            impersonator_id: origin.impersonator_id,
            idp: origin.idp,
            id_token: origin.id_token,
            created_at: now,
            idle_expires_at: now.saturating_add(lifetimes.idle),
            absolute_expires_at: now.saturating_add(lifetimes.absolute),
            login: origin.login,
        })
        .await?;
    Ok(token)
}

/// Writes batched `last_seen` updates off the request path.
pub struct TouchWriter {
    store: Store,
    rx: mpsc::Receiver<SessionTouch>,
}

impl TouchWriter {
    /// Runs until every [`Sessions`] handle is dropped.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(256);
        while self.rx.recv_many(&mut batch, 256).await > 0 {
            // One row each, in a fixed order: replicas writing overlapping batches in PostgreSQL
            // then lock rows in the same order and cannot deadlock.
            batch.sort_by(|a, b| {
                a.id_hash
                    .cmp(&b.id_hash)
                    .then(b.last_seen_at.cmp(&a.last_seen_at))
            });
            batch.dedup_by(|later, kept| later.id_hash == kept.id_hash);
            let result = self.store.touch_sessions(&batch).await;
            self.store
                .observe(Access::Write, &result, crate::clock::unix_now());
            if let Err(e) = result {
                tracing::warn!(error = %e, count = batch.len(), "could not record session activity");
            }
            batch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_table() {
        let l = Lifetimes {
            idle: 100,
            absolute: 1000,
        };
        // (last_seen, absolute_expires_at, now, live)
        let cases = [
            (0, 1000, 0, true),
            (0, 1000, 99, true),
            (0, 1000, 100, false),
            (950, 1000, 999, true),
            (950, 1000, 1000, false),
            (950, 1000, 5000, false),
            (i64::MAX - 10, i64::MAX, 0, true),
        ];
        for (last_seen, absolute, now, live) in cases {
            assert_eq!(
                is_live(last_seen, absolute, l, now),
                live,
                "last_seen={last_seen} absolute={absolute} now={now}"
            );
        }
    }
}
