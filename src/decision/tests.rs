//! The decision as tables: situation in, decision out.

use super::*;
use crate::identity::VerifiedToken;
use crate::identity::{Identity, MintSlot, SignedIn};
use crate::policy::config::RouteConfig;
use crate::policy::{Policy, RequestHost};
use crate::strength::Authentication;
use uuid::Uuid;

const BROWSER: &str = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8";

fn urls() -> LoginUrls {
    LoginUrls::new("http://gw.test:10000", "/auth/welcome").unwrap()
}

fn policy() -> Policy {
    let routes: Vec<RouteConfig> = [
        r#"path_prefix = "/public/"
               access = "public""#,
        r#"path_prefix = "/blocked/"
               access = "deny""#,
        r#"path_prefix = "/admin/"
               access = "authenticated"
               roles = ["admin"]"#,
        r#"path_prefix = "/api/"
               access = "authenticated"
               api = true"#,
        r#"path_prefix = "/app/"
               access = "authenticated""#,
        r#"path_prefix = "/vault/"
               access = "authenticated"
               mfa = true"#,
        r#"path_prefix = "/vault-api/"
               access = "authenticated"
               api = true
               acr_values = ["urn:gold"]
               max_auth_age_seconds = 300"#,
    ]
    .iter()
    .map(|t| toml::from_str(t).unwrap())
    .collect();
    Policy::compile(&routes).unwrap()
}

fn request(method: &str, path: &str, accept: &str) -> AuthzRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert(header::ACCEPT, accept.parse().unwrap());
    AuthzRequest {
        method: method.into(),
        scheme: "http".into(),
        host: "gw.test:10000".into(),
        path: path.into(),
        headers,
        client_ip: None,
    }
}

const NOW: i64 = 1_000_000;

fn principal(enabled: bool, roles: &[&str], org: Option<Uuid>) -> Principal {
    principal_with(enabled, roles, org, Authentication::default())
}

fn principal_with(
    enabled: bool,
    roles: &[&str],
    org: Option<Uuid>,
    auth: Authentication,
) -> Principal {
    Principal {
        user: Arc::new(SignedIn::new(Identity {
            user_id: Uuid::nil(),
            email: "u@acme.test".into(),
            org_id: org,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            enabled,
            impersonator_id: None,
        })),
        sid: "0123456789abcdef".into(),
        minted: Arc::new(MintSlot::default()),
        expires_at: i64::MAX,
        auth: Arc::new(auth),
    }
}

fn authenticated(amr: &[&str], acr: Option<&str>, age: i64, org_requires_mfa: bool) -> Caller {
    let auth = Authentication {
        idp: Some("main".into()),
        amr: amr.iter().map(|a| (*a).to_owned()).collect(),
        acr: acr.map(String::from),
        auth_time: Some(NOW - age),
        org_requires_mfa,
    };
    Caller::session(SessionCaller::User(principal_with(true, &[], None, auth)))
}

fn user(enabled: bool, roles: &[&str]) -> Caller {
    Caller::session(SessionCaller::User(principal(enabled, roles, None)))
}

/// method, path, accept, caller, status, location, label
type Row<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a Caller,
    u16,
    Option<&'a str>,
    &'a str,
);

