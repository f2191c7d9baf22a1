//! Cookie headers: finding the session cookie and stripping gatehouse's cookies before the
//! upstream. Property: after stripping, no pair of the rewritten header is one of gatehouse's
//! cookies (by name, or in a `,`-joined part), and every other pair is kept byte for byte.
#![no_main]

use gatehouse::session::cookie::{self, CookieRewrite};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 3] = ["gatehouse", "gatehouse-login", "gatehouse-flow"];

/// Whether a pair is (or, in a `,`-joined part, holds) one of gatehouse's cookies: a name
/// before an `=` (a pair without one is a nameless cookie, RFC 6265bis §5.6).
fn is_ours(pair: &[u8]) -> bool {
    pair.split(|b| *b == b',').any(|part| {
        let Some(at) = part.iter().position(|b| *b == b'=') else {
            return false;
        };
        let name = part[..at].trim_ascii();
        NAMES.iter().any(|n| name == n.as_bytes())
    })
}

fuzz_target!(|data: &[u8]| {
    // Up to four Cookie headers, split on 0x00 (which no header value may hold).
    let mut headers = HeaderMap::new();
    for value in data.split(|b| *b == 0).take(4) {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(http::header::COOKIE, v);
        }
    }
    let _ = cookie::find(&headers, "gatehouse");
    let _ = cookie::single(&headers, "gatehouse-login");
    let rewrite = cookie::strip(&headers, &NAMES);
    let all: Vec<&[u8]> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty())
        .collect();
    match &rewrite {
        CookieRewrite::Unchanged => {
            assert!(!all.iter().any(|p| is_ours(p)), "a gatehouse cookie was left: {all:?}");
        }
        CookieRewrite::Remove => {
            assert!(all.iter().all(|p| is_ours(p)), "a foreign cookie was dropped: {all:?}");
        }
        CookieRewrite::Replace(v) => {
            let kept: Vec<&[u8]> = v
                .as_bytes()
                .split(|b| *b == b';')
                .map(|p| p.trim_ascii())
                .filter(|p| !p.is_empty())
                .collect();
            assert!(!kept.iter().any(|p| is_ours(p)), "kept ours: {kept:?}");
            let expected: Vec<&[u8]> = all.iter().copied().filter(|p| !is_ours(p)).collect();
            assert_eq!(kept, expected, "the other pairs, in order");
        }
    }
    let _ = rewrite.utf8_only();
});
