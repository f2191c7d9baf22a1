//! The request's authority (`Host`, `:authority`, `X-Forwarded-Host`), validated.
//!
//! Host routes compare names, so the authority must be a name and nothing else: a host name or
//! an IP literal, with an optional port. Anything else is refused (400) rather than matched as
//! an odd string that no host route names, which would let it fall through to laxer routes:
//! - `secure.test,127.0.0.1:10000` (what Envoy makes of two `Host` headers),
//! - `x@secure.test` (userinfo), `secure.test/x`, `secure.test x`, `secure.test%00`,
//! - `127.1` or `0x7f.0.0.1` (IPv4 shorthands that resolvers expand, but that are not the
//!   dotted quad a route names),
//! - non-ASCII names (their IDNA form is what DNS and the upstream see).
//!
//! The accepted form is canonicalized for matching: lower case, no port, no trailing dot.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why an authority was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the request has no host")]
    Empty,
    #[error("the host is not a host name or IP address with an optional port")]
    Invalid,
    #[error("the port is not a number from 1 to 65535")]
    Port,
}

/// A valid authority's host, canonical: lower-case, without port or trailing dot; IPv6 literals
/// keep their brackets (`[::1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHost(String);

impl RequestHost {
    /// Validates `host[:port]` as sent by the client.
    pub fn parse(raw: &str) -> Result<Self, HostError> {
        if raw.is_empty() {
            return Err(HostError::Empty);
        }
        if !raw.is_ascii() {
            return Err(HostError::Invalid);
        }
        let (host, port) = split_port(raw)?;
        let canonical = if let Some(literal) = host.strip_prefix('[') {
            let inner = literal.strip_suffix(']').ok_or(HostError::Invalid)?;
            let ip: Ipv6Addr = inner.parse().map_err(|_| HostError::Invalid)?;
            format!("[{ip}]")
        } else {
            let name = host.strip_suffix('.').unwrap_or(host);
            if !is_host_name(name) {
                return Err(HostError::Invalid);
            }
            name.to_ascii_lowercase()
        };
        if let Some(port) = port {
            check_port(port)?;
        }
        Ok(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `host[:port]`; an IPv6 literal's colons stay inside its brackets.
fn split_port(raw: &str) -> Result<(&str, Option<&str>), HostError> {
    if raw.starts_with('[') {
        let end = raw.find(']').ok_or(HostError::Invalid)?;
        let (host, rest) = raw.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(HostError::Invalid),
        };
    }
    Ok(match raw.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (raw, None),
    })
}

fn check_port(port: &str) -> Result<(), HostError> {
    let digits = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(n) if digits && n > 0 => Ok(()),
        _ => Err(HostError::Port),
    }
}

