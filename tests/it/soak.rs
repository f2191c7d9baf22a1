//! The soak (issue 17): two replicas on one PostgreSQL behind the real Envoy, under a steady
//! mixed load for an hour, sampled every minute. `#[ignore]`d: `scripts/soak` runs it in release
//! and plots the CSV it writes. It asserts the pass criteria of RELIABILITY.md:
//!
//! - after the warm-up, each replica's RSS grows by less than 10% and its open file descriptors
//!   do not grow;
//! - nothing is allowed that should not be, and everything that should be is;
//! - no `ERROR` line in either replica's log.
//!
//! The load, paced (not as fast as possible: this measures time, not speed):
//!
//! | stream | rate | expected |
//! |---|---|---|
//! | cached sessions (200, within the cache) | 4 × 50/s | allowed; latency sampled |
//! | evicted or expired-from-cache sessions (4 000, cache of 1 000, TTL 5 s) | 25/s | allowed |
//! | sessions expired in the database | 5/s | denied |
//! | bearer access tokens of a `[[client]]` app | 20/s | allowed |
//! | forged bearer tokens (unknown `kid`s) | 5/s | denied |
//! | unique garbage session cookies | 50/s | denied |
//! | browser logins against the real OpenID Provider (new and returning users) | 1 per 4 s | signed in |
//! | refresh-token rotation (every 15th a reuse drill: the family is revoked, a new one made) | 1 per 2 s | rotated |
//! | admin revocations (created on one replica, revoked on the other) | 1 per 5 s | denied everywhere within 1.5 s |
//!
//! Environment: `GATEHOUSE_SOAK_MINUTES` (60), `GATEHOUSE_SOAK_SAMPLE_SECONDS` (60),
//! `GATEHOUSE_SOAK_CSV` (`target/soak/soak.csv`).

use crate::support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use tokio::time::{Instant, MissedTickBehavior};

use support::admin::{self, Api};
use support::browser::Browser;
use support::client::KeepAlive;
use support::processes::{Envoy, EnvoyPorts, Gatehouse};
use support::{Backend, OpenIdProvider, StackUrls, TestDb, Upstream, base_config, free_port};

const HOT_SESSIONS: usize = 200;
const COLD_SESSIONS: usize = 4_000;
const EXPIRED_SESSIONS: usize = 200;
const CACHE_MAX_ENTRIES: usize = 1_000;
const CACHE_TTL_SECONDS: u64 = 5;
/// A revocation must be answered everywhere within issue 8's push bound (1 s), plus the time
/// of one check.
const REVOKE_BOUND: Duration = Duration::from_millis(1_500);
/// Open files a replica may have beyond the first quarter's most, at the end: a few
/// connections opening or closing at the moment of a sample (seen: ±2).
const FD_NOISE: u64 = 4;
/// RSS may grow by less than this fraction after the warm-up.
const RSS_GROWTH: f64 = 0.10;
const WARM_UP: Duration = Duration::from_secs(5 * 60);
const TOKEN_KEY_VAR: &str = "GH_TEST_TOKEN_KEY";
const API: &str = "https://api.test";
const APP_REDIRECT: &str = "http://127.0.0.1:40123/callback";

struct Settings {
    run: Duration,
    sample: Duration,
    warm_up: Duration,
    csv: PathBuf,
}

impl Settings {
    fn from_env() -> Self {
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?}")))
                .unwrap_or(default)
        };
        let run = Duration::from_secs(number("GATEHOUSE_SOAK_MINUTES", 60) * 60);
        let csv = std::env::var_os("GATEHOUSE_SOAK_CSV")
            .map(PathBuf::from)
            .unwrap_or_else(|| support::root().join("target/soak/soak.csv"));
        Self {
            run,
            sample: Duration::from_secs(number("GATEHOUSE_SOAK_SAMPLE_SECONDS", 60)),
            // A short trial run keeps a third of its time for the warm-up.
            warm_up: WARM_UP.min(run / 3),
            csv,
        }
    }
}

