//! The route table: which rule applies to a request. Pure: plain data in, a route out.
//!
//! Routes are tried in file order and the first match wins; no match means deny. Matching uses
//! the normalized path (see [`path`]), never the query or fragment, and a validated host (see
//! [`host`]).
//!
//! Paths match without regard to ASCII letter case unless a route sets `case_sensitive =
//! true`. Many upstreams route that way (Express by default, ASP.NET, IIS, Spring with some
//! settings): if `/ADMIN/panel` did not match an `/admin/` rule, it would fall through to a
//! laxer route and still reach the admin pages.

pub mod config;
pub mod host;
pub mod path;
mod regexes;

use std::borrow::Cow;

use regex::{Regex, RegexBuilder};

use self::config::{Access, BearerConfig, RouteConfig};
use crate::strength::StepUp;
pub use host::{HostError, RequestHost};
pub use path::{NormalizedPath, PathError, normalize};
use regexes::{RegexHits, RegexIndex};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("route[{index}].{key}: {message}")]
    Route {
        index: usize,
        key: &'static str,
        message: String,
    },
}

/// A compiled route table.
#[derive(Debug, Clone)]
pub struct Policy {
    routes: Vec<Route>,
    /// Whether any route's path matcher holds an upper-case ASCII letter or a lookalike (then
    /// folding can matter even for an all-lower-case request path).
    any_upper: bool,
    /// Every `path_regex`, by slot.
    regexes: RegexIndex,
}

/// One compiled `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the file, for logs and `check-config`.
    pub index: usize,
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// Upper-case method names; `None` matches every method.
    pub methods: Option<Vec<String>>,
    pub access: Access,
    /// Any one of these grants access (empty: no role needed).
    pub roles: Vec<String>,
    /// Never redirect: answer 401/403 JSON.
    pub api: bool,
    /// Matched with exact letter case in both passes.
    pub case_sensitive: bool,
    /// Accepts `Authorization: Bearer` tokens by these rules.
    pub bearer: Option<BearerConfig>,
    /// Accepts the session cookie (every route but a bearer route with `session = false`).
    pub session: bool,
    /// The path must name the caller's own org.
    pub tenant: Option<TenantRule>,
    /// How strongly the caller must have authenticated (empty: any way).
    pub step_up: StepUp,
}

/// `org_param`: a `path_regex` capture that must be the caller's org id.
#[derive(Debug, Clone)]
pub struct TenantRule {
    /// The capture group's name.
    pub param: String,
    /// Roles that reach every org's resources (`org_admin_any`).
    pub any_org_roles: Vec<String>,
}

/// A matched route, with the org the path names when the route is tenant-scoped.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'a> {
    pub route: &'a Route,
    /// The `org_param` capture (`None` when the route has no tenant rule).
    pub org: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: any subdomain, not the apex.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Any,
    /// String prefix; a prefix ending in `/` also matches the same path without it, so
    /// `/admin/` covers `/admin`.
    Prefix(Pattern),
    Exact(Pattern),
    /// Anchored at both ends.
    Regex {
        exact: Regex,
        /// Case-insensitive, for the folded pass.
        folded: Regex,
        /// Position in the policy's [`RegexIndex`].
        slot: usize,
    },
}

/// A configured path, and its folded form (see [`fold`]).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub path: String,
    folded: String,
}

impl Pattern {
    fn new(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            folded: fold(path).to_ascii_lowercase(),
        }
    }
}

/// The two ways a request is matched; see [`Policy::find`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Exact letter case, as a case-sensitive upstream reads the path.
    Exact,
    /// ASCII letter case ignored and Unicode lookalikes folded, as a case-insensitive upstream
    /// reads it; routes with `case_sensitive = true` still match exactly.
    Folded,
}

/// The routes a request matches under exact and under folded matching (`None`: no route).
/// When they differ, the gate applies both and the stricter answer wins.
#[derive(Debug, Clone, Copy)]
pub struct Matches<'a> {
    pub folded: Option<RouteMatch<'a>>,
    pub exact: Option<RouteMatch<'a>>,
}

impl<'a> Matches<'a> {
    /// The one match when both passes agree (same route, same org).
    pub fn agreed(&self) -> Option<Option<RouteMatch<'a>>> {
        let same = match (self.folded, self.exact) {
            (Some(a), Some(b)) => {
                a.route.index == b.route.index
                    && match (a.org, b.org) {
                        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                        (x, y) => x == y,
                    }
            }
            (None, None) => true,
            _ => false,
        };
        same.then_some(self.folded)
    }

    /// The matched routes (one or two).
    pub fn routes(&self) -> impl Iterator<Item = &'a Route> {
        [self.folded, self.exact]
            .into_iter()
            .flatten()
            .map(|m| m.route)
    }
}

