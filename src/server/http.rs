//! The HTTP listener: `/authz` forward-auth and the browser-facing `/auth/*` pages. Handlers
//! only translate HTTP to the broker's plain inputs and its [`Reply`] back to HTTP.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{AppState, forward_auth};
use crate::broker::impersonation::{IMPERSONATE_PATH, ImpersonateParams, STOP_PATH};
use crate::broker::{
    BACKCHANNEL_LOGOUT_PATH, CALLBACK_PATH, CallbackParams, Client, LOGIN_PATH, LOGOUT_PATH,
    LoginParams, Reply,
};
use crate::strength::StepUp;

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
        router = crate::apps::routes::routes(router);
    }
    router.with_state(state)
}

/// Query or form pairs, with the names that appear more than once (ambiguous: an HTTP
/// parameter pollution attempt or a broken client) dropped.
pub(crate) fn unique_params(raw: &[u8]) -> (HashMap<String, String>, Vec<String>) {
    let mut values: HashMap<String, String> = HashMap::new();
    let mut repeated = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if values.insert(k.to_string(), v.into_owned()).is_some() {
            repeated.push(k.into_owned());
        }
    }
    for name in &repeated {
        values.remove(name);
    }
    (values, repeated)
}

/// Who is at the other end: the client address (through trusted proxies) and user agent.
pub(crate) fn client(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Client {
    Client {
        ip: Some(forward_auth::client_ip(
            headers,
            peer.ip(),
            &state.settings.server.trusted_proxies,
        )),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
    }
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
        step_up: step_up.filter(|s| !s.is_empty()),
    };
    let client = client(&state, peer, &headers);
    respond(state.broker.login(params, &headers, &client).await)
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
    let client = client(&state, peer, &headers);
    respond(state.broker.callback(params, &headers, &client).await)
}

async fn logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (params, _) = unique_params(query.unwrap_or_default().as_bytes());
    let client = client(&state, peer, &headers);
    let rd = params.get("rd").map(String::as_str);
    respond(state.broker.logout(rd, &headers, &client).await)
}

/// OIDC Back-Channel Logout: the IdP POSTs `logout_token` (form-encoded).
async fn backchannel_logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (mut params, _) = unique_params(&body);
    let client = client(&state, peer, &headers);
    let token = params.remove("logout_token");
    respond(
        state
            .broker
            .backchannel_logout(token.as_deref(), &client)
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
    let client = client(&state, peer, &headers);
    respond(state.broker.impersonate(params, &headers, &client).await)
}

async fn stop_impersonating(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = impersonate_params(&headers, &body);
    let client = client(&state, peer, &headers);
    respond(
        state
            .broker
            .stop_impersonating(params, &headers, &client)
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

/// Turns a broker reply into a response. Every reply is `no-store`; pages also get a strict
/// CSP, no framing and no referrer (callback URLs carry codes).
pub(crate) fn respond(reply: Reply) -> Response {
    let (mut response, cookies) = match reply {
        Reply::Redirect { location, cookies } => {
            let mut r = StatusCode::FOUND.into_response();
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                Err(_) => {
                    tracing::warn!("unrepresentable redirect target; sending /");
                    r.headers_mut()
                        .insert(header::LOCATION, HeaderValue::from_static("/"));
                }
            }
            (r, cookies)
        }
        Reply::Page {
            status,
            html,
            cookies,
        } => {
            let mut r = (status, axum::response::Html(html)).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                ),
            );
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            (r, cookies)
        }
        Reply::Json {
            status,
            body,
            cookies,
        } => ((status, axum::Json(body)).into_response(), cookies),
        Reply::TooManyRequests { retry_after, html } => {
            let mut r = if html {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::response::Html(crate::pages::message_page(
                        "Too many attempts",
                        &format!("Please wait {retry_after} seconds and try again."),
                        None,
                    )),
                )
                    .into_response()
            } else {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(serde_json::json!({ "error": "too_many_requests" })),
                )
                    .into_response()
            };
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            (r, Vec::new())
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_dropped() {
        let (params, repeated) = unique_params(b"state=a&code=c&state=b&rd=%2Fx");
        assert_eq!(params.get("state"), None);
        assert_eq!(params.get("code").map(String::as_str), Some("c"));
        assert_eq!(params.get("rd").map(String::as_str), Some("/x"));
        assert_eq!(repeated, vec!["state".to_owned()]);
    }
}