/// Every row of DESIGN.md's decision table, for browsers and for API callers.
#[test]
fn decision_table() {
    let p = policy();
    let login =
        "http://gw.test:10000/auth/login?rd=http%3A%2F%2Fgw.test%3A10000%2Fapp%2Fpage%3Fq%3D1";
    let welcome = "http://gw.test:10000/auth/welcome";
    let anon = Caller::ANONYMOUS;
    let down = Caller::session(SessionCaller::Unavailable);
    let enabled = user(true, &[]);
    let admin = user(true, &["admin"]);
    let disabled = user(false, &["admin"]);
    let pwd = authenticated(&["pwd"], Some("urn:silver"), 60, false);
    let mfa = authenticated(&["mfa", "pwd"], Some("urn:gold"), 60, false);
    let stale_gold = authenticated(&["mfa"], Some("urn:gold"), 301, false);
    let org_mfa = authenticated(&["pwd"], None, 60, true);
    let org_mfa_done = authenticated(&["mfa"], None, 60, true);
    let step_up_mfa = "http://gw.test:10000/auth/login?rd=http%3A%2F%2Fgw.test%3A10000%2Fvault%2Fx&step_up=1&mfa=1";
    let step_up_app = "http://gw.test:10000/auth/login?rd=http%3A%2F%2Fgw.test%3A10000%2Fapp%2Fpage%3Fq%3D1&step_up=1&mfa=1";
    #[rustfmt::skip]
        let cases: Vec<Row> = vec![
            // method, path, accept, caller, status, location, label
            ("GET", "/public/x", BROWSER, &anon, 200, None, "allow"),
            ("GET", "/public/x", BROWSER, &down, 200, None, "allow"),
            ("GET", "/nowhere", BROWSER, &admin, 403, None, "forbidden"),
            ("GET", "/nowhere", "*/*", &admin, 403, None, "forbidden"),
            ("GET", "/blocked/x", BROWSER, &admin, 403, None, "forbidden"),
            ("GET", "/app/page?q=1", BROWSER, &anon, 302, Some(login), "login_redirect"),
            ("HEAD", "/app/page?q=1", BROWSER, &anon, 302, Some(login), "login_redirect"),
            ("GET", "/app/page", "application/json", &anon, 401, None, "unauthenticated"),
            ("POST", "/app/page", BROWSER, &anon, 401, None, "unauthenticated"),
            ("GET", "/api/x", BROWSER, &anon, 401, None, "unauthenticated"),
            ("GET", "/app/page", BROWSER, &enabled, 200, None, "allow"),
            ("GET", "/admin/x", BROWSER, &enabled, 403, None, "forbidden"),
            ("GET", "/admin/x", "*/*", &enabled, 403, None, "forbidden"),
            ("GET", "/admin/x", BROWSER, &admin, 200, None, "allow"),
            ("GET", "/app/page", BROWSER, &disabled, 302, Some(welcome), "welcome_redirect"),
            ("GET", "/admin/x", BROWSER, &disabled, 302, Some(welcome), "welcome_redirect"),
            ("GET", "/app/page", "*/*", &disabled, 403, None, "account_disabled"),
            ("GET", "/api/x", BROWSER, &disabled, 403, None, "account_disabled"),
            ("GET", "/app/page", BROWSER, &down, 503, None, "unavailable"),
            ("GET", "/api/x", "*/*", &down, 503, None, "unavailable"),
            // Letter case: the stricter of the folded and the exact route; in this table
            // no route matches `/ADMIN/x` exactly, and no match is a deny.
            ("GET", "/ADMIN/x", "*/*", &admin, 403, None, "forbidden"),
            ("GET", "/PUBLIC/x", "*/*", &anon, 403, None, "forbidden"),
            ("GET", "/BLOCKED/x", "*/*", &admin, 403, None, "forbidden"),
            // Step-up: a route's MFA, acr and age rules, and an org that requires MFA.
            ("GET", "/vault/x", BROWSER, &pwd, 302, Some(step_up_mfa), "step_up_redirect"),
            ("GET", "/vault/x", "*/*", &pwd, 401, None, "insufficient_user_authentication"),
            ("GET", "/vault/x", BROWSER, &mfa, 200, None, "allow"),
            ("GET", "/vault/x", BROWSER, &disabled, 302, Some(welcome), "welcome_redirect"),
            ("GET", "/vault-api/x", BROWSER, &pwd, 401, None, "insufficient_user_authentication"),
            ("GET", "/vault-api/x", "*/*", &mfa, 200, None, "allow"),
            ("GET", "/vault-api/x", "*/*", &stale_gold, 401, None, "insufficient_user_authentication"),
            ("GET", "/app/page?q=1", BROWSER, &pwd, 200, None, "allow"),
            ("GET", "/app/page?q=1", BROWSER, &org_mfa, 302, Some(step_up_app), "step_up_redirect"),
            ("GET", "/api/x", "*/*", &org_mfa, 401, None, "insufficient_user_authentication"),
            ("GET", "/app/page?q=1", BROWSER, &org_mfa_done, 200, None, "allow"),
            ("GET", "/public/x", BROWSER, &org_mfa, 200, None, "allow"),
        ];
    for (method, path, accept, caller, status, location, label) in cases {
        let req = request(method, path, accept);
        let normalized = crate::policy::normalize(path).unwrap();
        let host = RequestHost::parse(&req.host).unwrap();
        let matches = p.find(method, &host, &normalized);
        let decision = decide_matches(&req, matches, caller, &urls(), NOW);
        let what = format!("{method} {path} accept={accept} caller={caller:?}");
        assert_eq!(decision.label(), label, "{what}");
        match &decision {
            Decision::Allow(_) => assert_eq!(status, 200, "{what}"),
            Decision::Deny(d) => {
                let r = d.render();
                assert_eq!(r.status.as_u16(), status, "{what}");
                let got_location = r
                    .headers
                    .iter()
                    .find(|(k, _)| k == header::LOCATION)
                    .map(|(_, v)| v.to_str().unwrap());
                assert_eq!(got_location, location, "{what}");
            }
        }
    }
}

