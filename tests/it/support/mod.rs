//! Test harness: real processes (the gatehouse binary, Envoy, the OpenID Provider fixture), a
//! fresh database per test on SQLite or PostgreSQL, an echo upstream, and HTTP clients that send
//! exactly what they are told.

pub mod admin;
pub mod browser;
pub mod check;
pub mod client;
pub mod db;
pub mod issuer;
pub mod netns;
pub mod op;
pub mod processes;
#[cfg(feature = "saml")]
pub mod saml;
#[cfg(feature = "saml")]
pub mod simplesamlphp;
pub mod smtp;
pub mod upstream;

use std::path::{Path, PathBuf};

pub use client::{Response, send};
pub use db::{Backend, TestDb};
pub use processes::{Envoy, EnvoyPorts, Gatehouse, OpenIdProvider, free_port};
pub use upstream::Upstream;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs an async test body once per backend: `on_both_backends!(name, ...)` expects an
/// `async fn name(backend: Backend)` in scope and makes `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            }
        )*
    };
}

/// The route table most tests use.
pub const ROUTES: &str = r#"
[[route]]
path_prefix = "/public/"
access = "public"

[[route]]
path_prefix = "/blocked/"
access = "deny"

[[route]]
path_prefix = "/admin/"
access = "authenticated"
roles = ["admin"]

[[route]]
path_prefix = "/api/"
access = "authenticated"
api = true

[[route]]
path_prefix = "/"
access = "authenticated"
"#;

/// What a stack's config may refer to.
pub struct StackUrls {
    /// The browser-facing origin: Envoy's listener.
    pub base: String,
    pub database: String,
    /// Issuers of the OpenID Providers started for this stack, in order.
    pub issuers: Vec<String>,
}

/// The common `[server]`, `[database]`, `[session]` and `[provisioning]` sections. Listeners
/// on port 0; revocation polling effectively off, so tests prove that revocations apply
/// through the CLI's nudge (and PostgreSQL NOTIFY), not by waiting for a poll. Sign-ups are
/// open (`open_signup`), as most tests sign in users of domains no org lists; the sign-up
/// tests turn it off.
pub fn base_config(urls: &StackUrls) -> String {
    format!(
        r#"
[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
public_url = "{base}"
trusted_proxies = ["127.0.0.1/32"]
shutdown_grace_seconds = 1

[database]
url = "{db}"
max_connections = 5

[session]
revocation_poll_ms = 600000

[provisioning]
open_signup = true
"#,
        base = urls.base,
        db = urls.database
    )
}

/// gatehouse's own HTTP listener as the browser-facing origin (no proxy in front), with an
/// OpenID Provider that redirects back to it: for tests of the login and admin pages.
pub struct DirectStack {
    /// Held for its drop, which drops the database.
    _db: TestDb,
    pub op: OpenIdProvider,
    /// `http://127.0.0.1:<port>`, where gatehouse's HTTP listener will be.
    pub base: String,
    /// [`base_config`] with the HTTP listener on `base`; add `[[idp]]`, routes and the rest.
    pub config: String,
}

impl DirectStack {
    pub async fn start(backend: Backend) -> Self {
        let db = TestDb::create(backend).await;
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let op = OpenIdProvider::start(&base, &[]).await;
        let urls = StackUrls {
            base: base.clone(),
            database: db.url.clone(),
            issuers: vec![op.issuer.clone()],
        };
        let config = base_config(&urls).replace(
            "http_listen = \"127.0.0.1:0\"",
            &format!("http_listen = \"127.0.0.1:{port}\""),
        );
        Self {
            _db: db,
            op,
            base,
            config,
        }
    }
}

/// Options for [`Stack::start`].
pub struct StackOptions {
    /// OpenID Providers to start: extra arguments for each.
    pub providers: Vec<Vec<String>>,
    /// The gatehouse config, given the URLs.
    pub config: Box<dyn Fn(&StackUrls) -> String + Send>,
    /// Which Envoy config to use (relative to the repository root).
    pub envoy_config: &'static str,
    /// Extra environment for the gatehouse process.
    pub env: Vec<(String, String)>,
    /// Text replacements applied to the Envoy config (each must match), for variants of the
    /// shipped file such as Envoy's defaults where the shipped config is stricter.
    pub envoy_edits: Vec<(&'static str, &'static str)>,
    /// Envoy's listener port, when the test must know it before the stack starts.
    pub listener_port: Option<u16>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            config: Box::new(|urls| format!("{}{ROUTES}", base_config(urls))),
            envoy_config: "envoy/envoy.yaml",
            env: Vec::new(),
            envoy_edits: Vec::new(),
            listener_port: None,
        }
    }
}

/// Database + OpenID Providers + gatehouse + echo upstream + Envoy, wired together.
pub struct Stack {
    pub db: TestDb,
    pub providers: Vec<OpenIdProvider>,
    pub gatehouse: Gatehouse,
    /// Held for its drop, which stops it.
    _upstream: Upstream,
    pub envoy: Envoy,
    /// `http://127.0.0.1:PORT`: Envoy's listener as the browser sees it.
    pub base: String,
    /// Held for its drop, which deletes the stack's files.
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, StackOptions::default()).await
    }

    pub async fn start_with(backend: Backend, options: StackOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = TestDb::create(backend).await;
        let listener_port = options.listener_port.unwrap_or_else(free_port);
        let base = format!("http://127.0.0.1:{listener_port}");
        let mut providers = Vec::new();
        for args in &options.providers {
            providers.push(OpenIdProvider::start(&base, args).await);
        }
        let urls = StackUrls {
            base: base.clone(),
            database: db.url.clone(),
            issuers: providers.iter().map(|p| p.issuer.clone()).collect(),
        };
        let env: Vec<(&str, &str)> = options
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let gatehouse = Gatehouse::start(dir.path(), &(options.config)(&urls), &env).await;
        let upstream = Upstream::start().await;
        let envoy = Envoy::start_edited(
            dir.path(),
            options.envoy_config,
            &options.envoy_edits,
            EnvoyPorts {
                listener: listener_port,
                grpc: gatehouse.grpc.port(),
                http: gatehouse.http.port(),
                upstream: upstream.addr.port(),
            },
        )
        .await;
        Self {
            db,
            providers,
            gatehouse,
            _upstream: upstream,
            envoy,
            base,
            _dir: dir,
        }
    }

    /// GET through Envoy.
    pub async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        send(self.envoy.listener, "GET", target, headers, None).await
    }
}

/// An `Accept` header as browsers send it.
pub const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
