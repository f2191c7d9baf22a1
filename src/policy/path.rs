//! Request-path normalization.
//!
//! Routes are matched against one canonical form of the path, so that `/public/../admin`,
//! `/public/%2e%2e/admin` and `//admin` cannot reach `/admin/` under another route's rule. A
//! path that has no single canonical form is refused (400): an upstream might decode it
//! differently from us, and then the rule we matched is not the rule it serves.
//!
//! Steps: cut the query and fragment; percent-decode the characters a path may hold raw
//! (unreserved, sub-delimiters except `;`, `:` and `@`: RFC 3986 §2.3, §3.3), upper-case the
//! remaining escapes and percent-encode raw non-ASCII bytes; merge repeated
//! slashes; remove `.` and `..` segments. The result is ASCII, and a character has one spelling
//! in it: `/café/` and `/caf%C3%A9/` are the same path to every upstream, so they must be the
//! same to the route table.
//!
//! A raw `;` is refused: Java servers (Tomcat, Jetty, Spring) strip `;params` from segments,
//! so `/public/..;/admin/` is `/admin/` to them and `/admin;x/` escapes an `/admin/` rule.

use std::fmt;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with /")]
    NotAbsolute,
    #[error("path contains an encoded / or \\")]
    EncodedSeparator,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a ; (path parameters are read differently by different servers)")]
    Semicolon,
    #[error("path contains a NUL or control character")]
    ControlCharacter,
    #[error("path contains an invalid percent-escape")]
    BadEscape,
    #[error("path is not valid UTF-8 once decoded")]
    InvalidUtf8,
    #[error("path climbs above the root with ..")]
    AboveRoot,
}

/// A path in canonical form: ASCII, starts with `/`, no query, no dot segments, no empty
/// segments; non-ASCII and reserved characters percent-encoded with upper-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath(String);

impl NormalizedPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Normalizes a request target's path (anything after `?` or `#` is ignored).
pub fn normalize(raw: &str) -> Result<NormalizedPath, PathError> {
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    if is_canonical(path) {
        return Ok(NormalizedPath(path.to_owned()));
    }
    canonicalize(path)
}

/// Whether `path` is in canonical form already, as most request paths are: plain characters
/// between single slashes, no dot segments. [`canonicalize`] would return it unchanged (a
/// property test holds the two to that).
fn is_canonical(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if !rest.bytes().all(|b| b == b'/' || is_plain(b)) {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        // An empty segment is a repeated slash, unless it is the last (a trailing slash).
        let repeated_slash = segment.is_empty() && segments.peek().is_some();
        if repeated_slash || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// The whole normalization of a path without query or fragment.
fn canonicalize(path: &str) -> Result<NormalizedPath, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = canonical_escapes(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            // An empty segment is a repeated or trailing slash.
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(NormalizedPath(out))
}

/// Decodes `%XX` escapes of [`is_plain`] characters, re-emits every other escape in upper case
/// and encodes raw non-ASCII bytes. Also checks the fully decoded byte string: no separators, no control characters, and
/// valid UTF-8, so that no later decoder can see a different path.
fn canonical_escapes(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    // Fully decoded form, only to check UTF-8 validity of escaped bytes.
    let mut fully_decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let value = decode_hex_pair(hex).ok_or(PathError::BadEscape)?;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0x00..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    v if is_plain(v) => out.push(char::from(v)),
                    v => push_escape(&mut out, v),
                }
                fully_decoded.push(value);
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            0x00..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ if b.is_ascii() => {
                out.push(char::from(b));
                fully_decoded.push(b);
                i += 1;
            }
            _ => {
                // Raw non-ASCII (valid UTF-8: `path` is a &str) takes its encoded spelling.
                push_escape(&mut out, b);
                fully_decoded.push(b);
                i += 1;
            }
        }
    }
    if std::str::from_utf8(&fully_decoded).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    Ok(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_escape(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
}

fn decode_hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| char::from(c).to_digit(16);
    let (hi, lo) = (digit(*pair.first()?)?, digit(*pair.get(1)?)?);
    u8::try_from(hi * 16 + lo).ok()
}

