//! Reading gatehouse's cookies from `Cookie` headers, removing the session cookie from what
//! goes upstream, and building `Set-Cookie` values.

use cookie::{Cookie, SameSite};
use http::HeaderMap;

use super::token::OpaqueToken;

/// What the request carries under a token cookie's name (the session or the login binding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCookie {
    Absent,
    Present(OpaqueToken),
    /// The name appears more than once (cookie tossing, or a stale cookie with another path):
    /// we refuse to guess which one is meant.
    Duplicated,
    /// Not the shape of a token we issue.
    Malformed,
}

/// Finds the token cookie `name` across every `Cookie` header.
pub fn find(headers: &HeaderMap, name: &str) -> TokenCookie {
    let mut found = None;
    let mut count = 0usize;
    for value in cookie_values(headers) {
        // Pairs are separated by ";" only (RFC 6265). A "," belongs to a value: splitting on it
        // would let `x=1,__Host-gatehouse=…`, set by a sibling subdomain, pose as our cookie.
        // (Envoy joins repeated Cookie headers with ","; `encode_raw_headers` keeps them apart.)
        for pair in value.split(';') {
            if let Some(value) = value_if_named(pair, name) {
                count += 1;
                found = Some(value);
            }
        }
    }
    match (count, found) {
        (0, _) | (_, None) => TokenCookie::Absent,
        (1, Some(value)) => OpaqueToken::parse(&value)
            .map(TokenCookie::Present)
            .unwrap_or(TokenCookie::Malformed),
        _ => TokenCookie::Duplicated,
    }
}

/// How the upstream's `cookie` header must change so it does not see the session cookie.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CookieRewrite {
    /// The session cookie is not there: leave the header alone.
    #[default]
    Unchanged,
    /// Replace the header with this value (the other cookies, in order).
    Replace(String),
    /// Nothing else was in it: remove the header.
    Remove,
}

/// Drops every cookie with one of these names; other cookies pass byte for byte.
pub fn strip(headers: &HeaderMap, names: &[&str]) -> CookieRewrite {
    let mut kept = Vec::new();
    let mut removed = false;
    for value in cookie_values(headers) {
        for pair in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            if names
                .iter()
                .any(|name| value_if_named(pair, name).is_some())
            {
                removed = true;
            } else {
                kept.push(pair);
            }
        }
    }
    match (removed, kept.is_empty()) {
        (false, _) => CookieRewrite::Unchanged,
        (true, true) => CookieRewrite::Remove,
        (true, false) => CookieRewrite::Replace(kept.join("; ")),
    }
}

/// The value of `pair` (`name=value`) if its name is `name`.
fn value_if_named(pair: &str, name: &str) -> Option<String> {
    Cookie::parse(pair.trim())
        .ok()
        .filter(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// `Cookie` header values; values that are not valid UTF-8 are skipped (they cannot hold a
/// token we issued).
fn cookie_values(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
}

/// How cookies are scoped for this deployment.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub session_name: String,
    /// `Secure` (public_url is https).
    pub secure: bool,
}

impl CookieSettings {
    /// The session cookie: `HttpOnly`, `SameSite=Lax`, `Path=/`, no `Domain`, `Secure` on
    /// https. A session cookie in the browser sense (no `Max-Age`): the server enforces expiry.
    pub fn session(&self, token: &OpaqueToken) -> String {
        Cookie::build((self.session_name.clone(), token.as_str().to_owned()))
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .path("/")
            .build()
            .to_string()
    }

    /// Expires the session cookie.
    pub fn clear_session(&self) -> String {
        clear(&self.session_name, self.secure, SameSite::Lax)
    }

    /// The login-binding cookie's name: `__Host-` on https like the session's.
    pub fn binding_name(&self) -> &'static str {
        if self.secure {
            "__Host-gatehouse-login"
        } else {
            "gatehouse-login"
        }
    }

    /// Ties a login in progress to this browser. `SameSite=None; Secure` when any IdP uses
    /// `form_post`: the IdP's cross-site POST would not carry a Lax cookie. Browsers accept
    /// `Secure` cookies from `http://localhost`/`127.0.0.1`, so development works too.
    pub fn binding(&self, token: &OpaqueToken, cross_site: bool, max_age_seconds: i64) -> String {
        let same_site = if cross_site {
            SameSite::None
        } else {
            SameSite::Lax
        };
        Cookie::build((self.binding_name(), token.as_str().to_owned()))
            .http_only(true)
            .secure(self.secure || cross_site)
            .same_site(same_site)
            .path("/")
            .max_age(cookie::time::Duration::seconds(max_age_seconds))
            .build()
            .to_string()
    }
}

