//! The authorization decision: pure, no I/O.
//!
//! [`decide`] takes the request, the matched route and what the session layer found out about
//! the caller, and returns allow, deny or redirect. [`Denial::render`] turns a denial into the
//! status, headers and body that both edges send, so gRPC and forward-auth answer identically.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode, header};
use url::Url;

use crate::config::Access;
use crate::identity::{Caller, SignedIn};
use crate::policy::{HostError, Matches, PathError, Route};
use crate::request::AuthzRequest;

/// Where denied browsers are sent. Absolute URLs under `public_url`.
#[derive(Debug, Clone)]
pub struct LoginUrls {
    pub login: Url,
    pub welcome: String,
}

impl LoginUrls {
    pub fn new(public_origin: &str, welcome_path: &str) -> Result<Self, url::ParseError> {
        Ok(Self {
            login: Url::parse(&format!("{public_origin}/auth/login"))?,
            welcome: format!("{public_origin}{welcome_path}"),
        })
    }

    fn login_for(&self, req: &AuthzRequest) -> String {
        let mut url = self.login.clone();
        url.query_pairs_mut().append_pair("rd", &req.original_url());
        url.into()
    }
}

#[derive(Debug, Clone)]
pub enum Decision {
    /// Let the request through; `None` on public routes.
    Allow(Option<Arc<SignedIn>>),
    Deny(Denial),
}

/// Why a request cannot be matched against the routes at all (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The path has no unambiguous normalized form.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The authority is not a host name or IP literal with an optional port.
    #[error(transparent)]
    Host(#[from] HostError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The path or host cannot be matched unambiguously.
    BadRequest(Malformed),
    /// Browser without a valid session: 302 to login.
    LoginRedirect { location: String },
    /// API caller without a valid session: 401.
    Unauthenticated,
    /// Browser whose account is not enabled yet: 302 to the welcome page.
    WelcomeRedirect { location: String },
    /// API caller whose account is not enabled: 403.
    AccountDisabled,
    /// 403: a role is missing, the route denies, or no route matches.
    Forbidden { reason: ForbiddenReason, html: bool },
    /// The store failed and the session was not cached: 503, never allow.
    Unavailable { html: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenReason {
    MissingRole,
    RouteDenies,
    NoRoute,
}

/// What an edge sends back for a denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: String,
}

/// Decides one request. `route` is the matched route (`None`: no route matched); `caller` is
/// only consulted on authenticated routes.
pub fn decide(
    req: &AuthzRequest,
    route: Option<&Route>,
    caller: &Caller,
    urls: &LoginUrls,
) -> Decision {
    let Some(route) = route else {
        return Decision::Deny(Denial::Forbidden {
            reason: ForbiddenReason::NoRoute,
            html: req.is_browser_navigation(),
        });
    };
    let browser = !route.api && req.is_browser_navigation();
    let deny = Decision::Deny;
    match route.access {
        Access::Deny => deny(Denial::Forbidden {
            reason: ForbiddenReason::RouteDenies,
            html: browser,
        }),
        Access::Public => Decision::Allow(None),
        Access::Authenticated => match caller {
            Caller::Unavailable => deny(Denial::Unavailable { html: browser }),
            Caller::Anonymous if browser => deny(Denial::LoginRedirect {
                location: urls.login_for(req),
            }),
            Caller::Anonymous => deny(Denial::Unauthenticated),
            Caller::User(user) if !user.identity.enabled => {
                if browser {
                    deny(Denial::WelcomeRedirect {
                        location: urls.welcome.clone(),
                    })
                } else {
                    deny(Denial::AccountDisabled)
                }
            }
            Caller::User(user)
                if !route.roles.is_empty() && !user.identity.has_any_role(&route.roles) =>
            {
                deny(Denial::Forbidden {
                    reason: ForbiddenReason::MissingRole,
                    html: browser,
                })
            }
            Caller::User(user) => Decision::Allow(Some(user.clone())),
        },
    }
}

/// Decides under both readings of the path (see [`crate::policy::Policy::find`]): a request is
/// allowed only when both its folded and its exact route allow it. When both deny, the folded
/// route's answer (the rule the request was written against) is given.
pub fn decide_matches(
    req: &AuthzRequest,
    matches: Matches<'_>,
    caller: &Caller,
    urls: &LoginUrls,
) -> Decision {
    if let Some(route) = matches.agreed() {
        return decide(req, route, caller, urls);
    }
    let folded = decide(req, matches.folded, caller, urls);
    let exact = decide(req, matches.exact, caller, urls);
    match (folded, exact) {
        (Decision::Deny(d), _) | (Decision::Allow(_), Decision::Deny(d)) => Decision::Deny(d),
        // Both allow: pass on the identity if either route established one.
        (Decision::Allow(a), Decision::Allow(b)) => Decision::Allow(a.or(b)),
    }
}

impl Decision {
    /// A small fixed set of labels for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Allow(_) => "allow",
            Self::Deny(d) => d.label(),
        }
    }
}

