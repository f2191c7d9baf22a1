//! The `[[client]]` registry, redirect URI matching and the validation of both: pure,
//! table-tested.
//!
//! Redirect URIs match by exact string comparison (RFC 9700 §4.1.3: no prefix, pattern or
//! normalization games), with one exception: a native app's loopback URI
//! (`http://127.0.0.1/…`, `http://[::1]/…`) matches the same URI on any port, because the app
//! listens on a port the operating system picks at run time (RFC 8252 §7.3). `localhost` is not
//! loopback here: it may resolve elsewhere, and RFC 8252 §8.3 advises against it.

use std::collections::HashMap;
use std::sync::Arc;

use url::Url;

use super::config::{AppTokensConfig, ClientConfig, ClientKind};
use crate::config::error::ConfigError;

/// The loopback prefixes a native app's redirect URI may use, with any port.
const LOOPBACK_PREFIXES: [&str; 2] = ["http://127.0.0.1", "http://[::1]"];

/// One registered app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppClient {
    pub id: String,
    pub kind: ClientKind,
    pub redirect_uris: Vec<String>,
    /// The access token's `aud`.
    pub audience: String,
    /// Scopes it may request.
    pub scopes: Vec<String>,
}

impl AppClient {
    /// Whether `presented` is one of this client's redirect URIs (see the module docs).
    pub fn redirect_uri_matches(&self, presented: &str) -> bool {
        self.redirect_uris.iter().any(|registered| {
            registered == presented
                || (self.kind == ClientKind::Native && loopback_any_port(registered, presented))
        })
    }

    /// Whether every requested scope is one this client may ask for.
    pub fn allows_scopes(&self, requested: &[String]) -> bool {
        requested.iter().all(|s| self.scopes.contains(s))
    }
}

/// Every configured app, by `client_id`.
#[derive(Debug, Clone, Default)]
pub struct AppClients {
    by_id: HashMap<String, Arc<AppClient>>,
    /// Origins of the `spa` clients' redirect URIs: the only ones CORS lets read token answers.
    cors_origins: Vec<String>,
}

impl AppClients {
    /// The registry of validated `[[client]]` sections; `default_audience` is `[token] audience`.
    pub fn new(configs: &[ClientConfig], default_audience: &str) -> Self {
        let mut cors_origins: Vec<String> = configs
            .iter()
            .filter(|c| c.kind == ClientKind::Spa)
            .flat_map(|c| c.redirect_uris.iter())
            .filter_map(|uri| Url::parse(uri).ok())
            .map(|url| url.origin().ascii_serialization())
            .filter(|origin| origin != "null")
            .collect();
        cors_origins.sort();
        cors_origins.dedup();
        let by_id = configs
            .iter()
            .map(|c| {
                let client = AppClient {
                    id: c.client_id.clone(),
                    kind: c.kind,
                    redirect_uris: c.redirect_uris.clone(),
                    audience: c
                        .audience
                        .clone()
                        .unwrap_or_else(|| default_audience.to_owned()),
                    scopes: c.scopes.clone(),
                };
                (c.client_id.clone(), Arc::new(client))
            })
            .collect();
        Self {
            by_id,
            cors_origins,
        }
    }

