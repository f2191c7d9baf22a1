//! `/admin/v1/*`: the CLI's operations as JSON resources, through the same
//! [`crate::admin::Admin`] implementation.
//!
//! | method and path | operation |
//! |---|---|
//! | `GET /admin/v1/orgs`, `POST /admin/v1/orgs` | list, create (`{name, domains, auto_enable}`) |
//! | `GET /admin/v1/orgs/{org}`, `PATCH /admin/v1/orgs/{org}` | one org (name or id); change its sign-in (`{idp, idp_params, require_mfa, auto_enable}`) |
//! | `GET /admin/v1/users?search=&cursor=&limit=` | list, by email |
//! | `GET /admin/v1/users/{user}` | one user (id or email) with org, identities, sessions |
//! | `POST /admin/v1/users/{user}/enable`, `…/disable` | enable; disable (ends sessions) |
//! | `PUT`/`DELETE /admin/v1/users/{user}/roles/{role}` | grant, revoke |
//! | `DELETE /admin/v1/users/{user}/identities?issuer=&subject=` | unlink an IdP identity |
//! | `POST /admin/v1/sessions` (`{user}`), `DELETE /admin/v1/sessions?user=` or `?all=true` | create, revoke |
//! | `GET /admin/v1/keys`, `POST /admin/v1/keys/rotate` (`{now}`) | list, rotate |
//! | `GET /admin/v1/audit?user=&kind=&outcome=&idp=&since=&until=&limit=&cursor=` | the audit log |
//!
//! Errors are `{"error": <code>, "detail": <text>}` with 400, 401, 404, 409 or 503.

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::json;

use super::{AppState, apply_changes, client};
use crate::admin::{Actor, Admin, AdminError, AuditQuery, UserRef};
use crate::clock::unix_now;
use crate::store::OrgSignInChange;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/orgs", get(list_orgs).post(create_org))
        .route("/admin/v1/orgs/{org}", get(show_org).patch(update_org))
        .route("/admin/v1/users", get(list_users))
        .route("/admin/v1/users/{user}", get(show_user))
        .route("/admin/v1/users/{user}/enable", post(enable_user))
        .route("/admin/v1/users/{user}/disable", post(disable_user))
        .route(
            "/admin/v1/users/{user}/roles/{role}",
            put(grant_role).delete(revoke_role),
        )
        .route(
            "/admin/v1/users/{user}/identities",
            axum::routing::delete(unlink_identity),
        )
        .route("/admin/v1/users/{user}/unlock", post(unlock_user))
        .route("/admin/v1/users/{user}/mfa-reset", post(mfa_reset))
        .route(
            "/admin/v1/sessions",
            post(create_session).delete(revoke_sessions),
        )
        .route("/admin/v1/keys", get(list_keys))
        .route("/admin/v1/keys/rotate", post(rotate_key))
        .route("/admin/v1/audit", get(audit))
}

/// A request that presented the admin token: the operations, as `admin-api` from its client.
pub struct Authorized {
    state: AppState,
    actor: Actor,
}

impl Authorized {
    fn admin(&self) -> Admin<'_> {
        Admin::new(&self.state.store, &self.state.settings, self.actor.clone())
    }
}

impl FromRequestParts<AppState> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if !state.admin_auth.bearer_ok(&parts.headers) {
            return Err(unauthorized());
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (ip, user_agent) = client(peer, &parts.headers);
        Ok(Self {
            state: state.clone(),
            actor: Actor {
                name: "admin-api".to_owned(),
                ip,
                user_agent,
            },
        })
    }
}

pub fn unauthorized() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send the admin token (admin.token or admin.token_env) as Authorization: Bearer",
    );
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"gatehouse-admin\""),
    );
    response
}

fn error(status: StatusCode, code: &str, detail: &str) -> Response {
    (status, Json(json!({ "error": code, "detail": detail }))).into_response()
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match &self {
            Self::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", m),
            Self::Conflict(m) => error(StatusCode::CONFLICT, "conflict", m),
            Self::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid", m),
            Self::Keys(m) => error(StatusCode::CONFLICT, "keys", m),
            Self::Store(e) => {
                tracing::warn!(error = %e, "admin API: database error");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable",
                )
            }
        }
    }
}

type ApiResult = Result<Response, AdminError>;

fn ok(value: impl serde::Serialize) -> ApiResult {
    Ok(Json(value).into_response())
}

