//! The browser login, end to end: browser model → real Envoy → gatehouse → real OpenID Provider
//! (oidc-provider, tests/op) and back, on SQLite and on PostgreSQL.

use crate::support;

use support::browser::{Browser, Page, Pending, forms};
use support::op::{account, custom, is_interaction};
use support::{Backend, Stack, StackOptions, StackUrls, base_config};

on_both_backends!(
    login_with_query_response_mode,
    login_with_form_post_response_mode,
    first_login_waits_for_an_admin,
    verified_email_links_unverified_does_not,
    home_realm_discovery_picks_the_idp,
    replayed_state_is_refused,
    state_from_another_browser_is_refused,
    tampered_state_is_refused,
    wrong_nonce_is_refused,
    id_token_for_another_audience_is_refused,
    open_redirects_land_on_root,
    logout_ends_the_session,
    parallel_logins_in_two_tabs,
    idp_errors_show_a_page_without_a_session,
    a_planted_non_ascii_cookie_does_not_block_sign_in,
    unicode_lookalike_emails_neither_link_nor_place,
    an_idp_vouches_only_for_its_trusted_domains,
    non_boolean_email_verified_in_the_id_token_signs_in_unverified,
    login_starts_leave_the_state_table_bounded,
);

const HOST: &str = "127.0.0.1";

/// One `[[idp]]`: which fixture OP (index) and client it uses.
struct Idp {
    name: &'static str,
    op: usize,
    form_post: bool,
    domains: &'static [&'static str],
    logout_at_idp: bool,
    /// Extra TOML lines for this `[[idp]]`.
    extra: &'static str,
}

/// The form_post client's secret comes from the environment (`client_secret_env`); the query
/// client's is in the file.
const FORM_SECRET_VAR: &str = "GH_TEST_FORM_CLIENT_SECRET";

impl Idp {
    fn main(form_post: bool) -> Self {
        Self {
            name: "main",
            op: 0,
            form_post,
            domains: &[],
            logout_at_idp: false,
            extra: "",
        }
    }

    fn toml(&self, urls: &StackUrls) -> String {
        let (client, secret, mode) = if self.form_post {
            (
                "gh-form",
                format!("client_secret_env = \"{FORM_SECRET_VAR}\""),
                "form_post",
            )
        } else {
            (
                "gh-query",
                "client_secret = \"gh-query-secret\"".to_owned(),
                "query",
            )
        };
        format!(
            "\n[[idp]]\nname = \"{}\"\nissuer = \"{}\"\nclient_id = \"{client}\"\n\
             {secret}\nresponse_mode = \"{mode}\"\ndomains = {:?}\n\
             logout_at_idp = {}\n{}\n",
            self.name, urls.issuers[self.op], self.domains, self.logout_at_idp, self.extra
        )
    }
}

async fn stack(backend: Backend, idps: Vec<Idp>) -> Stack {
    stack_with(backend, idps, &[]).await
}

/// Like [`stack`], with extra arguments for every OP fixture.
async fn stack_with(backend: Backend, idps: Vec<Idp>, op_args: &[&str]) -> Stack {
    let providers = idps.iter().map(|i| i.op).max().map_or(0, |m| m + 1);
    let args: Vec<String> = op_args.iter().map(|a| (*a).to_owned()).collect();
    Stack::start_with(
        backend,
        StackOptions {
            providers: vec![args; providers],
            config: Box::new(move |urls| {
                let mut text = base_config(urls);
                for idp in &idps {
                    text.push_str(&idp.toml(urls));
                }
                text + support::ROUTES
            }),
            env: vec![(FORM_SECRET_VAR.to_owned(), "gh-form-secret".to_owned())],
            ..StackOptions::default()
        },
    )
    .await
}

fn before_callback(_: &str, url: &url::Url) -> bool {
    url.path() == "/auth/callback"
}

/// Opens `path` through Envoy, expects the OP's account page, and signs in as `sub`.
async fn sign_in(browser: &mut Browser, stack: &Stack, path: &str, sub: &str) -> Page {
    support::op::sign_in_at(browser, &format!("{}{path}", stack.base), sub).await
}

/// Starts a login and stops right before the browser calls gatehouse's callback.
async fn until_callback(browser: &mut Browser, stack: &Stack, path: &str, sub: &str) -> Pending {
    let page = browser.navigate(&format!("{}{path}", stack.base)).await;
    assert!(is_interaction(&page), "{:#?}", page.hops);
    let form = account(&page, sub);
    browser
        .submit_until(&page, &form, &[], &before_callback)
        .await
        .expect_err("should stop before the callback")
}

fn session_cookie(browser: &Browser) -> Option<String> {
    browser.cookie(HOST, "gatehouse")
}