    pub fn get(&self, client_id: &str) -> Option<&Arc<AppClient>> {
        self.by_id.get(client_id)
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether a browser page of this origin may read `/auth/token` and `/auth/revoke`
    /// answers: only the origins of registered `spa` redirect URIs.
    pub fn cors_allows(&self, origin: &str) -> bool {
        self.cors_origins.iter().any(|o| o == origin)
    }
}

/// `(prefix, rest)` of a loopback URI, `rest` being what follows the port: the path, query.
fn split_loopback(uri: &str) -> Option<(&'static str, &str)> {
    LOOPBACK_PREFIXES.iter().find_map(|prefix| {
        let after = uri.strip_prefix(prefix)?;
        let rest = match after.strip_prefix(':') {
            Some(port_and_rest) => {
                let digits = port_and_rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(port_and_rest.len());
                let port: u16 = port_and_rest.get(..digits)?.parse().ok()?;
                if port == 0 {
                    return None;
                }
                port_and_rest.get(digits..)?
            }
            None => after,
        };
        // The authority must end here: `http://127.0.0.1.evil.test/` and
        // `http://127.0.0.1:80@evil.test/` are other hosts.
        (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
            .then_some((*prefix, rest))
    })
}

/// `registered` is a loopback URI and `presented` is the same URI with any port.
fn loopback_any_port(registered: &str, presented: &str) -> bool {
    match (split_loopback(registered), split_loopback(presented)) {
        (Some((host_a, rest_a)), Some((host_b, rest_b))) => host_a == host_b && rest_a == rest_b,
        _ => false,
    }
}

/// Why a registered redirect URI is not acceptable for this kind of client.
fn check_redirect_uri(kind: ClientKind, uri: &str) -> Result<(), String> {
    if uri.contains('#') {
        return Err(format!("{uri:?} must not have a fragment"));
    }
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{uri:?} contains spaces or control characters"));
    }
    let url = Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{uri:?} must not carry user information"));
    }
    match url.scheme() {
        "https" if url.host_str().is_some() => Ok(()),
        "https" => Err(format!("{uri:?} needs a host")),
        "http" if split_loopback(uri).is_some() => Ok(()),
        "http" if url.host_str() == Some("localhost") => Err(format!(
            "{uri:?}: write http://127.0.0.1 or http://[::1] (localhost is not treated as \
             loopback, RFC 8252 §8.3)"
        )),
        "http" => Err(format!(
            "{uri:?}: http is only allowed on the loopback addresses 127.0.0.1 and [::1]; use https"
        )),
        scheme if kind == ClientKind::Native => {
            // A private-use scheme is a reversed domain name the app owns (RFC 8252 §7.1); it
            // also rules out javascript:, data:, file: and the like.
            if scheme.contains('.') {
                Ok(())
            } else {
                Err(format!(
                    "{uri:?}: a native app's custom scheme must be a reversed domain name it \
                     owns, such as com.example.app:/callback"
                ))
            }
        }
        _ => Err(format!(
            "{uri:?}: an spa's redirect URIs must be https (or http on 127.0.0.1 or [::1])"
        )),
    }
}

