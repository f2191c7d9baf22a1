//! Prometheus metrics, named `gatehouse_<name>_<unit>`. Label values come from small fixed sets
//! (decisions, reasons, configured IdP names); the per-check children are resolved once at
//! start-up so recording a check is a few atomic adds. Gauges that describe state owned
//! elsewhere (the pool, the cache size) are sampled when `/metrics` is scraped.

use std::time::Duration;

use moka::notification::RemovalCause;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::store::PoolStats;

pub struct Metrics {
    registry: Registry,
    checks_vec: IntCounterVec,
    /// The children of `checks_vec` for the labels the check path records, resolved once.
    checks: Vec<((&'static str, &'static str), IntCounter)>,
    check_seconds: Histogram,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_stale: IntCounter,
    evicted_size: IntCounter,
    evicted_expired: IntCounter,
    evicted_revoked: IntCounter,
    cache_entries: IntGauge,
    logins: IntCounterVec,
    login_starts: IntCounterVec,
    rate_limited: IntCounterVec,
    backchannel_logouts: IntCounterVec,
    bearer_hits: IntCounter,
    bearer_misses: IntCounter,
    bearer_verifications: IntCounter,
    jwks_refreshes: IntCounter,
    jwks_failures: IntCounter,
    tokens_signed: IntCounter,
    pool_connections: IntGaugeVec,
    pool_waiting: IntGauge,
    pool_max: IntGauge,
    db_up: IntGauge,
    alive_tasks: IntGauge,
    listener_up: IntGauge,
    notify_lag: Histogram,
    revocations_applied: IntCounter,
    reloads: IntCounterVec,
    app_tokens: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// What `/metrics` samples from state owned elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub pool: PoolStats,
    pub db_up: bool,
    pub cache_entries: u64,
    /// Tasks alive on the runtime: a leak of tasks shows here first (the soak samples it).
    pub alive_tasks: usize,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("static metric definition")
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("static metric definition")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let checks_vec = counter_vec(
            "gatehouse_checks_total",
            "Authorization checks, by decision and reason.",
            &["decision", "reason"],
        );
        let check_seconds = histogram(
            "gatehouse_check_duration_seconds",
            "Time to decide one check, from request decoded to response built.",
            vec![
                0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.025,
                0.05, 0.1, 0.25, 1.0,
            ],
        );
        let cache = counter_vec(
            "gatehouse_session_cache_lookups_total",
            "Session cache lookups, by result: hit (fresh), miss (read from the database), \
             stale (served from cache while the database is down).",
            &["result"],
        );
        let evictions = counter_vec(
            "gatehouse_session_cache_evictions_total",
            "Session cache entries dropped, by cause: size (capacity), expired (TTL), revoked \
             (a revocation, or the session found to have ended).",
            &["cause"],
        );
        let cache_entries = gauge(
            "gatehouse_session_cache_entries",
            "Entries in this replica's session cache (approximate).",
        );
        let logins = counter_vec(
            "gatehouse_logins_total",
            "Browser logins by IdP and outcome: success (at the callback) or a failure reason \
             (at the start or the callback).",
            &["idp", "outcome"],
        );
        let rate_limited = counter_vec(
            "gatehouse_rate_limited_total",
            "Requests refused with 429 because a limit's bucket was empty, by limit.",
            &["limit"],
        );
        let backchannel_logouts = counter_vec(
            "gatehouse_backchannel_logouts_total",
            "Back-channel logout tokens received, by result (accepted, invalid, replayed, unavailable).",
            &["result"],
        );
        let login_starts = counter_vec(
            "gatehouse_login_starts_total",
            "Logins started at /auth/login (redirects to an IdP), by IdP.",
            &["idp"],
        );
        let bearer = counter_vec(
            "gatehouse_bearer_cache_lookups_total",
            "Verified-bearer-token cache lookups, by result (hit or miss).",
            &["result"],
        );
        let bearer_verifications = IntCounter::new(
            "gatehouse_bearer_verifications_total",
            "Bearer-token signature verifications (cache misses that reached the crypto).",
        )
        .expect("static metric definition");
        let jwks = counter_vec(
            "gatehouse_jwks_refreshes_total",
            "Background JWKS fetches of bearer issuers, by result.",
            &["result"],
        );
        let tokens_signed = IntCounter::new(
            "gatehouse_tokens_signed_total",
            "Minted upstream tokens (x-gatehouse-jwt) signed; cached ones are not counted.",
        )
        .expect("static metric definition");
        let pool_connections = IntGaugeVec::new(
            Opts::new(
                "gatehouse_db_pool_connections",
                "Database connections, by state (in_use or idle).",
            ),
            &["state"],
        )
        .expect("static metric definition");
        let pool_waiting = gauge(
            "gatehouse_db_pool_waiting_requests",
            "Statements waiting for a database connection (approximate).",
        );
        let pool_max = gauge(
            "gatehouse_db_pool_max_connections",
            "database.max_connections.",
        );
        let db_up = gauge(
            "gatehouse_db_up",
            "1 while the database answers reads and writes, 0 during an outage.",
        );
        let alive_tasks = gauge(
            "gatehouse_runtime_alive_tasks",
            "Tasks alive on the async runtime (connections, background jobs, requests).",
        );
        let listener_up = gauge(
            "gatehouse_revocation_listener_up",
            "1 while the PostgreSQL LISTEN connection for revocations is up (always 0 on \
             SQLite, which has none).",
        );
        let notify_lag = histogram(
            "gatehouse_revocation_notify_lag_seconds",
            "From a revocation's write (database clock) to its notification reaching this \
             replica.",
            vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        );
        let revocations_applied = IntCounter::new(
            "gatehouse_revocations_applied_total",
            "Revocations (logout, disable, role change, session revoke) applied to this \
             replica's caches.",
        )
        .expect("static metric definition");
        let reloads = counter_vec(
            "gatehouse_config_reloads_total",
            "Configuration reloads on SIGHUP, by result.",
            &["result"],
        );
        let app_tokens = counter_vec(
            "gatehouse_app_tokens_total",
            "Token endpoint requests of [[client]] apps, by grant (authorization_code, \
             refresh_token, revoke, other) and result (issued, revoked, reused, or the OAuth \
             error code).",
            &["grant", "result"],
        );
        let build_info = IntGaugeVec::new(
            Opts::new(
                "gatehouse_build_info",
                "Always 1; the labels name the build.",
            ),
            &["version"],
        )
        .expect("static metric definition");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for collector in [
            Box::new(checks_vec.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(check_seconds.clone()),
            Box::new(cache.clone()),
            Box::new(evictions.clone()),
            Box::new(cache_entries.clone()),
            Box::new(logins.clone()),
            Box::new(login_starts.clone()),
            Box::new(rate_limited.clone()),
            Box::new(backchannel_logouts.clone()),
            Box::new(bearer.clone()),
            Box::new(bearer_verifications.clone()),
            Box::new(jwks.clone()),
            Box::new(tokens_signed.clone()),
            Box::new(pool_connections.clone()),
            Box::new(pool_waiting.clone()),
            Box::new(pool_max.clone()),
            Box::new(db_up.clone()),
            Box::new(alive_tasks.clone()),
            Box::new(listener_up.clone()),
            Box::new(notify_lag.clone()),
            Box::new(revocations_applied.clone()),
            Box::new(reloads.clone()),
            Box::new(app_tokens.clone()),
            Box::new(build_info),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(e) = registry.register(Box::new(process)) {
                tracing::debug!(error = %e, "no process metrics");
            }
        }
        Self {
            registry,
            checks_vec,
            checks: Vec::new(),
            check_seconds,
            cache_hits: cache.with_label_values(&["hit"]),
            cache_misses: cache.with_label_values(&["miss"]),
            cache_stale: cache.with_label_values(&["stale"]),
            evicted_size: evictions.with_label_values(&["size"]),
            evicted_expired: evictions.with_label_values(&["expired"]),
            evicted_revoked: evictions.with_label_values(&["revoked"]),
            cache_entries,
            logins,
            login_starts,
            rate_limited,
            backchannel_logouts,
            bearer_hits: bearer.with_label_values(&["hit"]),
            bearer_misses: bearer.with_label_values(&["miss"]),
            bearer_verifications,
            jwks_refreshes: jwks.with_label_values(&["success"]),
            jwks_failures: jwks.with_label_values(&["failure"]),
            tokens_signed,
            pool_connections,
            pool_waiting,
            pool_max,
            db_up,
            alive_tasks,
            listener_up,
            notify_lag,
            revocations_applied,
            reloads,
            app_tokens,
        }
    }