fn clear(name: &str, secure: bool, same_site: SameSite) -> String {
    Cookie::build((name.to_owned(), ""))
        .http_only(true)
        .secure(secure)
        .same_site(same_site)
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .expires(cookie::time::OffsetDateTime::UNIX_EPOCH)
        .build()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::COOKIE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn find_table() {
        let token = OpaqueToken::generate().unwrap();
        let t = token.as_str();
        let cases: Vec<(Vec<String>, TokenCookie)> = vec![
            (vec![], TokenCookie::Absent),
            (vec!["other=1".into()], TokenCookie::Absent),
            (
                vec![format!("gatehouse={t}")],
                TokenCookie::Present(token.clone()),
            ),
            (
                vec![format!("a=1; gatehouse={t}; b=2")],
                TokenCookie::Present(token.clone()),
            ),
            // split across two headers (HTTP/2)
            (
                vec!["a=1".into(), format!("gatehouse={t}")],
                TokenCookie::Present(token.clone()),
            ),
            (
                vec![format!("gatehouse={t}; gatehouse={t}")],
                TokenCookie::Duplicated,
            ),
            (
                vec![format!("gatehouse={t}"), format!("gatehouse={t}")],
                TokenCookie::Duplicated,
            ),
            (vec!["gatehouse=garbage".into()], TokenCookie::Malformed),
            (
                vec![format!("gatehouse={}", "A".repeat(8000))],
                TokenCookie::Malformed,
            ),
            (vec!["gatehouse=".into()], TokenCookie::Malformed),
            (vec![";;; ===; gatehouse".into()], TokenCookie::Absent),
            (vec!["gatehousex=1".into()], TokenCookie::Absent),
            // A comma belongs to a value: this is cookie `a` (or `x`), not ours.
            (vec![format!("a=1,gatehouse={t}")], TokenCookie::Absent),
            (
                vec![format!("x=1,__Host-gatehouse={t}")],
                TokenCookie::Absent,
            ),
            (
                vec![format!("gatehouse={t},gatehouse={t}")],
                TokenCookie::Malformed,
            ),
        ];
        for (values, expected) in cases {
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            assert_eq!(find(&headers(&refs), "gatehouse"), expected, "{values:?}");
        }
    }

    #[test]
    fn strip_table() {
        let cases: &[(&[&str], CookieRewrite)] = &[
            (&[], CookieRewrite::Unchanged),
            (&["a=1; b=2"], CookieRewrite::Unchanged),
            (&["gatehouse=x"], CookieRewrite::Remove),
            (
                &["a=1; gatehouse=x; b=\"q v\""],
                CookieRewrite::Replace("a=1; b=\"q v\"".into()),
            ),
            (
                &["gatehouse=x; a=1", "gatehouse=y"],
                CookieRewrite::Replace("a=1".into()),
            ),
            (
                &["junk; gatehouse=x"],
                CookieRewrite::Replace("junk".into()),
            ),
            (
                &["gatehouse-login=y; a=1; gatehouse=x"],
                CookieRewrite::Replace("a=1".into()),
            ),
            // `a=1,gatehouse=x` is one cookie named `a`: it passes.
            (&["a=1,gatehouse=x; b=2"], CookieRewrite::Unchanged),
            (
                &["data={\"x\":1,\"y\":2}; gatehouse=x"],
                CookieRewrite::Replace("data={\"x\":1,\"y\":2}".into()),
            ),
        ];
        for (values, expected) in cases {
            assert_eq!(
                strip(&headers(values), &["gatehouse", "gatehouse-login"]),
                *expected,
                "{values:?}"
            );
        }
    }

    #[test]
    fn cookie_attributes() {
        let token = OpaqueToken::generate().unwrap();
        let https = CookieSettings {
            session_name: "__Host-gatehouse".into(),
            secure: true,
        };
        let c = https.session(&token);
        for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!c.contains("Domain"), "{c}");
        let http = CookieSettings {
            session_name: "gatehouse".into(),
            secure: false,
        };
        assert!(!http.session(&token).contains("Secure"));
        let binding = http.binding(&token, true, 600);
        assert!(
            binding.contains("SameSite=None") && binding.contains("Secure"),
            "{binding}"
        );
        let binding = http.binding(&token, false, 600);
        assert!(
            binding.contains("SameSite=Lax") && !binding.contains("Secure"),
            "{binding}"
        );
        assert!(http.clear_session().contains("Max-Age=0"));
    }
}
