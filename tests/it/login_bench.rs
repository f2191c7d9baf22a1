//! Logins per second, and gatehouse's CPU per login: a benchmark, not a test of speed (it is
//! `#[ignore]`d and asserts only that every login succeeds). BENCHMARKS.md gives the command:
//!
//! `cargo test --release --test it login_bench:: -- --ignored --nocapture`
//!
//! Each login is the whole browser flow against the real OpenID Provider fixture: `/auth/login`
//! (state stored), the OP's login page and form, the callback (code exchange, ID-token
//! verification, identity lookup, session created), sequentially from fresh browsers.

use crate::support;

use std::time::Instant;

use support::browser::Browser;
use support::{Backend, DirectStack, Gatehouse};

const LOGINS: u32 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn logins_per_second_sqlite() {
    logins_per_second(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn logins_per_second_postgres() {
    logins_per_second(Backend::Postgres).await;
}

/// User and system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0)) / 100.0
}

async fn logins_per_second(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stack = DirectStack::start(backend).await;
    let config = format!(
        "{}{}\n{}",
        stack.config.replace(
            "open_signup = true",
            "open_signup = true\nnew_users_enabled = true"
        ),
        support::op::idp_toml("main", &stack.op.issuer),
        support::ROUTES
    );
    let gh = Gatehouse::start(dir.path(), &config, &[("GATEHOUSE_LOG", "warn")]).await;
    let login_url = format!("{}/auth/login?rd=/x", stack.base);
    // The first login provisions the user and warms discovery and the IdP's keys.
    let mut browser = Browser::new();
    support::op::sign_in_at(&mut browser, &login_url, "alice").await;
    assert!(browser.cookie("127.0.0.1", "gatehouse").is_some());

    let cpu_before = cpu_seconds(gh.pid());
    let started = Instant::now();
    for _ in 0..LOGINS {
        let mut browser = Browser::new();
        support::op::sign_in_at(&mut browser, &login_url, "alice").await;
        assert!(
            browser.cookie("127.0.0.1", "gatehouse").is_some(),
            "a session cookie after every login"
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(gh.pid()) - cpu_before;
    println!(
        "{backend:?}: {LOGINS} logins in {seconds:.2} s = {:.1} logins/s (sequential, OP included); \
         gatehouse CPU {:.2} ms per login",
        f64::from(LOGINS) / seconds,
        cpu * 1000.0 / f64::from(LOGINS)
    );
}
