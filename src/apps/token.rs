//! `POST /auth/token` (a code with its PKCE verifier, or a refresh token, for a short-lived
//! access token and a new refresh token; refresh tokens rotate, and a reused one revokes its
//! family) and `POST /auth/revoke` (RFC 7009).

use std::sync::Arc;

use http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::pkce::{is_code_verifier, pkce_matches};
use super::{AppClient, AppError, Apps, Params, TokenReply, scope_list, scope_string};
use crate::clock::unix_now;
use crate::limits::{Limit, client_group};
use crate::session::OpaqueToken;
use crate::store::{
    AuditEvent, AuditKind, FamilyRevocation, NewRefreshToken, Outcome, Rotation, User,
};
use crate::strength::AuthClaims;
use crate::web::Requester;

/// What one token response grants besides the user: the scope, how the user signed in, the
/// new refresh token, and when its family ends.
struct Issue<'a> {
    scope: Option<&'a str>,
    auth: &'a AuthClaims,
    refresh: &'a OpaqueToken,
    family_expires_at: i64,
}

/// What starts a refresh family: its scope, how the user signed in, what it came from (a code
/// and the session that approved it, or nothing for an API sign-in), and the grant's name.
struct NewFamily<'a> {
    scope: Option<String>,
    auth: &'a AuthClaims,
    code_hash: Option<String>,
    session_hash: Option<String>,
    grant: &'static str,
}

/// The claims of an app's access token (RFC 9068), with the local identity like the minted
/// upstream token's.
#[derive(Debug, Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: Uuid,
    aud: &'a str,
    client_id: &'a str,
    iat: i64,
    exp: i64,
    jti: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    email: &'a str,
    org: Option<Uuid>,
    roles: &'a [String],
    /// How the user signed in (step-up rules on bearer routes read these).
    #[serde(flatten)]
    auth: &'a AuthClaims,
}

impl Apps {
    /// `POST /auth/token` with a form body (`form`: whether it was sent as
    /// `application/x-www-form-urlencoded`).
    pub async fn token(&self, body: &[u8], form: bool, requester: &Requester) -> TokenReply {
        // Per client address before any parsing or store work; per account once the code or
        // refresh token says whose it is.
        if let Some(refused) = self.address_over_limit(requester, "any").await {
            return refused;
        }
        let params = Params::parse(body);
        let grant = match params.get("grant_type") {
            Some("authorization_code") => "authorization_code",
            Some("refresh_token") => "refresh_token",
            _ => "other",
        };
        let result = if form {
            self.grant(&params, requester).await
        } else {
            Err(AppError::InvalidRequest(
                "the body must be application/x-www-form-urlencoded".into(),
            ))
        };
        match result {
            Ok(body) => {
                self.metrics.record_app_token(grant, "issued");
                TokenReply {
                    status: StatusCode::OK,
                    body: Some(body),
                    retry_after: None,
                }
            }
            Err(e) => {
                match &e {
                    AppError::Store(_) | AppError::Token(_) | AppError::Random(_) => {
                        tracing::warn!(error = %e, grant, "token request failed")
                    }
                    AppError::Reused => {
                        tracing::warn!(grant, "refresh token reused: family revoked")
                    }
                    _ => tracing::debug!(error = %e, grant, "token request refused"),
                }
                self.metrics.record_app_token(grant, e.metric_result());
                e.reply()
            }
        }
    }

    /// The 429 for a client address over `token_calls_per_ip` (counted under `grant`), if it is.
    async fn address_over_limit(
        &self,
        requester: &Requester,
        grant: &'static str,
    ) -> Option<TokenReply> {
        let e = self
            .limit(
                Limit::TokenCallsPerIp,
                requester.ip.map(client_group),
                requester,
            )
            .await
            .err()?;
        self.metrics.record_app_token(grant, e.metric_result());
        Some(e.reply())
    }