/// The login was refused: an error page, no session cookie set, no session in the browser.
fn assert_refused(page: &Page, browser: &Browser, what: &str) {
    assert!(
        matches!(page.status(), 400 | 403 | 503),
        "{what}: expected an error page, got {} {:#?}",
        page.status(),
        page.hops
    );
    assert!(
        page.body().contains("Sign-in failed"),
        "{what}: {}",
        page.body()
    );
    assert!(
        page.body().contains("/auth/login?rd="),
        "{what}: a link to start again"
    );
    assert!(
        !page
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("gatehouse=")),
        "{what}: a session cookie was set"
    );
    assert_eq!(
        session_cookie(browser),
        None,
        "{what}: the browser holds a session"
    );
}

/// An org for acme.test whose users are enabled on first login. Returns its id.
async fn acme_auto_enabled(stack: &Stack) -> String {
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
        .await
}

async fn audit_kinds(stack: &Stack) -> Vec<(String, String)> {
    let out = stack.gatehouse.cli_ok(&["audit", "--json"]).await;
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["kind"].as_str().unwrap_or_default().to_owned(),
                v["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn live_sessions(stack: &Stack, email: &str) -> String {
    let show = stack.gatehouse.cli_ok(&["user", "show", email]).await;
    show.lines()
        .find(|l| l.starts_with("sessions:"))
        .unwrap_or_default()
        .to_owned()
}

// === full logins ===

async fn full_login(backend: Backend, form_post: bool) {
    let stack = stack(backend, vec![Idp::main(form_post)]).await;
    let org_id = acme_auto_enabled(&stack).await;
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &stack, "/dashboard?tab=2", "alice").await;
    assert!(
        page.response.reached_upstream(),
        "{:#?}\n{}",
        page.hops,
        page.body()
    );
    assert_eq!(page.url.as_str(), format!("{}/dashboard?tab=2", stack.base));
    let r = &page.response;
    assert_eq!(
        r.upstream_header("x-gatehouse-email").as_deref(),
        Some("alice@acme.test")
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-org-id").as_deref(),
        Some(org_id.as_str())
    );
    assert!(r.upstream_header("x-gatehouse-user-id").is_some());
    // The browser shares cookies across ports, so the OP's reach the upstream; gatehouse's
    // (session, login binding) never do.
    let upstream_cookies = r.upstream_header("cookie").unwrap_or_default();
    assert!(
        !upstream_cookies.contains("gatehouse"),
        "{upstream_cookies}"
    );

    if form_post {
        assert!(
            page.hops
                .iter()
                .any(|h| h.starts_with("POST") && h.contains("/auth/callback")),
            "the IdP posted the callback: {:#?}",
            page.hops
        );
    }
    let audit: Vec<String> = audit_kinds(&stack)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for kind in ["user_provisioned", "login_succeeded", "session_created"] {
        assert!(audit.iter().any(|k| k == kind), "no {kind} in {audit:?}");
    }
    let userinfo = browser
        .navigate(&format!("{}/auth/userinfo", stack.base))
        .await;
    let json = userinfo.response.json();
    assert_eq!(json["email"], "alice@acme.test");
    assert_eq!(json["enabled"], true);
    assert_eq!(json["org_id"], org_id.as_str());
    // Without a session: 401.
    let anonymous = Browser::new()
        .navigate(&format!("{}/auth/userinfo", stack.base))
        .await;
    assert_eq!(anonymous.status(), 401);
}

async fn login_with_query_response_mode(backend: Backend) {
    full_login(backend, false).await;
}

async fn login_with_form_post_response_mode(backend: Backend) {
    full_login(backend, true).await;
}

async fn first_login_waits_for_an_admin(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(false)]).await;
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &stack, "/reports", "carol").await;
    assert_eq!(page.url.path(), "/auth/welcome", "{:#?}", page.hops);
    assert_eq!(page.status(), 200);
    assert!(page.body().contains("carol@globex.test"), "{}", page.body());
    assert!(page.body().contains("Sign out"));
    // The API view of the same session.
    let show = stack
        .gatehouse
        .cli_ok(&["user", "show", "carol@globex.test"])
        .await;
    assert!(show.contains("enabled:  no"), "{show}");

    stack
        .gatehouse
        .cli_ok(&["user", "enable", "carol@globex.test"])
        .await;
    let page = browser.navigate(&format!("{}/reports", stack.base)).await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    assert_eq!(
        page.response
            .upstream_header("x-gatehouse-email")
            .as_deref(),
        Some("carol@globex.test")
    );
}

