//! `/authz` forward-auth: the same decisions as the gRPC edge, over plain HTTP, for nginx
//! `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth` and Envoy's HTTP ext_authz.
//!
//! Which request is being authorized comes from one of two places, never a mix:
//! - `X-Forwarded-Uri` (with `X-Forwarded-Method`, `-Host`, `-Proto`), believed only from a peer
//!   in `trusted_proxies`. The proxy must set all four itself, overwriting what the client sent
//!   (Traefik and Caddy do; nginx needs `proxy_set_header` for each, see the README);
//! - otherwise the path after the `/authz` prefix (Envoy's HTTP ext_authz, `path_prefix: /authz`).
//!
//! A repeated forwarded header, or a request that names no target at all (a bare `/authz`), is a
//! 400: guessing would authorize some other request than the one the proxy will serve.
//!
//! Allow is exactly 200. The response carries every identity header (empty when there is no
//! identity, so a proxy that copies them overwrites anything the client sent), the `cookie` value
//! the upstream should get, and `x-envoy-auth-headers-to-remove` naming what Envoy must drop.
//! Denials carry their status, `Location` and body.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use ipnet::IpNet;

use super::AppState;
use crate::bearer::{ISSUER_HEADER, SCOPE_HEADER, SUBJECT_HEADER};
use crate::decision::{Decision, Denial};
use crate::gate::UpstreamChanges;
use crate::identity::{
    EMAIL_HEADER, IMPERSONATOR_HEADER, JWT_HEADER, ORG_ID_HEADER, ROLES_HEADER, USER_ID_HEADER,
};
use crate::request::AuthzRequest;
use crate::session::cookie::CookieRewrite;

pub const PREFIX: &str = "/authz";
/// Envoy's HTTP ext_authz removes the upstream request headers this response header names.
const HEADERS_TO_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");

/// Why a forward-auth request does not say unambiguously what to authorize.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardAuthError {
    #[error("header {0} appears more than once")]
    Repeated(&'static str),
    #[error("header {0} is empty or not text")]
    Unreadable(&'static str),
    #[error("the request names no URI to authorize (send X-Forwarded-Uri, or call /authz/<path>)")]
    NoTarget,
    #[error("Gatehouse-Redirect-Status must be 401 (or absent)")]
    RedirectStatus,
}

/// Sent by proxies that cannot pass a redirect on to the client (nginx `auth_request` turns
/// anything but 2xx, 401 and 403 into a 500): with `401`, a redirect decision is answered 401
/// with its `Location`, and the proxy's 401 handler redirects (see `examples/nginx.conf`).
const REDIRECT_STATUS: &str = "gatehouse-redirect-status";

/// How to answer redirect decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redirects {
    /// 302 with `Location` (Traefik, Caddy, Envoy pass it to the client).
    Found,
    /// 401 with `Location` (nginx `auth_request`).
    Unauthorized,
}

fn redirects(headers: &HeaderMap) -> Result<Redirects, ForwardAuthError> {
    match single_value(headers, REDIRECT_STATUS) {
        Ok(None) => Ok(Redirects::Found),
        Ok(Some(v)) if v == "401" => Ok(Redirects::Unauthorized),
        _ => Err(ForwardAuthError::RedirectStatus),
    }
}

pub async fn handle(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, _body) = request.into_parts();
    let trusted = &state.settings.server.trusted_proxies;
    let cookies = joined_cookies(&parts.headers);
    let parsed = redirects(&parts.headers).and_then(|redirects| {
        original_request(
            parts.method.as_str(),
            parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            parts.headers,
            peer.ip(),
            trusted,
        )
        .map(|req| (req, redirects))
    });
    let (req, redirects) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::debug!(error = %e, "ambiguous forward-auth request");
            let body = serde_json::json!({ "error": "bad_request", "detail": e.to_string() });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let verdict = state.gate.check(&req).await;
    match (verdict.decision, verdict.upstream) {
        (Decision::Allow(_), Some(changes)) => allow_response(changes, cookies),
        (Decision::Deny(denial), _) => deny_response(&denial, redirects),
        // An allow always carries its upstream changes; anything else fails closed.
        (Decision::Allow(_), None) => {
            deny_response(&Denial::Unavailable { html: false }, redirects)
        }
    }
}

/// Every `Cookie` header of the request as one value (`None` without cookies).
fn joined_cookies(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut joined = Vec::new();
    for value in headers.get_all(http::header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&joined)
        .ok()
        .filter(|v| !v.is_empty())
}