/// What the load saw, shared by the streams and read by the sampler.
#[derive(Default)]
struct Tally {
    checks: AtomicU64,
    wrong_allows: AtomicU64,
    false_denies: AtomicU64,
    transport_errors: AtomicU64,
    logins: AtomicU64,
    refreshes: AtomicU64,
    revocations: AtomicU64,
    slowest_revocation_ms: AtomicU64,
    /// The first problems, for the failure message.
    problems: Mutex<Vec<String>>,
    /// Latencies of cached-session checks since the last sample, in microseconds.
    latencies_us: Mutex<Vec<u32>>,
}

impl Tally {
    fn problem(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut problems) = self.problems.lock()
            && problems.len() < 50
        {
            eprintln!("soak problem: {what}");
            problems.push(what);
        }
    }

    /// One answer through Envoy, judged: `should_allow` says what gatehouse must decide.
    fn judge(
        &self,
        what: &str,
        should_allow: bool,
        answer: &Result<(u16, http::HeaderMap), String>,
    ) {
        match answer {
            Err(e) => self.problem(&self.transport_errors, format!("{what}: {e}")),
            Ok((status, headers)) => {
                self.checks.fetch_add(1, Ordering::Relaxed);
                // Through Envoy an allow reaches the echo upstream; straight from /authz it
                // is a 200 naming the user.
                let allowed = *status == 200
                    && (headers.get("x-echo").is_some_and(|v| v == "upstream")
                        || headers.contains_key("x-gatehouse-user-id"));
                if allowed && !should_allow {
                    self.problem(&self.wrong_allows, format!("{what}: allowed ({status})"));
                } else if !allowed && should_allow {
                    self.problem(&self.false_denies, format!("{what}: denied ({status})"));
                }
            }
        }
    }
}

/// Ticks at a steady rate until the end of the run.
struct Pacer {
    interval: tokio::time::Interval,
    until: Instant,
}

impl Pacer {
    fn new(per_second: f64, until: Instant) -> Self {
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { interval, until }
    }

    async fn next(&mut self) -> bool {
        self.interval.tick().await;
        Instant::now() < self.until
    }
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2))
}

fn cookie(token: &str) -> String {
    format!("gatehouse={token}")
}

const JSON: (&str, &str) = ("accept", "application/json");

// === the streams ===

async fn sessions_stream(
    envoy: std::net::SocketAddr,
    tally: Arc<Tally>,
    tokens: Arc<Vec<String>>,
    per_second: f64,
    until: Instant,
    should_allow: bool,
    latency: bool,
) {
    let mut conn = KeepAlive::new(envoy);
    let mut pace = Pacer::new(per_second, until);
    let mut i = uuid::Uuid::new_v4().as_u128() as usize;
    while pace.next().await {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let token = &tokens[(i >> 17) % tokens.len()];
        let cookie = cookie(token);
        let started = std::time::Instant::now();
        let answer = conn.get("/app", &[("cookie", &cookie), JSON]).await;
        if latency {
            let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            if let Ok(mut all) = tally.latencies_us.lock() {
                all.push(us);
            }
        }
        tally.judge("session", should_allow, &answer);
    }
}

async fn garbage_stream(envoy: std::net::SocketAddr, tally: Arc<Tally>, until: Instant) {
    let mut conn = KeepAlive::new(envoy);
    let mut pace = Pacer::new(50.0, until);
    let mut n = 0u64;
    while pace.next().await {
        n += 1;
        // Plausible tokens, short junk, and now and then a 3 KiB value.
        let value = match n % 10 {
            0 => "x".repeat(3 * 1024) + &n.to_string(),
            1..=3 => format!("{n}.{}", uuid::Uuid::new_v4()),
            _ => random_token(),
        };
        let answer = conn.get("/app", &[("cookie", &cookie(&value)), JSON]).await;
        tally.judge("garbage cookie", false, &answer);
    }
}

async fn bearer_stream(
    envoy: std::net::SocketAddr,
    tally: Arc<Tally>,
    access: Arc<RwLock<String>>,
    until: Instant,
) {
    let mut conn = KeepAlive::new(envoy);
    let mut pace = Pacer::new(25.0, until);
    let mut n = 0u64;
    while pace.next().await {
        n += 1;
        if n.is_multiple_of(5) {
            // A forged token naming a key nobody has.
            let header = URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#,
                uuid::Uuid::new_v4()
            ));
            let forged = format!("{header}.{}.{}", random_token(), random_token());
            let answer = conn
                .get(
                    "/v1/items",
                    &[("authorization", &format!("Bearer {forged}")), JSON],
                )
                .await;
            tally.judge("forged bearer", false, &answer);
        } else {
            let token = access.read().await.clone();
            let answer = conn
                .get(
                    "/v1/items",
                    &[("authorization", &format!("Bearer {token}")), JSON],
                )
                .await;
            tally.judge("bearer", true, &answer);
        }
    }
}

