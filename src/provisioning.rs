//! What an IdP's word about an email address is allowed to do. Pure, table-tested.
//!
//! An ID token's `email` is the IdP's claim, not a fact. gatehouse lets it do two things, and
//! only when the IdP has both verified the address and is trusted for its domain:
//! - **link**: attach a new `(issuer, subject)` to the existing user with that address;
//! - **place**: put a new user in the org that owns the address's domain (which may also
//!   enable it).
//!
//! Which domains an IdP may vouch for is `[[idp]] trusted_email_domains`: by default its
//! home-realm `domains`, or, for an IdP that lists none (a catch-all such as Auth0 with social
//! logins), any domain except those the other configured IdPs sign in. Otherwise a corporate IdP, or any social login, could assert
//! `ceo@othercustomer.test` as verified and walk into that customer's account or org.
//!
//! Addresses are compared in [`Email`]'s canonical form, so a non-ASCII address links only to
//! a byte-identical one. A non-ASCII local part is never placed by its domain: `Ken@acme.test`
//! spelled with U+212A KELVIN SIGN is not anyone acme.test knows.

use std::fmt;

use crate::config::IdpConfig;
use crate::email::Email;

/// The email domains an IdP is trusted to vouch for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailTrust {
    Any,
    /// Any domain except these: the default for a catch-all IdP, which must not vouch for the
    /// domains other configured IdPs sign in.
    AnyExcept(Vec<String>),
    /// Exact domains (no subdomains); ASCII compared without regard to case.
    Domains(Vec<String>),
}

impl EmailTrust {
    /// `trusted_email_domains` if set (`["*"]` is any domain), else the IdP's `domains`, else
    /// any domain but those the other IdPs in `all` list (`domains` or trusted domains).
    pub fn of(idp: &IdpConfig, all: &[IdpConfig]) -> Self {
        match &idp.trusted_email_domains {
            Some(list) if list.iter().any(|d| d == "*") => Self::Any,
            Some(list) => Self::Domains(list.clone()),
            None if !idp.domains.is_empty() => Self::Domains(idp.domains.clone()),
            None => {
                let others: Vec<String> = all
                    .iter()
                    .filter(|other| other.name != idp.name)
                    .flat_map(|other| {
                        let trusted = other.trusted_email_domains.iter().flatten();
                        other.domains.iter().chain(trusted)
                    })
                    .filter(|d| *d != "*")
                    .cloned()
                    .collect();
                if others.is_empty() {
                    Self::Any
                } else {
                    Self::AnyExcept(others)
                }
            }
        }
    }

    pub fn covers(&self, email: &Email) -> bool {
        match self {
            Self::Any => true,
            Self::AnyExcept(domains) => !domains.iter().any(|d| email.domain_is(d)),
            Self::Domains(domains) => domains.iter().any(|d| email.domain_is(d)),
        }
    }
}

/// Why an assertion could not link or place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// `email_verified` was not the JSON boolean `true`.
    Unverified,
    /// The IdP is not trusted for this domain.
    UntrustedDomain { idp: String, domain: String },
    /// The local part is not ASCII: no domain placement.
    NonAsciiLocalPart,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unverified => f.write_str("the identity provider did not verify the address"),
            Self::UntrustedDomain { idp, domain } => write!(
                f,
                "identity provider {idp:?} is not trusted for email domain {domain} \
                 (see trusted_email_domains)"
            ),
            Self::NonAsciiLocalPart => f.write_str("the address is not ASCII"),
        }
    }
}

/// What a sign-in's email may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouching {
    /// Verified by an IdP trusted for its domain: recorded with the identity, so a later
    /// trusted sign-in never links into an account an untrusted one created.
    pub vouched: bool,
    /// May attach to an existing user with this address.
    pub link: bool,
    /// May be placed in the org owning the domain.
    pub place_in_org: bool,
    /// Why linking or placement is off (empty when both are allowed).
    pub limits: Vec<Limit>,
}

impl Vouching {
    /// For a sign-in without an email: it can do nothing.
    pub fn nothing() -> Self {
        Self {
            vouched: false,
            link: false,
            place_in_org: false,
            limits: Vec::new(),
        }
    }

