//! Sign-in beyond the config file, end to end (browser model → real Envoy → gatehouse → real
//! OpenID Provider, tests/op), on SQLite and on PostgreSQL: per-organization sign-in settings
//! and sign-ups, step-up MFA per route and per org, IdP groups mapped to roles, back-channel
//! logout, and the brute-force limits.

use crate::support;

use serde_json::{Value, json};
use support::browser::{Browser, Form, Page, forms};
use support::op::{account, is_interaction};
use support::{Backend, Stack, StackOptions, StackUrls, base_config};

on_both_backends!(
    orgs_choose_their_idp_and_sign_ups_need_asking,
    step_up_to_mfa_on_a_route,
    an_org_that_requires_mfa_steps_up_every_route,
    idp_groups_map_to_roles_at_each_login,
    back_channel_logout_ends_sessions,
    limits_answer_429_and_flag_repeated_failures,
);

const HOST: &str = "127.0.0.1";
const MFA_ACR: &str = "urn:gatehouse:mfa";

/// Routes with step-up rules in front of the usual table.
const STEP_UP_ROUTES: &str = r#"
[[route]]
path_prefix = "/vault/"
access = "authenticated"
mfa = true

[[route]]
path_prefix = "/vault-api/"
access = "authenticated"
api = true
mfa = true
"#;

struct Options {
    open_signup: bool,
    /// Also configure `second` (OP 1), for an SSO customer's own IdP.
    second_idp: bool,
    /// Extra top-level TOML (e.g. a `[limits]` table).
    extra: &'static str,
}

/// `main` (OP 0, the default IdP, with MFA, groups and role mapping) and, when asked,
/// `second` (OP 1, listing only a partner's domain).
async fn stack(backend: Backend, options: Options) -> Stack {
    let providers = if options.second_idp { 2 } else { 1 };
    Stack::start_with(
        backend,
        StackOptions {
            providers: vec![vec![]; providers],
            config: Box::new(move |urls: &StackUrls| {
                let mut text = base_config(urls);
                if !options.open_signup {
                    text = text.replace("open_signup = true", "open_signup = false");
                }
                text.push_str(options.extra);
                text.push_str(support::admin::SECTION);
                text.push_str(&format!(
                    r#"
[[idp]]
name = "main"
issuer = "{main}"
client_id = "gh-query"
client_secret = "gh-query-secret"
scopes = ["openid", "email", "profile", "groups"]
mfa_acr_values = ["{MFA_ACR}"]
role_claims = {{ groups = {{ engineering = "dev", admins = "admin" }} }}
"#,
                    main = urls.issuers[0],
                ));
                if let Some(second) = urls.issuers.get(1) {
                    text.push_str(&format!(
                        "\n[[idp]]\nname = \"second\"\nissuer = \"{second}\"\n\
                         client_id = \"gh-query\"\nclient_secret = \"gh-query-secret\"\n\
                         domains = [\"partner.test\"]\n"
                    ));
                }
                text + STEP_UP_ROUTES + support::ROUTES
            }),
            env: vec![(
                support::admin::TOKEN_VAR.to_owned(),
                support::admin::TOKEN.to_owned(),
            )],
            ..StackOptions::default()
        },
    )
    .await
}

/// The usual stack (open sign-ups, the main IdP only) with the org Acme (`acme.test`), whose
/// new users are enabled at once.
async fn acme_stack(backend: Backend) -> Stack {
    let stack = stack(
        backend,
        Options {
            open_signup: true,
            second_idp: false,
            extra: "",
        },
    )
    .await;
    stack
        .gatehouse
        .cli_ok(&[
            "org",
            "add",
            "Acme",
            "--domain",
            "acme.test",
            "--auto-enable",
        ])
        .await;
    stack
}

fn session_cookie(browser: &Browser) -> String {
    browser.cookie(HOST, "gatehouse").expect("a session cookie")
}

/// The OP's free-form account form.
fn custom(page: &Page) -> Form {
    forms(page)
        .into_iter()
        .find(|f| f.id.as_deref() == Some("custom"))
        .expect("custom account form")
}

/// Opens `path` through Envoy, expects the OP's login page, and signs in as `sub` with these
/// extra login fields (`amr`, `acr`).
async fn sign_in(
    browser: &mut Browser,
    stack: &Stack,
    path: &str,
    sub: &str,
    extra: &[(&str, &str)],
) -> Page {
    let page = browser.navigate(&format!("{}{path}", stack.base)).await;
    assert!(
        is_interaction(&page),
        "expected the OP's login page: {:#?}",
        page.hops
    );
    let form = account(&page, sub);
    browser.submit(&page, &form, extra).await
}

