//! Where a browser may be sent after login or logout (`rd=`). Pure, table-tested.
//!
//! Allowed: a same-origin path (`/reports?q=1`), or an absolute URL whose scheme is
//! `public_url`'s and whose host and port are `public_url`'s or listed in
//! `login.allowed_redirect_hosts`. Everything else (`//evil`, `/\evil`, control characters,
//! tabs, other schemes, other ports, credentials in the URL) falls back to `/`.

use url::Url;

/// A validated redirect target: a path on our origin or an allowed absolute URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectTarget(String);

/// What `rd` is checked against.
#[derive(Debug, Clone)]
pub struct RedirectPolicy {
    public_url: Url,
    /// `host` or `host:port`, lower-case.
    allowed_hosts: Vec<String>,
}

impl RedirectTarget {
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The target as an absolute URL (for `post_logout_redirect_uri`).
    pub fn absolute(&self, public_origin: &str) -> String {
        if self.0.starts_with('/') {
            format!("{public_origin}{}", self.0)
        } else {
            self.0.clone()
        }
    }
}

impl RedirectPolicy {
    pub fn new(public_url: Url, allowed_hosts: &[String]) -> Self {
        Self {
            public_url,
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Validates `raw` (already URL-decoded once, as a query parameter is); `/` when rejected.
    pub fn target(&self, raw: Option<&str>) -> RedirectTarget {
        raw.and_then(|r| self.check(r))
            .unwrap_or_else(RedirectTarget::root)
    }

    fn check(&self, raw: &str) -> Option<RedirectTarget> {
        if raw.is_empty() || raw.len() > 4096 || has_forbidden_chars(raw) {
            return None;
        }
        if raw.starts_with('/') {
            return self.check_path(raw);
        }
        let url = Url::parse(raw).ok()?;
        if url.scheme() != self.public_url.scheme()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return None;
        }
        let host = url.host_str()?.to_ascii_lowercase();
        let port = url.port_or_known_default()?;
        let default_port = url.port().is_none();
        let same_origin = Some(host.as_str()) == self.public_url.host_str()
            && Some(port) == self.public_url.port_or_known_default();
        let listed = self.allowed_hosts.iter().any(|allowed| {
            match allowed
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            {
                Some((h, p)) => h == host && p == port,
                // A listed host without a port allows only the scheme's default port.
                None => *allowed == host && default_port,
            }
        });
        (same_origin || listed).then(|| RedirectTarget(url.to_string()))
    }

    fn check_path(&self, raw: &str) -> Option<RedirectTarget> {
        // `//host` and `/\host` are protocol-relative in browsers.
        if raw.starts_with("//") || raw.starts_with("/\\") {
            return None;
        }
        // Decoded once more, the path must still be harmless: some stacks decode twice.
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .ok()?;
        // (Encoded spaces are fine: `/files/My%20Doc`.)
        let dangerous = |c: char| c.is_control() || c == '\\';
        if decoded.contains(dangerous) || decoded.starts_with("//") {
            return None;
        }
        // Resolving against our origin must stay on our origin.
        let resolved = self.public_url.join(raw).ok()?;
        if resolved.origin() != self.public_url.origin() {
            return None;
        }
        Some(RedirectTarget(raw.to_owned()))
    }
}

/// Control characters (tab, CR, LF, NUL, …), backslashes and spaces.
fn has_forbidden_chars(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() || c == '\\' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RedirectPolicy {
        RedirectPolicy::new(
            Url::parse("http://127.0.0.1:10000").unwrap(),
            &["app.example.com".into(), "api.example.com:8443".into()],
        )
    }

    #[test]
    fn redirect_table() {
        let p = policy();
        let cases: &[(&str, &str)] = &[
            // accepted
            ("/", "/"),
            ("/reports?q=1#top", "/reports?q=1#top"),
            ("/a%20b", "/a%20b"),
            ("http://127.0.0.1:10000/app", "http://127.0.0.1:10000/app"),
            ("http://app.example.com/x", "http://app.example.com/x"),
            (
                "http://API.example.com:8443/x",
                "http://api.example.com:8443/x",
            ),
            // rejected: protocol-relative and backslash tricks
            ("//evil.example", "/"),
            ("//evil.example/path", "/"),
            ("/\\evil.example", "/"),
            ("\\\\evil.example", "/"),
            ("/%2f%2fevil.example", "/"),
            ("/%5cevil.example", "/"),
            // rejected: control characters and tabs, raw or encoded
            ("/\t/evil.example", "/"),
            ("/%09/evil.example", "/"),
            ("/\n/evil.example", "/"),
            ("/%0d%0aSet-Cookie:x=1", "/"),
            ("/a b", "/"),
            // rejected: other origins, schemes, ports, credentials
            ("https://evil.example", "/"),
            ("http://evil.example/", "/"),
            ("https://127.0.0.1:10000/", "/"),
            ("http://127.0.0.1:10001/", "/"),
            ("http://app.example.com:8080/x", "/"),
            ("http://api.example.com/x", "/"),
            ("http://user:pw@127.0.0.1:10000/", "/"),
            ("http://127.0.0.1:10000@evil.example/", "/"),
            ("javascript:alert(1)", "/"),
            ("data:text/html,x", "/"),
            ("evil.example", "/"),
            ("", "/"),
        ];
        for (raw, want) in cases {
            assert_eq!(p.target(Some(raw)).as_str(), *want, "rd={raw:?}");
        }
        assert_eq!(p.target(None).as_str(), "/");
    }

    #[test]
    fn absolute_form() {
        assert_eq!(
            RedirectTarget("/x".into()).absolute("http://gw:1"),
            "http://gw:1/x"
        );
        assert_eq!(
            RedirectTarget("http://a/x".into()).absolute("http://gw:1"),
            "http://a/x"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// The origins `policy()` allows, as (scheme, host, port).
        fn allowed(url: &Url) -> bool {
            let origin = (url.scheme(), url.host_str(), url.port_or_known_default());
            [
                ("http", Some("127.0.0.1"), Some(10000)),
                ("http", Some("app.example.com"), Some(80)),
                ("http", Some("api.example.com"), Some(8443)),
            ]
            .contains(&origin)
        }

        /// `rd` values built from the pieces of the public open-redirect payload lists.
        fn payload() -> impl Strategy<Value = String> {
            let piece = prop::sample::select(vec![
                "/",
                "//",
                "\\",
                "/\\",
                "http:",
                "https:",
                "javascript:",
                "data:",
                "//",
                "127.0.0.1",
                ":10000",
                ":10001",
                "app.example.com",
                "api.example.com",
                ":8443",
                "evil.example",
                "@",
                "user:pw@",
                "%2f",
                "%2F",
                "%5c",
                "%09",
                "%0a",
                "%00",
                "%2e",
                "%40",
                "\t",
                "\n",
                " ",
                "?",
                "#",
                ".",
                "..",
                ";",
                "[::1]",
                "\u{e9}",
                "\u{ff0f}",
                "\u{2215}",
                "x",
            ]);
            prop::collection::vec(piece, 0..8).prop_map(|parts| parts.concat())
        }

        fn check(raw: &str) -> Result<(), TestCaseError> {
            let target = policy().target(Some(raw));
            let t = target.as_str();
            prop_assert!(
                !t.chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == '\\'),
                "{raw:?} gave {t:?}"
            );
            let base = Url::parse("http://127.0.0.1:10000/deep/page").unwrap();
            // Where a browser goes with it, resolved from any page of ours ...
            let resolved = base.join(t);
            prop_assert!(
                resolved.as_ref().is_ok_and(allowed),
                "{raw:?} gave {t:?}, which leads to {resolved:?}"
            );
            // ... and where a stack that decodes it once more goes.
            let decoded = percent_encoding::percent_decode_str(t).decode_utf8_lossy();
            if let Ok(url) = base.join(&decoded) {
                prop_assert!(allowed(&url), "{raw:?} gave {t:?}, decoded to {url}");
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(10_000))]

            /// The result is always on our origin or an allowed host.
            #[test]
            fn redirects_stay_on_allowed_origins(raw in payload()) {
                check(&raw)?;
            }

            #[test]
            fn any_string_redirects_to_an_allowed_origin(raw in any::<String>()) {
                check(&raw)?;
            }
        }
    }
}