    /// Takes a token from `key`'s bucket of `limit`; the first refusal a minute is audited.
    async fn limit(
        &self,
        limit: Limit,
        key: Option<String>,
        requester: &Requester,
    ) -> Result<(), AppError> {
        let Some(key) = key else { return Ok(()) };
        let now = unix_now();
        let Err(refused) = self.limits.check(limit, &key, now) else {
            return Ok(());
        };
        if refused.first_in_window {
            let event = requester.audit(
                AuditEvent::new(AuditKind::RateLimited, Outcome::Failure, now)
                    .detail(format!("{} over its limit", limit.name())),
            );
            if let Err(e) = self.store.record_audit(&event).await {
                tracing::warn!(error = %e, "could not audit a rate limit");
            }
        }
        Err(AppError::RateLimited(refused))
    }

    fn client(&self, params: &Params) -> Result<&Arc<AppClient>, AppError> {
        let id = params.required("client_id")?;
        self.clients
            .get(id)
            .ok_or_else(|| AppError::InvalidClient("unknown client_id".into()))
    }

    async fn grant(&self, params: &Params, requester: &Requester) -> Result<Value, AppError> {
        if let Some(name) = params.repeated.first() {
            return Err(AppError::InvalidRequest(format!("{name} is repeated")));
        }
        let client = self.client(params)?;
        match params.get("grant_type") {
            Some("authorization_code") => self.exchange_code(client, params, requester).await,
            Some("refresh_token") => self.refresh(client, params, requester).await,
            Some(_) => Err(AppError::UnsupportedGrantType),
            None => Err(AppError::InvalidRequest("grant_type is required".into())),
        }
    }

    async fn exchange_code(
        &self,
        client: &AppClient,
        params: &Params,
        requester: &Requester,
    ) -> Result<Value, AppError> {
        let code = params.required("code")?;
        let redirect_uri = params.required("redirect_uri")?;
        let verifier = params.required("code_verifier")?;
        if !is_code_verifier(verifier) {
            return Err(AppError::InvalidRequest(
                "code_verifier must be 43 to 128 unreserved characters (RFC 7636)".into(),
            ));
        }
        let invalid =
            || AppError::InvalidGrant("the code is invalid, expired or already used".into());
        let Some(code) = OpaqueToken::parse(code) else {
            return Err(invalid());
        };
        let code_hash = code.hash().to_hex();
        let now = unix_now();
        // Presenting a code burns it, whatever happens next.
        let Some(stored) = self.store.consume_app_code(&code_hash).await? else {
            // Redeemed before? Then someone else has it too (RFC 6749 §4.1.2): the tokens
            // issued for it are revoked.
            let event = requester.audit(
                AuditEvent::new(AuditKind::AppTokenRevoked, Outcome::Failure, now).detail(format!(
                    "client_id={} authorization code replayed",
                    client.id
                )),
            );
            if self
                .store
                .revoke_family_of_code(&code_hash, &event, now)
                .await?
            {
                tracing::warn!(client_id = %client.id, "authorization code replayed: its refresh tokens are revoked");
            }
            return Err(invalid());
        };
        if stored.expires_at <= now || stored.client_id != client.id {
            return Err(invalid());
        }
        self.limit(
            Limit::TokenCallsPerAccount,
            Some(stored.user_id.to_string()),
            requester,
        )
        .await?;
        if stored.redirect_uri != redirect_uri {
            return Err(AppError::InvalidGrant(
                "redirect_uri is not the one the code was issued for".into(),
            ));
        }
        if !pkce_matches(verifier, &stored.code_challenge) {
            return Err(AppError::InvalidGrant(
                "code_verifier does not match the code_challenge".into(),
            ));
        }
        // The sign-in that approved the code must still be on, and its user enabled.
        let Some(session) = self.store.load_session(&stored.session_hash, now).await? else {
            return Err(AppError::InvalidGrant(
                "the sign-in session has ended".into(),
            ));
        };
        let auth = AuthClaims {
            amr: session.amr,
            acr: session.acr,
            auth_time: session.auth_time,
        };
        let user = self.enabled_user(stored.user_id).await?;
        self.new_family(
            client,
            &user,
            NewFamily {
                scope: stored.scope,
                auth: &auth,
                code_hash: Some(code_hash),
                session_hash: Some(stored.session_hash),
                grant: "authorization_code",
            },
            requester,
            now,
        )
        .await
    }