/// Signs a new browser in at `path` through the OP's free-form account, (re)defining the
/// account with exactly these claims.
async fn sign_in_defining(stack: &Stack, path: &str, claims: &[(&str, &str)]) -> Page {
    let mut browser = Browser::new();
    let page = browser.navigate(&format!("{}{path}", stack.base)).await;
    let form = custom(&page);
    browser.submit(&page, &form, claims).await
}

async fn audit(stack: &Stack, kind: &str) -> Vec<Value> {
    let out = stack
        .gatehouse
        .cli_ok(&["audit", "--kind", kind, "--json"])
        .await;
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn with_cookie(stack: &Stack, path: &str, cookie: &str, accept: &str) -> support::Response {
    stack
        .get(
            path,
            &[
                ("cookie", &format!("gatehouse={cookie}")),
                ("accept", accept),
            ],
        )
        .await
}

// === per-organization sign-in ===

async fn orgs_choose_their_idp_and_sign_ups_need_asking(backend: Backend) {
    let stack = stack(
        backend,
        Options {
            open_signup: false,
            second_idp: true,
            extra: "",
        },
    )
    .await;
    let gh = &stack.gatehouse;
    gh.cli_ok(&["org", "add", "Acme", "--domain", "acme.test"])
        .await;
    gh.cli_ok(&["org", "add", "Globex", "--domain", "globex.test"])
        .await;
    gh.cli_ok(&[
        "org",
        "set",
        "Acme",
        "--idp",
        "second",
        "--param",
        "connection=acme-sso",
    ])
    .await;
    gh.cli_ok(&["org", "set", "Globex", "--idp", "main", "--require-mfa"])
        .await;
    let refused = gh.cli(&["org", "set", "Acme", "--idp", "nope"]).await;
    assert!(!refused.success, "an unknown IdP is refused");
    assert!(
        refused.stderr.contains("no [[idp]] is called \"nope\""),
        "{}",
        refused.stderr
    );

    // Each org lands on its own IdP; Acme's with its SSO connection.
    let start = |hint: &'static str| async move {
        let r = support::send(
            stack.gatehouse.http,
            "GET",
            &format!("/auth/login?rd=%2F&login_hint={hint}"),
            &[],
            None,
        )
        .await;
        assert_eq!(r.status, 302, "{r:?}");
        url::Url::parse(r.location().unwrap()).unwrap()
    };
    let acme = start("alice%40acme.test").await;
    assert!(
        acme.as_str().starts_with(&stack.providers[1].issuer),
        "{acme}"
    );
    let query: Vec<(String, String)> = acme.query_pairs().into_owned().collect();
    assert!(
        query.contains(&("connection".into(), "acme-sso".into())),
        "{acme}"
    );
    let globex = start("carol%40globex.test").await;
    assert!(
        globex.as_str().starts_with(&stack.providers[0].issuer),
        "{globex}"
    );
    assert!(!globex.as_str().contains("connection="), "{globex}");
    // Globex requires MFA: its logins ask for it from the start.
    let query: Vec<(String, String)> = globex.query_pairs().into_owned().collect();
    assert!(
        query.contains(&("acr_values".into(), MFA_ACR.into())),
        "{globex}"
    );
    // Everyone else: the default IdP, no org parameters.
    let other = start("zed%40elsewhere.test").await;
    assert!(!other.as_str().contains("connection="), "{other}");

    // The admin API shows and changes the same settings.
    let api = support::admin::Api::new(stack.gatehouse.admin);
    let shown = api.get("/admin/v1/orgs/Acme").await;
    assert_eq!(shown["idp"], "second");
    assert_eq!(shown["idp_params"]["connection"], "acme-sso");
    let body = api
        .expect(
            200,
            "PATCH",
            "/admin/v1/orgs/Acme",
            Some(json!({"auto_enable": true})),
        )
        .await;
    assert_eq!(body["auto_enable"], true);
    assert_eq!(body["idp"], "second", "unchanged settings stay");
    api.expect(
        400,
        "PATCH",
        "/admin/v1/orgs/Acme",
        Some(json!({"idp": "nope"})),
    )
    .await;
    let updates = audit(&stack, "org_updated").await;
    assert_eq!(updates.len(), 3, "every change is audited: {updates:?}");

    // A domain no org and no IdP lists: no account unless the login asked for a sign-up.
    let newbie = [
        ("sub", "newbie"),
        ("email", "newbie@unknown.test"),
        ("email_verified", "true"),
    ];
    let mut browser = Browser::new();
    let page = browser
        .navigate(&format!("{}/auth/login?idp=main&rd=%2Fapp", stack.base))
        .await;
    let form = custom(&page);
    let page = browser.submit(&page, &form, &newbie).await;
    assert_eq!(page.status(), 403, "{:#?}", page.hops);
    assert!(
        page.body()
            .contains("There is no account for newbie@unknown.test"),
        "{}",
        page.body()
    );
    assert!(browser.cookie(HOST, "gatehouse").is_none());
    let users = gh.cli_ok(&["user", "list"]).await;
    assert!(!users.contains("newbie@unknown.test"), "{users}");
    let failed = audit(&stack, "login_failed").await;
    assert!(
        failed
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or("").starts_with("no_account")),
        "{failed:?}"
    );

    let mut browser = Browser::new();
    let page = browser
        .navigate(&format!(
            "{}/auth/login?idp=main&signup=1&rd=%2Fapp",
            stack.base
        ))
        .await;
    let form = custom(&page);
    let page = browser.submit(&page, &form, &newbie).await;
    // Provisioned (disabled, as new users are): the welcome page.
    assert_eq!(page.status(), 200, "{:#?}", page.hops);
    assert!(
        page.url.path().starts_with("/auth/welcome"),
        "{:#?}",
        page.hops
    );
    let users = gh.cli_ok(&["user", "list"]).await;
    assert!(users.contains("newbie@unknown.test"), "{users}");
}