#[test]
fn allow_carries_the_identity_only_on_authenticated_routes() {
    let p = policy();
    let admin = user(true, &["admin"]);
    let req = request("GET", "/admin/x", BROWSER);
    let host = RequestHost::parse("gw.test").unwrap();
    let path = crate::policy::normalize("/admin/x").unwrap();
    let route = p.find("GET", &host, &path);
    assert!(matches!(
        decide_matches(&req, route, &admin, &urls(), NOW),
        Decision::Allow(Grant::User { .. })
    ));
    let path = crate::policy::normalize("/public/").unwrap();
    let route = p.find("GET", &host, &path);
    assert!(matches!(
        decide_matches(&req, route, &admin, &urls(), NOW),
        Decision::Allow(Grant::Public)
    ));
}

/// With a catch-all route, a case variant gets the stricter of its two routes.
#[test]
fn letter_case_takes_the_stricter_route() {
    let routes: Vec<RouteConfig> = [
        r#"path_prefix = "/admin/"
               access = "authenticated"
               roles = ["admin"]"#,
        r#"path_prefix = "/public/"
               access = "public""#,
        r#"path_prefix = "/"
               access = "authenticated""#,
    ]
    .iter()
    .map(|t| toml::from_str(t).unwrap())
    .collect();
    let p = Policy::compile(&routes).unwrap();
    let anon = Caller::ANONYMOUS;
    let dev = user(true, &["dev"]);
    let admin = user(true, &["admin"]);
    let cases: Vec<(&str, &Caller, &str)> = vec![
        ("/ADMIN/x", &dev, "forbidden"),      // folded: admin rule
        ("/adm%C4%B1n/x", &dev, "forbidden"), // dotless ı folds to i
        ("/ADMIN/x", &admin, "allow"),
        ("/PUBLIC/x", &anon, "unauthenticated"), // exact: the catch-all
        ("/PUBLIC/x", &dev, "allow"),
        ("/public/x", &anon, "allow"),
    ];
    for (path, caller, label) in cases {
        let req = request("GET", path, "*/*");
        let host = RequestHost::parse("gw.test").unwrap();
        let normalized = crate::policy::normalize(path).unwrap();
        let matches = p.find("GET", &host, &normalized);
        let decision = decide_matches(&req, matches, caller, &urls(), NOW);
        assert_eq!(decision.label(), label, "{path} {caller:?}");
    }
}