/// `cookies`: the request's own, sent back unchanged when there is nothing to remove, so a
/// proxy that sets the upstream's `Cookie` from this response (nginx) keeps the others.
fn allow_response(changes: UpstreamChanges, cookies: Option<HeaderValue>) -> Response {
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    // Every identity header, empty when unset, so a copying proxy overwrites client values.
    for name in [
        USER_ID_HEADER,
        EMAIL_HEADER,
        ORG_ID_HEADER,
        ROLES_HEADER,
        IMPERSONATOR_HEADER,
        JWT_HEADER,
        ISSUER_HEADER,
        SUBJECT_HEADER,
        SCOPE_HEADER,
    ] {
        headers.insert(name, HeaderValue::from_static(""));
    }
    let mut remove: Vec<String> = changes
        .remove
        .iter()
        .map(|n| n.as_str().to_owned())
        .collect();
    for (name, value) in changes.headers() {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(name.clone(), value);
        }
    }
    match changes.cookie {
        CookieRewrite::Unchanged => {
            if let Some(cookies) = cookies {
                headers.insert(http::header::COOKIE, cookies);
            }
        }
        CookieRewrite::Replace(value) => {
            headers.insert(http::header::COOKIE, value);
        }
        CookieRewrite::Remove => remove.push("cookie".to_owned()),
    }
    if !remove.is_empty()
        && let Ok(v) = HeaderValue::from_str(&remove.join(","))
    {
        headers.insert(HEADERS_TO_REMOVE, v);
    }
    response
}

fn deny_response(denial: &Denial, redirects: Redirects) -> Response {
    let rendered = denial.render();
    let mut response = Response::new(Body::from(rendered.body));
    *response.status_mut() =
        if rendered.status.is_redirection() && redirects == Redirects::Unauthorized {
            StatusCode::UNAUTHORIZED
        } else {
            rendered.status
        };
    response.headers_mut().extend(rendered.headers);
    response
}

/// The one value of header `name`, trimmed (`None` when absent). Repeated, empty or not text
/// is an error: falling back to another source would authorize some other request.
fn single_value(
    headers: &HeaderMap,
    name: &'static str,
) -> Result<Option<String>, ForwardAuthError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ForwardAuthError::Repeated(name));
    }
    match first.to_str().map(str::trim) {
        Ok(value) if !value.is_empty() => Ok(Some(value.to_owned())),
        _ => Err(ForwardAuthError::Unreadable(name)),
    }
}

fn is_trusted(ip: &IpAddr, trusted_proxies: &[IpNet]) -> bool {
    trusted_proxies.iter().any(|net| net.contains(ip))
}

