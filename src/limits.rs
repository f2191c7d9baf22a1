//! Brute-force and flood limits: token buckets per client address and per account, in memory
//! on each replica (`governor`'s keyed GCRA limiter), plus the count of failed sign-ins per
//! account that raises a `suspicious_login` audit event.
//!
//! A refused request answers 429 with `Retry-After`; the caller audits the first refusal of
//! each key per minute ([`Refusal::first_in_window`]) so a flood cannot flood the audit trail
//! too, and every refusal is counted in `gatehouse_rate_limited_total{limit}`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;
use crate::metrics::Metrics;

/// One configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    LoginStartsPerIp,
    LoginStartsPerAccount,
    FailedCallbacksPerIp,
    TokenCallsPerIp,
    TokenCallsPerAccount,
    ImpersonationsPerAccount,
    /// Failed local sign-in steps (password, code, TOTP) per client address.
    LocalFailuresPerIp,
    /// Sign-in codes and reset links emailed per address.
    EmailsPerAccount,
}

impl Limit {
    const ALL: [Limit; 8] = [
        Limit::LoginStartsPerIp,
        Limit::LoginStartsPerAccount,
        Limit::FailedCallbacksPerIp,
        Limit::TokenCallsPerIp,
        Limit::TokenCallsPerAccount,
        Limit::ImpersonationsPerAccount,
        Limit::LocalFailuresPerIp,
        Limit::EmailsPerAccount,
    ];

    /// The config key under `[limits]`, also the metric label.
    pub fn name(self) -> &'static str {
        match self {
            Limit::LoginStartsPerIp => "login_starts_per_ip",
            Limit::LoginStartsPerAccount => "login_starts_per_account",
            Limit::FailedCallbacksPerIp => "failed_callbacks_per_ip",
            Limit::TokenCallsPerIp => "token_calls_per_ip",
            Limit::TokenCallsPerAccount => "token_calls_per_account",
            Limit::ImpersonationsPerAccount => "impersonations_per_account",
            Limit::LocalFailuresPerIp => "local_failures_per_ip",
            Limit::EmailsPerAccount => "emails_per_account",
        }
    }

    fn per_minute(self, c: &LimitsConfig) -> u32 {
        match self {
            Limit::LoginStartsPerIp => c.login_starts_per_ip,
            Limit::LoginStartsPerAccount => c.login_starts_per_account,
            Limit::FailedCallbacksPerIp => c.failed_callbacks_per_ip,
            Limit::TokenCallsPerIp => c.token_calls_per_ip,
            Limit::TokenCallsPerAccount => c.token_calls_per_account,
            Limit::ImpersonationsPerAccount => c.impersonations_per_account,
            Limit::LocalFailuresPerIp => c.local_failures_per_ip,
            Limit::EmailsPerAccount => c.emails_per_account,
        }
    }
}

/// A request over a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub limit: Limit,
    /// Whole seconds until the bucket has a token again (at least 1): `Retry-After`.
    pub retry_after_seconds: u64,
    /// The first refusal of this key in the last minute: audit this one, count the rest.
    pub first_in_window: bool,
}

impl Refusal {
    pub fn retry_after(&self) -> String {
        self.retry_after_seconds.to_string()
    }
}

struct Bucket {
    limit: Limit,
    limiter: DefaultKeyedRateLimiter<String>,
}

pub struct Limits {
    buckets: Vec<Bucket>,
    clock: DefaultClock,
    /// Keys refused in the last minute (for [`Refusal::first_in_window`]).
    refused_recently: moka::sync::Cache<(Limit, String), ()>,
    /// Keys whose failure bucket ran dry, until when (Unix seconds): failures are charged
    /// after the fact, so the next request is refused up front.
    blocked: moka::sync::Cache<(Limit, String), i64>,
    /// Recent failed sign-ins per account (Unix seconds), for `suspicious_login`.
    failures: moka::sync::Cache<String, Arc<Mutex<Vec<i64>>>>,
    suspicious_failures: usize,
    suspicious_window: i64,
    metrics: Arc<Metrics>,
}