    /// Tokens that start a new refresh family (a code exchange, or a sign-in through the API),
    /// the family stored and audited as `app_token_issued`.
    async fn new_family(
        &self,
        client: &AppClient,
        user: &User,
        family: NewFamily<'_>,
        requester: &Requester,
        now: i64,
    ) -> Result<Value, AppError> {
        let refresh = OpaqueToken::generate()?;
        let family_expires_at = now.saturating_add(self.refresh_ttl);
        let answer = self.tokens(
            client,
            user,
            Issue {
                scope: family.scope.as_deref(),
                auth: family.auth,
                refresh: &refresh,
                family_expires_at,
            },
            now,
        )?;
        let stored = NewRefreshToken {
            token_hash: refresh.hash().to_hex(),
            family_id: Uuid::new_v4(),
            client_id: client.id.clone(),
            user_id: user.id,
            scope: family.scope,
            code_hash: family.code_hash,
            session_hash: family.session_hash,
            auth: serde_json::to_string(family.auth).ok(),
            created_at: now,
            family_expires_at,
        };
        let event = requester.audit(
            AuditEvent::new(AuditKind::AppTokenIssued, Outcome::Success, now)
                .user(user.id)
                .detail(format!("client_id={} grant={}", client.id, family.grant)),
        );
        self.store.insert_refresh_family(&stored, &event).await?;
        Ok(answer)
    }

    async fn refresh(
        &self,
        client: &AppClient,
        params: &Params,
        requester: &Requester,
    ) -> Result<Value, AppError> {
        let presented = params.required("refresh_token")?;
        let requested = params.get("scope").map(|s| scope_list(Some(s)));
        let invalid = |why: &str| AppError::InvalidGrant(why.to_owned());
        let Some(presented) = OpaqueToken::parse(presented) else {
            return Err(invalid("unknown refresh token"));
        };
        let next = OpaqueToken::generate()?;
        let now = unix_now();
        // Checked before the rotation: a refusal must not cost the app its token.
        let owner = self
            .store
            .refresh_token_owner(&presented.hash().to_hex())
            .await?;
        self.limit(
            Limit::TokenCallsPerAccount,
            owner.map(|o| o.to_string()),
            requester,
        )
        .await?;
        let event = |kind, outcome, grant: &str| {
            requester.audit(
                AuditEvent::new(kind, outcome, now)
                    .detail(format!("client_id={} grant={grant}", client.id)),
            )
        };
        let rotation = self
            .store
            .rotate_refresh_token(
                &presented.hash().to_hex(),
                &client.id,
                &next.hash().to_hex(),
                requested.as_deref(),
                now,
                &event(AuditKind::AppTokenIssued, Outcome::Success, "refresh_token"),
                &event(
                    AuditKind::RefreshTokenReused,
                    Outcome::Failure,
                    "refresh_token",
                ),
            )
            .await?;
        let grant = match rotation {
            Rotation::Rotated(grant) => grant,
            Rotation::Reused { .. } => return Err(AppError::Reused),
            Rotation::Unknown => return Err(invalid("unknown refresh token")),
            Rotation::Revoked => return Err(invalid("the refresh token was revoked")),
            Rotation::Expired => return Err(invalid("the refresh token has expired")),
            Rotation::OtherClient => {
                return Err(invalid("the refresh token was issued to another client"));
            }
            Rotation::UserDisabled => return Err(invalid("the account is not enabled")),
            Rotation::ScopeExceeded => {
                return Err(AppError::InvalidScope(
                    "scope may only narrow what was granted".into(),
                ));
            }
        };
        let user = self.enabled_user(grant.user_id).await?;
        let scope = match &requested {
            Some(list) => scope_string(list),
            None => grant.scope.clone(),
        };
        let auth: AuthClaims = grant
            .auth
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        self.tokens(
            client,
            &user,
            Issue {
                scope: scope.as_deref(),
                auth: &auth,
                refresh: &next,
                family_expires_at: grant.family_expires_at,
            },
            now,
        )
    }