/// A DNS name (labels of letters, digits, `-` and `_`, 1–63 bytes, no leading or trailing
/// `-`, at most 253 bytes) or a dotted-quad IPv4 address. A name whose last label is numeric
/// must be a dotted quad: resolvers read `127.1` and `0x7f.1` as addresses too.
fn is_host_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !labels_ok {
        return false;
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.len() > 2 && last[..2].eq_ignore_ascii_case("0x"));
    if numeric {
        // std refuses shorthands, octal-looking leading zeros and out-of-range octets.
        return name.parse::<Ipv4Addr>().is_ok();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_table() {
        let cases: &[(&str, Result<&str, HostError>)] = &[
            ("secure.test", Ok("secure.test")),
            ("Secure.TEST", Ok("secure.test")),
            ("secure.test:443", Ok("secure.test")),
            ("secure.test.", Ok("secure.test")),
            ("secure.test.:8443", Ok("secure.test")),
            ("localhost", Ok("localhost")),
            ("my_service.internal", Ok("my_service.internal")),
            ("127.0.0.1", Ok("127.0.0.1")),
            ("127.0.0.1:10000", Ok("127.0.0.1")),
            ("[::1]", Ok("[::1]")),
            ("[::1]:8080", Ok("[::1]")),
            ("[0:0:0:0:0:0:0:1]", Ok("[::1]")),
            ("a-b.c", Ok("a-b.c")),
            ("", Err(HostError::Empty)),
            // what the attack found
            ("secure.test,127.0.0.1:10000", Err(HostError::Invalid)),
            ("secure.test,other.test", Err(HostError::Invalid)),
            ("x@secure.test", Err(HostError::Invalid)),
            ("secure.test%00", Err(HostError::Invalid)),
            ("secure.test/x", Err(HostError::Invalid)),
            ("secure.test x", Err(HostError::Invalid)),
            ("secure.test\0", Err(HostError::Invalid)),
            // ports
            ("secure.test:", Err(HostError::Port)),
            ("secure.test:0", Err(HostError::Port)),
            ("secure.test:65536", Err(HostError::Port)),
            ("secure.test:+80", Err(HostError::Port)),
            ("secure.test:080080", Err(HostError::Port)),
            ("secure.test:80:80", Err(HostError::Port)),
            ("[::1]x", Err(HostError::Invalid)),
            ("[::1]:", Err(HostError::Port)),
            // names
            ("secure..test", Err(HostError::Invalid)),
            (".secure.test", Err(HostError::Invalid)),
            ("secure.test..", Err(HostError::Invalid)),
            ("-secure.test", Err(HostError::Invalid)),
            ("secure-.test", Err(HostError::Invalid)),
            ("sécure.test", Err(HostError::Invalid)),
            ("ｓecure.test", Err(HostError::Invalid)),
            ("secure.test\\x", Err(HostError::Invalid)),
            ("secure.test#x", Err(HostError::Invalid)),
            ("secure.test?x", Err(HostError::Invalid)),
            // IPv4 shorthands and IPv6 without brackets
            ("127.1", Err(HostError::Invalid)),
            ("0x7f.0.0.1", Err(HostError::Invalid)),
            ("127.0.0.01", Err(HostError::Invalid)),
            ("256.0.0.1", Err(HostError::Invalid)),
            ("2130706433", Err(HostError::Invalid)),
            ("::1", Err(HostError::Invalid)),
            ("[::1%25eth0]", Err(HostError::Invalid)),
            ("[secure.test]", Err(HostError::Invalid)),
        ];
        for (raw, want) in cases {
            let got = RequestHost::parse(raw);
            let got = got.as_ref().map(RequestHost::as_str).map_err(|e| *e);
            assert_eq!(got, *want, "{raw:?}");
        }
        let long_label = format!("{}.test", "a".repeat(64));
        assert_eq!(RequestHost::parse(&long_label), Err(HostError::Invalid));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn label() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9]([a-zA-Z0-9_-]{0,10}[a-zA-Z0-9])?"
        }

        /// Authorities built from the pieces that confuse host matching.
        fn tricky_authority() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                label(),
                Just(".".to_owned()),
                Just(":".to_owned()),
                Just(",".to_owned()),
                Just("@".to_owned()),
                Just("/".to_owned()),
                Just(" ".to_owned()),
                Just("%00".to_owned()),
                Just("[".to_owned()),
                Just("]".to_owned()),
                Just("::1".to_owned()),
                Just("\0".to_owned()),
                Just("\u{e9}".to_owned()),
                Just("\u{212a}".to_owned()),
                "[0-9]{1,6}",
            ];
            prop::collection::vec(piece, 1..8).prop_map(|parts| parts.concat())
        }

        fn check(raw: &str) -> Result<(), TestCaseError> {
            let Ok(host) = RequestHost::parse(raw) else {
                return Ok(());
            };
            let h = host.as_str();
            if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                prop_assert!(inner.parse::<Ipv6Addr>().is_ok(), "{h:?}");
            } else {
                prop_assert!(
                    !h.is_empty()
                        && h.bytes().all(|b| b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || b == b'.'
                            || b == b'-'
                            || b == b'_'),
                    "{raw:?} gave {h:?}"
                );
                prop_assert!(!h.ends_with('.') && !h.starts_with('.') && !h.contains(".."));
            }
            prop_assert_eq!(RequestHost::parse(h), Ok(host.clone()), "not idempotent");
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(10_000))]

            /// Whatever is accepted is a plain host name or IP literal, canonical and stable.
            #[test]
            fn accepted_hosts_are_plain_names(raw in tricky_authority()) {
                check(&raw)?;
            }

            #[test]
            fn any_string_is_a_plain_name_or_refused(raw in any::<String>()) {
                check(&raw)?;
            }

            /// Every well-formed name with an optional port is accepted, lower-cased.
            #[test]
            fn well_formed_names_are_accepted(
                labels in prop::collection::vec(label(), 0..4),
                tld in "[a-zA-Z]([a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?",
                port in prop::option::of(1u16..),
            ) {
                let mut name = labels.join(".");
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&tld);
                let raw = match port {
                    Some(p) => format!("{name}:{p}"),
                    None => name.clone(),
                };
                prop_assert_eq!(
                    RequestHost::parse(&raw).map(|h| h.as_str().to_owned()),
                    Ok(name.to_ascii_lowercase())
                );
            }
        }
    }
}