/// Characters whose case mapping is ASCII, in normalized (percent-encoded) form, and the
/// ASCII letter they fold to. Java's `equalsIgnoreCase` and .NET's `OrdinalIgnoreCase` treat
/// `/adm%C4%B1n/` (dotless ı) as `/admin/`; so does the folded pass.
const LOOKALIKES: [(&str, &str); 4] = [
    ("%C4%B0", "i"),    // İ LATIN CAPITAL LETTER I WITH DOT ABOVE
    ("%C4%B1", "i"),    // ı LATIN SMALL LETTER DOTLESS I
    ("%C5%BF", "s"),    // ſ LATIN SMALL LETTER LONG S
    ("%E2%84%AA", "k"), // K KELVIN SIGN
];

/// A normalized path with the [`LOOKALIKES`] replaced by their ASCII letters.
fn fold(path: &str) -> Cow<'_, str> {
    if !path.contains("%C4%B") && !path.contains("%C5%BF") && !path.contains("%E2%84%AA") {
        return Cow::Borrowed(path);
    }
    let mut folded = path.to_owned();
    for (from, to) in LOOKALIKES {
        folded = folded.replace(from, to);
    }
    Cow::Owned(folded)
}

impl Policy {
    pub fn compile(configs: &[RouteConfig]) -> Result<Self, PolicyError> {
        let mut routes = configs
            .iter()
            .enumerate()
            .map(|(index, c)| Route::compile(index, c))
            .collect::<Result<Vec<_>, _>>()?;
        let mut patterns = Vec::new();
        for route in &mut routes {
            if let PathMatch::Regex { exact, slot, .. } = &mut route.path {
                *slot = patterns.len();
                patterns.push(exact.as_str().to_owned());
            }
        }
        let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let regexes = RegexIndex::build(&patterns);
        let any_upper = configs.iter().any(|c| {
            [&c.path_prefix, &c.path_exact, &c.path_regex]
                .into_iter()
                .flatten()
                .any(|p| p.bytes().any(|b| b.is_ascii_uppercase()))
        });
        Ok(Self {
            routes,
            any_upper,
            regexes,
        })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route matching the request, once with exact letter case and once folded.
    /// Upstreams differ (IIS and ASP.NET ignore case; nginx and most Linux servers do not), so
    /// a request must not get laxer access than it would get under either reading: `/ADMIN/`
    /// is held to an `/admin/` rule, and `/PUBLIC/x` is not public to a case-sensitive
    /// upstream's `/PUBLIC/x`.
    pub fn find<'a>(
        &'a self,
        method: &str,
        host: &RequestHost,
        path: &'a NormalizedPath,
    ) -> Matches<'a> {
        let raw = path.as_str();
        let folded = fold(raw);
        let mut exact_hits = self.regexes.exact(raw);
        let mut folded_hits = self.regexes.folded(&folded);
        let mut first = |pass: Pass| {
            self.routes
                .iter()
                .find(|r| {
                    r.matches(
                        method,
                        host.as_str(),
                        pass,
                        &mut exact_hits,
                        &mut folded_hits,
                    )
                })
                .map(|route| RouteMatch {
                    route,
                    org: route.org_in(raw, pass),
                })
        };
        let exact = first(Pass::Exact);
        // Nothing to fold (no lookalike, no upper-case letter in the path or in any route):
        // both passes agree.
        let folding_matters = matches!(folded, Cow::Owned(_))
            || raw.bytes().any(|b| b.is_ascii_uppercase())
            || self.any_upper;
        let folded_route = if folding_matters {
            first(Pass::Folded)
        } else {
            exact
        };
        Matches {
            folded: folded_route,
            exact,
        }
    }
}

