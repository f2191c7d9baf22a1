//! `/authz` forward-auth: the same decisions as ext_authz, called directly (as nginx, Traefik
//! and Caddy do) and through Envoy's HTTP ext_authz filter.

use crate::support;

use support::{BROWSER_ACCEPT, Backend, Stack, StackOptions, StackUrls, base_config, send};

on_both_backends!(same_decisions_as_ext_authz, envoy_http_ext_authz_mode);

async fn same_decisions_as_ext_authz(backend: Backend) {
    let stack = Stack::start(backend).await;
    let gh = &stack.gatehouse;
    let admin = format!(
        "gatehouse={}",
        gh.enabled_session("alice@acme.test", &["admin"]).await
    );
    let plain = format!(
        "gatehouse={}",
        gh.enabled_session("bob@acme.test", &[]).await
    );
    let pending = format!("gatehouse={}", gh.session_for("new@acme.test").await);
    let forwarded = |uri: &'static str| {
        vec![
            ("x-forwarded-uri", uri),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
        ]
    };
    // what, forwarded-uri, cookie, accept, status, location, json error
    type Row<'a> = (
        &'a str,
        &'static str,
        Option<&'a str>,
        &'a str,
        u16,
        Option<String>,
        Option<&'a str>,
    );
    let cases: Vec<Row> = vec![
        ("public", "/public/x", None, BROWSER_ACCEPT, 200, None, None),
        (
            "browser, no session",
            "/app?x=1",
            None,
            BROWSER_ACCEPT,
            302,
            Some(format!(
                "{}/auth/login?rd=https%3A%2F%2Fapp.example.com%2Fapp%3Fx%3D1",
                stack.base
            )),
            None,
        ),
        (
            "api, no session",
            "/api/x",
            None,
            "application/json",
            401,
            None,
            Some("unauthenticated"),
        ),
        (
            "valid session",
            "/app",
            Some(&plain),
            BROWSER_ACCEPT,
            200,
            None,
            None,
        ),
        (
            "missing role",
            "/admin/",
            Some(&plain),
            "application/json",
            403,
            None,
            Some("forbidden"),
        ),
        (
            "role held",
            "/admin/",
            Some(&admin),
            "application/json",
            200,
            None,
            None,
        ),
        (
            "not enabled, browser",
            "/app",
            Some(&pending),
            BROWSER_ACCEPT,
            302,
            Some(format!("{}/auth/welcome", stack.base)),
            None,
        ),
        (
            "not enabled, api",
            "/api/x",
            Some(&pending),
            "application/json",
            403,
            None,
            Some("account_disabled"),
        ),
        (
            "deny route",
            "/blocked/",
            Some(&admin),
            "application/json",
            403,
            None,
            Some("forbidden"),
        ),
        (
            "ambiguous path",
            "/a%2Fb",
            Some(&admin),
            "application/json",
            400,
            None,
            Some("invalid_path"),
        ),
        (
            "dot-dot trick",
            "/public/../admin/",
            Some(&plain),
            "application/json",
            403,
            None,
            Some("forbidden"),
        ),
    ];
    for (what, uri, cookie, accept, status, location, error) in cases {
        let mut headers = forwarded(uri);
        headers.push(("accept", accept));
        if let Some(c) = cookie {
            headers.push(("cookie", c));
        }
        let r = send(gh.http, "GET", "/authz", &headers, None).await;
        assert_eq!(r.status, status, "{what}: {r:?}");
        if let Some(location) = &location {
            assert_eq!(r.location(), Some(location.as_str()), "{what}");
        }
        if let Some(error) = error {
            assert_eq!(r.json()["error"], error, "{what}");
        }
        if status == 200 {
            assert_eq!(r.body, "", "{what}: allow is exactly 200 with no body");
        }
    }
    // On allow, the identity travels as response headers, with the cookie the upstream
    // should get instead of the client's.
    let mut headers = forwarded("/app");
    let cookies = format!("theme=dark; {plain}");
    headers.push(("cookie", &cookies));
    let r = send(gh.http, "GET", "/authz", &headers, None).await;
    assert_eq!(r.header("x-gatehouse-email"), Some("bob@acme.test"));
    assert!(r.header("x-gatehouse-user-id").is_some());
    assert_eq!(r.header("cookie"), Some("theme=dark"));
    // Public routes still answer every identity header, empty, so a proxy copying them
    // overwrites whatever the client sent.
    let mut headers = forwarded("/public/x");
    headers.push(("x-gatehouse-user-id", "spoofed"));
    let r = send(gh.http, "GET", "/authz", &headers, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-gatehouse-user-id"), Some(""));
    assert_eq!(r.header("x-gatehouse-email"), Some(""));

    // Requests that do not say unambiguously what to authorize are refused, not guessed.
    let r = send(gh.http, "GET", "/authz", &[("cookie", &admin)], None).await;
    assert_eq!(r.status, 400, "bare /authz must not be judged as /: {r:?}");
    let repeated = [
        ("x-forwarded-uri", "/public/x"),
        ("x-forwarded-uri", "/admin/"),
        ("cookie", plain.as_str()),
    ];
    let r = send(gh.http, "GET", "/authz", &repeated, None).await;
    assert_eq!(r.status, 400, "{r:?}");
}