#[test]
fn api_bodies_are_json_with_the_documented_errors() {
    let cases = [
        (Denial::Unauthenticated, "unauthenticated"),
        (Denial::AccountDisabled, "account_disabled"),
        (
            Denial::Forbidden {
                reason: ForbiddenReason::MissingRole,
                html: false,
            },
            "forbidden",
        ),
        (Denial::Unavailable { html: false }, "unavailable"),
        (
            Denial::BadRequest(Malformed::Path(PathError::AboveRoot)),
            "invalid_path",
        ),
        (
            Denial::BadRequest(Malformed::Host(HostError::Invalid)),
            "invalid_host",
        ),
    ];
    for (denial, error) in cases {
        let r = denial.render();
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], error);
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| k == header::CONTENT_TYPE && v == "application/json")
        );
    }
    let r = Denial::Unauthenticated.render();
    assert!(r.headers.iter().any(|(k, _)| k == header::WWW_AUTHENTICATE));
}

fn token(iss: &str, aud: &[&str], scopes: &[&str], id_token: bool) -> Arc<VerifiedToken> {
    Arc::new(VerifiedToken::for_tests(iss, aud, scopes, id_token))
}

fn bearer(token: Arc<VerifiedToken>, principal: Option<Principal>) -> Caller {
    Caller {
        session: SessionCaller::Anonymous,
        bearer: BearerCaller::Token { token, principal },
    }
}