// === step-up ===

async fn step_up_to_mfa_on_a_route(backend: Backend) {
    let stack = acme_stack(backend).await;
    stack
        .gatehouse
        .cli_ok(&["org", "set", "Acme", "--param", "connection=acme-sso"])
        .await;
    let mut browser = Browser::new();
    // A password-only sign-in (the OP's default: amr ["pwd"]).
    let page = sign_in(&mut browser, &stack, "/app/home", "alice", &[]).await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    let password_session = session_cookie(&browser);

    // An API call on an MFA route: 401 insufficient_user_authentication (RFC 9470).
    let api = with_cookie(
        &stack,
        "/vault-api/data",
        &password_session,
        "application/json",
    )
    .await;
    assert_eq!(api.status, 401, "{api:?}");
    let challenge = api.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert_eq!(api.json()["error"], "insufficient_user_authentication");

    // A browser is sent to a step-up login that asks the IdP for MFA and a fresh login.
    let r = with_cookie(
        &stack,
        "/vault/x",
        &password_session,
        support::BROWSER_ACCEPT,
    )
    .await;
    assert_eq!(r.status, 302, "{r:?}");
    let login = r.location().unwrap().to_owned();
    assert!(
        login.contains("step_up=1") && login.contains("mfa=1"),
        "{login}"
    );
    let to_idp = support::send(
        stack.gatehouse.http,
        "GET",
        &login[login.find("/auth/login").unwrap()..],
        &[("cookie", &format!("gatehouse={password_session}"))],
        None,
    )
    .await;
    let authorize = url::Url::parse(to_idp.location().unwrap()).unwrap();
    let query: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    assert!(
        query.contains(&("acr_values".into(), MFA_ACR.into())),
        "{authorize}"
    );
    assert!(
        query.contains(&("prompt".into(), "login".into())),
        "{authorize}"
    );
    assert!(
        query.contains(&("login_hint".into(), "alice@acme.test".into())),
        "{authorize}"
    );
    assert!(
        query.contains(&("connection".into(), "acme-sso".into())),
        "a step-up keeps the org's SSO connection: {authorize}"
    );

    // The IdP answers password-only again: refused clearly, audited, not looped, and the
    // session the browser had stays as it was.
    let page = sign_in(&mut browser, &stack, "/vault/x", "alice", &[]).await;
    assert_eq!(page.status(), 403, "{:#?}", page.hops);
    assert!(
        page.body().contains("multi-factor authentication"),
        "{}",
        page.body()
    );
    assert_eq!(session_cookie(&browser), password_session);
    let still = with_cookie(&stack, "/app/home", &password_session, "application/json").await;
    assert_eq!(still.status, 200, "{still:?}");
    let failed = audit(&stack, "login_failed").await;
    assert!(
        failed.iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("insufficient_authentication")),
        "{failed:?}"
    );

    // With MFA at the IdP: the route passes, with a new session id for the same user, and the
    // password-only session is over.
    let page = sign_in(
        &mut browser,
        &stack,
        "/vault/x",
        "alice",
        &[("amr", "pwd,mfa"), ("acr", MFA_ACR)],
    )
    .await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    assert_eq!(page.url.path(), "/vault/x");
    let mfa_session = session_cookie(&browser);
    assert_ne!(mfa_session, password_session, "a new session id");
    let user_of = |r: &support::Response| r.upstream_header("x-gatehouse-user-id");
    let first = page.response.upstream_header("x-gatehouse-user-id");
    let api = with_cookie(&stack, "/vault-api/data", &mfa_session, "application/json").await;
    assert_eq!(api.status, 200, "{api:?}");
    assert_eq!(user_of(&api), first, "the same user");
    let old = with_cookie(&stack, "/app/home", &password_session, "application/json").await;
    assert_eq!(old.status, 401, "the replaced session ended: {old:?}");
}

