//! Memory under hostile floods (issue 17): a million unique invalid session cookies, a million
//! bearer tokens naming unknown keys, and a million login starts from a thousand addresses,
//! each against a fresh gatehouse on its embedded default (SQLite), with its RSS sampled twice
//! a second. `#[ignore]`d: `scripts/floods` runs them in release, one at a time, and
//! RELIABILITY.md records the figures and the bounds.
//!
//! Each asserts that nothing in the flood was allowed and that RSS stayed under the bound the
//! configuration implies (caches and tables are capped; see RELIABILITY.md). Environment:
//! `GATEHOUSE_FLOOD_COUNT` (1 000 000).

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use support::client::KeepAlive;
use support::issuer::TestIssuer;
use support::{Backend, Gatehouse, OpenIdProvider, StackUrls, TestDb, base_config};

const CONCURRENCY: u64 = 64;
/// What a flood may add to RSS over the idle process: the session cache's cap (100 000
/// entries at about 880 bytes) and the bearer cache's, with room for the allocator's slack.
const BOUND_MIB: f64 = 256.0;

fn flood_size() -> u64 {
    std::env::var("GATEHOUSE_FLOOD_COUNT")
        .ok()
        .map(|v| v.parse().expect("GATEHOUSE_FLOOD_COUNT"))
        .unwrap_or(1_000_000)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Samples a process's RSS until dropped.
struct RssWatch {
    peak_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let peak = peak_kib.clone();
        let task = tokio::spawn(async move {
            loop {
                peak.fetch_max((rss_mib(pid) * 1024.0) as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { peak_kib, task }
    }

    fn peak_mib(&self) -> f64 {
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `count` requests, `CONCURRENCY` at a time, each made by `one(n)` (`true`: allowed),
/// printing RSS at each quarter; asserts none was allowed and RSS stayed within the bound.
async fn flood<F, Fut>(name: &str, gh: &Gatehouse, one: F)
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<bool, String>> + Send,
{
    let count = flood_size();
    let pid = gh.pid();
    // Warm up (connections, caches of the good path, the allocator's arenas), then measure.
    for n in 0..CONCURRENCY * 10 {
        one(u64::MAX - n).await.expect("warm-up request");
    }
    let idle = rss_mib(pid);
    let watch = RssWatch::start(pid);
    let next = Arc::new(AtomicU64::new(0));
    let allowed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (one, next, allowed, failed) =
            (one.clone(), next.clone(), allowed.clone(), failed.clone());
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                match one(n).await {
                    Ok(true) => {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("{n}: {e}");
                        }
                    }
                }
            }
        });
    }
    let mut quarters = Vec::new();
    let mut reported = 0;
    while !workers.is_empty() {
        tokio::select! {
            Some(worker) = workers.join_next() => worker.expect("a flood worker panicked"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let done = next.load(Ordering::Relaxed).min(count);
        while reported < 4 && done >= count * (reported + 1) / 4 {
            reported += 1;
            quarters.push(format!("{}%: {:.0} MiB", reported * 25, rss_mib(pid)));
        }
    }
    let took = started.elapsed();
    let (peak, end) = (watch.peak_mib(), rss_mib(pid));
    eprintln!(
        "flood {name}: {count} requests in {took:.1?} ({:.0}/s); RSS idle {idle:.0} MiB, {}, \
         peak {peak:.0} MiB, growth {:.0} MiB, after {end:.0} MiB; allowed {}, failed {}",
        count as f64 / took.as_secs_f64(),
        quarters.join(", "),
        peak - idle,
        allowed.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert_eq!(
        allowed.load(Ordering::Relaxed),
        0,
        "{name}: a flood request was allowed"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{name}: requests failed");
    assert!(
        peak - idle < BOUND_MIB,
        "{name}: RSS grew {:.0} MiB, over the {BOUND_MIB} MiB bound",
        peak - idle
    );
}

async fn start(db: &TestDb, dir: &std::path::Path, issuers: Vec<String>, extra: &str) -> Gatehouse {
    let urls = StackUrls {
        base: "http://gw.test".into(),
        database: db.url.clone(),
        issuers,
    };
    Gatehouse::start(
        dir,
        &format!("{}{extra}{}", base_config(&urls), support::ROUTES),
        &[("GATEHOUSE_LOG", "warn")],
    )
    .await
}

/// Whether Envoy would let the request through.
async fn check_allowed(
    client: &mut AuthorizationClient<tonic::transport::Channel>,
    path: &str,
    header: (&str, &[u8]),
) -> Result<bool, String> {
    let answer = client
        .check(support::check::check_request("gw.test", path, &[header]))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok(answer.status.is_some_and(|s| s.code == 0))
}

async fn grpc_client(gh: &Gatehouse) -> AuthorizationClient<tonic::transport::Channel> {
    AuthorizationClient::connect(format!("http://{}", gh.grpc))
        .await
        .expect("gRPC connection")
}

/// 32 bytes from `n`, as a session token is written: every one well formed and unknown, so
/// each is a cache miss and a database lookup.
fn unknown_token(n: u64) -> String {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes[8..24].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a million requests: scripts/floods runs it"]
async fn unique_invalid_session_cookies() {
    let db = TestDb::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let gh = start(&db, dir.path(), Vec::new(), "").await;
    let client = grpc_client(&gh).await;
    flood("invalid session cookies", &gh, move |n| {
        let mut client = client.clone();
        async move {
            let cookie = format!("gatehouse={}", unknown_token(n));
            check_allowed(&mut client, "/app", ("cookie", cookie.as_bytes())).await
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a million requests: scripts/floods runs it"]
async fn bearer_tokens_naming_unknown_keys() {
    let issuer = TestIssuer::start().await;
    let db = TestDb::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let route = format!(
        "\n[[route]]\npath_prefix = \"/v1/\"\naccess = \"authenticated\"\napi = true\n\
         bearer = {{ issuers = [\"{}\"], audiences = [\"api\"] }}\n",
        issuer.issuer
    );
    let gh = start(&db, dir.path(), Vec::new(), &route).await;
    let client = grpc_client(&gh).await;
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({
            "iss": issuer.issuer, "sub": "flood", "aud": "api",
            "exp": support::issuer::now() + 3600,
        })
        .to_string(),
    );
    let fetches_before = issuer.jwks_fetches();
    let started = Instant::now();
    flood("unknown bearer kids", &gh, move |n| {
        let mut client = client.clone();
        let claims = claims.clone();
        async move {
            let header = URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"RS256","typ":"JWT","kid":"flood-{n}-{}"}}"#,
                uuid::Uuid::new_v4().simple()
            ));
            let token = format!("Bearer {header}.{claims}.{}", unknown_token(n));
            check_allowed(
                &mut client,
                "/v1/items",
                ("authorization", token.as_bytes()),
            )
            .await
        }
    })
    .await;
    let fetches = issuer.jwks_fetches() - fetches_before;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    eprintln!("JWKS fetches during the flood: {fetches} in {minutes:.1} minutes");
    assert!(
        fetches as f64 <= minutes.ceil() + 1.0,
        "unknown kids refetched the JWKS {fetches} times in {minutes:.1} minutes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a million requests: scripts/floods runs it"]
async fn login_starts_from_a_thousand_addresses() {
    let db = TestDb::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let op = OpenIdProvider::start("http://gw.test", &[]).await;
    let gh = start(
        &db,
        dir.path(),
        vec![op.issuer.clone()],
        &support::op::idp_toml("main", &op.issuer),
    )
    .await;
    let http = gh.http;
    // One kept-alive connection per worker, handed out by request number.
    let connections: Arc<Vec<tokio::sync::Mutex<KeepAlive>>> = Arc::new(
        (0..CONCURRENCY)
            .map(|_| tokio::sync::Mutex::new(KeepAlive::new(http)))
            .collect(),
    );
    let answers: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let tally = answers.clone();
    flood("login starts", &gh, move |n| {
        let (connections, tally) = (connections.clone(), tally.clone());
        async move {
            // The trusted proxy (127.0.0.1) says which of 1 000 addresses sent it.
            let client = format!("10.9.{}.{}", (n % 1000) / 250, (n % 1000) % 250 + 1);
            let mut connection = connections[(n % CONCURRENCY) as usize].lock().await;
            let (status, _) = connection
                .get(
                    "/auth/login?rd=/x",
                    &[
                        ("x-forwarded-for", &client),
                        ("accept", support::BROWSER_ACCEPT),
                    ],
                )
                .await?;
            let slot = match status {
                302 => 0,
                429 => 1,
                _ => 2,
            };
            tally[slot].fetch_add(1, Ordering::Relaxed);
            if slot == 2 {
                return Err(format!("login start answered {status}"));
            }
            // A login start is never an allow; it redirects to the IdP or is refused.
            Ok(false)
        }
    })
    .await;
    let rows = db.count("login_states").await;
    eprintln!(
        "login starts: {} redirected to the IdP, {} refused (429); {rows} login states stored",
        answers[0].load(Ordering::Relaxed),
        answers[1].load(Ordering::Relaxed),
    );
    // Per address, at most what the limit lets through (60 a minute) in a state's lifetime
    // (10 minutes): the table is bounded by the limits, not by the flood.
    assert!(rows <= 1000 * 60 * 10, "{rows} login states");
}