async fn verified_email_links_unverified_does_not(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(false)]).await;
    // Staff created these accounts before SSO existed.
    stack
        .gatehouse
        .enabled_session("alice@acme.test", &["admin"])
        .await;
    stack.gatehouse.enabled_session("bob@acme.test", &[]).await;

    let mut alice = Browser::new();
    let page = sign_in(&mut alice, &stack, "/admin/", "alice").await;
    assert!(
        page.response.reached_upstream(),
        "linked to the admin account: {:#?}",
        page.hops
    );
    let users = stack.gatehouse.cli_ok(&["user", "list"]).await;
    assert_eq!(
        users.lines().count(),
        3,
        "header + 2 users, no duplicate: {users}"
    );
    let show = stack
        .gatehouse
        .cli_ok(&["user", "show", "alice@acme.test"])
        .await;
    assert!(
        show.contains("identities:") && show.contains(" alice (idp main"),
        "{show}"
    );

    let mut bob = Browser::new();
    let page = sign_in(&mut bob, &stack, "/dashboard", "bob").await;
    assert_refused(&page, &bob, "unverified email");
    assert!(page.body().contains("did not verify"), "{}", page.body());
    let show = stack
        .gatehouse
        .cli_ok(&["user", "show", "bob@acme.test"])
        .await;
    assert!(show.contains("identities: none"), "{show}");
    assert_eq!(
        live_sessions(&stack, "bob@acme.test").await,
        "sessions: 1 live",
        "only the CLI's"
    );
    let users = stack.gatehouse.cli_ok(&["user", "list"]).await;
    assert_eq!(users.lines().count(), 3, "{users}");

    // A verified claim sent as the string "true" is not the boolean true: not linked either.
    stack.gatehouse.enabled_session("zed@acme.test", &[]).await;
    let mut zed = Browser::new();
    let page = zed.navigate(&format!("{}/dashboard", stack.base)).await;
    let form = custom(&page);
    let page = zed
        .submit(
            &page,
            &form,
            &[
                ("sub", "zed"),
                ("email", "zed@acme.test"),
                ("email_verified", "string-true"),
            ],
        )
        .await;
    assert_refused(&page, &zed, "string \"true\"");
    let audit = audit_kinds(&stack).await;
    assert!(
        audit
            .iter()
            .filter(|(k, d)| k == "login_failed" && d.starts_with("provisioning_refused"))
            .count()
            == 2,
        "{audit:?}"
    );
}

async fn home_realm_discovery_picks_the_idp(backend: Backend) {
    let stack = stack(
        backend,
        vec![
            Idp {
                name: "acme",
                op: 0,
                form_post: false,
                domains: &["acme.test"],
                logout_at_idp: false,
                extra: "extra_params = { connection = \"acme-sso\" }",
            },
            Idp {
                name: "globex",
                op: 1,
                form_post: false,
                domains: &["globex.test"],
                logout_at_idp: false,
                extra: "",
            },
        ],
    )
    .await;
    let globex_org = stack
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
    let op = |i: usize| stack.providers[i].issuer.clone();
    let mut browser = Browser::new();
    let stop_at_op = |_: &str, u: &url::Url| u.path() == "/auth" && u.host_str() == Some(HOST);
    let cases = [
        ("/auth/login?login_hint=carol%40globex.test&rd=%2Fx", 1),
        ("/auth/login?login_hint=Alice%40ACME.test&rd=%2Fx", 0),
        ("/auth/login?idp=globex&rd=%2Fx", 1),
        ("/auth/login?idp=acme&login_hint=carol%40globex.test", 0),
    ];
    for (path, want) in cases {
        let pending = browser
            .navigate_until(&format!("{}{path}", stack.base), &stop_at_op)
            .await
            .expect_err("should reach an IdP");
        assert!(
            pending.url.as_str().starts_with(&op(want)),
            "{path}: went to {}",
            pending.url
        );
        let params: Vec<(String, String)> = pending.url.query_pairs().into_owned().collect();
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
        assert!(
            get("code_challenge").is_some() && get("nonce").is_some() && get("state").is_some()
        );
        if path.contains("login_hint") {
            assert!(
                get("login_hint").is_some(),
                "the hint is passed on: {}",
                pending.url
            );
        }
        // The acme IdP's extra_params reach its authorize endpoint, and only its.
        let connection = if want == 0 { Some("acme-sso") } else { None };
        assert_eq!(get("connection").as_deref(), connection, "{}", pending.url);
    }
    // No hint: ask for the email, then continue with it.
    let page = browser.navigate(&format!("{}/dashboard", stack.base)).await;
    assert_eq!(page.url.path(), "/auth/login", "{:#?}", page.hops);
    assert!(
        page.body().contains("name=\"login_hint\""),
        "{}",
        page.body()
    );
    let form = forms(&page).into_iter().next().expect("email form");
    let page = browser
        .submit(&page, &form, &[("login_hint", "carol@globex.test")])
        .await;
    assert!(
        is_interaction(&page) && page.url.as_str().starts_with(&op(1)),
        "{:#?}",
        page.hops
    );
    let form = account(&page, "carol");
    let page = browser.submit(&page, &form, &[]).await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    assert_eq!(page.url.path(), "/dashboard");
    assert_eq!(
        page.response
            .upstream_header("x-gatehouse-org-id")
            .as_deref(),
        Some(globex_org.as_str()),
        "org from the exact email domain"
    );
    let unknown = Browser::new()
        .navigate(&format!("{}/auth/login?idp=nope", stack.base))
        .await;
    assert_eq!(unknown.status(), 400);
}

