//! The `CheckRequest` Envoy sends for a browser request, for the load generators.

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

/// A GET of `path` on `app.example.com` carrying `credential` (a header name and value).
pub fn check_request(credential: (&str, String), path: &str) -> CheckRequest {
    let headers = [
        credential,
        (
            "accept",
            "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8".to_owned(),
        ),
        ("user-agent", "check_load".to_owned()),
        (
            "x-request-id",
            "3f2c1b9e-0000-4000-8000-000000000000".to_owned(),
        ),
    ];
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    host: "app.example.com".into(),
                    path: path.into(),
                    scheme: "https".into(),
                    header_map: Some(HeaderMap {
                        headers: headers
                            .iter()
                            .map(|(k, v)| HeaderValue {
                                key: (*k).into(),
                                raw_value: v.as_bytes().to_vec(),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
