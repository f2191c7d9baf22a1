//! The HTTP listener: `/authz` forward-auth and the browser-facing `/auth/*` pages. Handlers
//! only translate HTTP to the broker's plain inputs and its [`Reply`] back to HTTP.

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;

use super::respond::{requester, respond};
use super::{AppState, forward_auth};
use crate::broker::impersonation::{IMPERSONATE_PATH, ImpersonateParams, STOP_PATH};
use crate::broker::saml::AcsParams;
use crate::broker::{
    BACKCHANNEL_LOGOUT_PATH, CALLBACK_PATH, CallbackParams, LOGIN_PATH, LOGOUT_PATH, LoginParams,
};
use crate::saml::idp::{ACS_PATH, SLO_PATH};
use crate::strength::StepUp;
use crate::web::unique_params;

pub fn router(state: AppState) -> Router {
    let welcome = state.broker.welcome_path().to_owned();
    let mut router = Router::new()
        .route(forward_auth::PREFIX, any(forward_auth::handle))
        .route(
            &format!("{}/{{*rest}}", forward_auth::PREFIX),
            any(forward_auth::handle),
        )
        .route(LOGIN_PATH, get(login))
        .route(CALLBACK_PATH, get(callback_query).post(callback_form_post))
        .route(LOGOUT_PATH, get(logout).post(logout))
        .route(BACKCHANNEL_LOGOUT_PATH, post(backchannel_logout))
        .route(ACS_PATH, post(saml_acs))
        .route(SLO_PATH, get(saml_slo))
        .route("/auth/saml/{idp}/metadata", get(saml_metadata))
        .route("/auth/userinfo", get(userinfo))
        .route(IMPERSONATE_PATH, get(impersonate_page).post(impersonate))
        .route(STOP_PATH, post(stop_impersonating))
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        );
    // A custom welcome_path may live elsewhere (served by the app); serve ours only at home.
    if welcome.starts_with("/auth/") {
        router = router.route(&welcome, get(welcome_page));
    }
    if state.apps.is_some() {
        router = super::apps::routes(router);
    }
    if state.local.is_some() {
        router = super::local::routes(router);
    }
    router.with_state(state)
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (mut params, _) = unique_params(query.unwrap_or_default().as_bytes());
    let flag = |value: Option<String>| value.is_some_and(|v| v == "1" || v == "true");
    let step_up = flag(params.remove("step_up")).then(|| StepUp {
        mfa: flag(params.remove("mfa")),
        acr_values: params
            .remove("acr_values")
            .map(|v| v.split_whitespace().take(10).map(String::from).collect())
            .unwrap_or_default(),
        max_age: params.remove("max_age").and_then(|v| v.parse().ok()),
    });
    let params = LoginParams {
        rd: params.remove("rd"),
        login_hint: params.remove("login_hint"),
        idp: params.remove("idp"),
        signup: flag(params.remove("signup")),
        sso: flag(params.remove("sso")),
        step_up: step_up.filter(|s| !s.is_empty()),
    };
    let requester = requester(&state, peer, &headers);
    respond(state.broker.login(params, &headers, &requester).await)
}

async fn callback_query(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    callback(state, peer, headers, query.unwrap_or_default().as_bytes()).await
}

/// `response_mode=form_post`: the IdP's page POSTs the same parameters as a form.
async fn callback_form_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    callback(state, peer, headers, &body).await
}

async fn callback(state: AppState, peer: SocketAddr, headers: HeaderMap, raw: &[u8]) -> Response {
    let (mut params, repeated) = unique_params(raw);
    let mut params = CallbackParams {
        code: params.remove("code"),
        state: params.remove("state"),
        error: params.remove("error"),
        error_description: params.remove("error_description"),
        iss: params.remove("iss"),
    };
    if repeated.iter().any(|n| n == "code" || n == "state") {
        // Refuse rather than guess which one is meant.
        params.state = None;
    }
    let requester = requester(&state, peer, &headers);
    respond(state.broker.callback(params, &headers, &requester).await)
}

async fn logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (params, _) = unique_params(query.unwrap_or_default().as_bytes());
    let requester = requester(&state, peer, &headers);
    let rd = params.get("rd").map(String::as_str);
    respond(state.broker.logout(rd, &headers, &requester).await)
}