/// Characters with one meaning whether raw or percent-encoded in a path: unreserved, the
/// sub-delimiters except `;` (which Java servers read as a parameter separator), `:` and `@`.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/admin", Ok("/admin")),
            ("/admin/", Ok("/admin/")),
            ("/public/../admin", Ok("/admin")),
            ("/public/../admin/", Ok("/admin/")),
            ("/public/%2e%2e/admin", Ok("/admin")),
            ("/public/%2E%2E/admin", Ok("/admin")),
            ("/public/.%2e/admin", Ok("/admin")),
            ("//admin", Ok("/admin")),
            ("/a//b///c", Ok("/a/b/c")),
            ("/./admin", Ok("/admin")),
            ("/a/b/..", Ok("/a/")),
            ("/a/.", Ok("/a/")),
            ("/admin#x", Ok("/admin")),
            ("/private?x=/public/", Ok("/private")),
            ("/private?x=/../admin", Ok("/private")),
            ("/%61dmin", Ok("/admin")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/café", Ok("/caf%C3%A9")),
            ("/caf%C3%A9", Ok("/caf%C3%A9")),
            ("/adm\u{131}n/", Ok("/adm%C4%B1n/")),
            ("/a%20b", Ok("/a%20b")),
            ("/a%3fb", Ok("/a%3Fb")),
            ("/a%2Fb", Err(PathError::EncodedSeparator)),
            ("/a%2fb", Err(PathError::EncodedSeparator)),
            ("/a%5Cb", Err(PathError::EncodedSeparator)),
            ("/a\\b", Err(PathError::Backslash)),
            ("/public/..;/admin/", Err(PathError::Semicolon)),
            ("/admin;x/", Err(PathError::Semicolon)),
            ("/a;jsessionid=1", Err(PathError::Semicolon)),
            ("/a%3Bb", Ok("/a%3Bb")),
            ("/a%21b%40c%3Ad%2B", Ok("/a!b@c:d+")),
            ("/a!b", Ok("/a!b")),
            ("/a%25b", Ok("/a%25b")),
            ("/x?a=1;b=2", Ok("/x")),
            ("/a%00b", Err(PathError::ControlCharacter)),
            ("/a%09b", Err(PathError::ControlCharacter)),
            ("/a\tb", Err(PathError::ControlCharacter)),
            ("/a%ff", Err(PathError::InvalidUtf8)),
            ("/a%c0%af", Err(PathError::InvalidUtf8)),
            ("/a%", Err(PathError::BadEscape)),
            ("/a%2", Err(PathError::BadEscape)),
            ("/a%zz", Err(PathError::BadEscape)),
            ("/..", Err(PathError::AboveRoot)),
            ("/a/../..", Err(PathError::AboveRoot)),
            ("/%2e%2e/admin", Err(PathError::AboveRoot)),
            ("admin", Err(PathError::NotAbsolute)),
            ("", Err(PathError::NotAbsolute)),
            ("*", Err(PathError::NotAbsolute)),
            ("http://evil/admin", Err(PathError::NotAbsolute)),
        ];
        for (raw, expected) in cases {
            let got = normalize(raw);
            let got = got.as_ref().map(NormalizedPath::as_str).map_err(|e| *e);
            assert_eq!(got, *expected, "normalize({raw:?})");
        }
    }

    #[test]
    fn canonical_paths_take_the_shortcut_unchanged() {
        let cases = [
            ("/", true),
            ("/app", true),
            ("/app/", true),
            ("/a/b.c/~x/.well-known/x@y:z", true),
            ("", false),
            ("app", false),
            ("//", false),
            ("/a//b", false),
            ("/a/.", false),
            ("/a/..", false),
            ("/a/../b", false),
            ("/./a", false),
            ("/a%2Fb", false),
            ("/a%41", false),
            ("/caf\u{e9}", false),
            ("/a;b", false),
            ("/a\\b", false),
        ];
        for (path, canonical) in cases {
            assert_eq!(is_canonical(path), canonical, "{path:?}");
            if canonical {
                assert_eq!(canonicalize(path).unwrap().as_str(), path);
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Paths built from the pieces that normalization bugs are made of.
        fn tricky_path() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("/".to_owned()),
                Just("//".to_owned()),
                Just(".".to_owned()),
                Just("..".to_owned()),
                Just("%2e".to_owned()),
                Just("%2E".to_owned()),
                Just("%2f".to_owned()),
                Just("%5C".to_owned()),
                Just("%25".to_owned()),
                Just("%41".to_owned()),
                Just("%c3%a9".to_owned()),
                Just("%ff".to_owned()),
                Just("%".to_owned()),
                Just(";".to_owned()),
                Just("\\".to_owned()),
                Just("?".to_owned()),
                Just("#".to_owned()),
                Just("\u{e9}".to_owned()),
                "[a-zA-Z0-9_~-]{1,4}",
            ];
            prop::collection::vec(piece, 0..12).prop_map(|parts| format!("/{}", parts.concat()))
        }

        fn check(raw: &str) -> Result<(), TestCaseError> {
            // The shortcut for canonical paths changes nothing.
            let path = raw.split(['?', '#']).next().unwrap_or_default();
            prop_assert_eq!(normalize(raw), canonicalize(path), "{:?}", raw);
            let Ok(normalized) = normalize(raw) else {
                return Ok(());
            };
            let n = normalized.as_str();
            prop_assert!(n.starts_with('/'), "{n:?}");
            prop_assert!(!n.contains("//"), "{n:?}");
            prop_assert!(!n.contains(['\\', ';', '?', '#']), "{n:?}");
            prop_assert!(
                n.split('/')
                    .all(|segment| segment != "." && segment != ".."),
                "{n:?} has a dot segment"
            );
            let upper = n.to_ascii_uppercase();
            for encoded in ["%2F", "%5C", "%2E", "%00"] {
                prop_assert!(!upper.contains(encoded), "{n:?} keeps {encoded}");
            }
            prop_assert_eq!(normalize(n), Ok(normalized.clone()), "not idempotent");
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(10_000))]

            /// Normalization is idempotent and never yields dot segments or encoded separators.
            #[test]
            fn normalization_is_idempotent_and_clean(raw in tricky_path()) {
                check(&raw)?;
            }

            #[test]
            fn any_string_normalizes_cleanly_or_is_refused(raw in any::<String>()) {
                check(&raw)?;
            }
        }
    }
}