// === attacks: each is refused and leaves no session ===

async fn replayed_state_is_refused(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(false)]).await;
    acme_auto_enabled(&stack).await;
    let mut browser = Browser::new();
    let pending = until_callback(&mut browser, &stack, "/dashboard", "alice").await;
    let page = browser.resume(pending.clone()).await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    assert_eq!(
        live_sessions(&stack, "alice@acme.test").await,
        "sessions: 1 live"
    );

    // The same callback again, from a browser without a session (as an attacker replaying it).
    let mut replay = Browser::new();
    replay.set_cookie(
        HOST,
        "gatehouse-login",
        &browser.cookie(HOST, "gatehouse-login").unwrap(),
    );
    let page = replay.resume(pending).await;
    assert_refused(&page, &replay, "replayed state");
    assert_eq!(
        live_sessions(&stack, "alice@acme.test").await,
        "sessions: 1 live"
    );
    let audit = audit_kinds(&stack).await;
    assert!(
        audit
            .iter()
            .any(|(k, d)| k == "login_failed" && d.contains("already used")),
        "{audit:?}"
    );
}

async fn state_from_another_browser_is_refused(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(false)]).await;
    acme_auto_enabled(&stack).await;
    let mut victim = Browser::new();
    let pending = until_callback(&mut victim, &stack, "/dashboard", "alice").await;

    // An attacker's browser with no login cookie, and one that started its own login.
    let mut stranger = Browser::new();
    let page = stranger.resume(pending.clone()).await;
    assert_refused(&page, &stranger, "no binding cookie");
    let mut attacker = Browser::new();
    let own = until_callback(&mut attacker, &stack, "/x", "bob").await;
    drop(own);
    let page = attacker.resume(pending.clone()).await;
    assert_refused(&page, &attacker, "another browser's binding");
    let audit = audit_kinds(&stack).await;
    assert!(
        audit.iter().any(|(_, d)| d.contains("another browser")),
        "{audit:?}"
    );

    // The victim's own login was not burned by those attempts.
    let page = victim.resume(pending).await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    assert_eq!(
        live_sessions(&stack, "alice@acme.test").await,
        "sessions: 1 live"
    );
}

async fn tampered_state_is_refused(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(false)]).await;
    let mut browser = Browser::new();
    let mut pending = until_callback(&mut browser, &stack, "/dashboard", "alice").await;
    let pairs: Vec<(String, String)> = pending
        .url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "state" {
                let mut chars: Vec<char> = v.chars().collect();
                chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
                (k, chars.into_iter().collect())
            } else {
                (k, v)
            }
        })
        .collect();
    pending.url.query_pairs_mut().clear().extend_pairs(pairs);
    let page = browser.resume(pending).await;
    assert_refused(&page, &browser, "tampered state");
    let users = stack.gatehouse.cli_ok(&["user", "list"]).await;
    assert_eq!(users.lines().count(), 1, "nobody provisioned: {users}");
}

async fn wrong_nonce_is_refused(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(false)]).await;
    // 1. The browser's authorize request is altered to carry another nonce: the OP signs a
    //    token for that nonce, which is not the one this login stored.
    let mut browser = Browser::new();
    let stop_at_op = |_: &str, u: &url::Url| u.path() == "/auth" && u.as_str().contains("nonce=");
    let mut pending = browser
        .navigate_until(&format!("{}/dashboard", stack.base), &stop_at_op)
        .await
        .expect_err("stops at the OP");
    let pairs: Vec<(String, String)> = pending
        .url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "nonce" {
                (k, "attacker-nonce".into())
            } else {
                (k, v)
            }
        })
        .collect();
    pending.url.query_pairs_mut().clear().extend_pairs(pairs);
    let page = browser.resume(pending).await;
    let form = account(&page, "alice");
    let page = browser.submit(&page, &form, &[]).await;
    assert_refused(&page, &browser, "altered nonce");

    // 2. The OP itself returns a token whose nonce was rewritten (and re-signed).
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &stack, "/dashboard", "mallory-nonce").await;
    assert_refused(&page, &browser, "rewritten nonce");
    let audit = audit_kinds(&stack).await;
    assert_eq!(
        audit
            .iter()
            .filter(|(k, d)| k == "login_failed" && d.starts_with("id_token_invalid"))
            .count(),
        2,
        "{audit:?}"
    );
}

