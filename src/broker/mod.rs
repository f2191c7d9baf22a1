//! The login broker: an OpenID Connect relying party in front of the company's IdPs.
//!
//! `/auth/login` picks the IdP (home-realm discovery), records a single-use login state bound
//! to this browser, and redirects to the IdP with PKCE S256. `/auth/callback` (query or
//! form_post) consumes that state exactly once, exchanges the code, validates the ID token,
//! provisions the user in one transaction and starts a fresh session. Outcomes (successes and
//! failures) are audited; starts are only counted, and pending ones are capped per browser
//! and per client address so a loop of `/auth/login` cannot fill the store.
//!
//! Handlers return a [`Reply`]; the HTTP edge turns it into a response.
//!
//! The browser binding: a random value in the `gatehouse-login` cookie, whose hash each login
//! state records. One value serves all parallel logins of a browser (tabs). For IdPs using
//! form_post the cookie is `SameSite=None; Secure`, because the IdP's cross-site POST would not
//! carry a Lax cookie.

pub mod backchannel;
pub mod error;
pub mod id_token;
pub mod impersonation;
pub mod logout_token;
pub mod provider;
pub mod realm;
pub mod redirect;
pub mod saml;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderMap, StatusCode};
use openidconnect::PkceCodeChallenge;
use serde_json::json;
use url::Url;

use crate::clock::unix_now;
use crate::config::{
    IdpConfig, IdpKind, ImpersonationConfig, ProvisioningConfig, ResponseMode, Settings,
};
use crate::email::Email;
use crate::identity::SessionCaller;
use crate::limits::{Limit, Limits, Refusal, client_group};
use crate::local::{LOCAL_IDP, LOCAL_PATH, Local, Realm};
use crate::metrics::Metrics;
use crate::pages;
use crate::provisioning::{self, EmailTrust, Vouching};
use crate::saml::idp::SamlIdp;
use crate::session::cookie::{self, CookieSettings, TokenCookie};
use crate::session::revocations::RevocationSync;
use crate::session::{OpaqueToken, SessionError, Sessions};
use crate::store::{
    Access, AuditEvent, AuditKind, LoginState, NewLoginState, Outcome, PendingLoginCaps,
    ProvisionOutcome, ProvisionRequest, Store, StoreError,
};
use crate::strength::{Authentication, StepUp};
use crate::web::{Reply, Requester};
pub use error::LoginError;
use id_token::VerifiedIdentity;
use provider::{AuthorizeRequest, Provider};
use realm::{IdpChoice, choose_idp};
use redirect::{RedirectPolicy, RedirectTarget};

pub const LOGIN_PATH: &str = "/auth/login";
pub const CALLBACK_PATH: &str = "/auth/callback";
pub const LOGOUT_PATH: &str = "/auth/logout";
pub const BACKCHANNEL_LOGOUT_PATH: &str = "/auth/backchannel-logout";

/// `/auth/login` parameters.
#[derive(Debug, Default)]
pub struct LoginParams {
    pub rd: Option<String>,
    pub login_hint: Option<String>,
    pub idp: Option<String>,
    /// `signup=1`: a new user from a domain no org or IdP lists may be provisioned.
    pub signup: bool,
    /// `step_up=1` (with `mfa`, `acr_values`, `max_age`): raise the current session.
    pub step_up: Option<StepUp>,
    /// `sso=1`: go to the IdP even if the address could sign in locally (the local sign-in
    /// page's "Sign in with SSO").
    pub sso: bool,
}

/// What a login start asks of the IdP beyond the basics, and what the callback must check.
#[derive(Debug, Default)]
struct LoginAsk<'a> {
    login_hint: Option<&'a str>,
    org_params: Option<&'a BTreeMap<String, String>>,
    step_up: Option<StepUp>,
    signup: bool,
    account: Option<String>,
}

/// `/auth/callback` parameters, from the query or the form_post body.
#[derive(Debug, Default)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
}

/// The configured identity providers, replaced whole on a config reload (a login keeps the
/// provider it started with).
pub struct Idps {
    oidc: Vec<Arc<Provider>>,
    saml: Vec<Arc<SamlIdp>>,
    /// Every `[[idp]]` in order: home-realm discovery chooses among them.
    configs: Vec<IdpConfig>,
}

pub struct Broker {
    idps: ArcSwap<Idps>,
    /// `<public_url>/auth/callback`, for providers built on reload.
    callback: String,
    http: reqwest::Client,
    store: Store,
    sessions: Sessions,
    cookies: CookieSettings,
    redirects: RedirectPolicy,
    public_origin: String,
    /// `<public_url>/auth/login`, for "start again" links.
    login_url: Url,
    welcome_path: String,
    state_ttl: i64,
    pending_caps: PendingLoginCaps,
    /// Failures audited once a minute rather than each time (they cost the sender one
    /// request): callbacks without a login in progress, by client group (see
    /// [`client_group`]), and login starts while an IdP is unreachable, by IdP.
    sampled_failures: moka::sync::Cache<String, ()>,
    provisioning: ProvisioningConfig,
    impersonation: ImpersonationConfig,
    limits: Arc<Limits>,
    /// Applies a change of mapped roles to this replica's caches at once.
    revocations: Arc<RevocationSync>,
    metrics: Arc<Metrics>,
    /// Local sign-in, when `[local]` is configured: home-realm discovery sends addresses
    /// with local methods there.
    local: Option<Arc<Local>>,
    /// SAML signature checks (xmlsec, on blocking threads) at once: at most one per core, so a
    /// flood of responses cannot take every thread.
    saml_verifications: tokio::sync::Semaphore,
}

