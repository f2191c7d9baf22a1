//! The `[[route]]` section as written in the file: what [`super::Policy::compile`] turns into
//! the route table. Owned here, beside the code that reads it, so the configuration loader
//! only gathers sections and the policy never reaches up into it.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Public,
    Authenticated,
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path_exact: Option<String>,
    #[serde(default)]
    pub path_regex: Option<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    pub access: Access,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub api: bool,
    /// Match the path with exact letter case. Off by default: many upstreams ignore case, and
    /// `/ADMIN/` must not slip past an `/admin/` rule.
    #[serde(default)]
    pub case_sensitive: bool,
    /// Accept `Authorization: Bearer <JWT>` from these issuers.
    #[serde(default)]
    pub bearer: Option<BearerConfig>,
    /// On a bearer route, whether the session cookie is accepted too (default: yes).
    #[serde(default)]
    pub session: Option<bool>,
    /// Name of a `path_regex` capture group that must equal the caller's org id.
    #[serde(default)]
    pub org_param: Option<String>,
    /// Roles that may reach any org's resources on an `org_param` route.
    #[serde(default)]
    pub org_admin_any: Vec<String>,
    /// Step-up: the caller must have used multiple factors (`amr` has `mfa`).
    #[serde(default)]
    pub mfa: bool,
    /// Step-up: the session's `acr` must be one of these.
    #[serde(default)]
    pub acr_values: Vec<String>,
    /// Step-up: the caller must have authenticated at most this long ago.
    #[serde(default)]
    pub max_auth_age_seconds: Option<u64>,
}

/// What a route accepts as a bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerConfig {
    /// Exact `iss` values; a token from any other issuer (another tenant) gets 401.
    pub issuers: Vec<String>,
    /// The token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Every one of these scopes is needed (403 `insufficient_scope` otherwise).
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub unknown_subjects: UnknownSubjects,
}

/// A valid token whose `(iss, sub)` is no local user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSubjects {
    /// 403 `unknown_subject`.
    #[default]
    Deny,
    /// Allowed, with only the token's issuer, subject and scope as headers.
    Anonymous,
}