async fn id_token_for_another_audience_is_refused(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(false)]).await;
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &stack, "/dashboard", "mallory-aud").await;
    assert_refused(&page, &browser, "wrong audience");
    let audit = audit_kinds(&stack).await;
    assert!(
        audit.iter().any(|(k, d)| k == "login_failed"
            && d.contains("id_token_invalid")
            && d.contains("aud")),
        "{audit:?}"
    );
    let users = stack.gatehouse.cli_ok(&["user", "list"]).await;
    assert_eq!(users.lines().count(), 1, "nobody provisioned: {users}");
}

async fn open_redirects_land_on_root(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(false)]).await;
    acme_auto_enabled(&stack).await;
    for rd in [
        "%2F%2Fevil.example",         // //evil.example
        "%2F%5Cevil.example",         // /\evil.example
        "https%3A%2F%2Fevil.example", // https://evil.example
        "/%09/evil.example",          // / TAB /evil.example
    ] {
        let mut browser = Browser::new();
        let pending = until_callback(
            &mut browser,
            &stack,
            &format!("/auth/login?rd={rd}"),
            "alice",
        )
        .await;
        let url = pending.url.clone();
        let response = browser
            .request("GET", &url, None, pending.initiator.as_deref())
            .await;
        assert_eq!(response.status, 302, "rd={rd}: {response:?}");
        assert_eq!(response.location(), Some("/"), "rd={rd}");
    }
    // An allowed target is honoured.
    let mut browser = Browser::new();
    let pending = until_callback(
        &mut browser,
        &stack,
        "/auth/login?rd=%2Freports%3Fq%3D1",
        "alice",
    )
    .await;
    let response = browser
        .request("GET", &pending.url, None, pending.initiator.as_deref())
        .await;
    assert_eq!(response.location(), Some("/reports?q=1"));
}

async fn logout_ends_the_session(backend: Backend) {
    let stack = stack(
        backend,
        vec![Idp {
            logout_at_idp: true,
            ..Idp::main(false)
        }],
    )
    .await;
    acme_auto_enabled(&stack).await;
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &stack, "/dashboard", "alice").await;
    assert!(page.response.reached_upstream());
    let old = session_cookie(&browser).expect("session cookie");

    let logout =
        url::Url::parse(&format!("{}/auth/logout?rd=%2Fpublic%2Fbye", stack.base)).unwrap();
    let response = browser
        .request("POST", &logout, Some(""), Some(&stack.base))
        .await;
    assert_eq!(response.status, 302, "{response:?}");
    // The IdP advertises end_session_endpoint and the config asks for it.
    let location = url::Url::parse(response.location().unwrap()).unwrap();
    assert!(
        location
            .as_str()
            .starts_with(&format!("{}/session/end", stack.providers[0].issuer)),
        "{location}"
    );
    let params: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert!(
        params.iter().any(|(k, _)| k == "id_token_hint"),
        "{location}"
    );
    assert!(
        params.contains(&(
            "post_logout_redirect_uri".into(),
            format!("{}/public/bye", stack.base)
        )),
        "{location}"
    );
    assert_eq!(session_cookie(&browser), None, "cookie cleared");

    // Replaying the old cookie is denied.
    let mut thief = Browser::new();
    thief.set_cookie(HOST, "gatehouse", &old);
    let page = thief.navigate(&format!("{}/dashboard", stack.base)).await;
    assert!(!page.response.reached_upstream(), "{:#?}", page.hops);
    let api = support::send(
        stack.envoy.listener,
        "GET",
        "/api/x",
        &[("cookie", &format!("gatehouse={old}"))],
        None,
    )
    .await;
    assert_eq!(api.status, 401);
    assert_eq!(
        live_sessions(&stack, "alice@acme.test").await,
        "sessions: 0 live"
    );
    let audit: Vec<String> = audit_kinds(&stack)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(audit.contains(&"logout".to_owned()), "{audit:?}");
}

async fn parallel_logins_in_two_tabs(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(true)]).await;
    acme_auto_enabled(&stack).await;
    let mut browser = Browser::new();
    let tab1 = browser.navigate(&format!("{}/one", stack.base)).await;
    let tab2 = browser.navigate(&format!("{}/two", stack.base)).await;
    assert!(is_interaction(&tab1) && is_interaction(&tab2));
    // Finish the second tab first.
    let form = account(&tab2, "alice");
    let page = browser.submit(&tab2, &form, &[]).await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    assert_eq!(page.url.path(), "/two");
    let form = account(&tab1, "alice");
    let page = browser.submit(&tab1, &form, &[]).await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    assert_eq!(page.url.path(), "/one");
    assert_eq!(
        live_sessions(&stack, "alice@acme.test").await,
        "sessions: 2 live"
    );
}

