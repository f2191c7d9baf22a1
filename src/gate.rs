//! The check engine: normalize the path, match a route, identify the caller if the route needs
//! it (session cookie, bearer token), decide, and work out what the upstream request must look
//! like (identity headers, the minted token, the cookie without gatehouse's). Both edges call
//! [`Gate::check`] and only translate its [`Verdict`] to their wire format.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};

use crate::bearer::{self, Bearer, BearerError, Presented};
use crate::clock::unix_now;
use crate::decision::{Decision, Denial, Grant, LoginUrls, Malformed, decide_matches};
use crate::identity::{BearerCaller, Caller, JWT_HEADER, SessionCaller, SignedIn};
use crate::metrics::Metrics;
use crate::policy::{Matches, Policy, RequestHost, normalize};
use crate::request::AuthzRequest;
use crate::session::Sessions;
use crate::session::cookie::{self, CookieRewrite, CookieSettings};
use crate::tokens::Minter;

/// What a check needs besides the request.
pub struct Gate {
    /// Replaced whole on a config reload; a check keeps the policy it started with.
    pub policy: ArcSwap<Policy>,
    pub sessions: Sessions,
    pub bearer: Arc<Bearer>,
    /// Present when `[token] enabled`.
    pub minter: Option<Arc<Minter>>,
    pub urls: LoginUrls,
    pub cookies: CookieSettings,
    pub metrics: Arc<Metrics>,
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
    /// The signed-in user, whose identity headers are set (rendered once per cached session).
    pub user: Option<Arc<SignedIn>>,
    /// Further headers to set: a bearer token's, the minted token.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Client-sent `x-gatehouse-*` headers that gatehouse does not set: removed.
    pub remove: Vec<HeaderName>,
    /// The `cookie` header without gatehouse's cookies.
    pub cookie: CookieRewrite,
}

impl UpstreamChanges {
    /// Every header to set (overwriting any client-sent value): the user's identity headers,
    /// then the others. Values are valid header values.
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, &[u8])> {
        let identity = self
            .user
            .iter()
            .flat_map(|user| user.headers.iter().map(|(n, v)| (n, v.as_bytes())));
        identity.chain(self.set.iter().map(|(n, v)| (n, v.as_bytes())))
    }
}

impl Gate {
    pub async fn check(&self, req: &AuthzRequest) -> Verdict {
        let started = Instant::now();
        let now = unix_now();
        let mut decision = self.decide(req, now).await;
        let upstream = match &decision {
            Decision::Allow(grant) => match self.identity_changes(grant, now) {
                Ok(mut changes) => {
                    changes.remove = req
                        .spoofed_identity_headers()
                        .filter(|name| !changes.headers().any(|(n, _)| n == *name))
                        .cloned()
                        .collect();
                    // gatehouse's cookies are its own: the upstream gets none of them.
                    changes.cookie = cookie::strip(&req.headers, &self.cookies.own_names());
                    Some(changes)
                }
                Err(e) => {
                    // Upstreams expect the minted token: without it, fail closed.
                    tracing::error!(error = %e, "cannot mint the upstream token; denying");
                    decision = Decision::Deny(Denial::Unavailable { html: false });
                    None
                }
            },
            Decision::Deny(_) => None,
        };
        self.metrics
            .record_check(decision.labels(), started.elapsed());
        tracing::debug!(
            method = %req.method,
            host = %req.host,
            path = %req.path,
            decision = decision.label(),
            "check"
        );
        Verdict { decision, upstream }
    }

    /// Who the upstream is told the caller is: the signed-in user (whose identity headers are
    /// set) and the other headers to set. Nothing removed yet.
    fn identity_changes(
        &self,
        grant: &Grant,
        now: i64,
    ) -> Result<UpstreamChanges, crate::tokens::TokenError> {
        let (user, set) = match grant {
            Grant::Public => (None, Vec::new()),
            Grant::Token(token) => (None, token.headers.clone()),
            Grant::User { principal, token } => {
                let mut set = Vec::new();
                if let Some(token) = token {
                    set.extend(token.headers.iter().cloned());
                }
                if let Some(minter) = &self.minter {
                    set.push((JWT_HEADER, minter.token_for(principal, now)?));
                }
                (Some(principal.user.clone()), set)
            }
        };
        Ok(UpstreamChanges {
            user,
            set,
            ..UpstreamChanges::default()
        })
    }

    async fn decide(&self, req: &AuthzRequest, now: i64) -> Decision {
        let target = RequestHost::parse(&req.host)
            .map_err(Malformed::from)
            .and_then(|host| Ok((host, normalize(&req.path)?)));
        let (host, path) = match target {
            Ok(target) => target,
            Err(e) => return Decision::Deny(Denial::BadRequest(e)),
        };
        let policy = self.policy.load_full();
        let matches = policy.find(&req.method, &host, &path);
        let caller = self.caller(req, &matches, now).await;
        decide_matches(req, matches, &caller, &self.urls, now)
    }

    /// Looks at the credentials the matched routes accept, and only those.
    async fn caller(&self, req: &AuthzRequest, matches: &Matches<'_>, now: i64) -> Caller {
        let routes: Vec<_> = matches.routes().filter(|r| r.needs_identity()).collect();
        if routes.is_empty() {
            return Caller::ANONYMOUS;
        }
        let bearer = if routes.iter().any(|r| r.bearer.is_some()) {
            self.bearer_caller(req, now).await
        } else {
            BearerCaller::Absent
        };
        // A presented bearer token decides bearer routes; the cookie matters only where a
        // route takes sessions and no token decides it.
        let token_decides = !matches!(bearer, BearerCaller::Absent);
        let session = if routes
            .iter()
            .any(|r| r.session && !(r.bearer.is_some() && token_decides))
        {
            self.sessions
                .caller(&req.headers, &self.cookies.session_name, now)
                .await
        } else {
            SessionCaller::Anonymous
        };
        Caller { session, bearer }
    }

    async fn bearer_caller(&self, req: &AuthzRequest, now: i64) -> BearerCaller {
        let token = match bearer::presented(&req.headers) {
            Presented::None => return BearerCaller::Absent,
            Presented::Malformed(why) => return BearerCaller::Invalid(why.to_owned()),
            Presented::Token(token) => token,
        };
        let token = match self.bearer.verify(token, now).await {
            Ok(token) => token,
            Err(BearerError::Invalid(why)) => return BearerCaller::Invalid(why),
            Err(e @ BearerError::Unavailable(_)) => {
                tracing::warn!(error = %e, "bearer token not verifiable now; failing closed");
                return BearerCaller::Unavailable;
            }
        };
        match self.bearer.principal(&token).await {
            Ok(principal) => BearerCaller::Token { token, principal },
            Err(e) => {
                tracing::warn!(error = %e, "identity lookup failed; failing closed");
                BearerCaller::Unavailable
            }
        }
    }
}
