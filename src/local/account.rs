//! What happens to a user's local credentials outside a sign-in: TOTP enrollment, the
//! password reset by emailed link ("forgot"), and setting or changing a password while signed
//! in. A new password ends the user's other sessions and revokes their apps' refresh tokens
//! in the same transaction.

use http::{HeaderMap, StatusCode};
use secrecy::SecretString;

use super::browser::{PageForm, csrf_token};
use super::methods::{self, Method};
use super::password::check_strength;
use super::{LOCAL_IDP, LOCAL_PATH, Local, LocalError, totp};
use crate::clock::unix_now;
use crate::email::Email;
use crate::identity::SessionCaller;
use crate::limits::Limit;
use crate::pages::{self, local as local_pages};
use crate::session::OpaqueToken;
use crate::session::cookie::{self, TokenCookie};
use crate::store::{AuditEvent, AuditKind, Outcome, PasswordChange};
use crate::web::{Reply, Requester};

/// A TOTP secret being set up: what the enrollment page shows.
pub struct Enrollment {
    pub secret_text: String,
    pub qr_svg: String,
}

/// The "we sent you a link" answer, the same whether or not the address has an account.
const RESET_SENT: &str = "If the address can sign in with a password, we sent it a link to \
                          choose a new one. Check your email.";

/// The double-submit cookie of the forgot-password form (no flow or session to bind to).
const FORGOT_CSRF_COOKIE: &str = "gatehouse-forgot";

impl Local {
    // === TOTP enrollment ===

    /// A new secret for `user_id`, pending until its first code confirms it.
    pub async fn begin_enrollment(&self, user_id: uuid::Uuid) -> Result<Enrollment, LocalError> {
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(LocalError::FlowInvalid)?;
        let email = Email::parse(&user.email).map_err(|_| LocalError::FlowInvalid)?;
        let realm = self.realm(&email, None).await?;
        if !methods::totp_offered(&realm.methods, self.config.mfa) || !realm.offers_local() {
            return Err(LocalError::NotAllowed(
                "Two-factor authentication with an app is not available for this account.".into(),
            ));
        }
        let secret = totp::new_secret()?;
        let sealed = self.seal(&secret, user_id)?;
        self.store
            .set_totp_pending(user_id, &sealed, unix_now())
            .await?;
        self.enrollment_view(&secret, &user.email)
    }

    /// The enrollment in progress, shown again after a wrong first code.
    pub async fn pending_enrollment(
        &self,
        user_id: uuid::Uuid,
    ) -> Result<Option<Enrollment>, LocalError> {
        let Some(user) = self.store.user_by_id(user_id).await? else {
            return Ok(None);
        };
        let Some(sealed) = self.store.credentials(user_id).await?.totp_pending else {
            return Ok(None);
        };
        let secret = self.open(&sealed, user_id)?;
        self.enrollment_view(&secret, &user.email).map(Some)
    }

    fn enrollment_view(&self, secret: &[u8], email: &str) -> Result<Enrollment, LocalError> {
        let uri = totp::otpauth_uri(secret, self.mailer.product(), email);
        Ok(Enrollment {
            secret_text: totp::secret_text(secret),
            qr_svg: totp::qr_svg(&uri)?,
        })
    }

    /// Turns TOTP on with the first code from the app; returns the ten recovery codes (shown
    /// once). Audited as `mfa_enrolled`.
    pub async fn confirm_enrollment(
        &self,
        user_id: uuid::Uuid,
        typed: &str,
        requester: &Requester,
    ) -> Result<Vec<String>, LocalError> {
        let now = unix_now();
        let Some(sealed) = self.store.credentials(user_id).await?.totp_pending else {
            return Err(LocalError::OutOfOrder("Start the set-up again."));
        };
        let secret = self.open(&sealed, user_id)?;
        let Some(step) = totp::matching_step(&secret, typed, now)? else {
            return Err(LocalError::Rejected(
                "That code is not right: check the app's clock and type the current code.",
            ));
        };
        let codes = totp::recovery_codes()?;
        let hashes: Vec<String> = codes.iter().map(|(_, h)| h.clone()).collect();
        let event = requester.audit(
            AuditEvent::new(AuditKind::MfaEnrolled, Outcome::Success, now)
                .user(user_id)
                .idp(LOCAL_IDP)
                .detail("totp"),
        );
        if !self
            .store
            .confirm_totp(user_id, &sealed, step, &hashes, &event, now)
            .await?
        {
            return Err(LocalError::OutOfOrder("Start the set-up again."));
        }
        Ok(codes.into_iter().map(|(code, _)| code).collect())
    }