impl Route {
    fn compile(index: usize, c: &RouteConfig) -> Result<Self, PolicyError> {
        let err = |key: &'static str, message: String| PolicyError::Route {
            index,
            key,
            message,
        };
        let path_keys = [&c.path_prefix, &c.path_exact, &c.path_regex]
            .iter()
            .filter(|p| p.is_some())
            .count();
        if path_keys > 1 {
            return Err(err(
                "path_prefix",
                "set only one of path_prefix, path_exact, path_regex".to_owned(),
            ));
        }
        if path_keys == 0 && c.host.is_none() && c.methods.is_none() {
            return Err(err(
                "path_prefix",
                "a route needs a matcher: host, path_prefix, path_exact, path_regex or methods"
                    .to_owned(),
            ));
        }
        let path = if let Some(prefix) = &c.path_prefix {
            check_route_path("path_prefix", prefix).map_err(|m| err("path_prefix", m))?;
            PathMatch::Prefix(Pattern::new(prefix))
        } else if let Some(exact) = &c.path_exact {
            check_route_path("path_exact", exact).map_err(|m| err("path_exact", m))?;
            PathMatch::Exact(Pattern::new(exact))
        } else if let Some(pattern) = &c.path_regex {
            let build = |case_insensitive: bool| {
                RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .case_insensitive(case_insensitive)
                    .build()
                    .map_err(|e| err("path_regex", e.to_string()))
            };
            PathMatch::Regex {
                exact: build(false)?,
                folded: build(true)?,
                slot: 0,
            }
        } else {
            PathMatch::Any
        };
        let host = match &c.host {
            None => None,
            Some(h) => Some(HostMatch::parse(h).map_err(|m| err("host", m))?),
        };
        let methods = match &c.methods {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(err(
                    "methods",
                    "must not be empty (omit it to match all)".to_owned(),
                ));
            }
            Some(list) => Some(
                list.iter()
                    .map(|m| {
                        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                            Err(err("methods", format!("{m:?} is not an HTTP method")))
                        } else {
                            Ok(m.to_ascii_uppercase())
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if !c.roles.is_empty() && c.access != Access::Authenticated {
            return Err(err(
                "roles",
                "roles only apply to access = \"authenticated\"".to_owned(),
            ));
        }
        if c.roles.iter().any(|r| r.is_empty() || r.contains(',')) {
            return Err(err(
                "roles",
                "role names must be non-empty and contain no comma".to_owned(),
            ));
        }
        if let Some(bearer) = &c.bearer {
            check_bearer(bearer, c.access).map_err(|(key, m)| err(key, m))?;
        }
        let session = c.session.unwrap_or(true);
        if !session && c.bearer.is_none() {
            return Err(err(
                "session",
                "session = false leaves no way in without a bearer rule".to_owned(),
            ));
        }
        let tenant = match &c.org_param {
            None if !c.org_admin_any.is_empty() => {
                return Err(err(
                    "org_admin_any",
                    "only applies with org_param".to_owned(),
                ));
            }
            None => None,
            Some(param) => {
                let named = c.path_regex.is_some()
                    && matches!(&path, PathMatch::Regex { exact, .. }
                        if exact.capture_names().flatten().any(|n| n == param));
                if !named {
                    return Err(err(
                        "org_param",
                        format!("needs a path_regex with a named group (?P<{param}>...)"),
                    ));
                }
                if c.access != Access::Authenticated {
                    return Err(err(
                        "org_param",
                        "only applies to access = \"authenticated\"".to_owned(),
                    ));
                }
                Some(TenantRule {
                    param: param.clone(),
                    any_org_roles: c.org_admin_any.clone(),
                })
            }
        };
        let step_up = StepUp {
            mfa: c.mfa,
            acr_values: c.acr_values.clone(),
            max_age: c.max_auth_age_seconds,
        };
        if !step_up.is_empty() && c.access != Access::Authenticated {
            return Err(err(
                "mfa",
                "mfa, acr_values and max_auth_age_seconds only apply to access = \"authenticated\""
                    .to_owned(),
            ));
        }
        if c.acr_values.iter().any(|v| v.is_empty() || v.contains(' ')) {
            return Err(err(
                "acr_values",
                "values must be non-empty and contain no space".to_owned(),
            ));
        }
        Ok(Self {
            index,
            host,
            path,
            methods,
            step_up,
            access: c.access,
            roles: c.roles.clone(),
            api: c.api,
            case_sensitive: c.case_sensitive,
            bearer: c.bearer.clone(),
            session,
            tenant,
        })
    }

    /// The org the path names, for a tenant-scoped route matched in `pass`.
    fn org_in<'p>(&self, raw: &'p str, pass: Pass) -> Option<&'p str> {
        let tenant = self.tenant.as_ref()?;
        let PathMatch::Regex { exact, folded, .. } = &self.path else {
            return None;
        };
        // Captured from the raw path in both passes: folding only changes lookalikes, which a
        // UUID cannot contain.
        let regex = match pass {
            Pass::Folded if !self.case_sensitive => folded,
            _ => exact,
        };
        regex
            .captures(raw)
            .and_then(|c| c.name(&tenant.param))
            .map(|m| m.as_str())
    }

