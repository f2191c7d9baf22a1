//! Email addresses as gatehouse stores and compares them.
//!
//! An address is compared in a canonical form that can never merge two addresses a mail
//! system would keep apart:
//! - an all-ASCII address is lower-cased, ASCII letters only (`Alice@Acme.TEST` →
//!   `alice@acme.test`): every IdP and mail system treats these as one mailbox;
//! - an address with any non-ASCII character is kept exactly as asserted. Unicode
//!   lower-casing or normalization would merge distinct strings: `K` (U+212A KELVIN SIGN)
//!   lower-cases to ASCII `k`, fullwidth `ａ` normalizes to `a`, and an IDN domain has a
//!   second, punycode spelling. Such an address matches only a byte-identical one.
//!
//! Invalid data cannot exist past [`Email::parse`].

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an email address")]
pub struct EmailError(pub String);

/// A syntactically plausible address (one `@`, non-empty local part and domain, no spaces or
/// control characters) in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        let valid = match trimmed.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && trimmed.len() <= 320
                    && !trimmed.chars().any(|c| c.is_control() || c.is_whitespace())
            }
            None => false,
        };
        if !valid {
            return Err(EmailError(raw.to_owned()));
        }
        Ok(Self(if trimmed.is_ascii() {
            trimmed.to_ascii_lowercase()
        } else {
            trimmed.to_owned()
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the only `@`.
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, d)| d)
    }

    pub fn local_part(&self) -> &str {
        self.0.split_once('@').map_or("", |(l, _)| l)
    }

    /// Whether the domain (after the `@`) is this one. ASCII domains compare without regard
    /// to ASCII case; any other domain only byte for byte.
    pub fn domain_is(&self, domain: &str) -> bool {
        let ours = self.domain();
        if ours.is_ascii() && domain.is_ascii() {
            ours.eq_ignore_ascii_case(domain.trim_end_matches('.'))
        } else {
            ours == domain
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Alice@Acme.Test", Some("alice@acme.test")),
            (" bob@acme.test ", Some("bob@acme.test")),
            ("a@b@acme.test", None),
            ("@acme.test", None),
            ("alice@", None),
            ("alice", None),
            ("al ice@acme.test", None),
            ("al\nice@acme.test", None),
            ("al\u{a0}ice@acme.test", None),
            // Non-ASCII addresses are kept exactly: no Unicode case mapping.
            ("\u{212a}en@acme.test", Some("\u{212a}en@acme.test")),
            ("Admın@acme.test", Some("Admın@acme.test")),
            ("ａdmin@acme.test", Some("ａdmin@acme.test")),
            ("Jo@Bücher.test", Some("Jo@Bücher.test")),
            ("jo@xn--bcher-kva.TEST", Some("jo@xn--bcher-kva.test")),
        ];
        for (raw, want) in cases {
            assert_eq!(
                Email::parse(raw).ok().as_ref().map(Email::as_str),
                *want,
                "{raw:?}"
            );
        }
        let too_long = format!("{}@acme.test", "a".repeat(320));
        assert!(Email::parse(&too_long).is_err());
    }

    #[test]
    fn distinct_addresses_stay_distinct() {
        let ken = Email::parse("ken@acme.test").unwrap();
        for lookalike in [
            "\u{212a}en@acme.test", // KELVIN SIGN lower-cases to ASCII k
            "KEN@acme.test\u{200b}",
            "ｋen@acme.test", // fullwidth
        ] {
            if let Ok(other) = Email::parse(lookalike) {
                assert_ne!(other, ken, "{lookalike:?} merged with ken@acme.test");
            }
        }
        // Dotless ı and dotted İ: Unicode case mapping would turn these into ASCII i.
        let admin = Email::parse("admin@acme.test").unwrap();
        for lookalike in ["admın@acme.test", "ADMİN@acme.test"] {
            assert_ne!(Email::parse(lookalike).unwrap(), admin, "{lookalike:?}");
        }
        assert_eq!(Email::parse("KEN@ACME.test").unwrap(), ken);
    }

    #[test]
    fn domain_comparison() {
        let e = Email::parse("a@Acme.Test").unwrap();
        assert!(e.domain_is("acme.test") && e.domain_is("ACME.TEST"));
        assert!(!e.domain_is("sub.acme.test") && !e.domain_is("cme.test"));
        let idn = Email::parse("a@bücher.test").unwrap();
        assert!(idn.domain_is("bücher.test"));
        assert!(!idn.domain_is("xn--bcher-kva.test"));
        assert!(!idn.domain_is("BÜCHER.test"));
        let puny = Email::parse("a@xn--bcher-kva.test").unwrap();
        assert!(!puny.domain_is("bücher.test"));
        assert_eq!(e.local_part(), "a");
        assert_eq!(e.domain(), "acme.test");
    }
}
