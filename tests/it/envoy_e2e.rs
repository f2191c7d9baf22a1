//! The decisions, end to end: a browser or API client → real Envoy → gatehouse (gRPC ext_authz)
//! → echo upstream, on SQLite and on PostgreSQL.

use crate::support;

use support::{BROWSER_ACCEPT, Backend, Stack};

on_both_backends!(
    public_path_is_open,
    browser_without_session_is_sent_to_login,
    api_without_session_gets_401_json,
    valid_session_reaches_upstream_with_identity_and_without_secrets,
    missing_role_is_forbidden_until_granted,
    account_not_enabled_goes_to_welcome,
    revoked_sessions_are_denied_at_once,
    bad_cookies_are_denied_and_gatehouse_keeps_serving,
    normalization_tricks_do_not_reach_admin,
    denied_and_unmatched_routes_are_forbidden,
);

fn cookie(token: &str) -> String {
    format!("gatehouse={token}")
}

async fn public_path_is_open(backend: Backend) {
    let stack = Stack::start(backend).await;
    let r = stack
        .get("/public/index.html", &[("accept", BROWSER_ACCEPT)])
        .await;
    assert!(r.reached_upstream(), "{r:?}");
    assert_eq!(r.json()["path"], "/public/index.html");
}

async fn browser_without_session_is_sent_to_login(backend: Backend) {
    let stack = Stack::start(backend).await;
    let r = stack
        .get(
            "/reports/q3?year=2026&x=a%20b",
            &[("accept", BROWSER_ACCEPT)],
        )
        .await;
    assert_eq!(r.status, 302, "{r:?}");
    let location = url::Url::parse(r.location().expect("Location")).expect("absolute URL");
    assert_eq!(
        location.as_str().split('?').next(),
        Some(format!("{}/auth/login", stack.base).as_str())
    );
    let rd: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert_eq!(
        rd,
        vec![(
            "rd".to_owned(),
            format!("{}/reports/q3?year=2026&x=a%20b", stack.base)
        )]
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

async fn api_without_session_gets_401_json(backend: Backend) {
    let stack = Stack::start(backend).await;
    for (path, accept) in [
        ("/api/orders", "application/json"),
        // An API route never redirects, even for a browser.
        ("/api/orders", BROWSER_ACCEPT),
        // A non-browser client on a browser route gets 401 too.
        ("/reports", "*/*"),
    ] {
        let r = stack.get(path, &[("accept", accept)]).await;
        assert_eq!(r.status, 401, "{path} {accept}: {r:?}");
        assert_eq!(r.json()["error"], "unauthenticated");
        assert!(r.header("www-authenticate").is_some(), "{r:?}");
        assert!(r.location().is_none());
    }
}

async fn valid_session_reaches_upstream_with_identity_and_without_secrets(backend: Backend) {
    let stack = Stack::start(backend).await;
    let token = stack
        .gatehouse
        .enabled_session("Alice@Acme.test", &["dev", "admin"])
        .await;
    let cookies = format!("theme=dark; {}; tracking=xyz", cookie(&token));
    let r = stack
        .get(
            "/dashboard",
            &[
                ("accept", BROWSER_ACCEPT),
                ("cookie", &cookies),
                (
                    "x-gatehouse-user-id",
                    "00000000-0000-0000-0000-000000000000",
                ),
                ("x-gatehouse-roles", "superuser"),
                ("x-gatehouse-impersonator-id", "spoofed"),
                // Alice has no org: gatehouse sends no org header, and removes this one.
                ("x-gatehouse-org-id", "00000000-0000-0000-0000-00000000beef"),
                // A name gatehouse never sets.
                ("x-gatehouse-superuser", "yes"),
                ("x-forwarded-host", "evil.test"),
            ],
        )
        .await;
    assert!(r.reached_upstream(), "{r:?}");
    assert_eq!(r.upstream_header("x-gatehouse-org-id"), None, "{r:?}");
    assert_eq!(r.upstream_header("x-gatehouse-superuser"), None, "{r:?}");
    assert_eq!(r.upstream_header("x-forwarded-host"), None, "{r:?}");
    let show = stack
        .gatehouse
        .cli_ok(&["user", "show", "alice@acme.test"])
        .await;
    let user_id = show
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(str::trim)
        .expect("user id")
        .to_owned();
    assert_eq!(r.upstream_header("x-gatehouse-user-id"), Some(user_id));
    assert_eq!(
        r.upstream_header("x-gatehouse-email").as_deref(),
        Some("alice@acme.test")
    );
    assert_eq!(
        r.upstream_header("x-gatehouse-roles").as_deref(),
        Some("admin,dev")
    );
    assert_eq!(r.upstream_header("x-gatehouse-impersonator-id"), None);
    let upstream_cookie = r.upstream_header("cookie").expect("other cookies pass");
    assert_eq!(upstream_cookie, "theme=dark; tracking=xyz");
    assert!(!upstream_cookie.contains(&token));
    // Every x-gatehouse-* header the upstream saw was set by gatehouse, once.
    let names = r.upstream_header_names();
    let user_id_headers = names.iter().filter(|n| *n == "x-gatehouse-user-id").count();
    assert_eq!(user_id_headers, 1, "{names:?}");

    // With only the session cookie, the upstream gets no cookie header at all.
    let r = stack
        .get("/dashboard", &[("cookie", &cookie(&token))])
        .await;
    assert!(r.reached_upstream(), "{r:?}");
    assert_eq!(r.upstream_header("cookie"), None);
}

async fn missing_role_is_forbidden_until_granted(backend: Backend) {
    let stack = Stack::start(backend).await;
    let token = stack
        .gatehouse
        .enabled_session("bob@acme.test", &["dev"])
        .await;
    let c = cookie(&token);
    let r = stack
        .get(
            "/admin/users",
            &[("accept", BROWSER_ACCEPT), ("cookie", &c)],
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let r = stack
        .get(
            "/admin/users",
            &[("accept", "application/json"), ("cookie", &c)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
    // The grant applies to the already-cached session at once.
    stack
        .gatehouse
        .cli_ok(&["user", "grant", "bob@acme.test", "admin"])
        .await;
    let r = stack.get("/admin/users", &[("cookie", &c)]).await;
    assert!(r.reached_upstream(), "{r:?}");
    stack
        .gatehouse
        .cli_ok(&["user", "revoke", "bob@acme.test", "admin"])
        .await;
    let r = stack.get("/admin/users", &[("cookie", &c)]).await;
    assert_eq!(r.status, 403, "{r:?}");
}

async fn account_not_enabled_goes_to_welcome(backend: Backend) {
    let stack = Stack::start(backend).await;
    // A new user is not enabled by default.
    let token = stack.gatehouse.session_for("new@acme.test").await;
    let c = cookie(&token);
    let r = stack
        .get("/dashboard", &[("accept", BROWSER_ACCEPT), ("cookie", &c)])
        .await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.location(),
        Some(format!("{}/auth/welcome", stack.base).as_str())
    );
    let r = stack.get("/api/x", &[("cookie", &c)]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "account_disabled");
    // Enabling lets the same (cached) session through at once.
    stack
        .gatehouse
        .cli_ok(&["user", "enable", "new@acme.test"])
        .await;
    let r = stack.get("/dashboard", &[("cookie", &c)]).await;
    assert!(r.reached_upstream(), "{r:?}");
}

async fn revoked_sessions_are_denied_at_once(backend: Backend) {
    let stack = Stack::start(backend).await;
    let alice = cookie(
        &stack
            .gatehouse
            .enabled_session("alice@acme.test", &[])
            .await,
    );
    let alice2 = cookie(&stack.gatehouse.session_for("alice@acme.test").await);
    let carol = cookie(
        &stack
            .gatehouse
            .enabled_session("carol@globex.test", &[])
            .await,
    );
    for c in [&alice, &alice2, &carol] {
        // Each request warms the cache, so the revocation must reach the cache, not just the DB.
        let r = stack.get("/app", &[("cookie", c)]).await;
        assert!(r.reached_upstream(), "{r:?}");
    }
    stack
        .gatehouse
        .cli_ok(&["session", "revoke", "--user", "alice@acme.test"])
        .await;
    for c in [&alice, &alice2] {
        let r = stack
            .get("/app", &[("accept", "application/json"), ("cookie", c)])
            .await;
        assert_eq!(r.status, 401, "revoked session still works: {r:?}");
    }
    let r = stack.get("/app", &[("cookie", &carol)]).await;
    assert!(
        r.reached_upstream(),
        "another user's session must survive: {r:?}"
    );

    // Disabling a user ends their sessions too.
    stack
        .gatehouse
        .cli_ok(&["user", "disable", "carol@globex.test"])
        .await;
    let r = stack
        .get(
            "/app",
            &[("accept", "application/json"), ("cookie", &carol)],
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");

    // --all ends everything.
    let dave = cookie(
        &stack
            .gatehouse
            .enabled_session("dave@globex.test", &[])
            .await,
    );
    assert!(
        stack
            .get("/app", &[("cookie", &dave)])
            .await
            .reached_upstream()
    );
    stack
        .gatehouse
        .cli_ok(&["session", "revoke", "--all"])
        .await;
    let r = stack
        .get("/app", &[("accept", "application/json"), ("cookie", &dave)])
        .await;
    assert_eq!(r.status, 401, "{r:?}");
}

async fn bad_cookies_are_denied_and_gatehouse_keeps_serving(backend: Backend) {
    let stack = Stack::start(backend).await;
    let token = stack
        .gatehouse
        .enabled_session("alice@acme.test", &[])
        .await;
    let valid = cookie(&token);
    let other = stack.gatehouse.enabled_session("eve@acme.test", &[]).await;
    let oversized = format!("gatehouse={}", "A".repeat(20_000));
    let doubled = format!("{valid}; gatehouse={other}");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("garbage", vec![("cookie", "gatehouse=not-a-token")]),
        ("empty", vec![("cookie", "gatehouse=")]),
        (
            "unknown token",
            vec![(
                "cookie",
                "gatehouse=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )],
        ),
        ("oversized", vec![("cookie", &oversized)]),
        ("duplicated in one header", vec![("cookie", &doubled)]),
        (
            "duplicated across headers",
            vec![("cookie", &valid), ("cookie", &valid)],
        ),
        ("non-ASCII", vec![("cookie", "gatehouse=\u{e9}t\u{e9}")]),
        ("separator soup", vec![("cookie", ";;;=;=gatehouse;,,")]),
    ];
    for (what, mut headers) in cases {
        headers.push(("accept", "application/json"));
        let r = stack.get("/app", &headers).await;
        assert_eq!(r.status, 401, "{what}: {r:?}");
        assert_eq!(r.json()["error"], "unauthenticated", "{what}");
    }
    // Bytes that are not UTF-8.
    let r = support::client::send_bytes(
        stack.envoy.listener,
        "GET",
        "/app",
        &[
            ("cookie", b"gatehouse=\xff\xfe\xfd"),
            ("accept", b"application/json"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 401, "invalid UTF-8: {r:?}");
    // Headers too large for Envoy never reach gatehouse: still a clean refusal.
    let huge = format!("gatehouse={}", "A".repeat(70_000));
    let r = stack.get("/app", &[("cookie", &huge)]).await;
    assert_eq!(r.status, 431, "{r:?}");
    // Still serving.
    let r = stack.get("/app", &[("cookie", &valid)]).await;
    assert!(r.reached_upstream(), "{r:?}");
}

async fn normalization_tricks_do_not_reach_admin(backend: Backend) {
    let stack = Stack::start(backend).await;
    let token = stack
        .gatehouse
        .enabled_session("bob@acme.test", &["dev"])
        .await;
    let c = cookie(&token);
    for path in [
        "/admin/",
        "/admin",
        "/public/../admin/",
        "/public/%2e%2e/admin/",
        "/public/%2E%2E/admin/",
        "/public/.%2e/admin/",
        "//admin/",
        "/./admin/",
        "/public/..%2Fadmin/",
        "/public%2F..%2Fadmin/",
        "/admin%2F",
        "/public/..%5Cadmin/",
        "/%61dmin/",
        "/admin/#x",
        "/public/..;/admin/",
        "/admin;x/",
        "/public/x/../../admin/",
    ] {
        let r = stack
            .get(path, &[("accept", "application/json"), ("cookie", &c)])
            .await;
        assert!(
            matches!(r.status, 400 | 403 | 404),
            "{path} got {} {:?}",
            r.status,
            r.body
        );
        assert!(!r.reached_upstream(), "{path} reached the upstream");
    }
    // The query is never part of the match.
    let r = stack
        .get("/private?x=/public/", &[("accept", "application/json")])
        .await;
    assert_eq!(r.status, 401, "{r:?}");
}

async fn denied_and_unmatched_routes_are_forbidden(backend: Backend) {
    let stack = Stack::start(backend).await;
    let token = stack
        .gatehouse
        .enabled_session("alice@acme.test", &["admin"])
        .await;
    let r = stack
        .get(
            "/blocked/x",
            &[("accept", "application/json"), ("cookie", &cookie(&token))],
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"], "forbidden");
    let r = stack.get("/blocked/x", &[]).await;
    assert_eq!(r.status, 403, "no session needed to be refused: {r:?}");
}

/// With the store down, an uncached session gets 503, never an allow; a cached one still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_fails_closed_postgres() {
    let stack = Stack::start(Backend::Postgres).await;
    let cached = cookie(
        &stack
            .gatehouse
            .enabled_session("alice@acme.test", &[])
            .await,
    );
    let uncached = cookie(&stack.gatehouse.enabled_session("bob@acme.test", &[]).await);
    assert!(
        stack
            .get("/app", &[("cookie", &cached)])
            .await
            .reached_upstream()
    );

    // Take the database away: refuse new connections and cut the existing ones.
    let db_name = stack.db.url.rsplit('/').next().expect("db name").to_owned();
    let admin = support::db::postgres_admin_url();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .expect("admin");
    sqlx::query(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS false"))
        .execute(&mut conn)
        .await
        .expect("disallow connections");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db_name)
        .execute(&mut conn)
        .await
        .expect("terminate");

    for accept in ["application/json", BROWSER_ACCEPT] {
        let r = stack
            .get("/app", &[("accept", accept), ("cookie", &uncached)])
            .await;
        assert_eq!(r.status, 503, "{accept}: {r:?}");
        assert!(!r.reached_upstream());
    }
    let r = stack.get("/app", &[("cookie", &cached)]).await;
    assert!(
        r.reached_upstream(),
        "a cached session needs no database: {r:?}"
    );
    let ready = support::send(stack.gatehouse.admin, "GET", "/readyz", &[], None).await;
    assert_eq!(ready.status, 503, "{ready:?}");

    sqlx::query(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"))
        .execute(&mut conn)
        .await
        .expect("allow connections");
    // The health probe notices within a second or so; no restart.
    let mut r = stack.get("/app", &[("cookie", &uncached)]).await;
    for _ in 0..50 {
        if r.reached_upstream() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        r = stack.get("/app", &[("cookie", &uncached)]).await;
    }
    assert!(
        r.reached_upstream(),
        "recovers once the database is back: {r:?}"
    );
}

#[tokio::test]
async fn shipped_envoy_configs_validate() {
    for config in ["envoy/envoy.yaml", "envoy/envoy-http-authz.yaml"] {
        let output = tokio::process::Command::new(support::processes::envoy_bin())
            .args(["--mode", "validate", "-c"])
            .arg(support::root().join(config))
            .output()
            .await
            .expect("run envoy");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("OK"),
            "{config}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