fn build_idps(
    settings: &Settings,
    callback: &str,
    http: &reqwest::Client,
) -> Result<Idps, LoginError> {
    let mut idps = Idps {
        oidc: Vec::new(),
        saml: Vec::new(),
        configs: settings.idps.clone(),
    };
    let origin = settings.public_origin();
    for idp in &settings.idps {
        let trust = EmailTrust::of(idp, &settings.idps);
        match idp.kind {
            IdpKind::Oidc => idps.oidc.push(Arc::new(Provider::new(
                idp.clone(),
                trust,
                callback,
                http.clone(),
            )?)),
            IdpKind::Saml => {
                let reserved = settings
                    .idps
                    .iter()
                    .filter(|other| other.name != idp.name)
                    .filter_map(|other| match other.kind {
                        IdpKind::Oidc => Some(other.issuer.clone()),
                        IdpKind::Saml => other.entity_id.clone(),
                    })
                    .collect();
                idps.saml.push(Arc::new(
                    SamlIdp::new(idp.clone(), trust, reserved, &origin, http.clone())
                        .map_err(|e| LoginError::Config(e.to_string()))?,
                ))
            }
        }
    }
    Ok(idps)
}

impl Broker {
    pub fn new(
        settings: &Settings,
        store: Store,
        sessions: Sessions,
        cookies: CookieSettings,
        limits: Arc<Limits>,
        revocations: Arc<RevocationSync>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoginError> {
        let public_origin = settings.public_origin();
        let login_url = Url::parse(&format!("{public_origin}{LOGIN_PATH}"))
            .map_err(|e| LoginError::Config(format!("server.public_url: {e}")))?;
        let callback = format!("{public_origin}{CALLBACK_PATH}");
        let http = crate::jwt::http_client()
            .map_err(|e| LoginError::Config(format!("HTTP client: {e}")))?;
        let idps = build_idps(settings, &callback, &http)?;
        Ok(Self {
            idps: ArcSwap::from_pointee(idps),
            callback,
            http,
            store,
            sessions,
            cookies,
            redirects: RedirectPolicy::new(
                settings.server.public_url.clone(),
                &settings.login.allowed_redirect_hosts,
            ),
            public_origin,
            login_url,
            welcome_path: settings.login.welcome_path.clone(),
            state_ttl: i64::try_from(settings.login.state_ttl_seconds).unwrap_or(600),
            sampled_failures: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            pending_caps: PendingLoginCaps {
                per_browser: i64::from(settings.login.max_pending_per_browser),
                per_client: i64::from(settings.login.max_pending_per_client_ip),
            },
            provisioning: settings.provisioning.clone(),
            impersonation: settings.impersonation.clone(),
            limits,
            revocations,
            metrics,
            local: None,
            saml_verifications: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            ),
        })
    }

    /// Sends addresses with local methods to local sign-in (`[local]`).
    pub fn with_local(mut self, local: Option<Arc<Local>>) -> Self {
        self.local = local;
        self
    }

    /// Discovers every OIDC IdP and loads every SAML IdP's metadata in the background (and
    /// keeps it fresh).
    pub fn warm_up(&self) {
        let idps = self.idps.load();
        for provider in &idps.oidc {
            let provider = provider.clone();
            tokio::spawn(async move { provider.warm_up().await });
        }
        for idp in &idps.saml {
            idp.keep_fresh();
        }
    }

    /// Builds the identity providers of `settings` (which may fail: nothing changes then).
    pub fn prepare_providers(&self, settings: &Settings) -> Result<Idps, LoginError> {
        build_idps(settings, &self.callback, &self.http)
    }

    /// Serves logins from `idps` from now on, and discovers them in the background. Logins
    /// already at an IdP finish with the provider of the same name, if there still is one.
    pub fn replace_providers(&self, idps: Idps) {
        // A reloaded SAML IdP serves logins at once from the copy of its metadata it had.
        let previous = self.idps.load();
        for idp in &idps.saml {
            if let Some(old) = previous.saml.iter().find(|old| old.name() == idp.name()) {
                idp.adopt_metadata(old);
            }
        }
        self.idps.store(Arc::new(idps));
        self.warm_up();
    }

    fn provider(&self, name: &str) -> Option<Arc<Provider>> {
        self.idps
            .load()
            .oidc
            .iter()
            .find(|p| p.name() == name)
            .cloned()
    }

