//! What the web flows ([`crate::broker`], [`crate::apps`]) and the HTTP edge
//! ([`crate::server`]) share, with no web framework in it: the [`Reply`] a flow gives, who sent
//! the request ([`Requester`]), and the request's parameters ([`unique_params`]). Flows take and
//! return these plain values; only `server/` turns them into and out of axum's types.

use std::collections::HashMap;
use std::net::IpAddr;

use http::StatusCode;

use crate::store::AuditEvent;

/// What a browser- or app-facing endpoint answers.
#[derive(Debug)]
pub enum Reply {
    Redirect {
        location: String,
        cookies: Vec<String>,
    },
    Page {
        status: StatusCode,
        html: String,
        cookies: Vec<String>,
    },
    Json {
        status: StatusCode,
        body: serde_json::Value,
        cookies: Vec<String>,
    },
    /// A document of another type (the SAML SP metadata).
    Document {
        content_type: &'static str,
        body: String,
    },
    /// 429 with `Retry-After` (seconds): a page for browsers, else JSON.
    TooManyRequests { retry_after: u64, html: bool },
}

/// Who sent the request, for limits and the audit trail: the client address (through trusted
/// proxies) and user agent. Not to be confused with a `[[client]]` app
/// ([`crate::apps::AppClient`]).
#[derive(Debug, Clone, Default)]
pub struct Requester {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Requester {
    /// `event` with this requester's address and user agent.
    pub fn audit(&self, event: AuditEvent) -> AuditEvent {
        event.client(self.ip.map(|ip| ip.to_string()), self.user_agent.clone())
    }
}

/// Query or form pairs, with the names that appear more than once (ambiguous: an HTTP
/// parameter pollution attempt or a broken client) dropped.
pub fn unique_params(raw: &[u8]) -> (HashMap<String, String>, Vec<String>) {
    let mut values: HashMap<String, String> = HashMap::new();
    let mut repeated = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if values.insert(k.to_string(), v.into_owned()).is_some() {
            repeated.push(k.into_owned());
        }
    }
    for name in &repeated {
        values.remove(name);
    }
    (values, repeated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_dropped() {
        let (params, repeated) = unique_params(b"state=a&code=c&state=b&rd=%2Fx");
        assert_eq!(params.get("state"), None);
        assert_eq!(params.get("code").map(String::as_str), Some("c"));
        assert_eq!(params.get("rd").map(String::as_str), Some("/x"));
        assert_eq!(repeated, vec!["state".to_owned()]);
    }
}
