//! HTTP for local sign-in ([`crate::local`]): the pages under `/auth/local` and the
//! multi-step API under `/auth/v1`. Handlers only translate HTTP to the flow's plain inputs
//! and its answers back.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::AppState;
use super::respond::{requester, respond};
use crate::local::api::{AUTHENTICATE_PATH, ApiReply, INIT_PATH, SESSION_TOKEN_HEADER};
use crate::local::browser::{PageForm, StartParams};
use crate::local::{LOCAL_PATH, Local};
use crate::web::unique_params;

/// Forms and API bodies are small.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Adds the pages and the API (when `[local]` is configured).
pub fn routes(router: Router<AppState>) -> Router<AppState> {
    let path = |p: &str| format!("{LOCAL_PATH}{p}");
    router
        .route(LOCAL_PATH, get(start))
        .route(&path("/code/send"), post(send_code))
        .route(&path("/code"), post(code))
        .route(&path("/link"), get(link))
        .route(&path("/password"), post(password))
        .route(&path("/totp"), post(totp))
        .route(&path("/totp/enroll"), get(enroll).post(enroll_confirm))
        .route(&path("/forgot"), get(forgot).post(forgot_submit))
        .route(&path("/reset"), get(reset).post(reset_submit))
        .route(
            &path("/account/password"),
            get(account_password).post(account_password_submit),
        )
        .route(&path("/step-up"), get(step_up))
        .route(INIT_PATH, post(init))
        .route(AUTHENTICATE_PATH, post(authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

fn local(state: &AppState) -> Option<&Arc<Local>> {
    state.local.as_ref()
}

fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

fn form(headers: &HeaderMap, body: &[u8]) -> PageForm {
    let (fields, _) = unique_params(body);
    PageForm {
        fields,
        origin: headers
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or("invalid").to_owned()),
    }
}

async fn start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(local) = local(&state) else {
        return not_found();
    };
    let (mut params, _) = unique_params(query.unwrap_or_default().as_bytes());
    let params = StartParams {
        login_hint: params.remove("login_hint"),
        rd: params.remove("rd"),
        signup: params
            .remove("signup")
            .is_some_and(|v| v == "1" || v == "true"),
    };
    let requester = requester(&state, peer, &headers);
    respond(local.page_start(params, &requester).await)
}

/// The POSTed pages of a flow: `(local, form, headers, requester)` → reply.
macro_rules! flow_post {
    ($name:ident, $method:ident) => {
        async fn $name(
            State(state): State<AppState>,
            ConnectInfo(peer): ConnectInfo<SocketAddr>,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            let Some(local) = local(&state) else {
                return not_found();
            };
            let requester = requester(&state, peer, &headers);
            respond(
                local
                    .$method(form(&headers, &body), &headers, &requester)
                    .await,
            )
        }
    };
}

flow_post!(send_code, page_send_code);
flow_post!(code, page_code);
flow_post!(password, page_password);
flow_post!(totp, page_totp);
flow_post!(enroll_confirm, page_enroll_confirm);
flow_post!(forgot_submit, page_forgot_submit);
flow_post!(account_password_submit, page_account_password_submit);

async fn link(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(local) = local(&state) else {
        return not_found();
    };
    let (params, _) = unique_params(query.unwrap_or_default().as_bytes());
    let requester = requester(&state, peer, &headers);
    respond(
        local
            .page_link(params.get("t").map(String::as_str), &headers, &requester)
            .await,
    )
}

async fn enroll(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(local) = local(&state) else {
        return not_found();
    };
    respond(local.page_enroll(&headers).await)
}

async fn forgot(State(state): State<AppState>) -> Response {
    let Some(local) = local(&state) else {
        return not_found();
    };
    respond(local.page_forgot())
}

async fn reset(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let Some(local) = local(&state) else {
        return not_found();
    };
    let (params, _) = unique_params(query.unwrap_or_default().as_bytes());
    respond(local.page_reset(params.get("t").map(String::as_str)).await)
}

async fn reset_submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(local) = local(&state) else {
        return not_found();
    };
    let requester = requester(&state, peer, &headers);
    respond(
        local
            .page_reset_submit(form(&headers, &body), &requester)
            .await,
    )
}

async fn account_password(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(local) = local(&state) else {
        return not_found();
    };
    respond(local.page_account_password(&headers).await)
}

async fn step_up(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(local) = local(&state) else {
        return not_found();
    };
    let (params, _) = unique_params(query.unwrap_or_default().as_bytes());
    let requester = requester(&state, peer, &headers);
    let mfa = params.get("mfa").is_some_and(|v| v == "1");
    respond(
        local
            .page_step_up(
                params.get("rd").map(String::as_str),
                mfa,
                &headers,
                &requester,
            )
            .await,
    )
}

// === the API ===

async fn init(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(local) = local(&state) else {
        return not_found();
    };
    let requester = requester(&state, peer, &headers);
    api_response(local.api_init(&body, &requester).await)
}

async fn authenticate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(local) = local(&state) else {
        return not_found();
    };
    let requester = requester(&state, peer, &headers);
    // Exactly one header: two are ambiguous, so neither is used.
    let mut values = headers.get_all(SESSION_TOKEN_HEADER).iter();
    let token = match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    };
    api_response(local.api_authenticate(token, &body, &requester).await)
}

fn api_response(reply: ApiReply) -> Response {
    let mut response = (reply.status, axum::Json(reply.body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(token) = reply.session_token
        && let Ok(value) = HeaderValue::from_str(&token)
    {
        headers.insert(SESSION_TOKEN_HEADER, value);
    }
    if let Some(seconds) = reply.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
