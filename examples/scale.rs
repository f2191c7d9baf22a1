//! Scale figures for BENCHMARKS.md: a database with N users and N live sessions, the release
//! binary on it, and direct `Check` calls.
//!
//! 1. **Cold cache:** every check carries a different session, drawn at random from the N, so
//!    each one is a database lookup (p50/p99, checks/s).
//! 2. **RSS** of the gatehouse process before, and after those sessions are cached.
//! 3. **Warm:** the same sessions again, from the cache.
//! 4. **Routes:** one cached session against 1 000 routes (half prefix, half regex) matching at
//!    the end of the list, and against the 6-route example config.
//!
//! `cargo build --release && cargo run --release --example scale -- --backend postgres`
//! (see BENCHMARKS.md). Prints a Markdown report.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

#[path = "support/check_request.rs"]
mod check_request;
use check_request::check_request;

#[derive(Parser)]
struct Args {
    /// `postgres` or `sqlite`.
    #[arg(long, default_value = "postgres")]
    backend: String,
    /// A PostgreSQL server where the benchmark may create the database `gatehouse_scale`.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Users, and as many live sessions.
    #[arg(long, default_value_t = 1_000_000)]
    users: u32,
    /// Distinct sessions checked with a cold cache (they are then cached, for the RSS figure).
    #[arg(long, default_value_t = 100_000)]
    cold_checks: usize,
    /// Checks in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds per route measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value = "target/release/gatehouse")]
    binary: String,
}

/// The session token of user `i`: 43 URL-safe characters, like a real one.
fn token(i: u32) -> String {
    format!("{i:A>43}")
}

fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn user_id(i: u32) -> Uuid {
    Uuid::from_u128(0x5ca1e000_0000_4000_8000_000000000000 | u128::from(i))
}

const BATCH: u32 = 5_000;

async fn fill_postgres(url: &str, users: u32, now: i64) {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let mut start = 0;
    while start < users {
        let end = (start + BATCH).min(users);
        let ids: Vec<Uuid> = (start..end).map(user_id).collect();
        let emails: Vec<String> = (start..end)
            .map(|i| format!("user{i}@scale.test"))
            .collect();
        let hashes: Vec<String> = (start..end).map(|i| token_hash(&token(i))).collect();
        sqlx::query(
            "INSERT INTO users (id, email, enabled, created_at, updated_at) \
             SELECT id, email, TRUE, $3, $3 FROM UNNEST($1::uuid[], $2::text[]) AS u(id, email)",
        )
        .bind(&ids)
        .bind(&emails)
        .bind(now)
        .execute(&pool)
        .await
        .expect("insert users");
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, idle_expires_at, \
             absolute_expires_at) \
             SELECT h, u, $3, $3, $3 + 86400, $3 + 604800 \
             FROM UNNEST($1::text[], $2::uuid[]) AS s(h, u)",
        )
        .bind(&hashes)
        .bind(&ids)
        .bind(now)
        .execute(&pool)
        .await
        .expect("insert sessions");
        start = end;
    }
    sqlx::query("ANALYZE")
        .execute(&pool)
        .await
        .expect("analyze");
    pool.close().await;
}

async fn fill_sqlite(url: &str, users: u32, now: i64) {
    let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
    let mut start = 0;
    while start < users {
        let end = (start + BATCH).min(users);
        let mut tx = pool.begin().await.expect("begin");
        for chunk in (start..end).collect::<Vec<_>>().chunks(1000) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO users (id, email, enabled, created_at, updated_at) ",
            );
            q.push_values(chunk, |mut b, &i| {
                b.push_bind(user_id(i))
                    .push_bind(format!("user{i}@scale.test"))
                    .push_bind(true)
                    .push_bind(now)
                    .push_bind(now);
            });
            q.build().execute(&mut *tx).await.expect("insert users");
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, \
                 idle_expires_at, absolute_expires_at) ",
            );
            q.push_values(chunk, |mut b, &i| {
                b.push_bind(token_hash(&token(i)))
                    .push_bind(user_id(i))
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(now + 86_400)
                    .push_bind(now + 604_800);
            });
            q.build().execute(&mut *tx).await.expect("insert sessions");
        }
        tx.commit().await.expect("commit");
        start = end;
    }
    sqlx::query("ANALYZE")
        .execute(&pool)
        .await
        .expect("analyze");
    pool.close().await;
}

/// A running `gatehouse serve`.
struct Server {
    child: Child,
    grpc: String,
}

