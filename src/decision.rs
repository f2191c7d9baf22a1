//! The authorization decision: pure, no I/O.
//!
//! [`decide`] takes the request, the matched route and what the gate found out about the
//! caller (session cookie, bearer token), and returns allow, deny or redirect. Every route rule
//! is checked here: access, roles, the bearer token's issuer, audience, type and scopes, and
//! the tenant of an `org_param` route. [`Denial::render`] turns a denial into the status,
//! headers and body that both edges send, so gRPC and forward-auth answer identically.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode, header};
use url::Url;
use uuid::Uuid;

use crate::identity::{BearerCaller, Caller, Principal, SessionCaller, VerifiedToken};
use crate::policy::config::{Access, BearerConfig, UnknownSubjects};
use crate::policy::{HostError, Matches, PathError, Route, RouteMatch};
use crate::request::AuthzRequest;
use crate::strength::StepUp;

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

    /// The login that raises a session to `step_up` (see [`crate::strength`]).
    fn step_up_for(&self, req: &AuthzRequest, step_up: &StepUp) -> String {
        let mut url = self.login.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("rd", &req.original_url());
            query.append_pair("step_up", "1");
            if step_up.mfa {
                query.append_pair("mfa", "1");
            }
            if !step_up.acr_values.is_empty() {
                query.append_pair("acr_values", &step_up.acr_values.join(" "));
            }
            if let Some(max_age) = step_up.max_age {
                query.append_pair("max_age", &max_age.to_string());
            }
        }
        url.into()
    }
}

#[derive(Debug, Clone)]
pub enum Decision {
    Allow(Grant),
    Deny(Denial),
}

/// Who a request is let through as.
#[derive(Debug, Clone)]
pub enum Grant {
    /// A public route: nobody in particular.
    Public,
    /// A local user, by session cookie or by a bearer token (then also the token's claims).
    User {
        principal: Principal,
        token: Option<Arc<VerifiedToken>>,
    },
    /// A valid bearer token whose subject is no local user (`unknown_subjects = "anonymous"`).
    Token(Arc<VerifiedToken>),
}

impl Grant {
    /// Whether an upstream learns who the caller is.
    fn identifies(&self) -> bool {
        !matches!(self, Self::Public)
    }
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
    /// A bearer token that cannot be accepted: 401 with `error="invalid_token"`.
    InvalidToken(String),
    /// A valid bearer token without every scope the route needs: 403 with
    /// `error="insufficient_scope"` naming them.
    InsufficientScope(Vec<String>),
    /// A valid bearer token whose `(iss, sub)` is no local user: 403.
    UnknownSubject,
    /// Browser whose account is not enabled yet: 302 to the welcome page.
    WelcomeRedirect { location: String },
    /// API caller whose account is not enabled: 403.
    AccountDisabled,
    /// Browser whose session is not strong enough for the route (MFA, `acr`, recent login):
    /// 302 to a step-up login.
    StepUpRedirect { location: String },
    /// API caller whose authentication is not strong enough: 401 with
    /// `error="insufficient_user_authentication"` (RFC 9470) and what is missing.
    InsufficientAuthentication(StepUp),
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
    /// The path names an org that is not the caller's.
    OtherOrg,
}

/// What an edge sends back for a denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: String,
}

