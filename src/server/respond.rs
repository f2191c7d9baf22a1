//! Between the flows' plain values ([`crate::web`]) and axum: who sent a request, and the
//! response for a [`Reply`]. Shared by the broker's handlers ([`super::http`]) and the apps'
//! ([`super::apps`]).

use std::net::SocketAddr;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{AppState, forward_auth};
use crate::web::{Reply, Requester};

/// Who is at the other end: the client address (through trusted proxies) and user agent.
pub fn requester(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Requester {
    Requester {
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

/// Turns a flow's reply into a response. Every reply is `no-store`; pages also get a strict
/// CSP, no framing and no referrer (callback URLs carry codes).
pub fn respond(reply: Reply) -> Response {
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
        Reply::Document { content_type, body } => (
            ([(header::CONTENT_TYPE, content_type)], body).into_response(),
            Vec::new(),
        ),
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