async fn idp_errors_show_a_page_without_a_session(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(false)]).await;
    // The user cancels at the IdP: it redirects back with error=access_denied.
    let mut browser = Browser::new();
    let page = browser.navigate(&format!("{}/dashboard", stack.base)).await;
    let abort = forms(&page)
        .into_iter()
        .find(|f| f.id.as_deref() == Some("abort"))
        .expect("abort form");
    let page = browser.submit(&page, &abort, &[]).await;
    assert_refused(&page, &browser, "access_denied");
    assert!(page.body().contains("cancelled"), "{}", page.body());
    assert_eq!(
        page.url.path(),
        "/auth/callback",
        "no redirect loop: {:#?}",
        page.hops
    );
    let audit = audit_kinds(&stack).await;
    assert!(
        audit
            .iter()
            .any(|(k, d)| k == "login_failed" && d.starts_with("idp_error")),
        "{audit:?}"
    );
}

/// The IdP is down: the login page says so, once, without looping.
#[tokio::test]
async fn unreachable_idp_shows_an_error_page() {
    let dead = support::free_port();
    let stack = Stack::start_with(
        Backend::Sqlite,
        StackOptions {
            config: Box::new(move |urls| {
                format!(
                    "{}\n[[idp]]\nname = \"down\"\nissuer = \"http://127.0.0.1:{dead}\"\nclient_id = \"x\"\n{}",
                    base_config(urls),
                    support::ROUTES
                )
            }),
            ..StackOptions::default()
        },
    )
    .await;
    let mut browser = Browser::new();
    let page = browser.navigate(&format!("{}/dashboard", stack.base)).await;
    assert_eq!(page.status(), 503, "{:#?}", page.hops);
    assert_eq!(page.url.path(), "/auth/login");
    assert!(page.body().contains("cannot be reached"), "{}", page.body());
    // ext_authz keeps working while the IdP is down.
    let token = stack
        .gatehouse
        .enabled_session("alice@acme.test", &[])
        .await;
    let r = stack
        .get("/app", &[("cookie", &format!("gatehouse={token}"))])
        .await;
    assert!(r.reached_upstream());
}

/// A new signing key at the IdP: gatehouse refetches the JWKS on the unknown `kid`.
#[tokio::test]
async fn rotated_idp_keys_are_picked_up() {
    let stack = stack(Backend::Sqlite, vec![Idp::main(false)]).await;
    acme_auto_enabled(&stack).await;
    let page = sign_in(&mut Browser::new(), &stack, "/a", "alice").await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    let rotated = support::send(
        stack.providers[0].addr,
        "POST",
        "/__control/rotate",
        &[],
        None,
    )
    .await;
    assert_eq!(rotated.status, 200, "{rotated:?}");
    let page = sign_in(&mut Browser::new(), &stack, "/b", "alice").await;
    assert!(
        page.response.reached_upstream(),
        "{:#?}\n{}",
        page.hops,
        page.body()
    );
    assert!(
        stack.gatehouse.logs().contains("refetched JWKS"),
        "{}",
        stack.gatehouse.logs()
    );
}

/// An IdP that puts email, email_verified and name in the ID token itself.
#[tokio::test]
async fn claims_in_the_id_token_are_used() {
    let stack = stack_with(
        Backend::Sqlite,
        vec![Idp::main(false)],
        &["--claims-in-id-token"],
    )
    .await;
    stack
        .gatehouse
        .enabled_session("alice@acme.test", &[])
        .await;
    let page = sign_in(&mut Browser::new(), &stack, "/dashboard", "alice").await;
    assert!(
        page.response.reached_upstream(),
        "linked by the verified email in the token: {:#?}",
        page.hops
    );
    let show = stack
        .gatehouse
        .cli_ok(&["user", "show", "alice@acme.test"])
        .await;
    assert!(show.contains("verified true"), "{show}");
}

// === attack-testing regressions (issue 6) ===

/// Signs in through the OP's free-form account: any `sub`, `email` and `email_verified`
/// (`true`, `false`, `string-true`, …).
async fn sign_in_custom(
    browser: &mut Browser,
    stack: &Stack,
    path: &str,
    claims: &[(&str, &str)],
) -> Page {
    let page = browser.navigate(&format!("{}{path}", stack.base)).await;
    assert!(is_interaction(&page), "{:#?}", page.hops);
    let form = custom(&page);
    browser.submit(&page, &form, claims).await
}

