//! An issuer's JWKS, fetched over HTTP and kept in memory.
//!
//! The current key set is read without waiting. A token signed with a key the set does not
//! have triggers at most one refetch per `min_refetch_interval` (an issuer that rotated its
//! keys is picked up at once; a flood of tokens with random `kid`s costs the issuer one request
//! a minute). A failed fetch keeps the last good set.

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
    current: RwLock<Option<Arc<KeySet>>>,
    /// Serializes fetches; holds when the last refetch for an unknown key started (the only
    /// kind a client can provoke, so the only kind rate-limited).
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("uri", &self.uri.as_str())
            .finish()
    }
}

impl JwksCache {
    pub fn new(uri: Url, http: reqwest::Client, min_refetch_interval: Duration) -> Self {
        Self {
            uri,
            http,
            min_refetch_interval,
            current: RwLock::new(None),
            last_refetch: tokio::sync::Mutex::new(None),
        }
    }

    pub fn uri(&self) -> &Url {
        &self.uri
    }

    /// The keys in memory, if a fetch has ever succeeded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// The keys in memory, fetching them first if there are none yet.
    pub async fn keys(&self) -> Result<Arc<KeySet>, JwtError> {
        if let Some(keys) = self.current() {
            return Ok(keys);
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
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(JwtError::Fetch("JWKS document too large".into()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| JwtError::Fetch(e.to_string()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(JwtError::Fetch("JWKS document too large".into()));
        }
        let keys = Arc::new(KeySet::from_json(&body)?);
        tracing::debug!(uri = %self.uri, keys = keys.len(), "fetched JWKS");
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(keys.clone());
        }
        Ok(keys)
    }
}
