//! `/authz` forward-auth: the same decisions as the gRPC edge, over plain HTTP, for nginx
//! `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth` and Envoy's HTTP ext_authz.
//!
//! The original request is described either by `X-Forwarded-*` headers (Traefik, Caddy, nginx
//! with `X-Original-URI`), which are believed only from `trusted_proxies`, or by the request
//! itself with the `/authz` prefix removed (Envoy's HTTP ext_authz with `path_prefix: /authz`).
//! Allow is exactly 200 with the identity headers on the response; denials carry their status,
//! `Location` and body.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use ipnet::IpNet;

use super::AppState;
use crate::decision::Decision;
use crate::request::AuthzRequest;

pub const PREFIX: &str = "/authz";

pub async fn handle(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, _body) = request.into_parts();
    let trusted = &state.settings.server.trusted_proxies;
    let req = original_request(
        parts.method.as_str(),
        parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        parts.headers,
        peer.ip(),
        trusted,
    );
    let verdict = state.gate.check(&req).await;
    match verdict.decision {
        Decision::Allow(_) => {
            let mut response = StatusCode::OK.into_response();
            if let Some(changes) = verdict.upstream {
                response.headers_mut().extend(changes.set);
            }
            response
        }
        Decision::Deny(denial) => {
            let rendered = denial.render();
            let mut response = Response::new(Body::from(rendered.body));
            *response.status_mut() = rendered.status;
            response.headers_mut().extend(rendered.headers);
            response
        }
    }
}

/// Reconstructs the request being authorized. Pure, so the trust rules are table-tested.
pub fn original_request(
    method: &str,
    path_and_query: &str,
    headers: HeaderMap,
    peer: IpAddr,
    trusted_proxies: &[IpNet],
) -> AuthzRequest {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    let from_proxy = is_trusted(&peer);
    let forwarded = |name: &str| -> Option<String> {
        if !from_proxy {
            return None;
        }
        // A repeated header is ambiguous: ignore it rather than pick one.
        let mut values = headers.get_all(name).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        first
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };

    let original_uri = forwarded("x-forwarded-uri").or_else(|| forwarded("x-original-uri"));
    let (method, path) = match original_uri {
        Some(uri) => (
            forwarded("x-forwarded-method")
                .or_else(|| forwarded("x-original-method"))
                .unwrap_or_else(|| method.to_owned()),
            uri,
        ),
        None => {
            // Envoy HTTP ext_authz: the original path follows the prefix.
            let rest = path_and_query
                .strip_prefix(PREFIX)
                .unwrap_or(path_and_query);
            let path = if rest.starts_with('/') {
                rest.to_owned()
            } else {
                format!("/{rest}")
            };
            (method.to_owned(), path)
        }
    };
    let host = forwarded("x-forwarded-host").unwrap_or_else(|| {
        headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    });
    let scheme = forwarded("x-forwarded-proto")
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".to_owned());
    let client_ip = client_ip(&headers, peer, trusted_proxies);
    AuthzRequest {
        method: method.to_ascii_uppercase(),
        scheme,
        host,
        path,
        headers,
        client_ip: Some(client_ip),
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` address that is not a trusted proxy (addresses left of it were written by
/// the client and prove nothing).
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    forwarded_client(headers, &is_trusted).unwrap_or(peer)
}

fn forwarded_client(headers: &HeaderMap, is_trusted: &dyn Fn(&IpAddr) -> bool) -> Option<IpAddr> {
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()))
        .collect::<Result<_, _>>()
        .ok()?;
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // (peer, request path, headers, method, scheme, host, path, client)
        #[rustfmt::skip]
        let cases: Vec<Row> = vec![
            // A trusted proxy describes the original request.
            (proxy, "/authz", traefik.to_vec(), "POST", "https", "app.example.com", "/admin/?x=1", "198.51.100.7"),
            // The same headers from anyone else are ignored.
            (stranger, "/authz", traefik.to_vec(), "GET", "http", "auth.internal", "/", "203.0.113.9"),
            // nginx style.
            (proxy, "/authz", vec![("host", "app"), ("x-original-uri", "/private")], "GET", "http", "app", "/private", "10.1.2.3"),
            // Envoy HTTP ext_authz style: path after the prefix.
            (stranger, "/authz/admin/x?y=1", vec![("host", "gw:10000")], "GET", "http", "gw:10000", "/admin/x?y=1", "203.0.113.9"),
            (stranger, "/authz", vec![("host", "gw")], "GET", "http", "gw", "/", "203.0.113.9"),
            // A repeated forwarded header is ignored rather than guessed.
            (proxy, "/authz/p", vec![("host", "gw"), ("x-forwarded-uri", "/a"), ("x-forwarded-uri", "/b")], "GET", "http", "gw", "/p", "10.1.2.3"),
            // Unknown schemes are not believed.
            (proxy, "/authz/p", vec![("host", "gw"), ("x-forwarded-proto", "javascript")], "GET", "http", "gw", "/p", "10.1.2.3"),
            // A garbage X-Forwarded-For falls back to the peer.
            (proxy, "/authz/p", vec![("host", "gw"), ("x-forwarded-for", "not-an-ip")], "GET", "http", "gw", "/p", "10.1.2.3"),
        ];
        for (peer, path, hs, method, scheme, host, want_path, client) in cases {
            let req = original_request("GET", path, headers(&hs), peer, &trusted);
            let what = format!("peer={peer} path={path} headers={hs:?}");
            assert_eq!(req.method, method, "{what}");
            assert_eq!(req.scheme, scheme, "{what}");
            assert_eq!(req.host, host, "{what}");
            assert_eq!(req.path, want_path, "{what}");
            assert_eq!(req.client_ip.unwrap().to_string(), client, "{what}");
        }
    }
}