/// A cookie that is not visible ASCII (here one a sibling subdomain could plant on the parent
/// domain) must not hide the login-binding cookie: before the fix, such a browser could not
/// sign in at all.
async fn a_planted_non_ascii_cookie_does_not_block_sign_in(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(false)]).await;
    acme_auto_enabled(&stack).await;
    let mut browser = Browser::new();
    browser.set_cookie(HOST, "pref", "caf\u{e9}");
    let page = sign_in(&mut browser, &stack, "/dashboard", "alice").await;
    assert!(
        page.response.reached_upstream(),
        "{:#?}\n{}",
        page.hops,
        page.body()
    );
    let upstream_cookies = page.response.upstream_header("cookie").unwrap_or_default();
    assert!(
        upstream_cookies.contains("pref=caf\u{e9}"),
        "{upstream_cookies}"
    );
    assert!(
        !upstream_cookies.contains("gatehouse"),
        "{upstream_cookies}"
    );
}

/// A verified `Ken@acme.test` spelled with U+212A KELVIN SIGN is not `ken@acme.test`: before
/// the fix it lower-cased into that account and signed in as its admin. Lookalike local parts
/// are not placed in the domain's org either (which would auto-enable them).
async fn unicode_lookalike_emails_neither_link_nor_place(backend: Backend) {
    let stack = stack(backend, vec![Idp::main(false)]).await;
    acme_auto_enabled(&stack).await;
    stack
        .gatehouse
        .enabled_session("ken@acme.test", &["admin"])
        .await;
    for (sub, email) in [
        ("kelvin", "\u{212a}en@acme.test"),
        ("dotless", "adm\u{131}n@acme.test"),
        ("fullwidth", "\u{ff4b}en@acme.test"),
    ] {
        let mut browser = Browser::new();
        let page = sign_in_custom(
            &mut browser,
            &stack,
            "/admin/",
            &[("sub", sub), ("email", email), ("email_verified", "true")],
        )
        .await;
        assert!(
            !page.response.reached_upstream(),
            "{email}: {:#?}",
            page.hops
        );
        assert_eq!(
            page.url.path(),
            "/auth/welcome",
            "{email}: a new account, outside the org, not enabled: {:#?}",
            page.hops
        );
        let show = stack.gatehouse.cli_ok(&["user", "show", email]).await;
        assert!(show.contains("enabled:  no"), "{show}");
    }
    let ken = stack
        .gatehouse
        .cli_ok(&["user", "show", "ken@acme.test"])
        .await;
    assert!(ken.contains("identities: none"), "{ken}");
    let audit = audit_kinds(&stack).await;
    assert_eq!(
        audit
            .iter()
            .filter(|(k, d)| k == "provisioning_limited" && d.contains("not ASCII"))
            .count(),
        3,
        "{audit:?}"
    );
}

/// An IdP vouches only for its `trusted_email_domains` (by default its `domains`): another
/// customer's IdP asserting a verified acme.test address neither lands in Acme's org (which
/// auto-enables) nor links into an Acme account.
async fn an_idp_vouches_only_for_its_trusted_domains(backend: Backend) {
    let stack = stack(
        backend,
        vec![Idp {
            domains: &["globex.test"],
            ..Idp::main(false)
        }],
    )
    .await;
    acme_auto_enabled(&stack).await;
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &stack, "/dashboard", "alice").await;
    assert_eq!(page.url.path(), "/auth/welcome", "{:#?}", page.hops);
    let show = stack
        .gatehouse
        .cli_ok(&["user", "show", "alice@acme.test"])
        .await;
    assert!(
        show.contains("enabled:  no") && show.contains("org:      -"),
        "{show}"
    );
    let audit = audit_kinds(&stack).await;
    assert!(
        audit.iter().any(|(k, d)| k == "provisioning_limited"
            && d.contains("\"main\" is not trusted for email domain acme.test")),
        "{audit:?}"
    );
    // An existing Acme account is not linked into.
    stack
        .gatehouse
        .enabled_session("carol@acme.test", &["admin"])
        .await;
    let mut mallory = Browser::new();
    let page = sign_in_custom(
        &mut mallory,
        &stack,
        "/admin/",
        &[
            ("sub", "not-carol"),
            ("email", "carol@acme.test"),
            ("email_verified", "true"),
        ],
    )
    .await;
    assert_refused(&page, &mallory, "untrusted domain");
    assert!(page.body().contains("not trusted"), "{}", page.body());
    let carol = stack
        .gatehouse
        .cli_ok(&["user", "show", "carol@acme.test"])
        .await;
    assert!(carol.contains("identities: none"), "{carol}");
    // The IdP's own domain works as before.
    let page = sign_in(&mut Browser::new(), &stack, "/x", "carol").await;
    assert_eq!(page.url.path(), "/auth/welcome", "{:#?}", page.hops);
}