/// Decides one request at `now`. `matched` is the matched route (`None`: no route matched);
/// `caller` is only consulted on authenticated routes.
pub fn decide(
    req: &AuthzRequest,
    matched: Option<RouteMatch<'_>>,
    caller: &Caller,
    urls: &LoginUrls,
    now: i64,
) -> Decision {
    let Some(RouteMatch { route, org }) = matched else {
        return Decision::Deny(Denial::Forbidden {
            reason: ForbiddenReason::NoRoute,
            html: req.is_browser_navigation(),
        });
    };
    let browser = !route.api && req.is_browser_navigation();
    match route.access {
        Access::Deny => Decision::Deny(Denial::Forbidden {
            reason: ForbiddenReason::RouteDenies,
            html: browser,
        }),
        Access::Public => Decision::Allow(Grant::Public),
        Access::Authenticated => match (&route.bearer, &caller.bearer) {
            // A presented bearer token decides; never a fall-back to the cookie, never a 302.
            (Some(_), BearerCaller::Invalid(why)) => {
                Decision::Deny(Denial::InvalidToken(why.clone()))
            }
            (Some(_), BearerCaller::Unavailable) => {
                Decision::Deny(Denial::Unavailable { html: false })
            }
            (Some(rule), BearerCaller::Token { token, principal }) => {
                bearer_decision(route, org, rule, token, principal.as_ref(), now)
            }
            (_, _) if route.session => {
                session_decision(req, route, org, &caller.session, browser, urls, now)
            }
            // A bearer-only route and no token.
            (_, _) => Decision::Deny(Denial::Unauthenticated),
        },
    }
}

/// An authenticated route, by session cookie.
fn session_decision(
    req: &AuthzRequest,
    route: &Route,
    org: Option<&str>,
    session: &SessionCaller,
    browser: bool,
    urls: &LoginUrls,
    now: i64,
) -> Decision {
    match session {
        SessionCaller::Unavailable => Decision::Deny(Denial::Unavailable { html: browser }),
        SessionCaller::Anonymous if browser => Decision::Deny(Denial::LoginRedirect {
            location: urls.login_for(req),
        }),
        SessionCaller::Anonymous => Decision::Deny(Denial::Unauthenticated),
        SessionCaller::User(principal) => {
            let to = browser.then_some(BrowserTo { req, urls });
            match user_denial(route, org, principal, to, now) {
                Some(denial) => Decision::Deny(denial),
                None => Decision::Allow(Grant::User {
                    principal: principal.clone(),
                    token: None,
                }),
            }
        }
    }
}

/// An authenticated route, by a verified bearer token: the route's own rules on its claims,
/// then the same user rules as a session's (API style: never a redirect).
fn bearer_decision(
    route: &Route,
    org: Option<&str>,
    rule: &BearerConfig,
    token: &Arc<VerifiedToken>,
    principal: Option<&Principal>,
    now: i64,
) -> Decision {
    let invalid = |why: &str| Decision::Deny(Denial::InvalidToken(why.to_owned()));
    if !rule.issuers.iter().any(|i| *i == token.issuer) {
        // Another tenant's (or another configured issuer's) token.
        return invalid("the token is from an issuer this route does not accept");
    }
    if !token.audiences.iter().any(|a| rule.audiences.contains(a)) {
        return invalid("the token is for another audience");
    }
    if token.looks_like_id_token {
        return invalid("an ID token is not an access token");
    }
    let missing: Vec<String> = rule
        .scopes
        .iter()
        .filter(|s| !token.scopes.contains(s))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Decision::Deny(Denial::InsufficientScope(rule.scopes.clone()));
    }
    match principal {
        Some(principal) => match user_denial(route, org, principal, None, now) {
            Some(denial) => Decision::Deny(denial),
            None => Decision::Allow(Grant::User {
                principal: principal.clone(),
                token: Some(token.clone()),
            }),
        },
        None => match rule.unknown_subjects {
            UnknownSubjects::Deny => Decision::Deny(Denial::UnknownSubject),
            // No roles and no org to check against: only role-free, org-free routes pass.
            UnknownSubjects::Anonymous if !route.roles.is_empty() || route.tenant.is_some() => {
                Decision::Deny(Denial::Forbidden {
                    reason: ForbiddenReason::MissingRole,
                    html: false,
                })
            }
            UnknownSubjects::Anonymous => Decision::Allow(Grant::Token(token.clone())),
        },
    }
}

/// Where a browser is sent when it must act (log in, step up, wait for enabling).
#[derive(Clone, Copy)]
struct BrowserTo<'a> {
    req: &'a AuthzRequest,
    urls: &'a LoginUrls,
}