fn created(value: impl serde::Serialize) -> ApiResult {
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// JSON and query bodies that do not parse are a 400 in the API's error shape.
fn bad_input(detail: String) -> AdminError {
    AdminError::Invalid(detail)
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, AdminError> {
    body.map(|Json(v)| v).map_err(|e| bad_input(e.body_text()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, AdminError> {
    q.map(|Query(v)| v).map_err(|e| bad_input(e.body_text()))
}

/// After a change: in effect on this replica before the response; others learn by `NOTIFY`
/// or polling.
async fn applied(auth: &Authorized, keys: bool) {
    let _ = apply_changes(&auth.state, keys).await;
}

// === orgs ===

async fn list_orgs(auth: Authorized) -> ApiResult {
    ok(auth.admin().list_orgs().await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    name: String,
    domains: Vec<String>,
    #[serde(default)]
    auto_enable: bool,
}

async fn create_org(auth: Authorized, body: Result<Json<NewOrg>, JsonRejection>) -> ApiResult {
    let org = json_body(body)?;
    created(
        auth.admin()
            .create_org(&org.name, &org.domains, org.auto_enable, unix_now())
            .await?,
    )
}

async fn show_org(auth: Authorized, Path(org): Path<String>) -> ApiResult {
    ok(auth.admin().find_org(&org).await?)
}

async fn update_org(
    auth: Authorized,
    Path(org): Path<String>,
    body: Result<Json<OrgSignInChange>, JsonRejection>,
) -> ApiResult {
    let change = json_body(body)?;
    let org = auth
        .admin()
        .set_org_signin(&org, &change, unix_now())
        .await?;
    // A new MFA rule must reach this replica's cached sessions now, not at the next poll.
    applied(&auth, false).await;
    ok(org)
}

// === users ===

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct UserList {
    search: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list_users(auth: Authorized, q: Result<Query<UserList>, QueryRejection>) -> ApiResult {
    let q = query(q)?;
    ok(auth
        .admin()
        .list_users(q.search.as_deref(), q.cursor.as_deref(), q.limit)
        .await?)
}

fn user_ref(raw: &str) -> UserRef {
    match raw.parse() {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

async fn show_user(auth: Authorized, Path(user): Path<String>) -> ApiResult {
    ok(auth
        .admin()
        .user_detail(&user_ref(&user), unix_now())
        .await?)
}

async fn enable_user(auth: Authorized, Path(user): Path<String>) -> ApiResult {
    set_enabled(auth, &user, true).await
}

async fn disable_user(auth: Authorized, Path(user): Path<String>) -> ApiResult {
    set_enabled(auth, &user, false).await
}

/// Lifts a block on the user's local sign-in (after repeated failures).
async fn unlock_user(auth: Authorized, Path(user): Path<String>) -> ApiResult {
    ok(auth.admin().unlock(&user_ref(&user), unix_now()).await?)
}

/// Removes the user's TOTP and recovery codes.
async fn mfa_reset(auth: Authorized, Path(user): Path<String>) -> ApiResult {
    ok(auth.admin().mfa_reset(&user_ref(&user), unix_now()).await?)
}

async fn set_enabled(auth: Authorized, user: &str, enabled: bool) -> ApiResult {
    let change = auth
        .admin()
        .set_enabled(&user_ref(user), enabled, unix_now())
        .await?;
    applied(&auth, false).await;
    ok(change)
}

async fn grant_role(auth: Authorized, Path((user, role)): Path<(String, String)>) -> ApiResult {
    set_role(auth, &user, &role, true).await
}

async fn revoke_role(auth: Authorized, Path((user, role)): Path<(String, String)>) -> ApiResult {
    set_role(auth, &user, &role, false).await
}

async fn set_role(auth: Authorized, user: &str, role: &str, grant: bool) -> ApiResult {
    let change = auth
        .admin()
        .set_role(&user_ref(user), role, grant, unix_now())
        .await?;
    applied(&auth, false).await;
    ok(change)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityKey {
    issuer: String,
    subject: String,
}

async fn unlink_identity(
    auth: Authorized,
    Path(user): Path<String>,
    q: Result<Query<IdentityKey>, QueryRejection>,
) -> ApiResult {
    let key = query(q)?;
    let user = auth
        .admin()
        .unlink_identity(&user_ref(&user), &key.issuer, &key.subject, unix_now())
        .await?;
    applied(&auth, false).await;
    ok(json!({ "user": user, "unlinked": { "issuer": key.issuer, "subject": key.subject } }))
}

// === sessions ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    /// An email: the user is created (by the usual rules) when new.
    user: String,
}

async fn create_session(
    auth: Authorized,
    body: Result<Json<NewSession>, JsonRejection>,
) -> ApiResult {
    let body = json_body(body)?;
    created(auth.admin().create_session(&body.user, unix_now()).await?)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RevokeSessions {
    user: Option<String>,
    all: bool,
}

async fn revoke_sessions(
    auth: Authorized,
    q: Result<Query<RevokeSessions>, QueryRejection>,
) -> ApiResult {
    let target = match query(q)? {
        RevokeSessions {
            user: Some(user),
            all: false,
        } => Some(user_ref(&user)),
        RevokeSessions {
            user: None,
            all: true,
        } => None,
        _ => {
            return Err(AdminError::Invalid(
                "give exactly one of user=<id or email> or all=true".into(),
            ));
        }
    };
    let revoked = auth
        .admin()
        .revoke_sessions(target.as_ref(), unix_now())
        .await?;
    applied(&auth, false).await;
    ok(json!({ "revoked": revoked }))
}

// === keys ===

async fn list_keys(auth: Authorized) -> ApiResult {
    ok(auth.admin().keys(unix_now()).await?)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Rotate {
    /// Sign with the new key at once (see `gatehouse keys rotate --now`).
    now: bool,
}

async fn rotate_key(auth: Authorized, body: Option<Json<Rotate>>) -> ApiResult {
    let rotate = body.map(|Json(r)| r).unwrap_or_default();
    let key = auth.admin().rotate_key(rotate.now, unix_now()).await?;
    applied(&auth, true).await;
    created(key)
}

// === audit ===

async fn audit(auth: Authorized, q: Result<Query<AuditQuery>, QueryRejection>) -> ApiResult {
    ok(auth.admin().audit(&query(q)?).await?)
}
