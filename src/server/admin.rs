//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and `/admin/v1/*`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/v1/revocations/sync", post(sync_revocations))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Alive: the process answers. Says nothing about the database.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: not shutting down, and the database answers.
async fn readyz(State(state): State<AppState>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database timed out\n").into_response(),
    }
}

/// Whether the request may use `/admin/v1/*`: with `admin.token` (or `token_env`) configured,
/// only with `Authorization: Bearer <token>`; without one, the admin listener's address is the
/// only protection (keep it on loopback or a private network).
fn admin_authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = &state.admin_token else {
        return true;
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    bool::from(
        presented
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes()),
    )
}

/// Reads the revocation list now. It carries no data and only makes this replica re-read
/// state it would read within a second anyway; the CLI calls it after every change so the
/// change is in effect when the command returns.
async fn sync_revocations(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !admin_authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, "admin token required\n").into_response();
    }
    // The CLI's changes: revocations, and signing keys after `keys rotate`.
    if let Some(minter) = &state.minter
        && let Err(e) = minter.reload().await
    {
        tracing::warn!(error = %e, "could not reload signing keys");
    }
    match state.revocations.sync().await {
        Ok(applied) => axum::Json(serde_json::json!({ "applied": applied })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "revocation sync failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}
