//! SIGHUP: reload routes and identity providers from the config file, in place.
//!
//! Only what a check or a login reads per request is swapped (the route policy and the IdP
//! list); listeners, connections, caches and the database pool stay as they are. A new config
//! that does not load, or that needs a restart to take effect (a new bearer issuer), changes
//! nothing and says why. Changes to other sections are reported as waiting for a restart.

use std::fmt::Debug;

use super::AppState;
use crate::config::{ConfigError, Settings};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("identity providers: {0}")]
    Login(#[from] crate::broker::LoginError),
    #[error(
        "routes accept bearer tokens from {0:?}, whose keys are not being fetched; restart to add an issuer"
    )]
    NewBearerIssuers(Vec<String>),
}

/// SIGHUP, listened for from before the server says it is ready: a SIGHUP's default action
/// ends the process, so one that arrives between "ready" and the reload task must already be
/// caught.
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Installs the handler now (inside the runtime).
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP; config reload is off"))
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }
}

/// Reloads on every SIGHUP until the process ends.
pub async fn on_sighup(state: AppState, hangups: Hangups) {
    #[cfg(unix)]
    {
        let Some(mut signal) = hangups.signal else {
            return;
        };
        while signal.recv().await.is_some() {
            reload(&state);
        }
    }
    #[cfg(not(unix))]
    let _ = (state, hangups);
}

/// Reads the config file again and applies its routes and identity providers, or keeps the
/// running ones when it cannot.
pub fn reload(state: &AppState) {
    let source = state.settings.source.as_deref();
    let result = Settings::load(source, std::env::vars())
        .map_err(ReloadError::from)
        .and_then(|new| apply(state, &new).map(|()| new));
    state.metrics.record_reload(result.is_ok());
    match result {
        Ok(new) => {
            let waiting = needs_restart(&state.settings, &new);
            tracing::info!(
                routes = new.policy.routes().len(),
                idps = new.idps.len(),
                "configuration reloaded: routes and identity providers"
            );
            if !waiting.is_empty() {
                tracing::warn!(
                    sections = ?waiting,
                    "these changed sections take effect only after a restart"
                );
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration not reloaded; keeping the running one")
        }
    }
}

/// Swaps in `new`'s routes and IdPs, after everything that can fail has succeeded.
fn apply(state: &AppState, new: &Settings) -> Result<(), ReloadError> {
    let unknown = state.bearer.unknown_issuers(new);
    if !unknown.is_empty() {
        return Err(ReloadError::NewBearerIssuers(unknown));
    }
    let providers = state.broker.prepare_providers(new)?;
    state
        .gate
        .policy
        .store(std::sync::Arc::new(new.policy.clone()));
    state.broker.replace_providers(providers);
    Ok(())
}

/// The sections that differ between the running settings and `new`, other than those a
/// reload applies.
fn needs_restart(running: &Settings, new: &Settings) -> Vec<&'static str> {
    fn differs<T: Debug>(a: &T, b: &T) -> bool {
        // Debug, not PartialEq: the sections hold secrets and URLs without PartialEq, and
        // their Debug output is complete apart from redacted secret values.
        format!("{a:?}") != format!("{b:?}")
    }
    let sections: [(&'static str, bool); 13] = [
        ("server", differs(&running.server, &new.server)),
        ("database", differs(&running.database, &new.database)),
        ("session", differs(&running.session, &new.session)),
        ("login", differs(&running.login, &new.login)),
        (
            "provisioning",
            differs(&running.provisioning, &new.provisioning),
        ),
        ("admin", differs(&running.admin, &new.admin)),
        ("token", differs(&running.token, &new.token)),
        (
            "impersonation",
            differs(&running.impersonation, &new.impersonation),
        ),
        ("audit", differs(&running.audit, &new.audit)),
        ("issuer", differs(&running.issuers, &new.issuers)),
        ("app_tokens", differs(&running.app_tokens, &new.app_tokens)),
        ("client", differs(&running.clients, &new.clients)),
        ("limits", differs(&running.limits, &new.limits)),
    ];
    sections
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        Settings::from_toml(text, Vec::new()).expect("valid config")
    }

    #[test]
    fn names_the_sections_that_wait_for_a_restart() {
        let base = "[[route]]\npath_prefix = \"/\"\naccess = \"authenticated\"\n";
        let running = settings(base);
        let cases: [(&str, Vec<&str>); 4] = [
            (base, vec![]),
            (
                "[[route]]\npath_prefix = \"/x\"\naccess = \"public\"\n",
                vec![],
            ),
            (
                "[session]\ncache_ttl_seconds = 5\n[[route]]\npath_prefix = \"/\"\naccess = \"authenticated\"\n",
                vec!["session"],
            ),
            (
                "[server]\nhttp_listen = \"127.0.0.1:1\"\n[audit]\nretention_days = 1\n[[route]]\npath_prefix = \"/\"\naccess = \"authenticated\"\n",
                vec!["server", "audit"],
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(needs_restart(&running, &settings(text)), expected, "{text}");
        }
    }
}
