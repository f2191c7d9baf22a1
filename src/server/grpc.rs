//! The gRPC edge: `envoy.service.auth.v3.Authorization/Check`.
//!
//! Converts a `CheckRequest` into an [`AuthzRequest`] (rejecting malformed ones with a clear
//! 400, never an error status that Envoy would map to 503 or, worse, allow) and a [`Verdict`]
//! into a `CheckResponse`.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue as PbHeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::google::rpc;
use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::{Request, Response, Status};

use crate::decision::{Decision, DenyResponse};
use crate::gate::{Gate, Verdict};
use crate::request::AuthzRequest;
use crate::session::cookie::CookieRewrite;

/// google.rpc.Code values Envoy looks at: OK allows, anything else denies.
const CODE_OK: i32 = 0;
const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_PERMISSION_DENIED: i32 = 7;
const CODE_UNAVAILABLE: i32 = 14;
const CODE_UNAUTHENTICATED: i32 = 16;

/// Envoy sends at most `max_headers_count` (100 by default) headers.
const MAX_PRESIZED_HEADERS: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConversionError {
    #[error("CheckRequest has no HTTP attributes")]
    MissingHttp,
    #[error("header name {0:?} is not a valid HTTP header name")]
    HeaderName(String),
    #[error("value of header {0:?} is not a valid HTTP header value")]
    HeaderValue(String),
}

pub struct CheckService {
    gate: Arc<Gate>,
}

impl CheckService {
    pub fn new(gate: Arc<Gate>) -> Self {
        Self { gate }
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let response = match authz_request(request.into_inner()) {
            Ok(req) => check_response(&self.gate.check(&req).await),
            Err(e) => {
                tracing::debug!(error = %e, "malformed CheckRequest");
                bad_request()
            }
        };
        Ok(Response::new(response))
    }
}

/// Reads the HTTP attributes out of a `CheckRequest`. Uses the raw header list when Envoy sends
/// one (`encode_raw_headers: true`): it keeps repeated headers apart and bytes intact. Takes the
/// request by value: header values and the request line move into the [`AuthzRequest`]
/// without being copied.
pub fn authz_request(check: CheckRequest) -> Result<AuthzRequest, ConversionError> {
    let attributes = check.attributes.ok_or(ConversionError::MissingHttp)?;
    let client_ip = attributes
        .source
        .as_ref()
        .and_then(|peer| peer.address.as_ref())
        .and_then(|addr| addr.address.as_ref())
        .and_then(|addr| match addr {
            Address::SocketAddress(sa) => sa.address.parse::<IpAddr>().ok(),
            _ => None,
        });
    let http = attributes
        .request
        .and_then(|r| r.http)
        .ok_or(ConversionError::MissingHttp)?;
    let raw = http.header_map.filter(|m| !m.headers.is_empty());
    // Sized once for the request's headers (capped: the count comes from the peer, and
    // `HeaderMap::with_capacity` panics past its maximum).
    let count = raw.as_ref().map_or(http.headers.len(), |m| m.headers.len());
    let mut headers = HeaderMap::with_capacity(count.min(MAX_PRESIZED_HEADERS));
    match raw {
        Some(raw) => {
            for h in raw.headers {
                let value = if h.raw_value.is_empty() {
                    h.value.into_bytes()
                } else {
                    h.raw_value
                };
                append_header(&mut headers, &h.key, value)?;
            }
        }
        None => {
            for (key, value) in http.headers {
                append_header(&mut headers, &key, value.into_bytes())?;
            }
        }
    }
    let mut method = http.method;
    method.make_ascii_uppercase();
    Ok(AuthzRequest {
        method,
        scheme: http.scheme,
        host: http.host,
        path: http.path,
        headers,
        client_ip,
    })
}

fn append_header(
    headers: &mut HeaderMap,
    key: &str,
    value: Vec<u8>,
) -> Result<(), ConversionError> {
    // Pseudo-headers duplicate the fields above.
    if key.starts_with(':') {
        return Ok(());
    }
    let name = HeaderName::from_bytes(key.as_bytes())
        .map_err(|_| ConversionError::HeaderName(key.to_owned()))?;
    // The value's bytes become the header value's, checked, not copied.
    let value = HeaderValue::from_maybe_shared(Bytes::from(value))
        .map_err(|_| ConversionError::HeaderValue(key.to_owned()))?;
    headers.append(name, value);
    Ok(())
}

