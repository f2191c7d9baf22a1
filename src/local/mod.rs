//! Sign-in without an identity provider: emailed codes and links, passwords (argon2id) with
//! reset and lockout, TOTP as a second step, for browsers (pages under `/auth/local`) and for
//! native and headless clients (`/auth/v1/init` + `/auth/v1/authenticate`).
//!
//! Both use one state machine, the *flow*: a sign-in in progress for one email address, kept
//! server-side under the hash of a random token (the browser's `gatehouse-flow` cookie, or the
//! API's `x-session-token`). A flow lives `flow_ttl_seconds`, survives 5 failed steps, and is
//! deleted when it signs someone in. [`flow`] holds the steps; [`browser`] and [`api`] present
//! them; [`account`] is what a signed-in user (or a reset link) does to their credentials.
//!
//! An org with SSO never accepts a local credential ([`methods`]). Answers never tell whether
//! an account exists: a code request or reset for an unknown address sends a "no account"
//! mail instead of a code (same status, body and work), and a password for an unknown address
//! is checked against a dummy argon2 hash.

pub mod account;
pub mod api;
pub mod browser;
pub mod codes;
pub mod config;
pub mod error;
pub mod flow;
pub mod mailer;
pub mod methods;
pub mod password;
pub mod totp;

use std::sync::Arc;

use secrecy::SecretString;

use crate::apps::Apps;
use crate::broker::redirect::RedirectPolicy;
use crate::config::{IdpConfig, PAPE_MULTI_FACTOR, ProvisioningConfig, Settings};
use crate::email::Email;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::session::Sessions;
use crate::session::cookie::CookieSettings;
use crate::store::{AuditEvent, Org, Store, StoreError};
use crate::tokens::keys::KeyVault;
use crate::web::Requester;
use config::LocalConfig;
pub use error::LocalError;
use mailer::{Mail, Mailer};
use methods::{DomainFacts, Method};
use password::PasswordPool;

pub use config::LOCAL_IDP;
/// The issuer of the `(issuer, subject)` identity an emailed code creates (subject: the
/// address).
pub const LOCAL_ISSUER: &str = "urn:gatehouse:local";
/// The `acr` of a local sign-in that used TOTP: the MFA policy Auth0 also uses, so step-up
/// rules read it the same way.
pub const MFA_ACR: &str = PAPE_MULTI_FACTOR;

pub const LOCAL_PATH: &str = "/auth/local";

/// What an address may use to sign in, and how to name its SSO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realm {
    pub domain: String,
    pub methods: Vec<Method>,
    /// The org owning the domain, if any.
    pub org: Option<Org>,
}

impl Realm {
    /// Whether the local sign-in page has something to offer.
    pub fn offers_local(&self) -> bool {
        self.methods
            .iter()
            .any(|m| matches!(m, Method::EmailCode | Method::Password))
    }

    pub fn allows(&self, method: Method) -> bool {
        self.methods.contains(&method)
    }

    /// "acme.test signs in with Acme SSO": why a local method is refused.
    pub fn refusal(&self) -> String {
        let how = match (&self.org, self.allows(Method::Sso)) {
            (Some(org), true) => format!("{} SSO", org.name),
            (None, true) => "single sign-on".to_owned(),
            (_, false) => {
                let names: Vec<&str> = self
                    .methods
                    .iter()
                    .filter(|m| **m != Method::Totp)
                    .map(|m| match m {
                        Method::EmailCode => "an emailed code",
                        Method::Password => "a password",
                        _ => "single sign-on",
                    })
                    .collect();
                names.join(" or ")
            }
        };
        format!("{} signs in with {how}.", self.domain)
    }

    pub fn org_name(&self) -> Option<&str> {
        self.org.as_ref().map(|o| o.name.as_str())
    }
}

