//! Tokens, end to end through a real Envoy: bearer-JWT routes per tenant against issuers the
//! test controls, tenant-scoped routes, the minted upstream token verified by Envoy's own
//! `jwt_authn`, and impersonation; on SQLite and PostgreSQL.

use crate::support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::email::Email;
use gatehouse::provisioning::{self, EmailTrust};
use gatehouse::store::ProvisionRequest;
use serde_json::{Value, json};
use support::browser::{Browser, forms};
use support::issuer::{TestIssuer, now, sign_rs256};
use support::{Backend, Stack, StackOptions, base_config};

on_both_backends!(
    bearer_routes_take_only_their_tenants_tokens,
    tenant_scoped_routes,
    minted_tokens_verify_in_envoy_jwt_authn,
    impersonation_end_to_end,
);

const API: &str = "https://api.test";
/// The key that encrypts signing keys in the tests' databases.
const TOKEN_KEY_VAR: &str = "GH_TEST_TOKEN_KEY";

fn token_key() -> String {
    base64::engine::general_purpose::STANDARD.encode([42u8; 32])
}

/// `[token]` and `[impersonation]` on, plus `routes` before the usual table.
fn config(urls: &support::StackUrls, routes: &str) -> String {
    format!(
        r#"{base}
[token]
enabled = true
encryption_key_env = "{TOKEN_KEY_VAR}"

[impersonation]
enabled = true
role = "impersonator"
{routes}
{usual}"#,
        base = base_config(urls),
        usual = support::ROUTES
    )
}

async fn stack(
    backend: Backend,
    routes: String,
    envoy_edits: Vec<(&'static str, &'static str)>,
) -> Stack {
    Stack::start_with(
        backend,
        StackOptions {
            config: Box::new(move |urls| config(urls, &routes)),
            env: vec![(TOKEN_KEY_VAR.to_owned(), token_key())],
            envoy_edits,
            ..StackOptions::default()
        },
    )
    .await
}

/// Links an IdP identity `(issuer, sub)` to the user with `email` (created if new), as a
/// first login would.
async fn link_identity(stack: &Stack, issuer: &str, sub: &str, email: &str) {
    let store = stack.db.store().await;
    let email = Email::parse(email).unwrap();
    let vouching = provisioning::vouch("main", &email, Some(true), &EmailTrust::Any, true);
    store
        .provision(&ProvisionRequest {
            issuer: issuer.to_owned(),
            subject: sub.to_owned(),
            idp: "main".into(),
            email: Some(email),
            email_verified: Some(true),
            vouching,
            name: None,
            new_users_enabled: false,
            may_create: true,
            ip: None,
            user_agent: None,
            now: now(),
        })
        .await
        .expect("provision");
    store.close().await;
}

async fn user_id(stack: &Stack, email: &str) -> String {
    let show = stack.gatehouse.cli_ok(&["user", "show", email]).await;
    show.lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(|s| s.trim().to_owned())
        .expect("user id")
}

