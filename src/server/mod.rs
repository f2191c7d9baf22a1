//! Wiring: builds the shared state, binds the three listeners and runs them until shutdown.
//!
//! [`Server::build`] binds before anything runs and reports the bound addresses, so tests can
//! listen on port 0; [`Server::run`] takes the shutdown signal as a future.

pub mod admin;
mod apps;
pub mod forward_auth;
pub mod grpc;
pub mod http;
mod local;
pub mod reload;
mod respond;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::apps::Apps;
use crate::bearer::{self, Bearer};
use crate::broker::{Broker, LoginError};
use crate::clock::unix_now;
use crate::config::Settings;
use crate::decision::LoginUrls;
use crate::gate::Gate;
use crate::limits::Limits;
use crate::local::{Local, LocalParts, LocalSetupError};
use crate::metrics::Metrics;
use crate::session::cookie::CookieSettings;
use crate::session::revocations::RevocationSync;
use crate::session::{CachePolicy, Lifetimes, Sessions, TouchWriter};
use crate::store::{Access, Store, StoreError};
use crate::tokens::{Minter, TokenError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid server.public_url: {0}")]
    PublicUrl(#[from] url::ParseError),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error("minted tokens: {0}")]
    Token(#[from] TokenError),
    #[error("local sign-in: {0}")]
    Local(#[from] LocalSetupError),
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub sessions: Sessions,
    pub gate: Arc<Gate>,
    pub metrics: Arc<Metrics>,
    pub revocations: Arc<RevocationSync>,
    pub broker: Arc<Broker>,
    pub bearer: Arc<Bearer>,
    /// Present when `[token] enabled` or `[[client]]` apps are configured.
    pub minter: Option<Arc<Minter>>,
    /// `/auth/authorize`, `/auth/token`, `/auth/revoke`: present when `[[client]]` apps are
    /// configured.
    pub apps: Option<Arc<Apps>>,
    /// `/auth/local/*` and `/auth/v1/*`: present when `[local]` is configured.
    pub local: Option<Arc<Local>>,
    pub cookies: CookieSettings,
    /// Who may use `/admin/v1/*` and `/admin/audit`.
    pub admin_auth: Arc<admin::AdminAuth>,
    /// Brute-force and flood limits (per replica).
    pub limits: Arc<Limits>,
    /// False once shutdown begins, so `/readyz` sends traffic elsewhere.
    pub ready: Arc<AtomicBool>,
}

/// The addresses actually bound (useful with port 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

pub struct Server {
    state: AppState,
    touch_writer: TouchWriter,
    hangups: reload::Hangups,
    grpc: TcpListener,
    http: TcpListener,
    admin: TcpListener,
}

impl Server {
    /// Connects to the database (migrating unless `database.migrate = false`), builds the
    /// state and binds the listeners.
    pub async fn build(settings: Settings) -> Result<Self, ServeError> {
        let store = Store::connect(&settings.database.url, settings.database.max_connections)
            .await?
            .with_read_timeout(Duration::from_millis(settings.database.timeout_ms));
        if settings.database.migrate {
            store.migrate().await?;
        }
        let metrics = Arc::new(Metrics::new().with_check_labels(&crate::decision::CHECK_LABELS));
        let (sessions, touch_writer) = Sessions::new(
            store.clone(),
            Lifetimes::from_config(&settings.session),
            CachePolicy::from_config(&settings.session),
            metrics.clone(),
        );
        let urls = LoginUrls::new(&settings.public_origin(), &settings.login.welcome_path)?;
        let cookies = CookieSettings {
            session_name: settings.cookie_name().to_owned(),
            secure: settings.is_https(),
        };
        let http_client =
            crate::jwt::http_client().map_err(|e| ServeError::Http(std::io::Error::other(e)))?;
        // The shared signing keys: for the minted upstream token, and for `[[client]]` apps'
        // access tokens (which need them even when `[token] enabled = false`).
        let minter = if settings.token.enabled || !settings.clients.is_empty() {
            Some(Arc::new(
                Minter::start(&settings, store.clone(), metrics.clone(), unix_now()).await?,
            ))
        } else {
            None
        };
        let mut bearer = Bearer::new(&settings, store.clone(), metrics.clone(), http_client);
        if let Some(minter) = &minter {
            bearer = bearer.with_local_issuer(minter.clone());
        }
        let bearer = Arc::new(bearer);
        let limits = Arc::new(Limits::new(&settings.limits, metrics.clone()));
        let apps = match &minter {
            Some(minter) if !settings.clients.is_empty() => Some(Arc::new(Apps::new(
                &settings,
                store.clone(),
                sessions.clone(),
                minter.clone(),
                limits.clone(),
                metrics.clone(),
            ))),
            _ => None,
        };
        let gate = Arc::new(Gate {
            policy: ArcSwap::from_pointee(settings.policy.clone()),
            sessions: sessions.clone(),
            bearer: bearer.clone(),
            // x-gatehouse-jwt only when asked for, whoever else needs the keys.
            minter: minter.clone().filter(|_| settings.token.enabled),
            urls,
            cookies: cookies.clone(),
            metrics: metrics.clone(),
        });
        let revocations = RevocationSync::new(
            store.clone(),
            sessions.clone(),
            bearer.clone(),
            metrics.clone(),
        );
        let local = Local::new(
            &settings,
            LocalParts {
                store: store.clone(),
                sessions: sessions.clone(),
                cookies: cookies.clone(),
                limits: limits.clone(),
                apps: apps.clone(),
                metrics: metrics.clone(),
            },
        )?
        .map(Arc::new);
        let broker = Arc::new(
            Broker::new(
                &settings,
                store.clone(),
                sessions.clone(),
                cookies.clone(),
                limits.clone(),
                revocations.clone(),
                metrics.clone(),
            )?
            .with_local(local.clone()),
        );
        let grpc = bind("gRPC", settings.server.grpc_listen).await?;
        let http = bind("HTTP", settings.server.http_listen).await?;
        let admin = bind("admin", settings.server.admin_listen).await?;
        let admin_auth = Arc::new(admin::AdminAuth::new(settings.admin_token()));
        let state = AppState {
            settings: Arc::new(settings),
            store,
            sessions,
            gate,
            metrics,
            revocations,
            broker,
            bearer,
            minter,
            apps,
            local,
            cookies,
            admin_auth,
            limits,
            ready: Arc::new(AtomicBool::new(true)),
        };
        Ok(Self {
            state,
            touch_writer,
            hangups: reload::Hangups::listen(),
            grpc,
            http,
            admin,
        })
    }

    pub fn local_addrs(&self) -> BoundAddrs {
        let addr = |l: &TcpListener| {
            l.local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        BoundAddrs {
            grpc: addr(&self.grpc),
            http: addr(&self.http),
            admin: addr(&self.admin),
        }
    }

    /// Serves until `shutdown` completes. Then, for [`Shutdown::Drain`], `/readyz` and the gRPC
    /// health service report not-ready for `server.shutdown_delay_seconds` while everything
    /// still serves; then the listeners stop accepting, in-flight requests get up to
    /// `server.shutdown_grace_seconds` to finish, and it returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = Shutdown> + Send,
    ) -> Result<(), ServeError> {
        let Self {
            state,
            touch_writer,
            hangups,
            grpc,
            http,
            admin,
        } = self;
        let settings = state.settings.clone();
        let grace = Duration::from_secs(settings.server.shutdown_grace_seconds);
        let delay = Duration::from_secs(settings.server.shutdown_delay_seconds);

        tokio::spawn(touch_writer.run());
        tokio::spawn(
            state
                .revocations
                .clone()
                .run(Duration::from_millis(settings.session.revocation_poll_ms)),
        );
        tokio::spawn(housekeeping(
            state.store.clone(),
            settings.audit.retention_days,
        ));
        tokio::spawn(probe_while_down(state.store.clone()));
        tokio::spawn(state.limits.clone().keep_pruned());
        tokio::spawn(
            state
                .bearer
                .clone()
                .keep_keys_fresh(bearer::JWKS_REFRESH_INTERVAL),
        );
        if let Some(minter) = &state.minter {
            tokio::spawn(minter.clone().keep_fresh());
        }
        state.broker.warm_up();
        tokio::spawn(reload::on_sighup(state.clone(), hangups));

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<AuthorizationServer<grpc::CheckService>>()
            .await;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let grpc_server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health_service)
            .add_service(AuthorizationServer::new(grpc::CheckService::new(
                state.gate.clone(),
            )))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                stopped(stop_rx.clone()),
            );
        let http_server = axum::serve(
            http,
            http::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()));
        let admin_server = axum::serve(
            admin,
            admin::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()));

        let grpc_task = tokio::spawn(grpc_server);
        let http_task = tokio::spawn(async move { http_server.await });
        let admin_task = tokio::spawn(async move { admin_server.await });

        let how = shutdown.await;
        state.ready.store(false, Ordering::Relaxed);
        health
            .set_not_serving::<AuthorizationServer<grpc::CheckService>>()
            .await;
        if how == Shutdown::Drain && !delay.is_zero() {
            tracing::info!(
                delay_seconds = delay.as_secs(),
                "shutting down: not ready, still serving while load balancers catch up"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!(grace_seconds = grace.as_secs(), "shutting down: draining");
        let _ = stop_tx.send(true);

        let all = async {
            let grpc = grpc_task.await;
            let http = http_task.await;
            let admin = admin_task.await;
            (grpc, http, admin)
        };
        match tokio::time::timeout(grace, all).await {
            Ok((grpc, http, admin)) => {
                if let Ok(Err(e)) = grpc {
                    return Err(ServeError::Grpc(e));
                }
                for result in [http, admin] {
                    if let Ok(Err(e)) = result {
                        return Err(ServeError::Http(e));
                    }
                }
            }
            Err(_) => tracing::warn!("grace period over; dropping open connections"),
        }
        state.store.close().await;
        Ok(())
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { what, addr, source })
}

/// How a shutdown was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGTERM: an orchestrator is replacing this process. Report not-ready first, keep
    /// serving for `server.shutdown_delay_seconds`, then drain.
    Drain,
    /// Ctrl-C: someone at a terminal. Drain at once.
    Now,
}