pub struct Local {
    config: LocalConfig,
    mailer: Mailer,
    passwords: PasswordPool,
    /// Seals TOTP secrets (`token.encryption_key`); `None` when `[local] mfa = "off"`.
    vault: Option<KeyVault>,
    store: Store,
    sessions: Sessions,
    cookies: CookieSettings,
    limits: Arc<Limits>,
    /// Issues the API's tokens; `None` without `[[client]]` apps.
    apps: Option<Arc<Apps>>,
    redirects: RedirectPolicy,
    public_origin: String,
    /// Domains `[[idp]]`s list (SSO), as configured at start.
    idp_domains: Vec<String>,
    provisioning: ProvisioningConfig,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalSetupError {
    #[error("[email]: {0}")]
    Mail(#[from] mailer::MailError),
    #[error("token.encryption_key: {0}")]
    Key(String),
    #[error("password hashing: {0}")]
    Password(#[from] password::PasswordError),
}

/// What [`Local::new`] needs besides the settings.
pub struct LocalParts {
    pub store: Store,
    pub sessions: Sessions,
    pub cookies: CookieSettings,
    pub limits: Arc<Limits>,
    pub apps: Option<Arc<Apps>>,
    pub metrics: Arc<Metrics>,
}

impl Local {
    /// `None` without a `[local]` section.
    pub fn new(settings: &Settings, parts: LocalParts) -> Result<Option<Self>, LocalSetupError> {
        let (Some(config), Some(email)) = (&settings.local, &settings.email) else {
            return Ok(None);
        };
        let vault = match settings.token_encryption_key() {
            Some(key) if config.mfa != methods::MfaPolicy::Off => {
                Some(KeyVault::new(&key).map_err(|e| LocalSetupError::Key(e.to_string()))?)
            }
            _ => None,
        };
        let mailer = Mailer::new(email)?;
        if mailer.logs_only() {
            tracing::warn!(
                "email.smtp_url = \"log\": sign-in codes and reset links are written to this \
                 log and NOT emailed. For development only: never run this in production."
            );
        }
        Ok(Some(Self {
            config: config.clone(),
            mailer,
            passwords: PasswordPool::new()?,
            vault,
            store: parts.store,
            sessions: parts.sessions,
            cookies: parts.cookies,
            limits: parts.limits,
            apps: parts.apps,
            redirects: RedirectPolicy::new(
                settings.server.public_url.clone(),
                &settings.login.allowed_redirect_hosts,
            ),
            public_origin: settings.public_origin(),
            idp_domains: settings
                .idps
                .iter()
                .flat_map(|i| i.domains.iter().map(|d| d.to_ascii_lowercase()))
                .collect(),
            provisioning: settings.provisioning.clone(),
            metrics: parts.metrics,
        }))
    }

    /// The realm of `email`, given its org (already looked up by the caller, or `None` to
    /// look it up here).
    pub async fn realm(
        &self,
        email: &Email,
        org: Option<Option<Org>>,
    ) -> Result<Realm, StoreError> {
        let domain = email.domain().to_owned();
        let org = match org {
            Some(org) => org,
            None => self.store.org_for_domain(&domain).await?,
        };
        Ok(self.realm_with(domain, org))
    }

    fn realm_with(&self, domain: String, org: Option<Org>) -> Realm {
        realm_from(&self.config, &self.idp_domains, domain, org)
    }

    /// Sends `mail` to `to`; a failure is audited (`email_failed`) and returned.
    async fn send(
        &self,
        to: &str,
        mail: Mail,
        user: Option<uuid::Uuid>,
        requester: &Requester,
        now: i64,
    ) -> Result<(), LocalError> {
        let subject = mail.subject.clone();
        match self.mailer.send(to, mail).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "could not send a sign-in email");
                let mut event = requester.audit(
                    AuditEvent::new(
                        crate::store::AuditKind::EmailFailed,
                        crate::store::Outcome::Failure,
                        now,
                    )
                    .idp(LOCAL_IDP)
                    .detail(format!("{subject:?}: {e}")),
                );
                event.user_id = user;
                if let Err(err) = self.store.record_audit(&event).await {
                    tracing::warn!(error = %err, "could not audit a failed email");
                }
                Err(e.into())
            }
        }
    }