    // === forgot / reset ===

    /// `GET /auth/local/forgot`.
    pub fn page_forgot(&self) -> Reply {
        let token = match OpaqueToken::generate() {
            Ok(t) => t,
            Err(e) => return self.page_error(&e.into()),
        };
        Reply::Page {
            status: StatusCode::OK,
            html: local_pages::forgot_page(&csrf_token("forgot", token.as_str()), None, None),
            cookies: vec![self.forgot_cookie(&token)],
        }
    }

    fn forgot_cookie(&self, token: &OpaqueToken) -> String {
        ::cookie::Cookie::build((FORGOT_CSRF_COOKIE, token.as_str().to_owned()))
            .http_only(true)
            .secure(self.cookies.secure)
            .same_site(::cookie::SameSite::Strict)
            .path(format!("{LOCAL_PATH}/forgot"))
            .max_age(::cookie::time::Duration::seconds(3600))
            .build()
            .to_string()
    }

    /// `POST /auth/local/forgot`: a reset link to an address that may use a password; the
    /// same answer (and a "no account" mail) otherwise.
    pub async fn page_forgot_submit(
        &self,
        form: PageForm,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let secret = match cookie::find(headers, FORGOT_CSRF_COOKIE) {
            TokenCookie::Present(t) => t,
            _ => return self.page_forgot(),
        };
        let csrf = csrf_token("forgot", secret.as_str());
        if !self.csrf_ok(&form, &csrf) {
            return self.page_forgot();
        }
        let raw = form.fields.get("email").map_or("", String::as_str);
        let Ok(email) = Email::parse(raw) else {
            return Reply::Page {
                status: StatusCode::BAD_REQUEST,
                html: local_pages::forgot_page(&csrf, Some("Enter your email address."), None),
                cookies: Vec::new(),
            };
        };
        match self.forgot(&email, requester).await {
            Ok(()) => Reply::Page {
                status: StatusCode::OK,
                html: local_pages::forgot_page(&csrf, None, Some(RESET_SENT)),
                cookies: Vec::new(),
            },
            Err(e) => self.page_error(&e),
        }
    }

    /// Emails a reset link (or, for an address without an account, a "no account" mail).
    /// An SSO-only domain is refused with its sign-in's name.
    pub async fn forgot(&self, email: &Email, requester: &Requester) -> Result<(), LocalError> {
        let now = unix_now();
        let realm = self.realm(email, None).await?;
        if !realm.allows(Method::Password) {
            return Err(LocalError::NotAllowed(realm.refusal()));
        }
        self.limits
            .check(Limit::EmailsPerAccount, email.as_str(), now)
            .map_err(LocalError::Limited)?;
        let token = OpaqueToken::generate()?;
        let ttl = self.ttl(self.config.reset_ttl_seconds);
        let user = self.store.user_by_email(email.as_str()).await?;
        let mail = match &user {
            Some(user) => {
                self.store
                    .insert_password_reset(
                        &token.hash().to_hex(),
                        user.id,
                        now,
                        now.saturating_add(ttl),
                    )
                    .await?;
                self.mailer.reset_mail(
                    realm.org_name(),
                    &self.link(&format!("{LOCAL_PATH}/reset"), token.as_str()),
                    ttl / 60,
                )
            }
            None => self.mailer.no_account_mail(email.as_str()),
        };
        self.send(
            email.as_str(),
            mail,
            user.as_ref().map(|u| u.id),
            requester,
            now,
        )
        .await
    }

    /// `GET /auth/local/reset?t=`.
    pub async fn page_reset(&self, token: Option<&str>) -> Reply {
        match self.reset_target(token).await {
            Ok(Some((_, email))) => Reply::Page {
                status: StatusCode::OK,
                html: local_pages::reset_page(
                    token.unwrap_or_default(),
                    &email,
                    None,
                    self.config.password_min_length,
                ),
                cookies: Vec::new(),
            },
            Ok(None) => self.reset_expired(),
            Err(e) => self.page_error(&e),
        }
    }

