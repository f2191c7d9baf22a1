//! The request being authorized, as plain data. Both edges (gRPC ext_authz and HTTP
//! forward-auth) convert their wire format into this, so the decision never sees a protocol type.

use std::net::IpAddr;

use http::HeaderMap;

use crate::identity::poses_as_identity_header;

#[derive(Debug, Clone, Default)]
pub struct AuthzRequest {
    /// Upper-case method.
    pub method: String,
    /// `http` or `https`, as the client used it.
    pub scheme: String,
    /// The `Host`/`:authority` the client sent, port included.
    pub host: String,
    /// The request target as the client sent it: path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub client_ip: Option<IpAddr>,
}

impl AuthzRequest {
    /// A browser navigation: GET or HEAD asking for HTML. Only these get redirects.
    pub fn is_browser_navigation(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD") && self.accepts_html()
    }

    fn accepts_html(&self) -> bool {
        self.headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|range| {
                let media = range.split(';').next().unwrap_or_default().trim();
                media.eq_ignore_ascii_case("text/html")
            })
    }

    /// The URL the client asked for, to come back to after login.
    pub fn original_url(&self) -> String {
        let scheme = if self.scheme.is_empty() {
            "http"
        } else {
            &self.scheme
        };
        format!("{scheme}://{}{}", self.host, self.path)
    }

    /// Names of inbound headers that pose as gatehouse's `x-gatehouse-*`, in any spelling:
    /// clients may not set these.
    pub fn spoofed_identity_headers(&self) -> impl Iterator<Item = &http::HeaderName> {
        self.headers
            .keys()
            .filter(|name| poses_as_identity_header(name.as_str()))
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, accept: Option<&str>) -> AuthzRequest {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(http::header::ACCEPT, a.parse().unwrap());
        }
        AuthzRequest {
            method: method.into(),
            headers,
            ..Default::default()
        }
    }

    #[test]
    fn browser_navigation_table() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        let cases = [
            ("GET", Some(browser), true),
            ("HEAD", Some(browser), true),
            ("GET", Some("TEXT/HTML"), true),
            ("GET", Some("application/json"), false),
            ("GET", Some("*/*"), false),
            ("GET", None, false),
            ("POST", Some(browser), false),
            ("GET", Some("text/htmlx"), false),
        ];
        for (method, accept, expected) in cases {
            assert_eq!(
                request(method, accept).is_browser_navigation(),
                expected,
                "{method} {accept:?}"
            );
        }
    }
}
