//! SIGHUP: routes and identity providers reload in place, on connections that stay open; a
//! config that does not load, or needs a restart, changes nothing and the log says why.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use support::{Backend, DirectStack, Gatehouse, send};
use tokio::net::TcpStream;

on_both_backends!(routes_and_idps_reload_on_sighup);

/// A SIGHUP's default action ends a process: the handler must be in place before `serve` says
/// it is ready, or a reload sent right then (a config-management tool, a test) kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_right_after_ready_reloads_instead_of_killing() {
    for _ in 0..5 {
        let stack = DirectStack::start(Backend::Sqlite).await;
        let dir = tempfile::tempdir().unwrap();
        let gh = Gatehouse::start(
            dir.path(),
            &format!("{}{}", stack.config, routes("public")),
            &[],
        )
        .await;
        gh.signal("HUP").await;
        for _ in 0..100 {
            if reloads(&gh, "success").await > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(reloads(&gh, "success").await, 1, "{}", gh.logs());
    }
}

/// One HTTP/1.1 connection, kept open across reloads.
struct KeptConnection {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: String,
}

impl KeptConnection {
    async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        Self {
            sender,
            host: addr.to_string(),
        }
    }

    /// The status `/authz` answers for `path`, as an API client.
    async fn status(&mut self, path: &str) -> u16 {
        let request = Request::get(format!("/authz{path}"))
            .header("host", &self.host)
            .header("accept", "application/json")
            .body(Empty::new())
            .expect("request");
        self.sender
            .ready()
            .await
            .expect("the connection is still open");
        let response =
            tokio::time::timeout(Duration::from_secs(10), self.sender.send_request(request))
                .await
                .expect("answered in time")
                .expect("answered on the kept connection");
        let status = response.status().as_u16();
        response.into_body().collect().await.expect("body");
        status
    }
}

fn routes(open_access: &str) -> String {
    format!(
        "\n[[route]]\npath_prefix = \"/open/\"\naccess = \"{open_access}\"\n\n\
         [[route]]\npath_prefix = \"/\"\naccess = \"authenticated\"\n"
    )
}

async fn reloads(gh: &Gatehouse, result: &str) -> u64 {
    let body = send(gh.admin, "GET", "/metrics", &[], None).await.body;
    let line = format!("gatehouse_config_reloads_total{{result=\"{result}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |v| v.parse().expect("a count"))
}

/// Writes `config`, sends SIGHUP, and waits until the reload with `result` is counted.
async fn reload(gh: &Gatehouse, config: &str, result: &str) {
    std::fs::write(&gh.config, config).expect("write config");
    let before = reloads(gh, result).await;
    gh.signal("HUP").await;
    for _ in 0..100 {
        if reloads(gh, result).await > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {result} reload counted; log:\n{}", gh.logs());
}

async fn routes_and_idps_reload_on_sighup(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let stack = DirectStack::start(backend).await;
    let (common, op) = (&stack.config, &stack.op);
    let gh = Gatehouse::start(dir.path(), &format!("{common}{}", routes("public")), &[]).await;
    let mut kept = KeptConnection::open(gh.http).await;
    assert_eq!(kept.status("/open/x").await, 200);
    let login = send(gh.http, "GET", "/auth/login?rd=/x", &[], None).await;
    assert_eq!(login.status, 503, "no IdP configured yet: {login:?}");

    // Routes and an IdP arrive with SIGHUP; the open connection sees the new routes.
    let idp = support::op::idp_toml("main", &op.issuer);
    reload(&gh, &format!("{common}{idp}{}", routes("deny")), "success").await;
    assert_eq!(kept.status("/open/x").await, 403, "the new route applies");
    let login = send(gh.http, "GET", "/auth/login?rd=/x", &[], None).await;
    assert_eq!(login.status, 302, "the new IdP serves logins: {login:?}");
    assert!(
        login.location().is_some_and(|l| l.starts_with(&op.issuer)),
        "{login:?}"
    );

    // A config that does not load keeps the running one, and the log says why.
    let broken = format!("{common}{idp}[[route]]\npath_regex = \"(\"\naccess = \"public\"\n");
    reload(&gh, &broken, "failure").await;
    assert_eq!(kept.status("/open/x").await, 403, "the old routes stay");
    assert!(
        gh.logs().contains("configuration not reloaded") && gh.logs().contains("path_regex"),
        "{}",
        gh.logs()
    );
    let unknown_key = format!("{common}{idp}{}[route_typo]\n", routes("public"));
    reload(&gh, &unknown_key, "failure").await;
    assert_eq!(kept.status("/open/x").await, 403);

    // A new bearer issuer needs its keys fetched from start-up: refused, with the reason.
    let bearer = format!(
        "{common}{idp}[[route]]\npath_prefix = \"/open/\"\naccess = \"authenticated\"\n\
         bearer = {{ issuers = [\"https://new-issuer.test\"], audiences = [\"api\"] }}\n"
    );
    reload(&gh, &bearer, "failure").await;
    assert!(
        gh.logs().contains("restart to add an issuer"),
        "{}",
        gh.logs()
    );
    assert_eq!(kept.status("/open/x").await, 403);

    // Back to public; a changed section that needs a restart is named, the rest applies.
    let with_session = format!(
        "{}{idp}{}",
        common.replace("[session]\n", "[session]\ncache_ttl_seconds = 7\n"),
        routes("public")
    );
    reload(&gh, &with_session, "success").await;
    assert_eq!(kept.status("/open/x").await, 200);
    assert!(
        gh.logs().contains("take effect only after a restart")
            && gh.logs().contains(r#"sections=["session"]"#),
        "{}",
        gh.logs()
    );

    // The IdP goes away again: logins say so instead of using a stale provider.
    reload(&gh, &format!("{common}{}", routes("public")), "success").await;
    let login = send(gh.http, "GET", "/auth/login?rd=/x", &[], None).await;
    assert_eq!(login.status, 503, "{login:?}");
    assert_eq!(
        kept.status("/open/x").await,
        200,
        "still the same connection"
    );
}