/// Reconstructs the request being authorized. Pure, so the trust rules are table-tested.
pub fn original_request(
    method: &str,
    path_and_query: &str,
    headers: HeaderMap,
    peer: IpAddr,
    trusted_proxies: &[IpNet],
) -> Result<AuthzRequest, ForwardAuthError> {
    let peer = peer.to_canonical();
    let from_proxy = is_trusted(&peer, trusted_proxies);
    let forwarded = |name: &'static str| -> Result<Option<String>, ForwardAuthError> {
        if from_proxy {
            single_value(&headers, name)
        } else {
            Ok(None)
        }
    };

    let (method, path, host, scheme) = match forwarded("x-forwarded-uri")? {
        Some(uri) => (
            forwarded("x-forwarded-method")?.unwrap_or_else(|| method.to_owned()),
            uri,
            forwarded("x-forwarded-host")?,
            forwarded("x-forwarded-proto")?,
        ),
        None => {
            // Envoy HTTP ext_authz: the original path follows the prefix, and is never empty.
            let rest = path_and_query
                .strip_prefix(PREFIX)
                .unwrap_or(path_and_query);
            if !rest.starts_with('/') {
                return Err(ForwardAuthError::NoTarget);
            }
            (
                method.to_owned(),
                rest.to_owned(),
                None,
                forwarded("x-forwarded-proto")?,
            )
        }
    };
    // Validated by the gate like any authority: a malformed one is a 400.
    let host = match host {
        Some(host) => host,
        None => single_value(&headers, "host")?.unwrap_or_default(),
    };
    let scheme = scheme
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".to_owned());
    let client_ip = client_ip(&headers, peer, trusted_proxies);
    Ok(AuthzRequest {
        method: method.to_ascii_uppercase(),
        scheme,
        host,
        path,
        headers,
        client_ip: Some(client_ip),
    })
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` address that is not a trusted proxy (addresses left of it were written by
/// the client and prove nothing).
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(&peer, trusted_proxies) {
        return peer;
    }
    let hops: Option<Vec<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| {
            hop.trim()
                .parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .ok()
        })
        .collect();
    hops.and_then(|hops| {
        hops.iter()
            .rev()
            .find(|ip| !is_trusted(ip, trusted_proxies))
            .or(hops.first())
            .copied()
    })
    .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_status_header() {
        type Row<'a> = (
            &'a [(&'a str, &'a str)],
            Result<Redirects, ForwardAuthError>,
        );
        let cases: [Row; 5] = [
            (&[], Ok(Redirects::Found)),
            (&[(REDIRECT_STATUS, "401")], Ok(Redirects::Unauthorized)),
            (&[(REDIRECT_STATUS, " 401 ")], Ok(Redirects::Unauthorized)),
            (
                &[(REDIRECT_STATUS, "302")],
                Err(ForwardAuthError::RedirectStatus),
            ),
            (
                &[(REDIRECT_STATUS, "401"), (REDIRECT_STATUS, "401")],
                Err(ForwardAuthError::RedirectStatus),
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(redirects(&headers(pairs)), expected, "{pairs:?}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// peer, request path, headers, then the expected method, scheme, host, path, client
    type Row<'a> = (
        IpAddr,
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
    );

    #[test]
    fn trust_table() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let traefik = [
            ("host", "auth.internal"),
            ("x-forwarded-method", "POST"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-uri", "/admin/?x=1"),
            ("x-forwarded-for", "198.51.100.7, 10.9.9.9"),
        ];
        #[rustfmt::skip]
        let cases: Vec<Row> = vec![
            // A trusted proxy describes the original request.
            (proxy, "/authz", traefik.to_vec(), "POST", "https", "app.example.com", "/admin/?x=1", "198.51.100.7"),
            // The same headers from anyone else are ignored: the path after /authz counts.
            (stranger, "/authz/app", traefik.to_vec(), "GET", "http", "auth.internal", "/app", "203.0.113.9"),
            // Envoy HTTP ext_authz style: path after the prefix.
            (stranger, "/authz/admin/x?y=1", vec![("host", "gw:10000")], "GET", "http", "gw:10000", "/admin/x?y=1", "203.0.113.9"),
            (stranger, "/authz/", vec![("host", "gw")], "GET", "http", "gw", "/", "203.0.113.9"),
            (proxy, "/authz/p", vec![("host", "gw"), ("x-forwarded-proto", "https")], "GET", "https", "gw", "/p", "10.1.2.3"),
            // nginx's X-Original-URI is not one of the trusted headers.
            (proxy, "/authz/p", vec![("host", "gw"), ("x-original-uri", "/public/")], "GET", "http", "gw", "/p", "10.1.2.3"),
            // Unknown schemes are not believed.
            (proxy, "/authz/p", vec![("host", "gw"), ("x-forwarded-proto", "javascript")], "GET", "http", "gw", "/p", "10.1.2.3"),
            // A garbage X-Forwarded-For falls back to the peer.
            (proxy, "/authz/p", vec![("host", "gw"), ("x-forwarded-for", "not-an-ip")], "GET", "http", "gw", "/p", "10.1.2.3"),
        ];
        for (peer, path, hs, method, scheme, host, want_path, client) in cases {
            let what = format!("peer={peer} path={path} headers={hs:?}");
            let req = original_request("GET", path, headers(&hs), peer, &trusted)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(req.method, method, "{what}");
            assert_eq!(req.scheme, scheme, "{what}");
            assert_eq!(req.host, host, "{what}");
            assert_eq!(req.path, want_path, "{what}");
            assert_eq!(req.client_ip.unwrap().to_string(), client, "{what}");
        }
    }

    /// peer, request path, headers, expected error
    type Refused<'a> = (IpAddr, &'a str, Vec<(&'a str, &'a str)>, ForwardAuthError);

    #[test]
    fn ambiguous_requests_are_refused() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let cases: Vec<Refused> = vec![
            // A bare /authz names nothing: it must not be judged as "/".
            (proxy, "/authz", vec![], ForwardAuthError::NoTarget),
            (
                stranger,
                "/authz",
                vec![("x-forwarded-uri", "/x")],
                ForwardAuthError::NoTarget,
            ),
            (proxy, "/authz?x=1", vec![], ForwardAuthError::NoTarget),
            // A repeated forwarded header is ambiguous.
            (
                proxy,
                "/authz",
                vec![("x-forwarded-uri", "/a"), ("x-forwarded-uri", "/b")],
                ForwardAuthError::Repeated("x-forwarded-uri"),
            ),
            (
                proxy,
                "/authz",
                vec![
                    ("x-forwarded-uri", "/a"),
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-method", "POST"),
                ],
                ForwardAuthError::Repeated("x-forwarded-method"),
            ),
            // Present but unusable: never fall back to the Host of the subrequest.
            (
                proxy,
                "/authz",
                vec![("x-forwarded-uri", "/a"), ("x-forwarded-host", "")],
                ForwardAuthError::Unreadable("x-forwarded-host"),
            ),
            (
                proxy,
                "/authz",
                vec![("x-forwarded-uri", "/a"), ("x-forwarded-method", " ")],
                ForwardAuthError::Unreadable("x-forwarded-method"),
            ),
            // Two Host headers: which one names the route?
            (
                stranger,
                "/authz/x",
                vec![("host", "secure.test"), ("host", "gw.test")],
                ForwardAuthError::Repeated("host"),
            ),
            (
                proxy,
                "/authz",
                vec![
                    ("x-forwarded-uri", "/a"),
                    ("x-forwarded-host", "a.test"),
                    ("x-forwarded-host", "b.test"),
                ],
                ForwardAuthError::Repeated("x-forwarded-host"),
            ),
        ];
        for (peer, path, hs, want) in cases {
            assert_eq!(
                original_request("GET", path, headers(&hs), peer, &trusted).unwrap_err(),
                want,
                "{peer} {path} {hs:?}"
            );
        }
    }
}
