//! The steps of a local sign-in, shared by the pages and the API: start a flow for an address,
//! send a code, check a code (or the emailed link), a password, a TOTP code; at the end, who
//! signed in and how (`amr`, `acr`, `auth_time`).
//!
//! A first factor (code, link or password) that passes records the user on the flow; when
//! TOTP is due, the flow waits for it ([`Next`]). Every failure counts against the flow (5
//! and it is dead), the client address (`[limits] local_failures_per_ip`) and, for an
//! existing account, its lockout count (stored, so it holds across replicas and restarts).

use secrecy::SecretString;

use super::codes::{self, CODE_ATTEMPTS, FLOW_FAILURES};
use super::error::{WRONG_CODE, WRONG_PASSWORD};
use super::methods::{self, Method};
use super::{LOCAL_IDP, LOCAL_ISSUER, LOCAL_PATH, Local, LocalError, MFA_ACR, Realm, totp};
use crate::clock::unix_now;
use crate::email::Email;
use crate::limits::{Limit, client_group};
use crate::provisioning::Vouching;
use crate::session::OpaqueToken;
use crate::store::{
    AuditEvent, AuditKind, Credentials, Flow, NewFlow, Outcome, ProvisionRequest, StoreError, User,
};
use crate::strength::{AuthClaims, MFA_AMR};
use crate::web::Requester;

/// One step of a flow.
#[derive(Debug)]
pub enum Step {
    /// Email a code and link to the flow's address.
    SendCode,
    Code(String),
    Password(SecretString),
    /// A TOTP code, or a recovery code.
    Totp(String),
}

/// Where a flow stands after a step.
#[derive(Debug)]
pub enum Progress {
    CodeSent,
    /// The first factor passed; this is due before the sign-in completes.
    Next(Next),
    SignedIn(Box<SignedIn>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Totp,
    /// TOTP is required and the user has none yet: enroll first.
    EnrollTotp,
}

impl Next {
    pub fn as_str(self) -> &'static str {
        match self {
            Next::Totp => "totp",
            Next::EnrollTotp => "totp_enroll",
        }
    }
}

/// A completed sign-in: the flow is gone; the caller starts a session or issues tokens.
#[derive(Debug)]
pub struct SignedIn {
    pub user: User,
    pub auth: AuthClaims,
    pub redirect_to: Option<String>,
    pub client_id: Option<String>,
}

/// A new flow and its address's realm.
pub struct Started {
    pub token: OpaqueToken,
    pub realm: Realm,
}

/// The flow's `amr` for its first factor.
fn factor_amr(factor: &str) -> &'static str {
    match factor {
        "pwd" => "pwd",
        // An emailed code or link: RFC 8176 has no value for it; "email" is what it was.
        _ => "email",
    }
}

impl Local {
    /// Starts a flow for `email` (`client_id` for the API, `redirect_to` for a browser).
    pub async fn start(
        &self,
        email: &Email,
        client_id: Option<String>,
        redirect_to: Option<String>,
        signup: bool,
        requester: &Requester,
    ) -> Result<Started, LocalError> {
        let now = unix_now();
        if let Some(ip) = requester.ip {
            self.limits
                .check(Limit::LoginStartsPerIp, &client_group(ip), now)
                .map_err(LocalError::Limited)?;
        }
        let realm = self.realm(email, None).await?;
        let token = OpaqueToken::generate()?;
        self.store
            .insert_flow(&NewFlow {
                token_hash: token.hash().to_hex(),
                email: email.as_str().to_owned(),
                client_id,
                redirect_to,
                signup,
                created_at: now,
                expires_at: now.saturating_add(self.ttl(self.config.flow_ttl_seconds)),
            })
            .await?;
        Ok(Started { token, realm })
    }

    /// The live flow of `token`.
    pub async fn flow(&self, token: &OpaqueToken) -> Result<Flow, LocalError> {
        self.store
            .flow(&token.hash().to_hex(), FLOW_FAILURES, unix_now())
            .await?
            .ok_or(LocalError::FlowInvalid)
    }

    pub async fn flow_realm(&self, flow: &Flow) -> Result<Realm, LocalError> {
        let email = Email::parse(&flow.email).map_err(|_| LocalError::FlowInvalid)?;
        Ok(self.realm(&email, None).await?)
    }

