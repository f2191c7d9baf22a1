//! `gatehouse serve`.

use std::io::Write;

use super::CliError;
use crate::config::Settings;
use crate::server::{Server, Shutdown};

pub fn run(settings: Settings) -> Result<(), CliError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("gatehouse");
    if let Some(threads) = settings.server.worker_threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.build().map_err(CliError::Runtime)?;
    runtime.block_on(async {
        let server = Server::build(settings).await?;
        let addrs = server.local_addrs();
        tracing::info!(grpc = %addrs.grpc, http = %addrs.http, admin = %addrs.admin, "gatehouse listening");
        // One machine-readable line, for scripts and tests that listen on port 0.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "gatehouse ready grpc={} http={} admin={}",
            addrs.grpc, addrs.http, addrs.admin
        );
        let _ = stdout.flush();
        drop(stdout);
        server.run(shutdown_signal()).await?;
        Ok(())
    })
}

/// SIGTERM (Kubernetes, systemd): drain with the delay; Ctrl-C: at once.
async fn shutdown_signal() -> Shutdown {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => Shutdown::Now,
        _ = term => Shutdown::Drain,
    }
}
