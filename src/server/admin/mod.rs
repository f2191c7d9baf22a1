//! The admin listener: `/metrics`, `/healthz`, `/readyz`, the admin API (`/admin/v1/*`, see
//! [`api`]) and the audit log page (`/admin/audit`, see [`audit_page`]).
//!
//! The API and the page need the admin token (`admin.token` / `admin.token_env`): as
//! `Authorization: Bearer`, or for the page, a short-lived cookie it sets once the token is
//! entered (see [`auth`]). Without a configured token they answer 401: an open admin API
//! would be one mistaken listen address away from the internet.

mod api;
mod audit_page;
mod auth;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};

use super::AppState;
use crate::metrics::Snapshot;

pub use auth::AdminAuth;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/v1/revocations/sync", post(sync_revocations))
        .merge(api::router())
        .merge(audit_page::router())
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = Snapshot {
        pool: state.store.pool_stats(),
        db_up: state.store.health().is_up(),
        cache_entries: state.sessions.cached_entries(),
        alive_tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
    };
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&snapshot),
    )
        .into_response()
}

/// Alive: the process answers. Says nothing about the database.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: not shutting down, and the database answers (reads, and writes when they were
/// failing).
async fn readyz(State(state): State<AppState>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match super::probe(&state.store).await {
        Ok(()) if state.store.health().is_up() => (StatusCode::OK, "ready\n").into_response(),
        Ok(()) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

/// Reads the revocation list (and signing keys) now. It carries no data and only makes this
/// replica re-read state it would read within a second anyway; the CLI calls it after every
/// change so the change is in effect when the command returns. Without a configured admin
/// token it needs none (it reveals and changes nothing).
async fn sync_revocations(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.admin_auth.is_configured() && !state.admin_auth.bearer_ok(&headers) {
        return api::unauthorized();
    }
    match apply_changes(&state, true).await {
        Ok(applied) => axum::Json(serde_json::json!({ "applied": applied })).into_response(),
        Err(()) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response(),
    }
}

/// Makes this replica apply what an admin change wrote: revocations, and (`keys`) signing
/// keys. Other replicas learn through `NOTIFY` or polling.
async fn apply_changes(state: &AppState, keys: bool) -> Result<usize, ()> {
    if keys
        && let Some(minter) = &state.minter
        && let Err(e) = minter.reload().await
    {
        tracing::warn!(error = %e, "could not reload signing keys");
    }
    state.revocations.sync().await.map_err(|e| {
        tracing::warn!(error = %e, "revocation sync failed");
    })
}

/// The client of an admin request, for the audit trail.
fn client(peer: SocketAddr, headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let user_agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (Some(peer.ip().to_string()), user_agent)
}