impl Server {
    fn start(binary: &str, dir: &std::path::Path, database: &str, routes: &str) -> Self {
        let config = dir.join("scale.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
                 admin_listen = \"127.0.0.1:0\"\nshutdown_delay_seconds = 0\n\
                 [database]\nurl = \"{database}\"\nmax_connections = 16\n\
                 [session]\ncache_max_entries = 1000000\ncache_ttl_seconds = 3600\n\
                 revocation_poll_ms = 0\n{routes}"
            ),
        )
        .expect("write config");
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .env("GATEHOUSE_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e} (cargo build --release first)"));
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        let grpc = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="))
            .unwrap_or_else(|| panic!("not ready: {line:?}"))
            .to_owned();
        Self { child, grpc }
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kib / 1024.0
    }

    /// User and system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("proc stat");
        let after_comm = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime), counted from after the command name.
        let ticks: f64 =
            fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
        ticks / 100.0
    }

    async fn clients(&self, n: usize) -> Vec<AuthorizationClient<Channel>> {
        let mut clients = Vec::new();
        for _ in 0..n {
            let channel = Endpoint::from_shared(format!("http://{}", self.grpc))
                .expect("address")
                .tcp_nodelay(true)
                .connect()
                .await
                .expect("connect");
            clients.push(AuthorizationClient::new(channel));
        }
        clients
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    latencies_us: Vec<u32>,
    allowed: usize,
    seconds: f64,
    cpu_seconds: f64,
}

impl Run {
    fn pct(&self, p: f64) -> f64 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0.0;
        }
        let i = ((p / 100.0) * (n as f64 - 1.0)).round() as usize;
        f64::from(self.latencies_us[i.min(n - 1)]) / 1000.0
    }

    fn row(&self, what: &str) -> String {
        let n = self.latencies_us.len();
        format!(
            "| {what} | {n} | {} | {:.0} | {:.3} | {:.3} | {:.1} |",
            self.allowed,
            n as f64 / self.seconds,
            self.pct(50.0),
            self.pct(99.0),
            self.cpu_seconds * 1e6 / n.max(1) as f64,
        )
    }
}

/// Sends `requests` (each once, in order) with `concurrency` in flight, or, with `for_time`,
/// cycles through them until it is up.
async fn drive(
    server: &Server,
    requests: Vec<CheckRequest>,
    concurrency: usize,
    for_time: Option<Duration>,
) -> Run {
    let clients = server.clients(4).await;
    let requests = Arc::new(requests);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let mut client = clients[w % clients.len()].clone();
        let (requests, next) = (requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = (Vec::new(), 0usize);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let req = match for_time {
                    Some(limit) if started.elapsed() < limit => &requests[i % requests.len()],
                    Some(_) => break,
                    None if i < requests.len() => &requests[i],
                    None => break,
                };
                let t = Instant::now();
                let allowed = client
                    .check(req.clone())
                    .await
                    .is_ok_and(|r| r.into_inner().status.is_some_and(|s| s.code == 0));
                local
                    .0
                    .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                local.1 += usize::from(allowed);
            }
            local
        }));
    }
    let mut run = Run {
        latencies_us: Vec::new(),
        allowed: 0,
        seconds: 0.0,
        cpu_seconds: 0.0,
    };
    for t in tasks {
        let (lat, allowed) = t.await.expect("worker");
        run.latencies_us.extend(lat);
        run.allowed += allowed;
    }
    run.seconds = started.elapsed().as_secs_f64();
    run.cpu_seconds = server.cpu_seconds() - cpu_before;
    run.latencies_us.sort_unstable();
    run
}

/// Fisher-Yates with xorshift64: a fixed, dependency-free order for a given seed.
fn shuffle(items: &mut [u32], seed: u64) {
    let mut x = seed | 1;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = usize::try_from(x % (i as u64 + 1)).unwrap_or(0);
        items.swap(i, j);
    }
}

/// One cached session's check of `path`, over and over with `--concurrency` in flight.
async fn one_session(server: &Server, args: &Args, seconds: Duration, path: &str) -> Run {
    drive(
        server,
        vec![session_check(1, path)],
        args.concurrency,
        Some(seconds),
    )
    .await
}

fn session_check(i: u32, path: &str) -> CheckRequest {
    check_request(("cookie", format!("gatehouse={}", token(i))), path)
}

