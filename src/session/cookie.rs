//! Reading gatehouse's cookies from `Cookie` headers, removing the session cookie from what
//! goes upstream, and building `Set-Cookie` values.

use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue};

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
    let mut values = pairs(headers).filter_map(|pair| value_if_named(pair, name));
    let Some(value) = values.next() else {
        return TokenCookie::Absent;
    };
    if values.next().is_some() {
        return TokenCookie::Duplicated;
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(OpaqueToken::parse)
        .map_or(TokenCookie::Malformed, TokenCookie::Present)
}

/// The value of cookie `name` when it appears exactly once across every `Cookie` header.
pub fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    let mut values = pairs(headers).filter_map(|pair| value_if_named(pair, name));
    let value = values.next()?;
    values.next().is_none().then_some(value)
}

/// How the upstream's `cookie` header must change so it does not see the session cookie.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CookieRewrite {
    /// The session cookie is not there: leave the header alone.
    #[default]
    Unchanged,
    /// Replace the header with this value: the other pairs, byte for byte, in order.
    Replace(HeaderValue),
    /// Nothing else was in it: remove the header.
    Remove,
}

impl CookieRewrite {
    /// The same rewrite for a transport that carries header values as UTF-8 text only (Envoy's
    /// gRPC ext_authz reads `HeaderValue.value` and ignores `raw_value`): pairs that are not
    /// UTF-8 are dropped from a replacement rather than mangled.
    pub fn utf8_only(&self) -> Self {
        match self {
            Self::Replace(value) if value.to_str().is_err() => {
                let kept: Vec<&[u8]> = value
                    .as_bytes()
                    .split(|b| *b == b';')
                    .map(trim)
                    .filter(|pair| std::str::from_utf8(pair).is_ok())
                    .collect();
                if kept.is_empty() {
                    Self::Remove
                } else {
                    HeaderValue::from_bytes(&kept.join(&b"; "[..]))
                        .map_or(Self::Remove, Self::Replace)
                }
            }
            other => other.clone(),
        }
    }
}

/// Drops every cookie with one of these names; other pairs pass byte for byte, whatever bytes
/// they hold.
pub fn strip(headers: &HeaderMap, names: &[&str]) -> CookieRewrite {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = false;
    for pair in pairs(headers) {
        if carries_any(pair, names) {
            removed = true;
        } else {
            kept.push(pair);
        }
    }
    if !removed {
        return CookieRewrite::Unchanged;
    }
    if kept.is_empty() {
        return CookieRewrite::Remove;
    }
    // Every pair came out of a valid header value and "; " is valid: this cannot fail. If it
    // did, dropping the whole header is the safe way to keep the session from the upstream.
    HeaderValue::from_bytes(&kept.join(&b"; "[..]))
        .map_or(CookieRewrite::Remove, CookieRewrite::Replace)
}

/// Whether `pair` holds one of these cookies: by its name, or in any `,`-separated part. The
/// latter is never read as our cookie (see [`find`]), but a proxy that joins repeated `Cookie`
/// headers with `,` (Envoy without `encode_raw_headers`) makes `a=1,gatehouse=…` out of two
/// headers, and removing more than needed is the safe way to err.
fn carries_any(pair: &[u8], names: &[&str]) -> bool {
    pair.split(|b| *b == b',').any(|part| {
        names
            .iter()
            .any(|name| value_if_named(part, name).is_some())
    })
}

/// Every `name=value` pair across the `Cookie` headers, as bytes, trimmed, empties dropped.
///
/// Parsed from bytes rather than with the `cookie` crate, which takes `&str`: a header with a
/// byte that is not visible ASCII (`pref=é`, `0xff`, planted by a sibling subdomain) must not
/// hide gatehouse's own cookies, or the user looks signed out and the session token goes
/// upstream. Pairs are separated by `;` only (RFC 6265 §4.2.1): a `,` belongs to a value, so
/// `x=1,__Host-gatehouse=…` is cookie `x`. (Envoy joins repeated Cookie headers with `,`;
/// `encode_raw_headers` keeps them apart.)
fn pairs(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .map(trim)
        .filter(|pair| !pair.is_empty())
}