    async fn reset_target(
        &self,
        token: Option<&str>,
    ) -> Result<Option<(uuid::Uuid, String)>, LocalError> {
        let Some(token) = token.and_then(OpaqueToken::parse) else {
            return Ok(None);
        };
        let Some(user_id) = self
            .store
            .password_reset_user(&token.hash().to_hex(), unix_now())
            .await?
        else {
            return Ok(None);
        };
        Ok(self
            .store
            .user_by_id(user_id)
            .await?
            .map(|u| (u.id, u.email)))
    }

    fn reset_expired(&self) -> Reply {
        Reply::Page {
            status: StatusCode::BAD_REQUEST,
            html: pages::message_page(
                "Link expired",
                "This reset link has expired or was already used.",
                Some((&format!("{LOCAL_PATH}/forgot"), "Ask for a new one")),
            ),
            cookies: Vec::new(),
        }
    }

    /// `POST /auth/local/reset` (`t`, `password`): the token is the form's proof of origin.
    pub async fn page_reset_submit(&self, form: PageForm, requester: &Requester) -> Reply {
        let token = form.fields.get("t").map(String::as_str);
        let (user_id, email) = match self.reset_target(token).await {
            Ok(Some(found)) => found,
            Ok(None) => return self.reset_expired(),
            Err(e) => return self.page_error(&e),
        };
        let password = form.fields.get("password").cloned().unwrap_or_default();
        let reset_hash = token
            .and_then(OpaqueToken::parse)
            .map(|t| t.hash().to_hex());
        match self
            .store_password(user_id, &email, password, None, reset_hash, requester)
            .await
        {
            Ok(true) => Reply::Page {
                status: StatusCode::OK,
                html: pages::message_page(
                    "Password changed",
                    "Your new password is set, and you were signed out everywhere else.",
                    Some(("/auth/login", "Sign in")),
                ),
                cookies: Vec::new(),
            },
            Ok(false) => self.reset_expired(),
            Err(e @ LocalError::Weak(_)) => Reply::Page {
                status: StatusCode::BAD_REQUEST,
                html: local_pages::reset_page(
                    token.unwrap_or_default(),
                    &email,
                    Some(&e.user_message()),
                    self.config.password_min_length,
                ),
                cookies: Vec::new(),
            },
            Err(e) => self.page_error(&e),
        }
    }

    /// Checks, hashes and stores a new password (see [`crate::store::Store::set_password`]).
    /// `false`: the reset link was used meanwhile.
    async fn store_password(
        &self,
        user_id: uuid::Uuid,
        email: &str,
        password: String,
        keep_session: Option<String>,
        reset_hash: Option<String>,
        requester: &Requester,
    ) -> Result<bool, LocalError> {
        check_strength(
            &password,
            email,
            self.mailer.product(),
            self.config.password_min_length,
        )?;
        let parsed = Email::parse(email).map_err(|_| LocalError::FlowInvalid)?;
        let realm = self.realm(&parsed, None).await?;
        if !realm.allows(Method::Password) {
            return Err(LocalError::NotAllowed(realm.refusal()));
        }
        let now = unix_now();
        let hash = self.passwords.hash(SecretString::from(password)).await?;
        let kind = if reset_hash.is_some() {
            AuditKind::PasswordReset
        } else {
            AuditKind::PasswordSet
        };
        let event = requester.audit(
            AuditEvent::new(kind, Outcome::Success, now)
                .user(user_id)
                .idp(LOCAL_IDP)
                .detail("other sessions and refresh tokens ended"),
        );
        let stored = self
            .store
            .set_password(
                &PasswordChange {
                    user_id,
                    hash,
                    kind,
                    keep_session,
                    reset_hash,
                },
                &event,
                now,
            )
            .await?;
        if stored {
            // This replica's cache drops the ended sessions at once; others by the revocation.
            self.sessions.forget_user(user_id);
        }
        Ok(stored)
    }

    // === set or change while signed in ===

    /// Whether a signed-in user may set a password without typing a current one: they have
    /// none, and their session proved the address recently (an emailed code or link within
    /// `flow_ttl_seconds`).
    fn may_set_without_current(&self, amr: &[String], auth_time: Option<i64>, now: i64) -> bool {
        amr.iter().any(|a| a == "email")
            && auth_time.is_some_and(|t| now - t <= self.ttl(self.config.flow_ttl_seconds))
    }