    /// `exact` and `folded` answer the regex routes for the raw and the folded path.
    fn matches(
        &self,
        method: &str,
        host: &str,
        pass: Pass,
        exact: &mut RegexHits<'_>,
        folded: &mut RegexHits<'_>,
    ) -> bool {
        if let Some(methods) = &self.methods
            && !methods.iter().any(|m| m.eq_ignore_ascii_case(method))
        {
            return false;
        }
        if let Some(h) = &self.host
            && !h.matches(host)
        {
            return false;
        }
        match pass {
            Pass::Folded if !self.case_sensitive => self.path.matches_folded(folded),
            _ => self.path.matches_exact(exact),
        }
    }

    /// Whether the caller must be identified before deciding.
    pub fn needs_identity(&self) -> bool {
        self.access == Access::Authenticated
    }
}

impl HostMatch {
    fn parse(raw: &str) -> Result<Self, String> {
        // Requests are matched without their trailing dot; so is the route.
        let host = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let valid = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        if let Some(suffix) = host.strip_prefix("*.") {
            if valid(suffix) {
                return Ok(Self::Suffix(format!(".{suffix}")));
            }
        } else if valid(&host) {
            return Ok(Self::Exact(host));
        }
        Err(format!(
            "{raw:?} must be a host name (example.com) or a wildcard (*.example.com), without port"
        ))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

impl PathMatch {
    fn matches_exact(&self, hits: &mut RegexHits<'_>) -> bool {
        let path = hits.path();
        match self {
            Self::Any => true,
            Self::Prefix(p) => {
                path.starts_with(p.path.as_str())
                    || p.path
                        .strip_suffix('/')
                        .is_some_and(|bare| !bare.is_empty() && bare == path)
            }
            Self::Exact(p) => p.path == path,
            Self::Regex { exact, slot, .. } => hits.matched(*slot, exact),
        }
    }

    /// `folded` is the request path after [`fold`]; ASCII case is ignored.
    fn matches_folded(&self, hits: &mut RegexHits<'_>) -> bool {
        let folded = hits.path();
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        match self {
            Self::Any => true,
            Self::Prefix(p) => {
                folded
                    .get(..p.folded.len())
                    .is_some_and(|head| same(head, &p.folded))
                    || p.folded
                        .strip_suffix('/')
                        .is_some_and(|bare| !bare.is_empty() && same(bare, folded))
            }
            Self::Exact(p) => same(&p.folded, folded),
            Self::Regex {
                folded: regex,
                slot,
                ..
            } => hits.matched(*slot, regex),
        }
    }

    /// `prefix /api/`-style text for `check-config`.
    pub fn describe(&self) -> String {
        match self {
            Self::Any => "any path".to_owned(),
            Self::Prefix(p) => format!("path_prefix {}", p.path),
            Self::Exact(p) => format!("path_exact {}", p.path),
            Self::Regex { exact, .. } => format!("path_regex {}", exact.as_str()),
        }
    }
}

/// A bearer rule's own checks; errors name the key.
fn check_bearer(b: &BearerConfig, access: Access) -> Result<(), (&'static str, String)> {
    if access != Access::Authenticated {
        return Err((
            "bearer",
            "only applies to access = \"authenticated\"".to_owned(),
        ));
    }
    if b.issuers.is_empty() {
        return Err(("bearer", "issuers must list at least one issuer".to_owned()));
    }
    for issuer in &b.issuers {
        match url::Url::parse(issuer) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => {}
            _ => return Err(("bearer", format!("issuer {issuer:?} is not an http(s) URL"))),
        }
    }
    if b.audiences.is_empty() || b.audiences.iter().any(String::is_empty) {
        return Err((
            "bearer",
            "audiences must list the audience(s) this API's tokens carry".to_owned(),
        ));
    }
    if b.scopes
        .iter()
        .any(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        return Err((
            "bearer",
            "scopes must be single words (no spaces)".to_owned(),
        ));
    }
    Ok(())
}

/// Configured paths must already be in normalized form, or they could never match.
fn check_route_path(key: &str, path: &str) -> Result<(), String> {
    match normalize(path) {
        Ok(n) if n.as_str() == path => Ok(()),
        Ok(n) => Err(format!(
            "{path:?} is not in normalized form (requests are matched as {:?}); write {key} = {:?}",
            n.as_str(),
            n.as_str()
        )),
        Err(e) => Err(format!("{path:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(toml_text: &str) -> RouteConfig {
        toml::from_str(toml_text).expect("route config")
    }

    fn policy(routes: &[&str]) -> Policy {
        let configs: Vec<RouteConfig> = routes.iter().map(|r| route(r)).collect();
        Policy::compile(&configs).expect("policy")
    }

    /// The matched route's index for a raw host and path, when both passes agree.
    fn matched(policy: &Policy, method: &str, host: &str, raw_path: &str) -> Option<usize> {
        let (folded, exact) = passes(policy, method, host, raw_path);
        assert_eq!(folded, exact, "{raw_path}: the passes disagree");
        folded
    }

    /// The matched routes' indexes: (folded, exact).
    fn passes(
        policy: &Policy,
        method: &str,
        host: &str,
        raw_path: &str,
    ) -> (Option<usize>, Option<usize>) {
        let path = normalize(raw_path).unwrap();
        let host = RequestHost::parse(host).unwrap();
        let m = policy.find(method, &host, &path);
        (
            m.folded.map(|r| r.route.index),
            m.exact.map(|r| r.route.index),
        )
    }

    #[test]
    fn first_match_wins_and_no_match_is_none() {
        let p = policy(&[
            r#"path_prefix = "/public/"
               access = "public""#,
            r#"path_prefix = "/admin/"
               access = "authenticated"
               roles = ["admin"]"#,
            r#"path_exact = "/healthz"
               access = "public""#,
            r#"path_regex = "/items/[0-9]+"
               access = "authenticated""#,
            r#"host = "*.internal.test"
               access = "deny""#,
            r#"path_prefix = "/api/"
               methods = ["get", "HEAD"]
               access = "authenticated"
               api = true"#,
        ]);
        let cases: &[(&str, &str, &str, Option<usize>)] = &[
            ("GET", "app.test", "/public/", Some(0)),
            ("GET", "app.test", "/public/a.css", Some(0)),
            ("GET", "app.test", "/public", Some(0)),
            ("GET", "app.test", "/publicity", None),
            ("GET", "app.test", "/admin/", Some(1)),
            ("GET", "app.test", "/admin", Some(1)),
            ("GET", "app.test", "/admin/users", Some(1)),
            ("GET", "app.test", "/administrator", None),
            // normalization tricks land on the admin rule, not the public one
            ("GET", "app.test", "/public/../admin/", Some(1)),
            ("GET", "app.test", "/public/%2e%2e/admin/", Some(1)),
            ("GET", "app.test", "//admin/", Some(1)),
            ("GET", "app.test", "/admin#x", Some(1)),
            // the query never takes part
            ("GET", "app.test", "/private?x=/public/", None),
            ("GET", "app.test", "/healthz", Some(2)),
            ("GET", "app.test", "/healthz/", None),
            ("GET", "app.test", "/healthz?probe=1", Some(2)),
            ("GET", "app.test", "/items/42", Some(3)),
            ("GET", "app.test", "/items/42/edit", None),
            ("GET", "app.test", "/x/items/42", None),
            ("GET", "a.internal.test", "/anything", Some(4)),
            ("GET", "A.Internal.Test:8443", "/anything", Some(4)),
            ("GET", "internal.test", "/anything", None),
            ("GET", "app.test", "/api/v1", Some(5)),
            ("head", "app.test", "/api/v1", Some(5)),
            ("POST", "app.test", "/api/v1", None),
        ];
        for (method, host, path, expected) in cases {
            assert_eq!(
                matched(&p, method, host, path),
                *expected,
                "{method} {host}{path}"
            );
        }
    }

    /// Letter case never loosens a rule: `/ADMIN/` is the admin route when folded, and a
    /// path that only folding makes public is matched by a stricter route exactly; the gate
    /// applies both. A `case_sensitive` route matches exact case in both passes.
    #[test]
    fn letter_case_table() {
        let p = policy(&[
            r#"path_prefix = "/admin/"
               access = "authenticated"
               roles = ["admin"]"#,
            r#"path_exact = "/Reports/Q3"
               access = "deny""#,
            r#"path_regex = "/items/[a-z]+"
               access = "deny""#,
            r#"path_prefix = "/CaseSensitive/"
               case_sensitive = true
               access = "deny""#,
            r#"path_prefix = "/public/"
               access = "public""#,
            r#"path_prefix = "/caf%C3%A9/"
               access = "deny""#,
            r#"path_prefix = "/"
               access = "authenticated""#,
        ]);
        let cases: &[(&str, Option<usize>, Option<usize>)] = &[
            // path, folded, exact
            ("/admin/panel", Some(0), Some(0)),
            ("/ADMIN/panel", Some(0), Some(6)),
            ("/Admin/", Some(0), Some(6)),
            ("/aDMIN", Some(0), Some(6)),
            ("/%41dmin/", Some(0), Some(6)),
            ("/%61DMIN/x", Some(0), Some(6)),
            // Unicode characters that Java and .NET fold to ASCII letters
            ("/adm%C4%B1n/", Some(0), Some(6)),
            ("/adm\u{131}n/", Some(0), Some(6)),
            ("/ADM\u{130}N/", Some(0), Some(6)),
            ("/\u{17f}ecret/../admin/", Some(0), Some(0)),
            ("/reports/q3", Some(1), Some(6)),
            ("/Reports/Q3", Some(1), Some(1)),
            ("/REPORTS/Q3", Some(1), Some(6)),
            ("/reports/q3/x", Some(6), Some(6)),
            ("/items/abc", Some(2), Some(2)),
            ("/ITEMS/ABC", Some(2), Some(6)),
            ("/CaseSensitive/x", Some(3), Some(3)),
            ("/casesensitive/x", Some(6), Some(6)),
            ("/public/a.css", Some(4), Some(4)),
            ("/PUBLIC/a.css", Some(4), Some(6)),
            // One spelling per character: raw and encoded non-ASCII are the same path.
            ("/caf\u{e9}/menu", Some(5), Some(5)),
            ("/caf%c3%a9/menu", Some(5), Some(5)),
            ("/CAF%C3%A9/menu", Some(5), Some(6)),
        ];
        for (path, folded, exact) in cases {
            assert_eq!(
                passes(&p, "GET", "app.test", path),
                (*folded, *exact),
                "{path}"
            );
        }
    }

    #[test]
    fn route_hosts_ignore_a_trailing_dot() {
        let p = policy(&[r#"host = "Secure.Test."
                            access = "deny""#]);
        assert_eq!(matched(&p, "GET", "secure.test", "/x"), Some(0));
        assert_eq!(matched(&p, "GET", "SECURE.test.:443", "/x"), Some(0));
    }

    #[test]
    fn compile_errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            (r#"access = "public""#, "route[0].path_prefix"),
            (
                r#"path_prefix = "/a"
                   path_exact = "/b"
                   access = "public""#,
                "route[0].path_prefix",
            ),
            (
                r#"path_regex = "(unclosed"
                   access = "public""#,
                "route[0].path_regex",
            ),
            (
                r#"path_prefix = "/a/../b"
                   access = "public""#,
                "route[0].path_prefix",
            ),
            (
                r#"host = "bad host"
                   access = "public""#,
                "route[0].host",
            ),
            (
                r#"path_prefix = "/"
                   methods = []
                   access = "public""#,
                "route[0].methods",
            ),
            (
                r#"path_prefix = "/"
                   access = "public"
                   roles = ["admin"]"#,
                "route[0].roles",
            ),
            (
                r#"path_prefix = "/"
                   access = "authenticated"
                   bearer = { issuers = ["x"], audiences = ["api"] }"#,
                "route[0].bearer",
            ),
            (
                r#"path_prefix = "/"
                   access = "authenticated"
                   bearer = { issuers = ["https://x/"], audiences = [] }"#,
                "route[0].bearer",
            ),
            (
                r#"path_prefix = "/"
                   access = "public"
                   bearer = { issuers = ["https://x/"], audiences = ["api"] }"#,
                "route[0].bearer",
            ),
            (
                r#"path_prefix = "/"
                   access = "authenticated"
                   session = false"#,
                "route[0].session",
            ),
            (
                r#"path_prefix = "/orgs/"
                   access = "authenticated"
                   org_param = "org""#,
                "route[0].org_param",
            ),
            (
                r#"path_regex = "/orgs/(?P<tenant>[^/]+)/.*"
                   access = "authenticated"
                   org_param = "org""#,
                "route[0].org_param",
            ),
            (
                r#"path_prefix = "/"
                   access = "authenticated"
                   org_admin_any = ["support"]"#,
                "route[0].org_admin_any",
            ),
        ];
        for (text, key) in cases {
            let message = Policy::compile(&[route(text)])
                .expect_err("should not compile")
                .to_string();
            assert!(message.starts_with(key), "{text}: {message}");
        }
    }
}