async fn an_org_that_requires_mfa_steps_up_every_route(backend: Backend) {
    let stack = acme_stack(backend).await;
    let gh = &stack.gatehouse;
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &stack, "/app/home", "alice", &[]).await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    let session = session_cookie(&browser);

    gh.cli_ok(&["org", "set", "Acme", "--require-mfa"]).await;
    // Every route now needs MFA for Acme's users, at once (the cached session too).
    let app = with_cookie(&stack, "/app/home", &session, support::BROWSER_ACCEPT).await;
    assert_eq!(app.status, 302, "{app:?}");
    assert!(app.location().unwrap().contains("step_up=1"), "{app:?}");
    let api = with_cookie(&stack, "/api/items", &session, "application/json").await;
    assert_eq!(api.status, 401, "{api:?}");
    // Public routes stay public.
    let public = with_cookie(&stack, "/public/x", &session, "application/json").await;
    assert_eq!(public.status, 200, "{public:?}");

    let page = sign_in(
        &mut browser,
        &stack,
        "/app/home",
        "alice",
        &[("amr", "pwd,otp"), ("acr", MFA_ACR)],
    )
    .await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    let api = with_cookie(
        &stack,
        "/api/items",
        &session_cookie(&browser),
        "application/json",
    )
    .await;
    assert_eq!(api.status, 200, "{api:?}");

    // Users of other orgs are not affected.
    let mut carol = Browser::new();
    let page = sign_in(&mut carol, &stack, "/app/home", "carol", &[]).await;
    assert_eq!(page.url.path(), "/auth/welcome", "{:#?}", page.hops);
}

// === role mapping ===