    fn saml_idp(&self, name: &str) -> Option<Arc<SamlIdp>> {
        self.idps
            .load()
            .saml
            .iter()
            .find(|p| p.name() == name)
            .cloned()
    }

    // === /auth/login ===

    pub async fn login(
        &self,
        params: LoginParams,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let now = unix_now();
        let rd = self.redirects.target(params.rd.as_deref());
        let mut hint = params
            .login_hint
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty() && h.len() <= 320)
            .map(str::to_owned);
        if let Some(refused) = self.login_start_refused(hint.as_deref(), requester, now) {
            return self.too_many(refused, true, requester, now).await;
        }
        let mut idp = params.idp.clone();
        let mut step_up = params.step_up.clone();
        // A step-up raises the signed-in user's own session: same IdP, same account.
        if step_up.is_some()
            && let SessionCaller::User(p) = self.caller(headers).await
        {
            if self.local.is_some() && p.auth.idp.as_deref() == Some(LOCAL_IDP) {
                // A local session steps up at local sign-in: TOTP for MFA, else (a recent
                // sign-in) its first factor again.
                let mfa = if step_up.as_ref().is_some_and(|s| s.mfa) {
                    "1"
                } else {
                    ""
                };
                return Reply::Redirect {
                    location: format!(
                        "{LOCAL_PATH}/step-up?{}",
                        query(&[("rd", rd.as_str()), ("mfa", mfa)])
                    ),
                    cookies: Vec::new(),
                };
            }
            idp = idp.or_else(|| p.auth.idp.clone());
            hint = Some(p.user.identity.email.clone());
        }
        // The org owning the address's domain: its IdP (unless `idp=` or the session named
        // one) and its authorize parameters (a step-up keeps the customer's SSO connection).
        let org = match hint.as_deref().and_then(realm::hint_domain) {
            Some(domain) => match self.store.org_for_domain(&domain).await {
                Ok(org) => org,
                Err(e) => {
                    // Discovery by config still works; the org's own settings are skipped.
                    tracing::warn!(error = %e, "org lookup for home-realm discovery failed");
                    self.observe_store(&LoginError::Store(e), now);
                    None
                }
            },
            None => None,
        };
        if let Some(local) = &self.local
            && idp.is_none()
            && !params.sso
            && params.step_up.is_none()
        {
            match hint.as_deref().map(Email::parse) {
                // Local methods for this address: the local sign-in page.
                Some(Ok(email)) => {
                    let realm = local
                        .realm(&email, Some(org.clone()))
                        .await
                        .unwrap_or_else(|_| unreachable_realm(&email));
                    if realm.offers_local() {
                        let signup = if params.signup { "1" } else { "" };
                        return Reply::Redirect {
                            location: format!(
                                "{LOCAL_PATH}?{}",
                                query(&[
                                    ("login_hint", email.as_str()),
                                    ("rd", rd.as_str()),
                                    ("signup", signup),
                                ])
                            ),
                            cookies: Vec::new(),
                        };
                    }
                }
                // No address yet: ask for it (some will sign in locally, some with SSO).
                None => {
                    return Reply::Page {
                        status: StatusCode::OK,
                        html: pages::email_first_page(LOGIN_PATH, rd.as_str(), None, params.signup),
                        cookies: Vec::new(),
                    };
                }
                Some(Err(_)) => {}
            }
        }
        if org.as_ref().is_some_and(|o| o.require_mfa) {
            // Ask for MFA now rather than after a first, weaker sign-in.
            step_up.get_or_insert_with(StepUp::default).mfa = true;
        }
        let idps = self.idps.load_full();
        let org_idp = org.as_ref().and_then(|o| o.idp.as_deref());
        let chosen = match choose_idp(&idps.configs, idp.as_deref(), org_idp, hint.as_deref()) {
            IdpChoice::Use(index) => &idps.configs[index],
            IdpChoice::AskEmail { note } => {
                return Reply::Page {
                    status: StatusCode::OK,
                    html: pages::email_first_page(
                        LOGIN_PATH,
                        rd.as_str(),
                        note.as_deref(),
                        params.signup,
                    ),
                    cookies: Vec::new(),
                };
            }
            IdpChoice::Unknown(name) => {
                return self.error_page(
                    StatusCode::BAD_REQUEST,
                    &format!("There is no identity provider called {name:?}."),
                    &rd,
                );
            }
            IdpChoice::NoneConfigured => {
                return Reply::Page {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    html: pages::message_page(
                        "Sign-in is not configured",
                        "No identity provider is configured for this gatehouse yet.",
                        None,
                    ),
                    cookies: Vec::new(),
                };
            }
        };
        let org_params = org
            .as_ref()
            .filter(|o| o.idp.is_none() || o.idp.as_deref() == Some(chosen.name.as_str()))
            .map(|o| &o.idp_params);
        let ask = LoginAsk {
            login_hint: hint.as_deref(),
            org_params,
            step_up,
            signup: params.signup,
            account: hint.as_ref().map(|h| h.to_ascii_lowercase()),
        };
        let started = match chosen.kind {
            IdpKind::Oidc => match self.provider(&chosen.name) {
                Some(provider) => {
                    self.start_login(&provider, &rd, ask, headers, requester)
                        .await
                }
                None => Err(LoginError::Config(format!(
                    "idp {:?} is not loaded",
                    chosen.name
                ))),
            },
            IdpKind::Saml => match self.saml_idp(&chosen.name) {
                Some(idp) => {
                    self.start_saml_login(&idp, &rd, ask, headers, requester)
                        .await
                }
                None => Err(LoginError::Config(format!(
                    "idp {:?} is not loaded",
                    chosen.name
                ))),
            },
        };
        match started {
            Ok(reply) => reply,
            Err(e) => {
                let now = unix_now();
                let name = chosen.name.as_str();
                self.observe_store(&e, now);
                self.metrics.record_login(name, e.reason());
                let sampled_out = matches!(e, LoginError::Unreachable(_))
                    && self.seen_recently(format!("unreachable {name}"));
                if !sampled_out {
                    self.record_failure(&e, Some(name), requester, now).await;
                }
                self.error_page(e.status(), &e.user_message(), &rd)
            }
        }
    }

    /// Whether this login start is over a limit (per client address, per account).
    fn login_start_refused(
        &self,
        hint: Option<&str>,
        requester: &Requester,
        now: i64,
    ) -> Option<Refusal> {
        if let Some(ip) = requester.ip
            && let Err(refused) = self
                .limits
                .check(Limit::LoginStartsPerIp, &client_group(ip), now)
        {
            return Some(refused);
        }
        let account = hint?.to_ascii_lowercase();
        self.limits
            .check(Limit::LoginStartsPerAccount, &account, now)
            .err()
    }

    /// 429, audited once per key and minute (every refusal is counted in the metric).
    async fn too_many(
        &self,
        refused: Refusal,
        html: bool,
        requester: &Requester,
        now: i64,
    ) -> Reply {
        if refused.first_in_window {
            let event = requester.audit(
                AuditEvent::new(AuditKind::RateLimited, Outcome::Failure, now)
                    .detail(format!("{} over its limit", refused.limit.name())),
            );
            if let Err(e) = self.store.record_audit(&event).await {
                tracing::warn!(error = %e, "could not audit a rate limit");
            }
        }
        Reply::TooManyRequests {
            retry_after: refused.retry_after_seconds,
            html,
        }
    }

    async fn start_login(
        &self,
        provider: &Provider,
        rd: &RedirectTarget,
        ask: LoginAsk<'_>,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Result<Reply, LoginError> {
        let now = unix_now();
        let binding = self.browser_binding(headers)?;
        let state = OpaqueToken::generate().map_err(SessionError::from)?;
        let nonce = OpaqueToken::generate().map_err(SessionError::from)?;
        let (pkce_challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
        provider.ensure_reachable(now).await?;
        let url = provider
            .authorize_url(AuthorizeRequest {
                state: state.as_str(),
                nonce: nonce.as_str(),
                pkce_challenge,
                login_hint: ask.login_hint,
                org_params: ask.org_params,
                step_up: ask.step_up.as_ref(),
            })
            .await?;
        self.record_start(
            Start {
                idp: provider.name(),
                state: &state,
                binding: &binding,
                nonce: nonce.as_str().to_owned(),
                pkce_verifier: pkce_verifier.secret().to_owned(),
                location: url.to_string(),
                cross_site: provider.config.response_mode == ResponseMode::FormPost,
            },
            rd,
            ask,
            requester,
            now,
        )
        .await
    }

    /// This browser's login binding: the one it has, so parallel logins (tabs) all stay
    /// valid, or a new one.
    fn browser_binding(&self, headers: &HeaderMap) -> Result<OpaqueToken, LoginError> {
        match cookie::find(headers, self.cookies.binding_name()) {
            TokenCookie::Present(token) => Ok(token),
            _ => Ok(OpaqueToken::generate().map_err(SessionError::from)?),
        }
    }

    /// Records a started login (single use, bound to the browser, capped) and sends the
    /// browser to the IdP with the binding cookie.
    async fn record_start(
        &self,
        start: Start<'_>,
        rd: &RedirectTarget,
        ask: LoginAsk<'_>,
        requester: &Requester,
        now: i64,
    ) -> Result<Reply, LoginError> {
        let step_up = ask
            .step_up
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| LoginError::Config(format!("step-up: {e}")))?;
        let new_state = NewLoginState {
            state_hash: start.state.hash().to_hex(),
            binding_hash: start.binding.hash().to_hex(),
            client_ip: requester.ip.map(client_group),
            nonce: start.nonce,
            pkce_verifier: start.pkce_verifier,
            idp: start.idp.to_owned(),
            redirect_to: rd.as_str().to_owned(),
            created_at: now,
            expires_at: now + self.state_ttl,
            signup: ask.signup,
            step_up,
            account: ask.account,
        };
        self.store
            .insert_login_state(&new_state, self.pending_caps)
            .await?;
        // Counted, not audited: a start costs an attacker one request, and the audit trail is
        // for outcomes (successes and failures).
        self.metrics.record_login_start(start.idp);
        Ok(Reply::Redirect {
            location: start.location,
            cookies: vec![
                self.cookies
                    .binding(start.binding, start.cross_site, self.state_ttl),
            ],
        })
    }

    /// Whether `key` was sampled in the last minute (and marks it now).
    fn seen_recently(&self, key: String) -> bool {
        let seen = self.sampled_failures.contains_key(&key);
        self.sampled_failures.insert(key, ());
        seen
    }

    /// A login that failed on the database tells the health tracker, so `/readyz` and the
    /// stale-session window know about the outage.
    fn observe_store(&self, e: &LoginError, now: i64) {
        let store_error = match e {
            LoginError::Store(se) | LoginError::Session(SessionError::Store(se)) => se,
            _ => return,
        };
        self.store.observe_error(Access::Write, store_error, now);
    }

    // === /auth/callback ===

    pub async fn callback(
        &self,
        params: CallbackParams,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let now = unix_now();
        let group = requester.ip.map(client_group);
        if let Some(group) = &group
            && let Some(refused) = self
                .limits
                .blocked_now(Limit::FailedCallbacksPerIp, group, now)
        {
            return self.too_many(refused, true, requester, now).await;
        }
        let result = self.finish_login(params, headers, requester, now).await;
        self.landed(result, requester, now).await
    }

    /// The reply to a finished login (OIDC callback or SAML ACS): the session and its target,
    /// or the error page, with the limits charged and the failure audited.
    async fn landed(
        &self,
        result: Result<(String, String, String), (LoginError, FailedLogin)>,
        requester: &Requester,
        now: i64,
    ) -> Reply {
        let group = requester.ip.map(client_group);
        match result {
            Ok((location, session_cookie, idp)) => {
                self.metrics.record_login(&idp, "success");
                Reply::Redirect {
                    location,
                    cookies: vec![session_cookie],
                }
            }
            Err((e, FailedLogin { idp, account })) => {
                self.metrics
                    .record_login(idp.as_deref().unwrap_or("unknown"), e.reason());
                if let Some(group) = &group
                    && !matches!(e, LoginError::Store(_) | LoginError::Session(_))
                {
                    self.limits
                        .charge_failure(Limit::FailedCallbacksPerIp, group, now);
                }
                if let Some(account) = &account
                    && self.limits.failed_sign_in(account, now)
                {
                    let event = requester.audit(
                        AuditEvent::new(AuditKind::SuspiciousLogin, Outcome::Failure, now)
                            .detail(format!("repeated failed sign-ins for {account}")),
                    );
                    let event = AuditEvent {
                        idp: idp.clone(),
                        ..event
                    };
                    if let Err(err) = self.store.record_audit(&event).await {
                        tracing::warn!(error = %err, "could not audit a suspicious login");
                    }
                }
                self.observe_store(&e, now);
                tracing::info!(reason = e.reason(), error = %e, "login failed");
                // A callback that matches no login in progress costs a client one request:
                // audit one per client address a minute, count them all.
                let sampled_out = e.is_unsolicited()
                    && requester.ip.is_some_and(|ip| {
                        let group = client_group(ip);
                        self.seen_recently(group)
                    });
                if !sampled_out {
                    self.record_failure(&e, idp.as_deref(), requester, now)
                        .await;
                }
                self.error_page(e.status(), &e.user_message(), &RedirectTarget::root())
            }
        }
    }

    /// Returns the redirect target and the session cookie, or the error and what the login
    /// state said (IdP, account).
    async fn finish_login(
        &self,
        params: CallbackParams,
        headers: &HeaderMap,
        requester: &Requester,
        now: i64,
    ) -> Result<(String, String, String), (LoginError, FailedLogin)> {
        let no_idp = |e: LoginError| (e, FailedLogin::default());
        let state = params
            .state
            .as_deref()
            .and_then(OpaqueToken::parse)
            .ok_or_else(|| no_idp(LoginError::StateInvalid("missing or malformed state")))?;
        let binding = match cookie::find(headers, self.cookies.binding_name()) {
            TokenCookie::Present(token) => token,
            _ => return Err(no_idp(LoginError::NoBinding)),
        };
        let login = self
            .store
            .consume_login_state(&state.hash().to_hex(), &binding.hash().to_hex(), now)
            .await
            .map_err(|e| no_idp(e.into()))?;
        let Some(login) = login else {
            let elsewhere = self
                .store
                .login_state_exists(&state.hash().to_hex())
                .await
                .unwrap_or(false);
            return Err(no_idp(if elsewhere {
                LoginError::ForeignState
            } else {
                LoginError::StateInvalid("state unknown, expired or already used")
            }));
        };
        let failed = FailedLogin {
            idp: Some(login.idp.clone()),
            account: login.account.clone(),
        };
        let fail = |e: LoginError| (e, failed.clone());
        let provider = self.provider(&login.idp).ok_or_else(|| {
            fail(LoginError::Config(format!(
                "idp {:?} is no longer configured",
                login.idp
            )))
        })?;
        if let Some(error) = params.error {
            return Err(fail(LoginError::Idp {
                error,
                description: params.error_description,
            }));
        }
        // RFC 9207: when the IdP names itself, it must be the IdP this login went to.
        if let Some(iss) = &params.iss
            && *iss != provider.config.issuer
        {
            return Err(fail(LoginError::IssuerMismatch(iss.clone())));
        }
        let code = params
            .code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| fail(LoginError::BadCallback("no code".into())))?;
        let (identity, id_token) = provider
            .finish(&code, &login.pkce_verifier, &login.nonce)
            .await
            .map_err(fail)?;
        self.complete_login(
            Arrival {
                idp: &provider.config,
                trust: &provider.email_trust,
                identity,
                id_token: Some(id_token),
                login: &login,
                failed,
            },
            headers,
            requester,
            now,
        )
        .await
    }

    /// Completes a sign-in the IdP vouched for, whatever its protocol: the step-up check,
    /// provisioning (link, org, sign-up rules), mapped roles, the new session and the audit.
    async fn complete_login(
        &self,
        arrival: Arrival<'_>,
        headers: &HeaderMap,
        requester: &Requester,
        now: i64,
    ) -> Result<(String, String, String), (LoginError, FailedLogin)> {
        let Arrival {
            idp,
            trust,
            identity,
            id_token,
            login,
            failed,
        } = arrival;
        let fail = |e: LoginError| {
            let account = failed
                .account
                .clone()
                .or_else(|| identity.email.as_ref().map(|e| e.to_ascii_lowercase()));
            (
                e,
                FailedLogin {
                    account,
                    ..failed.clone()
                },
            )
        };
        let mut facts = identity.login.clone();
        facts.amr = provider::strength_of(&idp.mfa_acr_values, &facts);
        // A step-up login that did not establish what it asked for is refused, not looped.
        if let Some(step_up) = login.step_up.as_deref() {
            let step_up: StepUp = serde_json::from_str(step_up)
                .map_err(|e| fail(LoginError::Config(format!("stored step-up: {e}"))))?;
            let shown = Authentication {
                idp: Some(idp.name.clone()),
                amr: facts.amr.clone(),
                acr: facts.acr.clone(),
                // An IdP that omits auth_time authenticated just now, if at all: a
                // max_age it was sent cannot be checked, so it counts as unmet.
                auth_time: facts.auth_time,
                org_requires_mfa: false,
            };
            if let Some(missing) = step_up.unmet(&shown, now) {
                return Err(fail(LoginError::InsufficientAuthentication(
                    missing.describe(),
                )));
            }
        }

        let email = identity
            .email
            .as_deref()
            .map(Email::parse)
            .transpose()
            .map_err(|e| fail(LoginError::Provisioning(e.to_string())))?;
        let vouching = match &email {
            Some(email) => provisioning::vouch(
                &idp.name,
                email,
                identity.email_verified,
                trust,
                self.provisioning.link_by_verified_email,
            ),
            None => Vouching::nothing(),
        };
        let may_create = match &email {
            Some(email) => self
                .may_sign_up(email, login.signup)
                .await
                .map_err(|e| fail(e.into()))?,
            None => true, // refused by provisioning: a first sign-in needs an email
        };
        let outcome = self
            .store
            .provision(&ProvisionRequest {
                issuer: identity.issuer.clone(),
                subject: identity.subject.clone(),
                idp: idp.name.clone(),
                email,
                email_verified: identity.email_verified,
                vouching,
                name: identity.name.clone(),
                new_users_enabled: self.provisioning.new_users_enabled,
                may_create,
                ip: requester.ip.map(|ip| ip.to_string()),
                user_agent: requester.user_agent.clone(),
                now,
            })
            .await
            .map_err(|e| {
                fail(match e {
                    StoreError::Conflict(message) | StoreError::Invalid(message) => {
                        LoginError::Provisioning(message)
                    }
                    StoreError::NotFound(_) => LoginError::NoAccount(
                        identity
                            .email
                            .clone()
                            .unwrap_or_default()
                            .to_ascii_lowercase(),
                    ),
                    other => other.into(),
                })
            })?;
        let user = outcome.user();
        if !idp.role_claims.is_empty() {
            let roles = provisioning::mapped_roles(&idp.role_claims, &identity.role_claims);
            let changed = self
                .store
                .set_idp_roles(user.id, &idp.name, &roles, now)
                .await
                .map_err(|e| fail(e.into()))?;
            if changed {
                // The revocation written with the change reaches other replicas by NOTIFY or
                // their poll; this replica applies it now, as the admin API does after a
                // grant, so the user's other sessions here see the new roles at once.
                if let Err(e) = self.revocations.sync().await {
                    tracing::warn!(error = %e, "mapped roles changed; cached sessions see them at the next revocation poll");
                }
            }
        }
        let token = self
            .sessions
            .create(user.id, Some(idp.name.clone()), id_token, facts, now)
            .await
            .map_err(|e| fail(e.into()))?;
        self.end_replaced_session(headers, requester, now).await;
        let how = match &outcome {
            ProvisionOutcome::Existing(_) => "returning user",
            ProvisionOutcome::Linked(_) => "identity linked to existing user",
            ProvisionOutcome::Created(_) => "new user",
        };
        for kind in [AuditKind::LoginSucceeded, AuditKind::SessionCreated] {
            let event = requester.audit(
                AuditEvent::new(kind, Outcome::Success, now)
                    .user(user.id)
                    .idp(idp.name.as_str())
                    .detail(how),
            );
            if let Err(e) = self.store.record_audit(&event).await {
                tracing::warn!(error = %e, "could not audit login");
            }
        }
        Ok((
            login.redirect_to.clone(),
            self.cookies.session(&token),
            idp.name.clone(),
        ))
    }

    /// Whether a sign-in may create a new user for `email`: always with
    /// `provisioning.open_signup` or `signup=1`, else only when an org or an `[[idp]]` lists
    /// its exact domain.
    async fn may_sign_up(&self, email: &Email, signup: bool) -> Result<bool, StoreError> {
        if self.provisioning.open_signup || signup {
            return Ok(true);
        }
        let Some((_, domain)) = email.as_str().rsplit_once('@') else {
            return Ok(false);
        };
        let listed = self
            .idps
            .load()
            .configs
            .iter()
            .any(|c| c.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)));
        Ok(listed || self.store.org_for_domain(domain).await?.is_some())
    }

    /// A sign-in replaces the session this browser had (a step-up keeps the user and gets a
    /// new session id): the old one ends now, on every replica.
    async fn end_replaced_session(&self, headers: &HeaderMap, requester: &Requester, now: i64) {
        let event = requester.audit(
            AuditEvent::new(AuditKind::SessionRevoked, Outcome::Success, now)
                .detail("replaced by a new sign-in"),
        );
        self.sessions
            .end_replaced(headers, &self.cookies.session_name, &event, now)
            .await;
    }

    async fn record_failure(
        &self,
        e: &LoginError,
        idp: Option<&str>,
        requester: &Requester,
        now: i64,
    ) {
        let mut event = requester.audit(
            AuditEvent::new(AuditKind::LoginFailed, Outcome::Failure, now)
                .detail(format!("{}: {e}", e.reason())),
        );
        event.idp = idp.map(String::from);
        if let Err(err) = self.store.record_audit(&event).await {
            tracing::warn!(error = %err, "could not audit failed login");
        }
    }

    fn error_page(&self, status: StatusCode, message: &str, rd: &RedirectTarget) -> Reply {
        let mut again = self.login_url.clone();
        again.query_pairs_mut().append_pair("rd", rd.as_str());
        Reply::Page {
            status,
            html: pages::message_page(
                "Sign-in failed",
                message,
                Some((again.as_str(), "Start again")),
            ),
            cookies: Vec::new(),
        }
    }

    // === /auth/logout ===

    pub async fn logout(
        &self,
        rd: Option<&str>,
        headers: &HeaderMap,
        requester: &Requester,
    ) -> Reply {
        let now = unix_now();
        let rd = self.redirects.target(rd);
        let mut location = rd.as_str().to_owned();
        let cookies = vec![
            self.cookies.clear_session(),
            self.cookies.clear_impersonator(),
        ];
        // Signing out while impersonating ends the impersonator's own session too: its token
        // waits in the impersonator cookie, and a shared workstation must not keep it.
        if let TokenCookie::Present(original) =
            cookie::find(headers, self.cookies.impersonator_name())
        {
            let hash = original.hash();
            let event = requester.audit(AuditEvent::new(AuditKind::Logout, Outcome::Success, now));
            if let Err(e) = self
                .store
                .revoke_session(&hash.to_hex(), Some(&event), now)
                .await
            {
                tracing::warn!(error = %e, "logout could not revoke the impersonator's session");
            }
            self.sessions.forget(&hash);
        }
        if let TokenCookie::Present(token) = cookie::find(headers, &self.cookies.session_name) {
            let hash = token.hash();
            let record = self.store.load_session(&hash.to_hex(), now).await;
            let event = requester.audit(AuditEvent::new(AuditKind::Logout, Outcome::Success, now));
            let revoked = self
                .store
                .revoke_session(&hash.to_hex(), Some(&event), now)
                .await;
            // After the commit, so a concurrent check cannot re-cache the live row.
            self.sessions.forget(&hash);
            if let Err(e) = revoked {
                tracing::warn!(error = %e, "logout could not revoke the session");
                return Reply::Page {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    html: pages::message_page(
                        "Sign-out incomplete",
                        "We could not end your session on the server. Please try again.",
                        Some((LOGOUT_PATH, "Try again")),
                    ),
                    cookies,
                };
            }
            if let Ok(Some(record)) = record
                && let Some(idp) = record.idp.as_deref()
            {
                let back = rd.absolute(&self.public_origin);
                let at_idp = match self.provider(idp) {
                    Some(provider) => provider
                        .logout_url(record.id_token.as_deref(), &back)
                        .map(|url| url.to_string()),
                    None => self.saml_logout_url(
                        idp,
                        record.idp_subject.as_deref(),
                        record.idp_sid.as_deref(),
                        &back,
                        now,
                    ),
                };
                if let Some(url) = at_idp {
                    location = url;
                }
            }
        }
        Reply::Redirect { location, cookies }
    }

    // === /auth/welcome and /auth/userinfo ===

    async fn caller(&self, headers: &HeaderMap) -> SessionCaller {
        self.sessions
            .caller(headers, &self.cookies.session_name, unix_now())
            .await
    }

    pub async fn welcome(&self, headers: &HeaderMap) -> Reply {
        match self.caller(headers).await {
            SessionCaller::User(p) if !p.user.identity.enabled => Reply::Page {
                status: StatusCode::OK,
                html: pages::welcome_page(&p.user.identity.email, LOGOUT_PATH),
                cookies: Vec::new(),
            },
            SessionCaller::User(_) => Reply::Redirect {
                location: "/".into(),
                cookies: Vec::new(),
            },
            SessionCaller::Anonymous => Reply::Redirect {
                location: format!("{LOGIN_PATH}?rd=%2F"),
                cookies: Vec::new(),
            },
            SessionCaller::Unavailable => Reply::Page {
                status: StatusCode::SERVICE_UNAVAILABLE,
                html: pages::message_page(
                    "Temporarily unavailable",
                    "Please try again in a moment.",
                    None,
                ),
                cookies: Vec::new(),
            },
        }
    }

    pub async fn userinfo(&self, headers: &HeaderMap) -> Reply {
        match self.caller(headers).await {
            SessionCaller::User(p) => {
                let id = &p.user.identity;
                let mut body = json!({
                    "user_id": id.user_id,
                    "email": id.email,
                    "org_id": id.org_id,
                    "roles": id.roles,
                    "enabled": id.enabled,
                    "impersonator_id": id.impersonator_id,
                });
                if let Some(impersonator) = id.impersonator_id {
                    let by = self.email_of(impersonator).await;
                    body["impersonation"] = json!({
                        "impersonator_id": impersonator,
                        "impersonator_email": by,
                        "banner": format!("{by} is acting as {} (impersonation)", id.email),
                    });
                }
                Reply::Json {
                    status: StatusCode::OK,
                    body,
                    cookies: Vec::new(),
                }
            }
            SessionCaller::Anonymous => Reply::Json {
                status: StatusCode::UNAUTHORIZED,
                body: json!({ "error": "unauthenticated" }),
                cookies: Vec::new(),
            },
            SessionCaller::Unavailable => Reply::Json {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: json!({ "error": "unavailable" }),
                cookies: Vec::new(),
            },
        }
    }

    pub fn welcome_path(&self) -> &str {
        &self.welcome_path
    }
}

