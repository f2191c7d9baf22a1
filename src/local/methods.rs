//! Which sign-in methods an address may use: its org's list, else SSO when an IdP claims the
//! domain, else `[local] methods`. Pure, table-tested.
//!
//! The principle: an org with SSO never accepts a local credential unless an administrator
//! listed local methods for it explicitly (`gatehouse org set ORG --methods …`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// One way to sign in (or, for `totp`, a required second step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The org's (or the default) identity provider.
    Sso,
    /// A 6-digit code and a link, sent by email.
    EmailCode,
    Password,
    /// TOTP after the first factor; listed for an org, every user of it must use it.
    Totp,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::Sso,
        Method::EmailCode,
        Method::Password,
        Method::Totp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Sso => "sso",
            Method::EmailCode => "email_code",
            Method::Password => "password",
            Method::Totp => "totp",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// A local credential (everything but SSO).
    pub fn is_local(self) -> bool {
        self != Method::Sso
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `sso,email_code,…` (commas or spaces), sorted and deduplicated. An empty list is
/// refused: an org must have some way in.
pub fn parse_list(text: &str) -> Result<Vec<Method>, String> {
    let mut methods = Vec::new();
    for word in text
        .split([',', ' '])
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        let method = Method::parse(word).ok_or_else(|| {
            format!("unknown sign-in method {word:?} (expected sso, email_code, password or totp)")
        })?;
        methods.push(method);
    }
    methods.sort();
    methods.dedup();
    if !methods
        .iter()
        .any(|m| matches!(m, Method::Sso | Method::EmailCode | Method::Password))
    {
        return Err(
            "list at least one way in: sso, email_code or password (totp is a second step)".into(),
        );
    }
    Ok(methods)
}

/// `sso,email_code` as stored and shown.
pub fn list_string(methods: &[Method]) -> String {
    methods
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// `[local] mfa`: whether local users may, or must, add TOTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MfaPolicy {
    /// TOTP is neither offered nor asked.
    Off,
    /// Users may enroll; once enrolled, it is asked at every sign-in.
    #[default]
    Optional,
    /// Every local user must enroll at their next sign-in.
    Required,
}

/// What is known about an address's domain.
#[derive(Debug, Clone, Default)]
pub struct DomainFacts<'a> {
    /// The methods its org lists (`org set --methods`), if it set any.
    pub org_methods: Option<&'a [Method]>,
    /// Its org signs in with a named `[[idp]]`.
    pub org_has_idp: bool,
    /// An `[[idp]]` lists the domain (`domains = [...]`).
    pub idp_lists_domain: bool,
    /// `[local] methods`, when local sign-in is configured.
    pub local_default: Option<&'a [Method]>,
}

/// The methods an address may use.
pub fn methods_for(facts: &DomainFacts<'_>) -> Vec<Method> {
    let Some(default) = facts.local_default else {
        // No [local] section: everything signs in as before.
        return vec![Method::Sso];
    };
    if let Some(listed) = facts.org_methods {
        return listed.to_vec();
    }
    if facts.org_has_idp || facts.idp_lists_domain {
        return vec![Method::Sso];
    }
    default.to_vec()
}

/// Whether a user with these methods must pass TOTP (`enrolled`: they already have it).
pub fn totp_required(methods: &[Method], policy: MfaPolicy, enrolled: bool) -> bool {
    match policy {
        MfaPolicy::Off => false,
        MfaPolicy::Required => true,
        MfaPolicy::Optional => enrolled || methods.contains(&Method::Totp),
    }
}

/// Whether TOTP may be set up at all for these methods.
pub fn totp_offered(methods: &[Method], policy: MfaPolicy) -> bool {
    policy != MfaPolicy::Off || methods.contains(&Method::Totp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Method::*;

    #[test]
    fn lists_parse_sorted_and_refuse_nonsense() {
        assert_eq!(
            parse_list("password, sso,email_code,password"),
            Ok(vec![Sso, EmailCode, Password])
        );
        assert_eq!(parse_list("email_code totp"), Ok(vec![EmailCode, Totp]));
        assert!(parse_list("").is_err());
        assert!(
            parse_list("totp").is_err(),
            "a second step alone is no way in"
        );
        assert!(parse_list("sso,magic").unwrap_err().contains("magic"));
        assert_eq!(list_string(&[Sso, Password]), "sso,password");
    }

    #[test]
    fn methods_follow_org_then_idp_domains_then_default() {
        let default = [EmailCode, Password];
        let org = [Sso, Password];
        let cases: &[(DomainFacts, &[Method])] = &[
            // No [local]: SSO whatever the org says.
            (
                DomainFacts {
                    org_methods: Some(&org),
                    ..Default::default()
                },
                &[Sso],
            ),
            // An org's explicit list wins, even with an IdP.
            (
                DomainFacts {
                    org_methods: Some(&org),
                    org_has_idp: true,
                    local_default: Some(&default),
                    ..Default::default()
                },
                &[Sso, Password],
            ),
            // An org with an IdP and no list: SSO only.
            (
                DomainFacts {
                    org_has_idp: true,
                    local_default: Some(&default),
                    ..Default::default()
                },
                &[Sso],
            ),
            // A domain an [[idp]] lists: SSO only.
            (
                DomainFacts {
                    idp_lists_domain: true,
                    local_default: Some(&default),
                    ..Default::default()
                },
                &[Sso],
            ),
            // Anything else: the default.
            (
                DomainFacts {
                    local_default: Some(&default),
                    ..Default::default()
                },
                &[EmailCode, Password],
            ),
        ];
        for (facts, want) in cases {
            assert_eq!(methods_for(facts), *want, "{facts:?}");
        }
    }

    #[test]
    fn totp_policy() {
        use MfaPolicy::*;
        let plain = [Password];
        let with_totp = [Password, Totp];
        // (methods, policy, enrolled) -> required
        let cases: &[(&[Method], MfaPolicy, bool, bool)] = &[
            (&plain, Off, true, false),
            (&plain, Optional, false, false),
            (&plain, Optional, true, true),
            (&with_totp, Optional, false, true),
            (&plain, Required, false, true),
        ];
        for (methods, policy, enrolled, want) in cases {
            assert_eq!(
                totp_required(methods, *policy, *enrolled),
                *want,
                "{methods:?} {policy:?} enrolled={enrolled}"
            );
        }
        assert!(!totp_offered(&plain, Off));
        assert!(totp_offered(&plain, Optional));
    }
}
