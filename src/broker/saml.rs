//! The broker's SAML side: the login start (an `AuthnRequest` by HTTP-Redirect, its ID kept
//! in the same single-use, browser-bound login state as an OIDC login), the ACS (`POST
//! /auth/saml/acs`), the SP metadata, and single logout both ways. What a response must be is
//! in [`crate::saml`]; a verified one completes like an OIDC login
//! ([`Broker::complete_login`]).

use std::sync::Arc;

use http::{HeaderMap, StatusCode};

use super::id_token::VerifiedIdentity;
use super::redirect::RedirectTarget;
use super::{Arrival, Broker, FailedLogin, LoginAsk, LoginError, Start};
use crate::clock::unix_now;
use crate::limits::{Limit, client_group};
use crate::saml::idp::SamlIdp;
use crate::saml::logout::{self, LogoutError};
use crate::saml::messages::NAME_ID_EMAIL;
use crate::saml::response::{self, SamlError};
use crate::saml::rules::{self, AssertionFacts, Expected, Refusal, SKEW_SECONDS};
use crate::saml::screen::Hostile;
use crate::session::cookie::{self, TokenCookie};
use crate::session::token::TokenHash;
use crate::session::{OpaqueToken, SessionError};
use crate::store::{Access, AuditEvent, AuditKind, LoginFacts, LoginState, Outcome};
use crate::web::{Reply, Requester};

/// How old an IdP's `LogoutRequest` may be (it travels by an immediate redirect).
const LOGOUT_REQUEST_MAX_AGE_SECONDS: i64 = 300;

/// `POST /auth/saml/acs` form fields.
#[derive(Debug, Default)]
pub struct AcsParams {
    pub saml_response: Option<String>,
    pub relay_state: Option<String>,
    /// The body was over the size limit and was not read.
    pub oversized: bool,
}

impl Broker {
    pub(super) async fn start_saml_login(
        &self,
        idp: &SamlIdp,
        rd: &RedirectTarget,
        ask: LoginAsk<'_>,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Result<Reply, LoginError> {
        let now = unix_now();
        let binding = self.browser_binding(headers)?;
        let state = OpaqueToken::generate().map_err(SessionError::from)?;
        // A step-up makes the user authenticate again, at the strength the route needs.
        let step_up = ask.step_up.as_ref();
        let mut contexts: Vec<String> = step_up.map(|s| s.acr_values.clone()).unwrap_or_default();
        if step_up.is_some_and(|s| s.mfa) {
            contexts.extend(idp.config.mfa_acr_values.iter().cloned());
        }
        let (request_id, url) = idp
            .authn_request(state.as_str(), step_up.is_some(), &contexts, now)
            .map_err(|e| match e {
                SamlError::NoMetadata => {
                    LoginError::Unreachable(format!("{}: no metadata loaded yet", idp.name()))
                }
                other => LoginError::Saml(other),
            })?;
        self.record_start(
            Start {
                idp: idp.name(),
                state: &state,
                binding: &binding,
                nonce: request_id,
                pkce_verifier: String::new(),
                location: url,
                cross_site: true,
            },
            rd,
            ask,
            requester,
            now,
        )
        .await
    }

    /// `POST /auth/saml/acs`.
    pub async fn saml_acs(
        &self,
        params: AcsParams,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let now = unix_now();
        if let Some(group) = requester.ip.map(client_group)
            && let Some(refused) = self
                .limits
                .blocked_now(Limit::FailedCallbacksPerIp, &group, now)
        {
            return self.too_many(refused, true, requester, now).await;
        }
        let result = self.finish_saml(params, headers, requester, now).await;
        self.landed(result, requester, now).await
    }