impl Limits {
    pub fn new(config: &LimitsConfig, metrics: Arc<Metrics>) -> Self {
        let buckets = Limit::ALL
            .into_iter()
            .filter_map(|limit| {
                let per_minute = NonZeroU32::new(limit.per_minute(config))?;
                Some(Bucket {
                    limit,
                    limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
                })
            })
            .collect();
        let window = i64::try_from(config.suspicious_window_seconds).unwrap_or(i64::MAX);
        Self {
            buckets,
            clock: DefaultClock::default(),
            refused_recently: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            blocked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(120))
                .build(),
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(
                    config.suspicious_window_seconds.clamp(1, 86_400),
                ))
                .build(),
            suspicious_failures: usize::try_from(config.suspicious_failures).unwrap_or(usize::MAX),
            suspicious_window: window,
            metrics,
        }
    }

    fn bucket(&self, limit: Limit) -> Option<&Bucket> {
        self.buckets.iter().find(|b| b.limit == limit)
    }

    /// Takes a token from `key`'s bucket, or refuses.
    pub fn check(&self, limit: Limit, key: &str, now: i64) -> Result<(), Refusal> {
        if let Some(refusal) = self.blocked_now(limit, key, now) {
            return Err(refusal);
        }
        let Some(bucket) = self.bucket(limit) else {
            return Ok(());
        };
        match bucket.limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(self.refuse(limit, key, wait))
            }
        }
    }

    /// Refuses up front a key whose failures used up its bucket (see [`Self::charge_failure`]).
    pub fn blocked_now(&self, limit: Limit, key: &str, now: i64) -> Option<Refusal> {
        let until = self.blocked.get(&(limit, key.to_owned()))?;
        (until > now).then(|| {
            let wait = Duration::from_secs(u64::try_from(until - now).unwrap_or(1));
            self.refuse(limit, key, wait)
        })
    }

    /// Charges a failure (a failed callback) to `key`. Once its bucket is empty, the key's
    /// next requests are refused until a token is back.
    pub fn charge_failure(&self, limit: Limit, key: &str, now: i64) {
        let Some(bucket) = self.bucket(limit) else {
            return;
        };
        if let Err(not_until) = bucket.limiter.check_key(&key.to_owned()) {
            let wait = not_until.wait_time_from(self.clock.now());
            let seconds = i64::try_from(wait.as_secs()).unwrap_or(60).max(1);
            self.blocked.insert((limit, key.to_owned()), now + seconds);
        }
    }

    fn refuse(&self, limit: Limit, key: &str, wait: Duration) -> Refusal {
        self.metrics.record_rate_limited(limit.name());
        let seen_key = (limit, key.to_owned());
        let first_in_window = !self.refused_recently.contains_key(&seen_key);
        if first_in_window {
            self.refused_recently.insert(seen_key, ());
        }
        Refusal {
            limit,
            retry_after_seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            first_in_window,
        }
        .at_least_one_second()
    }

    /// Records a failed sign-in for `account`. True exactly when this failure reaches the
    /// threshold within the window: raise `suspicious_login` once, not on every failure after.
    pub fn failed_sign_in(&self, account: &str, now: i64) -> bool {
        if self.suspicious_failures == 0 {
            return false;
        }
        let entry = self
            .failures
            .get_with(account.to_ascii_lowercase(), Default::default);
        let mut times = entry.lock().unwrap_or_else(PoisonError::into_inner);
        times.retain(|t| now - *t < self.suspicious_window);
        times.push(now);
        times.len() == self.suspicious_failures
    }

    /// Forgets idle keys (run periodically: keyed limiters keep every key they have seen).
    pub fn prune(&self) {
        for bucket in &self.buckets {
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
        }
    }

    /// Prunes every minute, for as long as the server runs.
    pub async fn keep_pruned(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            self.prune();
        }
    }
}

