//! Support staff acting as a user (`[impersonation] enabled`).
//!
//! `GET /auth/impersonate` shows a form with a CSRF token; `POST /auth/impersonate` with `user`
//! (UUID or email) opens a new session as that user, marked with the impersonator, and keeps
//! the impersonator's own session token in a separate cookie; `POST /auth/impersonate/stop`
//! ends the impersonation session and restores that token.
//!
//! Who may: an enabled user holding `impersonation.role`, not already impersonating, and (unless
//! `allow_more_privileged`) only users whose roles they hold all of. Every start, stop and
//! refusal is audited with both user ids. An impersonation session lives at most
//! `impersonation.session_ttl_seconds`; upstreams see `x-gatehouse-impersonator-id` and the
//! minted token's `act.sub`.
//!
//! CSRF: the token is a hash of the session token (which only the browser holds, in an
//! HttpOnly cookie), so a cross-site page cannot know it; the `Origin` of a POST, when sent,
//! must be ours. The session cookie is `SameSite=Lax`, so a cross-site POST carries none anyway.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{Broker, LOGIN_PATH};
use crate::clock::unix_now;
use crate::identity::{Principal, SessionCaller};
use crate::pages;
use crate::session::cookie::{self, TokenCookie};
use crate::session::{self, Lifetimes, OpaqueToken};
use crate::store::{AuditEvent, AuditKind, Outcome, User};
use crate::web::{Reply, Requester};

pub const IMPERSONATE_PATH: &str = "/auth/impersonate";
pub const STOP_PATH: &str = "/auth/impersonate/stop";

/// What a `POST` carries: from a form or a JSON body.
#[derive(Debug, Default)]
pub struct ImpersonateParams {
    pub user: Option<String>,
    pub csrf: Option<String>,
    pub rd: Option<String>,
    /// Answer in JSON (the request was JSON) rather than with a redirect or page.
    pub json: bool,
    /// The request's `Origin` header, if any.
    pub origin: Option<String>,
}

/// Why an impersonation was refused: the audit detail and the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotSignedIn,
    Csrf,
    NotAllowed,
    AlreadyImpersonating,
    UnknownTarget,
    Themselves,
    MorePrivileged,
    NotImpersonating,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Self::NotSignedIn => "not signed in",
            Self::Csrf => "CSRF check failed",
            Self::NotAllowed => "the impersonator lacks the impersonation role",
            Self::AlreadyImpersonating => "already impersonating someone",
            Self::UnknownTarget => "no such user",
            Self::Themselves => "cannot impersonate oneself",
            Self::MorePrivileged => "the target holds roles the impersonator lacks",
            Self::NotImpersonating => "this session is not an impersonation",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::NotSignedIn => StatusCode::UNAUTHORIZED,
            Self::UnknownTarget => StatusCode::NOT_FOUND,
            Self::AlreadyImpersonating | Self::Themselves | Self::NotImpersonating => {
                StatusCode::CONFLICT
            }
            Self::Csrf | Self::NotAllowed | Self::MorePrivileged => StatusCode::FORBIDDEN,
        }
    }
}

/// The CSRF token for the session whose token is `session`.
pub fn csrf_token(session: &OpaqueToken) -> String {
    let digest = Sha256::new()
        .chain_update(b"gatehouse-csrf-v1\0")
        .chain_update(session.as_str().as_bytes())
        .finalize();
    URL_SAFE_NO_PAD.encode(digest)
}

/// Whether `target` holds no role the impersonator lacks.
fn no_more_privileged(impersonator: &[String], target: &[String]) -> bool {
    target.iter().all(|role| impersonator.contains(role))
}

impl Broker {
    fn impersonation_enabled(&self) -> bool {
        self.impersonation.enabled
    }

    /// The caller's session token and who it belongs to.
    async fn session_of(&self, headers: &HeaderMap) -> Option<(OpaqueToken, Principal)> {
        let TokenCookie::Present(token) = cookie::find(headers, &self.cookies.session_name) else {
            return None;
        };
        match self.sessions.resolve(&token, unix_now()).await {
            SessionCaller::User(principal) => Some((token, principal)),
            _ => None,
        }
    }

    /// `GET /auth/impersonate`.
    pub async fn impersonate_page(&self, headers: &HeaderMap) -> Reply {
        if !self.impersonation_enabled() {
            return not_found();
        }
        let Some((token, principal)) = self.session_of(headers).await else {
            return Reply::Redirect {
                location: format!("{LOGIN_PATH}?rd=%2Fauth%2Fimpersonate"),
                cookies: Vec::new(),
            };
        };
        let me = &principal.user.identity;
        let csrf = csrf_token(&token);
        if let Some(impersonator) = me.impersonator_id {
            let by = self.email_of(impersonator).await;
            return page(
                StatusCode::OK,
                pages::impersonating_page(&me.email, &by, STOP_PATH, &csrf),
            );
        }
        if !me.enabled || !me.roles.contains(&self.impersonation.role) {
            return page(
                StatusCode::FORBIDDEN,
                pages::message_page(
                    "Access denied",
                    "Your account may not act as other users.",
                    None,
                ),
            );
        }
        page(
            StatusCode::OK,
            pages::impersonate_page(&me.email, IMPERSONATE_PATH, &csrf),
        )
    }