    async fn finish_saml(
        &self,
        params: AcsParams,
        headers: &HeaderMap,
        requester: &Requester,
        now: i64,
    ) -> Result<(String, String, String), (LoginError, FailedLogin)> {
        let no_idp = |e: LoginError| (e, FailedLogin::default());
        if params.oversized {
            let limit = crate::saml::screen::Limits::default().max_bytes;
            return Err(no_idp(SamlError::Hostile(Hostile::TooLarge(limit)).into()));
        }
        let encoded = params
            .saml_response
            .filter(|r| !r.is_empty())
            .ok_or_else(|| no_idp(LoginError::BadCallback("no SAMLResponse".into())))?;
        // Hostile XML is refused here, before the database or xmlsec see anything.
        let xml = response::receive(&encoded).map_err(|e| no_idp(e.into()))?;
        let login = self
            .pending_saml_login(params.relay_state.as_deref(), headers, now)
            .await
            .map_err(no_idp)?;
        let idp = match &login {
            Some(login) => self.saml_idp(&login.idp).ok_or_else(|| {
                no_idp(LoginError::Config(format!(
                    "idp {:?} is no longer configured",
                    login.idp
                )))
            })?,
            None => self.unsolicited_idp(&xml).map_err(|e| no_idp(e.into()))?,
        };
        let failed = FailedLogin {
            idp: Some(idp.name().to_owned()),
            account: login.as_ref().and_then(|l| l.account.clone()),
        };
        let fail = |e: LoginError| (e, failed.clone());
        // Refused before any signature work when nothing asked for it.
        if login.is_none() && !idp.config.allow_idp_initiated {
            return Err(fail(SamlError::from(Refusal::Unsolicited).into()));
        }
        let metadata = idp
            .metadata()
            .ok_or_else(|| fail(SamlError::NoMetadata.into()))?;
        // Identities are (entityID, NameID): two IdPs naming one entityID could sign in as
        // each other's users.
        self.saml_idp_by_entity(&metadata.entity_id)
            .map_err(|e| fail(e.into()))?;
        let _permit = self
            .saml_verifications
            .acquire()
            .await
            .map_err(|_| fail(LoginError::Config("SAML verification closed".into())))?;
        // xmlsec is CPU work on a C library: off the async workers.
        let verifier = Arc::clone(&idp);
        let facts = tokio::task::spawn_blocking(move || verifier.verify(&xml))
            .await
            .map_err(|e| fail(LoginError::Config(format!("SAML verification task: {e}"))))?
            .map_err(|e| fail(e.into()))?;
        let expected = Expected {
            acs_url: &idp.acs_url,
            sp_entity_id: &idp.sp_entity_id,
            idp_entity_id: &metadata.entity_id,
            request_id: login.as_ref().map(|l| l.nonce.as_str()),
            allow_idp_initiated: idp.config.allow_idp_initiated,
            now,
        };
        let assertion =
            rules::check(&facts, &expected).map_err(|e| fail(SamlError::from(e).into()))?;
        let expires = [
            assertion.not_on_or_after,
            assertion.confirmation_not_on_or_after,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now)
            + SKEW_SECONDS;
        let first = self
            .store
            .first_use_of_saml_message(&metadata.entity_id, &assertion.id, expires)
            .await
            .map_err(|e| fail(e.into()))?;
        if !first {
            return Err(fail(SamlError::Replayed(assertion.id.clone()).into()));
        }
        let identity = identity_of(&idp, &metadata.entity_id, assertion);
        let failed = FailedLogin {
            account: failed
                .account
                .clone()
                .or_else(|| identity.email.as_ref().map(|e| e.to_ascii_lowercase())),
            ..failed
        };
        // An unsolicited response lands where its RelayState says, if that is allowed.
        let login = match login {
            Some(login) => login,
            None => LoginState {
                nonce: String::new(),
                pkce_verifier: String::new(),
                idp: idp.name().to_owned(),
                redirect_to: self
                    .redirects
                    .target(params.relay_state.as_deref())
                    .as_str()
                    .to_owned(),
                created_at: now,
                signup: false,
                step_up: None,
                account: None,
            },
        };
        self.complete_login(
            Arrival {
                idp: &idp.config,
                trust: &idp.email_trust,
                identity,
                id_token: None,
                login: &login,
                failed,
            },
            headers,
            requester,
            now,
        )
        .await
    }