/// A query string of these pairs (empty values left out).
fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.append_pair(k, v);
    }
    out.finish()
}

/// The realm when it cannot be read: SSO only, so a lookup failure never opens a local door.
fn unreachable_realm(email: &Email) -> Realm {
    Realm {
        domain: email.domain().to_owned(),
        methods: vec![crate::local::methods::Method::Sso],
        org: None,
    }
}

/// A login start at an IdP, whatever its protocol: what the login state records and where the
/// browser goes.
struct Start<'a> {
    idp: &'a str,
    state: &'a OpaqueToken,
    binding: &'a OpaqueToken,
    /// OIDC: the nonce. SAML: the `AuthnRequest`'s ID, which the response must answer.
    nonce: String,
    /// OIDC: the PKCE verifier. SAML: empty.
    pkce_verifier: String,
    location: String,
    /// The IdP answers by a cross-site POST (form_post, SAML): the binding cookie must be
    /// `SameSite=None` to travel with it.
    cross_site: bool,
}

/// An IdP's word on who signed in, and the login it answers: what completing a sign-in
/// needs, whichever protocol the IdP speaks.
struct Arrival<'a> {
    idp: &'a IdpConfig,
    trust: &'a EmailTrust,
    identity: VerifiedIdentity,
    /// Kept with the session for logout (the OIDC ID token).
    id_token: Option<String>,
    login: &'a LoginState,
    failed: FailedLogin,
}

/// What a failed callback is known to have been about.
#[derive(Debug, Clone, Default)]
struct FailedLogin {
    idp: Option<String>,
    /// The account (email, lower-cased), for counting repeated failures.
    account: Option<String>,
}