/// What stops a signed-in user on an authenticated route: not enabled, a missing role,
/// another org's path, or too weak an authentication. `to`: where a browser is sent (`None`:
/// API-style answers).
fn user_denial(
    route: &Route,
    org: Option<&str>,
    principal: &Principal,
    to: Option<BrowserTo<'_>>,
    now: i64,
) -> Option<Denial> {
    let user = &principal.user.identity;
    let browser = to.is_some();
    if !user.enabled {
        return Some(match to {
            Some(to) => Denial::WelcomeRedirect {
                location: to.urls.welcome.clone(),
            },
            None => Denial::AccountDisabled,
        });
    }
    if !route.roles.is_empty() && !user.has_any_role(&route.roles) {
        return Some(Denial::Forbidden {
            reason: ForbiddenReason::MissingRole,
            html: browser,
        });
    }
    if let Some(tenant) = &route.tenant {
        let own = org
            .and_then(|o| Uuid::parse_str(o).ok())
            .is_some_and(|named| user.org_id == Some(named));
        if !own && !user.has_any_role(&tenant.any_org_roles) {
            return Some(Denial::Forbidden {
                reason: ForbiddenReason::OtherOrg,
                html: browser,
            });
        }
    }
    // Last: stepping up is pointless for a request that would be refused anyway.
    let auth = &principal.auth;
    if (!route.step_up.is_empty() || auth.org_requires_mfa)
        && let Some(missing) = route.step_up.with_org(auth).unmet(auth, now)
    {
        return Some(match to {
            Some(to) => Denial::StepUpRedirect {
                location: to.urls.step_up_for(to.req, &missing),
            },
            None => Denial::InsufficientAuthentication(missing),
        });
    }
    None
}

/// Decides under both readings of the path (see [`crate::policy::Policy::find`]): a request is
/// allowed only when both its folded and its exact route allow it. When both deny, the folded
/// route's answer (the rule the request was written against) is given.
pub fn decide_matches(
    req: &AuthzRequest,
    matches: Matches<'_>,
    caller: &Caller,
    urls: &LoginUrls,
    now: i64,
) -> Decision {
    if let Some(route) = matches.agreed() {
        return decide(req, route, caller, urls, now);
    }
    let folded = decide(req, matches.folded, caller, urls, now);
    let exact = decide(req, matches.exact, caller, urls, now);
    match (folded, exact) {
        (Decision::Deny(d), _) | (Decision::Allow(_), Decision::Deny(d)) => Decision::Deny(d),
        // Both allow: pass on the identity if either route established one.
        (Decision::Allow(a), Decision::Allow(b)) if !a.identifies() => Decision::Allow(b),
        (Decision::Allow(a), Decision::Allow(_)) => Decision::Allow(a),
    }
}

/// Every `(decision, reason)` pair [`Decision::labels`] can return: metrics resolve them once.
pub const CHECK_LABELS: [(&str, &str); 20] = [
    ("allow", "public"),
    ("allow", "session"),
    ("allow", "bearer"),
    ("allow", "anonymous_token"),
    ("bad_request", "path"),
    ("bad_request", "host"),
    ("login_redirect", "none"),
    ("unauthenticated", "none"),
    ("invalid_token", "none"),
    ("insufficient_scope", "none"),
    ("unknown_subject", "none"),
    ("welcome_redirect", "none"),
    ("account_disabled", "none"),
    ("step_up_redirect", "none"),
    ("insufficient_user_authentication", "none"),
    ("forbidden", "missing_role"),
    ("forbidden", "route_denies"),
    ("forbidden", "no_route"),
    ("forbidden", "other_org"),
    ("unavailable", "none"),
];