#[tokio::test]
async fn forwarded_headers_are_ignored_from_untrusted_peers() {
    let stack = Stack::start_with(
        Backend::Sqlite,
        StackOptions {
            config: Box::new(|urls: &StackUrls| {
                base_config(urls).replace(
                    "trusted_proxies = [\"127.0.0.1/32\"]",
                    "trusted_proxies = [\"10.0.0.0/8\"]",
                ) + support::ROUTES
            }),
            ..StackOptions::default()
        },
    )
    .await;
    // The test client (127.0.0.1) is not trusted now: claiming a public original URI must not
    // turn a request for /app into a request for /public/.
    let r = send(
        stack.gatehouse.http,
        "GET",
        "/authz/app",
        &[
            ("x-forwarded-uri", "/public/x"),
            ("x-original-uri", "/public/x"),
            ("accept", "application/json"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = send(
        stack.gatehouse.http,
        "GET",
        "/authz/public/x",
        &[("x-forwarded-uri", "/app")],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// Envoy's HTTP ext_authz filter calling `/authz` (envoy/envoy-http-authz.yaml).
async fn envoy_http_ext_authz_mode(backend: Backend) {
    let stack = Stack::start_with(
        backend,
        StackOptions {
            envoy_config: "envoy/envoy-http-authz.yaml",
            ..StackOptions::default()
        },
    )
    .await;
    let token = stack
        .gatehouse
        .enabled_session("alice@acme.test", &["dev"])
        .await;
    let cookie = format!("gatehouse={token}");
    let r = stack.get("/public/x", &[]).await;
    assert!(r.reached_upstream(), "{r:?}");
    let r = stack.get("/app?q=1", &[("accept", BROWSER_ACCEPT)]).await;
    assert_eq!(r.status, 302, "{r:?}");
    assert!(
        r.location()
            .is_some_and(|l| l.starts_with(&format!("{}/auth/login?rd=", stack.base))),
        "{r:?}"
    );
    let r = stack.get("/api/x", &[("accept", "application/json")]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["error"], "unauthenticated");
    let r = stack.get("/admin/x", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = stack
        .get(
            "/app",
            &[("cookie", &cookie), ("x-gatehouse-user-id", "spoofed")],
        )
        .await;
    assert!(r.reached_upstream(), "{r:?}");
    assert_eq!(
        r.upstream_header("x-gatehouse-email").as_deref(),
        Some("alice@acme.test")
    );
    assert_ne!(
        r.upstream_header("x-gatehouse-user-id").as_deref(),
        Some("spoofed")
    );
    // The session cookie does not reach the upstream in this mode either.
    assert_eq!(r.upstream_header("cookie"), None, "{r:?}");
    let both = format!("{cookie}; theme=dark");
    let r = stack.get("/app", &[("cookie", &both)]).await;
    assert_eq!(r.upstream_header("cookie").as_deref(), Some("theme=dark"));
}
