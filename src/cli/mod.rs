//! Command-line interface: argument types and dispatch. One file per group of commands.

mod admin;
mod check_config;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::admin::UserRef;
use crate::config::{ConfigError, Settings};
use crate::server::ServeError;
use crate::session::SessionError;
use crate::store::StoreError;

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "External authorization and OIDC login broker for Envoy and other proxies"
)]
pub struct Cli {
    /// Config file. Default: ./gatehouse.toml if it exists, else built-in defaults.
    #[arg(long, global = true, env = "GATEHOUSE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ext_authz, HTTP and admin servers (applies migrations first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration and print the effective routes and identity providers.
    CheckConfig,
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Create or revoke sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// List audit events.
    Audit(AuditArgs),
    /// Manage the keys that sign minted tokens (`[token] enabled`).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a signing key. It is published at once and signs after
    /// `token.rotation_delay_seconds` plus 10 s (so verifiers caching the JWKS, and every
    /// replica, know it first); old keys stay published until their tokens have expired.
    Rotate {
        /// Sign with the new key at once (e.g. after a compromise), without the delay; keys
        /// scheduled by an earlier rotate are withdrawn.
        #[arg(long)]
        now: bool,
    },
    /// List the signing keys and their state.
    List,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization; users whose email domain is one of its domains join it.
    Add {
        name: String,
        /// An exact email domain (repeatable).
        #[arg(long = "domain", required = true, value_name = "DOMAIN")]
        domains: Vec<String>,
        /// Enable this org's new users without an admin.
        #[arg(long)]
        auto_enable: bool,
    },
    /// List the organizations and their domains.
    List,
    /// Change how an org's users sign in: its IdP and authorize parameters, MFA, enabling.
    Set {
        /// The org's name or id.
        org: String,
        /// The `[[idp]]` its users sign in with; "" goes back to discovery by domain.
        #[arg(long)]
        idp: Option<String>,
        /// An authorize parameter for its logins, `KEY=VALUE` (repeatable; replaces the set).
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Remove every authorize parameter.
        #[arg(long, conflicts_with = "params")]
        clear_params: bool,
        /// Require MFA of its users on every route.
        #[arg(long, overrides_with = "no_require_mfa")]
        require_mfa: bool,
        #[arg(long)]
        no_require_mfa: bool,
        /// Enable its new users without an admin.
        #[arg(long, overrides_with = "no_auto_enable")]
        auto_enable: bool,
        #[arg(long)]
        no_auto_enable: bool,
        /// Its sign-in methods, e.g. `sso` or `email_code,password,totp` (needs `[local]`);
        /// "" goes back to the default.
        #[arg(long, value_name = "METHODS")]
        methods: Option<String>,
    },
}

fn parse_param(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("{raw:?} is not KEY=VALUE")),
    }
}

/// Commands name a user by email or by id (UUID).
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users, by email.
    List {
        /// Only users whose email contains this.
        #[arg(long)]
        search: Option<String>,
    },
    /// Show one user, with identities and live sessions.
    Show {
        #[arg(value_name = "USER")]
        user: UserRef,
    },
    /// Let a user in.
    Enable {
        #[arg(value_name = "USER")]
        user: UserRef,
    },
    /// Keep a user out, and end their sessions now.
    Disable {
        #[arg(value_name = "USER")]
        user: UserRef,
    },
    /// Give a user a role.
    Grant {
        #[arg(value_name = "USER")]
        user: UserRef,
        role: String,
    },
    /// Take a role away.
    Revoke {
        #[arg(value_name = "USER")]
        user: UserRef,
        role: String,
    },
    /// Remove an IdP identity (issuer, subject) from a user, and end the user's sessions.
    Unlink {
        #[arg(value_name = "USER")]
        user: UserRef,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        subject: String,
    },
    /// Set a user's local password, read from standard input (one line).
    SetPassword {
        #[arg(value_name = "USER")]
        user: UserRef,
    },
    /// Lift a block on a user's local sign-in (after repeated failures).
    Unlock {
        #[arg(value_name = "USER")]
        user: UserRef,
    },
    /// Remove a user's TOTP and recovery codes: they set it up again at their next sign-in.
    MfaReset {
        #[arg(value_name = "USER")]
        user: UserRef,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Create a session (and the user, if new) and print the cookie value.
    Create { email: String },
    /// End sessions now: one user's, or everyone's.
    Revoke {
        #[arg(
            long,
            value_name = "USER",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        user: Option<UserRef>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only events about this user: an id, an email, or part of an email.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only this kind of event (e.g. login_failed).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this outcome: success or failure.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only events of this identity provider (its configured name).
    #[arg(long)]
    pub idp: Option<String>,
    /// Only events at or after this time (RFC 3339, e.g. 2026-11-23T00:00:00Z, a date, or
    /// Unix seconds).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events at or before this time (same forms; a date means its end).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many (the most recent).
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let settings = Settings::load(cli.config.as_deref(), std::env::vars())?;
    match cli.command {
        Command::CheckConfig => {
            check_config::print(&settings);
            Ok(())
        }
        Command::Serve => serve::run(settings),
        command => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(CliError::Runtime)?;
            runtime.block_on(admin::run(settings, command))
        }
    }
}
