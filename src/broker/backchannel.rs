//! OIDC Back-Channel Logout 1.0: the IdP POSTs a signed `logout_token` when a user's IdP
//! session ends, and the sessions it names end here too, on every replica.

use http::StatusCode;
use serde_json::json;

use super::Broker;
use super::logout_token::{LogoutClaims, LogoutError};
use crate::clock::unix_now;
use crate::limits::client_group;
use crate::session::token::TokenHash;
use crate::store::{Access, AuditEvent, AuditKind, Outcome};
use crate::web::{Reply, Requester};

impl Broker {
    /// `POST /auth/backchannel-logout`: 200 once the named sessions are revoked, 400 for a
    /// token that is not valid (forged, replayed, an ID token, …), 503 when it cannot be
    /// checked now (the IdP may retry).
    pub async fn backchannel_logout(&self, token: Option<&str>, requester: &Requester) -> Reply {
        let now = unix_now();
        let outcome = match token.filter(|t| !t.is_empty() && t.len() <= 16 * 1024) {
            None => Err(LogoutError::Invalid("no logout_token".into())),
            Some(token) => self.apply_logout_token(token, requester, now).await,
        };
        let reply = |status: StatusCode, body| Reply::Json {
            status,
            body,
            cookies: Vec::new(),
        };
        match outcome {
            Ok(count) => {
                self.metrics.record_backchannel_logout("accepted");
                tracing::info!(sessions = count, "back-channel logout");
                reply(StatusCode::OK, json!({}))
            }
            Err(e) => {
                let (result, status) = match &e {
                    LogoutError::Invalid(_) => ("invalid", StatusCode::BAD_REQUEST),
                    LogoutError::Replayed => ("replayed", StatusCode::BAD_REQUEST),
                    LogoutError::Unavailable(_) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
                };
                self.metrics.record_backchannel_logout(result);
                tracing::info!(error = %e, "back-channel logout refused");
                // Costs the sender one request: audited once a minute per client address.
                let sampled_out = requester
                    .ip
                    .is_some_and(|ip| self.seen_recently(format!("bcl {}", client_group(ip))));
                if !sampled_out {
                    let event = requester.audit(
                        AuditEvent::new(AuditKind::BackchannelLogout, Outcome::Failure, now)
                            .detail(e.to_string()),
                    );
                    if let Err(err) = self.store.record_audit(&event).await {
                        tracing::warn!(error = %err, "could not audit a back-channel logout");
                    }
                }
                let error = if status == StatusCode::BAD_REQUEST {
                    "invalid_request"
                } else {
                    "temporarily_unavailable"
                };
                reply(
                    status,
                    json!({ "error": error, "error_description": e.to_string() }),
                )
            }
        }
    }

    /// Finds the IdP whose keys and issuer the token verifies against, checks the `jti` was
    /// not used before, and revokes the sessions it names. Returns how many.
    async fn apply_logout_token(
        &self,
        token: &str,
        requester: &Requester,
        now: i64,
    ) -> Result<u64, LogoutError> {
        let idps = self.idps.load_full();
        let mut last = LogoutError::Invalid("no configured identity provider issued it".into());
        let mut verified: Option<(LogoutClaims, String)> = None;
        for provider in idps.oidc.iter() {
            match provider.verify_logout_token(token).await {
                Ok(claims) => {
                    verified = Some((claims, provider.name().to_owned()));
                    break;
                }
                // Another IdP's token fails on iss or key: keep looking, remember why.
                Err(e) => last = e,
            }
        }
        let (claims, idp) = verified.ok_or(last)?;
        let jti = claims.jti.as_deref().unwrap_or_default();
        let first = self
            .store
            .first_use_of_logout_token(&claims.iss, jti, claims.expires_at().min(now + 86_400))
            .await
            .map_err(|e| {
                self.store.observe_error(Access::Write, &e, now);
                LogoutError::Unavailable(e.to_string())
            })?;
        if !first {
            return Err(LogoutError::Replayed);
        }
        let event = requester.audit(
            AuditEvent::new(AuditKind::BackchannelLogout, Outcome::Success, now)
                .idp(idp.clone())
                .detail(format!(
                    "sub={} sid={}",
                    claims.sub.as_deref().unwrap_or("-"),
                    claims.sid.as_deref().unwrap_or("-")
                )),
        );
        let hashes = self
            .store
            .revoke_idp_sessions(
                &idp,
                claims.sub.as_deref(),
                claims.sid.as_deref(),
                &event,
                now,
            )
            .await
            .map_err(|e| {
                self.store.observe_error(Access::Write, &e, now);
                LogoutError::Unavailable(e.to_string())
            })?;
        // This replica at once; the others through the revocation rows.
        for hash in &hashes {
            match TokenHash::from_hex(hash) {
                Some(hash) => self.sessions.forget(&hash),
                None => self.sessions.forget_all(),
            }
        }
        Ok(hashes.len() as u64)
    }
}