/// The value of `pair` if its name is `name`. The name is what precedes the first `=`, with
/// surrounding whitespace removed, as RFC 6265 §5.2 has user agents read it.
fn value_if_named<'a>(pair: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let at = pair.iter().position(|b| *b == b'=')?;
    (trim(&pair[..at]) == name.as_bytes()).then(|| trim(&pair[at + 1..]))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
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

    /// Every cookie gatehouse sets: upstreams get none of them.
    pub fn own_names(&self) -> [&str; 4] {
        [
            &self.session_name,
            self.binding_name(),
            self.impersonator_name(),
            self.flow_name(),
        ]
    }

    /// A local sign-in in progress (see `crate::local`): its flow token. `__Host-` on https.
    pub fn flow_name(&self) -> &'static str {
        if self.secure {
            "__Host-gatehouse-flow"
        } else {
            "gatehouse-flow"
        }
    }

    /// `Lax`, so the emailed link (a top-level navigation) carries it back.
    pub fn flow(&self, token: &OpaqueToken, max_age_seconds: i64) -> String {
        self.lax_with_max_age(self.flow_name(), token, max_age_seconds)
    }

    pub fn clear_flow(&self) -> String {
        clear(self.flow_name(), self.secure, SameSite::Lax)
    }

    /// While impersonating, the impersonator's own session token waits here, to be restored
    /// by `/auth/impersonate/stop`. `__Host-` on https like the session's.
    pub fn impersonator_name(&self) -> &'static str {
        if self.secure {
            "__Host-gatehouse-impersonator"
        } else {
            "gatehouse-impersonator"
        }
    }

    /// The impersonator's session token, kept for the way back.
    pub fn impersonator(&self, token: &OpaqueToken, max_age_seconds: i64) -> String {
        self.lax_with_max_age(self.impersonator_name(), token, max_age_seconds)
    }

    /// `HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` on https, and a lifetime.
    fn lax_with_max_age(&self, name: &'static str, token: &OpaqueToken, seconds: i64) -> String {
        Cookie::build((name, token.as_str().to_owned()))
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .path("/")
            .max_age(cookie::time::Duration::seconds(seconds))
            .build()
            .to_string()
    }

    pub fn clear_impersonator(&self) -> String {
        clear(self.impersonator_name(), self.secure, SameSite::Lax)
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

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::COOKIE, HeaderValue::from_bytes(v).unwrap());
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
            // Other pairs that are not visible ASCII do not hide ours.
            (
                vec![format!("theme=1; gatehouse={t}; pref=\u{e9}")],
                TokenCookie::Present(token.clone()),
            ),
            (
                vec![format!("pref=\u{e9}"), format!(" gatehouse = {t} ")],
                TokenCookie::Present(token.clone()),
            ),
            (
                vec!["gatehouse=\u{e9}t\u{e9}".into()],
                TokenCookie::Malformed,
            ),
        ];
        for (values, expected) in cases {
            let refs: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
            assert_eq!(find(&headers(&refs), "gatehouse"), expected, "{values:?}");
        }
    }

    #[test]
    fn strip_table() {
        let replace = |v: &[u8]| CookieRewrite::Replace(HeaderValue::from_bytes(v).unwrap());
        let cases: &[(&[&[u8]], CookieRewrite)] = &[
            (&[], CookieRewrite::Unchanged),
            (&[b"a=1; b=2"], CookieRewrite::Unchanged),
            (&[b"gatehouse=x"], CookieRewrite::Remove),
            (
                &[b"a=1; gatehouse=x; b=\"q v\""],
                replace(b"a=1; b=\"q v\""),
            ),
            (&[b"gatehouse=x; a=1", b"gatehouse=y"], replace(b"a=1")),
            (&[b"junk; gatehouse=x"], replace(b"junk")),
            (&[b"gatehouse-login=y; a=1; gatehouse=x"], replace(b"a=1")),
            // `a=1,gatehouse=x` is cookie `a` to `find`, but may be two headers a proxy
            // joined: it does not pass.
            (&[b"a=1,gatehouse=x; b=2"], replace(b"b=2")),
            (&[b"a=1,b=2; c=3"], CookieRewrite::Unchanged),
            (
                &[b"data={\"x\":1,\"y\":2}; gatehouse=x"],
                replace(b"data={\"x\":1,\"y\":2}"),
            ),
            // Bytes that are not visible ASCII neither hide our cookie nor get mangled.
            (
                &["theme=1; gatehouse=x; pref=\u{e9}".as_bytes()],
                replace("theme=1; pref=\u{e9}".as_bytes()),
            ),
            (&[b"p=\xff; gatehouse=x"], replace(b"p=\xff")),
            (
                &[b"\xfe\xff; gatehouse=\xff; q=1"],
                replace(b"\xfe\xff; q=1"),
            ),
            (&[b" gatehouse =x ;a=1"], replace(b"a=1")),
            (&[b"gatehouse\t=\tx"], CookieRewrite::Remove),
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
    fn utf8_only_drops_pairs_that_are_not_utf8() {
        let replace = |v: &[u8]| CookieRewrite::Replace(HeaderValue::from_bytes(v).unwrap());
        let cases = [
            (
                replace(b"a=1; p=\xff; b=\xc3\xa9"),
                replace(b"a=1; b=\xc3\xa9"),
            ),
            (replace(b"p=\xff"), CookieRewrite::Remove),
            (replace(b"a=1"), replace(b"a=1")),
            (CookieRewrite::Remove, CookieRewrite::Remove),
            (CookieRewrite::Unchanged, CookieRewrite::Unchanged),
        ];
        for (rewrite, expected) in cases {
            assert_eq!(rewrite.utf8_only(), expected, "{rewrite:?}");
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const OURS: [&str; 2] = ["gatehouse", "gatehouse-login"];

        /// Bytes a header value may hold: visible ASCII, space, tab and obs-text (0x80–0xff).
        fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(
                prop_oneof![
                    8 => 0x20u8..=0x7e,
                    1 => Just(b'\t'),
                    2 => 0x80u8..=0xff,
                    // separators and our names, so generated headers often look like ours
                    2 => prop::sample::select(b";=, \"".to_vec()),
                ],
                0..64,
            )
        }

        /// A `Cookie` header value built from fragments that include our cookie names.
        fn cookie_like() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(
                prop_oneof![
                    header_bytes(),
                    Just(b"gatehouse=".to_vec()),
                    Just(b"gatehouse-login=".to_vec()),
                    Just(b" gatehouse =".to_vec()),
                    Just(b"; ".to_vec()),
                    Just(b";".to_vec()),
                ],
                0..8,
            )
            .prop_map(|parts| parts.concat())
        }

        /// Like [`cookie_like`], with lookalikes of the session cookie's name but not the name.
        fn other_cookies() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(
                prop_oneof![
                    header_bytes(),
                    Just(b"gatehouse-login=".to_vec()),
                    Just(b"gatehousex=".to_vec()),
                    Just(b"x,gatehouse=".to_vec()),
                    Just(b"; ".to_vec()),
                    Just(b";".to_vec()),
                ],
                0..8,
            )
            .prop_map(|parts| parts.concat())
        }

        fn map(values: &[Vec<u8>]) -> HeaderMap {
            let mut h = HeaderMap::new();
            for v in values {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    h.append(http::header::COOKIE, v);
                }
            }
            h
        }

        /// A pair that carries one of ours, in any spelling RFC 6265 readers accept, alone or
        /// joined with `,` to another.
        fn names_ours(pair: &[u8]) -> bool {
            pair.split(|b| *b == b',')
                .any(|part| OURS.iter().any(|name| value_if_named(part, name).is_some()))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(10_000))]

            /// Whatever the header bytes, none of gatehouse's cookies survives `strip`.
            #[test]
            fn our_cookies_never_survive_strip(values in prop::collection::vec(cookie_like(), 0..3)) {
                let headers = map(&values);
                let upstream = match strip(&headers, &OURS) {
                    CookieRewrite::Unchanged => headers.clone(),
                    CookieRewrite::Remove => HeaderMap::new(),
                    CookieRewrite::Replace(v) => {
                        let mut h = HeaderMap::new();
                        h.insert(http::header::COOKIE, v);
                        h
                    }
                };
                prop_assert!(!pairs(&upstream).any(names_ours));
                for name in OURS {
                    prop_assert_eq!(find(&upstream, name), TokenCookie::Absent);
                }
                // Nothing else was dropped: every other pair survives, in order.
                let others: Vec<&[u8]> = pairs(&headers).filter(|p| !names_ours(p)).collect();
                let kept: Vec<&[u8]> = pairs(&upstream).collect();
                prop_assert_eq!(kept, others);
            }

            /// One valid session cookie among any other pairs, in any header: always found.
            #[test]
            fn a_valid_session_is_always_found(
                before in prop::collection::vec(other_cookies(), 0..3),
                after in prop::collection::vec(other_cookies(), 0..3),
                same_header in any::<bool>(),
            ) {
                let token = OpaqueToken::generate().unwrap();
                let ours = format!("gatehouse={}", token.as_str()).into_bytes();
                // Random bytes that happen to spell another `gatehouse` pair are a real duplicate.
                let clean = |v: &Vec<u8>| !v.split(|b| *b == b';').any(|p| value_if_named(trim(p), "gatehouse").is_some());
                prop_assume!(before.iter().chain(&after).all(clean));
                prop_assume!(before.iter().chain(&after).all(|v| HeaderValue::from_bytes(v).is_ok()));
                let mut values = before.clone();
                if same_header && !values.is_empty() {
                    let last = values.len() - 1;
                    values[last].extend_from_slice(b"; ");
                    values[last].extend_from_slice(&ours);
                } else {
                    values.push(ours);
                }
                values.extend(after);
                prop_assert_eq!(find(&map(&values), "gatehouse"), TokenCookie::Present(token));
            }
        }
    }
}
