//! `GET /auth/authorize`: the client and its redirect URI first (until both are known good,
//! errors are a page, never a redirect), then PKCE S256 and scopes, then the browser's
//! session: none sends it through the normal login and back; an enabled user's gets a
//! single-use code for the redirect URI (with `state` and RFC 9207 `iss`).

use http::{HeaderMap, StatusCode};

use super::pkce::is_s256_challenge;
use super::{AUTHORIZE_PATH, Apps, Params, scope_list, scope_string, with_query};
use crate::broker::LOGIN_PATH;
use crate::clock::unix_now;
use crate::identity::SessionCaller;
use crate::pages;
use crate::session::OpaqueToken;
use crate::session::cookie::{self, TokenCookie};
use crate::store::{AuditEvent, AuditKind, NewAppCode, Outcome};
use crate::web::{Reply, Requester};

impl Apps {
    /// `GET /auth/authorize?<raw_query>`.
    pub async fn authorize(
        &self,
        raw_query: &str,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let params = Params::parse(raw_query.as_bytes());
        // Until the client and its redirect URI are known good, nothing goes to a redirect URI.
        if params
            .repeated
            .iter()
            .any(|n| n == "client_id" || n == "redirect_uri")
        {
            return error_page("The request names its application or return address twice.");
        }
        let Some(client) = params.get("client_id").and_then(|id| self.clients.get(id)) else {
            return error_page("This application is not registered.");
        };
        let Some(redirect_uri) = params
            .get("redirect_uri")
            .filter(|uri| client.redirect_uri_matches(uri))
        else {
            return error_page("This application's return address is not registered.");
        };
        let state = params.get("state");
        let back = |error: &str, description: &str| {
            self.error_redirect(redirect_uri, state, error, description)
        };

        if let Some(name) = params.repeated.first() {
            return back("invalid_request", &format!("{name} is repeated"));
        }
        if params.get("response_type") != Some("code") {
            return back(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
        if params.get("code_challenge_method") != Some("S256") {
            return back(
                "invalid_request",
                "PKCE is required, with code_challenge_method=S256",
            );
        }
        let Some(challenge) = params
            .get("code_challenge")
            .filter(|c| is_s256_challenge(c))
        else {
            return back(
                "invalid_request",
                "code_challenge must be a base64url SHA-256 (43 characters)",
            );
        };
        let scopes = scope_list(params.get("scope"));
        if !client.allows_scopes(&scopes) {
            return back(
                "invalid_scope",
                "a requested scope is not allowed for this application",
            );
        }

        let now = unix_now();
        let session = match cookie::find(headers, &self.cookie_name) {
            TokenCookie::Present(token) => Some(token),
            TokenCookie::Absent | TokenCookie::Duplicated | TokenCookie::Malformed => None,
        };
        let caller = match &session {
            Some(token) => self.sessions.resolve(token, now).await,
            None => SessionCaller::Anonymous,
        };
        let principal = match caller {
            SessionCaller::User(p) => p,
            SessionCaller::Anonymous if params.get("prompt") == Some("none") => {
                return back("login_required", "no one is signed in");
            }
            SessionCaller::Anonymous => {
                // The normal browser login, back to this very request afterwards.
                let rd: String = url::form_urlencoded::byte_serialize(
                    format!("{AUTHORIZE_PATH}?{raw_query}").as_bytes(),
                )
                .collect();
                return Reply::Redirect {
                    location: format!("{LOGIN_PATH}?rd={rd}"),
                    cookies: Vec::new(),
                };
            }
            SessionCaller::Unavailable => {
                return back("temporarily_unavailable", "please try again in a moment");
            }
        };
        let (Some(token), identity) = (session, &principal.user.identity) else {
            return back("server_error", "no session");
        };
        if !identity.enabled {
            return Reply::Redirect {
                location: self.welcome_path.clone(),
                cookies: Vec::new(),
            };
        }
        if identity.impersonator_id.is_some() {
            // Support staff acting as a user get no credentials of that user's to take away.
            return back(
                "access_denied",
                "applications cannot be authorized while impersonating",
            );
        }

        let code = match OpaqueToken::generate() {
            Ok(code) => code,
            Err(e) => {
                tracing::error!(error = %e, "no code for an app");
                return back("server_error", "please try again");
            }
        };
        let record = NewAppCode {
            code_hash: code.hash().to_hex(),
            client_id: client.id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            code_challenge: challenge.to_owned(),
            scope: scope_string(&scopes),
            user_id: identity.user_id,
            session_hash: token.hash().to_hex(),
            created_at: now,
            expires_at: now.saturating_add(self.code_ttl),
        };
        let event = requester.audit(
            AuditEvent::new(AuditKind::AppAuthorized, Outcome::Success, now)
                .user(identity.user_id)
                .detail(format!("client_id={}", client.id)),
        );
        if let Err(e) = self.store.insert_app_code(&record, &event).await {
            tracing::warn!(error = %e, client_id = %client.id, "could not store an app's code");
            return back("temporarily_unavailable", "please try again in a moment");
        }
        let mut pairs = vec![("code", code.as_str())];
        if let Some(state) = state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", &self.issuer));
        Reply::Redirect {
            location: with_query(redirect_uri, &pairs),
            cookies: Vec::new(),
        }
    }

    /// An error for a verified redirect URI (RFC 6749 §4.1.2.1, with RFC 9207 `iss`).
    fn error_redirect(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        error: &str,
        description: &str,
    ) -> Reply {
        let mut pairs = vec![("error", error), ("error_description", description)];
        if let Some(state) = state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", &self.issuer));
        Reply::Redirect {
            location: with_query(redirect_uri, &pairs),
            cookies: Vec::new(),
        }
    }
}

fn error_page(message: &str) -> Reply {
    Reply::Page {
        status: StatusCode::BAD_REQUEST,
        html: pages::message_page("Sign-in request refused", message, None),
        cookies: Vec::new(),
    }
}