    /// Runs one step of `flow`.
    pub async fn step(
        &self,
        flow: &Flow,
        step: Step,
        requester: &Requester,
    ) -> Result<Progress, LocalError> {
        let now = unix_now();
        if let Some(ip) = requester.ip
            && let Some(refused) =
                self.limits
                    .blocked_now(Limit::LocalFailuresPerIp, &client_group(ip), now)
        {
            return Err(LocalError::Limited(refused));
        }
        let realm = self.flow_realm(flow).await?;
        let needs = |method: Method| {
            if realm.allows(method) {
                Ok(())
            } else {
                Err(LocalError::NotAllowed(realm.refusal()))
            }
        };
        match step {
            Step::SendCode => {
                needs(Method::EmailCode)?;
                self.send_code(flow, &realm, requester, now).await
            }
            Step::Code(code) => {
                needs(Method::EmailCode)?;
                self.check_code(flow, &realm, &code, requester, now).await
            }
            Step::Password(password) => {
                needs(Method::Password)?;
                self.check_password(flow, &realm, password, requester, now)
                    .await
            }
            Step::Totp(code) => self.check_totp(flow, &code, requester, now).await,
        }
    }

    /// The emailed link: the caller has checked that this browser started `flow`.
    pub async fn follow_link(
        &self,
        flow: &Flow,
        requester: &Requester,
    ) -> Result<Progress, LocalError> {
        let now = unix_now();
        let realm = self.flow_realm(flow).await?;
        if !realm.allows(Method::EmailCode) {
            return Err(LocalError::NotAllowed(realm.refusal()));
        }
        self.email_proven(flow, &realm, requester, now).await
    }

    // === emailed codes ===

    async fn send_code(
        &self,
        flow: &Flow,
        realm: &Realm,
        requester: &Requester,
        now: i64,
    ) -> Result<Progress, LocalError> {
        self.limits
            .check(Limit::EmailsPerAccount, &flow.email, now)
            .map_err(LocalError::Limited)?;
        let code = codes::new_code()?;
        let link = OpaqueToken::generate()?;
        let ttl = self.ttl(self.config.code_ttl_seconds);
        // Stored whoever the address belongs to: the same work for every answer.
        self.store
            .set_flow_code(
                &flow.token_hash,
                &codes::code_hash(&flow.token_hash, &code),
                &link.hash().to_hex(),
                now.saturating_add(ttl),
            )
            .await?;
        let user = self.store.user_by_email(&flow.email).await?;
        let locked = match &user {
            Some(u) => self.store.credentials(u.id).await?.locked_at(now),
            None => false,
        };
        let mail = if locked {
            self.mailer.blocked_mail()
        } else if user.is_some() || self.may_sign_up(realm, flow.signup) {
            // An API flow has no browser cookie for the link to complete in: code only.
            let link = flow
                .client_id
                .is_none()
                .then(|| self.link(&format!("{LOCAL_PATH}/link"), link.as_str()));
            self.mailer
                .code_mail(realm.org_name(), &code, link.as_deref(), ttl / 60)
        } else {
            self.mailer.no_account_mail(&flow.email)
        };
        self.send(
            &flow.email,
            mail,
            user.as_ref().map(|u| u.id),
            requester,
            now,
        )
        .await?;
        Ok(Progress::CodeSent)
    }

    async fn check_code(
        &self,
        flow: &Flow,
        realm: &Realm,
        typed: &str,
        requester: &Requester,
        now: i64,
    ) -> Result<Progress, LocalError> {
        let (Some(stored), Some(expires)) = (&flow.code_hash, flow.code_expires_at) else {
            return Err(self
                .fail(flow, None, LocalError::Rejected(WRONG_CODE), requester, now)
                .await);
        };
        let attempts = self.store.count_code_attempt(&flow.token_hash).await?;
        if attempts > CODE_ATTEMPTS {
            return Err(self
                .fail(flow, None, LocalError::CodeSpent, requester, now)
                .await);
        }
        if expires <= now || !codes::code_matches(&flow.token_hash, typed, stored) {
            let user = self.store.user_by_email(&flow.email).await?;
            return Err(self
                .fail(
                    flow,
                    user.as_ref(),
                    LocalError::Rejected(WRONG_CODE),
                    requester,
                    now,
                )
                .await);
        }
        self.email_proven(flow, realm, requester, now).await
    }