impl Denial {
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::LoginRedirect { .. } => "login_redirect",
            Self::Unauthenticated => "unauthenticated",
            Self::WelcomeRedirect { .. } => "welcome_redirect",
            Self::AccountDisabled => "account_disabled",
            Self::Forbidden { .. } => "forbidden",
            Self::Unavailable { .. } => "unavailable",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::LoginRedirect { .. } | Self::WelcomeRedirect { .. } => StatusCode::FOUND,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::AccountDisabled | Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn render(&self) -> DenyResponse {
        let mut headers = vec![(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
        let body = match self {
            Self::LoginRedirect { location } | Self::WelcomeRedirect { location } => {
                // Built from our own origin plus a percent-encoded rd: always a valid value.
                if let Ok(value) = HeaderValue::from_str(location) {
                    headers.push((header::LOCATION, value));
                }
                String::new()
            }
            Self::BadRequest(Malformed::Path(_)) => json(&mut headers, "invalid_path"),
            Self::BadRequest(Malformed::Host(_)) => json(&mut headers, "invalid_host"),
            Self::Unauthenticated => {
                headers.push((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"gatehouse\""),
                ));
                json(&mut headers, "unauthenticated")
            }
            Self::AccountDisabled => json(&mut headers, "account_disabled"),
            Self::Forbidden {
                html: true,
                reason: ForbiddenReason::MissingRole,
            } => html(
                &mut headers,
                "Access denied",
                "You are signed in, but this page needs a permission your account does not have.",
            ),
            Self::Forbidden { html: true, .. } => {
                html(&mut headers, "Access denied", "This page is not available.")
            }
            Self::Forbidden { html: false, .. } => json(&mut headers, "forbidden"),
            Self::Unavailable { html: true } => html(
                &mut headers,
                "Temporarily unavailable",
                "Sign-in is temporarily unavailable. Please try again in a moment.",
            ),
            Self::Unavailable { html: false } => json(&mut headers, "unavailable"),
        };
        DenyResponse {
            status: self.status(),
            headers,
            body,
        }
    }
}

fn json(headers: &mut Vec<(HeaderName, HeaderValue)>, error: &str) -> String {
    headers.push((
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    serde_json::json!({ "error": error }).to_string()
}

fn html(headers: &mut Vec<(HeaderName, HeaderValue)>, title: &str, text: &str) -> String {
    headers.push((
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    ));
    crate::pages::message_page(title, text, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;
    use crate::identity::Identity;
    use crate::policy::{Policy, RequestHost};
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

    fn user(enabled: bool, roles: &[&str]) -> Caller {
        Caller::User(Arc::new(SignedIn::new(Identity {
            user_id: Uuid::nil(),
            email: "u@acme.test".into(),
            org_id: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            enabled,
            impersonator_id: None,
        })))
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
        let anon = Caller::Anonymous;
        let down = Caller::Unavailable;
        let enabled = user(true, &[]);
        let admin = user(true, &["admin"]);
        let disabled = user(false, &["admin"]);
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
        ];
        for (method, path, accept, caller, status, location, label) in cases {
            let req = request(method, path, accept);
            let normalized = crate::policy::normalize(path).unwrap();
            let host = RequestHost::parse(&req.host).unwrap();
            let matches = p.find(method, &host, &normalized);
            let decision = decide_matches(&req, matches, caller, &urls());
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
        let route = p.find("GET", &host, &crate::policy::normalize("/admin/x").unwrap());
        assert!(matches!(
            decide_matches(&req, route, &admin, &urls()),
            Decision::Allow(Some(_))
        ));
        let route = p.find("GET", &host, &crate::policy::normalize("/public/").unwrap());
        assert!(matches!(
            decide_matches(&req, route, &admin, &urls()),
            Decision::Allow(None)
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
        let anon = Caller::Anonymous;
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
            let matches = p.find("GET", &host, &crate::policy::normalize(path).unwrap());
            let decision = decide_matches(&req, matches, caller, &urls());
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
}