/// One browser login through Envoy against the real OP, as `soak-N`: signed in, and the
/// session reaches the application.
async fn one_login(base: String, n: u64) -> Result<(), String> {
    let mut browser = Browser::new();
    let page = browser
        .navigate(&format!("{base}/auth/login?rd=/app"))
        .await;
    if !support::op::is_interaction(&page) {
        return Err(format!("no OP login page: {:?}", page.hops));
    }
    let form = support::op::custom(&page);
    let sub = format!("soak-{n}");
    let email = format!("{sub}@acme.test");
    let page = browser
        .submit(
            &page,
            &form,
            &[("sub", &sub), ("email", &email), ("email_verified", "true")],
        )
        .await;
    if page.response.reached_upstream() {
        Ok(())
    } else {
        Err(format!(
            "login {n} ended at {}: {:?}",
            page.status(),
            page.hops
        ))
    }
}

async fn logins_stream(base: String, tally: Arc<Tally>, until: Instant) {
    let mut pace = Pacer::new(0.25, until);
    let mut n = 0u64;
    while pace.next().await {
        n += 1;
        // The first 200 create users; later ones are returning users.
        let login = tokio::spawn(one_login(base.clone(), n % 200));
        match login.await {
            Ok(Ok(())) => {
                tally.logins.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => tally.problem(&tally.false_denies, e),
            Err(e) => tally.problem(&tally.transport_errors, format!("login {n}: {e}")),
        }
    }
}

/// The native app's code flow for `session`'s user: (access token, refresh token).
async fn app_tokens(
    envoy: std::net::SocketAddr,
    session: &str,
) -> Result<(String, String), String> {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", "cli"),
            ("redirect_uri", APP_REDIRECT),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "soak"),
            ("scope", "read"),
        ])
        .finish();
    let r = support::send(
        envoy,
        "GET",
        &format!("/auth/authorize?{query}"),
        &[
            ("cookie", &cookie(session)),
            ("accept", support::BROWSER_ACCEPT),
        ],
        None,
    )
    .await;
    let code = r
        .location()
        .and_then(|l| url::Url::parse(l).ok())
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
        })
        .ok_or_else(|| format!("authorize: {r:?}"))?;
    token_call(
        envoy,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "cli"),
            ("code", &code),
            ("redirect_uri", APP_REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await
}

/// `POST /auth/token`: the new pair, or the refusal.
async fn token_call(
    envoy: std::net::SocketAddr,
    pairs: &[(&str, &str)],
) -> Result<(String, String), String> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let r = support::send(
        envoy,
        "POST",
        "/auth/token",
        &[],
        Some(("application/x-www-form-urlencoded", body.into_bytes())),
    )
    .await;
    if r.status != 200 {
        return Err(format!("{} {}", r.status, r.body));
    }
    let json = r.json();
    match (
        json["access_token"].as_str(),
        json["refresh_token"].as_str(),
    ) {
        (Some(a), Some(r)) => Ok((a.to_owned(), r.to_owned())),
        _ => Err(format!("no tokens in {json}")),
    }
}

async fn refresh(envoy: std::net::SocketAddr, token: &str) -> Result<(String, String), String> {
    token_call(
        envoy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "cli"),
            ("refresh_token", token),
        ],
    )
    .await
}

