//! The command line, through the binary: configuration errors, `check-config`, defaults,
//! admin commands and shutdown.

use crate::support;

use std::time::Duration;

use support::processes::run_cli;
use support::{Backend, TestDb};

#[tokio::test]
async fn invalid_config_exits_1_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown key", "[server]\ngrpc_port = 1\n", "grpc_port"),
        (
            "bad listen address",
            "[server]\ngrpc_listen = \"localhost\"\n",
            "server.grpc_listen",
        ),
        (
            "bad regex",
            "[[route]]\npath_regex = \"/a(\"\naccess = \"public\"\n",
            "route[0].path_regex",
        ),
        ("no matcher", "[[route]]\naccess = \"public\"\n", "route[0]"),
        (
            "bad access",
            "[[route]]\npath_prefix = \"/\"\naccess = \"maybe\"\n",
            "route[0].access",
        ),
        ("not TOML", "[server\n", "not valid TOML"),
    ];
    for (what, text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = run_cli(
            &["check-config", "--config", path.to_str().unwrap()],
            &[],
            dir.path(),
        )
        .await;
        assert_eq!(out.code, Some(1), "{what}: {out:?}");
        assert!(
            out.stderr.contains(key),
            "{what}: stderr should name {key}: {}",
            out.stderr
        );
        // serve refuses the same config before touching anything.
        let out = run_cli(
            &["serve", "--config", path.to_str().unwrap()],
            &[],
            dir.path(),
        )
        .await;
        assert_eq!(out.code, Some(1), "{what}: serve {out:?}");
    }
    let out = run_cli(
        &["check-config"],
        &[("GATEHOUSE_SERVER_ADMIN_LISTEN", "nope")],
        dir.path(),
    )
    .await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("GATEHOUSE_SERVER_ADMIN_LISTEN"),
        "{}",
        out.stderr
    );
    let missing = run_cli(
        &["check-config", "--config", "/nonexistent.toml"],
        &[],
        dir.path(),
    )
    .await;
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("/nonexistent.toml"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn check_config_prints_effective_routes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, support::ROUTES).unwrap();
    // gatehouse.toml in the working directory is read without --config.
    let out = run_cli(
        &["check-config"],
        &[("GATEHOUSE_DATABASE_URL", "postgres://u:pw@db/x")],
        dir.path(),
    )
    .await;
    assert!(out.success, "{out:?}");
    for expected in [
        "config: gatehouse.toml",
        "database: postgres://u:***@db/x",
        "[0] path_prefix /public/ -> public",
        "[2] path_prefix /admin/ -> authenticated, any role of admin",
        "[3] path_prefix /api/ -> authenticated, api (no redirects)",
        "[4] path_prefix / -> authenticated",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("pw"), "passwords are redacted");
}

#[tokio::test]
async fn serve_without_config_uses_embedded_sqlite_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // No config file: built-in defaults (listeners moved to free ports only so this test can
    // run beside others).
    let mut child = tokio::process::Command::new(support::processes::gatehouse_bin())
        .arg("serve")
        .env("GATEHOUSE_SERVER_GRPC_LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE_SERVER_HTTP_LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE_SERVER_ADMIN_LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE_SERVER_SHUTDOWN_GRACE_SECONDS", "1")
        .env_remove("GATEHOUSE_CONFIG")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert!(
        line.starts_with("gatehouse ready grpc=127.0.0.1:"),
        "{line}"
    );
    assert!(
        dir.path().join("gatehouse.db").exists(),
        "the embedded default database"
    );
    let admin: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("admin="))
        .unwrap()
        .parse()
        .unwrap();
    let ready = support::send(admin, "GET", "/readyz", &[], None).await;
    assert_eq!(ready.status, 200);
    let health = support::send(admin, "GET", "/healthz", &[], None).await;
    assert_eq!(health.status, 200);
    let metrics = support::send(admin, "GET", "/metrics", &[], None).await;
    assert!(
        metrics.body.contains("gatehouse_checks_total"),
        "{}",
        metrics.body
    );

    let pid = child.id().unwrap().to_string();
    let kill = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

on_both_backends!(admin_commands);

async fn admin_commands(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("GATEHOUSE_DATABASE_URL", db.url.as_str())];
    let cli = |args: &'static [&'static str]| {
        let dir = dir.path().to_path_buf();
        async move { run_cli(args, &env, &dir).await }
    };
    assert!(cli(&["migrate"]).await.success);
    let out = cli(&[
        "org",
        "add",
        "Acme",
        "--domain",
        "acme.test",
        "--domain",
        "acme.example",
    ])
    .await;
    assert!(out.success, "{out:?}");
    let out = cli(&["org", "add", "Acme2", "--domain", "acme.test"]).await;
    assert_eq!(out.code, Some(1), "domain already taken: {out:?}");

    let token = cli(&["session", "create", "alice@acme.test"]).await;
    assert!(token.success, "{token:?}");
    assert_eq!(token.stdout.trim().len(), 43);
    assert!(token.stderr.contains("not enabled yet"), "{}", token.stderr);
    assert!(cli(&["user", "enable", "alice@acme.test"]).await.success);
    assert!(
        cli(&["user", "grant", "alice@acme.test", "admin"])
            .await
            .success
    );
    let list = cli(&["user", "list"]).await;
    assert!(list.stdout.contains("alice@acme.test"), "{}", list.stdout);
    assert!(list.stdout.contains("admin"), "{}", list.stdout);
    let show = cli(&["user", "show", "ALICE@acme.test"]).await;
    assert!(show.success, "{show:?}");
    assert!(show.stdout.contains("org:      Acme"), "{}", show.stdout);
    assert!(show.stdout.contains("sessions: 1 live"), "{}", show.stdout);
    let revoke = cli(&["session", "revoke", "--user", "alice@acme.test"]).await;
    assert!(revoke.stderr.contains("revoked 1 session"), "{revoke:?}");
    let show = cli(&["user", "show", "alice@acme.test"]).await;
    assert!(show.stdout.contains("sessions: 0 live"), "{}", show.stdout);

    let unknown = cli(&["user", "enable", "nobody@acme.test"]).await;
    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown.stderr.contains("nobody@acme.test"),
        "{}",
        unknown.stderr
    );
    let usage = cli(&["session", "revoke"]).await;
    assert_ne!(usage.code, Some(0), "needs --user or --all");

    let audit = cli(&["audit", "--json"]).await;
    let kinds: Vec<String> = audit
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "org_created",
            "user_created",
            "session_created",
            "user_enabled",
            "role_granted",
            "session_revoked"
        ]
    );
    let filtered = cli(&[
        "audit",
        "--kind",
        "role_granted",
        "--user",
        "alice@acme.test",
    ])
    .await;
    assert_eq!(filtered.stdout.lines().count(), 1, "{}", filtered.stdout);
    let bad = cli(&["audit", "--kind", "nope"]).await;
    assert_eq!(bad.code, Some(1));
    let future = cli(&["audit", "--since", "2999-01-01T00:00:00Z"]).await;
    assert!(future.success && future.stdout.is_empty(), "{future:?}");
}