async fn idp_groups_map_to_roles_at_each_login(backend: Backend) {
    let stack = acme_stack(backend).await;
    let gh = &stack.gatehouse;
    // alice is in the OP's "engineering" group: mapped to dev.
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &stack, "/app/home", "alice", &[]).await;
    assert_eq!(
        page.response
            .upstream_header("x-gatehouse-roles")
            .as_deref(),
        Some("dev"),
        "{:#?}",
        page.hops
    );
    let mapped = audit(&stack, "roles_mapped").await;
    assert_eq!(mapped.len(), 1, "{mapped:?}");
    // A role granted by hand is kept apart; one from the IdP cannot be revoked by hand.
    gh.cli_ok(&["user", "grant", "alice@acme.test", "ops"])
        .await;
    let show = gh.cli_ok(&["user", "show", "alice@acme.test"]).await;
    assert!(show.contains("roles:    dev,ops"), "{show}");
    assert!(show.contains("from IdP claims: dev (idp main)"), "{show}");
    let refused = gh.cli(&["user", "revoke", "alice@acme.test", "dev"]).await;
    assert!(!refused.success, "revoking a mapped role is refused");
    assert!(
        refused.stderr.contains("from identity provider \"main\""),
        "{}",
        refused.stderr
    );

    // alice leaves the group at the IdP: the next login removes dev and keeps ops.
    let page = sign_in_defining(
        &stack,
        "/app/home",
        &[
            ("sub", "alice"),
            ("email", "alice@acme.test"),
            ("email_verified", "true"),
            ("groups", ""),
        ],
    )
    .await;
    assert_eq!(
        page.response
            .upstream_header("x-gatehouse-roles")
            .as_deref(),
        Some("ops"),
        "{:#?}",
        page.hops
    );
    // Her other session, cached since the first login, sees the change at once (polling is
    // off in these stacks, and the cache would otherwise keep dev for 30 s).
    let cached = browser.navigate(&format!("{}/app/home", stack.base)).await;
    assert_eq!(
        cached
            .response
            .upstream_header("x-gatehouse-roles")
            .as_deref(),
        Some("ops"),
        "{:#?}",
        cached.hops
    );
    // And joining "admins" grants admin (an /admin/ route lets them in).
    let page = sign_in_defining(
        &stack,
        "/admin/panel",
        &[
            ("sub", "alice"),
            ("email", "alice@acme.test"),
            ("email_verified", "true"),
            ("groups", "admins,sales"),
        ],
    )
    .await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    assert_eq!(
        page.response
            .upstream_header("x-gatehouse-roles")
            .as_deref(),
        Some("admin,ops")
    );
    let cached = browser
        .navigate(&format!("{}/admin/panel", stack.base))
        .await;
    assert!(cached.response.reached_upstream(), "{:#?}", cached.hops);
    assert_eq!(audit(&stack, "roles_mapped").await.len(), 3);
}

// === back-channel logout ===

async fn logout_token(stack: &Stack, claims: Value) -> String {
    let http = reqwest::Client::new();
    let body: Value = http
        .post(format!(
            "{}/__control/logout-token",
            stack.providers[0].issuer
        ))
        .json(&claims)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["logout_token"].as_str().unwrap().to_owned()
}

async fn post_logout(stack: &Stack, token: &str) -> support::Response {
    let body = format!("logout_token={}", urlencode(token));
    support::send(
        stack.envoy.listener,
        "POST",
        "/auth/backchannel-logout",
        &[],
        Some(("application/x-www-form-urlencoded", body.into_bytes())),
    )
    .await
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn back_channel_logout_ends_sessions(backend: Backend) {
    let stack = acme_stack(backend).await;
    stack
        .gatehouse
        .cli_ok(&[
            "org",
            "add",
            "Globex",
            "--domain",
            "globex.test",
            "--auto-enable",
        ])
        .await;
    let mut alice = Browser::new();
    sign_in(&mut alice, &stack, "/app/home", "alice", &[]).await;
    let session = session_cookie(&alice);
    let mut carol = Browser::new();
    sign_in(&mut carol, &stack, "/app/home", "carol", &[]).await;
    let carol_session = session_cookie(&carol);
    let live = |cookie: String| {
        let stack = &stack;
        async move {
            with_cookie(stack, "/app/home", &cookie, "application/json")
                .await
                .status
        }
    };
    assert_eq!(live(session.clone()).await, 200);

    // Refused: forged (a key the OP never published), carrying a nonce (an ID token's
    // shape), for another client, without the event, without sub or sid.
    let refusals = [
        json!({"sub": "alice", "forge": true}),
        json!({"sub": "alice", "nonce": "n-0"}),
        json!({"sub": "alice", "aud": "other-client"}),
        json!({"sub": "alice", "events": {"http://example.test/other": {}}}),
        json!({}),
    ];
    for claims in refusals {
        let token = logout_token(&stack, claims.clone()).await;
        let r = post_logout(&stack, &token).await;
        assert_eq!(r.status, 400, "{claims}: {r:?}");
        assert_eq!(r.json()["error"], "invalid_request");
    }
    assert_eq!(live(session.clone()).await, 200, "nothing was logged out");
    let garbage = post_logout(&stack, "not-a-jwt").await;
    assert_eq!(garbage.status, 400);

    // A valid token for alice's IdP account ends her sessions, and only hers.
    let token = logout_token(&stack, json!({"sub": "alice"})).await;
    let r = post_logout(&stack, &token).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(live(session.clone()).await, 401, "alice's session ended");
    assert_eq!(live(carol_session.clone()).await, 200, "carol's did not");
    // Replayed: refused.
    let r = post_logout(&stack, &token).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("replay"), "{}", r.body);

    // By sid: the OP's own session id for carol's login, from her ID token.
    let sid = stack
        .db
        .store()
        .await
        .load_session(
            &gatehouse::session::token::OpaqueToken::parse(&carol_session)
                .unwrap()
                .hash()
                .to_hex(),
            support::issuer::now(),
        )
        .await
        .unwrap()
        .map(|s| s.id_token.unwrap_or_default())
        .unwrap_or_default();
    let claims = claims_of(&sid);
    let token = logout_token(&stack, json!({"sid": claims["sid"]})).await;
    let r = post_logout(&stack, &token).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        live(carol_session).await,
        401,
        "carol's session ended by sid"
    );

    // The real thing: the user signs out at the OP itself, and the OP delivers a logout token
    // (with the sid of that OP session) to /auth/backchannel-logout through Envoy.
    let mut browser = Browser::new();
    sign_in(&mut browser, &stack, "/app/home", "alice", &[]).await;
    let session = session_cookie(&browser);
    assert_eq!(live(session.clone()).await, 200);
    let page = browser
        .navigate(&format!("{}/session/end", stack.providers[0].issuer))
        .await;
    assert!(page.body().contains("Signed out"), "{:#?}", page.hops);
    assert_eq!(
        live(session).await,
        401,
        "ended by the OP's back-channel logout"
    );
    let audited = audit(&stack, "backchannel_logout").await;
    assert_eq!(
        audited.iter().filter(|e| e["outcome"] == "success").count(),
        3,
        "{audited:?}"
    );
}