/// Builds the `CheckResponse` for a verdict.
pub fn check_response(verdict: &Verdict) -> CheckResponse {
    match (&verdict.decision, &verdict.upstream) {
        (Decision::Allow(_), Some(changes)) => {
            // Sized for the cookie rewrite too: no vector grows while the response is built.
            let mut set = Vec::with_capacity(changes.headers().count() + 1);
            set.extend(
                changes
                    .headers()
                    .map(|(name, value)| overwrite(name.as_str(), value)),
            );
            let mut remove = Vec::with_capacity(changes.remove.len() + 1);
            remove.extend(changes.remove.iter().map(|n| n.as_str().to_owned()));
            match changes.cookie.utf8_only() {
                CookieRewrite::Unchanged => {}
                CookieRewrite::Replace(value) => set.push(overwrite("cookie", value.as_bytes())),
                CookieRewrite::Remove => remove.push("cookie".to_owned()),
            }
            CheckResponse {
                status: Some(rpc::Status {
                    code: CODE_OK,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: set,
                    headers_to_remove: remove,
                    ..Default::default()
                })),
                ..Default::default()
            }
        }
        (Decision::Deny(denial), _) => {
            let code = match denial.status().as_u16() {
                401 | 302 => CODE_UNAUTHENTICATED,
                400 => CODE_INVALID_ARGUMENT,
                503 => CODE_UNAVAILABLE,
                _ => CODE_PERMISSION_DENIED,
            };
            denied(code, &denial.render())
        }
        // An allow always carries upstream changes; anything else is a bug: fail closed.
        (Decision::Allow(_), None) => denied(
            CODE_UNAVAILABLE,
            &crate::decision::Denial::Unavailable { html: false }.render(),
        ),
    }
}

fn bad_request() -> CheckResponse {
    let body = serde_json::json!({ "error": "bad_request" }).to_string();
    denied(
        CODE_INVALID_ARGUMENT,
        &DenyResponse {
            status: http::StatusCode::BAD_REQUEST,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        },
    )
}

fn denied(code: i32, response: &DenyResponse) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(response.status.as_u16()),
            }),
            headers: response
                .headers
                .iter()
                .map(|(name, value)| overwrite(name.as_str(), value.as_bytes()))
                .collect(),
            body: response.body.clone(),
        })),
        ..Default::default()
    }
}

/// A header that replaces any existing value. (Envoy ignores `append_action` for upstream
/// request headers and drops deprecated `append: true` headers from denied responses, so this
/// is the only form used.) Values are UTF-8 text: Envoy ignores `raw_value` here.
fn overwrite(key: &str, value: &[u8]) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue {
            key: key.to_owned(),
            value: String::from_utf8_lossy(value).into_owned(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderMap as PbHeaderMap;
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Request as AttrRequest,
    };

    fn check_request(headers: &[(&str, &str)], raw: bool) -> CheckRequest {
        let mut http = HttpRequest {
            method: "get".into(),
            host: "gw.test".into(),
            path: "/x?y=1".into(),
            scheme: "https".into(),
            ..Default::default()
        };
        if raw {
            http.header_map = Some(PbHeaderMap {
                headers: headers
                    .iter()
                    .map(|(k, v)| PbHeaderValue {
                        key: k.to_string(),
                        raw_value: v.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            });
        } else {
            http.headers = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(AttrRequest {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn converts_both_header_encodings() {
        for raw in [false, true] {
            let req = authz_request(check_request(
                &[("accept", "text/html"), (":path", "/ignored")],
                raw,
            ))
            .unwrap();
            assert_eq!(req.method, "GET");
            assert_eq!(req.path, "/x?y=1");
            assert_eq!(req.headers.get("accept").unwrap(), "text/html");
            assert!(req.headers.get(":path").is_none());
        }
    }

    #[test]
    fn raw_headers_keep_repeats_apart() {
        let req =
            authz_request(check_request(&[("cookie", "a=1"), ("cookie", "b=2")], true)).unwrap();
        assert_eq!(req.headers.get_all("cookie").iter().count(), 2);
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        assert_eq!(
            authz_request(CheckRequest::default()).unwrap_err(),
            ConversionError::MissingHttp
        );
        assert!(matches!(
            authz_request(check_request(&[("bad header", "x")], false)),
            Err(ConversionError::HeaderName(_))
        ));
        assert!(matches!(
            authz_request(check_request(&[("x", "a\nb")], true)),
            Err(ConversionError::HeaderValue(_))
        ));
        let response = bad_request();
        assert_eq!(response.status.unwrap().code, CODE_INVALID_ARGUMENT);
    }
}
