//! First-party app tokens, end to end through a real Envoy: a native app and an SPA
//! (`[[client]]`) get codes at `/auth/authorize` (PKCE S256), tokens at `/auth/token`, revoke
//! at `/auth/revoke`, and use the access token on bearer routes; on SQLite and PostgreSQL.

use crate::support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::browser::Browser;
use support::op::{account, idp_toml, is_interaction};
use support::{Backend, Response, Stack, StackOptions, StackUrls, base_config};
use url::Url;

on_both_backends!(
    native_code_flow_with_pkce,
    redirect_uris_clients_and_cors,
    access_tokens_on_bearer_routes,
    refresh_rotates_and_reuse_revokes_the_family,
    revocation,
    disable_and_session_revoke_end_refresh_at_once,
    authorize_without_a_session_signs_in_first,
    one_refresh_token_twenty_times_at_once,
);

const API: &str = "https://api.test";
const OTHER_API: &str = "https://other.test";
const TOKEN_KEY_VAR: &str = "GH_TEST_TOKEN_KEY";
/// The native app's registered loopback redirect URI (any port matches).
const NATIVE_REDIRECT: &str = "http://127.0.0.1/callback";
/// The SPA's registered redirect URI (exact, port included).
const SPA_REDIRECT: &str = "http://127.0.0.1:3000/cb";
const SPA_ORIGIN: &str = "http://127.0.0.1:3000";

fn config(urls: &StackUrls) -> String {
    let idp = urls
        .issuers
        .first()
        .map(|issuer| idp_toml("main", issuer))
        .unwrap_or_default();
    // The login test's new user must be enabled; elsewhere `session create` makes users who
    // are not, unless the test enables them.
    let base = base_config(urls).replace(
        "open_signup = true",
        &format!(
            "open_signup = true\nnew_users_enabled = {}",
            !urls.issuers.is_empty()
        ),
    );
    format!(
        r#"{base}
[token]
enabled = true
encryption_key_env = "{TOKEN_KEY_VAR}"
{idp}
[[client]]
client_id = "cli"
kind = "native"
redirect_uris = ["{NATIVE_REDIRECT}", "com.example.cli:/callback"]
audience = "{API}"
scopes = ["read", "write"]

[[client]]
client_id = "spa"
kind = "spa"
redirect_uris = ["{SPA_REDIRECT}"]
audience = "{API}"
scopes = ["read"]

[[route]]
path_prefix = "/v1/"
access = "authenticated"
api = true
bearer = {{ issuers = ["{base_url}"], audiences = ["{API}"] }}

[[route]]
path_prefix = "/v2/"
access = "authenticated"
api = true
bearer = {{ issuers = ["{base_url}"], audiences = ["{OTHER_API}"] }}

[[route]]
path_prefix = "/v3/"
access = "authenticated"
api = true
bearer = {{ issuers = ["{base_url}"], audiences = ["{API}"], scopes = ["write"] }}

[[route]]
path_prefix = "/v4/"
access = "authenticated"
api = true
session = false
bearer = {{ issuers = ["{base_url}"], audiences = ["internal"] }}
{usual}"#,
        base_url = urls.base,
        usual = support::ROUTES
    )
}

async fn stack(backend: Backend, with_idp: bool) -> Stack {
    Stack::start_with(
        backend,
        StackOptions {
            providers: if with_idp {
                vec![Vec::new()]
            } else {
                Vec::new()
            },
            config: Box::new(config),
            env: vec![(
                TOKEN_KEY_VAR.to_owned(),
                base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
            )],
            ..StackOptions::default()
        },
    )
    .await
}