    /// A code or link proved the address: find or provision its user (a proven address
    /// counts as a verified email for linking).
    async fn email_proven(
        &self,
        flow: &Flow,
        realm: &Realm,
        requester: &Requester,
        now: i64,
    ) -> Result<Progress, LocalError> {
        let email = Email::parse(&flow.email).map_err(|_| LocalError::FlowInvalid)?;
        if let Some(user) = self.store.user_by_email(email.as_str()).await?
            && self.store.credentials(user.id).await?.locked_at(now)
        {
            return Err(LocalError::Rejected(
                "Signing in with a code or password is blocked for a while after repeated \
                 failures. Try again later.",
            ));
        }
        let may_create = self.may_sign_up(realm, flow.signup);
        let outcome = self
            .store
            .provision(&ProvisionRequest {
                issuer: LOCAL_ISSUER.to_owned(),
                subject: email.as_str().to_owned(),
                idp: LOCAL_IDP.to_owned(),
                email: Some(email.clone()),
                email_verified: Some(true),
                vouching: Vouching {
                    vouched: true,
                    link: self.provisioning.link_by_verified_email,
                    place_in_org: true,
                    limits: Vec::new(),
                },
                name: None,
                new_users_enabled: self.provisioning.new_users_enabled,
                may_create,
                ip: requester.ip.map(|ip| ip.to_string()),
                user_agent: requester.user_agent.clone(),
                now,
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => LocalError::NoAccount(email.as_str().to_owned()),
                StoreError::Conflict(m) | StoreError::Invalid(m) => LocalError::Provisioning(m),
                other => other.into(),
            })?;
        let user = outcome.user().clone();
        self.after_first_factor(flow, realm, user, "email", requester, now)
            .await
    }

    // === passwords ===