fn many_routes() -> String {
    let mut routes = String::new();
    for i in 0..500 {
        routes.push_str(&format!(
            "[[route]]\npath_prefix = \"/svc{i}/\"\naccess = \"authenticated\"\nroles = [\"r{i}\"]\n"
        ));
    }
    for i in 0..499 {
        routes.push_str(&format!(
            "[[route]]\npath_regex = \"/r{i}/[0-9]+/items(/[a-z]+)?\"\naccess = \"authenticated\"\n"
        ));
    }
    routes.push_str("[[route]]\npath_prefix = \"/\"\naccess = \"authenticated\"\n");
    routes
}

const FEW_ROUTES: &str = "[[route]]\npath_prefix = \"/public/\"\naccess = \"public\"\n\
    [[route]]\npath_prefix = \"/blocked/\"\naccess = \"deny\"\n\
    [[route]]\npath_prefix = \"/admin/\"\naccess = \"authenticated\"\nroles = [\"admin\"]\n\
    [[route]]\npath_prefix = \"/api/\"\naccess = \"authenticated\"\napi = true\n\
    [[route]]\npath_regex = \"/r1/[0-9]+/items(/[a-z]+)?\"\naccess = \"authenticated\"\n\
    [[route]]\npath_prefix = \"/\"\naccess = \"authenticated\"\n";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("tempdir");
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time");
    let database = match args.backend.as_str() {
        "postgres" => {
            let admin = sqlx::PgPool::connect(&args.postgres)
                .await
                .expect("connect");
            sqlx::query("DROP DATABASE IF EXISTS gatehouse_scale WITH (FORCE)")
                .execute(&admin)
                .await
                .expect("drop");
            sqlx::query("CREATE DATABASE gatehouse_scale")
                .execute(&admin)
                .await
                .expect("create");
            let mut url = url::Url::parse(&args.postgres).expect("URL");
            url.set_path("/gatehouse_scale");
            url.to_string()
        }
        "sqlite" => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("scale.db").display()
        ),
        other => panic!("unknown backend {other}"),
    };
    let store = gatehouse::store::Store::connect(&database, 2)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store.close().await;
    let t = Instant::now();
    match args.backend.as_str() {
        "postgres" => fill_postgres(&database, args.users, now).await,
        _ => fill_sqlite(&database, args.users, now).await,
    }
    let fill_seconds = t.elapsed().as_secs_f64();

    let server = Server::start(&args.binary, dir.path(), &database, FEW_ROUTES);
    let mut order: Vec<u32> = (0..args.users).collect();
    shuffle(&mut order, now as u64);
    order.truncate(args.cold_checks);
    let cold: Vec<CheckRequest> = order.iter().map(|&i| session_check(i, "/app/x")).collect();
    // Warm the connections (one session, cached after the first call).
    let _ = drive(&server, vec![session_check(0, "/app/x"); 2000], 4, None).await;
    let rss_before = server.rss_mib();
    let cold_run = drive(&server, cold.clone(), args.concurrency, None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss_mib();
    let warm_run = drive(&server, cold, args.concurrency, None).await;
    let seconds = Duration::from_secs(args.seconds);
    let few = one_session(&server, &args, seconds, "/r1/42/items/x").await;
    drop(server);
    let server = Server::start(&args.binary, dir.path(), &database, &many_routes());
    let _ = drive(&server, vec![session_check(1, "/x"); 2000], 4, None).await;
    let many_regex = one_session(&server, &args, seconds, "/r498/42/items/x").await;
    let many_fallthrough = one_session(&server, &args, seconds, "/nothing/here").await;
    drop(server);

    println!(
        "{} with {} users and {} live sessions (filled in {fill_seconds:.0} s); {} checks in flight, gatehouse release build with default worker threads.\n",
        args.backend, args.users, args.users, args.concurrency
    );
    println!(
        "| run | checks | allowed | checks/s | p50 (ms) | p99 (ms) | gatehouse CPU per check (µs) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (run, what) in [
        (
            &cold_run,
            "cold cache: every check a different session (database lookup)",
        ),
        (&warm_run, "the same sessions again (cached)"),
        (&few, "6 routes, one cached session, regex route"),
        (
            &many_regex,
            "1 000 routes, one cached session, matching the last regex route",
        ),
        (
            &many_fallthrough,
            "1 000 routes, one cached session, no route but the catch-all",
        ),
    ] {
        println!("{}", run.row(what));
    }
    println!(
        "\nRSS: {rss_before:.1} MiB before the cold run, {rss_after:.1} MiB with {} sessions cached ({:.0} bytes per session).",
        args.cold_checks,
        (rss_after - rss_before) * 1024.0 * 1024.0 / args.cold_checks as f64
    );
}