/// The claims of a JWT, unverified (the test reads its own session's ID token).
fn claims_of(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

// === limits ===

async fn limits_answer_429_and_flag_repeated_failures(backend: Backend) {
    let stack = stack(
        backend,
        Options {
            open_signup: true,
            second_idp: false,
            extra: "\n[limits]\nlogin_starts_per_ip = 8\nfailed_callbacks_per_ip = 4\nsuspicious_failures = 3\n",
        },
    )
    .await;
    // Three sign-ins for alice refused at the IdP: a suspicious_login event.
    for _ in 0..3 {
        let mut browser = Browser::new();
        let page = browser
            .navigate(&format!(
                "{}/auth/login?login_hint=alice%40acme.test&rd=%2F",
                stack.base
            ))
            .await;
        assert!(is_interaction(&page), "{:#?}", page.hops);
        let abort = forms(&page)
            .into_iter()
            .find(|f| f.id.as_deref() == Some("abort"))
            .expect("abort form");
        let page = browser.submit(&page, &abort, &[]).await;
        assert_eq!(page.status(), 400, "{:#?}", page.hops);
    }
    let suspicious = audit(&stack, "suspicious_login").await;
    assert_eq!(suspicious.len(), 1, "{suspicious:?}");
    assert!(
        suspicious[0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("alice@acme.test"),
        "{suspicious:?}"
    );

    // Failed callbacks beyond the limit: 429 with Retry-After.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = support::send(
            stack.gatehouse.http,
            "GET",
            &format!("/auth/callback?state=bogus{i}&code=x"),
            &[],
            None,
        )
        .await;
        if r.status == 429 {
            let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "{r:?}");
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses[0], 400, "{statuses:?}");
    assert_eq!(statuses[5], 429, "{statuses:?}");

    // A burst of login starts beyond the limit (8 a minute) from one address: 429. (The
    // test browser above comes from another address, 192.0.2.2, through Envoy.)
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = support::send(stack.gatehouse.http, "GET", "/auth/login?rd=%2F", &[], None).await;
        if r.status == 429 {
            assert!(r.header("retry-after").is_some(), "{r:?}");
            assert!(r.body.contains("Too many attempts"), "{}", r.body);
        }
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..8], &[302; 8], "{statuses:?}");
    assert!(statuses[8..].iter().all(|s| *s == 429), "{statuses:?}");
    let limited = audit(&stack, "rate_limited").await;
    let details: Vec<&str> = limited
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("failed_callbacks_per_ip")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("login_starts_per_ip")),
        "{details:?}"
    );
    assert_eq!(
        details.len(),
        2,
        "one event per limit and client a minute: {details:?}"
    );
    let metrics = support::send(stack.gatehouse.admin, "GET", "/metrics", &[], None).await;
    assert!(
        metrics
            .body
            .contains("gatehouse_rate_limited_total{limit=\"login_starts_per_ip\"} 2"),
        "{}",
        metrics.body
    );
}
