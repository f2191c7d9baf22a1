//! The check engine: normalize the path, match a route, identify the caller if the route needs
//! it, decide, and work out what the upstream request must look like. Both edges call
//! [`Gate::check`] and only translate its [`Verdict`] to their wire format.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderName, HeaderValue};

use crate::clock::unix_now;
use crate::decision::{Decision, Denial, LoginUrls, Malformed, decide_matches};
use crate::identity::Caller;
use crate::metrics::Metrics;
use crate::policy::{Policy, RequestHost, normalize};
use crate::request::AuthzRequest;
use crate::session::Sessions;
use crate::session::cookie::{self, CookieRewrite, CookieSettings};

pub struct Gate {
    policy: Policy,
    sessions: Sessions,
    urls: LoginUrls,
    cookies: CookieSettings,
    metrics: Arc<Metrics>,
}

/// The outcome of one check.
#[derive(Debug)]
pub struct Verdict {
    pub decision: Decision,
    /// On allow: how the upstream request changes.
    pub upstream: Option<UpstreamChanges>,
}

/// Changes to the request that goes upstream, applied on allow.
#[derive(Debug, Default)]
pub struct UpstreamChanges {
    /// Identity headers to set (overwriting any client-sent value).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Client-sent `x-gatehouse-*` headers that gatehouse does not set: removed.
    pub remove: Vec<HeaderName>,
    /// The `cookie` header without gatehouse's cookies.
    pub cookie: CookieRewrite,
}

impl Gate {
    pub fn new(
        policy: Policy,
        sessions: Sessions,
        urls: LoginUrls,
        cookies: CookieSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            policy,
            sessions,
            urls,
            cookies,
            metrics,
        }
    }

    pub async fn check(&self, req: &AuthzRequest) -> Verdict {
        let started = Instant::now();
        let decision = self.decide(req).await;
        let upstream = match &decision {
            Decision::Allow(user) => {
                let set = user.as_ref().map(|u| u.headers.clone()).unwrap_or_default();
                let remove = req
                    .spoofed_identity_headers()
                    .filter(|name| !set.iter().any(|(n, _)| n == *name))
                    .cloned()
                    .collect();
                Some(UpstreamChanges {
                    set,
                    remove,
                    // gatehouse's cookies are its own: the upstream gets neither.
                    cookie: cookie::strip(
                        &req.headers,
                        &[&self.cookies.session_name, self.cookies.binding_name()],
                    ),
                })
            }
            Decision::Deny(_) => None,
        };
        self.metrics
            .record_check(decision.label(), started.elapsed());
        tracing::debug!(
            method = %req.method,
            host = %req.host,
            path = %req.path,
            decision = decision.label(),
            "check"
        );
        Verdict { decision, upstream }
    }

    async fn decide(&self, req: &AuthzRequest) -> Decision {
        let target = RequestHost::parse(&req.host)
            .map_err(Malformed::from)
            .and_then(|host| Ok((host, normalize(&req.path)?)));
        let (host, path) = match target {
            Ok(target) => target,
            Err(e) => return Decision::Deny(Denial::BadRequest(e)),
        };
        let matches = self.policy.find(&req.method, &host, &path);
        let needs_identity = [matches.folded, matches.exact]
            .into_iter()
            .flatten()
            .any(|route| route.needs_identity());
        let caller = if needs_identity {
            self.caller(req).await
        } else {
            Caller::Anonymous
        };
        decide_matches(req, matches, &caller, &self.urls)
    }

    async fn caller(&self, req: &AuthzRequest) -> Caller {
        self.sessions
            .caller(&req.headers, &self.cookies.session_name, unix_now())
            .await
    }
}