async fn refresh_stream(
    envoy: std::net::SocketAddr,
    tally: Arc<Tally>,
    session: String,
    access: Arc<RwLock<String>>,
    mut current: String,
    until: Instant,
) {
    let mut pace = Pacer::new(0.5, until);
    let mut n = 0u64;
    while pace.next().await {
        n += 1;
        let (new_access, new_refresh) = match refresh(envoy, &current).await {
            Ok(pair) => pair,
            Err(e) => {
                tally.problem(&tally.false_denies, format!("refresh {n}: {e}"));
                continue;
            }
        };
        tally.refreshes.fetch_add(1, Ordering::Relaxed);
        *access.write().await = new_access;
        let spent = std::mem::replace(&mut current, new_refresh);
        if !n.is_multiple_of(15) {
            continue;
        }
        // The reuse drill: the spent token is refused and ends the family, so the current
        // one is refused too; the app signs in again.
        if refresh(envoy, &spent).await.is_ok() {
            tally.problem(
                &tally.wrong_allows,
                format!("refresh {n}: a spent token rotated"),
            );
        }
        if refresh(envoy, &current).await.is_ok() {
            tally.problem(
                &tally.wrong_allows,
                format!("refresh {n}: a revoked family rotated"),
            );
        }
        match app_tokens(envoy, &session).await {
            Ok((a, r)) => {
                *access.write().await = a;
                current = r;
            }
            Err(e) => tally.problem(&tally.false_denies, format!("new family after {n}: {e}")),
        }
    }
}