    /// Resolves the check counters for these `(decision, reason)` pairs once, so recording one
    /// is an atomic add; they are exported (at 0) before the first check. The pairs belong to
    /// whoever decides (the server passes [`crate::decision::CHECK_LABELS`]).
    pub fn with_check_labels(mut self, labels: &[(&'static str, &'static str)]) -> Self {
        self.checks = labels
            .iter()
            .map(|&(d, r)| ((d, r), self.checks_vec.with_label_values(&[d, r])))
            .collect();
        self
    }

    /// One `/auth/token` or `/auth/revoke` answer. Both labels come from fixed sets (see
    /// [`crate::apps`]).
    pub fn record_app_token(&self, grant: &'static str, result: &'static str) {
        self.app_tokens.with_label_values(&[grant, result]).inc();
    }

    /// `decision` and `reason` come from [`crate::decision::Decision::labels`].
    pub fn record_check(
        &self,
        (decision, reason): (&'static str, &'static str),
        elapsed: Duration,
    ) {
        if let Some((_, counter)) = self
            .checks
            .iter()
            .find(|((d, r), _)| *d == decision && *r == reason)
        {
            counter.inc();
        } else {
            self.checks_vec.with_label_values(&[decision, reason]).inc();
        }
        self.check_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn session_cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn session_cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub fn session_cache_stale(&self) {
        self.cache_stale.inc();
    }

    pub fn session_cache_eviction(&self, cause: RemovalCause) {
        match cause {
            RemovalCause::Size => self.evicted_size.inc(),
            RemovalCause::Expired => self.evicted_expired.inc(),
            RemovalCause::Explicit => self.evicted_revoked.inc(),
            // A newer answer for the same session: nothing left the cache.
            RemovalCause::Replaced => {}
        }
    }

    /// `idp` is a configured IdP name (or `unknown`); `outcome` is `success` or a failure
    /// reason from a fixed set.
    pub fn record_login(&self, idp: &str, outcome: &'static str) {
        self.logins.with_label_values(&[idp, outcome]).inc();
    }

    pub fn bearer_cache_hit(&self) {
        self.bearer_hits.inc();
    }

    pub fn bearer_cache_miss(&self) {
        self.bearer_misses.inc();
    }

    pub fn bearer_verification(&self) {
        self.bearer_verifications.inc();
    }

    pub fn record_jwks_refresh(&self, ok: bool) {
        if ok {
            self.jwks_refreshes.inc();
        } else {
            self.jwks_failures.inc();
        }
    }

    pub fn token_signed(&self) {
        self.tokens_signed.inc();
    }

    /// `idp` is a configured IdP name: a small fixed set.
    pub fn record_rate_limited(&self, limit: &str) {
        self.rate_limited.with_label_values(&[limit]).inc();
    }

    pub fn record_backchannel_logout(&self, result: &str) {
        self.backchannel_logouts.with_label_values(&[result]).inc();
    }

    pub fn record_login_start(&self, idp: &str) {
        self.login_starts.with_label_values(&[idp]).inc();
    }

    pub fn set_listener_up(&self, up: bool) {
        self.listener_up.set(i64::from(up));
    }

    pub fn record_notify_lag(&self, lag: Duration) {
        self.notify_lag.observe(lag.as_secs_f64());
    }

    pub fn revocations_applied(&self, count: usize) {
        self.revocations_applied
            .inc_by(u64::try_from(count).unwrap_or(0));
    }

    pub fn record_reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    /// The text exposition format, with the sampled gauges set from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let pool = snapshot.pool;
        self.pool_connections
            .with_label_values(&["in_use"])
            .set(i64::from(pool.in_use));
        self.pool_connections
            .with_label_values(&["idle"])
            .set(i64::from(pool.idle));
        self.pool_waiting.set(i64::from(pool.waiting));
        self.pool_max.set(i64::from(pool.max));
        self.db_up.set(i64::from(snapshot.db_up));
        self.cache_entries
            .set(i64::try_from(snapshot.cache_entries).unwrap_or(i64::MAX));
        self.alive_tasks
            .set(i64::try_from(snapshot.alive_tasks).unwrap_or(i64::MAX));
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::CHECK_LABELS;

    fn snapshot() -> Snapshot {
        Snapshot {
            pool: PoolStats {
                in_use: 2,
                idle: 3,
                max: 10,
                waiting: 1,
            },
            db_up: true,
            cache_entries: 7,
            alive_tasks: 12,
        }
    }

    #[test]
    fn every_check_label_pair_is_counted() {
        let m = Metrics::new();
        for labels in CHECK_LABELS {
            m.record_check(labels, Duration::from_micros(30));
        }
        m.session_cache_hit();
        m.session_cache_miss();
        m.session_cache_eviction(RemovalCause::Size);
        m.record_login("main", "success");
        let text = m.render(&snapshot());
        for (d, r) in CHECK_LABELS {
            assert!(
                text.contains(&format!(
                    "gatehouse_checks_total{{decision=\"{d}\",reason=\"{r}\"}} 1"
                )),
                "{d}/{r}: {text}"
            );
        }
        for line in [
            "gatehouse_session_cache_lookups_total{result=\"hit\"} 1",
            "gatehouse_session_cache_evictions_total{cause=\"size\"} 1",
            "gatehouse_session_cache_entries 7",
            "gatehouse_runtime_alive_tasks 12",
            "gatehouse_logins_total{idp=\"main\",outcome=\"success\"} 1",
            "gatehouse_db_pool_connections{state=\"in_use\"} 2",
            "gatehouse_db_pool_waiting_requests 1",
            "gatehouse_db_up 1",
            "gatehouse_build_info{version=",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(text.contains(&format!(
            "gatehouse_check_duration_seconds_count {}",
            CHECK_LABELS.len()
        )));
    }
}
