//! Typed configuration: one TOML file plus a `GATEHOUSE_<SECTION>_<KEY>` environment overlay.
//!
//! Loading is split in three steps so that every error names the key (and, for overrides, the
//! environment variable) that caused it:
//! 1. read the file into a TOML table (or start from an empty one),
//! 2. overlay the environment onto that table,
//! 3. deserialize with `serde_path_to_error`, then validate what serde cannot (regexes, matchers,
//!    cross-field rules) and compile the route table.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::apps::config::{AppTokensConfig, ClientConfig};
use crate::local::config::{EmailConfig, LocalConfig};
use crate::policy::config::{Access, RouteConfig};
use crate::policy::{Policy, PolicyError};

pub mod error;
pub use error::ConfigError;

/// The file read when `--config` is not given and it exists in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "gatehouse.toml";
/// Environment variables with this prefix override config keys.
pub const ENV_PREFIX: &str = "GATEHOUSE_";
/// Sections that the environment overlay may touch. `[[idp]]` and `[[route]]` are lists and
/// are configured in the file only.
const ENV_SECTIONS: &[&str] = &[
    "server",
    "database",
    "session",
    "login",
    "provisioning",
    "admin",
    "token",
    "impersonation",
    "audit",
    "app_tokens",
    "limits",
    "local",
    "email",
];
/// `GATEHOUSE_*` variables with their own meaning, never treated as config keys.
const ENV_RESERVED: &[&str] = &["GATEHOUSE_CONFIG", "GATEHOUSE_LOG", "GATEHOUSE_LOG_FORMAT"];
/// Keys whose values are strings: taken verbatim from the environment, never read as TOML (a
/// token of digits stays a string, and a type error never echoes a secret).
const STRING_KEYS: &[&str] = &[
    "server.grpc_listen",
    "server.http_listen",
    "server.admin_listen",
    "server.public_url",
    "database.url",
    "session.cookie_name",
    "login.welcome_path",
    "admin.token",
    "admin.token_env",
    "token.audience",
    "token.encryption_key",
    "token.encryption_key_env",
    "impersonation.role",
    "email.smtp_url",
    "email.smtp_password_env",
    "email.from",
    "email.product_name",
];