    /// `GET /auth/local/account/password`.
    pub async fn page_account_password(&self, headers: &HeaderMap) -> Reply {
        let Some((session, user_id, email, _, _)) = self.account_caller(headers).await else {
            return self.sign_in_first();
        };
        let has_password = match self.store.credentials(user_id).await {
            Ok(c) => c.password_hash.is_some(),
            Err(e) => return self.page_error(&e.into()),
        };
        Reply::Page {
            status: StatusCode::OK,
            html: local_pages::password_page(
                &email,
                &csrf_token("session", session.as_str()),
                has_password,
                None,
                None,
                self.config.password_min_length,
            ),
            cookies: Vec::new(),
        }
    }

    /// `POST /auth/local/account/password` (`current` when they have one, `password`).
    pub async fn page_account_password_submit(
        &self,
        form: PageForm,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let now = unix_now();
        let Some((session, user_id, email, amr, auth_time)) = self.account_caller(headers).await
        else {
            return self.sign_in_first();
        };
        let csrf = csrf_token("session", session.as_str());
        if !self.csrf_ok(&form, &csrf) {
            return self.page_error(&LocalError::BadRequest(
                "This form was not sent from this page.".into(),
            ));
        }
        let credentials = match self.store.credentials(user_id).await {
            Ok(c) => c,
            Err(e) => return self.page_error(&e.into()),
        };
        let has_password = credentials.password_hash.is_some();
        let again = |error: &str| Reply::Page {
            status: StatusCode::BAD_REQUEST,
            html: local_pages::password_page(
                &email,
                &csrf,
                has_password,
                Some(error),
                None,
                self.config.password_min_length,
            ),
            cookies: Vec::new(),
        };
        if has_password || !self.may_set_without_current(&amr, auth_time, now) {
            let current =
                SecretString::from(form.fields.get("current").cloned().unwrap_or_default());
            let verified = match self
                .verify_password(current, credentials.password_hash.clone())
                .await
            {
                Ok(v) => v,
                Err(e) => return self.page_error(&e),
            };
            if !verified.matches {
                return again(if has_password {
                    "Your current password is not correct."
                } else {
                    "To set a password, sign in with an emailed code first (within the last few minutes)."
                });
            }
        }
        let password = form.fields.get("password").cloned().unwrap_or_default();
        match self
            .store_password(
                user_id,
                &email,
                password,
                Some(session.hash().to_hex()),
                None,
                requester,
            )
            .await
        {
            Ok(_) => Reply::Page {
                status: StatusCode::OK,
                html: local_pages::password_page(
                    &email,
                    &csrf,
                    true,
                    None,
                    Some("Saved. Your other sessions have ended."),
                    self.config.password_min_length,
                ),
                cookies: Vec::new(),
            },
            Err(e @ (LocalError::Weak(_) | LocalError::NotAllowed(_))) => again(&e.user_message()),
            Err(e) => self.page_error(&e),
        }
    }

    /// The signed-in (not impersonated) caller: session token, user, email, amr, auth_time.
    async fn account_caller(
        &self,
        headers: &HeaderMap,
    ) -> Option<(OpaqueToken, uuid::Uuid, String, Vec<String>, Option<i64>)> {
        let TokenCookie::Present(token) = cookie::find(headers, &self.cookies.session_name) else {
            return None;
        };
        match self
            .sessions
            .caller(headers, &self.cookies.session_name, unix_now())
            .await
        {
            SessionCaller::User(p) if p.user.identity.impersonator_id.is_none() => Some((
                token,
                p.user.identity.user_id,
                p.user.identity.email.clone(),
                p.auth.amr.clone(),
                p.auth.auth_time,
            )),
            _ => None,
        }
    }

    fn sign_in_first(&self) -> Reply {
        Reply::Redirect {
            location: format!(
                "/auth/login?rd={}",
                url::form_urlencoded::byte_serialize(
                    format!("{LOCAL_PATH}/account/password").as_bytes()
                )
                .collect::<String>()
            ),
            cookies: Vec::new(),
        }
    }

    fn page_error(&self, e: &LocalError) -> Reply {
        if let LocalError::Limited(r) = e {
            return Reply::TooManyRequests {
                retry_after: r.retry_after_seconds,
                html: true,
            };
        }
        if e.status().is_server_error() {
            tracing::warn!(error = %e, "local sign-in page failed");
        }
        Reply::Page {
            status: e.status(),
            html: pages::message_page(
                if matches!(e, LocalError::Mail(_)) {
                    "Email unavailable"
                } else {
                    "Something went wrong"
                },
                &e.user_message(),
                None,
            ),
            cookies: Vec::new(),
        }
    }
}
