//! Home-realm discovery: which identity provider a login goes to. Pure, table-tested.

use crate::config::IdpConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdpChoice {
    /// Go to the IdP at this index.
    Use(usize),
    /// Ask for the email first; `note` explains why when a hint did not help.
    AskEmail { note: Option<String> },
    /// `idp=` named no configured IdP.
    Unknown(String),
    /// No IdP is configured at all.
    NoneConfigured,
}

/// Picks the IdP for a login:
/// 1. `idp=` names one;
/// 2. else the IdP of the org that owns the hint's exact domain (`org_idp`, stored per org),
///    when it is configured;
/// 3. else a `login_hint` email whose exact domain an IdP lists;
/// 4. else the only IdP;
/// 5. else, for a hint with an unlisted domain, the one IdP that lists no domains (a default);
/// 6. else ask for the email.
pub fn choose_idp(
    idps: &[IdpConfig],
    idp: Option<&str>,
    org_idp: Option<&str>,
    login_hint: Option<&str>,
) -> IdpChoice {
    if idps.is_empty() {
        return IdpChoice::NoneConfigured;
    }
    if let Some(name) = idp.filter(|n| !n.is_empty()) {
        return match idps.iter().position(|i| i.name == name) {
            Some(index) => IdpChoice::Use(index),
            None => IdpChoice::Unknown(name.to_owned()),
        };
    }
    if let Some(index) = org_idp.and_then(|name| idps.iter().position(|i| i.name == name)) {
        return IdpChoice::Use(index);
    }
    let domain = login_hint.and_then(hint_domain);
    if let Some(domain) = &domain
        && let Some(index) = idps
            .iter()
            .position(|i| i.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
    {
        return IdpChoice::Use(index);
    }
    if idps.len() == 1 {
        return IdpChoice::Use(0);
    }
    let defaults: Vec<usize> = idps
        .iter()
        .enumerate()
        .filter(|(_, i)| i.domains.is_empty())
        .map(|(index, _)| index)
        .collect();
    match (domain, defaults.as_slice()) {
        (Some(_), [only]) => IdpChoice::Use(*only),
        (Some(domain), _) => IdpChoice::AskEmail {
            note: Some(format!("There is no sign-in configured for {domain}.")),
        },
        (None, _) => IdpChoice::AskEmail { note: None },
    }
}

/// The exact domain of an email-shaped hint (one `@`, both sides non-empty).
pub fn hint_domain(hint: &str) -> Option<String> {
    let (local, domain) = hint.trim().split_once('@')?;
    (!local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        .then(|| domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idp(name: &str, domains: &[&str]) -> IdpConfig {
        toml::from_str(&format!(
            "name = \"{name}\"\nissuer = \"https://{name}.test/\"\nclient_id = \"c\"\ndomains = {domains:?}"
        ))
        .unwrap()
    }

    /// configured IdPs, `idp=`, the org's IdP, `login_hint`, expected choice
    type Row<'a> = (
        &'a [IdpConfig],
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        IdpChoice,
    );

    #[test]
    fn choice_table() {
        let two = vec![
            idp("acme", &["acme.test"]),
            idp("globex", &["globex.test", "globex.example"]),
        ];
        let with_default = vec![idp("acme", &["acme.test"]), idp("social", &[])];
        let one = vec![idp("only", &["acme.test"])];
        let ask = IdpChoice::AskEmail { note: None };
        let cases: Vec<Row> = vec![
            (&[], None, None, None, IdpChoice::NoneConfigured),
            (&two, Some("globex"), None, None, IdpChoice::Use(1)),
            (
                &two,
                Some("globex"),
                None,
                Some("a@acme.test"),
                IdpChoice::Use(1),
            ),
            (
                &two,
                Some("nope"),
                None,
                None,
                IdpChoice::Unknown("nope".into()),
            ),
            (
                &two,
                None,
                None,
                Some("carol@globex.test"),
                IdpChoice::Use(1),
            ),
            (
                &two,
                None,
                None,
                Some("Carol@GLOBEX.example"),
                IdpChoice::Use(1),
            ),
            (&two, None, None, Some("alice@acme.test"), IdpChoice::Use(0)),
            // exact domain only, no suffix match
            (
                &two,
                None,
                None,
                Some("x@sub.acme.test"),
                IdpChoice::AskEmail {
                    note: Some("There is no sign-in configured for sub.acme.test.".into()),
                },
            ),
            (&two, None, None, Some("a@b@acme.test"), ask.clone()),
            (&two, None, None, Some("not-an-email"), ask.clone()),
            (&two, None, None, None, ask.clone()),
            (&two, Some(""), None, None, ask.clone()),
            (&one, None, None, None, IdpChoice::Use(0)),
            (
                &one,
                None,
                None,
                Some("x@elsewhere.test"),
                IdpChoice::Use(0),
            ),
            (
                &with_default,
                None,
                None,
                Some("x@elsewhere.test"),
                IdpChoice::Use(1),
            ),
            (
                &with_default,
                None,
                None,
                Some("x@acme.test"),
                IdpChoice::Use(0),
            ),
            (&with_default, None, None, None, ask.clone()),
            // The org's own IdP wins over domain lists, loses to idp=, and an unknown one
            // falls back to discovery.
            (
                &two,
                None,
                Some("globex"),
                Some("x@acme.test"),
                IdpChoice::Use(1),
            ),
            (
                &two,
                Some("acme"),
                Some("globex"),
                Some("x@acme.test"),
                IdpChoice::Use(0),
            ),
            (
                &two,
                None,
                Some("gone"),
                Some("x@acme.test"),
                IdpChoice::Use(0),
            ),
            (
                &with_default,
                None,
                Some("acme"),
                Some("x@elsewhere.test"),
                IdpChoice::Use(0),
            ),
        ];
        for (idps, name, org, hint, want) in cases {
            assert_eq!(
                choose_idp(idps, name, org, hint),
                want,
                "idp={name:?} org={org:?} hint={hint:?}"
            );
        }
    }
}
