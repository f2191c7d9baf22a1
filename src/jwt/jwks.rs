//! An issuer's JWKS, fetched over HTTP and kept in memory.
//!
//! The current key set is read without waiting. A token signed with a key the set does not
//! have triggers at most one refetch per `min_refetch_interval` (an issuer that rotated its
//! keys is picked up at once; a flood of tokens with random `kid`s costs the issuer one request
//! a minute). Keys older than `max_age` are refreshed in the background, so a key the issuer
//! withdraws stops being trusted. A failed fetch keeps the last good set.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use url::Url;

use super::{JwtError, KeySet};

/// A JWKS document larger than this is refused (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 512 * 1024;

pub struct JwksCache {
    uri: Url,
    http: reqwest::Client,
    min_refetch_interval: Duration,
    max_age: Duration,
    /// The keys and when they were fetched.
    current: RwLock<Option<(Arc<KeySet>, Instant)>>,
    /// Serializes fetches; holds when the last refetch for an unknown key started (the only
    /// kind a client can provoke, so the only kind rate-limited).
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    /// When a fetch last failed: while there are no keys yet, requests within
    /// [`FAILURE_BACKOFF`] of it fail at once instead of each waiting on the issuer.
    last_failure: RwLock<Option<Instant>>,
}

/// See `JwksCache::last_failure`.
const FAILURE_BACKOFF: Duration = Duration::from_secs(5);

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("uri", &self.uri.as_str())
            .finish()
    }
}

impl JwksCache {
    pub fn new(
        uri: Url,
        http: reqwest::Client,
        min_refetch_interval: Duration,
        max_age: Duration,
    ) -> Self {
        Self {
            uri,
            http,
            min_refetch_interval,
            max_age,
            current: RwLock::new(None),
            last_refetch: tokio::sync::Mutex::new(None),
            last_failure: RwLock::new(None),
        }
    }

    pub fn uri(&self) -> &Url {
        &self.uri
    }

    /// The keys in memory, if a fetch has ever succeeded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(keys, _)| keys.clone()))
    }

    /// Whether the keys in memory are older than `max_age` (or missing).
    pub fn is_stale(&self) -> bool {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(_, at)| at.elapsed() >= self.max_age))
            .unwrap_or(true)
    }

    /// The keys in memory, fetching them first if there are none yet. Stale keys are served
    /// while a refresh runs in the background.
    pub async fn keys(self: &Arc<Self>) -> Result<Arc<KeySet>, JwtError> {
        if let Some(keys) = self.current() {
            if self.is_stale()
                && let Ok(guard) = self.last_refetch.try_lock()
            {
                drop(guard);
                let this = self.clone();
                tokio::spawn(async move {
                    if this.is_stale()
                        && let Err(e) = this.refresh().await
                    {
                        tracing::warn!(uri = %this.uri, error = %e, "JWKS refresh failed; keeping the last keys");
                    }
                });
            }
            return Ok(keys);
        }
        if self
            .last_failure
            .read()
            .ok()
            .and_then(|f| *f)
            .is_some_and(|at| at.elapsed() < FAILURE_BACKOFF)
        {
            return Err(JwtError::Fetch(
                "the issuer's keys could not be fetched a moment ago".into(),
            ));
        }
        let _serialized = self.last_refetch.lock().await;
        if let Some(keys) = self.current() {
            return Ok(keys); // fetched while we waited
        }
        self.fetch().await
    }

    /// Refetches because a token named a key that `stale` lacks, unless another caller already
    /// replaced `stale` or a fetch started less than `min_refetch_interval` ago.
    pub async fn refetch_for_unknown_key(
        &self,
        stale: &Arc<KeySet>,
    ) -> Result<Arc<KeySet>, JwtError> {
        let mut last = self.last_refetch.lock().await;
        if let Some(current) = self.current()
            && !Arc::ptr_eq(&current, stale)
        {
            return Ok(current);
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refetch_interval) {
            return Ok(stale.clone());
        }
        *last = Some(Instant::now());
        self.fetch().await
    }

    /// Fetches now (background refresh); on failure the current keys stay.
    pub async fn refresh(&self) -> Result<Arc<KeySet>, JwtError> {
        let _serialized = self.last_refetch.lock().await;
        self.fetch().await
    }

    /// One fetch; callers hold `last_refetch`.
    async fn fetch(&self) -> Result<Arc<KeySet>, JwtError> {
        let result = self.fetch_once().await;
        if let Ok(mut failure) = self.last_failure.write() {
            *failure = result.is_err().then(Instant::now);
        }
        result
    }

    async fn fetch_once(&self) -> Result<Arc<KeySet>, JwtError> {
        let response = self
            .http
            .get(self.uri.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| JwtError::Fetch(e.to_string()))?;
        if !response.status().is_success() {
            return Err(JwtError::Fetch(format!("status {}", response.status())));
        }
        let body = read_capped(response, MAX_JWKS_BYTES)
            .await
            .map_err(JwtError::Fetch)?;
        let keys = Arc::new(KeySet::from_json(&body)?);
        tracing::debug!(uri = %self.uri, keys = keys.len(), "fetched JWKS");
        if let Ok(mut slot) = self.current.write() {
            *slot = Some((keys.clone(), Instant::now()));
        }
        Ok(keys)
    }
}

/// Reads a response body, refusing one larger than `max` bytes (announced or chunked).
pub async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("response larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > max {
            return Err(format!("response larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