/// The ACS form: a Response of the screen's 256 KiB limit, base64 and form-encoded, fits with
/// room to spare. A larger body is kept no further, and is refused (and audited) as such.
const MAX_SAML_FORM_BYTES: usize = 1024 * 1024;
/// A larger one is still read (and dropped) up to this, so the refusal reaches the client: a
/// reply sent while the client is still sending is lost to the reset that closing an unread
/// socket causes. Beyond this the connection is simply closed.
const MAX_SAML_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// The body if it is at most `keep` bytes; a longer one is read to its end (up to `drain`)
/// and dropped.
async fn bounded_body(body: Body, keep: usize, drain: usize) -> Option<Bytes> {
    let mut body = body;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return None };
        if let Some(data) = frame.data_ref() {
            seen += data.len();
            if seen > drain {
                return None;
            }
            if seen <= keep {
                kept.extend_from_slice(data);
            }
        }
    }
    (seen <= keep).then(|| Bytes::from(kept))
}

/// SAML HTTP-POST binding: the IdP's page POSTs `SAMLResponse` and `RelayState`.
async fn saml_acs(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let requester = requester(&state, peer, &headers);
    let body = bounded_body(body, MAX_SAML_FORM_BYTES, MAX_SAML_DRAIN_BYTES).await;
    let params = match body {
        Some(body) => {
            let (mut params, repeated) = unique_params(&body);
            let mut params = AcsParams {
                saml_response: params.remove("SAMLResponse"),
                relay_state: params.remove("RelayState"),
                oversized: false,
            };
            if repeated
                .iter()
                .any(|n| n == "SAMLResponse" || n == "RelayState")
            {
                params.saml_response = None;
            }
            params
        }
        None => AcsParams {
            oversized: true,
            ..AcsParams::default()
        },
    };
    respond(state.broker.saml_acs(params, &headers, &requester).await)
}

/// SAML single logout (HTTP-Redirect binding): the raw query, whose signature covers it as sent.
async fn saml_slo(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let requester = requester(&state, peer, &headers);
    respond(
        state
            .broker
            .saml_slo(query.as_deref().unwrap_or_default(), &requester)
            .await,
    )
}

async fn saml_metadata(State(state): State<AppState>, Path(idp): Path<String>) -> Response {
    respond(state.broker.saml_metadata(&idp))
}

/// OIDC Back-Channel Logout: the IdP POSTs `logout_token` (form-encoded).
async fn backchannel_logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (mut params, _) = unique_params(&body);
    let requester = requester(&state, peer, &headers);
    let token = params.remove("logout_token");
    respond(
        state
            .broker
            .backchannel_logout(token.as_deref(), &requester)
            .await,
    )
}

async fn impersonate_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    respond(state.broker.impersonate_page(&headers).await)
}

async fn impersonate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = impersonate_params(&headers, &body);
    let requester = requester(&state, peer, &headers);
    respond(state.broker.impersonate(params, &headers, &requester).await)
}

async fn stop_impersonating(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = impersonate_params(&headers, &body);
    let requester = requester(&state, peer, &headers);
    respond(
        state
            .broker
            .stop_impersonating(params, &headers, &requester)
            .await,
    )
}

/// `user`, `csrf` and `rd` from a JSON body (`Content-Type: application/json`) or a form.
fn impersonate_params(headers: &HeaderMap, body: &[u8]) -> ImpersonateParams {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("invalid").to_owned());
    if json {
        let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let field = |k: &str| value.get(k).and_then(|v| v.as_str()).map(String::from);
        ImpersonateParams {
            user: field("user"),
            csrf: field("csrf"),
            rd: field("rd"),
            json,
            origin,
        }
    } else {
        let (mut params, _) = unique_params(body);
        ImpersonateParams {
            user: params.remove("user"),
            csrf: params.remove("csrf"),
            rd: params.remove("rd"),
            json,
            origin,
        }
    }
}

/// The keys of the minted tokens (`[token] enabled`), for upstreams and Envoy's `jwt_authn`.
/// Cached briefly: a new key is published before it signs (see `gatehouse keys rotate`).
async fn jwks(State(state): State<AppState>) -> Response {
    match &state.minter {
        Some(minter) => public_json(minter.jwks(crate::clock::unix_now())),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn openid_configuration(State(state): State<AppState>) -> Response {
    match &state.minter {
        Some(minter) => public_json(minter.openid_configuration()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn public_json(body: serde_json::Value) -> Response {
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

async fn welcome_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    respond(state.broker.welcome(&headers).await)
}

async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    respond(state.broker.userinfo(&headers).await)
}
