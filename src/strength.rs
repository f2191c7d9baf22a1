//! How strongly a caller authenticated, and what a route (or an org) asks for: step-up
//! authentication. Pure, table-tested.
//!
//! A session records the ID token's `amr`, `acr` and `auth_time`. A route may ask for MFA
//! (`mfa = true`), for one of several `acr_values`, and for a recent login
//! (`max_auth_age_seconds`); an org may require MFA of all its users. A caller who falls short
//! is sent to log in again with what is missing ([`StepUp`]), and that login is refused if the
//! IdP's answer still falls short.

use serde::{Deserialize, Serialize};

/// The `amr` value (RFC 8176) that means multiple factors were used.
pub const MFA_AMR: &str = "mfa";

/// How the caller authenticated, as their IdP (or gatehouse's own token) said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authentication {
    /// The `[[idp]]` the session was signed in with (`None`: made by the CLI, or a token).
    pub idp: Option<String>,
    /// Authentication methods (RFC 8176), sorted. Holds `mfa` when the IdP's `acr` proved
    /// multiple factors (see `[[idp]] mfa_acr_values`).
    pub amr: Vec<String>,
    pub acr: Option<String>,
    /// When the user last actively authenticated (Unix seconds).
    pub auth_time: Option<i64>,
    /// The user's org requires MFA on every route.
    pub org_requires_mfa: bool,
}

impl Authentication {
    pub fn has_mfa(&self) -> bool {
        self.amr.iter().any(|m| m == MFA_AMR)
    }
}

/// `amr`, `acr` and `auth_time` as claims: stored with an app's refresh tokens and put in its
/// access tokens, so bearer routes can hold app callers to the same step-up rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthClaims {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// What a login must show: a route's requirement, or what a caller lacks of it. Travels in the
/// step-up login URL and in the login state, so the callback can refuse a login that falls
/// short instead of looping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUp {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mfa: bool,
    /// Any one of these `acr` values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
    /// The login must be at most this old (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

impl StepUp {
    pub fn is_empty(&self) -> bool {
        !self.mfa && self.acr_values.is_empty() && self.max_age.is_none()
    }

    /// A route's requirement, plus MFA when the caller's org requires it.
    pub fn with_org(&self, auth: &Authentication) -> Self {
        Self {
            mfa: self.mfa || auth.org_requires_mfa,
            ..self.clone()
        }
    }

    /// What `auth` lacks of this requirement at `now` (`None`: it is met). A missing
    /// `auth_time` fails a `max_age`.
    pub fn unmet(&self, auth: &Authentication, now: i64) -> Option<StepUp> {
        let missing = Self {
            mfa: self.mfa && !auth.has_mfa(),
            acr_values: if self.acr_values.is_empty()
                || auth
                    .acr
                    .as_ref()
                    .is_some_and(|acr| self.acr_values.contains(acr))
            {
                Vec::new()
            } else {
                self.acr_values.clone()
            },
            max_age: self.max_age.filter(|max| {
                auth.auth_time.is_none_or(|at| {
                    now.saturating_sub(at) > i64::try_from(*max).unwrap_or(i64::MAX)
                })
            }),
        };
        (!missing.is_empty()).then_some(missing)
    }

    /// Words for pages and audit details: "multi-factor authentication, a recent sign-in".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.mfa {
            parts.push("multi-factor authentication".to_owned());
        }
        if !self.acr_values.is_empty() {
            parts.push(format!(
                "an authentication level of {}",
                self.acr_values.join(" or ")
            ));
        }
        if let Some(max) = self.max_age {
            parts.push(format!("a sign-in within the last {max} seconds"));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(amr: &[&str], acr: Option<&str>, auth_time: Option<i64>, org: bool) -> Authentication {
        Authentication {
            idp: Some("main".into()),
            amr: amr.iter().map(|s| (*s).to_owned()).collect(),
            acr: acr.map(String::from),
            auth_time,
            org_requires_mfa: org,
        }
    }

    fn need(mfa: bool, acr: &[&str], max_age: Option<u64>) -> StepUp {
        StepUp {
            mfa,
            acr_values: acr.iter().map(|s| (*s).to_owned()).collect(),
            max_age,
        }
    }

    #[test]
    fn unmet_table() {
        let now = 10_000;
        let pwd = auth(&["pwd"], Some("urn:pwd"), Some(now - 100), false);
        let mfa = auth(&["mfa", "pwd"], Some("urn:mfa"), Some(now - 100), false);
        let org_mfa = auth(&["pwd"], None, Some(now - 100), true);
        let no_time = auth(&["mfa"], None, None, false);
        let cases: Vec<(&str, StepUp, &Authentication, Option<StepUp>)> = vec![
            ("nothing asked", StepUp::default(), &pwd, None),
            (
                "mfa asked, pwd only",
                need(true, &[], None),
                &pwd,
                Some(need(true, &[], None)),
            ),
            ("mfa asked, mfa done", need(true, &[], None), &mfa, None),
            (
                "acr matches",
                need(false, &["urn:mfa", "urn:x"], None),
                &mfa,
                None,
            ),
            (
                "acr differs",
                need(false, &["urn:mfa"], None),
                &pwd,
                Some(need(false, &["urn:mfa"], None)),
            ),
            ("recent enough", need(false, &[], Some(100)), &pwd, None),
            (
                "too old",
                need(false, &[], Some(99)),
                &pwd,
                Some(need(false, &[], Some(99))),
            ),
            (
                "no auth_time",
                need(false, &[], Some(1_000)),
                &no_time,
                Some(need(false, &[], Some(1_000))),
            ),
            (
                "only what is missing",
                need(true, &["urn:pwd"], Some(50)),
                &pwd,
                Some(need(true, &[], Some(50))),
            ),
        ];
        for (what, wanted, auth, expect) in cases {
            assert_eq!(wanted.unmet(auth, now), expect, "{what}");
        }
        // An org that requires MFA adds it to every route, even a route that asks nothing.
        let route = StepUp::default();
        assert_eq!(
            route.with_org(&org_mfa).unmet(&org_mfa, now),
            Some(need(true, &[], None))
        );
        assert_eq!(route.with_org(&pwd).unmet(&pwd, now), None);
    }

    #[test]
    fn descriptions() {
        assert_eq!(
            need(true, &["a", "b"], Some(60)).describe(),
            "multi-factor authentication, an authentication level of a or b, a sign-in within the last 60 seconds"
        );
        assert_eq!(StepUp::default().describe(), "");
    }
}