/// A PKCE pair: a fresh verifier and its S256 challenge (computed here, independently).
fn pkce() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The usual authorization request of the native app.
fn native_request(redirect_uri: &str, challenge: &str, state: &str) -> Vec<(String, String)> {
    [
        ("response_type", "code"),
        ("client_id", "cli"),
        ("redirect_uri", redirect_uri),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", state),
        ("scope", "read"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

async fn authorize(stack: &Stack, cookie: Option<&str>, params: &[(String, String)]) -> Response {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let target = format!("/auth/authorize?{}", query(&pairs));
    let cookie = cookie.map(|c| format!("gatehouse={c}"));
    let mut headers = vec![("accept", support::BROWSER_ACCEPT)];
    if let Some(c) = &cookie {
        headers.push(("cookie", c.as_str()));
    }
    stack.get(&target, &headers).await
}

/// The query of a redirect to the app, as a map (panics if it does not go to `redirect_uri`).
fn redirected_to(r: &Response, redirect_uri: &str) -> std::collections::HashMap<String, String> {
    assert_eq!(r.status, 302, "{r:?}");
    let location = r.location().expect("Location");
    assert!(
        location.starts_with(&format!("{redirect_uri}?")),
        "{location} should go to {redirect_uri}"
    );
    Url::parse(location)
        .expect("absolute Location")
        .query_pairs()
        .into_owned()
        .collect()
}

/// A code for `cookie`'s user, at `redirect_uri` (the native app).
async fn code_for(stack: &Stack, cookie: &str, redirect_uri: &str, challenge: &str) -> String {
    let r = authorize(
        stack,
        Some(cookie),
        &native_request(redirect_uri, challenge, "st"),
    )
    .await;
    let q = redirected_to(&r, redirect_uri);
    assert_eq!(q.get("state").map(String::as_str), Some("st"));
    assert_eq!(q.get("iss"), Some(&stack.base), "RFC 9207 iss");
    q.get("code").cloned().expect("code")
}

async fn post_form(
    stack: &Stack,
    path: &str,
    pairs: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Response {
    support::send(
        stack.envoy.listener,
        "POST",
        path,
        headers,
        Some((
            "application/x-www-form-urlencoded",
            query(pairs).into_bytes(),
        )),
    )
    .await
}

async fn token(stack: &Stack, pairs: &[(&str, &str)]) -> Response {
    post_form(stack, "/auth/token", pairs, &[]).await
}

async fn exchange(
    stack: &Stack,
    client_id: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Response {
    token(
        stack,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(stack: &Stack, client_id: &str, refresh_token: &str) -> Response {
    token(
        stack,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// Access and refresh token for `cookie`'s user through the native app's whole flow.
async fn tokens_for(stack: &Stack, cookie: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let redirect = "http://127.0.0.1:40123/callback";
    let code = code_for(stack, cookie, redirect, &challenge).await;
    let r = exchange(stack, "cli", &code, redirect, &verifier).await;
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    (
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
    )
}

fn assert_oauth_error(r: &Response, status: u16, error: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.json()["error"], error, "{r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

fn jwt_part(jwt: &str, index: usize) -> Value {
    let part = jwt.split('.').nth(index).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

async fn user_id(stack: &Stack, email: &str) -> String {
    let show = stack.gatehouse.cli_ok(&["user", "show", email]).await;
    show.lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(|s| s.trim().to_owned())
        .expect("user id")
}

/// Audit events of one kind, as `gatehouse audit --json` lists them.
async fn audit(stack: &Stack, kind: &str) -> Vec<Value> {
    stack
        .gatehouse
        .cli_ok(&["audit", "--kind", kind, "--json"])
        .await
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit JSON"))
        .collect()
}

async fn metric(stack: &Stack, line_prefix: &str) -> u64 {
    let body = support::send(stack.gatehouse.admin, "GET", "/metrics", &[], None)
        .await
        .body;
    body.lines()
        .find_map(|l| {
            l.strip_prefix(line_prefix)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// === the tests ===

async fn native_code_flow_with_pkce(backend: Backend) {
    let stack = stack(backend, false).await;
    let alice = stack
        .gatehouse
        .enabled_session("alice@acme.test", &["dev"])
        .await;
    let alice_id = user_id(&stack, "alice@acme.test").await;
    let redirect = "http://127.0.0.1:51234/callback";

    // Wrong verifier: refused, and the code is spent.
    let (verifier, challenge) = pkce();
    let code = code_for(&stack, &alice, redirect, &challenge).await;
    let (other_verifier, _) = pkce();
    let r = exchange(&stack, "cli", &code, redirect, &other_verifier).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = exchange(&stack, "cli", &code, redirect, &verifier).await;
    assert_oauth_error(&r, 400, "invalid_grant");

    // Wrong redirect URI at the token endpoint (another port than the code's).
    let code = code_for(&stack, &alice, redirect, &challenge).await;
    let r = exchange(
        &stack,
        "cli",
        &code,
        "http://127.0.0.1:51235/callback",
        &verifier,
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_grant");

    // Another client cannot redeem it.
    let code = code_for(&stack, &alice, redirect, &challenge).await;
    let r = exchange(&stack, "spa", &code, redirect, &verifier).await;
    assert_oauth_error(&r, 400, "invalid_grant");

    // Wrong redirect URI at authorize: a 400 page, never a redirect to it.
    let r = authorize(
        &stack,
        Some(&alice),
        &native_request("http://127.0.0.1:51234/elsewhere", &challenge, "st"),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.location().is_none());

    // The real thing.
    let code = code_for(&stack, &alice, redirect, &challenge).await;
    let r = exchange(&stack, "cli", &code, redirect, &verifier).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "read");
    let access = body["access_token"].as_str().expect("access token");
    let refresh_token = body["refresh_token"].as_str().expect("refresh token");
    assert!(refresh_token.len() >= 43, "at least 256 bits, base64url");
    let header = jwt_part(access, 0);
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());
    let claims = jwt_part(access, 1);
    assert_eq!(claims["iss"], stack.base.as_str());
    assert_eq!(claims["sub"], alice_id.as_str());
    assert_eq!(claims["aud"], API);
    assert_eq!(claims["client_id"], "cli");
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["email"], "alice@acme.test");
    assert_eq!(claims["roles"], serde_json::json!(["dev"]));
    assert!(claims["jti"].is_string());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    // The refresh token works…
    let r = refresh(&stack, "cli", refresh_token).await;
    assert_eq!(r.status, 200, "{r:?}");
    let newer = r.json()["refresh_token"].as_str().unwrap().to_owned();

    // …until the code is replayed: refused, and what it gave is revoked (RFC 6749 §4.1.2).
    let r = exchange(&stack, "cli", &code, redirect, &verifier).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = refresh(&stack, "cli", &newer).await;
    assert_oauth_error(&r, 400, "invalid_grant");

    // Errors after the redirect URI is known go back to it, with state and iss.
    let mut plain = native_request(redirect, &challenge, "s1");
    plain.retain(|(k, _)| k != "code_challenge_method");
    plain.push(("code_challenge_method".into(), "plain".into()));
    let q = redirected_to(&authorize(&stack, Some(&alice), &plain).await, redirect);
    assert_eq!(q.get("error").map(String::as_str), Some("invalid_request"));
    assert_eq!(q.get("state").map(String::as_str), Some("s1"));
    assert_eq!(q.get("iss"), Some(&stack.base));
    assert!(!q.contains_key("code"));
    let mut implicit = native_request(redirect, &challenge, "s2");
    implicit[0].1 = "token".into();
    let q = redirected_to(&authorize(&stack, Some(&alice), &implicit).await, redirect);
    assert_eq!(
        q.get("error").map(String::as_str),
        Some("unsupported_response_type")
    );
    let mut no_pkce = native_request(redirect, &challenge, "s3");
    no_pkce.retain(|(k, _)| !k.starts_with("code_challenge"));
    let q = redirected_to(&authorize(&stack, Some(&alice), &no_pkce).await, redirect);
    assert_eq!(q.get("error").map(String::as_str), Some("invalid_request"));
    let mut admin_scope = native_request(redirect, &challenge, "s4");
    admin_scope.retain(|(k, _)| k != "scope");
    admin_scope.push(("scope".into(), "read admin".into()));
    let q = redirected_to(
        &authorize(&stack, Some(&alice), &admin_scope).await,
        redirect,
    );
    assert_eq!(q.get("error").map(String::as_str), Some("invalid_scope"));

    // A private-use scheme redirect, exact.
    let q = redirected_to(
        &authorize(
            &stack,
            Some(&alice),
            &native_request("com.example.cli:/callback", &challenge, "s5"),
        )
        .await,
        "com.example.cli:/callback",
    );
    assert!(q.contains_key("code"));

    // Audited and counted.
    let authorized = audit(&stack, "app_authorized").await;
    assert!(authorized.len() >= 5, "{authorized:?}");
    assert_eq!(authorized[0]["outcome"], "success");
    assert_eq!(authorized[0]["email"], "alice@acme.test");
    let issued = audit(&stack, "app_token_issued").await;
    assert_eq!(issued.len(), 2, "one exchange and one refresh: {issued:?}");
    assert_eq!(
        audit(&stack, "app_token_revoked").await.len(),
        1,
        "the replay"
    );
    assert_eq!(
        metric(
            &stack,
            "gatehouse_app_tokens_total{grant=\"authorization_code\",result=\"issued\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            &stack,
            "gatehouse_app_tokens_total{grant=\"authorization_code\",result=\"invalid_grant\"}"
        )
        .await,
        5
    );
}

async fn redirect_uris_clients_and_cors(backend: Backend) {
    let stack = stack(backend, false).await;
    let alice = stack
        .gatehouse
        .enabled_session("alice@acme.test", &[])
        .await;
    let (verifier, challenge) = pkce();

    // Native: the loopback URI on any port, IPv4 as registered (not localhost, not [::1]).
    for port in [1025, 40000, 65535] {
        let redirect = format!("http://127.0.0.1:{port}/callback");
        let code = code_for(&stack, &alice, &redirect, &challenge).await;
        let r = exchange(&stack, "cli", &code, &redirect, &verifier).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    for refused in [
        "http://localhost:40000/callback",
        "http://[::1]:40000/callback",
        "http://127.0.0.1:40000/callback/x",
        "https://127.0.0.1:40000/callback",
        "http://127.0.0.1:40000@evil.test/callback",
    ] {
        let r = authorize(
            &stack,
            Some(&alice),
            &native_request(refused, &challenge, "st"),
        )
        .await;
        assert_eq!(r.status, 400, "{refused}: {r:?}");
        assert!(r.location().is_none(), "{refused}");
    }

    // SPA: exact, port included.
    let spa = |redirect: &str| {
        let mut params = native_request(redirect, &challenge, "st");
        params[1].1 = "spa".into();
        params
    };
    let q = redirected_to(
        &authorize(&stack, Some(&alice), &spa(SPA_REDIRECT)).await,
        SPA_REDIRECT,
    );
    let code = q.get("code").expect("code");
    let r = exchange(&stack, "spa", code, SPA_REDIRECT, &verifier).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = authorize(&stack, Some(&alice), &spa("http://127.0.0.1:3001/cb")).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.location().is_none());

    // Unknown client: a page at authorize, 401 at the token endpoint.
    let mut unknown = native_request("http://127.0.0.1:40000/callback", &challenge, "st");
    unknown[1].1 = "nope".into();
    let r = authorize(&stack, Some(&alice), &unknown).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.location().is_none());
    let r = refresh(&stack, "nope", &"A".repeat(43)).await;
    assert_oauth_error(&r, 401, "invalid_client");
    let r = token(
        &stack,
        &[("grant_type", "client_credentials"), ("client_id", "cli")],
    )
    .await;
    assert_oauth_error(&r, 400, "unsupported_grant_type");
    let r = support::send(
        stack.envoy.listener,
        "POST",
        "/auth/token",
        &[],
        Some((
            "application/json",
            b"{\"grant_type\":\"refresh_token\"}".to_vec(),
        )),
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");

    // A user who is not enabled gets the welcome page, not a code.
    let carol = stack.gatehouse.session_for("carol@acme.test").await;
    let r = authorize(
        &stack,
        Some(&carol),
        &native_request("http://127.0.0.1:40000/callback", &challenge, "st"),
    )
    .await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(r.location(), Some("/auth/welcome"));

    // CORS: the SPA's origin only, never with credentials.
    for path in ["/auth/token", "/auth/revoke"] {
        let r = support::send(
            stack.envoy.listener,
            "OPTIONS",
            path,
            &[
                ("origin", SPA_ORIGIN),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            None,
        )
        .await;
        assert!(matches!(r.status, 200 | 204), "{path}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some(SPA_ORIGIN));
        assert!(
            r.header("access-control-allow-methods")
                .is_some_and(|m| m.contains("POST"))
        );
        assert_eq!(r.header("access-control-allow-credentials"), None);
        for other in ["https://evil.test", "http://127.0.0.1:40000", "null"] {
            let r = support::send(
                stack.envoy.listener,
                "OPTIONS",
                path,
                &[("origin", other), ("access-control-request-method", "POST")],
                None,
            )
            .await;
            assert_eq!(r.header("access-control-allow-origin"), None, "{other}");
        }
    }
    let r = post_form(
        &stack,
        "/auth/token",
        &[("grant_type", "refresh_token"), ("client_id", "spa")],
        &[("origin", SPA_ORIGIN)],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_request");
    assert_eq!(r.header("access-control-allow-origin"), Some(SPA_ORIGIN));
    let r = post_form(
        &stack,
        "/auth/token",
        &[("grant_type", "refresh_token"), ("client_id", "spa")],
        &[("origin", "https://evil.test")],
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), None);

    // The metadata document names the endpoints.
    let meta = stack
        .get("/.well-known/oauth-authorization-server", &[])
        .await
        .json();
    assert_eq!(meta["issuer"], stack.base.as_str());
    assert_eq!(
        meta["token_endpoint"],
        format!("{}/auth/token", stack.base).as_str()
    );
    assert_eq!(
        meta["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
}

async fn access_tokens_on_bearer_routes(backend: Backend) {
    let stack = stack(backend, false).await;
    let alice = stack
        .gatehouse
        .enabled_session("alice@acme.test", &["dev"])
        .await;
    let alice_id = user_id(&stack, "alice@acme.test").await;
    let (access, refresh_token) = tokens_for(&stack, &alice).await;
    let auth = bearer(&access);

    let r = stack.get("/v1/orders", &[("authorization", &auth)]).await;
    assert!(r.reached_upstream(), "{r:?}");
    assert_eq!(
        r.upstream_header("x-gatehouse-user-id"),
        Some(alice_id.clone())
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-roles").as_deref(),
        Some("dev")
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-issuer"),
        Some(stack.base.clone())
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-subject"),
        Some(alice_id.clone())
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-scope").as_deref(),
        Some("read")
    );

    // Another audience's route: 401.
    let r = stack.get("/v2/orders", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|w| w.contains("invalid_token"))
    );
    // A scope the token lacks: 403.
    let r = stack.get("/v3/orders", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 403, "{r:?}");
    // Tampered: 401.
    let mut parts: Vec<String> = access.split('.').map(String::from).collect();
    let mut claims = jwt_part(&access, 1);
    claims["sub"] = Value::String(uuid::Uuid::new_v4().to_string());
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = parts.join(".");
    let r = stack
        .get("/v1/orders", &[("authorization", &bearer(&forged))])
        .await;
    assert_eq!(r.status, 401, "{r:?}");

    // The minted upstream token has the same issuer and keys, but is no access token: an
    // upstream that received one cannot present it at the edge.
    let cookie = format!("gatehouse={alice}");
    let r = stack.get("/app", &[("cookie", &cookie)]).await;
    let minted = r.upstream_header("x-gatehouse-jwt").expect("minted token");
    assert_eq!(jwt_part(&minted, 1)["aud"], "internal");
    let r = stack
        .get("/v4/orders", &[("authorization", &bearer(&minted))])
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|w| w.contains("at+jwt")),
        "{r:?}"
    );

    // A rotated key verifies with no restart: the CLI rotates, the next refresh signs with the
    // new key, and the route accepts it (and still the old one).
    let old_kid = jwt_part(&access, 0)["kid"].as_str().unwrap().to_owned();
    let kid = stack.gatehouse.cli_ok(&["keys", "rotate", "--now"]).await;
    assert_ne!(kid, old_kid);
    let r = refresh(&stack, "cli", &refresh_token).await;
    assert_eq!(r.status, 200, "{r:?}");
    let rotated = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(jwt_part(&rotated, 0)["kid"], kid.as_str());
    let r = stack
        .get("/v1/orders", &[("authorization", &bearer(&rotated))])
        .await;
    assert!(r.reached_upstream(), "{r:?}");
    assert_eq!(r.upstream_header("x-gatehouse-user-id"), Some(alice_id));
    let r = stack.get("/v1/orders", &[("authorization", &auth)]).await;
    assert!(r.reached_upstream(), "the old key still verifies: {r:?}");
}

async fn refresh_rotates_and_reuse_revokes_the_family(backend: Backend) {
    let stack = stack(backend, false).await;
    let alice = stack
        .gatehouse
        .enabled_session("alice@acme.test", &[])
        .await;
    let (_, first) = tokens_for(&stack, &alice).await;

    // Each use rotates.
    let r = refresh(&stack, "cli", &first).await;
    assert_eq!(r.status, 200, "{r:?}");
    let second = r.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert!(r.json()["access_token"].is_string());
    let r = refresh(&stack, "cli", &second).await;
    assert_eq!(r.status, 200, "{r:?}");
    let third = r.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(third, second);

    // Another client cannot use it, and trying changes nothing.
    let r = refresh(&stack, "spa", &third).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    // Nor can it widen the scope.
    let r = token(
        &stack,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "cli"),
            ("refresh_token", &third),
            ("scope", "read write"),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_scope");

    // An old one comes back: reuse. The family is revoked, the newest token fails too.
    assert!(audit(&stack, "refresh_token_reused").await.is_empty());
    let r = refresh(&stack, "cli", &first).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = refresh(&stack, "cli", &third).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let reused = audit(&stack, "refresh_token_reused").await;
    assert_eq!(reused.len(), 1, "{reused:?}");
    assert_eq!(reused[0]["outcome"], "failure");
    assert_eq!(reused[0]["email"], "alice@acme.test");
    assert_eq!(
        metric(
            &stack,
            "gatehouse_app_tokens_total{grant=\"refresh_token\",result=\"reused\"}"
        )
        .await,
        1
    );

    // Other families of the same user are not affected.
    let (_, other) = tokens_for(&stack, &alice).await;
    let r = refresh(&stack, "cli", &other).await;
    assert_eq!(r.status, 200, "{r:?}");
}

async fn revocation(backend: Backend) {
    let stack = stack(backend, false).await;
    let alice = stack
        .gatehouse
        .enabled_session("alice@acme.test", &[])
        .await;
    let (access, first) = tokens_for(&stack, &alice).await;
    let r = refresh(&stack, "cli", &first).await;
    let second = r.json()["refresh_token"].as_str().unwrap().to_owned();

    // Revoking the current token ends the family.
    let r = post_form(
        &stack,
        "/auth/revoke",
        &[
            ("token", &second),
            ("token_type_hint", "refresh_token"),
            ("client_id", "cli"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = refresh(&stack, "cli", &second).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let revoked = audit(&stack, "app_token_revoked").await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["outcome"], "success");

    // Unknown tokens, access tokens, garbage: 200 all the same (RFC 7009 §2.2).
    for unknown in [&"A".repeat(43), &access, "garbage"] {
        let r = post_form(
            &stack,
            "/auth/revoke",
            &[("token", unknown), ("client_id", "cli")],
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    // A token of another client is not revoked by it.
    let (_, mine) = tokens_for(&stack, &alice).await;
    let r = post_form(
        &stack,
        "/auth/revoke",
        &[("token", &mine), ("client_id", "spa")],
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(refresh(&stack, "cli", &mine).await.status, 200);
    // The client must name itself.
    let r = post_form(&stack, "/auth/revoke", &[("token", "x")], &[]).await;
    assert_oauth_error(&r, 400, "invalid_request");
    let r = post_form(
        &stack,
        "/auth/revoke",
        &[("token", "x"), ("client_id", "nope")],
        &[],
    )
    .await;
    assert_oauth_error(&r, 401, "invalid_client");
}

async fn disable_and_session_revoke_end_refresh_at_once(backend: Backend) {
    let stack = stack(backend, false).await;
    let alice = stack
        .gatehouse
        .enabled_session("alice@acme.test", &[])
        .await;
    let (access, refresh_token) = tokens_for(&stack, &alice).await;
    let auth = bearer(&access);
    assert!(
        stack
            .get("/v1/orders", &[("authorization", &auth)])
            .await
            .reached_upstream()
    );

    stack
        .gatehouse
        .cli_ok(&["user", "disable", "alice@acme.test"])
        .await;
    let r = refresh(&stack, "cli", &refresh_token).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = stack.get("/v1/orders", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"], "account_disabled");
    // Enabling again does not bring the revoked family back.
    stack
        .gatehouse
        .cli_ok(&["user", "enable", "alice@acme.test"])
        .await;
    let r = refresh(&stack, "cli", &refresh_token).await;
    assert_oauth_error(&r, 400, "invalid_grant");

    // `session revoke --user` ends that user's refresh tokens, and only theirs.
    let bob = stack.gatehouse.enabled_session("bob@acme.test", &[]).await;
    let dave = stack.gatehouse.enabled_session("dave@acme.test", &[]).await;
    let (_, bobs) = tokens_for(&stack, &bob).await;
    let (_, daves) = tokens_for(&stack, &dave).await;
    stack
        .gatehouse
        .cli_ok(&["session", "revoke", "--user", "bob@acme.test"])
        .await;
    let r = refresh(&stack, "cli", &bobs).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = refresh(&stack, "cli", &daves).await;
    assert_eq!(r.status, 200, "{r:?}");
    let daves = r.json()["refresh_token"].as_str().unwrap().to_owned();
    // A code whose session was revoked is worth nothing either.
    let (verifier, challenge) = pkce();
    let redirect = "http://127.0.0.1:40123/callback";
    let code = code_for(&stack, &dave, redirect, &challenge).await;
    stack
        .gatehouse
        .cli_ok(&["session", "revoke", "--all"])
        .await;
    let r = exchange(&stack, "cli", &code, redirect, &verifier).await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = refresh(&stack, "cli", &daves).await;
    assert_oauth_error(&r, 400, "invalid_grant");
}

async fn authorize_without_a_session_signs_in_first(backend: Backend) {
    let stack = stack(backend, true).await;
    let (verifier, challenge) = pkce();
    let redirect = "http://127.0.0.1:45678/callback";
    let params = native_request(redirect, &challenge, "xyz");
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let start = format!("{}/auth/authorize?{}", stack.base, query(&pairs));

    let mut browser = Browser::new();
    let page = browser.navigate(&start).await;
    assert!(is_interaction(&page), "to the IdP: {:#?}", page.hops);
    assert!(
        page.hops
            .iter()
            .any(|h| h.contains("/auth/login?rd=%2Fauth%2Fauthorize%3F")),
        "{:#?}",
        page.hops
    );
    let form = account(&page, "alice");
    // Stop where the browser would hand the code to the app.
    let at_app = |_: &str, url: &Url| url.port() == Some(45678);
    let pending = browser
        .submit_until(&page, &form, &[], &at_app)
        .await
        .expect_err("should end at the app's loopback redirect");
    let q: std::collections::HashMap<String, String> =
        pending.url.query_pairs().into_owned().collect();
    assert!(
        pending.url.as_str().starts_with(redirect),
        "{}",
        pending.url
    );
    assert_eq!(q.get("state").map(String::as_str), Some("xyz"));
    assert_eq!(q.get("iss"), Some(&stack.base));
    let code = q.get("code").expect("code");
    let r = exchange(&stack, "cli", code, redirect, &verifier).await;
    assert_eq!(r.status, 200, "{r:?}");
    let claims = jwt_part(r.json()["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["email"], "alice@acme.test");
    assert_eq!(
        claims["sub"],
        user_id(&stack, "alice@acme.test").await.as_str()
    );

    // Signed in now: the next authorization needs no IdP round trip.
    let (verifier, challenge) = pkce();
    let again = native_request(redirect, &challenge, "again");
    let pairs: Vec<(&str, &str)> = again
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let pending = browser
        .navigate_until(
            &format!("{}/auth/authorize?{}", stack.base, query(&pairs)),
            &at_app,
        )
        .await
        .expect_err("straight to the app");
    assert_eq!(pending.hops.len(), 1, "{:#?}", pending.hops);
    let q: std::collections::HashMap<String, String> =
        pending.url.query_pairs().into_owned().collect();
    let r = exchange(&stack, "cli", q.get("code").unwrap(), redirect, &verifier).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// Issue 17's race: the same refresh token presented 20 times at once. Exactly one new pair;
/// the rest are reuse, the family is revoked, and the reuse is recorded once (it was recorded
/// 2–6 times on PostgreSQL: each loser that had read the token before the winner committed
/// wrote its own event).
async fn one_refresh_token_twenty_times_at_once(backend: Backend) {
    let stack = stack(backend, false).await;
    let alice = stack
        .gatehouse
        .enabled_session("alice@acme.test", &[])
        .await;
    // Two rounds: the per-account token-call limit (60 a minute) allows no more.
    for round in 0..2 {
        let (_, presented) = tokens_for(&stack, &alice).await;
        let body = query(&[
            ("grant_type", "refresh_token"),
            ("client_id", "cli"),
            ("refresh_token", &presented),
        ]);
        let listener = stack.envoy.listener;
        let mut tasks = tokio::task::JoinSet::new();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(20));
        for _ in 0..20 {
            let body = body.clone();
            let start = start.clone();
            tasks.spawn(async move {
                start.wait().await;
                support::send(
                    listener,
                    "POST",
                    "/auth/token",
                    &[],
                    Some(("application/x-www-form-urlencoded", body.into_bytes())),
                )
                .await
            });
        }
        let mut issued = Vec::new();
        let mut refused = 0;
        while let Some(r) = tasks.join_next().await {
            let r = r.expect("task");
            match r.status {
                200 => issued.push(r.json()["refresh_token"].as_str().unwrap().to_owned()),
                400 => {
                    assert_eq!(r.json()["error"], "invalid_grant", "{r:?}");
                    refused += 1;
                }
                other => panic!("round {round}: {other} {r:?}"),
            }
        }
        assert_eq!(issued.len(), 1, "round {round}: exactly one new pair");
        assert_eq!(refused, 19, "round {round}");
        // The family is revoked: the one new token is refused too.
        let r = refresh(&stack, "cli", &issued[0]).await;
        assert_oauth_error(&r, 400, "invalid_grant");
        let reused = audit(&stack, "refresh_token_reused").await;
        assert_eq!(
            reused.len(),
            round + 1,
            "round {round}: one event per reuse: {reused:#?}"
        );
    }
}