/// Deletes expired sessions, login states, sign-in flows and old revocations every minute (one indexed
/// delete per table, cheap when there is nothing to do), and audit events past
/// `audit.retention_days` every hour.
async fn housekeeping(store: Store, retention_days: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let retention = i64::try_from(retention_days.saturating_mul(86_400)).unwrap_or(i64::MAX);
    let mut minutes: u64 = 0;
    loop {
        tick.tick().await;
        let now = unix_now();
        let result = store.purge_expired(now).await;
        store.observe(Access::Write, &result, now);
        match result {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "purged expired rows"),
            Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
        }
        // And `[[client]]` apps' expired codes and refresh token families.
        match store.purge_expired_app_tokens(now).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "purged expired app codes and refresh tokens"),
            Err(e) => tracing::warn!(error = %e, "housekeeping of app tokens failed"),
        }
        // And local sign-in's expired flows and reset links.
        match store.prune_local(now).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "purged expired sign-in flows and reset links"),
            Err(e) => tracing::warn!(error = %e, "housekeeping of local sign-in failed"),
        }
        if retention_days > 0 && minutes.is_multiple_of(60) {
            match store.prune_audit(now.saturating_sub(retention)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, retention_days, "pruned old audit events"),
                Err(e) => tracing::warn!(error = %e, "audit pruning failed"),
            }
        }
        minutes = minutes.wrapping_add(1);
    }
}

/// While the database is marked down, probes it every second, so that recovery is noticed
/// without a request having to risk it (and wait out a timeout).
async fn probe_while_down(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if store.health().is_up() {
            continue;
        }
        let _ = probe(&store).await;
    }
}

/// One bounded probe of the database; a timeout counts as an outage.
pub(crate) async fn probe(store: &Store) -> Result<(), StoreError> {
    store.probe(unix_now(), store.read_timeout()).await
}