/// Amazon Cognito sends `"email_verified": "true"` (a string) in its ID tokens. That must not
/// refuse the login (it did: the token failed to parse); it counts as not verified, so it
/// neither links nor places.
async fn non_boolean_email_verified_in_the_id_token_signs_in_unverified(backend: Backend) {
    let stack = stack_with(backend, vec![Idp::main(false)], &["--claims-in-id-token"]).await;
    acme_auto_enabled(&stack).await;
    let mut browser = Browser::new();
    let page = sign_in_custom(
        &mut browser,
        &stack,
        "/dashboard",
        &[
            ("sub", "cognito-user"),
            ("email", "cog@acme.test"),
            ("email_verified", "string-true"),
        ],
    )
    .await;
    assert_eq!(
        page.url.path(),
        "/auth/welcome",
        "signed in, outside the auto-enabling org: {:#?}\n{}",
        page.hops,
        page.body()
    );
    assert!(session_cookie(&browser).is_some());
    let show = stack
        .gatehouse
        .cli_ok(&["user", "show", "cog@acme.test"])
        .await;
    assert!(
        show.contains("enabled:  no") && show.contains("org:      -"),
        "{show}"
    );
    // An existing account with that address is not linked into.
    stack.gatehouse.enabled_session("zoe@acme.test", &[]).await;
    let mut other = Browser::new();
    let page = sign_in_custom(
        &mut other,
        &stack,
        "/dashboard",
        &[
            ("sub", "cognito-zoe"),
            ("email", "zoe@acme.test"),
            ("email_verified", "string-true"),
        ],
    )
    .await;
    assert_refused(&page, &other, "string \"true\" in the ID token");
    let zoe = stack
        .gatehouse
        .cli_ok(&["user", "show", "zoe@acme.test"])
        .await;
    assert!(zoe.contains("identities: none"), "{zoe}");
}

/// `GET /auth/login` writes a login state. A loop of 10 000 starts from one client, with and
/// without sending the binding cookie back, leaves the table bounded, writes no audit row per
/// start (a metric counts them), and a real login afterwards still works.
async fn login_starts_leave_the_state_table_bounded(backend: Backend) {
    // The per-address rate limits off: the caps on pending logins and the audit sampling
    // alone must bound the table and the trail (tests/signin.rs covers the limits).
    let idp = Idp {
        extra: "\n[limits]\nlogin_starts_per_ip = 0\nfailed_callbacks_per_ip = 0\n",
        ..Idp::main(false)
    };
    let stack = stack(backend, vec![idp]).await;
    acme_auto_enabled(&stack).await;
    let http = stack.gatehouse.http;
    // Discovery happens on the first start.
    let first = support::send(http, "GET", "/auth/login?rd=%2F", &[], None).await;
    assert_eq!(first.status, 302, "{first:?}");
    let binding = first
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.split(';')
                .next()
                .filter(|p| p.starts_with("gatehouse-login="))
        })
        .expect("binding cookie")
        .to_owned();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let binding = binding.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..1250 {
                // Half the workers keep their cookie (a browser), half never send one (a script).
                let headers: Vec<(&str, &str)> = if worker % 2 == 0 {
                    vec![("cookie", binding.as_str())]
                } else {
                    vec![]
                };
                let r = support::send(
                    http,
                    "GET",
                    &format!("/auth/login?rd=%2F{i}"),
                    &headers,
                    None,
                )
                .await;
                assert_eq!(r.status, 302, "{r:?}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rows = stack.db.count("login_states").await;
    assert!(
        rows <= 1000,
        "10 000 login starts left {rows} login states (cap: 1000 per client address)"
    );
    let audit = audit_kinds(&stack).await;
    assert!(
        !audit.iter().any(|(k, _)| k == "login_started"),
        "one audit row per login start"
    );
    let metrics = support::send(stack.gatehouse.admin, "GET", "/metrics", &[], None).await;
    assert!(
        metrics
            .body
            .contains("gatehouse_login_starts_total{idp=\"main\"} 10001"),
        "{}",
        metrics.body
    );
    // Callbacks that match no login in progress cost a request each too: counted, and
    // audited once a minute per client address.
    for i in 0..200 {
        let r = support::send(
            http,
            "GET",
            &format!("/auth/callback?state=forged{i}&code=x"),
            &[],
            None,
        )
        .await;
        assert_eq!(r.status, 400, "{r:?}");
    }
    let audit = audit_kinds(&stack).await;
    let failures = audit.iter().filter(|(k, _)| k == "login_failed").count();
    assert_eq!(failures, 1, "{audit:?}");
    let metrics = support::send(stack.gatehouse.admin, "GET", "/metrics", &[], None).await;
    assert!(
        metrics
            .body
            .contains("gatehouse_logins_total{idp=\"unknown\",outcome=\"state_invalid\"} 200"),
        "{}",
        metrics.body
    );
    // A real login still completes.
    let page = sign_in(&mut Browser::new(), &stack, "/after", "alice").await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
}
