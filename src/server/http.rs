//! The HTTP listener: `/authz` forward-auth and the browser-facing `/auth/*` pages.

use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use http::StatusCode;

use super::{AppState, forward_auth};
use crate::pages;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(forward_auth::PREFIX, any(forward_auth::handle))
        .route(
            &format!("{}/{{*rest}}", forward_auth::PREFIX),
            any(forward_auth::handle),
        )
        .route("/auth/login", get(login_placeholder))
        .with_state(state)
}

/// Until an identity provider is configured there is nowhere to send the browser.
async fn login_placeholder(State(_state): State<AppState>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(pages::message_page(
            "Sign-in is not configured",
            "No identity provider is configured for this gatehouse yet.",
            None,
        )),
    )
        .into_response()
}
