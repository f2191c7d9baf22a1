//! The admin API (`/admin/v1/*`): every operation, its errors, its authorization, and that it
//! shares its implementation (and audit trail) with the CLI; the audit API and the audit page
//! over the events of a real login.

use crate::support;

use serde_json::{Value, json};
use support::admin::{self, Api};
use support::browser::Browser;
use support::{Backend, DirectStack, Gatehouse, StackUrls, TestDb, base_config, send};

on_both_backends!(
    every_operation_and_401_without_the_token,
    audit_api_and_page
);

const TOKEN_KEY_VAR: &str = "GH_TEST_TOKEN_KEY";

async fn start(backend: Backend, extra: &str, dir: &std::path::Path) -> (TestDb, Gatehouse) {
    let db = TestDb::create(backend).await;
    let urls = StackUrls {
        base: "http://127.0.0.1:1".into(),
        database: db.url.clone(),
        issuers: vec![],
    };
    let config = format!(
        "{}{}{extra}{}",
        base_config(&urls),
        admin::SECTION,
        support::ROUTES
    );
    let gh = Gatehouse::start(
        dir,
        &config,
        &[
            admin::env(),
            (
                TOKEN_KEY_VAR,
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
        ],
    )
    .await;
    (db, gh)
}

async fn every_operation_and_401_without_the_token(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (_db, gh) = start(
        backend,
        &format!("\n[token]\nenabled = true\nencryption_key_env = \"{TOKEN_KEY_VAR}\"\n"),
        dir.path(),
    )
    .await;
    let api = Api::new(gh.admin);

    // Without the token, or with a wrong one: 401 everywhere, and nothing happens.
    let routes = [
        ("GET", "/admin/v1/orgs"),
        ("POST", "/admin/v1/orgs"),
        ("GET", "/admin/v1/users"),
        ("GET", "/admin/v1/users/alice@acme.test"),
        ("POST", "/admin/v1/users/alice@acme.test/enable"),
        ("POST", "/admin/v1/users/alice@acme.test/disable"),
        ("PUT", "/admin/v1/users/alice@acme.test/roles/admin"),
        ("DELETE", "/admin/v1/users/alice@acme.test/roles/admin"),
        (
            "DELETE",
            "/admin/v1/users/alice@acme.test/identities?issuer=x&subject=y",
        ),
        ("POST", "/admin/v1/sessions"),
        ("DELETE", "/admin/v1/sessions?all=true"),
        ("GET", "/admin/v1/keys"),
        ("POST", "/admin/v1/keys/rotate"),
        ("GET", "/admin/v1/audit"),
    ];
    for (method, path) in routes {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic eDp5"),
            Some("Bearer "),
        ] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("authorization", a)).into_iter().collect();
            let body = Some(("application/json", b"{}".to_vec()));
            let r = send(gh.admin, method, path, &headers, body).await;
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}: {r:?}");
            assert_eq!(r.json()["error"], "unauthorized");
            assert!(r.header("www-authenticate").is_some());
        }
    }
    let audit = api.get("/admin/v1/audit").await;
    assert_eq!(audit["events"].as_array().unwrap().len(), 0, "{audit}");

    // Orgs.
    let org = api
        .expect(
            201,
            "POST",
            "/admin/v1/orgs",
            Some(json!({ "name": "Acme", "domains": ["Acme.test", "acme.example"], "auto_enable": false })),
        )
        .await;
    assert_eq!(org["domains"], json!(["acme.example", "acme.test"]));
    let orgs = api.get("/admin/v1/orgs").await;
    assert_eq!(orgs[0]["name"], "Acme");
    let conflict = api
        .expect(
            409,
            "POST",
            "/admin/v1/orgs",
            Some(json!({ "name": "Other", "domains": ["acme.test"] })),
        )
        .await;
    assert_eq!(conflict["error"], "conflict");
    for bad in [
        json!({ "name": "NoDomains", "domains": [] }),
        json!({ "name": "Bad", "domains": ["not a domain"] }),
        json!({ "name": "Typo", "domains": ["x.test"], "auto_enabel": true }),
        json!({ "domains": ["x.test"] }),
    ] {
        let r = api.call("POST", "/admin/v1/orgs", Some(bad.clone())).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert_eq!(r.json()["error"], "invalid", "{r:?}");
    }

    // Sessions create users (placed by domain, not enabled).
    let created = api
        .expect(
            201,
            "POST",
            "/admin/v1/sessions",
            Some(json!({ "user": "Alice@Acme.test" })),
        )
        .await;
    assert_eq!(created["user_created"], true);
    assert_eq!(created["user"]["email"], "alice@acme.test");
    assert_eq!(created["user"]["org_id"], org["id"]);
    assert_eq!(created["user"]["enabled"], false);
    let token = created["token"].as_str().unwrap().to_owned();
    let alice_id = created["user"]["id"].as_str().unwrap().to_owned();
    for email in ["bob@acme.test", "carol@elsewhere.test"] {
        api.expect(
            201,
            "POST",
            "/admin/v1/sessions",
            Some(json!({ "user": email })),
        )
        .await;
    }
    let authz = |token: String| {
        let http = gh.http;
        async move {
            let cookie = format!("gatehouse={token}");
            send(
                http,
                "GET",
                "/authz/app",
                &[("cookie", &cookie), ("accept", "application/json")],
                None,
            )
            .await
            .status
        }
    };
    assert_eq!(authz(token.clone()).await, 403, "not enabled yet");

    // Users: list, search, pages, one by email or id.
    let users = api.get("/admin/v1/users").await;
    let emails: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        ["alice@acme.test", "bob@acme.test", "carol@elsewhere.test"]
    );
    assert_eq!(users["next_cursor"], Value::Null);
    let found = api.get("/admin/v1/users?search=ACME").await;
    assert_eq!(found["users"].as_array().unwrap().len(), 2);
    let page1 = api.get("/admin/v1/users?limit=2").await;
    assert_eq!(page1["users"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let page2 = api
        .get(&format!("/admin/v1/users?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(page2["users"][0]["email"], "carol@elsewhere.test");
    assert_eq!(page2["next_cursor"], Value::Null);
    assert_eq!(
        api.call("GET", "/admin/v1/users?limit=0", None)
            .await
            .status,
        400
    );
    let by_email = api.get("/admin/v1/users/alice@acme.test").await;
    let by_id = api.get(&format!("/admin/v1/users/{alice_id}")).await;
    assert_eq!(by_email, by_id);
    assert_eq!(by_email["org"]["name"], "Acme");
    assert_eq!(by_email["live_sessions"], 1);
    let missing = api
        .expect(404, "GET", "/admin/v1/users/nobody@acme.test", None)
        .await;
    assert_eq!(missing["error"], "not_found");

    // Enable, roles: in effect on this replica when the call returns.
    let enabled = api
        .expect(200, "POST", "/admin/v1/users/alice@acme.test/enable", None)
        .await;
    assert_eq!(enabled["changed"], true);
    assert_eq!(enabled["user"]["enabled"], true);
    let again = api
        .expect(200, "POST", "/admin/v1/users/alice@acme.test/enable", None)
        .await;
    assert_eq!(again["changed"], false);
    assert_eq!(authz(token.clone()).await, 200);
    let granted = api
        .expect(
            200,
            "PUT",
            &format!("/admin/v1/users/{alice_id}/roles/admin"),
            None,
        )
        .await;
    assert_eq!(granted["user"]["roles"], json!(["admin"]));
    let bad_role = api
        .call("PUT", "/admin/v1/users/alice@acme.test/roles/a,b", None)
        .await;
    assert_eq!(bad_role.status, 400, "{bad_role:?}");
    let revoked = api
        .expect(
            200,
            "DELETE",
            "/admin/v1/users/alice@acme.test/roles/admin",
            None,
        )
        .await;
    assert_eq!(
        (revoked["changed"].clone(), revoked["user"]["roles"].clone()),
        (json!(true), json!([]))
    );
    let unlink = api
        .expect(
            404,
            "DELETE",
            "/admin/v1/users/alice@acme.test/identities?issuer=https%3A%2F%2Fidp.test&subject=x",
            None,
        )
        .await;
    assert_eq!(unlink["error"], "not_found");
    let disabled = api
        .expect(200, "POST", "/admin/v1/users/alice@acme.test/disable", None)
        .await;
    assert_eq!(disabled["user"]["enabled"], false);
    assert_eq!(
        authz(token.clone()).await,
        401,
        "disable ends the session at once"
    );

    // Session revoke: by user, everyone, and neither.
    let bob = api
        .expect(
            201,
            "POST",
            "/admin/v1/sessions",
            Some(json!({ "user": "bob@acme.test" })),
        )
        .await;
    assert_eq!(bob["user_created"], false);
    let r = api
        .expect(200, "DELETE", "/admin/v1/sessions?user=bob@acme.test", None)
        .await;
    assert_eq!(r["revoked"], 2);
    let r = api
        .expect(200, "DELETE", "/admin/v1/sessions?all=true", None)
        .await;
    assert_eq!(r["revoked"], 1, "carol's");
    for bad in ["", "?all=true&user=bob@acme.test", "?all=maybe"] {
        let r = api
            .call("DELETE", &format!("/admin/v1/sessions{bad}"), None)
            .await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }

    // Keys.
    let keys = api.get("/admin/v1/keys").await;
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["state"], "current");
    let rotated = api.expect(201, "POST", "/admin/v1/keys/rotate", None).await;
    let keys = api.get("/admin/v1/keys").await;
    let next: Vec<&Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == "next")
        .collect();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["kid"], rotated["kid"]);
    let now = api
        .expect(
            201,
            "POST",
            "/admin/v1/keys/rotate",
            Some(json!({ "now": true })),
        )
        .await;
    let keys = api.get("/admin/v1/keys").await;
    let current: Vec<&Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == "current")
        .collect();
    assert_eq!(current[0]["kid"], now["kid"]);

    // Every change is audited with the API as actor and the caller's address.
    let events = api.get("/admin/v1/audit?limit=1000").await;
    let events = events["events"].as_array().unwrap();
    for kind in [
        "org_created",
        "user_created",
        "session_created",
        "user_enabled",
        "role_granted",
        "role_revoked",
        "user_disabled",
        "session_revoked",
        "key_rotated",
    ] {
        let e = events
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {events:#?}"));
        assert_eq!(e["actor"], "admin-api", "{e}");
        if kind != "user_created" {
            assert_eq!(e["ip"], "127.0.0.1", "{e}");
        }
    }

    // One implementation: the CLI sees the API's changes, and its own are in the same trail.
    let show = gh.cli_ok(&["user", "show", &alice_id]).await;
    assert!(
        show.contains("alice@acme.test") && show.contains("enabled:  no"),
        "{show}"
    );
    gh.cli_ok(&["user", "enable", "alice@acme.test"]).await;
    let latest = api.get("/admin/v1/audit?limit=1").await;
    assert_eq!(latest["events"][0]["kind"], "user_enabled");
    assert!(
        latest["events"][0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("cli"),
        "{latest}"
    );
}

async fn audit_api_and_page(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stack = DirectStack::start(backend).await;
    let base = stack.base.clone();
    let config = format!(
        "{}{}{}{}",
        stack.config,
        admin::SECTION,
        support::op::idp_toml("main", &stack.op.issuer),
        support::ROUTES
    );
    let gh = Gatehouse::start(dir.path(), &config, &[admin::env()]).await;
    let api = Api::new(gh.admin);
    gh.cli_ok(&[
        "org",
        "add",
        "Acme",
        "--domain",
        "acme.test",
        "--auto-enable",
    ])
    .await;

    // A real login, and a failed one (a callback nobody started).
    let mut browser = Browser::new();
    let page =
        support::op::sign_in_at(&mut browser, &format!("{base}/auth/login?rd=/x"), "alice").await;
    assert!(
        browser.cookie("127.0.0.1", "gatehouse").is_some(),
        "{:#?}",
        page.hops
    );
    let failed = send(
        gh.http,
        "GET",
        "/auth/callback?state=forged&code=x",
        &[],
        None,
    )
    .await;
    assert_eq!(failed.status, 400);

    // The API: without the token, 401.
    let r = send(
        gh.admin,
        "GET",
        "/admin/v1/audit?user=alice@acme.test",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 401);

    let all = api.get("/admin/v1/audit").await;
    let events = all["events"].as_array().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "login_failed",
            "session_created",
            "login_succeeded",
            "user_provisioned",
            "org_created"
        ],
        "newest first: {all:#}"
    );
    let alice = &events[2];
    assert_eq!(alice["email"], "alice@acme.test");
    assert_eq!(alice["idp"], "main");
    assert_eq!(alice["outcome"], "success");
    assert_eq!(
        alice["ip"], "127.0.0.1",
        "who signed in from where: {alice}"
    );
    let alice_id = alice["user_id"].as_str().unwrap().to_owned();

    // Filters: user (id, email, part of an email), kind, outcome, idp, time.
    let count = |q: &'static str| {
        let api = &api;
        async move {
            api.get(&format!("/admin/v1/audit{q}")).await["events"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    let of_alice = events.iter().filter(|e| e["user_id"] == alice_id).count();
    assert_eq!(of_alice, 3, "provisioned, signed in, session: {all:#}");
    assert_eq!(
        api.get(&format!("/admin/v1/audit?user={alice_id}")).await["events"]
            .as_array()
            .unwrap()
            .len(),
        of_alice
    );
    assert_eq!(count("?user=alice@acme.test").await, of_alice);
    assert_eq!(count("?user=ALICE").await, of_alice, "part of an email");
    assert_eq!(count("?user=nobody@acme.test").await, 0);
    assert_eq!(count("?kind=login_succeeded").await, 1);
    assert_eq!(count("?outcome=failure").await, 1);
    let via_main = events
        .iter()
        .filter(|e| e["outcome"] == "success" && e["idp"] == "main")
        .count();
    assert!(via_main >= 2, "{all:#}");
    assert_eq!(count("?outcome=success&idp=main").await, via_main);
    assert_eq!(count("?idp=other").await, 0);
    assert_eq!(count("?since=2999-01-01").await, 0);
    assert_eq!(count("?until=2000-01-01T00:00:00Z").await, 0);
    assert_eq!(count("?since=2000-01-01&until=2999-12-31").await, 5);
    for bad in [
        "?kind=nope",
        "?outcome=maybe",
        "?since=yesterday",
        "?limit=0",
        "?cursor=x",
    ] {
        let r = api
            .call("GET", &format!("/admin/v1/audit{bad}"), None)
            .await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert_eq!(r.json()["error"], "invalid");
    }
    // Pages of one: the same events, in the same order, then no cursor.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/admin/v1/audit?limit=1&cursor={c}"),
            None => "/admin/v1/audit?limit=1".to_owned(),
        };
        let page = api.get(&q).await;
        paged.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, events);

    // The page: the token first, once; then a cookie.
    let r = send(gh.admin, "GET", "/admin/audit", &[], None).await;
    assert_eq!(r.status, 401);
    assert!(
        r.body.contains("name=\"token\""),
        "a sign-in form: {}",
        r.body
    );
    let form = |token: &str| {
        Some((
            "application/x-www-form-urlencoded",
            format!("token={token}").into_bytes(),
        ))
    };
    let wrong = send(gh.admin, "POST", "/admin/audit/session", &[], form("nope")).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let signed_in = send(
        gh.admin,
        "POST",
        "/admin/audit/session",
        &[],
        form(admin::TOKEN),
    )
    .await;
    assert_eq!(signed_in.status, 303, "{signed_in:?}");
    let set_cookie = signed_in.header("set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=3600", "Path=/admin"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains(admin::TOKEN),
        "the token is not the cookie"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = |q: String| {
        let cookie = cookie.clone();
        let addr = gh.admin;
        async move {
            let r = send(
                addr,
                "GET",
                &format!("/admin/audit{q}"),
                &[("cookie", &cookie)],
                None,
            )
            .await;
            assert_eq!(r.status, 200, "{q}: {r:?}");
            assert_eq!(r.header("cache-control"), Some("no-store"));
            r.body
        }
    };
    // An event's kind as a row shows it (the filter's options name every kind too).
    let row = |kind: &str| format!("<span class=\"kind\">{kind}</span>");
    let html = page(String::new()).await;
    for kind in kinds.iter().copied() {
        assert!(html.contains(&row(kind)), "{kind} missing from the page");
    }
    assert!(
        html.contains(&format!("href=\"/admin/audit?user={alice_id}\"")),
        "user links"
    );
    // The newest first, as in the API.
    let at = |needle: &str| html.find(needle).unwrap_or_else(|| panic!("{needle}"));
    assert!(at(&row("login_failed")) < at(&row("login_succeeded")));

    // One user's timeline: the card, and only their events.
    let timeline = page(format!("?user={alice_id}")).await;
    assert!(timeline.contains("Live sessions"), "the user card");
    assert!(timeline.contains(&row("login_succeeded")) && !timeline.contains(&row("login_failed")));
    // Filters and paging through the page's own links.
    let failures = page("?outcome=failure".into()).await;
    assert!(failures.contains(&row("login_failed")) && !failures.contains(&row("login_succeeded")));
    let first = page("?limit=2".into()).await;
    let older = first
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|h| h.contains("cursor="))
        .expect("an Older link")
        .replace("&amp;", "&");
    let second = page(older.trim_start_matches("/admin/audit").to_owned()).await;
    assert!(second.contains(&row("user_provisioned")) && !second.contains(&row("login_failed")));
    // The bearer token works too; a bad filter is a page, not a crash.
    let auth = format!("Bearer {}", admin::TOKEN);
    let r = send(
        gh.admin,
        "GET",
        "/admin/audit?kind=nope",
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("kind"), "{}", r.body);
    // Signing out clears the cookie.
    let out = send(
        gh.admin,
        "POST",
        "/admin/audit/logout",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}
