//! Regressions for the bypasses found by attack testing (issue 6), on every edge: through a real
//! Envoy (gRPC ext_authz), on `/authz` forward-auth directly, and on the gRPC `Check` directly.
//! The login-side items (email identity, IdP trust, `email_verified`, login-state flood) are in
//! `tests/login.rs`.

use crate::support;

use envoy_types::ext_authz::v3::pb::{CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use support::client::send_bytes;
use support::{Backend, Stack, StackOptions, base_config};

on_both_backends!(
    non_ascii_cookies_never_leak_the_session,
    malformed_hosts_are_refused,
    letter_case_never_loosens_a_route,
    underscore_identity_headers_never_reach_the_upstream,
);

// === the gRPC edge, called directly ===

async fn grpc_check(
    stack: &Stack,
    host: &str,
    path: &str,
    headers: &[(&str, &[u8])],
) -> CheckResponse {
    let mut client = AuthorizationClient::connect(format!("http://{}", stack.gatehouse.grpc))
        .await
        .expect("connect gRPC");
    client
        .check(support::check::check_request(host, path, headers))
        .await
        .expect("Check")
        .into_inner()
}

/// The HTTP status a `CheckResponse` gives the client (200 for OK).
fn grpc_status(response: &CheckResponse) -> u16 {
    match &response.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map_or(403, |s| s.code as u16),
        other => panic!("unexpected response {other:?}"),
    }
}

/// On OK: the headers set upstream (as bytes) and the names removed.
fn grpc_mutations(response: &CheckResponse) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("expected OK, got {response:?}");
    };
    let set = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| {
            let value = if h.raw_value.is_empty() {
                h.value.as_bytes().to_vec()
            } else {
                h.raw_value.clone()
            };
            (h.key.clone(), value)
        })
        .collect();
    (set, ok.headers_to_remove.clone())
}

fn header_value<'a>(set: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    set.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

// === /authz, called directly ===

async fn authz(stack: &Stack, path: &str, headers: &[(&str, &[u8])]) -> support::Response {
    send_bytes(
        stack.gatehouse.http,
        "GET",
        &format!("/authz{path}"),
        headers,
        None,
    )
    .await
}

fn session(token: &str) -> String {
    format!("gatehouse={token}")
}

// === 1. cookies that are not visible ASCII ===

