//! Load generator for password sign-ins through the multi-step API, used by
//! `bench/local-signin`; also measures the argon2 cost of one verification.
//!
//! - `--hash-cost N`: N argon2id verifications one after another on this thread, with the
//!   parameters gatehouse stores (no server involved): milliseconds per verification.
//! - otherwise: `--concurrency` loops, each `POST /auth/v1/init` then `POST
//!   /auth/v1/authenticate` with the password, for `--seconds`. Prints one JSON object with the
//!   sign-ins completed, their rate and latency percentiles.

use std::time::{Duration, Instant};

use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use secrecy::SecretString;
use tokio::net::TcpStream;

/// The allocator gatehouse runs with: argon2's 19 MiB block is reused instead of mapped and
/// faulted in again for every verification, as it is in the server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// gatehouse's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    #[arg(long, default_value = "bench@bench.test")]
    email: String,
    #[arg(long, default_value = "violet-harbor-cactus-93")]
    password: String,
    #[arg(long, default_value = "cli")]
    client_id: String,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Only time argon2: this many verifications.
    #[arg(long)]
    hash_cost: Option<u32>,
}

async fn post(addr: &str, path: &str, token: Option<&str>, body: String) -> (u16, Option<String>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::post(path)
        .header("host", addr)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("x-session-token", t);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let token = resp
        .headers()
        .get("x-session-token")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let _ = resp.into_body().collect().await;
    (status, token)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    if let Some(n) = args.hash_cost {
        let pool = gatehouse::local::password::PasswordPool::new().expect("pool");
        let hash = pool
            .hash(SecretString::from(args.password.clone()))
            .await
            .expect("hash");
        let started = Instant::now();
        for _ in 0..n {
            let v = pool
                .verify(
                    SecretString::from(args.password.clone()),
                    Some(hash.clone()),
                )
                .await
                .expect("verify");
            assert!(v.matches);
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(n);
        println!("{{\"verifications\": {n}, \"ms_per_verification\": {ms:.2}}}");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut loops = Vec::new();
    for _ in 0..args.concurrency {
        let addr = args.addr.clone();
        let init =
            serde_json::json!({"email": args.email, "client_id": args.client_id}).to_string();
        let step = serde_json::json!({"method": "password", "password": args.password}).to_string();
        loops.push(tokio::spawn(async move {
            let (mut latencies, mut failed) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let started = Instant::now();
                let (status, token) = post(&addr, "/auth/v1/init", None, init.clone()).await;
                let ok = status == 200
                    && post(
                        &addr,
                        "/auth/v1/authenticate",
                        token.as_deref(),
                        step.clone(),
                    )
                    .await
                    .0 == 200;
                if ok {
                    latencies
                        .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                } else {
                    failed += 1;
                }
            }
            (latencies, failed)
        }));
    }
    let started = Instant::now();
    let (mut all, mut failed) = (Vec::new(), 0);
    for l in loops {
        let (lat, f) = l.await.expect("loop");
        all.extend(lat);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "{{\"sign_ins\": {}, \"failed\": {failed}, \"per_second\": {:.1}, \"p50_ms\": {:.1}, \"p99_ms\": {:.1}}}",
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
}