    /// The login this browser started, named by `RelayState` (an opaque state token). `None`
    /// when the response is unsolicited (no state token), which the rules then refuse unless
    /// the IdP allows IdP-initiated sign-in and the response answers no request.
    async fn pending_saml_login(
        &self,
        relay_state: Option<&str>,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<Option<LoginState>, LoginError> {
        let Some(state) = relay_state.and_then(OpaqueToken::parse) else {
            return Ok(None);
        };
        let binding = match cookie::find(headers, self.cookies.binding_name()) {
            TokenCookie::Present(token) => token,
            _ => return Err(LoginError::NoBinding),
        };
        let hash = state.hash().to_hex();
        if let Some(login) = self
            .store
            .consume_login_state(&hash, &binding.hash().to_hex(), now)
            .await?
        {
            return Ok(Some(login));
        }
        let elsewhere = self.store.login_state_exists(&hash).await.unwrap_or(false);
        Err(if elsewhere {
            LoginError::ForeignState
        } else {
            LoginError::StateInvalid("state unknown, expired or already used")
        })
    }

    /// The SAML IdP whose entityID an unsolicited response claims (verified after).
    fn unsolicited_idp(&self, xml: &str) -> Result<Arc<SamlIdp>, SamlError> {
        let issuer = response::claimed_issuer(xml).unwrap_or_default();
        self.saml_idp_by_entity(&issuer)
    }

    /// `GET /auth/saml/{idp}/metadata`.
    pub fn saml_metadata(&self, name: &str) -> Reply {
        match self.saml_idp(name) {
            Some(idp) => Reply::Document {
                content_type: "application/samlmetadata+xml",
                body: idp.sp_metadata(),
            },
            None => Reply::Json {
                status: StatusCode::NOT_FOUND,
                body: serde_json::json!({ "error": "not_found", "error_description": "no SAML identity provider by that name" }),
                cookies: Vec::new(),
            },
        }
    }

    /// Where `/auth/logout` sends the browser after ending a session that began at a SAML
    /// IdP publishing a logout endpoint: a `LogoutRequest` for that sign-in.
    pub(super) fn saml_logout_url(
        &self,
        idp: &str,
        name_id: Option<&str>,
        session_index: Option<&str>,
        rd: &str,
        now: i64,
    ) -> Option<String> {
        let idp = self.saml_idp(idp)?;
        let metadata = idp.metadata()?;
        let destination = metadata.slo_url.as_deref()?;
        let sent = logout::request_url(
            &idp.outgoing(destination, Some(rd)),
            name_id?,
            None,
            session_index,
            now,
        );
        match sent {
            Ok((_, url)) => Some(url),
            Err(e) => {
                tracing::warn!(error = %e, "could not write a SAML LogoutRequest; signed out here only");
                None
            }
        }
    }

    /// `GET /auth/saml/slo`: the IdP's `LogoutResponse` to our request (then on to
    /// `RelayState`), or its own signed `LogoutRequest` (the user's IdP session ended: their
    /// sessions from this IdP end here too).
    pub async fn saml_slo(&self, raw_query: &str, requester: &Requester) -> Reply {
        let now = unix_now();
        if raw_query.split('&').any(|p| p.starts_with("SAMLResponse=")) {
            return self.saml_logout_response(raw_query, requester, now).await;
        }
        match self.saml_logout_request(raw_query, requester, now).await {
            Ok(location) => Reply::Redirect {
                location,
                cookies: Vec::new(),
            },
            Err(e) => {
                tracing::info!(error = %e, "SAML LogoutRequest refused");
                let sampled_out = requester
                    .ip
                    .is_some_and(|ip| self.seen_recently(format!("slo {}", client_group(ip))));
                if !sampled_out {
                    let event = requester.audit(
                        AuditEvent::new(AuditKind::BackchannelLogout, Outcome::Failure, now)
                            .detail(format!("SAML LogoutRequest: {e}")),
                    );
                    if let Err(err) = self.store.record_audit(&event).await {
                        tracing::warn!(error = %err, "could not audit a SAML logout");
                    }
                }
                let status = if matches!(e, SloError::Unavailable(_)) {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::BAD_REQUEST
                };
                Reply::Page {
                    status,
                    html: crate::pages::message_page(
                        "Sign-out request refused",
                        "This sign-out request could not be verified.",
                        None,
                    ),
                    cookies: Vec::new(),
                }
            }
        }
    }

    /// The IdP's answer to our `LogoutRequest`. The session ended before the browser went to
    /// the IdP; this only lands the browser on `RelayState` (through the redirect rules) and,
    /// when the answer carries its IdP's valid signature, audits how the IdP's side went.
    async fn saml_logout_response(
        &self,
        raw_query: &str,
        requester: &Requester,
        now: i64,
    ) -> Reply {
        let received = logout::receive(raw_query, "SAMLResponse");
        let relay = received.as_ref().ok().and_then(|r| r.relay_state.clone());
        let verified = received.as_ref().ok().and_then(|r| {
            let answer = logout::parse_response(&r.xml).ok()?;
            let idp = self.saml_idp_by_entity(answer.issuer.as_deref()?).ok()?;
            idp.verify_query_signature(r.signature.as_ref()?).ok()?;
            Some((answer, idp))
        });
        let event = match &verified {
            Some((answer, idp)) => {
                let (outcome, detail) = if answer.success {
                    (Outcome::Success, "SAML single logout completed at the IdP")
                } else {
                    (Outcome::Failure, "the IdP reported a failed single logout")
                };
                Some(
                    AuditEvent::new(AuditKind::Logout, outcome, now)
                        .idp(idp.name())
                        .detail(detail),
                )
            }
            // Anyone can send this URL: audited once a minute per address.
            None => {
                let sampled_out = requester
                    .ip
                    .is_some_and(|ip| self.seen_recently(format!("slo {}", client_group(ip))));
                (!sampled_out).then(|| {
                    AuditEvent::new(AuditKind::Logout, Outcome::Failure, now)
                        .detail("an unverified SAML LogoutResponse")
                })
            }
        };
        if let Some(event) = event
            && let Err(e) = self.store.record_audit(&requester.audit(event)).await
        {
            tracing::warn!(error = %e, "could not audit a SAML logout response");
        }
        Reply::Redirect {
            location: self.redirects.target(relay.as_deref()).as_str().to_owned(),
            cookies: Vec::new(),
        }
    }

    /// The one SAML IdP whose metadata names `entity_id`.
    fn saml_idp_by_entity(&self, entity_id: &str) -> Result<Arc<SamlIdp>, SamlError> {
        let idps = self.idps.load();
        let mut matching = idps
            .saml
            .iter()
            .filter(|idp| idp.metadata().is_some_and(|m| m.entity_id == entity_id));
        match (matching.next(), matching.next()) {
            (Some(idp), None) => Ok(idp.clone()),
            (Some(_), Some(_)) => Err(SamlError::AmbiguousIssuer(entity_id.to_owned())),
            (None, _) => Err(SamlError::UnknownIssuer(entity_id.to_owned())),
        }
    }

    /// Verifies an IdP's `LogoutRequest`, ends that NameID's sessions from that IdP on every
    /// replica, and returns where to send the `LogoutResponse`.
    async fn saml_logout_request(
        &self,
        raw_query: &str,
        requester: &Requester,
        now: i64,
    ) -> Result<String, SloError> {
        let received = logout::receive(raw_query, "SAMLRequest")?;
        let request = logout::parse_request(&received.xml)?;
        let idp = self
            .saml_idp_by_entity(&request.issuer)
            .map_err(|_| LogoutError::Invalid("no one SAML IdP has this issuer"))?;
        let signature = received.signature.as_ref().ok_or(LogoutError::Unsigned)?;
        idp.verify_query_signature(signature)
            .map_err(LogoutError::from)?;
        // Bindings §3.4.5.2: a signed message names where it is for. And a signed logout URL
        // leaked from a log or a history must not work later: issued recently (the replay
        // cache remembers it that long), not in the future.
        let issued = request.issue_instant.ok_or(LogoutError::Expired)?;
        if issued < now - LOGOUT_REQUEST_MAX_AGE_SECONDS || issued > now + SKEW_SECONDS {
            return Err(LogoutError::Expired.into());
        }
        if request.destination.as_deref() != Some(idp.slo_url.as_str()) {
            return Err(
                LogoutError::Invalid("Destination is not this service's logout URL").into(),
            );
        }
        if request
            .not_on_or_after
            .is_some_and(|end| now - SKEW_SECONDS >= end)
        {
            return Err(LogoutError::Expired.into());
        }
        let metadata = idp.metadata().ok_or(LogoutError::Invalid("no metadata"))?;
        let unavailable = |e: crate::store::StoreError| {
            self.store.observe_error(Access::Write, &e, now);
            SloError::Unavailable(e.to_string())
        };
        let first = self
            .store
            .first_use_of_saml_message(
                &metadata.entity_id,
                &request.id,
                now + LOGOUT_REQUEST_MAX_AGE_SECONDS + SKEW_SECONDS,
            )
            .await
            .map_err(unavailable)?;
        if !first {
            return Err(LogoutError::Replayed(request.id.clone()).into());
        }
        let event = requester.audit(
            AuditEvent::new(AuditKind::BackchannelLogout, Outcome::Success, now)
                .idp(idp.name())
                .detail(format!("SAML LogoutRequest for NameID {}", request.name_id)),
        );
        let hashes = self
            .store
            .revoke_idp_sessions(
                idp.name(),
                Some(&request.name_id),
                request.session_index.as_deref(),
                &event,
                now,
            )
            .await
            .map_err(unavailable)?;
        for hash in &hashes {
            match TokenHash::from_hex(hash) {
                Some(hash) => self.sessions.forget(&hash),
                None => self.sessions.forget_all(),
            }
        }
        tracing::info!(idp = %idp.name(), sessions = hashes.len(), "SAML IdP-initiated logout");
        let destination = metadata
            .slo_response_url
            .as_deref()
            .ok_or(LogoutError::Invalid("the IdP publishes no logout endpoint"))?;
        Ok(logout::response_url(
            &idp.outgoing(destination, received.relay_state.as_deref()),
            &request.id,
            now,
        )?)
    }
}

#[derive(Debug, thiserror::Error)]
enum SloError {
    #[error("{0}")]
    Refused(#[from] LogoutError),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

/// The local identity a verified assertion names: (entityID, NameID), with the email (the
/// `email_attribute`, else an emailAddress NameID), the name, and the attributes the
/// `role_claims` read. SAML has no `email_verified`: an IdP that lists the domains it may vouch
/// for (`trusted_email_domains` or `domains`) vouches for addresses in them; one that lists
/// none vouches for nothing.
fn identity_of(idp: &SamlIdp, entity_id: &str, assertion: &AssertionFacts) -> VerifiedIdentity {
    let first = |name: &Option<String>| {
        name.as_ref()
            .and_then(|n| assertion.attributes.get(n))
            .and_then(|values| values.iter().find(|v| !v.is_empty()))
            .cloned()
    };
    let email = first(&idp.config.email_attribute).or_else(|| {
        (assertion.name_id_format.as_deref() == Some(NAME_ID_EMAIL))
            .then(|| assertion.name_id.clone())
    });
    let vouches = idp.config.trusted_email_domains.is_some() || !idp.config.domains.is_empty();
    let role_claims = idp
        .config
        .role_claims
        .keys()
        .filter_map(|name| {
            let values = assertion.attributes.get(name)?;
            Some((name.clone(), serde_json::json!(values)))
        })
        .collect();
    VerifiedIdentity {
        issuer: entity_id.to_owned(),
        subject: assertion.name_id.clone(),
        email,
        email_verified: Some(vouches),
        name: first(&idp.config.name_attribute),
        login: LoginFacts {
            amr: Vec::new(),
            acr: assertion.authn_context.clone(),
            auth_time: assertion.authn_instant,
            idp_subject: Some(assertion.name_id.clone()),
            idp_sid: assertion.session_index.clone(),
        },
        role_claims,
    }
}