    /// `POST /auth/impersonate`.
    pub async fn impersonate(
        &self,
        params: ImpersonateParams,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        if !self.impersonation_enabled() {
            return not_found();
        }
        let now = unix_now();
        let session = self.session_of(headers).await;
        // Costs nothing to send: not looked into, not audited.
        if session.is_none() {
            return refuse(Refusal::NotSignedIn, params.json);
        }
        let impersonator = session.as_ref().map(|(_, p)| p.user.identity.user_id);
        // Guessing at users (or hammering the check) is limited per impersonator.
        if let Some(id) = impersonator
            && let Err(refused) = self.limits.check(
                crate::limits::Limit::ImpersonationsPerAccount,
                &id.to_string(),
                now,
            )
        {
            return self.too_many(refused, !params.json, requester, now).await;
        }
        let target = match params.user.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => self.find_user(id).await,
            _ => None,
        };
        let outcome = self
            .check_start(session.as_ref(), &params, target.as_ref())
            .await;
        match outcome {
            Err(refusal) => {
                self.audit_impersonation(
                    AuditKind::ImpersonationRefused,
                    Outcome::Failure,
                    target.as_ref().map(|t| t.id),
                    impersonator,
                    refusal.reason(),
                    requester,
                    now,
                )
                .await;
                refuse(refusal, params.json)
            }
            Ok(((original, principal), target)) => {
                let me = &principal.user.identity;
                let ttl = i64::try_from(self.impersonation.session_ttl_seconds).unwrap_or(3600);
                let lifetimes = Lifetimes {
                    idle: self.sessions.lifetimes().idle.min(ttl),
                    absolute: ttl,
                };
                let token = match session::create_impersonation(
                    &self.store,
                    lifetimes,
                    target.id,
                    me.user_id,
                    now,
                )
                .await
                {
                    Ok(token) => token,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not start an impersonation session");
                        return unavailable(params.json);
                    }
                };
                self.audit_impersonation(
                    AuditKind::ImpersonationStarted,
                    Outcome::Success,
                    Some(target.id),
                    Some(me.user_id),
                    &format!("{} acts as {}", me.email, target.email),
                    requester,
                    now,
                )
                .await;
                let cookies = vec![
                    self.cookies.session(&token),
                    self.cookies.impersonator(original, ttl),
                ];
                if params.json {
                    Reply::Json {
                        status: StatusCode::OK,
                        body: json!({
                            "impersonating": {
                                "user_id": target.id,
                                "email": target.email,
                                "impersonator_id": me.user_id,
                                "expires_in": ttl,
                            }
                        }),
                        cookies,
                    }
                } else {
                    Reply::Redirect {
                        location: self
                            .redirects
                            .target(params.rd.as_deref())
                            .as_str()
                            .to_owned(),
                        cookies,
                    }
                }
            }
        }
    }

    /// The checks before an impersonation starts, in order; the caller's session and the
    /// target on success.
    async fn check_start<'a>(
        &self,
        session: Option<&'a (OpaqueToken, Principal)>,
        params: &ImpersonateParams,
        target: Option<&'a User>,
    ) -> Result<(&'a (OpaqueToken, Principal), &'a User), Refusal> {
        let session = session.ok_or(Refusal::NotSignedIn)?;
        let (token, principal) = session;
        if !self.csrf_ok(token, params) {
            return Err(Refusal::Csrf);
        }
        let me = &principal.user.identity;
        if me.impersonator_id.is_some() {
            return Err(Refusal::AlreadyImpersonating);
        }
        if !me.enabled || !me.roles.contains(&self.impersonation.role) {
            return Err(Refusal::NotAllowed);
        }
        let target = target.ok_or(Refusal::UnknownTarget)?;
        if target.id == me.user_id {
            return Err(Refusal::Themselves);
        }
        if !self.impersonation.allow_more_privileged
            && !no_more_privileged(&me.roles, &target.roles)
        {
            return Err(Refusal::MorePrivileged);
        }
        Ok((session, target))
    }

    fn csrf_ok(&self, token: &OpaqueToken, params: &ImpersonateParams) -> bool {
        let origin_ok = params
            .origin
            .as_deref()
            .is_none_or(|o| o == self.public_origin);
        let presented = params.csrf.as_deref().unwrap_or_default();
        let expected = csrf_token(token);
        origin_ok && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
    }

    /// `POST /auth/impersonate/stop`.
    pub async fn stop_impersonating(
        &self,
        params: ImpersonateParams,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        if !self.impersonation_enabled() {
            return not_found();
        }
        let now = unix_now();
        let Some((token, principal)) = self.session_of(headers).await else {
            return refuse(Refusal::NotSignedIn, params.json);
        };
        if !self.csrf_ok(&token, &params) {
            return refuse(Refusal::Csrf, params.json);
        }
        let me = &principal.user.identity;
        let Some(impersonator) = me.impersonator_id else {
            return refuse(Refusal::NotImpersonating, params.json);
        };
        let event = requester.audit(
            AuditEvent::new(AuditKind::ImpersonationStopped, Outcome::Success, now)
                .actor(impersonator.to_string())
                .detail(format!(
                    "impersonator {impersonator} stopped acting as {}",
                    me.email
                )),
        );
        let hash = token.hash();
        let revoked = self
            .store
            .revoke_session(&hash.to_hex(), Some(&event), now)
            .await;
        self.sessions.forget(&hash);
        if let Err(e) = revoked {
            tracing::warn!(error = %e, "could not end an impersonation session");
            return unavailable(params.json);
        }
        // Back to the impersonator's own session, if it is still theirs and alive.
        let original = match cookie::find(headers, self.cookies.impersonator_name()) {
            TokenCookie::Present(original) => match self.sessions.resolve(&original, now).await {
                SessionCaller::User(p)
                    if p.user.identity.user_id == impersonator
                        && p.user.identity.impersonator_id.is_none() =>
                {
                    Some(original)
                }
                _ => None,
            },
            _ => None,
        };
        let mut cookies = vec![self.cookies.clear_impersonator()];
        cookies.push(match &original {
            Some(original) => self.cookies.session(original),
            None => self.cookies.clear_session(),
        });
        if params.json {
            Reply::Json {
                status: StatusCode::OK,
                body: json!({ "stopped": true, "signed_in": original.is_some() }),
                cookies,
            }
        } else {
            let location = if original.is_some() {
                self.redirects
                    .target(params.rd.as_deref())
                    .as_str()
                    .to_owned()
            } else {
                LOGIN_PATH.to_owned()
            };
            Reply::Redirect { location, cookies }
        }
    }

    /// A user by UUID or email.
    async fn find_user(&self, id: &str) -> Option<User> {
        let found = match Uuid::parse_str(id) {
            Ok(uuid) => self.store.user_by_id(uuid).await,
            Err(_) => self.store.user_by_email(id).await,
        };
        found.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "user lookup failed");
            None
        })
    }

    pub(super) async fn email_of(&self, id: Uuid) -> String {
        match self.store.user_by_id(id).await {
            Ok(Some(user)) => user.email,
            _ => id.to_string(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn audit_impersonation(
        &self,
        kind: AuditKind,
        outcome: Outcome,
        target: Option<Uuid>,
        impersonator: Option<Uuid>,
        detail: &str,
        requester: &Requester,
        now: i64,
    ) {
        let mut event = requester.audit(AuditEvent::new(kind, outcome, now).detail(detail));
        event.user_id = target;
        event.actor = impersonator.map(|id| id.to_string());
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(error = %e, "could not audit an impersonation");
        }
    }
}

fn page(status: StatusCode, html: String) -> Reply {
    Reply::Page {
        status,
        html,
        cookies: Vec::new(),
    }
}

fn not_found() -> Reply {
    page(
        StatusCode::NOT_FOUND,
        pages::message_page("Not found", "Impersonation is not enabled.", None),
    )
}

fn unavailable(json: bool) -> Reply {
    if json {
        Reply::Json {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({ "error": "unavailable" }),
            cookies: Vec::new(),
        }
    } else {
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message_page(
                "Temporarily unavailable",
                "Please try again in a moment.",
                None,
            ),
        )
    }
}

fn refuse(refusal: Refusal, json: bool) -> Reply {
    if json {
        Reply::Json {
            status: refusal.status(),
            body: json!({ "error": "impersonation_refused", "reason": refusal.reason() }),
            cookies: Vec::new(),
        }
    } else {
        page(
            refusal.status(),
            pages::message_page(
                "Impersonation refused",
                &format!("This request was refused: {}.", refusal.reason()),
                Some((IMPERSONATE_PATH, "Back")),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_rule() {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases = [
            (&["support", "dev"][..], &["dev"][..], true),
            (&["support"][..], &[][..], true),
            (&["support"][..], &["admin"][..], false),
            (&["support", "dev"][..], &["dev", "admin"][..], false),
        ];
        for (me, target, ok) in cases {
            assert_eq!(
                no_more_privileged(&roles(me), &roles(target)),
                ok,
                "{me:?} {target:?}"
            );
        }
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        let a = OpaqueToken::generate().unwrap();
        let b = OpaqueToken::generate().unwrap();
        assert_eq!(csrf_token(&a), csrf_token(&a));
        assert_ne!(csrf_token(&a), csrf_token(&b));
        assert_ne!(
            csrf_token(&a),
            a.hash().to_hex(),
            "not the stored session key"
        );
    }
}