async fn metric(stack: &Stack, name: &str) -> u64 {
    let body = support::send(stack.gatehouse.admin, "GET", "/metrics", &[], None)
        .await
        .body;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

fn www_authenticate(r: &support::Response) -> String {
    r.header("www-authenticate").unwrap_or_default().to_owned()
}

// === bearer routes ===

async fn bearer_routes_take_only_their_tenants_tokens(backend: Backend) {
    let b2b = TestIssuer::start().await;
    let b2c = TestIssuer::start().await;
    let routes = format!(
        r#"
[[route]]
path_prefix = "/api/admin/"
access = "authenticated"
roles = ["admin"]
api = true
bearer = {{ issuers = ["{b2b}"], audiences = ["{API}"] }}

[[route]]
path_prefix = "/api/"
access = "authenticated"
api = true
bearer = {{ issuers = ["{b2b}"], audiences = ["{API}"], scopes = ["read"] }}

[[route]]
path_prefix = "/partner/"
access = "authenticated"
session = false
bearer = {{ issuers = ["{b2b}", "{b2c}"], audiences = ["https://partner.test"], unknown_subjects = "anonymous" }}
"#,
        b2b = b2b.issuer,
        b2c = b2c.issuer
    );
    let stack = stack(backend, routes, Vec::new()).await;
    link_identity(&stack, &b2b.issuer, "alice-sub", "alice@acme.test").await;
    let cookie = format!(
        "gatehouse={}",
        stack
            .gatehouse
            .enabled_session("alice@acme.test", &["dev"])
            .await
    );
    let alice = user_id(&stack, "alice@acme.test").await;

    // A valid token: the same local user, headers and all, as her cookie.
    let token = b2b.access_token("alice-sub", API, "read write");
    let auth = bearer(&token);
    let r = stack.get("/api/orders", &[("authorization", &auth)]).await;
    assert!(r.reached_upstream(), "{r:?}");
    assert_eq!(
        r.upstream_header("x-gatehouse-user-id"),
        Some(alice.clone())
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-roles").as_deref(),
        Some("dev")
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-scope").as_deref(),
        Some("read write")
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-subject").as_deref(),
        Some("alice-sub")
    );
    assert!(r.upstream_header("x-gatehouse-jwt").is_some());
    assert_eq!(
        r.upstream_header("authorization"),
        Some(auth.clone()),
        "the token passes on to the API"
    );
    let by_cookie = stack.get("/api/orders", &[("cookie", &cookie)]).await;
    assert_eq!(
        by_cookie.upstream_header("x-gatehouse-user-id"),
        Some(alice.clone())
    );

    // Repeated: served from the cache, not verified again.
    let verified = metric(&stack, "gatehouse_bearer_verifications_total").await;
    for _ in 0..5 {
        assert!(
            stack
                .get("/api/orders", &[("authorization", &auth)])
                .await
                .reached_upstream()
        );
    }
    assert_eq!(
        metric(&stack, "gatehouse_bearer_verifications_total").await,
        verified,
        "a repeated token is not verified again"
    );

    // Each of these gets 401 invalid_token, never a redirect (the browser Accept is there).
    let c = b2b.claims("alice-sub", API, "read");
    let with = |changes: Value| {
        let mut c = c.clone();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let none_token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(c.to_string())
    );
    let public_key = support::issuer::public_jwk(0)["n"]
        .as_str()
        .unwrap()
        .to_owned();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("issuer-key-1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &c,
        &jsonwebtoken::EncodingKey::from_secret(public_key.as_bytes()),
    )
    .unwrap();
    let invalid: Vec<(&str, String)> = vec![
        (
            "unknown issuer",
            b2b.sign(&with(json!({"iss": "https://evil.test/"}))),
        ),
        (
            "the other tenant",
            b2c.access_token("alice-sub", API, "read"),
        ),
        (
            "wrong audience",
            b2b.sign(&with(json!({"aud": "https://other.test"}))),
        ),
        ("expired", b2b.sign(&with(json!({"exp": now() - 600})))),
        (
            "not yet valid",
            b2b.sign(&with(json!({"nbf": now() + 600}))),
        ),
        ("alg none", none_token),
        ("HS256 with the public key", hs256),
        ("unknown kid", sign_rs256(1, Some("no-such-key"), &c)),
        ("bad signature", sign_rs256(1, Some("issuer-key-1"), &c)),
        (
            "an ID token",
            b2b.sign(&with(json!({"nonce": "n", "at_hash": "x", "scope": null}))),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in invalid {
        let auth = bearer(&token);
        let r = stack
            .get(
                "/api/orders",
                &[
                    ("authorization", &auth),
                    ("accept", support::BROWSER_ACCEPT),
                ],
            )
            .await;
        assert_eq!(r.status, 401, "{what}: {r:?}");
        assert_eq!(r.json()["error"], "invalid_token", "{what}");
        assert!(
            www_authenticate(&r).contains("error=\"invalid_token\""),
            "{what}: {r:?}"
        );
    }
    // A token decides: a valid cookie beside a bad token does not let it in.
    let r = stack
        .get(
            "/api/orders",
            &[("authorization", "Bearer x.y.z"), ("cookie", &cookie)],
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");

    // A missing scope: 403 insufficient_scope naming it.
    let auth = bearer(&b2b.access_token("alice-sub", API, "write"));
    let r = stack.get("/api/orders", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"], "insufficient_scope");
    assert!(
        www_authenticate(&r).contains("error=\"insufficient_scope\", scope=\"read\""),
        "{r:?}"
    );
    // Roles apply to bearer users as to sessions.
    let auth = bearer(&b2b.access_token("alice-sub", API, "read"));
    let r = stack.get("/api/admin/x", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 403, "{r:?}");
    stack
        .gatehouse
        .cli_ok(&["user", "grant", "alice@acme.test", "admin"])
        .await;
    let r = stack.get("/api/admin/x", &[("authorization", &auth)]).await;
    assert!(
        r.reached_upstream(),
        "a role grant reaches the cached bearer user: {r:?}"
    );
    // Disabling the user ends bearer access at once, like sessions.
    stack
        .gatehouse
        .cli_ok(&["user", "disable", "alice@acme.test"])
        .await;
    let r = stack.get("/api/orders", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"], "account_disabled");

    // An unknown subject: denied, or anonymous where the route says so.
    let stranger = bearer(&b2b.access_token("nobody", API, "read"));
    let r = stack
        .get("/api/orders", &[("authorization", &stranger)])
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"], "unknown_subject");
    let partner = bearer(&b2c.access_token("partner-7", "https://partner.test", "feed"));
    let r = stack
        .get(
            "/partner/feed",
            &[
                ("authorization", &partner),
                ("x-gatehouse-user-id", "spoofed"),
            ],
        )
        .await;
    assert!(r.reached_upstream(), "{r:?}");
    assert_eq!(
        r.upstream_header("x-gatehouse-subject").as_deref(),
        Some("partner-7")
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-issuer"),
        Some(b2c.issuer.clone())
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-scope").as_deref(),
        Some("feed")
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-user-id"),
        None,
        "no local user id"
    );
    assert_eq!(r.upstream_header("x-gatehouse-jwt"), None);
    // session = false: a cookie alone does not open it.
    let r = stack.get("/partner/feed", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 401, "{r:?}");
}

/// The issuer rotates its keys: new tokens work without a restart. The issuer goes down:
/// the keys already fetched keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_key_rotation_and_outage() {
    let issuer = TestIssuer::start().await;
    let routes = format!(
        r#"
[[route]]
path_prefix = "/api/"
access = "authenticated"
api = true
bearer = {{ issuers = ["{}"], audiences = ["{API}"], unknown_subjects = "anonymous" }}
"#,
        issuer.issuer
    );
    let stack = stack(Backend::Sqlite, routes, Vec::new()).await;
    let first = bearer(&issuer.access_token("s1", API, ""));
    assert!(
        stack
            .get("/api/x", &[("authorization", &first)])
            .await
            .reached_upstream()
    );

    issuer.rotate();
    let rotated = bearer(&issuer.access_token("s2", API, ""));
    let r = stack.get("/api/x", &[("authorization", &rotated)]).await;
    assert!(
        r.reached_upstream(),
        "a rotated key is fetched on its first use: {r:?}"
    );

    issuer.set_down(true);
    let during_outage = bearer(&issuer.access_token("s3", API, ""));
    let r = stack
        .get("/api/x", &[("authorization", &during_outage)])
        .await;
    assert!(r.reached_upstream(), "cached keys keep working: {r:?}");
    let r = stack
        .get("/api/x", &[("authorization", &during_outage)])
        .await;
    assert!(
        r.reached_upstream(),
        "a verified token stays verified: {r:?}"
    );
    // The first token's key was withdrawn by the rotation: its cached verification no longer
    // counts.
    let r = stack.get("/api/x", &[("authorization", &first)]).await;
    assert_eq!(r.status, 401, "a withdrawn key's token: {r:?}");
    // A key the cache never had cannot be checked while the issuer is down: refused.
    let unknown = bearer(&sign_rs256(
        0,
        Some("issuer-key-9"),
        &issuer.claims("s4", API, ""),
    ));
    let r = stack.get("/api/x", &[("authorization", &unknown)]).await;
    assert_eq!(r.status, 401, "{r:?}");
}

// === tenant-scoped routes ===

async fn tenant_scoped_routes(backend: Backend) {
    let routes = r#"
[[route]]
path_regex = "/orgs/(?P<org>[^/]+)(/.*)?"
access = "authenticated"
org_param = "org"
org_admin_any = ["support"]
"#
    .to_owned();
    let stack = stack(backend, routes, Vec::new()).await;
    let acme = stack
        .gatehouse
        .cli_ok(&["org", "add", "Acme", "--domain", "acme.test"])
        .await;
    let globex = stack
        .gatehouse
        .cli_ok(&["org", "add", "Globex", "--domain", "globex.test"])
        .await;
    let alice = format!(
        "gatehouse={}",
        stack
            .gatehouse
            .enabled_session("alice@acme.test", &[])
            .await
    );
    let support = format!(
        "gatehouse={}",
        stack
            .gatehouse
            .enabled_session("help@acme.test", &["support"])
            .await
    );
    let cases = [
        (&alice, format!("/orgs/{acme}/projects"), 200),
        (
            &alice,
            format!("/orgs/{}/projects", acme.to_uppercase()),
            200,
        ),
        (&alice, format!("/orgs/{globex}/projects"), 403),
        (&alice, "/orgs/acme/projects".to_owned(), 403),
        (&support, format!("/orgs/{globex}/projects"), 200),
    ];
    for (cookie, path, status) in cases {
        let r = stack
            .get(&path, &[("cookie", cookie), ("accept", "application/json")])
            .await;
        assert_eq!(r.status, status, "{path}: {r:?}");
        assert_eq!(r.reached_upstream(), status == 200, "{path}");
    }
}

// === the minted token, verified by Envoy's jwt_authn ===

/// Envoy's `jwt_authn`, after ext_authz, requiring a valid `x-gatehouse-jwt` from gatehouse's
/// JWKS on every route that has an identity: an independent verifier of what gatehouse mints.
fn jwt_authn_filter(issuer: &str) -> String {
    format!(
        r#"          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                gatehouse:
                  issuer: "{issuer}"
                  audiences: ["internal"]
                  from_headers:
                  - name: x-gatehouse-jwt
                  forward: true
                  remote_jwks:
                    http_uri:
                      uri: "http://gatehouse/.well-known/jwks.json"
                      cluster: gatehouse_http
                      timeout: 1s
                    cache_duration: 1s
              rules:
              - match: {{ prefix: "/auth/" }}
              - match: {{ prefix: "/.well-known/" }}
              - match: {{ prefix: "/public/" }}
              - match: {{ prefix: "/" }}
                requires: {{ provider_name: gatehouse }}

          - name: envoy.filters.http.router"#
    )
}

async fn minted_tokens_verify_in_envoy_jwt_authn(backend: Backend) {
    // The issuer is the stack's public_url, known only once the stack has its port: start
    // gatehouse on a config that names Envoy's listener, then Envoy with the filter.
    let port = support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let filter: &'static str = Box::leak(jwt_authn_filter(&base).into_boxed_str());
    let stack = Stack::start_with(
        backend,
        StackOptions {
            config: Box::new(|urls| config(urls, "")),
            env: vec![(TOKEN_KEY_VAR.to_owned(), token_key())],
            envoy_edits: vec![("          - name: envoy.filters.http.router", filter)],
            listener_port: Some(port),
            ..StackOptions::default()
        },
    )
    .await;
    let alice = format!(
        "gatehouse={}",
        stack
            .gatehouse
            .enabled_session("alice@acme.test", &["dev"])
            .await
    );
    let r = stack.get("/app", &[("cookie", &alice)]).await;
    assert!(
        r.reached_upstream(),
        "jwt_authn accepted gatehouse's token: {r:?}"
    );
    let jwt = r.upstream_header("x-gatehouse-jwt").expect("minted token");
    let claims = claims_of(&jwt);
    assert_eq!(claims["sub"], user_id(&stack, "alice@acme.test").await);
    assert_eq!(claims["iss"], stack.base);
    assert_eq!(claims["aud"], "internal");
    assert_eq!(claims["email"], "alice@acme.test");
    assert_eq!(claims["roles"], json!(["dev"]));
    assert_eq!(claims["sid"].as_str().map(str::len), Some(16));
    assert!(claims.get("act").is_none());
    assert!(!jwt.contains(alice.trim_start_matches("gatehouse=")));
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let old_kid = header["kid"].as_str().unwrap().to_owned();

    // A cached session is not signed for again.
    let signed = metric(&stack, "gatehouse_tokens_signed_total").await;
    for _ in 0..5 {
        let again = stack.get("/app", &[("cookie", &alice)]).await;
        assert_eq!(again.upstream_header("x-gatehouse-jwt"), Some(jwt.clone()));
    }
    assert_eq!(
        metric(&stack, "gatehouse_tokens_signed_total").await,
        signed
    );

    // A forged token is refused by jwt_authn (on a public route nothing is required, and
    // ext_authz removes client x-gatehouse-* anyway).
    let jwks = support::send(
        stack.gatehouse.http,
        "GET",
        "/.well-known/jwks.json",
        &[],
        None,
    )
    .await;
    assert_eq!(jwks.status, 200);
    assert!(
        jwks.header("cache-control")
            .unwrap_or_default()
            .contains("max-age")
    );
    let discovery = support::send(
        stack.gatehouse.http,
        "GET",
        "/.well-known/openid-configuration",
        &[],
        None,
    )
    .await
    .json();
    assert_eq!(discovery["issuer"], stack.base);

    // Rotate: the old key keeps verifying the tokens it signed; new sessions get the new key.
    let kid = stack.gatehouse.cli_ok(&["keys", "rotate", "--now"]).await;
    assert_ne!(kid, old_kid);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // Envoy's JWKS cache
    let bob = format!(
        "gatehouse={}",
        stack.gatehouse.enabled_session("bob@acme.test", &[]).await
    );
    let r = stack.get("/app", &[("cookie", &bob)]).await;
    assert!(r.reached_upstream(), "signed with the new key: {r:?}");
    let new_jwt = r.upstream_header("x-gatehouse-jwt").unwrap();
    let new_header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(new_jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(new_header["kid"], kid);
    let r = stack.get("/app", &[("cookie", &alice)]).await;
    assert!(
        r.reached_upstream(),
        "the old key's token still verifies: {r:?}"
    );
    assert_eq!(r.upstream_header("x-gatehouse-jwt"), Some(jwt));
    let published = jwks_kids(&stack).await;
    assert!(
        published.contains(&old_kid) && published.contains(&kid),
        "{published:?}"
    );
}

async fn jwks_kids(stack: &Stack) -> Vec<String> {
    support::send(
        stack.gatehouse.http,
        "GET",
        "/.well-known/jwks.json",
        &[],
        None,
    )
    .await
    .json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str().map(String::from))
        .collect()
}

// === impersonation ===

async fn impersonation_end_to_end(backend: Backend) {
    let stack = stack(backend, String::new(), Vec::new()).await;
    let gh = &stack.gatehouse;
    let support_token = gh
        .enabled_session("help@acme.test", &["impersonator", "dev"])
        .await;
    gh.enabled_session("carol@acme.test", &["dev"]).await;
    gh.enabled_session("boss@acme.test", &["admin"]).await;
    let plain_token = gh.enabled_session("plain@acme.test", &[]).await;
    let support_id = user_id(&stack, "help@acme.test").await;
    let carol_id = user_id(&stack, "carol@acme.test").await;
    let url = |path: &str| format!("{}{path}", stack.base);
    let host = "127.0.0.1";

    // No role: the page and the POST are refused.
    let mut plain = Browser::new();
    plain.set_cookie(host, "gatehouse", &plain_token);
    let page = plain.navigate(&url("/auth/impersonate")).await;
    assert_eq!(page.status(), 403, "{}", page.body());

    let mut help = Browser::new();
    help.set_cookie(host, "gatehouse", &support_token);
    let page = help.navigate(&url("/auth/impersonate")).await;
    assert_eq!(page.status(), 200, "{}", page.body());
    let form = forms(&page)
        .into_iter()
        .find(|f| f.fields.iter().any(|(k, _)| k == "csrf"))
        .expect("the form");
    assert!(
        form.fields.iter().any(|(k, v)| k == "csrf" && v.len() > 20),
        "a CSRF token in the form"
    );

    // Without (or with a wrong) CSRF token: 403.
    for bad in ["", "forged"] {
        let r = help
            .request(
                "POST",
                &url::Url::parse(&url("/auth/impersonate")).unwrap(),
                Some(&format!("user=carol%40acme.test&csrf={bad}")),
                Some(&stack.base),
            )
            .await;
        assert_eq!(r.status, 403, "csrf {bad:?}: {r:?}");
    }
    // A more privileged target: 403.
    let page_again = help
        .submit(&page, &form, &[("user", "boss@acme.test")])
        .await;
    assert_eq!(page_again.status(), 403, "{}", page_again.body());
    // The plain user with their own CSRF token: 403 (no role).
    let plain_csrf = gatehouse::broker::impersonation::csrf_token(
        &gatehouse::session::OpaqueToken::parse(&plain_token).unwrap(),
    );
    let r = plain
        .request(
            "POST",
            &url::Url::parse(&url("/auth/impersonate")).unwrap(),
            Some(&format!("user=carol%40acme.test&csrf={plain_csrf}")),
            Some(&stack.base),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");

    // Start: carol's identity reaches the upstream, with the impersonator's id.
    let started = help
        .submit(&page, &form, &[("user", "carol@acme.test")])
        .await;
    assert!(started.response.reached_upstream(), "{:#?}", started.hops);
    let r = help.navigate(&url("/app")).await.response;
    assert_eq!(
        r.upstream_header("x-gatehouse-user-id"),
        Some(carol_id.clone())
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-email").as_deref(),
        Some("carol@acme.test")
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-impersonator-id"),
        Some(support_id.clone())
    );
    let claims = claims_of(&r.upstream_header("x-gatehouse-jwt").unwrap());
    assert_eq!(claims["sub"], carol_id);
    assert_eq!(claims["act"]["sub"], support_id);
    let cookies = r.upstream_header("cookie").unwrap_or_default();
    assert!(!cookies.contains("gatehouse"), "{cookies}");
    let info = help.navigate(&url("/auth/userinfo")).await.response.json();
    assert_eq!(info["user_id"], carol_id);
    assert_eq!(info["impersonation"]["impersonator_id"], support_id);
    assert!(
        info["impersonation"]["banner"]
            .as_str()
            .unwrap_or_default()
            .contains("help@acme.test is acting as carol@acme.test"),
        "{info}"
    );

    // Stop: back to the impersonator's own session.
    let page = help.navigate(&url("/auth/impersonate")).await;
    let stop = forms(&page)
        .into_iter()
        .find(|f| f.action.path() == "/auth/impersonate/stop")
        .expect("the stop form");
    let stopped = help.submit(&page, &stop, &[]).await;
    assert!(stopped.response.reached_upstream(), "{:#?}", stopped.hops);
    let r = help.navigate(&url("/app")).await.response;
    assert_eq!(
        r.upstream_header("x-gatehouse-user-id"),
        Some(support_id.clone())
    );
    assert_eq!(r.upstream_header("x-gatehouse-impersonator-id"), None);

    // A role change on either side ends an impersonation: it was allowed for the roles both
    // had when it started.
    let again = help.navigate(&url("/auth/impersonate")).await;
    let form = forms(&again)
        .into_iter()
        .find(|f| f.action.path() == "/auth/impersonate")
        .expect("the form");
    help.submit(&again, &form, &[("user", "carol@acme.test")])
        .await;
    let r = help.navigate(&url("/app")).await.response;
    assert_eq!(
        r.upstream_header("x-gatehouse-user-id"),
        Some(carol_id.clone())
    );
    gh.cli_ok(&["user", "grant", "carol@acme.test", "billing"])
        .await;
    let r = stack
        .get(
            "/app",
            &[
                (
                    "cookie",
                    &format!("gatehouse={}", help.cookie(host, "gatehouse").unwrap()),
                ),
                ("accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(r.status, 401, "the impersonation session ended: {r:?}");
    // Signing out while impersonating ends the impersonator's own session too.
    let mut other = Browser::new();
    let own = gh
        .enabled_session("help2@acme.test", &["impersonator"])
        .await;
    other.set_cookie(host, "gatehouse", &own);
    let page = other.navigate(&url("/auth/impersonate")).await;
    let form = forms(&page)
        .into_iter()
        .find(|f| f.action.path() == "/auth/impersonate")
        .expect("the form");
    other
        .submit(&page, &form, &[("user", "plain@acme.test")])
        .await;
    other.navigate(&url("/auth/logout")).await;
    let r = stack
        .get(
            "/app",
            &[
                ("cookie", &format!("gatehouse={own}")),
                ("accept", "application/json"),
            ],
        )
        .await;
    assert_eq!(r.status, 401, "the impersonator's session ended: {r:?}");
    assert_eq!(other.cookie(host, "gatehouse-impersonator"), None);

    // The audit trail has both ids for the start, the stop and the refusals.
    let audit = gh.cli_ok(&["audit", "--json"]).await;
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for kind in ["impersonation_started", "impersonation_stopped"] {
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == kind && e["user_id"] == carol_id && e["actor"] == support_id),
            "{kind}: {audit}"
        );
    }
    let refused = events
        .iter()
        .filter(|e| e["kind"] == "impersonation_refused")
        .count();
    assert!(refused >= 4, "{audit}");
    let listed = gh
        .cli_ok(&["audit", "--kind", "impersonation_started"])
        .await;
    assert!(listed.contains("carol@acme.test"), "{listed}");
}