/// `theme=1; gatehouse=<token>; pref=é`: gatehouse must find the session and strip it, whatever
/// the other pairs hold. Before the fix, any non-ASCII byte made the whole header unreadable:
/// the user looked signed out and the token went upstream untouched.
async fn non_ascii_cookies_never_leak_the_session(backend: Backend) {
    let stack = Stack::start(backend).await;
    let token = stack
        .gatehouse
        .enabled_session("alice@acme.test", &[])
        .await;
    let utf8 = format!("theme=1; {}; pref=\u{e9}", session(&token)).into_bytes();
    let mut latin1 = format!("theme=1; {}; pref=", session(&token)).into_bytes();
    latin1.push(0xff);
    let mut first = b"pref=\xff\xfe; ".to_vec();
    first.extend_from_slice(session(&token).as_bytes());

    // What the upstream gets through Envoy: the other pairs. Envoy's gRPC ext_authz carries
    // header values as UTF-8 text, so pairs that are not UTF-8 cannot be passed on there.
    for (what, cookie, upstream) in [
        ("UTF-8", &utf8, Some("theme=1; pref=\u{e9}")),
        ("0xff", &latin1, Some("theme=1")),
        ("garbage first", &first, None),
    ] {
        // Through Envoy.
        let r = send_bytes(
            stack.envoy.listener,
            "GET",
            "/app",
            &[("cookie", cookie), ("accept", b"application/json")],
            None,
        )
        .await;
        assert!(r.reached_upstream(), "{what}: {r:?}");
        assert_eq!(
            r.upstream_header("x-gatehouse-email").as_deref(),
            Some("alice@acme.test"),
            "{what}"
        );
        assert_eq!(
            r.upstream_header("cookie").as_deref(),
            upstream,
            "{what}: the session must not reach the upstream; other cookies pass"
        );

        // /authz: the cookie to send upstream keeps the other pairs byte for byte.
        let r = authz(&stack, "/app", &[("cookie", cookie)]).await;
        assert_eq!(r.status, 200, "{what}: {r:?}");
        assert_eq!(r.header("x-gatehouse-email"), Some("alice@acme.test"));
        let rewritten = r.headers.get("cookie").expect("a rewritten cookie header");
        assert!(
            !String::from_utf8_lossy(rewritten.as_bytes()).contains(&token),
            "{what}"
        );
        let mut expected = cookie.clone();
        let ours = format!("{}; ", session(&token));
        if let Some(at) = find(&expected, ours.as_bytes()) {
            expected.drain(at..at + ours.len());
        } else if let Some(at) = find(&expected, format!("; {}", session(&token)).as_bytes()) {
            expected.drain(at..at + ours.len());
        }
        assert_eq!(rewritten.as_bytes(), expected.as_slice(), "{what}");

        // gRPC.
        let response = grpc_check(&stack, "gw.test", "/app", &[("cookie", cookie)]).await;
        assert_eq!(grpc_status(&response), 200, "{what}: {response:?}");
        let (set, removed) = grpc_mutations(&response);
        assert_eq!(
            header_value(&set, "x-gatehouse-email"),
            Some(&b"alice@acme.test"[..])
        );
        let rewritten = header_value(&set, "cookie");
        assert_eq!(rewritten, upstream.map(str::as_bytes), "{what}");
        assert_eq!(
            removed.contains(&"cookie".to_owned()),
            upstream.is_none(),
            "{what}"
        );
    }

    // The session cookie alone among garbage: the header is rebuilt without it; with nothing
    // else it is removed.
    let r = authz(&stack, "/app", &[("cookie", session(&token).as_bytes())]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-envoy-auth-headers-to-remove"),
        Some("cookie"),
        "{r:?}"
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// === 2. Host ===

const SECURE_HOST_ROUTES: &str = r#"
[[route]]
host = "secure.test"
access = "authenticated"
roles = ["admin"]
"#;

/// A `host = "secure.test"` route must not be skipped by an authority that is not a plain
/// host name: each of these fell through to the laxer `/` route before the fix.
async fn malformed_hosts_are_refused(backend: Backend) {
    let stack = Stack::start_with(
        backend,
        StackOptions {
            config: Box::new(|urls| {
                format!(
                    "{}{SECURE_HOST_ROUTES}{}",
                    base_config(urls),
                    support::ROUTES
                )
            }),
            ..StackOptions::default()
        },
    )
    .await;
    let token = stack
        .gatehouse
        .enabled_session("bob@acme.test", &["dev"])
        .await;
    let c = session(&token);
    let own = stack.envoy.listener.to_string();
    // The admin-only host refuses bob; his own host lets him in.
    let r = stack
        .get("/x", &[("host", "secure.test"), ("cookie", &c)])
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        stack
            .get("/x", &[("host", &own), ("cookie", &c)])
            .await
            .reached_upstream()
    );
    let bad_hosts: Vec<Vec<&str>> = vec![
        vec!["secure.test,127.0.0.1:10000"],
        vec!["secure.test", &own], // two Host headers: Envoy joins them with ","
        vec!["x@secure.test"],
        vec!["secure.test%00"],
        vec!["secure.test/x"],
        vec!["secure.test x"],
        vec!["secure.test:99999"],
        vec!["127.1"],
    ];
    for hosts in &bad_hosts {
        let mut headers: Vec<(&str, &str)> = hosts.iter().map(|h| ("host", *h)).collect();
        headers.push(("cookie", &c));
        let r = stack.get("/x", &headers).await;
        assert!(!r.reached_upstream(), "{hosts:?} reached the upstream");
        assert_eq!(r.status, 400, "{hosts:?}: {r:?}");
    }

    // /authz: the Host header, and X-Forwarded-Host from a trusted proxy.
    for hosts in &bad_hosts {
        let mut headers: Vec<(&str, &[u8])> =
            hosts.iter().map(|h| ("host", h.as_bytes())).collect();
        headers.push(("cookie", c.as_bytes()));
        let r = authz(&stack, "/x", &headers).await;
        assert_eq!(r.status, 400, "Host {hosts:?}: {r:?}");
        let joined = hosts.join(",");
        let r = authz(
            &stack,
            "",
            &[
                ("host", b"auth.internal"),
                ("x-forwarded-uri", b"/x"),
                ("x-forwarded-host", joined.as_bytes()),
                ("cookie", c.as_bytes()),
            ],
        )
        .await;
        assert_eq!(r.status, 400, "X-Forwarded-Host {joined:?}: {r:?}");
    }
    let r = authz(
        &stack,
        "",
        &[
            ("host", b"auth.internal"),
            ("x-forwarded-uri", b"/x"),
            ("x-forwarded-host", b"Secure.Test:443"),
            ("cookie", c.as_bytes()),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "a valid host still matches its route: {r:?}");

    // gRPC: the :authority Envoy reports.
    for host in [
        "secure.test,127.0.0.1:10000",
        "x@secure.test",
        "secure.test%00",
        "secure.test/x",
        "secure.test x",
        "",
    ] {
        let response = grpc_check(&stack, host, "/x", &[("cookie", c.as_bytes())]).await;
        assert_eq!(grpc_status(&response), 400, "{host:?}: {response:?}");
    }
    let response = grpc_check(&stack, "SECURE.test.", "/x", &[("cookie", c.as_bytes())]).await;
    assert_eq!(grpc_status(&response), 403, "{response:?}");
}

// === 4. letter case in paths ===

/// Many upstreams route without regard to case. `/ADMIN/panel` must not reach them for a user
/// without the admin role; before the fix it fell through to the `/` route.
async fn letter_case_never_loosens_a_route(backend: Backend) {
    let stack = Stack::start(backend).await;
    let token = stack
        .gatehouse
        .enabled_session("bob@acme.test", &["dev"])
        .await;
    let c = session(&token);
    for path in [
        "/ADMIN/panel",
        "/Admin/",
        "/aDmIn",
        "/%41dmin/",
        "/%41DMIN/users",
        "/BLOCKED/x",
    ] {
        let r = stack
            .get(path, &[("accept", "application/json"), ("cookie", &c)])
            .await;
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert!(!r.reached_upstream(), "{path}");

        let r = authz(&stack, path, &[("cookie", c.as_bytes())]).await;
        assert_eq!(r.status, 403, "/authz{path}: {r:?}");

        let response = grpc_check(&stack, "gw.test", path, &[("cookie", c.as_bytes())]).await;
        assert_eq!(grpc_status(&response), 403, "gRPC {path}: {response:?}");
    }
    // Characters that Java and .NET fold to ASCII letters: `/adm%C4%B1n/` (dotless ı) is
    // `/admin/` to them.
    for path in ["/adm%C4%B1n/users", "/ADM%C4%B0N/", "/adm\u{131}n/"] {
        let r = stack
            .get(path, &[("accept", "application/json"), ("cookie", &c)])
            .await;
        // (Envoy itself refuses the raw non-ASCII one with 400.)
        assert!(matches!(r.status, 400 | 403), "{path}: {r:?}");
        assert!(!r.reached_upstream(), "{path}");
        let r = authz(&stack, path, &[("cookie", c.as_bytes())]).await;
        assert_eq!(r.status, 403, "/authz{path}: {r:?}");
    }
    // A path that is public only in lower case: to a case-sensitive upstream `/PUBLIC/x` is
    // not under `/public/`, so it gets the stricter `/` rule (a session), never less.
    let r = stack
        .get("/PUBLIC/logo.png", &[("accept", "application/json")])
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = authz(&stack, "/PUBLIC/logo.png", &[]).await;
    assert_eq!(r.status, 401, "/authz: {r:?}");
    let response = grpc_check(&stack, "gw.test", "/PUBLIC/logo.png", &[]).await;
    assert_eq!(grpc_status(&response), 401, "gRPC: {response:?}");
    let r = stack
        .get(
            "/PUBLIC/logo.png",
            &[("accept", "application/json"), ("cookie", &c)],
        )
        .await;
    assert!(r.reached_upstream(), "{r:?}");
    assert_eq!(
        r.json()["path"],
        "/PUBLIC/logo.png",
        "the upstream sees the path as sent"
    );
}

// === 5. identity headers spelled with underscores ===

/// `x_gatehouse_user_id` is `HTTP_X_GATEHOUSE_USER_ID` to CGI, WSGI and PHP, exactly like
/// `x-gatehouse-user-id`. The shipped Envoy config refuses underscores in header names; with
/// Envoy's default (allow), gatehouse itself must remove every such header.
async fn underscore_identity_headers_never_reach_the_upstream(backend: Backend) {
    let stack = Stack::start_with(
        backend,
        StackOptions {
            // Envoy's default for underscores: what is tested is gatehouse's own removal
            // (the shipped config has no other).
            envoy_edits: vec![(
                "headers_with_underscores_action: REJECT_REQUEST",
                "headers_with_underscores_action: ALLOW",
            )],
            ..StackOptions::default()
        },
    )
    .await;
    let token = stack
        .gatehouse
        .enabled_session("alice@acme.test", &[])
        .await;
    let c = session(&token);
    let spoofed: [(&str, &str); 5] = [
        (
            "x_gatehouse_user_id",
            "00000000-0000-0000-0000-000000000000",
        ),
        ("X_GATEHOUSE_ROLES", "admin"),
        ("x-gatehouse_org_id", "spoofed"),
        ("x_gatehouse-email", "ceo@acme.test"),
        ("x_gatehouse_impersonator_id", "spoofed"),
    ];
    let is_identity_header = |name: &str| {
        name.to_ascii_lowercase()
            .replace('_', "-")
            .starts_with("x-gatehouse-")
    };
    for (what, path, cookie) in [
        ("signed in", "/app", Some(c.as_str())),
        ("public route", "/public/x", None),
    ] {
        let mut headers: Vec<(&str, &str)> = spoofed.to_vec();
        if let Some(c) = cookie {
            headers.push(("cookie", c));
        }
        let r = stack.get(path, &headers).await;
        assert!(r.reached_upstream(), "{what}: {r:?}");
        let names = r.upstream_header_names();
        for name in &names {
            if is_identity_header(name) {
                assert!(
                    name.starts_with("x-gatehouse-") && !name.contains('_'),
                    "{what}: {name} reached the upstream ({names:?})"
                );
            }
        }
        if cookie.is_some() {
            assert_eq!(
                r.upstream_header("x-gatehouse-email").as_deref(),
                Some("alice@acme.test")
            );
        }

        // /authz names them for removal.
        let bytes: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let r = authz(&stack, path, &bytes).await;
        assert_eq!(r.status, 200, "{what}: {r:?}");
        let removed = r
            .header("x-envoy-auth-headers-to-remove")
            .unwrap_or_default()
            .to_owned();
        for (name, _) in spoofed {
            assert!(
                removed
                    .split(',')
                    .any(|n| n.trim().eq_ignore_ascii_case(name)),
                "{what}: /authz does not remove {name}: {removed:?}"
            );
        }

        // gRPC names them for removal.
        let response = grpc_check(&stack, "gw.test", path, &bytes).await;
        let (_, removed) = grpc_mutations(&response);
        for (name, _) in spoofed {
            assert!(
                removed.iter().any(|n| n.eq_ignore_ascii_case(name)),
                "{what}: gRPC does not remove {name}: {removed:?}"
            );
        }
    }

    // The shipped config refuses such headers outright; allowing them, its filter strips them.
    let shipped = Stack::start(backend).await;
    let r = shipped
        .get("/public/x", &[("x_gatehouse_user_id", "spoofed")])
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    let filtered = Stack::start_with(
        backend,
        StackOptions {
            envoy_edits: vec![(
                "headers_with_underscores_action: REJECT_REQUEST",
                "headers_with_underscores_action: ALLOW",
            )],
            ..StackOptions::default()
        },
    )
    .await;
    let r = filtered.get("/public/x", &spoofed).await;
    assert!(r.reached_upstream(), "{r:?}");
    let names = r.upstream_header_names();
    assert!(!names.iter().any(|n| is_identity_header(n)), "{names:?}");
}
