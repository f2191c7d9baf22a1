//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and `/admin/v1/*`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;

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

/// Reads the revocation list now. Needs no credentials: it carries no data and only makes this
/// replica re-read state it would read within a second anyway. The CLI calls it after every
/// change so the change is in effect when the command returns.
async fn sync_revocations(State(state): State<AppState>) -> Response {
    match state.revocations.sync().await {
        Ok(applied) => axum::Json(serde_json::json!({ "applied": applied })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "revocation sync failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}
