//! The `[[client]]` and `[app_tokens]` sections as written in the file. Owned by the apps,
//! which read them; validated in [`super::clients::validate`], except the rule that spans
//! sections (apps need `token.encryption_key`), which the configuration loader keeps.

use serde::Deserialize;

/// A first-party app gatehouse issues tokens to: an OAuth 2.0 public client (no secret).
/// Validated in [`super::clients::validate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    /// Exact redirect URIs (a native app's loopback URI matches any port).
    pub redirect_uris: Vec<String>,
    pub kind: ClientKind,
    /// The access token's `aud`; `[token] audience` when unset.
    #[serde(default)]
    pub audience: Option<String>,
    /// Scopes the app may request.
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// Desktop or mobile app: system browser, loopback or private-use-scheme redirect.
    Native,
    /// Single-page app: https (or loopback http) redirect, token calls by CORS.
    Spa,
}

/// Lifetimes of what `/auth/authorize` and `/auth/token` issue to `[[client]]` apps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppTokensConfig {
    pub access_token_ttl_seconds: u64,
    /// A refresh token family's absolute lifetime: rotation does not extend it.
    pub refresh_token_ttl_seconds: u64,
    pub code_ttl_seconds: u64,
}

impl Default for AppTokensConfig {
    fn default() -> Self {
        Self {
            access_token_ttl_seconds: 300,
            refresh_token_ttl_seconds: 30 * 24 * 3600,
            code_ttl_seconds: 60,
        }
    }
}