    /// Issues an access and refresh token to `client_id` for `user_id`, who just signed in
    /// without a browser (the multi-step API of `crate::local`): the same tokens and refresh
    /// family as a code exchange, with no session behind them.
    pub async fn issue_signed_in(
        &self,
        client_id: &str,
        user_id: Uuid,
        auth: &AuthClaims,
        requester: &Requester,
    ) -> Result<Value, AppError> {
        let client = self
            .clients
            .get(client_id)
            .ok_or_else(|| AppError::InvalidClient(format!("unknown client_id {client_id:?}")))?;
        let user = self.enabled_user(user_id).await?;
        self.new_family(
            client,
            &user,
            NewFamily {
                scope: None,
                auth,
                code_hash: None,
                session_hash: None,
                grant: "local_sign_in",
            },
            requester,
            unix_now(),
        )
        .await
    }

    /// Whether `client_id` is a configured `[[client]]`.
    pub fn has_client(&self, client_id: &str) -> bool {
        self.clients.get(client_id).is_some()
    }

    async fn enabled_user(&self, id: Uuid) -> Result<User, AppError> {
        self.store
            .user_by_id(id)
            .await?
            .filter(|u| u.enabled)
            .ok_or_else(|| AppError::InvalidGrant("the account is not enabled".into()))
    }

    /// The token response: a newly signed access token, and `refresh`.
    fn tokens(
        &self,
        client: &AppClient,
        user: &User,
        issue: Issue<'_>,
        now: i64,
    ) -> Result<Value, AppError> {
        let Issue {
            scope,
            auth,
            refresh,
            family_expires_at,
        } = issue;
        // Never past the family: when refreshing is over, so is access.
        let exp = now
            .saturating_add(self.access_ttl)
            .min(family_expires_at)
            .max(now + 1);
        let claims = AccessClaims {
            iss: &self.issuer,
            sub: user.id,
            aud: &client.audience,
            client_id: &client.id,
            iat: now,
            exp,
            jti: Uuid::new_v4(),
            scope,
            email: &user.email,
            org: user.org_id,
            roles: &user.roles,
            auth,
        };
        let access_token = self.minter.sign_access_token(&claims, now)?;
        let mut body = json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": exp - now,
            "refresh_token": refresh.as_str(),
        });
        if let Some(scope) = scope {
            body["scope"] = Value::String(scope.to_owned());
        }
        Ok(body)
    }

    // === /auth/revoke ===

    /// `POST /auth/revoke` (RFC 7009). Refresh tokens revoke their family; anything else
    /// (unknown tokens, access tokens, which expire within minutes) is answered 200 too.
    pub async fn revoke(&self, body: &[u8], form: bool, requester: &Requester) -> TokenReply {
        if let Some(refused) = self.address_over_limit(requester, "revoke").await {
            return refused;
        }
        let params = Params::parse(body);
        let result = if form {
            self.revoke_token(&params, requester).await
        } else {
            Err(AppError::InvalidRequest(
                "the body must be application/x-www-form-urlencoded".into(),
            ))
        };
        match result {
            Ok(result) => {
                self.metrics.record_app_token("revoke", result);
                TokenReply {
                    status: StatusCode::OK,
                    body: None,
                    retry_after: None,
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "revocation refused");
                self.metrics.record_app_token("revoke", e.metric_result());
                e.reply()
            }
        }
    }

    async fn revoke_token(
        &self,
        params: &Params,
        requester: &Requester,
    ) -> Result<&'static str, AppError> {
        if let Some(name) = params.repeated.first() {
            return Err(AppError::InvalidRequest(format!("{name} is repeated")));
        }
        let client = self.client(params)?;
        let token = params.required("token")?;
        let Some(token) = OpaqueToken::parse(token) else {
            return Ok("unknown");
        };
        let now = unix_now();
        let event = requester.audit(
            AuditEvent::new(AuditKind::AppTokenRevoked, Outcome::Success, now)
                .detail(format!("client_id={} by the app", client.id)),
        );
        match self
            .store
            .revoke_refresh_family(&token.hash().to_hex(), &client.id, &event, now)
            .await?
        {
            FamilyRevocation::Revoked { .. } => Ok("revoked"),
            FamilyRevocation::Nothing => Ok("unknown"),
            FamilyRevocation::OtherClient => Err(AppError::UnauthorizedClient(
                "the token was issued to another client".into(),
            )),
        }
    }
}