impl Decision {
    /// A small fixed set of labels for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Allow(_) => "allow",
            Self::Deny(d) => d.label(),
        }
    }

    /// The decision and why, from [`CHECK_LABELS`].
    pub fn labels(&self) -> (&'static str, &'static str) {
        let reason = match self {
            Self::Allow(Grant::Public) => "public",
            Self::Allow(Grant::User { token: None, .. }) => "session",
            Self::Allow(Grant::User { token: Some(_), .. }) => "bearer",
            Self::Allow(Grant::Token(_)) => "anonymous_token",
            Self::Deny(Denial::BadRequest(Malformed::Path(_))) => "path",
            Self::Deny(Denial::BadRequest(Malformed::Host(_))) => "host",
            Self::Deny(Denial::Forbidden { reason, .. }) => match reason {
                ForbiddenReason::MissingRole => "missing_role",
                ForbiddenReason::RouteDenies => "route_denies",
                ForbiddenReason::NoRoute => "no_route",
                ForbiddenReason::OtherOrg => "other_org",
            },
            Self::Deny(_) => "none",
        };
        (self.label(), reason)
    }
}

impl Denial {
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::LoginRedirect { .. } => "login_redirect",
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidToken(_) => "invalid_token",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::UnknownSubject => "unknown_subject",
            Self::WelcomeRedirect { .. } => "welcome_redirect",
            Self::AccountDisabled => "account_disabled",
            Self::StepUpRedirect { .. } => "step_up_redirect",
            Self::InsufficientAuthentication(_) => "insufficient_user_authentication",
            Self::Forbidden { .. } => "forbidden",
            Self::Unavailable { .. } => "unavailable",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::LoginRedirect { .. }
            | Self::WelcomeRedirect { .. }
            | Self::StepUpRedirect { .. } => StatusCode::FOUND,
            Self::Unauthenticated | Self::InvalidToken(_) | Self::InsufficientAuthentication(_) => {
                StatusCode::UNAUTHORIZED
            }
            Self::AccountDisabled
            | Self::Forbidden { .. }
            | Self::InsufficientScope(_)
            | Self::UnknownSubject => StatusCode::FORBIDDEN,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn render(&self) -> DenyResponse {
        let mut headers = vec![(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
        let body = match self {
            Self::LoginRedirect { location }
            | Self::WelcomeRedirect { location }
            | Self::StepUpRedirect { location } => {
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
            Self::InvalidToken(why) => {
                headers.push((
                    header::WWW_AUTHENTICATE,
                    challenge(&[
                        ("error", "invalid_token"),
                        ("error_description", why.as_str()),
                    ]),
                ));
                json(&mut headers, "invalid_token")
            }
            Self::InsufficientScope(scopes) => {
                headers.push((
                    header::WWW_AUTHENTICATE,
                    challenge(&[
                        ("error", "insufficient_scope"),
                        ("scope", scopes.join(" ").as_str()),
                    ]),
                ));
                json(&mut headers, "insufficient_scope")
            }
            Self::InsufficientAuthentication(missing) => {
                // RFC 9470 §3: what the client must ask the authorization server for.
                let description = format!("this resource needs {}", missing.describe());
                let acr_values = missing.acr_values.join(" ");
                let max_age = missing.max_age.map(|m| m.to_string());
                let mut params = vec![
                    ("error", "insufficient_user_authentication"),
                    ("error_description", description.as_str()),
                ];
                if !acr_values.is_empty() {
                    params.push(("acr_values", acr_values.as_str()));
                }
                if let Some(max_age) = &max_age {
                    params.push(("max_age", max_age.as_str()));
                }
                headers.push((header::WWW_AUTHENTICATE, challenge(&params)));
                json(&mut headers, "insufficient_user_authentication")
            }
            Self::UnknownSubject => json(&mut headers, "unknown_subject"),
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

/// `Bearer realm="gatehouse", k="v", …` (RFC 6750 §3). Values keep only the characters a
/// quoted attribute may hold there (no `"` or `\`, visible ASCII and space).
fn challenge(params: &[(&str, &str)]) -> HeaderValue {
    let mut text = String::from("Bearer realm=\"gatehouse\"");
    for (key, value) in params {
        let clean: String = value
            .chars()
            .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
            .take(200)
            .collect();
        text.push_str(&format!(", {key}=\"{clean}\""));
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
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
mod tests;