/// Creates a session on one replica, checks it on each replica directly (filling both caches)
/// and through Envoy, revokes it on the other, and watches every answer of both replicas for
/// 2.5 s: an allow decided after the bound is wrong.
async fn revocations_stream(
    envoy: std::net::SocketAddr,
    replicas: [std::net::SocketAddr; 2],
    apis: [Arc<Api>; 2],
    tally: Arc<Tally>,
    until: Instant,
) {
    let email = "revokee@acme.test";
    let mut through_envoy = KeepAlive::new(envoy);
    let mut direct = replicas.map(KeepAlive::new);
    let mut pace = Pacer::new(0.2, until);
    let mut n = 0usize;
    while pace.next().await {
        n += 1;
        let (maker, revoker) = (&apis[n % 2], &apis[(n + 1) % 2]);
        let created = maker
            .call(
                "POST",
                "/admin/v1/sessions",
                Some(serde_json::json!({ "user": email })),
            )
            .await;
        let Some(token) = created
            .json()
            .get("token")
            .and_then(|t| t.as_str())
            .map(String::from)
        else {
            tally.problem(&tally.false_denies, format!("revocation {n}: {created:?}"));
            continue;
        };
        let cookie = cookie(&token);
        for replica in &mut direct {
            let answer = replica
                .get("/authz/app", &[("cookie", &cookie), JSON])
                .await;
            tally.judge("session before revocation", true, &answer);
        }
        let answer = through_envoy
            .get("/app", &[("cookie", &cookie), JSON])
            .await;
        tally.judge("session before revocation", true, &answer);
        let r = revoker
            .call("DELETE", &format!("/admin/v1/sessions?user={email}"), None)
            .await;
        let revoked_at = Instant::now();
        if r.status != 200 {
            tally.problem(&tally.false_denies, format!("revoke {n}: {r:?}"));
            continue;
        }
        let mut last_allowed = Duration::ZERO;
        while revoked_at.elapsed() < Duration::from_millis(2_500) {
            for replica in &mut direct {
                // When the question was asked: an allow decided within the bound is right even
                // if it arrives after it.
                let asked = revoked_at.elapsed();
                let answer = replica
                    .get("/authz/app", &[("cookie", &cookie), JSON])
                    .await;
                let allowed = matches!(&answer, Ok((200, _)));
                if allowed {
                    last_allowed = last_allowed.max(asked);
                }
                // Within the bound either answer is right; after it, only a deny.
                tally.judge("revoked session", asked < REVOKE_BOUND && allowed, &answer);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tally.revocations.fetch_add(1, Ordering::Relaxed);
        let ms = u64::try_from(last_allowed.as_millis()).unwrap_or(u64::MAX);
        tally.slowest_revocation_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

// === sampling ===

/// One replica's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Process {
    rss_mib: f64,
    fds: u64,
    threads: u64,
    tasks: f64,
    pool_in_use: f64,
    cache_entries: f64,
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(f64::NAN)
}

async fn sample_process(gh: &Gatehouse) -> Process {
    let pid = gh.pid();
    let metrics = support::send(gh.admin, "GET", "/metrics", &[], None)
        .await
        .body;
    Process {
        rss_mib: proc_status(pid, "VmRSS:") as f64 / 1024.0,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
        threads: proc_status(pid, "Threads:"),
        tasks: metric(&metrics, "gatehouse_runtime_alive_tasks "),
        pool_in_use: metric(&metrics, "gatehouse_db_pool_connections{state=\"in_use\"} "),
        cache_entries: metric(&metrics, "gatehouse_session_cache_entries "),
    }
}

async fn database_connections(db: &TestDb) -> i64 {
    let name = db.url.rsplit('/').next().unwrap_or_default().to_owned();
    let Ok(mut pg) =
        <sqlx::PgConnection as sqlx::Connection>::connect(&support::db::postgres_admin_url()).await
    else {
        return -1;
    };
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut pg)
        .await
        .unwrap_or(-1)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

struct Sample {
    elapsed_s: f64,
    a: Process,
    b: Process,
}

const CSV_HEADER: &str = "minute,elapsed_s,rss_a_mib,rss_b_mib,fds_a,fds_b,threads_a,threads_b,\
tasks_a,tasks_b,db_connections,pool_in_use_a,pool_in_use_b,cache_a,cache_b,checks,p50_ms,p99_ms,\
logins,refreshes,revocations,wrong_allows,false_denies,transport_errors";

// === the soak ===

fn replica_config(urls: &StackUrls) -> String {
    let base = base_config(urls)
        .replace(
            "[session]\nrevocation_poll_ms = 600000\n",
            &format!(
                "[session]\ncache_ttl_seconds = {CACHE_TTL_SECONDS}\n\
                 cache_max_entries = {CACHE_MAX_ENTRIES}\n"
            ),
        )
        .replace("max_connections = 5", "max_connections = 10")
        .replace(
            "open_signup = true",
            "open_signup = true\nnew_users_enabled = true",
        );
    format!(
        r#"{base}{admin}
[token]
enabled = true
encryption_key_env = "{TOKEN_KEY_VAR}"
{idp}
[[client]]
client_id = "cli"
kind = "native"
redirect_uris = ["http://127.0.0.1/callback"]
audience = "{API}"
scopes = ["read"]

[[route]]
path_prefix = "/v1/"
access = "authenticated"
api = true
bearer = {{ issuers = ["{issuer}"], audiences = ["{API}"] }}
{routes}"#,
        admin = admin::SECTION,
        idp = support::op::idp_toml("main", &urls.issuers[0]),
        issuer = urls.base,
        routes = support::ROUTES,
    )
}

/// Sessions for `users` users named `prefix-N@acme.test`, enabled, `count` in all, made
/// eight at a time.
async fn sessions(api: &Arc<Api>, prefix: &str, users: usize, count: usize) -> Vec<String> {
    for u in 0..users {
        api.enabled_session(&format!("{prefix}-{u}@acme.test"))
            .await;
    }
    let mut tokens = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(8) {
        let mut batch = tokio::task::JoinSet::new();
        for i in chunk {
            let (api, email) = (api.clone(), format!("{prefix}-{}@acme.test", i % users));
            batch.spawn(async move { api.session(&email).await });
        }
        while let Some(token) = batch.join_next().await {
            tokens.push(token.expect("session task"));
        }
    }
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "an hour long: scripts/soak runs it"]
async fn soak() {
    let settings = Settings::from_env();
    let db = TestDb::create(Backend::Postgres).await;
    let (dir_a, dir_b, dir_envoy) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let listener = free_port();
    let base = format!("http://127.0.0.1:{listener}");
    let op = OpenIdProvider::start(&base, &[]).await;
    let urls = StackUrls {
        base: base.clone(),
        database: db.url.clone(),
        issuers: vec![op.issuer.clone()],
    };
    let config = replica_config(&urls);
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let env = [
        admin::env(),
        (TOKEN_KEY_VAR, key.as_str()),
        ("GATEHOUSE_LOG", "info"),
    ];
    let a = Gatehouse::start(dir_a.path(), &config, &env).await;
    let b = Gatehouse::start(dir_b.path(), &config, &env).await;
    let upstream = Upstream::start().await;
    // Envoy balances both of its gatehouse clusters over the two replicas.
    let second = |first: u16, second: u16| -> (&'static str, &'static str) {
        let from = format!("socket_address: {{ address: 127.0.0.1, port_value: {first} }}");
        let to = format!(
            "{from}\n        - endpoint:\n            address:\n              \
             socket_address: {{ address: 127.0.0.1, port_value: {second} }}"
        );
        (
            Box::leak(from.into_boxed_str()),
            Box::leak(to.into_boxed_str()),
        )
    };
    let envoy = Envoy::start_edited(
        dir_envoy.path(),
        "envoy/envoy.yaml",
        &[
            second(a.grpc.port(), b.grpc.port()),
            second(a.http.port(), b.http.port()),
        ],
        EnvoyPorts {
            listener,
            grpc: a.grpc.port(),
            http: a.http.port(),
            upstream: upstream.addr.port(),
        },
    )
    .await;
    let apis = [Arc::new(Api::new(a.admin)), Arc::new(Api::new(b.admin))];

    eprintln!(
        "soak: making {} sessions",
        HOT_SESSIONS + COLD_SESSIONS + EXPIRED_SESSIONS
    );
    let hot = Arc::new(sessions(&apis[0], "hot", 50, HOT_SESSIONS).await);
    let cold = Arc::new(sessions(&apis[1], "cold", 200, COLD_SESSIONS).await);
    let expired = Arc::new(sessions(&apis[0], "expired", 10, EXPIRED_SESSIONS).await);
    db.execute(
        "UPDATE sessions SET absolute_expires_at = 1 WHERE user_id IN \
         (SELECT id FROM users WHERE email LIKE 'expired-%')",
    )
    .await;
    let app_user = sessions(&apis[0], "app", 1, 1).await.remove(0);
    let (access, refresh_token) = app_tokens(envoy.listener, &app_user)
        .await
        .expect("the app's first tokens");
    let access = Arc::new(RwLock::new(access));
    // The revokee must exist and be enabled before the stream starts.
    apis[0].enabled_session("revokee@acme.test").await;

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let until = started + settings.run;
    let e = envoy.listener;
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        load.spawn(sessions_stream(
            e,
            tally.clone(),
            hot.clone(),
            50.0,
            until,
            true,
            true,
        ));
    }
    load.spawn(sessions_stream(
        e,
        tally.clone(),
        cold.clone(),
        25.0,
        until,
        true,
        false,
    ));
    load.spawn(sessions_stream(
        e,
        tally.clone(),
        expired.clone(),
        5.0,
        until,
        false,
        false,
    ));
    load.spawn(garbage_stream(e, tally.clone(), until));
    load.spawn(bearer_stream(e, tally.clone(), access.clone(), until));
    load.spawn(logins_stream(base.clone(), tally.clone(), until));
    load.spawn(refresh_stream(
        e,
        tally.clone(),
        app_user.clone(),
        access.clone(),
        refresh_token,
        until,
    ));
    load.spawn(revocations_stream(
        e,
        [a.http, b.http],
        apis.clone(),
        tally.clone(),
        until,
    ));

    if let Some(dir) = settings.csv.parent() {
        std::fs::create_dir_all(dir).expect("CSV directory");
    }
    let mut csv = vec![CSV_HEADER.to_owned()];
    let mut samples = Vec::new();
    let mut last_checks = 0;
    let mut counts = [0u64; 3];
    let mut minute = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(
            settings
                .sample
                .min(until.saturating_duration_since(Instant::now())),
        )
        .await;
        minute += 1;
        let (pa, pb) = (sample_process(&a).await, sample_process(&b).await);
        let connections = database_connections(&db).await;
        let mut latencies = tally
            .latencies_us
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        latencies.sort_unstable();
        let checks = tally.checks.load(Ordering::Relaxed);
        let now = [
            tally.logins.load(Ordering::Relaxed),
            tally.refreshes.load(Ordering::Relaxed),
            tally.revocations.load(Ordering::Relaxed),
        ];
        let elapsed_s = started.elapsed().as_secs_f64();
        let row = format!(
            "{minute},{elapsed_s:.0},{:.1},{:.1},{},{},{},{},{},{},{connections},{},{},{},{},{},{:.2},{:.2},{},{},{},{},{},{}",
            pa.rss_mib,
            pb.rss_mib,
            pa.fds,
            pb.fds,
            pa.threads,
            pb.threads,
            pa.tasks,
            pb.tasks,
            pa.pool_in_use,
            pb.pool_in_use,
            pa.cache_entries,
            pb.cache_entries,
            checks - last_checks,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            now[0] - counts[0],
            now[1] - counts[1],
            now[2] - counts[2],
            tally.wrong_allows.load(Ordering::Relaxed),
            tally.false_denies.load(Ordering::Relaxed),
            tally.transport_errors.load(Ordering::Relaxed),
        );
        eprintln!("soak: {row}");
        csv.push(row);
        std::fs::write(&settings.csv, csv.join("\n") + "\n").expect("write CSV");
        samples.push(Sample {
            elapsed_s,
            a: pa,
            b: pb,
        });
        last_checks = checks;
        counts = now;
    }
    while let Some(stream) = load.join_next().await {
        stream.expect("a load stream panicked");
    }

    // The verdict.
    let problems = tally.problems.lock().map(|p| p.clone()).unwrap_or_default();
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.elapsed_s >= settings.warm_up.as_secs_f64())
        .collect();
    assert!(
        after.len() >= 2,
        "too short a run to judge: {} samples after the warm-up",
        after.len()
    );
    let quarter = (after.len() / 4).max(1);
    let mut verdict = Vec::new();
    for (name, of) in [
        ("A", (|s: &Sample| s.a) as fn(&Sample) -> Process),
        ("B", |s: &Sample| s.b),
    ] {
        let baseline = of(after[0]);
        let peak_rss = after.iter().map(|s| of(s).rss_mib).fold(0.0, f64::max);
        let growth = peak_rss / baseline.rss_mib - 1.0;
        verdict.push(format!(
            "replica {name}: RSS {:.1} MiB after the warm-up, peak {peak_rss:.1} MiB ({:+.1}%)",
            baseline.rss_mib,
            growth * 100.0
        ));
        assert!(
            growth < RSS_GROWTH,
            "replica {name}'s RSS grew {:.1}%",
            growth * 100.0
        );
        // Open files move with the pools and the connections in flight: a leak shows as a
        // rising middle, so the last quarter's median must stay within the first quarter's
        // maximum, give or take a few connections.
        let early_fds = after[..quarter]
            .iter()
            .map(|s| of(s).fds)
            .max()
            .unwrap_or(0);
        let mut late: Vec<u64> = after[after.len() - quarter..]
            .iter()
            .map(|s| of(s).fds)
            .collect();
        late.sort_unstable();
        let late_fds = late[late.len() / 2];
        verdict.push(format!(
            "replica {name}: open files {early_fds} (most in the first quarter after the \
             warm-up), {late_fds} (median of the last quarter)"
        ));
        assert!(
            late_fds <= early_fds + FD_NOISE,
            "replica {name}'s open files grew: {early_fds} -> {late_fds}"
        );
    }
    let checks = tally.checks.load(Ordering::Relaxed);
    verdict.push(format!(
        "{checks} checks, {} logins, {} refreshes, {} revocations (slowest to apply {} ms); \
         wrong allows {}, false denies {}, transport errors {}",
        tally.logins.load(Ordering::Relaxed),
        tally.refreshes.load(Ordering::Relaxed),
        tally.revocations.load(Ordering::Relaxed),
        tally.slowest_revocation_ms.load(Ordering::Relaxed),
        tally.wrong_allows.load(Ordering::Relaxed),
        tally.false_denies.load(Ordering::Relaxed),
        tally.transport_errors.load(Ordering::Relaxed),
    ));
    eprintln!("soak verdict:\n  {}", verdict.join("\n  "));
    assert_eq!(
        tally.wrong_allows.load(Ordering::Relaxed),
        0,
        "wrong allows: {problems:#?}"
    );
    assert_eq!(
        tally.false_denies.load(Ordering::Relaxed),
        0,
        "false denies: {problems:#?}"
    );
    assert_eq!(
        tally.transport_errors.load(Ordering::Relaxed),
        0,
        "transport errors: {problems:#?}"
    );
    for (name, gh) in [("A", &a), ("B", &b)] {
        let errors: Vec<String> = gh
            .logs()
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .map(String::from)
            .collect();
        assert!(
            errors.is_empty(),
            "replica {name} logged errors:\n{}",
            errors.join("\n")
        );
    }
}