// === file format ===

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// ext_authz gRPC and grpc.health.v1.
    pub grpc_listen: SocketAddr,
    /// `/auth/*`, `/authz`, `/.well-known/*`.
    pub http_listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`, `/admin/v1/*`.
    pub admin_listen: SocketAddr,
    /// The origin browsers use; `/auth/*` must be reachable under it.
    pub public_url: Url,
    /// Only these peers may set `X-Forwarded-*` on `/authz`.
    pub trusted_proxies: Vec<IpNet>,
    /// Tokio worker threads; defaults to the number of CPUs.
    pub worker_threads: Option<usize>,
    /// After SIGTERM: how long `/readyz` answers 503 while everything still serves, so load
    /// balancers and Kubernetes stop sending new traffic before the listeners close.
    pub shutdown_delay_seconds: u64,
    /// Then: how long in-flight requests may take before the process exits.
    pub shutdown_grace_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 9191)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            public_url: Url::parse("http://127.0.0.1:10000").expect("static URL"),
            trusted_proxies: vec![
                "127.0.0.1/32".parse().expect("static CIDR"),
                "::1/128".parse().expect("static CIDR"),
            ],
            worker_threads: None,
            shutdown_delay_seconds: 5,
            shutdown_grace_seconds: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://FILE?mode=rwc` or `postgres://user@host/db`.
    pub url: String,
    /// Apply migrations on `serve`.
    pub migrate: bool,
    pub max_connections: u32,
    /// How long each database read of a check (a session; a bearer token's user and org) may
    /// take, and `/readyz`'s probe, before it fails closed (503): bounds a half-open connection.
    pub timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://gatehouse.db?mode=rwc".to_owned(),
            migrate: true,
            max_connections: 10,
            timeout_ms: crate::store::DEFAULT_READ_TIMEOUT_MS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Defaults to `__Host-gatehouse` on https and `gatehouse` on http (browsers refuse
    /// `__Host-` cookies without `Secure`, and `Secure` cookies need https).
    pub cookie_name: Option<String>,
    pub idle_timeout_seconds: u64,
    pub absolute_timeout_seconds: u64,
    pub cache_ttl_seconds: u64,
    pub cache_max_entries: u64,
    /// How often each replica reads the shared list of revoked users and sessions; 0 turns
    /// polling off (PostgreSQL `NOTIFY` and the CLI's nudge remain).
    pub revocation_poll_ms: u64,
    /// The cache TTL while the PostgreSQL listener is down (revocations may then arrive only
    /// by polling, or not at all with polling off).
    pub fallback_cache_ttl_seconds: u64,
    /// While the database is unreachable, sessions this replica has cached keep working for
    /// up to this long after the outage began; 0 refuses them (503) at once.
    pub stale_while_db_down_seconds: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: None,
            idle_timeout_seconds: 8 * 3600,
            absolute_timeout_seconds: 7 * 24 * 3600,
            cache_ttl_seconds: 30,
            cache_max_entries: 100_000,
            revocation_poll_ms: 1000,
            fallback_cache_ttl_seconds: 2,
            stale_while_db_down_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// `host[:port]` values `rd=` may point to, besides `public_url`'s own.
    pub allowed_redirect_hosts: Vec<String>,
    /// Where signed-in accounts that are not enabled land.
    pub welcome_path: String,
    /// How long a started login may take at the IdP.
    pub state_ttl_seconds: u64,
    /// Logins one browser may have pending; a new one evicts the oldest.
    pub max_pending_per_browser: u32,
    /// Logins one client address may have pending; a new one evicts the oldest. Bounds a
    /// client that never sends the binding cookie back.
    pub max_pending_per_client_ip: u32,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            allowed_redirect_hosts: Vec::new(),
            welcome_path: "/auth/welcome".to_owned(),
            state_ttl_seconds: 600,
            max_pending_per_browser: 10,
            max_pending_per_client_ip: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    /// New SSO users start disabled unless this is true or their org auto-enables.
    pub new_users_enabled: bool,
    /// Link a new `(issuer, subject)` to an existing user only if `email_verified` is `true`.
    pub link_by_verified_email: bool,
    /// Provision anyone the IdP signs in. Off by default: a new user whose email domain
    /// belongs to no org and to no `[[idp]] domains` is only provisioned when the login was
    /// started with `signup=1`; otherwise they are told they have no account.
    pub open_signup: bool,
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        Self {
            new_users_enabled: false,
            link_by_verified_email: true,
            open_signup: false,
        }
    }
}

/// Brute-force and flood limits: token buckets in memory, per replica. Each is a number of
/// requests per minute (the bucket refills evenly and holds that many); 0 turns it off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// `/auth/login` starts per client address (IPv4, or IPv6 /64).
    pub login_starts_per_ip: u32,
    /// `/auth/login` starts per account (`login_hint`).
    pub login_starts_per_account: u32,
    /// Failed `/auth/callback`s per client address.
    pub failed_callbacks_per_ip: u32,
    /// `/auth/token` and `/auth/revoke` calls per client address.
    pub token_calls_per_ip: u32,
    /// `/auth/token` calls per account (the user a code or refresh token is for).
    pub token_calls_per_account: u32,
    /// `/auth/impersonate` attempts per impersonator.
    pub impersonations_per_account: u32,
    /// Failed local sign-in steps (password, emailed code, TOTP) per client address.
    pub local_failures_per_ip: u32,
    /// Sign-in codes and reset links emailed per address.
    pub emails_per_account: u32,
    /// This many failed sign-ins for one account within `suspicious_window_seconds` raise a
    /// `suspicious_login` audit event.
    pub suspicious_failures: u32,
    pub suspicious_window_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            login_starts_per_ip: 60,
            login_starts_per_account: 20,
            failed_callbacks_per_ip: 20,
            token_calls_per_ip: 120,
            token_calls_per_account: 60,
            impersonations_per_account: 10,
            local_failures_per_ip: 30,
            emails_per_account: 5,
            suspicious_failures: 5,
            suspicious_window_seconds: 900,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for `/admin/v1/*`; prefer `token_env`.
    pub token: Option<SecretString>,
    /// Name of an environment variable holding the admin token.
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Events older than this are deleted (hourly); 0 keeps them forever.
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    Query,
    FormPost,
}

/// The protocol an `[[idp]]` speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdpKind {
    #[default]
    Oidc,
    Saml,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    pub name: String,
    #[serde(default)]
    pub kind: IdpKind,
    /// OIDC: the issuer URL (required). SAML: the IdP's entityID comes from its metadata.
    #[serde(default)]
    pub issuer: String,
    /// OIDC only (required there).
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_response_mode")]
    pub response_mode: ResponseMode,
    /// Home-realm discovery: these exact email domains sign in with this IdP.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The email domains this IdP may vouch for: only a verified address in one of these links
    /// into an existing account or places a new user in an org. `["*"]` is any domain. Unset:
    /// `domains` when that is set, else any domain (a catch-all IdP).
    #[serde(default)]
    pub trusted_email_domains: Option<Vec<String>>,
    /// Extra authorize-endpoint parameters (Auth0 `connection`, `audience`, …).
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// On logout, also end the IdP session (RP-initiated logout) when the IdP supports it.
    #[serde(default)]
    pub logout_at_idp: bool,
    /// `acr` values that prove multi-factor authentication at this IdP: sent as `acr_values`
    /// when a route needs MFA, and an ID token with one of them counts as MFA (as does `amr`
    /// holding `mfa`).
    #[serde(default = "default_mfa_acr_values")]
    pub mfa_acr_values: Vec<String>,
    /// IdP claims to local roles, re-applied at each login: claim name → claim value → role.
    /// `{ groups = { engineering = "dev" } }` grants `dev` while the `groups` claim holds
    /// `engineering`. Roles granted by hand are never touched.
    #[serde(default)]
    pub role_claims: BTreeMap<String, BTreeMap<String, String>>,
    /// SAML: the IdP's entityID, if pinned: metadata naming another is refused. Unset, the
    /// first copy's entityID holds until a restart.
    #[serde(default)]
    pub entity_id: Option<String>,
    /// SAML: where the IdP's metadata is (one of the two).
    #[serde(default)]
    pub metadata_url: Option<Url>,
    #[serde(default)]
    pub metadata_file: Option<PathBuf>,
    /// SAML: how often the metadata is read again; a failed read keeps the last good copy.
    #[serde(default = "default_metadata_refresh_seconds")]
    pub metadata_refresh_seconds: u64,
    /// SAML: the attribute holding the email; unset, a NameID of Format emailAddress.
    #[serde(default)]
    pub email_attribute: Option<String>,
    /// SAML: the attribute holding the display name.
    #[serde(default)]
    pub name_attribute: Option<String>,
    /// SAML: accept responses no login of this browser asked for.
    #[serde(default)]
    pub allow_idp_initiated: bool,
    /// SAML: accept RSA-SHA1 signatures and SHA-1 digests.
    #[serde(default)]
    pub allow_sha1: bool,
    /// SAML: the SP's private key (PEM): decrypts `EncryptedAssertion`s and signs
    /// `AuthnRequest`s and `LogoutRequest`s.
    #[serde(default)]
    pub sp_key_file: Option<PathBuf>,
    /// SAML: the SP's certificate (PEM) for that key, published in the SP metadata.
    #[serde(default)]
    pub sp_cert_file: Option<PathBuf>,
}

fn default_metadata_refresh_seconds() -> u64 {
    3600
}

/// The PAPE multi-factor policy (OpenID Provider Authentication Policy Extension), which Auth0
/// and others use as the MFA `acr`.
pub const PAPE_MULTI_FACTOR: &str = "http://schemas.openid.net/pape/policies/2007/06/multi-factor";

fn default_mfa_acr_values() -> Vec<String> {
    vec![PAPE_MULTI_FACTOR.to_owned()]
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_response_mode() -> ResponseMode {
    ResponseMode::Query
}

/// Where an issuer's signing keys are, when it publishes no discovery document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    pub jwks_uri: Url,
}

/// The token gatehouse mints for upstreams (`x-gatehouse-jwt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    pub enabled: bool,
    /// Its `aud` claim.
    pub audience: String,
    pub ttl_seconds: u64,
    pub algorithm: SigningAlgorithm,
    /// `gatehouse keys rotate` publishes the new key at once and signs with it this much later
    /// (plus the 10 s in which every replica reloads keys), so verifiers that cache the JWKS
    /// for up to this long (gatehouse's `Cache-Control` says 60 s) know it before they see it.
    pub rotation_delay_seconds: u64,
    /// Encrypts the private signing keys stored in the database: 32 bytes, base64. Prefer
    /// `encryption_key_env`.
    pub encryption_key: Option<SecretString>,
    /// Name of an environment variable holding the encryption key.
    pub encryption_key_env: Option<String>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            audience: "internal".to_owned(),
            ttl_seconds: 300,
            algorithm: SigningAlgorithm::EdDSA,
            rotation_delay_seconds: 60,
            encryption_key: None,
            encryption_key_env: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlgorithm {
    EdDSA,
    ES256,
    RS256,
}

/// Support staff acting as a user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImpersonationConfig {
    pub enabled: bool,
    /// Who may start it.
    pub role: String,
    /// May the target hold roles the impersonator lacks?
    pub allow_more_privileged: bool,
    /// The absolute lifetime of an impersonation session.
    pub session_ttl_seconds: u64,
}

impl Default for ImpersonationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            role: "impersonator".to_owned(),
            allow_more_privileged: false,
            session_ttl_seconds: 3600,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    server: ServerConfig,
    database: DatabaseConfig,
    session: SessionConfig,
    login: LoginConfig,
    provisioning: ProvisioningConfig,
    admin: AdminConfig,
    token: TokenConfig,
    impersonation: ImpersonationConfig,
    audit: AuditConfig,
    limits: LimitsConfig,
    #[serde(rename = "idp")]
    idps: Vec<IdpConfig>,
    #[serde(rename = "issuer")]
    issuers: Vec<IssuerConfig>,
    #[serde(rename = "route")]
    routes: Vec<RouteConfig>,
    app_tokens: AppTokensConfig,
    #[serde(rename = "client")]
    clients: Vec<ClientConfig>,
    local: Option<LocalConfig>,
    email: Option<EmailConfig>,
}

// === validated settings ===

/// The whole validated configuration. Built only through [`Settings::load`] or
/// [`Settings::from_toml`], so everything past this point can trust it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub session: SessionConfig,
    pub login: LoginConfig,
    pub provisioning: ProvisioningConfig,
    pub admin: AdminConfig,
    pub token: TokenConfig,
    pub impersonation: ImpersonationConfig,
    pub audit: AuditConfig,
    pub limits: LimitsConfig,
    pub idps: Vec<IdpConfig>,
    pub issuers: Vec<IssuerConfig>,
    /// Routes as written (or the built-in default), kept for `check-config`.
    pub routes: Vec<RouteConfig>,
    pub policy: Policy,
    pub app_tokens: AppTokensConfig,
    /// `[[client]]`: first-party apps (see [`crate::apps`]).
    pub clients: Vec<ClientConfig>,
    /// `[local]`: sign-in without an IdP (see [`crate::local`]); `None`: off.
    pub local: Option<LocalConfig>,
    /// `[email]`: how mail is sent.
    pub email: Option<EmailConfig>,
}

impl Settings {
    /// Loads `path`, or `gatehouse.toml` if it exists, or built-in defaults; then applies the
    /// `GATEHOUSE_*` variables in `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let path = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        let text = match &path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?,
            None => String::new(),
        };
        let mut settings = Self::from_toml(&text, env).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.clone().unwrap_or_default(),
                message,
            },
            other => other,
        })?;
        settings.source = path;
        Ok(settings)
    }

    /// Parses configuration text (no file access) with the environment overlay.
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let env_keys = overlay_env(&mut table, env)?;
        let file: FileConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let key = match env_keys.get(&key) {
                    Some(var) => format!("{key} (from {var})"),
                    None => key,
                };
                ConfigError::invalid(key, e.into_inner().to_string())
            })?;
        Self::validate(file)
    }

    fn validate(file: FileConfig) -> Result<Self, ConfigError> {
        let FileConfig {
            server,
            database,
            session,
            login,
            provisioning,
            admin,
            token,
            impersonation,
            audit,
            limits,
            idps,
            issuers,
            mut routes,
            app_tokens,
            clients,
            local,
            email,
        } = file;

        match server.public_url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(ConfigError::invalid(
                    "server.public_url",
                    format!("scheme must be http or https, not {other:?}"),
                ));
            }
        }
        if server.public_url.host_str().is_none() {
            return Err(ConfigError::invalid("server.public_url", "needs a host"));
        }
        if !(database.url.starts_with("sqlite:") || database.url.starts_with("postgres")) {
            return Err(ConfigError::invalid(
                "database.url",
                "must start with sqlite:// or postgres:// (or postgresql://)",
            ));
        }
        if database.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if !(50..=60_000).contains(&database.timeout_ms) {
            return Err(ConfigError::invalid(
                "database.timeout_ms",
                "must be between 50 and 60000",
            ));
        }
        if let Some(name) = &session.cookie_name {
            if name.is_empty() || !name.bytes().all(is_cookie_name_byte) {
                return Err(ConfigError::invalid(
                    "session.cookie_name",
                    format!("{name:?} is not a valid cookie name"),
                ));
            }
            if name.starts_with("__Host-") && server.public_url.scheme() != "https" {
                return Err(ConfigError::invalid(
                    "session.cookie_name",
                    "the __Host- prefix needs an https server.public_url (browsers drop it otherwise)",
                ));
            }
        }
        for (key, value) in [
            ("session.idle_timeout_seconds", session.idle_timeout_seconds),
            (
                "session.absolute_timeout_seconds",
                session.absolute_timeout_seconds,
            ),
            (
                "session.fallback_cache_ttl_seconds",
                session.fallback_cache_ttl_seconds,
            ),
            ("login.state_ttl_seconds", login.state_ttl_seconds),
            (
                "login.max_pending_per_browser",
                u64::from(login.max_pending_per_browser),
            ),
            (
                "login.max_pending_per_client_ip",
                u64::from(login.max_pending_per_client_ip),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        if !login.welcome_path.starts_with('/') || login.welcome_path.starts_with("//") {
            return Err(ConfigError::invalid(
                "login.welcome_path",
                "must be an absolute path such as /auth/welcome",
            ));
        }
        for (i, host) in login.allowed_redirect_hosts.iter().enumerate() {
            if host.is_empty() || host.contains(['/', '@', '\\', ' ']) || host.contains("://") {
                return Err(ConfigError::invalid(
                    format!("login.allowed_redirect_hosts[{i}]"),
                    format!("{host:?} must be host or host:port, without scheme or path"),
                ));
            }
        }
        if let (Some(_), Some(_)) = (&admin.token, &admin.token_env) {
            return Err(ConfigError::invalid(
                "admin",
                "set token or token_env, not both",
            ));
        }
        validate_idps(&idps)?;

        if routes.is_empty() {
            // No route table: require a session everywhere. Safe, and what a first run wants.
            routes.push(RouteConfig {
                host: None,
                path_prefix: Some("/".to_owned()),
                path_exact: None,
                path_regex: None,
                methods: None,
                access: Access::Authenticated,
                roles: Vec::new(),
                api: false,
                case_sensitive: false,
                bearer: None,
                session: None,
                org_param: None,
                org_admin_any: Vec::new(),
                mfa: false,
                acr_values: Vec::new(),
                max_auth_age_seconds: None,
            });
        }
        let policy = Policy::compile(&routes).map_err(|e| match e {
            PolicyError::Route {
                index,
                key,
                message,
            } => ConfigError::invalid(format!("route[{index}].{key}"), message),
        })?;

        validate_token(&token)?;
        validate_issuers(&issuers)?;
        crate::apps::clients::validate(&clients, &app_tokens)?;
        if !clients.is_empty()
            && token.encryption_key.is_none()
            && token.encryption_key_env.is_none()
        {
            return Err(ConfigError::invalid(
                "token.encryption_key_env",
                "[[client]] apps get access tokens signed with gatehouse's keys, which are stored \
                 encrypted: set encryption_key_env (32 random bytes, base64; e.g. \
                 `openssl rand -base64 32`)",
            ));
        }
        crate::local::config::validate(local.as_ref(), email.as_ref())
            .map_err(|e| ConfigError::invalid(e.key, e.message))?;
        if let Some(local) = &local {
            if let Some(i) = idps
                .iter()
                .position(|i| i.name == crate::local::config::LOCAL_IDP)
            {
                return Err(ConfigError::invalid(
                    format!("idp[{i}].name"),
                    "\"local\" names local sign-in ([local]) in sessions and the audit trail: \
                     choose another name",
                ));
            }
            if local.mfa != crate::local::methods::MfaPolicy::Off
                && token.encryption_key.is_none()
                && token.encryption_key_env.is_none()
            {
                return Err(ConfigError::invalid(
                    "token.encryption_key_env",
                    "local sign-in with TOTP (local.mfa = \"optional\" or \"required\") stores \
                     TOTP secrets encrypted: set encryption_key_env (32 random bytes, base64; \
                     e.g. `openssl rand -base64 32`), or set local.mfa = \"off\"",
                ));
            }
        }
        if impersonation.enabled && impersonation.role.trim().is_empty() {
            return Err(ConfigError::invalid(
                "impersonation.role",
                "must name the role that may impersonate",
            ));
        }
        if impersonation.session_ttl_seconds == 0 {
            return Err(ConfigError::invalid(
                "impersonation.session_ttl_seconds",
                "must be greater than 0",
            ));
        }

        Ok(Self {
            source: None,
            server,
            database,
            session,
            login,
            provisioning,
            admin,
            token,
            impersonation,
            audit,
            limits,
            idps,
            issuers,
            routes,
            policy,
            app_tokens,
            clients,
            local,
            email,
        })
    }

    /// The session cookie's name (see [`SessionConfig::cookie_name`]).
    pub fn cookie_name(&self) -> &str {
        match &self.session.cookie_name {
            Some(name) => name,
            None if self.is_https() => "__Host-gatehouse",
            None => "gatehouse",
        }
    }

    /// Whether browsers reach gatehouse over https (decides `Secure` and `__Host-`).
    pub fn is_https(&self) -> bool {
        self.server.public_url.scheme() == "https"
    }

    /// `public_url` without a trailing slash, for building absolute URLs.
    pub fn public_origin(&self) -> String {
        self.server
            .public_url
            .as_str()
            .trim_end_matches('/')
            .to_owned()
    }

    /// The key that encrypts stored signing keys, from `token.encryption_key` or the variable
    /// named by `token.encryption_key_env`.
    pub fn token_encryption_key(&self) -> Option<SecretString> {
        match (&self.token.encryption_key, &self.token.encryption_key_env) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(var)) => std::env::var(var).ok().map(SecretString::from),
            (None, None) => None,
        }
    }

    /// The admin token from `admin.token` or the variable named by `admin.token_env`.
    pub fn admin_token(&self) -> Option<SecretString> {
        match (&self.admin.token, &self.admin.token_env) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(var)) => std::env::var(var).ok().map(SecretString::from),
            (None, None) => None,
        }
    }
}

fn validate_token(token: &TokenConfig) -> Result<(), ConfigError> {
    if token.ttl_seconds < 30 {
        return Err(ConfigError::invalid(
            "token.ttl_seconds",
            "must be at least 30 (tokens are re-signed when a third of their lifetime is left)",
        ));
    }
    if token.audience.is_empty() {
        return Err(ConfigError::invalid("token.audience", "must not be empty"));
    }
    match (&token.encryption_key, &token.encryption_key_env) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            "token",
            "set encryption_key or encryption_key_env, not both",
        )),
        (None, None) if token.enabled => Err(ConfigError::invalid(
            "token.encryption_key_env",
            "minted tokens need a key that encrypts their signing keys in the database: \
             set encryption_key_env (32 random bytes, base64; e.g. `openssl rand -base64 32`)",
        )),
        _ => Ok(()),
    }
}

fn validate_issuers(issuers: &[IssuerConfig]) -> Result<(), ConfigError> {
    let mut seen = HashMap::new();
    for (i, issuer) in issuers.iter().enumerate() {
        if let Some(prev) = seen.insert(issuer.issuer.as_str(), i) {
            return Err(ConfigError::invalid(
                format!("issuer[{i}].issuer"),
                format!("{:?} is already listed by issuer[{prev}]", issuer.issuer),
            ));
        }
        if !matches!(issuer.jwks_uri.scheme(), "https" | "http") {
            return Err(ConfigError::invalid(
                format!("issuer[{i}].jwks_uri"),
                "must be an http(s) URL",
            ));
        }
    }
    Ok(())
}

fn validate_idps(idps: &[IdpConfig]) -> Result<(), ConfigError> {
    let mut names = HashMap::new();
    let mut domains = HashMap::new();
    for (i, idp) in idps.iter().enumerate() {
        let key = |field: &str| format!("idp[{i}].{field}");
        if idp.name.is_empty()
            || !idp
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::invalid(
                key("name"),
                "must be non-empty and use only letters, digits, - and _",
            ));
        }
        if let Some(prev) = names.insert(idp.name.as_str(), i) {
            return Err(ConfigError::invalid(
                key("name"),
                format!("{:?} is already used by idp[{prev}]", idp.name),
            ));
        }
        match idp.kind {
            IdpKind::Oidc => validate_oidc_idp(idp, &key)?,
            IdpKind::Saml => validate_saml_idp(idp, &key)?,
        }
        for (claim, values) in &idp.role_claims {
            for (value, role) in values {
                if claim.is_empty() || value.is_empty() || role.is_empty() || role.contains(',') {
                    return Err(ConfigError::invalid(
                        key("role_claims"),
                        format!(
                            "{claim:?} = {{ {value:?} = {role:?} }}: claim, value and role must be non-empty, and role names hold no comma"
                        ),
                    ));
                }
            }
        }
        for domain in idp.trusted_email_domains.iter().flatten() {
            if domain == "*" {
                if idp
                    .trusted_email_domains
                    .as_ref()
                    .is_some_and(|l| l.len() > 1)
                {
                    return Err(ConfigError::invalid(
                        key("trusted_email_domains"),
                        "\"*\" (any domain) must be the only entry",
                    ));
                }
            } else if !is_domain(domain) {
                return Err(ConfigError::invalid(
                    key("trusted_email_domains"),
                    format!("{domain:?} is not a domain (write the punycode form of IDNs)"),
                ));
            }
        }
        for domain in &idp.domains {
            let lower = domain.to_ascii_lowercase();
            if !is_domain(domain) {
                return Err(ConfigError::invalid(
                    key("domains"),
                    format!("{domain:?} is not a domain (write the punycode form of IDNs)"),
                ));
            }
            if let Some(prev) = domains.insert(lower, i) {
                return Err(ConfigError::invalid(
                    key("domains"),
                    format!("{domain:?} is already listed by idp[{prev}]"),
                ));
            }
        }
    }
    Ok(())
}

fn validate_oidc_idp(idp: &IdpConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    match Url::parse(&idp.issuer) {
        Ok(url) if matches!(url.scheme(), "https" | "http") => {}
        _ => {
            return Err(ConfigError::invalid(
                key("issuer"),
                format!("{:?} is not an http(s) URL", idp.issuer),
            ));
        }
    }
    if idp.client_id.is_empty() {
        return Err(ConfigError::invalid(key("client_id"), "must not be empty"));
    }
    if idp.client_secret.is_some() && idp.client_secret_env.is_some() {
        return Err(ConfigError::invalid(
            key("client_secret"),
            "set client_secret or client_secret_env, not both",
        ));
    }
    if !idp.scopes.iter().any(|s| s == "openid") {
        return Err(ConfigError::invalid(
            key("scopes"),
            "must include \"openid\"",
        ));
    }
    for reserved in [
        "client_id",
        "redirect_uri",
        "response_type",
        "response_mode",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    ] {
        if idp.extra_params.contains_key(reserved) {
            return Err(ConfigError::invalid(
                key("extra_params"),
                format!("{reserved:?} is set by gatehouse and cannot be overridden"),
            ));
        }
    }
    Ok(())
}

/// A SAML IdP: its metadata source, and none of the OIDC-only keys (they would be ignored,
/// which surprises more than a refusal).
fn validate_saml_idp(idp: &IdpConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if !cfg!(feature = "saml") {
        return Err(ConfigError::invalid(
            key("kind"),
            "this gatehouse was built without SAML support: build it with `--features saml` \
             (needs libxml2 and libxmlsec1, see the README)",
        ));
    }
    match (&idp.metadata_url, &idp.metadata_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                key("metadata_url"),
                "set metadata_url or metadata_file, not both",
            ));
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                key("metadata_url"),
                "a SAML identity provider needs metadata_url or metadata_file",
            ));
        }
        (Some(url), None)
            if url.scheme() != "https" && !(url.scheme() == "http" && is_loopback(url)) =>
        {
            return Err(ConfigError::invalid(
                key("metadata_url"),
                format!(
                    "{url}: metadata carries the keys that sign responses, so it is fetched over \
                     https (plain http only from this machine: localhost, 127.0.0.0/8, ::1)"
                ),
            ));
        }
        _ => {}
    }
    let oidc_only = [
        ("issuer", !idp.issuer.is_empty()),
        ("client_id", !idp.client_id.is_empty()),
        ("client_secret", idp.client_secret.is_some()),
        ("client_secret_env", idp.client_secret_env.is_some()),
        ("extra_params", !idp.extra_params.is_empty()),
        ("logout_at_idp", idp.logout_at_idp),
        ("response_mode", idp.response_mode != ResponseMode::Query),
    ];
    if let Some((name, _)) = oidc_only.iter().find(|(_, set)| *set) {
        return Err(ConfigError::invalid(
            key(name),
            "is an OpenID Connect setting; a SAML IdP takes its entityID, endpoints and \
             certificates from its metadata",
        ));
    }
    if idp.sp_cert_file.is_some() && idp.sp_key_file.is_none() {
        return Err(ConfigError::invalid(
            key("sp_cert_file"),
            "needs sp_key_file (the certificate's private key)",
        ));
    }
    if idp.metadata_refresh_seconds < 5 {
        return Err(ConfigError::invalid(
            key("metadata_refresh_seconds"),
            "must be at least 5",
        ));
    }
    Ok(())
}

/// A URL whose host is this machine.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An ASCII domain name such as `acme.test`: email domains are compared as written, so a
/// Unicode spelling would never match the ASCII (punycode) form mail systems use.
fn is_domain(domain: &str) -> bool {
    !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn is_cookie_name_byte(b: u8) -> bool {
    // RFC 6265 token characters.
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Applies `GATEHOUSE_<SECTION>_<KEY>=value` onto the table. Values are read as TOML when they
/// parse as a TOML value (`false`, `30`, `["10.0.0.0/8"]`), else as strings. Returns which
/// variable set which `section.key`, so errors can name the variable.
fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, ConfigError> {
    let mut origins = HashMap::new();
    // Variables the file names as holding secrets are not config keys, whatever their name.
    let secrets = secret_variables(table);
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with(ENV_PREFIX) && !ENV_RESERVED.contains(&k.as_str()) && !secrets.contains(k)
        })
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let rest = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let Some((section, key)) = ENV_SECTIONS.iter().find_map(|s| {
            rest.strip_prefix(s)
                .and_then(|r| r.strip_prefix('_'))
                .filter(|k| !k.is_empty())
                .map(|k| (*s, k.to_owned()))
        }) else {
            // Not a config key: e.g. an IdP secret named by `client_secret_env`.
            continue;
        };
        let dotted = format!("{section}.{key}");
        let value = if STRING_KEYS.contains(&dotted.as_str()) {
            toml::Value::String(raw)
        } else {
            parse_env_value(&raw)
        };
        let entry = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::invalid(section, "must be a table"));
        };
        section_table.insert(key.clone(), value);
        origins.insert(dotted, var);
    }
    Ok(origins)
}

/// Names in `admin.token_env` and `[[idp]] client_secret_env`.
fn secret_variables(table: &toml::Table) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(var) = table
        .get("admin")
        .and_then(|a| a.get("token_env"))
        .and_then(toml::Value::as_str)
    {
        names.push(var.to_owned());
    }
    if let Some(var) = table
        .get("token")
        .and_then(|t| t.get("encryption_key_env"))
        .and_then(toml::Value::as_str)
    {
        names.push(var.to_owned());
    }
    if let Some(idps) = table.get("idp").and_then(toml::Value::as_array) {
        names.extend(
            idps.iter()
                .filter_map(|i| i.get("client_secret_env").and_then(toml::Value::as_str))
                .map(String::from),
        );
    }
    names
}

fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, Vec::new())
    }

    fn error(text: &str) -> String {
        load(text)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn the_database_timeout_is_bounded_both_ways() {
        // (timeout_ms, accepted)
        let cases = [
            (0, false),
            (49, false),
            (50, true),
            (2_000, true),
            (60_000, true),
            (60_001, false),
        ];
        for (ms, accepted) in cases {
            let text = format!("[database]\ntimeout_ms = {ms}\n");
            match load(&text) {
                Ok(settings) => {
                    assert!(accepted, "{ms} was accepted");
                    assert_eq!(settings.database.timeout_ms, ms);
                }
                Err(e) => {
                    assert!(!accepted, "{ms}: {e}");
                    assert!(e.to_string().contains("database.timeout_ms"), "{e}");
                }
            }
        }
        assert_eq!(load("").unwrap().database.timeout_ms, 2_000);
    }

    #[test]
    fn local_sign_in_needs_mail_a_key_and_sane_values() {
        const EMAIL: &str = "[email]\nsmtp_url = \"log\"\nfrom = \"A <a@a.test>\"\n";
        const KEY: &str = "[token]\nencryption_key_env = \"K\"\n";
        // (config, the key the error must name, a word of its message)
        let cases = [
            (
                "[local]\nmfa = \"off\"\n".to_owned(),
                "email.smtp_url",
                "[email]",
            ),
            (
                format!("{EMAIL}[local]\n"),
                "token.encryption_key_env",
                "TOTP",
            ),
            (
                format!("{EMAIL}[local]\nmfa = \"off\"\nmethods = [\"totp\"]\n"),
                "local.methods",
                "totp",
            ),
            (
                format!("{EMAIL}{KEY}[local]\nmethods = [\"totp\"]\n"),
                "local.methods",
                "way in",
            ),
            (
                format!("{EMAIL}[local]\nmfa = \"off\"\npassword_min_length = 6\n"),
                "local.password_min_length",
                "at least 8",
            ),
            (
                format!("{EMAIL}[local]\nmfa = \"off\"\ncode_ttl_seconds = 0\n"),
                "local.code_ttl_seconds",
                "greater than 0",
            ),
            (
                "[email]\nsmtp_url = \"http://mail\"\nfrom = \"a@a.test\"\n".to_owned(),
                "email.smtp_url",
                "smtps://",
            ),
            (
                "[email]\nsmtp_url = \"log\"\nfrom = \"not a mailbox\"\n".to_owned(),
                "email.from",
                "mailbox",
            ),
            (
                format!(
                    "{EMAIL}[local]\nmfa = \"off\"\n[[idp]]\nname = \"local\"\n\
                     issuer = \"https://idp.test\"\nclient_id = \"c\"\n"
                ),
                "idp[0].name",
                "another name",
            ),
        ];
        for (text, key, word) in &cases {
            let message = error(text);
            assert!(
                message.contains(key) && message.contains(word),
                "{text}\n=> {message}"
            );
        }
        let ok = load(&format!(
            "{EMAIL}{KEY}[local]\nmethods = [\"email_code\", \"totp\"]\n"
        ))
        .expect("valid");
        assert!(ok.local.is_some() && ok.email.is_some());
        // No [local]: nothing needed, nothing on.
        assert!(load("").unwrap().local.is_none());
    }

    #[test]
    fn saml_idps_need_metadata_and_refuse_oidc_settings() {
        let saml = |extra: &str| format!("[[idp]]\nname = \"big\"\nkind = \"saml\"\n{extra}");
        let md = "metadata_file = \"/etc/gatehouse/big.xml\"\n";
        // (config, the key the error must name, a word of its message)
        let cases = [
            (saml(""), "idp[0].metadata_url", "needs metadata_url"),
            (
                saml(&format!("{md}metadata_url = \"https://idp.test/md\"\n")),
                "idp[0].metadata_url",
                "not both",
            ),
            (
                saml("metadata_url = \"http://idp.test/md\"\n"),
                "idp[0].metadata_url",
                "https",
            ),
            (
                saml(&format!("{md}client_id = \"c\"\n")),
                "idp[0].client_id",
                "OpenID Connect",
            ),
            (
                saml(&format!("{md}issuer = \"https://idp.test\"\n")),
                "idp[0].issuer",
                "OpenID Connect",
            ),
            (
                saml(&format!("{md}sp_cert_file = \"/etc/sp.crt\"\n")),
                "idp[0].sp_cert_file",
                "sp_key_file",
            ),
            (
                saml(&format!("{md}metadata_refresh_seconds = 1\n")),
                "idp[0].metadata_refresh_seconds",
                "at least 5",
            ),
            (
                format!("[[idp]]\nname = \"big\"\nkind = \"ldap\"\n{md}"),
                "kind",
                "unknown variant",
            ),
        ];
        for (text, key, word) in &cases {
            let message = error(text);
            if cfg!(feature = "saml") {
                assert!(
                    message.contains(key) && message.contains(word),
                    "{text}\n=> {message}"
                );
            }
        }
        let ok = load(&saml(md));
        if cfg!(feature = "saml") {
            let ok = ok.expect("valid");
            assert_eq!(ok.idps[0].kind, IdpKind::Saml);
            assert_eq!(ok.idps[0].metadata_refresh_seconds, 3600);
            assert!(!ok.idps[0].allow_idp_initiated && !ok.idps[0].allow_sha1);
        } else {
            let message = ok.expect_err("no SAML in this build").to_string();
            assert!(message.contains("--features saml"), "{message}");
        }
    }

    #[test]
    fn empty_config_has_safe_defaults() {
        let s = load("").unwrap();
        assert_eq!(s.server.grpc_listen.to_string(), "127.0.0.1:9191");
        assert_eq!(s.database.url, "sqlite://gatehouse.db?mode=rwc");
        assert_eq!(s.cookie_name(), "gatehouse");
        assert!(!s.provisioning.new_users_enabled);
        assert!(s.provisioning.link_by_verified_email);
        assert_eq!(s.routes.len(), 1);
        assert_eq!(s.routes[0].access, Access::Authenticated);
    }

    #[test]
    fn https_public_url_uses_host_prefixed_cookie() {
        let s = load("[server]\npublic_url = \"https://auth.example.com\"").unwrap();
        assert_eq!(s.cookie_name(), "__Host-gatehouse");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nfoo = 1", "server"),
            ("[server]\ngrpc_listen = \"nope\"", "server.grpc_listen"),
            ("[[route]]\naccess = \"public\"", "route[0]"),
            (
                "[[route]]\npath_regex = \"(\"\naccess = \"public\"",
                "route[0].path_regex",
            ),
            (
                "[[route]]\npath_prefix = \"/\"\naccess = \"sometimes\"",
                "route[0].access",
            ),
            (
                "[[route]]\npath_prefix = \"/\"\naccess = \"public\"\nbogus = true",
                "route[0]",
            ),
            (
                "[session]\ncookie_name = \"__Host-x\"",
                "session.cookie_name",
            ),
            ("[login]\nwelcome_path = \"//evil\"", "login.welcome_path"),
            (
                "[[idp]]\nname = \"a\"\nissuer = \"https://a/\"\nclient_id = \"c\"\n[[idp]]\nname = \"a\"\nissuer = \"https://b/\"\nclient_id = \"c\"",
                "idp[1].name",
            ),
            (
                "[[idp]]\nname = \"a\"\nissuer = \"https://a/\"\nclient_id = \"c\"\ntrusted_email_domains = [\"*\", \"acme.test\"]",
                "idp[0].trusted_email_domains",
            ),
            (
                "[[idp]]\nname = \"a\"\nissuer = \"https://a/\"\nclient_id = \"c\"\ntrusted_email_domains = [\"bücher.test\"]",
                "idp[0].trusted_email_domains",
            ),
            (
                "[[idp]]\nname = \"a\"\nissuer = \"https://a/\"\nclient_id = \"c\"\ndomains = [\"@acme.test\"]",
                "idp[0].domains",
            ),
        ];
        for (text, key) in cases {
            let message = error(text);
            assert!(
                message.starts_with(key),
                "{text:?}: expected error about {key}, got {message:?}"
            );
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let message = error("[session]\nidle_timeout = 5");
        assert!(message.contains("idle_timeout"), "{message}");
    }

    #[test]
    fn environment_overrides_file() {
        let env = [
            ("GATEHOUSE_DATABASE_URL", "postgres://u@h/db"),
            ("GATEHOUSE_SESSION_CACHE_TTL_SECONDS", "5"),
            ("GATEHOUSE_PROVISIONING_NEW_USERS_ENABLED", "true"),
            ("GATEHOUSE_SERVER_TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
            ("GATEHOUSE_IDP_MAIN_SECRET", "not a config key"),
            ("GATEHOUSE_CONFIG", "ignored.toml"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let s = Settings::from_toml("[database]\nurl = \"sqlite://x.db\"", env).unwrap();
        assert_eq!(s.database.url, "postgres://u@h/db");
        assert_eq!(s.session.cache_ttl_seconds, 5);
        assert!(s.provisioning.new_users_enabled);
        assert_eq!(s.server.trusted_proxies.len(), 1);
    }

    #[test]
    fn secret_variables_and_string_keys_are_left_alone() {
        let file = "[admin]\ntoken_env = \"GATEHOUSE_ADMIN_TOKEN\"\n\
                    [[idp]]\nname = \"a\"\nissuer = \"https://a/\"\nclient_id = \"c\"\n\
                    client_secret_env = \"GATEHOUSE_SERVER_IDP_SECRET\"";
        let env = [
            ("GATEHOUSE_ADMIN_TOKEN", "12345"),
            ("GATEHOUSE_SERVER_IDP_SECRET", "s3cret"),
            ("GATEHOUSE_SESSION_COOKIE_NAME", "123"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let s = Settings::from_toml(file, env).unwrap();
        assert!(s.admin.token.is_none(), "the token stays in its variable");
        assert_eq!(s.cookie_name(), "123");
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        let env = vec![(
            "GATEHOUSE_SERVER_GRPC_LISTEN".to_owned(),
            "not-an-address".to_owned(),
        )];
        let message = Settings::from_toml("", env).unwrap_err().to_string();
        assert!(
            message.starts_with("server.grpc_listen (from GATEHOUSE_SERVER_GRPC_LISTEN)"),
            "{message}"
        );
    }
}
