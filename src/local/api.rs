//! The multi-step sign-in API for native and headless clients:
//!
//! - `POST /auth/v1/init` `{"email", "client_id"}` → header `x-session-token` and
//!   `{"methods": [...]}` (an SSO-only address also gets `authorize_url`);
//! - `POST /auth/v1/authenticate` with that header and one step → `{"next": [...]}`, or the
//!   `[[client]]`'s tokens exactly as `/auth/token` issues them.
//!
//! The token is a flow bound to the client; it dies after `flow_ttl_seconds` or 5 failed
//! steps and is deleted when it yields tokens. Errors are RFC 6749-style JSON; limits answer
//! 429 with `Retry-After`.

use http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::flow::{Progress, Step};
use super::methods::Method;
use super::{Local, LocalError};
use crate::email::Email;
use crate::session::OpaqueToken;
use crate::web::Requester;

pub const INIT_PATH: &str = "/auth/v1/init";
pub const AUTHENTICATE_PATH: &str = "/auth/v1/authenticate";
pub const SESSION_TOKEN_HEADER: &str = "x-session-token";

/// An API answer: JSON, the flow token to return in `x-session-token`, `Retry-After`.
#[derive(Debug)]
pub struct ApiReply {
    pub status: StatusCode,
    pub body: Value,
    pub session_token: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiReply {
    fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            session_token: None,
            retry_after: None,
        }
    }

    fn error(e: &LocalError) -> Self {
        if e.status().is_server_error() {
            tracing::warn!(error = %e, "sign-in API failed");
        }
        Self {
            status: e.status(),
            body: json!({ "error": e.code(), "error_description": e.user_message() }),
            session_token: None,
            retry_after: match e {
                LocalError::Limited(r) => Some(r.retry_after_seconds),
                _ => None,
            },
        }
    }

    fn invalid_client(message: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            body: json!({ "error": "invalid_client", "error_description": message }),
            session_token: None,
            retry_after: None,
        }
    }
}

#[derive(Deserialize)]
struct InitBody {
    email: String,
    client_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthenticateBody {
    method: String,
    #[serde(default)]
    send: bool,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Local {
    /// `POST /auth/v1/init`.
    pub async fn api_init(&self, body: &[u8], requester: &Requester) -> ApiReply {
        let Ok(body) = serde_json::from_slice::<InitBody>(body) else {
            return ApiReply::error(&LocalError::BadRequest(
                "expected a JSON object with \"email\" and \"client_id\"".into(),
            ));
        };
        if !self
            .apps
            .as_ref()
            .is_some_and(|a| a.has_client(&body.client_id))
        {
            return ApiReply::invalid_client("unknown client_id");
        }
        let Ok(email) = Email::parse(&body.email) else {
            return ApiReply::error(&LocalError::BadRequest(
                "\"email\" is not an email address".into(),
            ));
        };
        let started = match self
            .start(&email, Some(body.client_id.clone()), None, false, requester)
            .await
        {
            Ok(s) => s,
            Err(e) => return ApiReply::error(&e),
        };
        let methods: Vec<&str> = started.realm.methods.iter().map(|m| m.as_str()).collect();
        let mut answer = json!({ "methods": methods });
        if started.realm.allows(Method::Sso) {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query
                .append_pair("client_id", &body.client_id)
                .append_pair("response_type", "code")
                .append_pair("login_hint", email.as_str());
            answer["authorize_url"] = Value::String(format!(
                "{}/auth/authorize?{}",
                self.public_origin,
                query.finish()
            ));
        }
        ApiReply {
            session_token: Some(started.token.as_str().to_owned()),
            ..ApiReply::ok(answer)
        }
    }

    /// `POST /auth/v1/authenticate`.
    pub async fn api_authenticate(
        &self,
        session_token: Option<&str>,
        body: &[u8],
        requester: &Requester,
    ) -> ApiReply {
        let Some(token) = session_token.and_then(OpaqueToken::parse) else {
            return ApiReply::error(&LocalError::FlowInvalid);
        };
        let body: AuthenticateBody = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return ApiReply::error(&LocalError::BadRequest(format!(
                    "expected {{\"method\": ..., ...}}: {e}"
                )));
            }
        };
        let step = match (body.method.as_str(), body.send, body.code, body.password) {
            ("email_code", true, None, None) => Step::SendCode,
            ("email_code", false, Some(code), None) => Step::Code(code),
            ("password", false, None, Some(password)) => {
                Step::Password(SecretString::from(password))
            }
            ("totp", false, Some(code), None) => Step::Totp(code),
            _ => {
                return ApiReply::error(&LocalError::BadRequest(
                    "one of {\"method\":\"email_code\",\"send\":true}, \
                     {\"method\":\"email_code\",\"code\"}, {\"method\":\"password\",\"password\"}, \
                     {\"method\":\"totp\",\"code\"}"
                        .into(),
                ));
            }
        };
        let flow = match self.flow(&token).await {
            // A browser's flow is not the API's (and has no client to issue tokens to).
            Ok(flow) if flow.client_id.is_some() => flow,
            Ok(_) => return ApiReply::error(&LocalError::FlowInvalid),
            Err(e) => return ApiReply::error(&e),
        };
        match self.step(&flow, step, requester).await {
            Ok(Progress::CodeSent) => ApiReply::ok(json!({ "next": ["email_code"] })),
            Ok(Progress::Next(next)) => ApiReply::ok(json!({ "next": [next.as_str()] })),
            Ok(Progress::SignedIn(signed_in)) => {
                let (Some(apps), Some(client_id)) = (&self.apps, signed_in.client_id.as_deref())
                else {
                    return ApiReply::error(&LocalError::FlowInvalid);
                };
                match apps
                    .issue_signed_in(client_id, signed_in.user.id, &signed_in.auth, requester)
                    .await
                {
                    Ok(tokens) => ApiReply::ok(tokens),
                    Err(e) => {
                        let reply = e.reply();
                        ApiReply {
                            status: reply.status,
                            body: reply.body.unwrap_or_default(),
                            session_token: None,
                            retry_after: reply.retry_after,
                        }
                    }
                }
            }
            Err(e) => ApiReply::error(&e),
        }
    }
}