    async fn check_password(
        &self,
        flow: &Flow,
        realm: &Realm,
        password: SecretString,
        requester: &Requester,
        now: i64,
    ) -> Result<Progress, LocalError> {
        let user = self.store.user_by_email(&flow.email).await?;
        let credentials = match &user {
            Some(u) => self.store.credentials(u.id).await?,
            None => Credentials::default(),
        };
        let stored = credentials.password_hash.clone();
        // Always one argon2 verification: unknown, password-less and blocked accounts take
        // as long as a wrong password.
        let verified = self
            .verify_password(password.clone(), stored.clone())
            .await?;
        let user = match user {
            Some(user) if verified.matches && !credentials.locked_at(now) => user,
            known => {
                return Err(self
                    .fail(
                        flow,
                        known.as_ref(),
                        LocalError::Rejected(WRONG_PASSWORD),
                        requester,
                        now,
                    )
                    .await);
            }
        };
        if verified.needs_rehash
            && let Some(old) = &stored
        {
            match self.passwords.hash(password).await {
                Ok(new) => {
                    if let Err(e) = self.store.rehash_password(user.id, old, &new, now).await {
                        tracing::warn!(error = %e, "could not store a rehashed password");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not rehash a password"),
            }
        }
        self.after_first_factor(flow, realm, user, "pwd", requester, now)
            .await
    }

    /// After a first factor (`email`: a code or link, which is burnt; `pwd`): recorded on the
    /// flow exactly once, then TOTP when due, else done.
    async fn after_first_factor(
        &self,
        flow: &Flow,
        realm: &Realm,
        user: User,
        factor: &str,
        requester: &Requester,
        now: i64,
    ) -> Result<Progress, LocalError> {
        let burn_code = factor == "email";
        if !self
            .store
            .pass_first_factor(&flow.token_hash, factor, user.id, burn_code)
            .await?
        {
            return Err(LocalError::FlowInvalid);
        }
        self.store.clear_local_failures(user.id, now).await?;
        let credentials = self.store.credentials(user.id).await?;
        let enrolled = credentials.totp_secret.is_some();
        // An org that requires MFA of its users gets it from its local users too.
        let org_requires = realm.org.as_ref().is_some_and(|o| o.require_mfa);
        if org_requires || methods::totp_required(&realm.methods, self.config.mfa, enrolled) {
            return Ok(Progress::Next(if enrolled {
                Next::Totp
            } else {
                Next::EnrollTotp
            }));
        }
        let auth = AuthClaims {
            amr: vec![factor_amr(factor).to_owned()],
            acr: None,
            auth_time: Some(now),
        };
        self.finish(flow, user, auth, requester, now).await
    }

    // === TOTP ===

    async fn check_totp(
        &self,
        flow: &Flow,
        typed: &str,
        requester: &Requester,
        now: i64,
    ) -> Result<Progress, LocalError> {
        let (Some(factor), Some(user_id)) = (&flow.first_factor, flow.user_id) else {
            return Err(LocalError::OutOfOrder(
                "Sign in with your email code or password first.",
            ));
        };
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(LocalError::FlowInvalid)?;
        let credentials = self.store.credentials(user_id).await?;
        let Some(sealed) = credentials.totp_secret.as_deref() else {
            return Err(LocalError::OutOfOrder(
                "Set up your authenticator app first.",
            ));
        };
        let accepted =
            !credentials.locked_at(now) && self.totp_accepted(user_id, sealed, typed, now).await?;
        if !accepted {
            return Err(self
                .fail(
                    flow,
                    Some(&user),
                    LocalError::Rejected("The authentication code is not correct."),
                    requester,
                    now,
                )
                .await);
        }
        self.finish(flow, user, mfa_auth(factor, now), requester, now)
            .await
    }

    /// Whether `typed` is a fresh TOTP code (marking its step used) or an unused recovery
    /// code (marking it used).
    pub(super) async fn totp_accepted(
        &self,
        user_id: uuid::Uuid,
        sealed: &str,
        typed: &str,
        now: i64,
    ) -> Result<bool, LocalError> {
        if totp::is_recovery_code(typed) {
            return Ok(self
                .store
                .use_recovery_code(user_id, &totp::recovery_hash(typed), now)
                .await?);
        }
        let secret = self.open(sealed, user_id)?;
        match totp::matching_step(&secret, typed, now)? {
            Some(step) => Ok(self.store.use_totp_step(user_id, step).await?),
            None => Ok(false),
        }
    }

    /// Ends the flow (exactly once) and reports who signed in.
    pub(super) async fn finish(
        &self,
        flow: &Flow,
        user: User,
        auth: AuthClaims,
        requester: &Requester,
        now: i64,
    ) -> Result<Progress, LocalError> {
        if !self.store.delete_flow(&flow.token_hash).await? {
            return Err(LocalError::FlowInvalid);
        }
        let event = requester.audit(
            AuditEvent::new(AuditKind::LoginSucceeded, Outcome::Success, now)
                .user(user.id)
                .idp(LOCAL_IDP)
                .detail(format!("amr={}", auth.amr.join(" "))),
        );
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(error = %e, "could not audit a local sign-in");
        }
        self.metrics.record_login(LOCAL_IDP, "success");
        Ok(Progress::SignedIn(Box::new(SignedIn {
            user,
            auth,
            redirect_to: flow.redirect_to.clone(),
            client_id: flow.client_id.clone(),
        })))
    }

    /// Counts a failed step against the flow, the client address and the account (blocking
    /// it at `lockout_failures`, with one notification mail per block); audits it; returns
    /// `error` for the caller to answer with.
    pub(super) async fn fail(
        &self,
        flow: &Flow,
        user: Option<&User>,
        error: LocalError,
        requester: &Requester,
        now: i64,
    ) -> LocalError {
        self.metrics.record_login(LOCAL_IDP, error.reason());
        if let Err(e) = self.store.count_flow_failure(&flow.token_hash).await {
            return e.into();
        }
        if let Some(ip) = requester.ip {
            self.limits
                .charge_failure(Limit::LocalFailuresPerIp, &client_group(ip), now);
        }
        let mut event = requester.audit(
            AuditEvent::new(AuditKind::LoginFailed, Outcome::Failure, now)
                .idp(LOCAL_IDP)
                .detail(format!("{}: {}", error.reason(), flow.email)),
        );
        event.user_id = user.map(|u| u.id);
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(error = %e, "could not audit a failed local sign-in");
        }
        // Failures while blocked do not count again: an attacker hammering a blocked account
        // must not start block after block (and mail after mail).
        let blocked = match user {
            Some(user) => match self.store.credentials(user.id).await {
                Ok(c) => c.locked_at(now),
                Err(e) => return e.into(),
            },
            None => false,
        };
        if let Some(user) = user.filter(|_| !blocked) {
            let locked = requester.audit(
                AuditEvent::new(AuditKind::AccountLocked, Outcome::Failure, now)
                    .user(user.id)
                    .idp(LOCAL_IDP)
                    .detail(format!(
                        "{} failed attempts: local sign-in blocked for {} s",
                        self.config.lockout_failures, self.config.lockout_seconds
                    )),
            );
            match self
                .store
                .record_local_failure(
                    user.id,
                    i64::from(self.config.lockout_failures),
                    self.ttl(self.config.lockout_seconds),
                    &locked,
                    now,
                )
                .await
            {
                Ok(true) => self.notify_locked(user, requester, now).await,
                Ok(false) => {}
                Err(e) => return e.into(),
            }
        }
        error
    }

    async fn notify_locked(&self, user: &User, requester: &Requester, now: i64) {
        let when = chrono::DateTime::from_timestamp(now, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        let mail = self.mailer.locked_mail(
            &when,
            &requester
                .ip
                .map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string()),
            requester
                .user_agent
                .as_deref()
                .unwrap_or("an unknown browser"),
            self.ttl(self.config.lockout_seconds) / 60,
        );
        // The block stands whether or not the notice goes out; a failure is audited.
        let _ = self
            .send(&user.email, mail, Some(user.id), requester, now)
            .await;
    }
}

/// A sign-in that passed TOTP after `factor`.
pub(super) fn mfa_auth(factor: &str, now: i64) -> AuthClaims {
    let mut amr = vec![
        factor_amr(factor).to_owned(),
        "otp".to_owned(),
        MFA_AMR.to_owned(),
    ];
    amr.sort();
    AuthClaims {
        amr,
        acr: Some(MFA_ACR.to_owned()),
        auth_time: Some(now),
    }
}