/// Bearer routes: the route's issuer, audience, token type and scopes, then the user rules;
/// 401 `invalid_token`, 403 `insufficient_scope`, never a redirect.
#[test]
fn bearer_table() {
    let routes: Vec<RouteConfig> = [
            r#"path_prefix = "/b2b/"
               access = "authenticated"
               api = false
               bearer = { issuers = ["https://b2b/"], audiences = ["https://api"], scopes = ["read"] }"#,
            r#"path_prefix = "/admin/"
               access = "authenticated"
               roles = ["admin"]
               session = false
               bearer = { issuers = ["https://b2b/"], audiences = ["https://api"] }"#,
            r#"path_prefix = "/open/"
               access = "authenticated"
               bearer = { issuers = ["https://b2b/"], audiences = ["https://api"], unknown_subjects = "anonymous" }"#,
            r#"path_regex = "/orgs/(?P<org>[^/]+)/.*"
               access = "authenticated"
               org_param = "org"
               org_admin_any = ["support"]"#,
        ]
        .iter()
        .map(|t| toml::from_str(t).unwrap())
        .collect();
    let p = Policy::compile(&routes).unwrap();
    let acme = Uuid::from_u128(1);
    let globex = Uuid::from_u128(2);
    let good = token("https://b2b/", &["https://api"], &["read", "write"], false);
    let known = |roles: &[&str]| Some(principal(true, roles, Some(acme)));
    let cases: Vec<(String, Caller, &str)> = vec![
        // path, caller, label
        (
            "/b2b/x".to_string(),
            bearer(good.clone(), known(&[])),
            "allow",
        ),
        (
            "/b2b/x".to_string(),
            bearer(
                token("https://b2c/", &["https://api"], &["read"], false),
                known(&[]),
            ),
            "invalid_token",
        ),
        (
            "/b2b/x".to_string(),
            bearer(
                token("https://b2b/", &["client-id"], &["read"], false),
                known(&[]),
            ),
            "invalid_token",
        ),
        (
            "/b2b/x".to_string(),
            bearer(
                token("https://b2b/", &["https://api"], &["read"], true),
                known(&[]),
            ),
            "invalid_token",
        ),
        (
            "/b2b/x".to_string(),
            bearer(
                token("https://b2b/", &["https://api"], &["write"], false),
                known(&[]),
            ),
            "insufficient_scope",
        ),
        (
            "/b2b/x".to_string(),
            bearer(good.clone(), None),
            "unknown_subject",
        ),
        (
            "/b2b/x".to_string(),
            bearer(good.clone(), Some(principal(false, &[], None))),
            "account_disabled",
        ),
        (
            "/b2b/x".to_string(),
            Caller {
                session: SessionCaller::Anonymous,
                bearer: BearerCaller::Invalid("bad signature".into()),
            },
            "invalid_token",
        ),
        (
            "/b2b/x".to_string(),
            Caller {
                session: SessionCaller::Anonymous,
                bearer: BearerCaller::Unavailable,
            },
            "unavailable",
        ),
        // No token: the session cookie, as on any route (a browser is sent to login).
        ("/b2b/x".to_string(), user(true, &[]), "allow"),
        ("/b2b/x".to_string(), Caller::ANONYMOUS, "login_redirect"),
        // A token decides even beside a valid session.
        (
            "/b2b/x".to_string(),
            Caller {
                session: SessionCaller::User(principal(true, &[], None)),
                bearer: BearerCaller::Invalid("expired".into()),
            },
            "invalid_token",
        ),
        // Roles apply to bearer users; session = false ignores the cookie.
        (
            "/admin/x".to_string(),
            bearer(good.clone(), known(&["admin"])),
            "allow",
        ),
        (
            "/admin/x".to_string(),
            bearer(good.clone(), known(&["dev"])),
            "forbidden",
        ),
        (
            "/admin/x".to_string(),
            user(true, &["admin"]),
            "unauthenticated",
        ),
        // unknown_subjects = "anonymous"
        ("/open/x".to_string(), bearer(good.clone(), None), "allow"),
        // Tenant-scoped: own org, another org, the support role.
        (
            format!("/orgs/{acme}/projects"),
            user_in(acme, &[]),
            "allow",
        ),
        (
            format!("/orgs/{}/projects", acme.to_string().to_uppercase()),
            user_in(acme, &[]),
            "allow",
        ),
        (
            format!("/orgs/{globex}/projects"),
            user_in(acme, &[]),
            "forbidden",
        ),
        (
            "/orgs/not-a-uuid/projects".to_string(),
            user_in(acme, &[]),
            "forbidden",
        ),
        (
            format!("/orgs/{globex}/projects"),
            user_in(acme, &["support"]),
            "allow",
        ),
        (
            format!("/orgs/{acme}/projects"),
            Caller::session(SessionCaller::User(principal(true, &[], None))),
            "forbidden",
        ),
    ];
    for (path, caller, label) in cases {
        let path = path.as_str();
        let req = request("GET", path, BROWSER);
        let host = RequestHost::parse("gw.test").unwrap();
        let normalized = crate::policy::normalize(path).unwrap();
        let decision = decide_matches(
            &req,
            p.find("GET", &host, &normalized),
            &caller,
            &urls(),
            NOW,
        );
        assert_eq!(decision.label(), label, "{path} {caller:?}");
        if let Decision::Deny(d) = &decision {
            assert!(
                !matches!(d, Denial::LoginRedirect { .. })
                    || matches!(caller.bearer, BearerCaller::Absent)
            );
        }
    }
    // The challenges name the error (and the scopes needed).
    let scope = Denial::InsufficientScope(vec!["read".into(), "write".into()]).render();
    let www = |r: &DenyResponse| {
        r.headers
            .iter()
            .find(|(k, _)| k == header::WWW_AUTHENTICATE)
            .map(|(_, v)| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        www(&scope).as_deref(),
        Some("Bearer realm=\"gatehouse\", error=\"insufficient_scope\", scope=\"read write\"")
    );
    assert_eq!(scope.status, 403);
    let invalid = Denial::InvalidToken("bad \"quote\" \\ \n sig".into()).render();
    assert_eq!(invalid.status, 401);
    assert_eq!(
        www(&invalid).as_deref(),
        Some(
            "Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"bad quote   sig\""
        )
    );
}

fn user_in(org: Uuid, roles: &[&str]) -> Caller {
    Caller::session(SessionCaller::User(principal(true, roles, Some(org))))
}
