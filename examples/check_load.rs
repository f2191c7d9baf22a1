//! Load generator for direct `Authorization/Check` calls, used by `bench/run`.
//!
//! Two modes:
//! - `--rate N`: open loop, N checks per second: every millisecond the checks due by then are
//!   released to a pool of workers (so they arrive in 1 ms batches). Latency is measured from
//!   each check's release, queueing behind a busy worker included, so a stalled server cannot
//!   hide its delay by slowing the sender (no coordinated omission).
//! - `--concurrency N`: closed loop, N checks always in flight: the maximum rate.
//!
//! Prints one JSON object with counts, the achieved rate and latency percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tokio::sync::Mutex;

#[path = "support/check_request.rs"]
mod check_request;
use check_request::check_request;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
struct Args {
    /// gatehouse's gRPC address.
    #[arg(long, default_value = "127.0.0.1:9191")]
    addr: String,
    /// Session cookie value to send (`gatehouse=<value>`).
    #[arg(long, required_unless_present = "bearer")]
    cookie: Option<String>,
    /// A bearer token to send instead (`Authorization: Bearer <value>`).
    #[arg(long, conflicts_with = "cookie")]
    bearer: Option<String>,
    /// Open loop: checks per second.
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<u64>,
    /// Closed loop: checks in flight.
    #[arg(long)]
    concurrency: Option<usize>,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Closed loop: stop after this many checks (or `--seconds`, whichever comes first); for
    /// counting instructions per check.
    #[arg(long)]
    checks: Option<u64>,
    /// HTTP/2 connections to spread checks over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value = "/app/dashboard?tab=1")]
    path: String,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    denied: u64,
    errors: u64,
}

impl Tally {
    fn record(&mut self, started: Instant, outcome: Result<bool, ()>) {
        let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.push(us);
        match outcome {
            Ok(true) => self.ok += 1,
            Ok(false) => self.denied += 1,
            Err(()) => self.errors += 1,
        }
    }
}

async fn call(client: &mut AuthorizationClient<Channel>, req: &CheckRequest) -> Result<bool, ()> {
    match client.check(req.clone()).await {
        Ok(r) => Ok(r.into_inner().status.is_some_and(|s| s.code == 0)),
        Err(_) => Err(()),
    }
}

/// One thread: the generator must cost as little CPU as it can (it shares the machine).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let credential = match (&args.cookie, &args.bearer) {
        (_, Some(token)) => ("authorization", format!("Bearer {token}")),
        (Some(cookie), None) => ("cookie", format!("theme=dark; gatehouse={cookie}")),
        (None, None) => unreachable!("clap requires one"),
    };
    let req = Arc::new(check_request(credential, &args.path));
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = Endpoint::from_shared(format!("http://{}", args.addr))
            .expect("address")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect to gatehouse");
        clients.push(AuthorizationClient::new(channel));
    }
    // Warm up: connections, caches.
    for client in &mut clients {
        for _ in 0..200 {
            let _ = call(client, &req).await;
        }
    }

    let tally = Arc::new(Mutex::new(Tally::default()));
    let duration = Duration::from_secs(args.seconds);
    let started = Instant::now();
    match (args.rate, args.concurrency) {
        (Some(rate), _) => {
            const WORKERS: usize = 128;
            let total = rate * args.seconds;
            let mut queues = Vec::with_capacity(WORKERS);
            let mut workers = Vec::with_capacity(WORKERS);
            for w in 0..WORKERS {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
                queues.push(tx);
                let mut client = clients[w % clients.len()].clone();
                let req = req.clone();
                workers.push(tokio::spawn(async move {
                    let mut local = Tally::default();
                    while let Some(released) = rx.recv().await {
                        let outcome = call(&mut client, &req).await;
                        local.record(released, outcome);
                    }
                    local
                }));
            }
            // Every millisecond (tokio's timer granularity), release the checks due by then.
            // Timed from the actual release: the timer may fire late, which is the generator's
            // lateness, not the server's; a server that stalls still gets the backlog at once
            // and is timed from then.
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let (mut released, mut next_worker) = (0u64, 0usize);
            for ms in 1..=args.seconds * 1000 {
                tick.tick().await;
                let at = Instant::now();
                let due = (total * ms / (args.seconds * 1000)).min(total);
                while released < due {
                    let _ = queues[next_worker].send(at);
                    next_worker = (next_worker + 1) % WORKERS;
                    released += 1;
                }
            }
            drop(queues);
            let mut all = tally.lock().await;
            for w in workers {
                if let Ok(local) = w.await {
                    all.latencies_us.extend(local.latencies_us);
                    all.ok += local.ok;
                    all.denied += local.denied;
                    all.errors += local.errors;
                }
            }
        }
        (None, Some(concurrency)) => {
            let remaining = Arc::new(std::sync::atomic::AtomicU64::new(
                args.checks.unwrap_or(u64::MAX),
            ));
            let mut tasks = Vec::new();
            for i in 0..concurrency.max(1) {
                let mut client = clients[i % clients.len()].clone();
                let req = req.clone();
                let tally = tally.clone();
                let remaining = remaining.clone();
                let take = move || {
                    remaining
                        .fetch_update(
                            std::sync::atomic::Ordering::Relaxed,
                            std::sync::atomic::Ordering::Relaxed,
                            |n| n.checked_sub(1),
                        )
                        .is_ok()
                };
                tasks.push(tokio::spawn(async move {
                    let mut local = Tally::default();
                    while started.elapsed() < duration && take() {
                        let t = Instant::now();
                        let outcome = call(&mut client, &req).await;
                        local.record(t, outcome);
                    }
                    let mut all = tally.lock().await;
                    all.latencies_us.extend(local.latencies_us);
                    all.ok += local.ok;
                    all.denied += local.denied;
                    all.errors += local.errors;
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        (None, None) => panic!("give --rate or --concurrency"),
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut tally = tally.lock().await;
    tally.latencies_us.sort_unstable();
    let n = tally.latencies_us.len();
    let pct = |p: f64| -> u32 {
        if n == 0 {
            return 0;
        }
        let idx = ((p / 100.0) * (n as f64 - 1.0)).round() as usize;
        tally.latencies_us[idx.min(n - 1)]
    };
    let result = serde_json::json!({
        "mode": if args.rate.is_some() { "rate" } else { "concurrency" },
        "target_rate": args.rate,
        "concurrency": args.concurrency,
        "checks": n,
        "allowed": tally.ok,
        "denied": tally.denied,
        "errors": tally.errors,
        "seconds": elapsed,
        "achieved_rate": n as f64 / elapsed,
        "p50_us": pct(50.0),
        "p90_us": pct(90.0),
        "p99_us": pct(99.0),
        "p999_us": pct(99.9),
        "max_us": tally.latencies_us.last().copied().unwrap_or(0),
    });
    println!("{result}");
}
