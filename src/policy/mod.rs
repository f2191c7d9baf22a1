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

pub mod host;
pub mod path;

use regex::{Regex, RegexBuilder};

use crate::config::{Access, RouteConfig};
pub use host::{HostError, RequestHost};
pub use path::{NormalizedPath, PathError, normalize};

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
    Prefix {
        prefix: String,
        case: Case,
    },
    Exact {
        path: String,
        case: Case,
    },
    /// Anchored at both ends; case-insensitive unless the route is case-sensitive.
    Regex(Regex),
}

/// How a path matcher treats ASCII letter case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Insensitive,
    Sensitive,
}

impl Case {
    fn same(self, a: &str, b: &str) -> bool {
        match self {
            Self::Insensitive => a.eq_ignore_ascii_case(b),
            Self::Sensitive => a == b,
        }
    }

    fn starts_with(self, path: &str, prefix: &str) -> bool {
        path.get(..prefix.len())
            .is_some_and(|head| self.same(head, prefix))
    }
}

impl Policy {
    pub fn compile(configs: &[RouteConfig]) -> Result<Self, PolicyError> {
        let routes = configs
            .iter()
            .enumerate()
            .map(|(index, c)| Route::compile(index, c))
            .collect::<Result<_, _>>()?;
        Ok(Self { routes })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route matching the request, if any.
    pub fn find(&self, method: &str, host: &RequestHost, path: &NormalizedPath) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.matches(method, host.as_str(), path.as_str()))
    }
}

impl Route {
    fn compile(index: usize, c: &RouteConfig) -> Result<Self, PolicyError> {
        let err = |key: &'static str, message: String| PolicyError::Route {
            index,
            key,
            message,
        };
        if c.bearer.is_some() {
            return Err(err(
                "bearer",
                "bearer-token routes are not supported by this version of gatehouse".to_owned(),
            ));
        }
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
        let case = if c.case_sensitive {
            Case::Sensitive
        } else {
            Case::Insensitive
        };
        let path = if let Some(prefix) = &c.path_prefix {
            check_route_path("path_prefix", prefix).map_err(|m| err("path_prefix", m))?;
            PathMatch::Prefix {
                prefix: prefix.clone(),
                case,
            }
        } else if let Some(exact) = &c.path_exact {
            check_route_path("path_exact", exact).map_err(|m| err("path_exact", m))?;
            PathMatch::Exact {
                path: exact.clone(),
                case,
            }
        } else if let Some(pattern) = &c.path_regex {
            let regex = RegexBuilder::new(&format!("^(?:{pattern})$"))
                .case_insensitive(case == Case::Insensitive)
                .build()
                .map_err(|e| err("path_regex", e.to_string()))?;
            PathMatch::Regex(regex)
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
        Ok(Self {
            index,
            host,
            path,
            methods,
            access: c.access,
            roles: c.roles.clone(),
            api: c.api,
        })
    }

    fn matches(&self, method: &str, host: &str, path: &str) -> bool {
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
        self.path.matches(path)
    }

    /// Whether the caller must be identified before deciding.
    pub fn needs_identity(&self) -> bool {
        self.access == Access::Authenticated
    }
}

impl HostMatch {
    fn parse(raw: &str) -> Result<Self, String> {
        let host = raw.trim().to_ascii_lowercase();
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
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix { prefix, case } => {
                case.starts_with(path, prefix)
                    || prefix
                        .strip_suffix('/')
                        .is_some_and(|p| !p.is_empty() && case.same(p, path))
            }
            Self::Exact { path: exact, case } => case.same(exact, path),
            Self::Regex(regex) => regex.is_match(path),
        }
    }

    /// `prefix /api/`-style text for `check-config`.
    pub fn describe(&self) -> String {
        let case = |c: &Case| match c {
            Case::Insensitive => "",
            Case::Sensitive => " (case-sensitive)",
        };
        match self {
            Self::Any => "any path".to_owned(),
            Self::Prefix { prefix, case: c } => format!("path_prefix {prefix}{}", case(c)),
            Self::Exact { path, case: c } => format!("path_exact {path}{}", case(c)),
            Self::Regex(r) => format!("path_regex {}", r.as_str()),
        }
    }
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

    /// Returns the index of the matched route for a raw host and path.
    fn matched(policy: &Policy, method: &str, host: &str, raw_path: &str) -> Option<usize> {
        let path = normalize(raw_path).ok()?;
        let host = RequestHost::parse(host).ok()?;
        policy.find(method, &host, &path).map(|r| r.index)
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

    /// Letter case never loosens a rule: `/ADMIN/` is the admin route, for every matcher kind,
    /// unless a route opts into exact case.
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
            r#"path_prefix = "/"
               access = "authenticated""#,
        ]);
        let cases: &[(&str, Option<usize>)] = &[
            ("/admin/panel", Some(0)),
            ("/ADMIN/panel", Some(0)),
            ("/Admin/", Some(0)),
            ("/aDMIN", Some(0)),
            ("/%41dmin/", Some(0)),
            ("/%61DMIN/x", Some(0)),
            ("/reports/q3", Some(1)),
            ("/REPORTS/Q3", Some(1)),
            ("/reports/q3/x", Some(5)),
            ("/items/abc", Some(2)),
            ("/ITEMS/ABC", Some(2)),
            ("/CaseSensitive/x", Some(3)),
            ("/casesensitive/x", Some(5)),
            ("/public/a.css", Some(4)),
            ("/PUBLIC/a.css", Some(4)),
            // non-ASCII letters are not folded (and stay percent-encoded)
            ("/%C3%A9/x", Some(5)),
        ];
        for (path, expected) in cases {
            assert_eq!(matched(&p, "GET", "app.test", path), *expected, "{path}");
        }
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
                   bearer = { issuers = ["x"] }"#,
                "route[0].bearer",
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
