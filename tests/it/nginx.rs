//! nginx `auth_request` in front of the echo upstream, with the shipped `examples/nginx.conf`
//! and Debian's nginx: allow with identity headers, 401 for APIs, redirects for browsers (to
//! login, and to the welcome page), 403, a whole login through nginx, and 503 when gatehouse
//! is gone.

use crate::support;

use support::browser::Browser;
use support::processes::Nginx;
use support::{
    BROWSER_ACCEPT, Backend, Gatehouse, OpenIdProvider, StackUrls, TestDb, Upstream, base_config,
    free_port, send,
};

on_both_backends!(nginx_auth_request);

async fn nginx_auth_request(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(backend).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let op = OpenIdProvider::start(&base, &[]).await;
    let urls = StackUrls {
        base: base.clone(),
        database: db.url.clone(),
        issuers: vec![op.issuer.clone()],
    };
    let config = format!(
        "{}{}{}",
        base_config(&urls),
        support::op::idp_toml("main", &op.issuer),
        support::ROUTES
    );
    let mut gatehouse = Gatehouse::start(dir.path(), &config, &[]).await;
    let upstream = Upstream::start().await;
    let nginx = Nginx::start(
        dir.path(),
        port,
        gatehouse.http.port(),
        upstream.addr.port(),
    )
    .await;
    let get = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let headers: Vec<(&str, String)> = headers;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(nginx.listener, "GET", path, &h, None).await
        }
    };

    // API without a session: 401 JSON with gatehouse's challenge.
    let r = get("/api/items", vec![("accept", "application/json".into())]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["error"], "unauthenticated", "{r:?}");
    assert!(r.header("www-authenticate").is_some(), "{r:?}");
    assert!(!r.reached_upstream());

    // Browser without a session: to the login, with the original URL.
    let r = get("/app/page?x=1", vec![("accept", BROWSER_ACCEPT.into())]).await;
    assert_eq!(r.status, 302, "{r:?}");
    let location = r.location().unwrap_or_default();
    assert!(
        location.starts_with(&format!("{base}/auth/login?rd=")) && location.contains("x%3D1"),
        "{location}"
    );

    // Allowed: the identity reaches the app; what the client claimed does not, nor does the
    // session cookie (other cookies do).
    let alice = gatehouse.enabled_session("alice@acme.test", &[]).await;
    let r = get(
        "/app/page",
        vec![
            ("cookie", format!("theme=dark; gatehouse={alice}")),
            ("x-gatehouse-user-id", "forged".into()),
            ("x-gatehouse-roles", "admin".into()),
            ("x_gatehouse_email", "forged@evil.test".into()),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.reached_upstream());
    let user_id = r.upstream_header("x-gatehouse-user-id").unwrap_or_default();
    assert_eq!(user_id.len(), 36, "{r:?}");
    assert_eq!(
        r.upstream_header("x-gatehouse-email").as_deref(),
        Some("alice@acme.test")
    );
    assert_eq!(r.upstream_header("x-gatehouse-roles"), None, "{r:?}");
    assert_eq!(r.upstream_header("cookie").as_deref(), Some("theme=dark"));
    assert!(
        !r.upstream_header_names()
            .iter()
            .any(|n| n.starts_with("x_gatehouse")),
        "{r:?}"
    );
    // Only the session cookie: none reaches the app.
    let r = get("/app/page", vec![("cookie", format!("gatehouse={alice}"))]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upstream_header("cookie"), None, "{r:?}");

    // A public route: no identity, and the forged one is gone; the app's own cookies pass.
    let r = get(
        "/public/x",
        vec![
            ("x-gatehouse-user-id", "forged".into()),
            ("cookie", "theme=dark; lang=en".into()),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upstream_header("x-gatehouse-user-id"), None, "{r:?}");
    assert_eq!(
        r.upstream_header("cookie").as_deref(),
        Some("theme=dark; lang=en"),
        "{r:?}"
    );

    // A missing role: 403.
    let r = get("/admin/x", vec![("cookie", format!("gatehouse={alice}"))]).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(!r.reached_upstream());

    // An account not enabled yet: a browser goes to the welcome page.
    let pending = gatehouse.session_for("new@acme.test").await;
    let r = get(
        "/app/page",
        vec![
            ("cookie", format!("gatehouse={pending}")),
            ("accept", BROWSER_ACCEPT.into()),
        ],
    )
    .await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.location(),
        Some(format!("{base}/auth/welcome").as_str()),
        "{r:?}"
    );

    // A whole login through nginx: /app → gatehouse's login → the OP → the callback → /app.
    gatehouse
        .cli_ok(&[
            "org",
            "add",
            "Acme",
            "--domain",
            "acme.test",
            "--auto-enable",
        ])
        .await;
    let mut browser = Browser::new();
    let page = support::op::sign_in_at(&mut browser, &format!("{base}/after/login"), "alice").await;
    assert_eq!(page.status(), 200, "{:#?}", page.hops);
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);
    assert_eq!(
        page.response
            .upstream_header("x-gatehouse-user-id")
            .as_deref(),
        Some(user_id.as_str()),
        "the same user as the CLI's session"
    );

    // gatehouse gone: 503, never the app.
    gatehouse.stop().await;
    let r = get("/app/page", vec![("cookie", format!("gatehouse={alice}"))]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(!r.reached_upstream());
    drop(nginx);
}