/// RFC 6749 `scope-token`: visible ASCII except space, `"` and `\`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// Validates `[[client]]` and `[app_tokens]` (called by [`crate::config::Settings`], which
/// also checks what apps need of other sections).
pub fn validate(clients: &[ClientConfig], app_tokens: &AppTokensConfig) -> Result<(), ConfigError> {
    if app_tokens.access_token_ttl_seconds == 0 || app_tokens.access_token_ttl_seconds > 86_400 {
        return Err(ConfigError::invalid(
            "app_tokens.access_token_ttl_seconds",
            "must be between 1 and 86400 (access tokens cannot be revoked: keep them short)",
        ));
    }
    if app_tokens.refresh_token_ttl_seconds == 0 {
        return Err(ConfigError::invalid(
            "app_tokens.refresh_token_ttl_seconds",
            "must be greater than 0",
        ));
    }
    if app_tokens.code_ttl_seconds == 0 || app_tokens.code_ttl_seconds > 600 {
        return Err(ConfigError::invalid(
            "app_tokens.code_ttl_seconds",
            "must be between 1 and 600 (RFC 6749 §4.1.2: codes are short-lived)",
        ));
    }
    let mut ids = HashMap::new();
    for (i, client) in clients.iter().enumerate() {
        let key = |field: &str| format!("client[{i}].{field}");
        let id = &client.client_id;
        if id.is_empty() || id.len() > 255 || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ConfigError::invalid(
                key("client_id"),
                "must be 1 to 255 visible ASCII characters, without spaces",
            ));
        }
        if let Some(prev) = ids.insert(id.as_str(), i) {
            return Err(ConfigError::invalid(
                key("client_id"),
                format!("{id:?} is already used by client[{prev}]"),
            ));
        }
        if client.redirect_uris.is_empty() {
            return Err(ConfigError::invalid(
                key("redirect_uris"),
                "must list at least one redirect URI",
            ));
        }
        for uri in &client.redirect_uris {
            check_redirect_uri(client.kind, uri)
                .map_err(|message| ConfigError::invalid(key("redirect_uris"), message))?;
        }
        if client.audience.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::invalid(key("audience"), "must not be empty"));
        }
        if let Some(bad) = client.scopes.iter().find(|s| !is_scope_token(s)) {
            return Err(ConfigError::invalid(
                key("scopes"),
                format!("{bad:?} is not a scope (visible ASCII, no spaces or quotes)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn client(kind: ClientKind, uris: &[&str]) -> AppClient {
        AppClient {
            id: "app".into(),
            kind,
            redirect_uris: uris.iter().map(|u| (*u).to_owned()).collect(),
            audience: "api".into(),
            scopes: vec!["read".into(), "write".into()],
        }
    }

    #[test]
    fn redirect_uri_table() {
        use ClientKind::{Native, Spa};
        let native = client(
            Native,
            &[
                "http://127.0.0.1/callback",
                "http://[::1]:8400/cb?x=1",
                "com.example.app:/oauth2redirect",
                "https://app.example.com/cb",
            ],
        );
        let spa = client(
            Spa,
            &["http://127.0.0.1:3000/cb", "https://spa.example.com/cb"],
        );
        let cases: &[(&AppClient, &str, bool)] = &[
            // exact
            (&native, "http://127.0.0.1/callback", true),
            (&native, "com.example.app:/oauth2redirect", true),
            (&native, "https://app.example.com/cb", true),
            (&spa, "https://spa.example.com/cb", true),
            (&spa, "http://127.0.0.1:3000/cb", true),
            // native loopback: any port, same path and query
            (&native, "http://127.0.0.1:51234/callback", true),
            (&native, "http://127.0.0.1:1/callback", true),
            (&native, "http://[::1]:1234/cb?x=1", true),
            (&native, "http://[::1]/cb?x=1", true),
            (&native, "http://127.0.0.1:0/callback", false),
            (&native, "http://127.0.0.1:70000/callback", false),
            (&native, "http://127.0.0.1:51234/callback/", false),
            (&native, "http://127.0.0.1:51234/callbackx", false),
            (&native, "http://127.0.0.1:51234/callback?x=1", false),
            (&native, "http://[::1]:1234/cb", false),
            (&native, "http://[::1]:1234/callback", false),
            (&native, "http://127.0.0.1:51234/cb?x=1", false),
            (&native, "http://localhost:51234/callback", false),
            (&native, "http://localhost/callback", false),
            (&native, "https://127.0.0.1:51234/callback", false),
            (&native, "http://127.0.0.1.evil.test/callback", false),
            (&native, "http://127.0.0.1:80@evil.test/callback", false),
            (&native, "http://127.0.0.1:51234#/callback", false),
            (&native, "http://127.0.0.1:51234/callback#x", false),
            (&native, "http://127.0.0.2:51234/callback", false),
            // no prefix, case or normalization games
            (&native, "https://app.example.com/cb/../cb", false),
            (&native, "https://app.example.com/cb?next=x", false),
            (&native, "HTTPS://app.example.com/cb", false),
            (&native, "https://app.example.com/c%62", false),
            (&native, "https://app.example.com:443/cb", false),
            (&native, "com.example.app:/oauth2redirect/x", false),
            (&native, "com.example.evil:/oauth2redirect", false),
            (&native, "", false),
            // spa: loopback is exact, port included
            (&spa, "http://127.0.0.1:3001/cb", false),
            (&spa, "http://127.0.0.1/cb", false),
            (&spa, "https://spa.example.com/cb2", false),
            (&spa, "https://evil.example.com/cb", false),
        ];
        for (client, presented, want) in cases {
            assert_eq!(
                client.redirect_uri_matches(presented),
                *want,
                "{:?} {presented:?}",
                client.kind
            );
        }
    }

    #[test]
    fn scopes_must_be_registered() {
        let c = client(ClientKind::Spa, &["https://a.test/cb"]);
        assert!(c.allows_scopes(&[]));
        assert!(c.allows_scopes(&["read".into()]));
        assert!(c.allows_scopes(&["read".into(), "write".into()]));
        assert!(!c.allows_scopes(&["read".into(), "admin".into()]));
    }

    #[test]
    fn cors_origins_are_the_spa_redirect_origins() {
        let text = r#"
[token]
encryption_key_env = "K"
[[client]]
client_id = "spa"
kind = "spa"
redirect_uris = ["https://spa.example.com/app/cb", "http://127.0.0.1:3000/cb"]
[[client]]
client_id = "cli"
kind = "native"
redirect_uris = ["http://127.0.0.1/cb", "https://native.example.com/cb"]
"#;
        let s = Settings::from_toml(text, Vec::new()).expect("valid");
        let clients = AppClients::new(&s.clients, &s.token.audience);
        assert!(clients.cors_allows("https://spa.example.com"));
        assert!(clients.cors_allows("http://127.0.0.1:3000"));
        assert!(!clients.cors_allows("http://127.0.0.1"));
        assert!(!clients.cors_allows("https://native.example.com"));
        assert!(!clients.cors_allows("https://spa.example.com:8443"));
        assert!(!clients.cors_allows("null"));
        assert_eq!(
            clients.get("spa").map(|c| c.audience.as_str()),
            Some("internal"),
            "[token] audience is the default"
        );
        assert!(clients.get("nope").is_none());
    }

    /// Every rule, by the key its error names.
    #[test]
    fn config_validation_table() {
        let with_key = "[token]\nencryption_key_env = \"K\"\n";
        let client = |body: &str| format!("{with_key}[[client]]\n{body}\n");
        let ok_native =
            "client_id = \"a\"\nkind = \"native\"\nredirect_uris = [\"http://127.0.0.1/cb\"]";
        let cases: Vec<(String, Option<&str>)> = vec![
            (client(ok_native), None),
            (
                client(
                    "client_id = \"a\"\nkind = \"native\"\nredirect_uris = [\"com.example.app:/cb\", \"https://a.test/cb\", \"http://[::1]:80/cb\"]\naudience = \"https://api\"\nscopes = [\"read\", \"write:all\"]",
                ),
                None,
            ),
            (
                client(
                    "client_id = \"s\"\nkind = \"spa\"\nredirect_uris = [\"https://spa.test/cb\", \"http://127.0.0.1:3000/\"]",
                ),
                None,
            ),
            (
                format!("[[client]]\n{ok_native}\n"),
                Some("token.encryption_key_env"),
            ),
            (
                client(
                    "client_id = \"a\"\nkind = \"web\"\nredirect_uris = [\"https://a.test/cb\"]",
                ),
                Some("client[0].kind"),
            ),
            (
                client("client_id = \"a\"\nredirect_uris = [\"https://a.test/cb\"]"),
                Some("client[0]"),
            ),
            (
                client("kind = \"spa\"\nredirect_uris = [\"https://a.test/cb\"]"),
                Some("client[0]"),
            ),
            (
                client(
                    "client_id = \"a b\"\nkind = \"spa\"\nredirect_uris = [\"https://a.test/cb\"]",
                ),
                Some("client[0].client_id"),
            ),
            (
                client("client_id = \"\"\nkind = \"spa\"\nredirect_uris = [\"https://a.test/cb\"]"),
                Some("client[0].client_id"),
            ),
            (
                format!("{}[[client]]\n{ok_native}\n", client(ok_native)),
                Some("client[1].client_id"),
            ),
            (
                client("client_id = \"a\"\nkind = \"spa\"\nredirect_uris = []"),
                Some("client[0].redirect_uris"),
            ),
            (
                client(
                    "client_id = \"a\"\nkind = \"spa\"\nredirect_uris = [\"https://a.test/cb#x\"]",
                ),
                Some("client[0].redirect_uris"),
            ),
            (
                client("client_id = \"a\"\nkind = \"spa\"\nredirect_uris = [\"/cb\"]"),
                Some("client[0].redirect_uris"),
            ),
            (
                client("client_id = \"a\"\nkind = \"spa\"\nredirect_uris = [\"http://a.test/cb\"]"),
                Some("client[0].redirect_uris"),
            ),
            (
                client(
                    "client_id = \"a\"\nkind = \"native\"\nredirect_uris = [\"http://localhost:8000/cb\"]",
                ),
                Some("client[0].redirect_uris"),
            ),
            (
                client(
                    "client_id = \"a\"\nkind = \"spa\"\nredirect_uris = [\"com.example.app:/cb\"]",
                ),
                Some("client[0].redirect_uris"),
            ),
            (
                client("client_id = \"a\"\nkind = \"native\"\nredirect_uris = [\"myapp:/cb\"]"),
                Some("client[0].redirect_uris"),
            ),
            (
                client(
                    "client_id = \"a\"\nkind = \"native\"\nredirect_uris = [\"javascript:alert(1)\"]",
                ),
                Some("client[0].redirect_uris"),
            ),
            (
                client(
                    "client_id = \"a\"\nkind = \"spa\"\nredirect_uris = [\"https://u:p@a.test/cb\"]",
                ),
                Some("client[0].redirect_uris"),
            ),
            (
                client(
                    "client_id = \"a\"\nkind = \"spa\"\nredirect_uris = [\"https://a.test/c b\"]",
                ),
                Some("client[0].redirect_uris"),
            ),
            (
                client(
                    "client_id = \"a\"\nkind = \"spa\"\nredirect_uris = [\"https://a.test/cb\"]\naudience = \"\"",
                ),
                Some("client[0].audience"),
            ),
            (
                client(
                    "client_id = \"a\"\nkind = \"spa\"\nredirect_uris = [\"https://a.test/cb\"]\nscopes = [\"a b\"]",
                ),
                Some("client[0].scopes"),
            ),
            (
                format!(
                    "{}[app_tokens]\naccess_token_ttl_seconds = 0\n",
                    client(ok_native)
                ),
                Some("app_tokens.access_token_ttl_seconds"),
            ),
            (
                format!(
                    "{}[app_tokens]\nrefresh_token_ttl_seconds = 0\n",
                    client(ok_native)
                ),
                Some("app_tokens.refresh_token_ttl_seconds"),
            ),
            (
                format!(
                    "{}[app_tokens]\ncode_ttl_seconds = 3600\n",
                    client(ok_native)
                ),
                Some("app_tokens.code_ttl_seconds"),
            ),
            (
                "[app_tokens]\ncode_lifetime = 5\n".to_owned(),
                Some("app_tokens"),
            ),
        ];
        for (text, want) in cases {
            let result = Settings::from_toml(&text, Vec::new());
            match (want, result) {
                (None, Ok(_)) => {}
                (None, Err(e)) => panic!("{text}\nshould load, got: {e}"),
                (Some(key), Ok(_)) => panic!("{text}\nshould fail on {key}"),
                (Some(key), Err(e)) => {
                    let message = e.to_string();
                    assert!(
                        message.starts_with(key),
                        "{text}\nexpected an error about {key}, got {message:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn app_token_settings_come_from_the_environment_too() {
        let env = vec![(
            "GATEHOUSE_APP_TOKENS_ACCESS_TOKEN_TTL_SECONDS".to_owned(),
            "120".to_owned(),
        )];
        let s = Settings::from_toml("", env).expect("valid");
        assert_eq!(s.app_tokens.access_token_ttl_seconds, 120);
        assert_eq!(s.app_tokens.refresh_token_ttl_seconds, 2_592_000);
        assert_eq!(s.app_tokens.code_ttl_seconds, 60);
        assert!(s.clients.is_empty());
    }
}
