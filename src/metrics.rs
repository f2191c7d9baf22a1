//! Prometheus metrics. Label values come from small fixed sets; the per-check children are
//! resolved once at start-up so recording a check is a few atomic adds.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Every decision label ([`crate::decision::Decision::label`]).
const DECISIONS: [&str; 11] = [
    "allow",
    "bad_request",
    "login_redirect",
    "unauthenticated",
    "invalid_token",
    "insufficient_scope",
    "unknown_subject",
    "welcome_redirect",
    "account_disabled",
    "forbidden",
    "unavailable",
];

pub struct Metrics {
    registry: Registry,
    checks: Vec<(&'static str, IntCounter)>,
    check_seconds: Histogram,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    logins: IntCounterVec,
    login_starts: IntCounterVec,
    bearer_hits: IntCounter,
    bearer_misses: IntCounter,
    bearer_verifications: IntCounter,
    jwks_refreshes: IntCounter,
    jwks_failures: IntCounter,
    tokens_signed: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let checks_vec = IntCounterVec::new(
            Opts::new(
                "gatehouse_checks_total",
                "Authorization checks, by decision.",
            ),
            &["decision"],
        )
        .expect("static metric definition");
        let checks = DECISIONS
            .iter()
            .map(|d| (*d, checks_vec.with_label_values(&[d])))
            .collect();
        let check_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "gatehouse_check_duration_seconds",
                "Time to decide one check, from request decoded to response built.",
            )
            .buckets(vec![
                0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.025,
                0.05, 0.1, 0.25, 1.0,
            ]),
        )
        .expect("static metric definition");
        let cache = IntCounterVec::new(
            Opts::new(
                "gatehouse_session_cache_lookups_total",
                "Session cache lookups, by result (hit or miss).",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let logins = IntCounterVec::new(
            Opts::new(
                "gatehouse_logins_total",
                "Browser logins finished at the callback, by outcome.",
            ),
            &["outcome"],
        )
        .expect("static metric definition");
        let login_starts = IntCounterVec::new(
            Opts::new(
                "gatehouse_login_starts_total",
                "Logins started at /auth/login (redirects to an IdP), by IdP.",
            ),
            &["idp"],
        )
        .expect("static metric definition");
        let bearer = IntCounterVec::new(
            Opts::new(
                "gatehouse_bearer_cache_lookups_total",
                "Verified-bearer-token cache lookups, by result (hit or miss).",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let bearer_verifications = IntCounter::new(
            "gatehouse_bearer_verifications_total",
            "Bearer-token signature verifications (cache misses that reached the crypto).",
        )
        .expect("static metric definition");
        let jwks = IntCounterVec::new(
            Opts::new(
                "gatehouse_jwks_refreshes_total",
                "Background JWKS fetches of bearer issuers, by result.",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let tokens_signed = IntCounter::new(
            "gatehouse_tokens_signed_total",
            "Minted upstream tokens (x-gatehouse-jwt) signed; cached ones are not counted.",
        )
        .expect("static metric definition");
        for collector in [
            Box::new(checks_vec) as Box<dyn prometheus::core::Collector>,
            Box::new(bearer.clone()),
            Box::new(bearer_verifications.clone()),
            Box::new(jwks.clone()),
            Box::new(tokens_signed.clone()),
            Box::new(check_seconds.clone()),
            Box::new(cache.clone()),
            Box::new(logins.clone()),
            Box::new(login_starts.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            checks,
            check_seconds,
            cache_hits: cache.with_label_values(&["hit"]),
            cache_misses: cache.with_label_values(&["miss"]),
            logins,
            login_starts,
            bearer_hits: bearer.with_label_values(&["hit"]),
            bearer_misses: bearer.with_label_values(&["miss"]),
            bearer_verifications,
            jwks_refreshes: jwks.with_label_values(&["success"]),
            jwks_failures: jwks.with_label_values(&["failure"]),
            tokens_signed,
        }
    }

    pub fn record_check(&self, decision: &'static str, elapsed: Duration) {
        if let Some((_, counter)) = self.checks.iter().find(|(d, _)| *d == decision) {
            counter.inc();
        }
        self.check_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn session_cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn session_cache_miss(&self) {
        self.cache_misses.inc();
    }

    /// `outcome` is `success` or a failure reason from a fixed set.
    pub fn record_login(&self, outcome: &'static str) {
        self.logins.with_label_values(&[outcome]).inc();
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
    pub fn record_login_start(&self, idp: &str) {
        self.login_starts.with_label_values(&[idp]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
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

    #[test]
    fn every_decision_label_is_counted() {
        let m = Metrics::new();
        for d in DECISIONS {
            m.record_check(d, Duration::from_micros(30));
        }
        m.session_cache_hit();
        m.session_cache_miss();
        let text = m.render();
        for d in DECISIONS {
            assert!(
                text.contains(&format!("gatehouse_checks_total{{decision=\"{d}\"}} 1")),
                "{d}: {text}"
            );
        }
        assert!(text.contains("gatehouse_session_cache_lookups_total{result=\"hit\"} 1"));
        assert!(text.contains(&format!(
            "gatehouse_check_duration_seconds_count {}",
            DECISIONS.len()
        )));
    }
}