    /// The limits as one line, for the audit trail.
    pub fn describe_limits(&self) -> Option<String> {
        (!self.limits.is_empty()).then(|| {
            self.limits
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// Applies the rules to one sign-in. `link_by_verified_email` is the provisioning switch.
pub fn vouch(
    idp: &str,
    email: &Email,
    email_verified: Option<bool>,
    trust: &EmailTrust,
    link_by_verified_email: bool,
) -> Vouching {
    let mut limits = Vec::new();
    let verified = email_verified == Some(true);
    if !verified {
        limits.push(Limit::Unverified);
    }
    let trusted = trust.covers(email);
    if !trusted {
        limits.push(Limit::UntrustedDomain {
            idp: idp.to_owned(),
            domain: email.domain().to_owned(),
        });
    }
    let ascii_local = email.local_part().is_ascii();
    if !ascii_local {
        limits.push(Limit::NonAsciiLocalPart);
    }
    let vouched = verified && trusted;
    Vouching {
        vouched,
        link: vouched && link_by_verified_email,
        place_in_org: vouched && ascii_local,
        limits,
    }
}

/// The local roles an IdP's claims grant (`[[idp]] role_claims`: claim → value → role). A
/// claim may be a string or an array of strings; other values grant nothing. Sorted, no
/// repeats.
pub fn mapped_roles(
    rules: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Vec<String> {
    use serde_json::Value;
    let mut roles: Vec<String> = rules
        .iter()
        .flat_map(|(claim, values)| {
            let held: Vec<&str> = match claims.get(claim) {
                Some(Value::String(one)) => vec![one.as_str()],
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            held.into_iter()
                .filter_map(|value| values.get(value).cloned())
                .collect::<Vec<_>>()
        })
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idp(name: &str, domains: &[&str], trusted: Option<&[&str]>) -> IdpConfig {
        let mut text = format!(
            "name = \"{name}\"\nissuer = \"https://{name}.test/\"\nclient_id = \"c\"\ndomains = {domains:?}\n"
        );
        if let Some(t) = trusted {
            text.push_str(&format!("trusted_email_domains = {t:?}\n"));
        }
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn trust_defaults() {
        let alone = [idp("x", &[], None)];
        assert_eq!(EmailTrust::of(&alone[0], &alone), EmailTrust::Any);
        let acme = idp("acme", &["acme.test"], None);
        assert_eq!(
            EmailTrust::of(&acme, &[]),
            EmailTrust::Domains(vec!["acme.test".into()])
        );
        assert_eq!(
            EmailTrust::of(&idp("x", &["acme.test"], Some(&["*"])), &[]),
            EmailTrust::Any
        );
        assert_eq!(
            EmailTrust::of(&idp("x", &[], Some(&[])), &[]),
            EmailTrust::Domains(vec![])
        );
        assert_eq!(
            EmailTrust::of(
                &idp("x", &["acme.test"], Some(&["acme.test", "acme.example"])),
                &[]
            ),
            EmailTrust::Domains(vec!["acme.test".into(), "acme.example".into()])
        );
        // A catch-all beside a customer's IdP vouches for everything but that customer.
        let globex = idp("globex", &[], Some(&["globex.test"]));
        let social = idp("social", &[], None);
        let all = [acme, globex, social.clone()];
        let trust = EmailTrust::of(&social, &all);
        assert_eq!(
            trust,
            EmailTrust::AnyExcept(vec!["acme.test".into(), "globex.test".into()])
        );
        assert!(trust.covers(&Email::parse("a@gmail.test").unwrap()));
        assert!(!trust.covers(&Email::parse("ceo@ACME.test").unwrap()));
        assert!(!trust.covers(&Email::parse("ceo@globex.test").unwrap()));
    }

    /// email, email_verified, trust, linking on → (vouched, link, place)
    type Row<'a> = (
        &'a str,
        Option<bool>,
        &'a EmailTrust,
        bool,
        (bool, bool, bool),
    );

    #[test]
    fn vouching_table() {
        let any = EmailTrust::Any;
        let acme = EmailTrust::Domains(vec!["acme.test".into()]);
        let punycode = EmailTrust::Domains(vec!["xn--bcher-kva.test".into()]);
        let unicode = EmailTrust::Domains(vec!["bücher.test".into()]);
        let nothing = EmailTrust::Domains(vec![]);
        #[rustfmt::skip]
        let cases: Vec<Row> = vec![
            ("ken@acme.test", Some(true), &any, true, (true, true, true)),
            ("Ken@ACME.test", Some(true), &acme, true, (true, true, true)),
            ("ken@acme.test", Some(true), &acme, false, (true, false, true)),
            // only the JSON boolean true verifies
            ("ken@acme.test", Some(false), &acme, true, (false, false, false)),
            ("ken@acme.test", None, &acme, true, (false, false, false)),
            // an IdP vouches only for its domains: exact, no subdomains, no lookalikes
            ("ken@globex.test", Some(true), &acme, true, (false, false, false)),
            ("ken@sub.acme.test", Some(true), &acme, true, (false, false, false)),
            ("ken@acme.test.evil", Some(true), &acme, true, (false, false, false)),
            ("ken@acme.test", Some(true), &nothing, true, (false, false, false)),
            // Kelvin sign, dotless ı, fullwidth: vouched for the domain, but never placed
            // (and, being non-ASCII, they link only to a byte-identical address)
            ("\u{212a}en@acme.test", Some(true), &acme, true, (true, true, false)),
            ("admın@acme.test", Some(true), &acme, true, (true, true, false)),
            ("ｋen@acme.test", Some(true), &acme, true, (true, true, false)),
            // a domain in Unicode vs punycode form is a different domain
            ("jo@bücher.test", Some(true), &punycode, true, (false, false, false)),
            ("jo@xn--bcher-kva.test", Some(true), &punycode, true, (true, true, true)),
            ("jo@bücher.test", Some(true), &unicode, true, (true, true, true)),
            ("jo@xn--bcher-kva.test", Some(true), &unicode, true, (false, false, false)),
            ("jo@acme.tеst", Some(true), &acme, true, (false, false, false)), // Cyrillic е
        ];
        for (raw, verified, trust, linking, (vouched, link, place)) in cases {
            let email = Email::parse(raw).unwrap();
            let v = vouch("main", &email, verified, trust, linking);
            let what = format!("{raw} verified={verified:?} trust={trust:?} linking={linking}");
            assert_eq!(
                (v.vouched, v.link, v.place_in_org),
                (vouched, link, place),
                "{what}"
            );
            assert_eq!(
                v.limits.is_empty(),
                vouched && place,
                "{what}: {:?}",
                v.limits
            );
        }
        let v = vouch(
            "social",
            &Email::parse("ceo@acme.test").unwrap(),
            Some(true),
            &nothing,
            true,
        );
        assert_eq!(
            v.describe_limits().as_deref(),
            Some(
                "identity provider \"social\" is not trusted for email domain acme.test (see trusted_email_domains)"
            )
        );
    }
}

#[cfg(test)]
mod role_mapping_tests {
    use super::mapped_roles;
    use serde_json::json;

    #[test]
    fn claims_to_roles_table() {
        let rules: std::collections::BTreeMap<_, _> = toml::from_str(
            r#"groups = { engineering = "dev", admins = "admin", ops = "dev" }
               department = { finance = "billing" }"#,
        )
        .unwrap();
        let cases = [
            (json!({"groups": ["engineering", "sales"]}), vec!["dev"]),
            (
                json!({"groups": ["engineering", "ops", "admins"]}),
                vec!["admin", "dev"],
            ),
            (
                json!({"groups": "admins", "department": "finance"}),
                vec!["admin", "billing"],
            ),
            (json!({"groups": []}), vec![]),
            (json!({"groups": [1, {"x": 1}], "department": 7}), vec![]),
            (json!({"GROUPS": ["admins"], "groups": ["Admins"]}), vec![]),
            (json!({}), vec![]),
        ];
        for (claims, want) in cases {
            let claims = claims.as_object().unwrap().clone();
            assert_eq!(mapped_roles(&rules, &claims), want, "{claims:?}");
        }
    }
}
