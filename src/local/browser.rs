//! The local sign-in pages for browsers (under `/auth/local`): the flow lives in the
//! `gatehouse-flow` cookie; every POST carries a CSRF token derived from that cookie (or from
//! the session, for a signed-in user's pages) and, when the browser sends `Origin`, must come
//! from gatehouse's own origin. A completed sign-in starts a session (`idp` = `local`) and
//! returns to `rd`.

use std::collections::HashMap;

use http::{HeaderMap, StatusCode};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::flow::{Next, Progress, SignedIn, Step, mfa_auth};
use super::{LOCAL_IDP, LOCAL_PATH, Local, LocalError};
use crate::clock::unix_now;
use crate::email::Email;
use crate::identity::SessionCaller;
use crate::pages::{self, local as local_pages};
use crate::session::OpaqueToken;
use crate::session::cookie::{self, TokenCookie};
use crate::store::{AuditEvent, AuditKind, Flow, LoginFacts, Outcome};
use crate::web::{Reply, Requester};

/// A POSTed form: its fields (names sent twice are dropped) and the `Origin` header.
#[derive(Debug, Default)]
pub struct PageForm {
    pub fields: HashMap<String, String>,
    pub origin: Option<String>,
}

impl PageForm {
    fn get(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// `/auth/local` parameters.
#[derive(Debug, Default)]
pub struct StartParams {
    pub login_hint: Option<String>,
    pub rd: Option<String>,
    pub signup: bool,
}

/// A CSRF token bound to a secret the browser holds in an HttpOnly cookie.
pub fn csrf_token(purpose: &str, secret: &str) -> String {
    let digest = Sha256::digest(format!("gatehouse-csrf:{purpose}:{secret}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn page(status: StatusCode, html: String) -> Reply {
    Reply::Page {
        status,
        html,
        cookies: Vec::new(),
    }
}

impl Local {
    fn flow_cookie(&self, headers: &HeaderMap) -> Option<OpaqueToken> {
        match cookie::find(headers, self.cookies.flow_name()) {
            TokenCookie::Present(token) => Some(token),
            _ => None,
        }
    }

    /// The same origin, or no `Origin` at all (older browsers), and the right token.
    pub(super) fn csrf_ok(&self, form: &PageForm, expected: &str) -> bool {
        let origin_ok = form
            .origin
            .as_deref()
            .is_none_or(|o| o == self.public_origin);
        origin_ok && bool::from(form.get("csrf").as_bytes().ct_eq(expected.as_bytes()))
    }

    fn restart_url(&self, flow: Option<&Flow>) -> String {
        let rd = flow.and_then(|f| f.redirect_to.as_deref()).unwrap_or("/");
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        url.append_pair("rd", rd);
        format!("/auth/login?{}", url.finish())
    }

    fn expired_page(&self, flow: Option<&Flow>) -> Reply {
        Reply::Page {
            status: StatusCode::BAD_REQUEST,
            html: pages::message_page(
                "Sign-in expired",
                &LocalError::FlowInvalid.user_message(),
                Some((&self.restart_url(flow), "Start again")),
            ),
            cookies: vec![self.cookies.clear_flow()],
        }
    }

    fn forbidden_csrf(&self) -> Reply {
        page(
            StatusCode::FORBIDDEN,
            pages::message_page(
                "Request refused",
                "This form was not sent from this sign-in page. Please go back and try again.",
                None,
            ),
        )
    }

    fn error_reply(&self, e: &LocalError, flow: Option<&Flow>) -> Reply {
        match e {
            LocalError::Limited(r) => Reply::TooManyRequests {
                retry_after: r.retry_after_seconds,
                html: true,
            },
            LocalError::FlowInvalid => self.expired_page(flow),
            other => {
                if other.status().is_server_error() {
                    tracing::warn!(error = %other, "local sign-in failed");
                }
                page(
                    other.status(),
                    pages::message_page(
                        "Sign-in failed",
                        &other.user_message(),
                        Some((&self.restart_url(flow), "Start again")),
                    ),
                )
            }
        }
    }

    // === start ===

    /// `GET /auth/local?login_hint=&rd=&signup=`: a new flow and the address's methods.
    pub async fn page_start(&self, params: StartParams, requester: &Requester) -> Reply {
        let rd = self.redirects.target(params.rd.as_deref());
        let Some(email) = params
            .login_hint
            .as_deref()
            .and_then(|h| Email::parse(h).ok())
        else {
            let mut url = url::form_urlencoded::Serializer::new(String::new());
            url.append_pair("rd", rd.as_str());
            return Reply::Redirect {
                location: format!("/auth/login?{}", url.finish()),
                cookies: Vec::new(),
            };
        };
        let started = match self
            .start(
                &email,
                None,
                Some(rd.as_str().to_owned()),
                params.signup,
                requester,
            )
            .await
        {
            Ok(s) => s,
            Err(e) => return self.error_reply(&e, None),
        };
        let csrf = csrf_token("flow", started.token.as_str());
        let ttl = self.ttl(self.config.flow_ttl_seconds);
        let cookies = vec![self.cookies.flow(&started.token, ttl)];
        let realm = &started.realm;
        if !realm.offers_local() {
            // Only SSO: the caller should not have sent the browser here.
            return Reply::Page {
                status: StatusCode::FORBIDDEN,
                html: pages::message_page(
                    "Use single sign-on",
                    &realm.refusal(),
                    Some((&self.sso_url(&email, rd.as_str()), "Continue with SSO")),
                ),
                cookies,
            };
        }
        let sso = realm
            .allows(super::methods::Method::Sso)
            .then(|| self.sso_url(&email, rd.as_str()));
        Reply::Page {
            status: StatusCode::OK,
            html: local_pages::signin_page(
                email.as_str(),
                &csrf,
                local_pages::Offer {
                    email_code: realm.allows(super::methods::Method::EmailCode),
                    password: realm.allows(super::methods::Method::Password),
                    sso: sso.as_deref(),
                },
                None,
                &self.restart_url(None),
            ),
            cookies,
        }
    }

    /// `/auth/login` straight to the IdP for this address (`sso=1` skips local discovery).
    fn sso_url(&self, email: &Email, rd: &str) -> String {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        url.append_pair("login_hint", email.as_str())
            .append_pair("rd", rd)
            .append_pair("sso", "1");
        format!("/auth/login?{}", url.finish())
    }

    /// The flow of this browser, checked against the form's CSRF token.
    async fn posted_flow(&self, headers: &HeaderMap, form: &PageForm) -> Result<Flow, Reply> {
        let Some(token) = self.flow_cookie(headers) else {
            return Err(self.expired_page(None));
        };
        if !self.csrf_ok(form, &csrf_token("flow", token.as_str())) {
            return Err(self.forbidden_csrf());
        }
        match self.flow(&token).await {
            // An API flow (bound to a client) is not a browser's.
            Ok(flow) if flow.client_id.is_none() => Ok(flow),
            Ok(_) => Err(self.expired_page(None)),
            Err(e) => Err(self.error_reply(&e, None)),
        }
    }

    // === steps ===

    /// `POST /auth/local/code/send`.
    pub async fn page_send_code(
        &self,
        form: PageForm,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let flow = match self.posted_flow(headers, &form).await {
            Ok(f) => f,
            Err(reply) => return reply,
        };
        let csrf = form.get("csrf").to_owned();
        match self.step(&flow, Step::SendCode, requester).await {
            Ok(_) => page(
                StatusCode::OK,
                local_pages::code_page(&flow.email, &csrf, None, None),
            ),
            Err(LocalError::Mail(e)) => {
                tracing::warn!(error = %e, "sign-in code not sent");
                page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    pages::message_page(
                        "Email unavailable",
                        &LocalError::Mail(e).user_message(),
                        Some((&self.restart_url(Some(&flow)), "Try again")),
                    ),
                )
            }
            Err(e) => self.error_reply(&e, Some(&flow)),
        }
    }

    /// `POST /auth/local/code`.
    pub async fn page_code(
        &self,
        form: PageForm,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let flow = match self.posted_flow(headers, &form).await {
            Ok(f) => f,
            Err(reply) => return reply,
        };
        let csrf = form.get("csrf").to_owned();
        let step = Step::Code(form.get("code").to_owned());
        match self.step(&flow, step, requester).await {
            Ok(progress) => self.progressed(progress, &csrf, headers, requester).await,
            Err(e @ (LocalError::Rejected(_) | LocalError::CodeSpent)) => page(
                StatusCode::BAD_REQUEST,
                local_pages::code_page(&flow.email, &csrf, Some(&e.user_message()), None),
            ),
            Err(e) => self.error_reply(&e, Some(&flow)),
        }
    }

    /// `GET /auth/local/link?t=`: completes only in the browser whose flow sent it.
    pub async fn page_link(
        &self,
        token: Option<&str>,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let now = unix_now();
        let link = token.and_then(OpaqueToken::parse);
        let flow = match &link {
            Some(link) => self.store.flow_by_link(&link.hash().to_hex(), now).await,
            None => Ok(None),
        };
        let flow = match flow {
            Ok(Some(flow)) => flow,
            Ok(None) => {
                return page(
                    StatusCode::BAD_REQUEST,
                    pages::message_page(
                        "Link expired",
                        "This sign-in link has expired or was already used. Please start again.",
                        Some(("/auth/login", "Start again")),
                    ),
                );
            }
            Err(e) => return self.error_reply(&e.into(), None),
        };
        let same_browser = self
            .flow_cookie(headers)
            .is_some_and(|t| t.hash().to_hex() == flow.token_hash);
        if !same_browser {
            return page(
                StatusCode::FORBIDDEN,
                pages::message_page(
                    "Open this link in the same browser",
                    "This sign-in link only works in the browser where you asked for it. Open \
                     it there, or type the 6-digit code from the email instead.",
                    None,
                ),
            );
        }
        let csrf = self
            .flow_cookie(headers)
            .map(|t| csrf_token("flow", t.as_str()))
            .unwrap_or_default();
        match self.follow_link(&flow, requester).await {
            Ok(progress) => self.progressed(progress, &csrf, headers, requester).await,
            Err(e) => self.error_reply(&e, Some(&flow)),
        }
    }

    /// `POST /auth/local/password`.
    pub async fn page_password(
        &self,
        form: PageForm,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let flow = match self.posted_flow(headers, &form).await {
            Ok(f) => f,
            Err(reply) => return reply,
        };
        let csrf = form.get("csrf").to_owned();
        let step = Step::Password(SecretString::from(form.get("password").to_owned()));
        match self.step(&flow, step, requester).await {
            Ok(progress) => self.progressed(progress, &csrf, headers, requester).await,
            Err(e @ LocalError::Rejected(_)) => {
                let realm = self.flow_realm(&flow).await.ok();
                let offer = local_pages::Offer {
                    email_code: realm
                        .as_ref()
                        .is_some_and(|r| r.allows(super::methods::Method::EmailCode)),
                    password: true,
                    sso: None,
                };
                page(
                    StatusCode::BAD_REQUEST,
                    local_pages::signin_page(
                        &flow.email,
                        &csrf,
                        offer,
                        Some(&e.user_message()),
                        &self.restart_url(Some(&flow)),
                    ),
                )
            }
            Err(e) => self.error_reply(&e, Some(&flow)),
        }
    }

    /// `POST /auth/local/totp`.
    pub async fn page_totp(
        &self,
        form: PageForm,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let flow = match self.posted_flow(headers, &form).await {
            Ok(f) => f,
            Err(reply) => return reply,
        };
        let csrf = form.get("csrf").to_owned();
        match self
            .step(&flow, Step::Totp(form.get("code").to_owned()), requester)
            .await
        {
            Ok(progress) => self.progressed(progress, &csrf, headers, requester).await,
            Err(e @ (LocalError::Rejected(_) | LocalError::OutOfOrder(_))) => page(
                StatusCode::BAD_REQUEST,
                local_pages::totp_page(&csrf, Some(&e.user_message())),
            ),
            Err(e) => self.error_reply(&e, Some(&flow)),
        }
    }

    /// What the browser sees after a step moved the flow on.
    async fn progressed(
        &self,
        progress: Progress,
        csrf: &str,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        match progress {
            // Not an answer to a code, link, password or TOTP step.
            Progress::CodeSent => self.expired_page(None),
            Progress::Next(Next::Totp) => page(StatusCode::OK, local_pages::totp_page(csrf, None)),
            Progress::Next(Next::EnrollTotp) => Reply::Redirect {
                location: format!("{LOCAL_PATH}/totp/enroll"),
                cookies: Vec::new(),
            },
            Progress::SignedIn(signed_in) => {
                match self.start_session(&signed_in, headers, requester).await {
                    Ok(cookies) => Reply::Redirect {
                        location: signed_in.redirect_to.unwrap_or_else(|| "/".into()),
                        cookies,
                    },
                    Err(e) => self.error_reply(&e, None),
                }
            }
        }
    }

    /// A session for a completed sign-in; the browser's previous session (if any) ends.
    /// Returns the cookies to set.
    async fn start_session(
        &self,
        signed_in: &SignedIn,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Result<Vec<String>, LocalError> {
        let now = unix_now();
        let token = self
            .sessions
            .create(
                signed_in.user.id,
                Some(LOCAL_IDP.to_owned()),
                None,
                LoginFacts {
                    amr: signed_in.auth.amr.clone(),
                    acr: signed_in.auth.acr.clone(),
                    auth_time: signed_in.auth.auth_time,
                    idp_subject: None,
                    idp_sid: None,
                },
                now,
            )
            .await?;
        let replaced = requester.audit(
            AuditEvent::new(AuditKind::SessionRevoked, Outcome::Success, now)
                .detail("replaced by a new sign-in"),
        );
        self.sessions
            .end_replaced(headers, &self.cookies.session_name, &replaced, now)
            .await;
        let event = requester.audit(
            AuditEvent::new(AuditKind::SessionCreated, Outcome::Success, now)
                .user(signed_in.user.id)
                .idp(LOCAL_IDP),
        );
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(error = %e, "could not audit a session");
        }
        Ok(vec![
            self.cookies.session(&token),
            self.cookies.clear_flow(),
        ])
    }

    // === TOTP enrollment ===

    /// Who is enrolling: a flow whose first factor passed for a user without TOTP, or a
    /// signed-in user (who, if they already have TOTP, signed in with it). Anything else would
    /// let a first factor replace the second.
    async fn enrolling_user(
        &self,
        headers: &HeaderMap,
    ) -> Result<(uuid::Uuid, String, Enroller), LocalError> {
        if let Some(token) = self.flow_cookie(headers)
            && let Ok(flow) = self.flow(&token).await
            && flow.client_id.is_none()
            && let Some(user_id) = flow.user_id
        {
            if self.store.credentials(user_id).await?.totp_secret.is_some() {
                return Err(LocalError::NotAllowed(ALREADY_ENROLLED.into()));
            }
            return Ok((
                user_id,
                csrf_token("flow", token.as_str()),
                Enroller::Flow(Box::new(flow)),
            ));
        }
        if let TokenCookie::Present(token) = cookie::find(headers, &self.cookies.session_name)
            && let SessionCaller::User(p) = self
                .sessions
                .caller(headers, &self.cookies.session_name, unix_now())
                .await
            && p.user.identity.impersonator_id.is_none()
        {
            let user_id = p.user.identity.user_id;
            if !p.auth.has_mfa() && self.store.credentials(user_id).await?.totp_secret.is_some() {
                return Err(LocalError::NotAllowed(ALREADY_ENROLLED.into()));
            }
            return Ok((
                user_id,
                csrf_token("session", token.as_str()),
                Enroller::Session,
            ));
        }
        Err(LocalError::FlowInvalid)
    }

    /// `GET /auth/local/totp/enroll`: a new secret, its QR code and its text.
    pub async fn page_enroll(&self, headers: &HeaderMap) -> Reply {
        let (user_id, csrf, _) = match self.enrolling_user(headers).await {
            Ok(found) => found,
            Err(e) => return self.error_reply(&e, None),
        };
        match self.begin_enrollment(user_id).await {
            Ok(enrollment) => page(
                StatusCode::OK,
                local_pages::enroll_page(&enrollment.qr_svg, &enrollment.secret_text, &csrf, None),
            ),
            Err(e) => self.error_reply(&e, None),
        }
    }

    /// `POST /auth/local/totp/enroll`: the first code turns TOTP on; the recovery codes are
    /// shown once. Enrolling during a sign-in completes it.
    pub async fn page_enroll_confirm(
        &self,
        form: PageForm,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let (user_id, csrf, enroller) = match self.enrolling_user(headers).await {
            Ok(found) => found,
            Err(e) => return self.error_reply(&e, None),
        };
        if !self.csrf_ok(&form, &csrf) {
            return self.forbidden_csrf();
        }
        let codes = match self
            .confirm_enrollment(user_id, form.get("code"), requester)
            .await
        {
            Ok(codes) => codes,
            Err(e @ LocalError::Rejected(_)) => {
                // Show the same secret again: the app already has it.
                return match self.pending_enrollment(user_id).await {
                    Ok(Some(enrollment)) => page(
                        StatusCode::BAD_REQUEST,
                        local_pages::enroll_page(
                            &enrollment.qr_svg,
                            &enrollment.secret_text,
                            &csrf,
                            Some(&e.user_message()),
                        ),
                    ),
                    Ok(None) => self.expired_page(None),
                    Err(e) => self.error_reply(&e, None),
                };
            }
            Err(e) => return self.error_reply(&e, None),
        };
        match enroller {
            Enroller::Session => page(
                StatusCode::OK,
                local_pages::recovery_codes_page(&codes, "/"),
            ),
            Enroller::Flow(flow) => {
                let now = unix_now();
                let user = match self.store.user_by_id(user_id).await {
                    Ok(Some(u)) => u,
                    Ok(None) => return self.expired_page(Some(&flow)),
                    Err(e) => return self.error_reply(&e.into(), Some(&flow)),
                };
                let factor = flow.first_factor.clone().unwrap_or_default();
                let auth = mfa_auth(&factor, now);
                let signed_in = match self.finish(&flow, user, auth, requester, now).await {
                    Ok(Progress::SignedIn(s)) => s,
                    Ok(_) => return self.expired_page(Some(&flow)),
                    Err(e) => return self.error_reply(&e, Some(&flow)),
                };
                match self.start_session(&signed_in, headers, requester).await {
                    Ok(cookies) => Reply::Page {
                        status: StatusCode::OK,
                        html: local_pages::recovery_codes_page(
                            &codes,
                            signed_in.redirect_to.as_deref().unwrap_or("/"),
                        ),
                        cookies,
                    },
                    Err(e) => self.error_reply(&e, None),
                }
            }
        }
    }

    // === step-up of a local session ===

    /// `GET /auth/local/step-up?rd=&mfa=1`: a local session must show more. For MFA, a flow
    /// for the same user with its first factor already shown, waiting for TOTP (or its
    /// enrollment); otherwise (a recent sign-in) the user's own sign-in page again.
    pub async fn page_step_up(
        &self,
        rd: Option<&str>,
        mfa: bool,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let rd = self.redirects.target(rd);
        let SessionCaller::User(p) = self
            .sessions
            .caller(headers, &self.cookies.session_name, unix_now())
            .await
        else {
            return Reply::Redirect {
                location: self.restart_url(None),
                cookies: Vec::new(),
            };
        };
        let Ok(email) = Email::parse(&p.user.identity.email) else {
            return self.expired_page(None);
        };
        if !mfa {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query
                .append_pair("login_hint", email.as_str())
                .append_pair("rd", rd.as_str());
            return Reply::Redirect {
                location: format!("{LOCAL_PATH}?{}", query.finish()),
                cookies: Vec::new(),
            };
        }
        let started = match self
            .start(&email, None, Some(rd.as_str().to_owned()), false, requester)
            .await
        {
            Ok(s) => s,
            Err(e) => return self.error_reply(&e, None),
        };
        let factor = if p.auth.amr.iter().any(|a| a == "pwd") {
            "pwd"
        } else {
            "email"
        };
        let passed = self
            .store
            .pass_first_factor(
                &started.token.hash().to_hex(),
                factor,
                p.user.identity.user_id,
                false,
            )
            .await;
        if let Err(e) = passed {
            return self.error_reply(&e.into(), None);
        }
        let cookies = vec![
            self.cookies
                .flow(&started.token, self.ttl(self.config.flow_ttl_seconds)),
        ];
        let enrolled = match self.store.credentials(p.user.identity.user_id).await {
            Ok(c) => c.totp_secret.is_some(),
            Err(e) => return self.error_reply(&e.into(), None),
        };
        if enrolled {
            Reply::Page {
                status: StatusCode::OK,
                html: local_pages::totp_page(&csrf_token("flow", started.token.as_str()), None),
                cookies,
            }
        } else if super::methods::totp_offered(&started.realm.methods, self.config.mfa) {
            Reply::Redirect {
                location: format!("{LOCAL_PATH}/totp/enroll"),
                cookies,
            }
        } else {
            page(
                StatusCode::FORBIDDEN,
                pages::message_page(
                    "Two-factor authentication unavailable",
                    "This page needs two-factor authentication, which is not available for your \
                     account. Ask your administrator.",
                    None,
                ),
            )
        }
    }
}

const ALREADY_ENROLLED: &str = "Two-factor authentication is already on for this account. To \
    set up a new device, sign in with your current one (or a recovery code) first, or ask an \
    administrator to reset it.";

/// Whose enrollment: one in the middle of signing in, or a signed-in user adding TOTP.
enum Enroller {
    Flow(Box<Flow>),
    Session,
}
