//! The `[local]` and `[email]` sections as written in the file. Owned by local sign-in
//! ([`super`]); validated here, except the rules that span sections (TOTP secrets need
//! `token.encryption_key`, an `[[idp]]` may not be called `local`), which the configuration
//! loader keeps. A leaf: the loader reads it, so it imports nothing of the flows.

use lettre::{AsyncSmtpTransport, Tokio1Executor};
use serde::Deserialize;

use super::methods::{Method, MfaPolicy};

/// The name local sign-in goes by where an `[[idp]]` name would be: sessions, the audit
/// trail, metrics. No `[[idp]]` may take it.
pub const LOCAL_IDP: &str = "local";

/// `[local]`: sign-in without an identity provider. Absent: local methods are off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// The methods of an org that has set none (and of addresses in no org). `sso` may be
    /// listed too: such users are also offered the default IdP.
    pub methods: Vec<Method>,
    /// How long an emailed code and link are valid.
    pub code_ttl_seconds: u64,
    /// How long a password-reset link is valid.
    pub reset_ttl_seconds: u64,
    /// How long a sign-in in progress (`x-session-token`, the browser's flow) lives.
    pub flow_ttl_seconds: u64,
    pub password_min_length: usize,
    /// Failed local attempts for one account before its local sign-in is blocked.
    pub lockout_failures: u32,
    pub lockout_seconds: u64,
    pub mfa: MfaPolicy,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            methods: vec![Method::EmailCode],
            code_ttl_seconds: 600,
            reset_ttl_seconds: 1800,
            flow_ttl_seconds: 600,
            password_min_length: 12,
            lockout_failures: 10,
            lockout_seconds: 900,
            mfa: MfaPolicy::Optional,
        }
    }
}

/// `[email]`: how gatehouse sends mail (codes, links, lockout notices).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host:port` (STARTTLS when the server offers it; `?tls=required` insists),
    /// `smtps://host:port` (TLS from the start), or `log` (development: messages go to the
    /// log). A user name may be given in the URL; the password comes from
    /// `smtp_password_env`.
    pub smtp_url: String,
    /// Name of the environment variable holding the SMTP password.
    #[serde(default)]
    pub smtp_password_env: Option<String>,
    /// The sender, e.g. `"Acme <no-reply@acme.test>"`.
    pub from: String,
    /// The product named in messages and pages.
    #[serde(default = "default_product")]
    pub product_name: String,
}

fn default_product() -> String {
    "gatehouse".to_owned()
}

/// A problem with `[local]` or `[email]`: the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Checks an `smtp_url` without connecting.
pub fn check_smtp_url(url: &str) -> Result<(), String> {
    if url == "log" {
        return Ok(());
    }
    if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
        return Err(
            "must be smtp://host:port (STARTTLS with ?tls=required), smtps://host:port, or \"log\""
                .into(),
        );
    }
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks `[local]` against `[email]`.
pub fn validate(local: Option<&LocalConfig>, email: Option<&EmailConfig>) -> Result<(), Invalid> {
    if let Some(email) = email {
        check_smtp_url(&email.smtp_url).map_err(|e| invalid("email.smtp_url", e))?;
        if email.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "email.from",
                format!(
                    "{:?} is not a mailbox (e.g. \"Acme <no-reply@acme.test>\")",
                    email.from
                ),
            ));
        }
    }
    let Some(local) = local else {
        return Ok(());
    };
    for (key, value) in [
        ("local.code_ttl_seconds", local.code_ttl_seconds),
        ("local.reset_ttl_seconds", local.reset_ttl_seconds),
        ("local.flow_ttl_seconds", local.flow_ttl_seconds),
        ("local.lockout_seconds", local.lockout_seconds),
        ("local.lockout_failures", u64::from(local.lockout_failures)),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be greater than 0"));
        }
    }
    if local.password_min_length < 8 {
        return Err(invalid(
            "local.password_min_length",
            "must be at least 8 (NIST SP 800-63B)",
        ));
    }
    if local.methods.contains(&Method::Totp) && local.mfa == MfaPolicy::Off {
        return Err(invalid(
            "local.methods",
            "totp is listed (every local user must use it) but local.mfa = \"off\"",
        ));
    }
    if !local
        .methods
        .iter()
        .any(|m| matches!(m, Method::EmailCode | Method::Password | Method::Sso))
    {
        return Err(invalid(
            "local.methods",
            "list at least one way in: email_code, password or sso (totp is a second step)",
        ));
    }
    if email.is_none() {
        return Err(invalid(
            "email.smtp_url",
            "local sign-in sends codes, reset links and lockout notices: configure [email] \
             (smtp_url = \"log\" for development)",
        ));
    }
    Ok(())
}