impl Refusal {
    fn at_least_one_second(mut self) -> Self {
        self.retry_after_seconds = self.retry_after_seconds.max(1);
        self
    }
}

/// The unit a client's per-address limits apply to: its IPv4 address, or its IPv6 /64 (one
/// subscriber's allocation, within which addresses are free to rotate).
pub fn client_group(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{prefix}/64")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_groups() {
        let cases = [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
            ("::1", "::/64"),
        ];
        for (ip, group) in cases {
            assert_eq!(client_group(ip.parse().unwrap()), group, "{ip}");
        }
    }

    fn limits(per_minute: u32, suspicious: u32) -> Limits {
        let config = LimitsConfig {
            login_starts_per_ip: per_minute,
            login_starts_per_account: 0,
            failed_callbacks_per_ip: per_minute,
            suspicious_failures: suspicious,
            suspicious_window_seconds: 100,
            ..LimitsConfig::default()
        };
        Limits::new(&config, Arc::new(Metrics::new()))
    }

    #[test]
    fn a_bucket_holds_its_limit_then_refuses_per_key() {
        let l = limits(3, 0);
        for _ in 0..3 {
            assert!(l.check(Limit::LoginStartsPerIp, "a", 0).is_ok());
        }
        let refusal = l.check(Limit::LoginStartsPerIp, "a", 0).unwrap_err();
        assert_eq!(refusal.limit, Limit::LoginStartsPerIp);
        assert!(
            (1..=20).contains(&refusal.retry_after_seconds),
            "{refusal:?}"
        );
        assert!(refusal.first_in_window);
        assert!(
            !l.check(Limit::LoginStartsPerIp, "a", 0)
                .unwrap_err()
                .first_in_window
        );
        // Another key has its own bucket; a limit set to 0 is off.
        assert!(l.check(Limit::LoginStartsPerIp, "b", 0).is_ok());
        for _ in 0..100 {
            assert!(l.check(Limit::LoginStartsPerAccount, "a", 0).is_ok());
        }
    }

    #[test]
    fn failures_block_only_once_the_bucket_is_empty() {
        let l = limits(2, 0);
        assert!(
            l.blocked_now(Limit::FailedCallbacksPerIp, "ip", 100)
                .is_none()
        );
        l.charge_failure(Limit::FailedCallbacksPerIp, "ip", 100);
        l.charge_failure(Limit::FailedCallbacksPerIp, "ip", 100);
        assert!(
            l.blocked_now(Limit::FailedCallbacksPerIp, "ip", 100)
                .is_none()
        );
        l.charge_failure(Limit::FailedCallbacksPerIp, "ip", 100);
        let refusal = l
            .blocked_now(Limit::FailedCallbacksPerIp, "ip", 100)
            .unwrap();
        assert!(refusal.retry_after_seconds >= 1);
        assert!(
            l.blocked_now(Limit::FailedCallbacksPerIp, "other", 100)
                .is_none()
        );
        // Over when the time has passed.
        assert!(
            l.blocked_now(Limit::FailedCallbacksPerIp, "ip", 100 + 61)
                .is_none()
        );
    }

    #[test]
    fn suspicious_fires_once_at_the_threshold_within_the_window() {
        let l = limits(10, 3);
        assert!(!l.failed_sign_in("Eve@acme.test", 0));
        assert!(!l.failed_sign_in("eve@acme.test", 10));
        assert!(l.failed_sign_in("eve@acme.test", 20), "third failure");
        assert!(!l.failed_sign_in("eve@acme.test", 30), "only once");
        // Failures older than the window no longer count.
        let l = limits(10, 3);
        assert!(!l.failed_sign_in("x", 0));
        assert!(!l.failed_sign_in("x", 50));
        assert!(
            !l.failed_sign_in("x", 140),
            "the first fell out of the window"
        );
        assert!(l.failed_sign_in("x", 145));
    }
}
