//! HTTP for the authorization server ([`crate::apps`]): `/auth/authorize`, `/auth/token`, `/auth/revoke` (with
//! CORS for registered single-page apps) and the RFC 8414 metadata. Handlers only translate
//! HTTP to [`Apps`]' plain inputs and its answers back.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::AppState;
use super::respond::{requester, respond};
use crate::apps::{AUTHORIZE_PATH, Apps, METADATA_PATH, REVOKE_PATH, TOKEN_PATH, TokenReply};

/// Token and revocation requests are a few hundred bytes.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// How long a browser may cache a CORS preflight answer.
const PREFLIGHT_MAX_AGE: HeaderValue = HeaderValue::from_static("600");

/// Adds the endpoints to the HTTP listener's router (when `[[client]]` apps are configured).
pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route(AUTHORIZE_PATH, get(authorize))
        .route(
            TOKEN_PATH,
            post(token)
                .options(preflight)
                .layer(DefaultBodyLimit::max(MAX_FORM_BYTES)),
        )
        .route(
            REVOKE_PATH,
            post(revoke)
                .options(preflight)
                .layer(DefaultBodyLimit::max(MAX_FORM_BYTES)),
        )
        .route(METADATA_PATH, get(metadata))
}

async fn authorize(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(apps) = &state.apps else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let requester = requester(&state, peer, &headers);
    let reply = apps
        .authorize(query.as_deref().unwrap_or_default(), &headers, &requester)
        .await;
    respond(reply)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

async fn token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(apps) = &state.apps else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let requester = requester(&state, peer, &headers);
    let reply = apps.token(&body, is_form(&headers), &requester).await;
    json_reply(apps, &headers, reply)
}

async fn revoke(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(apps) = &state.apps else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let requester = requester(&state, peer, &headers);
    let reply = apps.revoke(&body, is_form(&headers), &requester).await;
    json_reply(apps, &headers, reply)
}

async fn metadata(State(state): State<AppState>) -> Response {
    let Some(apps) = &state.apps else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = axum::Json(apps.metadata()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

/// A token answer: never cached (RFC 6749 §5.1), readable cross-origin by registered SPAs.
fn json_reply(apps: &Apps, request: &HeaderMap, reply: TokenReply) -> Response {
    let mut response = match reply.body {
        Some(body) => (reply.status, axum::Json(body)).into_response(),
        None => reply.status.into_response(),
    };
    let headers = response.headers_mut();
    if let Some(seconds) = reply.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    cors(apps, request, headers);
    response
}

/// `Access-Control-Allow-Origin` for the origin of a registered `spa` client's redirect URI
/// only. Never with credentials: the token endpoint takes no cookies.
fn cors(apps: &Apps, request: &HeaderMap, headers: &mut HeaderMap) -> bool {
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    let allowed = request
        .get(header::ORIGIN)
        .filter(|origin| origin.to_str().is_ok_and(|o| apps.cors_allows(o)));
    match allowed {
        Some(origin) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            true
        }
        None => false,
    }
}

/// CORS preflight: a registered SPA's origin may POST a form. Others get no CORS headers, so
/// the browser refuses to send.
async fn preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(apps) = &state.apps else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    if cors(apps, &headers, out) {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type"),
        );
        out.insert(header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE);
    }
    response
}
