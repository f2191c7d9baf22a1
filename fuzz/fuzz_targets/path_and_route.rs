//! Path normalization and route matching. Properties: a normalized path starts with `/` and
//! normalizes to itself; matching is deterministic; a route chosen for a path is chosen again
//! for its normalized form.
#![no_main]

use std::sync::OnceLock;

use gatehouse::config::Settings;
use gatehouse::policy::{RequestHost, normalize};
use libfuzzer_sys::fuzz_target;

const ROUTES: &str = r#"
[[route]]
path_prefix = "/public/"
access = "public"
[[route]]
path_exact = "/healthz"
access = "public"
[[route]]
host = "admin.example.com"
path_prefix = "/"
access = "authenticated"
roles = ["admin"]
[[route]]
path_regex = "^/t/(?P<org>[a-z0-9-]+)/reports(/.*)?$"
access = "authenticated"
[[route]]
path_prefix = "/api/"
methods = ["GET", "POST"]
access = "authenticated"
api = true
[[route]]
path_prefix = "/"
access = "authenticated"
"#;

fn settings() -> &'static Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    S.get_or_init(|| Settings::from_toml(ROUTES, Vec::new()).expect("fuzz routes"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\n');
    let raw_path = parts.next().unwrap_or_default();
    let host = parts.next().unwrap_or("app.example.com");
    let method = parts.next().unwrap_or("GET");
    let Ok(path) = normalize(raw_path) else { return };
    assert!(path.as_str().starts_with('/'), "{path:?}");
    let again = normalize(path.as_str()).expect("a normalized path normalizes");
    assert_eq!(again, path, "normalizing is idempotent");
    if let Ok(host) = RequestHost::parse(host) {
        let reparsed = RequestHost::parse(host.as_str()).expect("a parsed host parses");
        assert_eq!(reparsed.as_str(), host.as_str());
        let policy = &settings().policy;
        let first = policy.find(method, &host, &path).agreed().map(|m| m.map(|m| m.route.index));
        let second = policy.find(method, &host, &again).agreed().map(|m| m.map(|m| m.route.index));
        assert_eq!(first, second);
    }
});