    /// Whether a new user may be created for `email` by proving it: as for SSO sign-ups,
    /// with `open_signup`, `signup=1`, or a domain an org lists.
    fn may_sign_up(&self, realm: &Realm, signup: bool) -> bool {
        self.provisioning.open_signup || signup || realm.org.is_some()
    }

    fn seal(&self, secret: &[u8], user_id: uuid::Uuid) -> Result<String, LocalError> {
        let vault = self
            .vault
            .as_ref()
            .ok_or_else(|| LocalError::NotAllowed("TOTP is switched off here.".into()))?;
        vault
            .seal(totp_aad(user_id).as_bytes(), secret)
            .map_err(|e| LocalError::Internal(e.to_string()))
    }

    fn open(&self, sealed: &str, user_id: uuid::Uuid) -> Result<Vec<u8>, LocalError> {
        let vault = self
            .vault
            .as_ref()
            .ok_or_else(|| LocalError::NotAllowed("TOTP is switched off here.".into()))?;
        vault
            .open("totp", totp_aad(user_id).as_bytes(), sealed)
            .map_err(|e| LocalError::Internal(e.to_string()))
    }

    fn ttl(&self, seconds: u64) -> i64 {
        i64::try_from(seconds).unwrap_or(i64::MAX)
    }

    fn link(&self, path: &str, token: &str) -> String {
        format!("{}{path}?t={token}", self.public_origin)
    }

    /// Verifies a password off the workers (a dummy hash when `stored` is `None`).
    async fn verify_password(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<password::Verified, LocalError> {
        Ok(self.passwords.verify(password, stored).await?)
    }
}

/// The realm of `domain` under `[local]` `local` and the configured `[[idp]]`s.
pub fn realm_of(local: &LocalConfig, idps: &[IdpConfig], domain: &str, org: Option<Org>) -> Realm {
    let idp_domains: Vec<String> = idps
        .iter()
        .flat_map(|i| i.domains.iter().map(|d| d.to_ascii_lowercase()))
        .collect();
    realm_from(local, &idp_domains, domain.to_owned(), org)
}

fn realm_from(
    local: &LocalConfig,
    idp_domains: &[String],
    domain: String,
    org: Option<Org>,
) -> Realm {
    let org_methods: Option<Vec<Method>> = org
        .as_ref()
        .and_then(|o| o.methods.as_ref())
        .map(|list| list.iter().filter_map(|m| Method::parse(m)).collect());
    let methods = methods::methods_for(&DomainFacts {
        org_methods: org_methods.as_deref(),
        org_has_idp: org.as_ref().is_some_and(|o| o.idp.is_some()),
        idp_lists_domain: idp_domains.contains(&domain),
        local_default: Some(&local.methods),
    });
    Realm {
        domain,
        methods,
        org,
    }
}

/// Binds a sealed TOTP secret to its user: a sealed value copied to another row does not open.
fn totp_aad(user_id: uuid::Uuid) -> String {
    format!("totp:{user_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm(methods: &[Method], org: Option<&str>) -> Realm {
        Realm {
            domain: "acme.test".into(),
            methods: methods.to_vec(),
            org: org.map(|name| Org {
                id: uuid::Uuid::nil(),
                name: name.into(),
                auto_enable: false,
                domains: vec!["acme.test".into()],
                idp: None,
                idp_params: Default::default(),
                require_mfa: false,
                methods: None,
            }),
        }
    }

    #[test]
    fn refusals_name_the_sign_in() {
        assert_eq!(
            realm(&[Method::Sso], Some("Acme")).refusal(),
            "acme.test signs in with Acme SSO."
        );
        assert_eq!(
            realm(&[Method::Sso], None).refusal(),
            "acme.test signs in with single sign-on."
        );
        assert_eq!(
            realm(&[Method::EmailCode, Method::Totp], None).refusal(),
            "acme.test signs in with an emailed code."
        );
        assert!(!realm(&[Method::Sso], None).offers_local());
        assert!(realm(&[Method::Sso, Method::Password], None).offers_local());
    }
}
