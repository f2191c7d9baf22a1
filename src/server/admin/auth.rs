//! Who may use the admin API and page: whoever presents the admin token, as
//! `Authorization: Bearer`, or (the page only) in a cookie derived from it.
//!
//! The page cookie is `<expiry>.<HMAC-SHA256(token, expiry)>`: stateless, so it works on every
//! replica that shares the token, expires by itself within the hour, and dies when the token
//! is rotated. It never carries the token itself.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use ::cookie::{Cookie, SameSite};

use crate::session::cookie;

pub const PAGE_COOKIE: &str = "gatehouse_admin";
/// How long the page cookie lasts.
pub const PAGE_COOKIE_SECONDS: i64 = 3600;

pub struct AdminAuth {
    token: Option<SecretString>,
}

impl AdminAuth {
    pub fn new(token: Option<SecretString>) -> Self {
        Self { token }
    }

    pub fn is_configured(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `presented` is the admin token (constant time).
    pub fn token_matches(&self, presented: &str) -> bool {
        self.token.as_ref().is_some_and(|expected| {
            let expected = expected.expose_secret().as_bytes();
            !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected))
        })
    }

    /// `Authorization: Bearer <admin token>`.
    pub fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return false;
        };
        value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|token| self.token_matches(token))
    }

    /// The bearer token, or a valid page cookie.
    pub fn request_ok(&self, headers: &HeaderMap, now: i64) -> bool {
        self.bearer_ok(headers) || self.cookie_ok(headers, now)
    }

    fn cookie_ok(&self, headers: &HeaderMap, now: i64) -> bool {
        let Some(value) = cookie::single(headers, PAGE_COOKIE) else {
            return false;
        };
        let Some((expiry, signature)) = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.split_once('.'))
        else {
            return false;
        };
        let Ok(expires_at) = expiry.parse::<i64>() else {
            return false;
        };
        let Some(expected) = self.sign(expiry) else {
            return false;
        };
        now < expires_at
            && expires_at <= now.saturating_add(PAGE_COOKIE_SECONDS)
            && bool::from(signature.as_bytes().ct_eq(expected.as_bytes()))
    }

    /// The `Set-Cookie` value for the page, valid for an hour from `now`.
    pub fn page_cookie(&self, now: i64) -> Option<String> {
        let expiry = now.saturating_add(PAGE_COOKIE_SECONDS).to_string();
        let signature = self.sign(&expiry)?;
        Some(
            Cookie::build((PAGE_COOKIE, format!("{expiry}.{signature}")))
                .path("/admin")
                .http_only(true)
                .same_site(SameSite::Strict)
                .max_age(::cookie::time::Duration::seconds(PAGE_COOKIE_SECONDS))
                .build()
                .to_string(),
        )
    }

    /// The `Set-Cookie` value that signs the page out.
    pub fn clear_page_cookie() -> String {
        Cookie::build((PAGE_COOKIE, ""))
            .path("/admin")
            .http_only(true)
            .same_site(SameSite::Strict)
            .max_age(::cookie::time::Duration::ZERO)
            .build()
            .to_string()
    }

    fn sign(&self, expiry: &str) -> Option<String> {
        let token = self.token.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(token.expose_secret().as_bytes()).ok()?;
        mac.update(b"gatehouse admin page\0");
        mac.update(expiry.as_bytes());
        Some(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("other=1; {PAGE_COOKIE}={value}").parse().unwrap(),
        );
        h
    }

    fn cookie_value(set_cookie: &str) -> String {
        let pair = set_cookie.split(';').next().unwrap();
        pair.split_once('=').unwrap().1.to_owned()
    }

    #[test]
    fn page_cookie_rules() {
        let auth = AdminAuth::new(Some("s3cret-token".into()));
        let other = AdminAuth::new(Some("another-token".into()));
        let none = AdminAuth::new(None);
        let now = 1_800_000_000;
        let set = auth.page_cookie(now).unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(
            !set.contains("s3cret"),
            "the token itself never leaves: {set}"
        );
        let value = cookie_value(&set);
        assert!(auth.request_ok(&with_cookie(&value), now));
        assert!(auth.request_ok(&with_cookie(&value), now + PAGE_COOKIE_SECONDS - 1));
        assert!(!auth.request_ok(&with_cookie(&value), now + PAGE_COOKIE_SECONDS));
        assert!(
            !other.request_ok(&with_cookie(&value), now),
            "another token"
        );
        assert!(!none.request_ok(&with_cookie(&value), now));
        // A far expiry cannot be forged without the key, nor a signature reused for it.
        let (_, sig) = value.split_once('.').unwrap();
        let far = format!("{}.{sig}", now + 10 * PAGE_COOKIE_SECONDS);
        assert!(!auth.request_ok(&with_cookie(&far), now));
        for garbage in ["", ".", "x.y", "1.", "99999999999999999999.abc"] {
            assert!(!auth.request_ok(&with_cookie(garbage), now), "{garbage:?}");
        }
        // Twice: refused.
        let mut twice = with_cookie(&value);
        twice.append(
            http::header::COOKIE,
            format!("{PAGE_COOKIE}={value}").parse().unwrap(),
        );
        assert!(!auth.request_ok(&twice, now));
    }

    #[test]
    fn bearer_rules() {
        let auth = AdminAuth::new(Some("s3cret-token".into()));
        let bearer = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(auth.bearer_ok(&bearer("Bearer s3cret-token")));
        assert!(!auth.bearer_ok(&bearer("Bearer s3cret-token ")));
        assert!(!auth.bearer_ok(&bearer("bearer s3cret-token")));
        assert!(!auth.bearer_ok(&bearer("Bearer ")));
        assert!(!auth.bearer_ok(&HeaderMap::new()));
        assert!(!AdminAuth::new(None).bearer_ok(&bearer("Bearer ")));
        assert!(!AdminAuth::new(Some("".into())).bearer_ok(&bearer("Bearer ")));
    }
}
