//! `gatehouse check-config`: the effective configuration, as gatehouse will use it.

use crate::apps::config::ClientKind;
use crate::config::{IdpKind, ResponseMode, Settings};
use crate::policy::HostMatch;
use crate::policy::config::{Access, UnknownSubjects};
use crate::store::redact_url;

pub fn print(settings: &Settings) {
    print!("{}", describe(settings));
}

pub fn describe(s: &Settings) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "config: {}",
        s.source
            .as_ref()
            .map_or("built-in defaults".to_owned(), |p| p.display().to_string())
    ));
    line(format!("database: {}", redact_url(&s.database.url)));
    line(format!(
        "listen: grpc {}, http {}, admin {}",
        s.server.grpc_listen, s.server.http_listen, s.server.admin_listen
    ));
    line(format!("public_url: {}", s.server.public_url));
    line(format!("session cookie: {}", s.cookie_name()));
    line("routes (first match wins; no match = deny):".to_owned());
    for route in s.policy.routes() {
        let mut matchers = Vec::new();
        match &route.host {
            Some(HostMatch::Exact(h)) => matchers.push(format!("host {h}")),
            Some(HostMatch::Suffix(s)) => matchers.push(format!("host *{s}")),
            None => {}
        }
        matchers.push(route.path.describe());
        if let Some(methods) = &route.methods {
            matchers.push(format!("methods {}", methods.join(",")));
        }
        let mut effect = match route.access {
            Access::Public => "public".to_owned(),
            Access::Authenticated => "authenticated".to_owned(),
            Access::Deny => "deny".to_owned(),
        };
        if !route.roles.is_empty() {
            effect.push_str(&format!(", any role of {}", route.roles.join(",")));
        }
        if route.api {
            effect.push_str(", api (no redirects)");
        }
        if route.case_sensitive {
            effect.push_str(", case-sensitive");
        }
        if let Some(b) = &route.bearer {
            effect.push_str(&format!(
                ", bearer from {} for {}",
                b.issuers.join(","),
                b.audiences.join(",")
            ));
            if !b.scopes.is_empty() {
                effect.push_str(&format!(" with scopes {}", b.scopes.join(" ")));
            }
            if b.unknown_subjects == UnknownSubjects::Anonymous {
                effect.push_str(", unknown subjects anonymous");
            }
            if !route.session {
                effect.push_str(", no session cookie");
            }
        }
        if !route.step_up.is_empty() {
            effect.push_str(&format!(", step-up: {}", route.step_up.describe()));
        }
        if let Some(t) = &route.tenant {
            effect.push_str(&format!(", path names the caller's org ({})", t.param));
            if !t.any_org_roles.is_empty() {
                effect.push_str(&format!(" unless role {}", t.any_org_roles.join(",")));
            }
        }
        line(format!(
            "  [{}] {} -> {effect}",
            route.index,
            matchers.join(" ")
        ));
    }
    if s.idps.is_empty() {
        line("identity providers: none (browser login is disabled)".to_owned());
    } else {
        line("identity providers:".to_owned());
        for idp in &s.idps {
            let mode = match idp.response_mode {
                ResponseMode::Query => "query",
                ResponseMode::FormPost => "form_post",
            };
            let domains = if idp.domains.is_empty() {
                "-".to_owned()
            } else {
                idp.domains.join(",")
            };
            match idp.kind {
                IdpKind::Oidc => line(format!(
                    "  {} issuer {} client_id {} response_mode {mode} domains {domains}",
                    idp.name, idp.issuer, idp.client_id
                )),
                IdpKind::Saml => {
                    let source = match (&idp.metadata_url, &idp.metadata_file) {
                        (Some(url), _) => url.to_string(),
                        (None, Some(file)) => file.display().to_string(),
                        (None, None) => "-".to_owned(),
                    };
                    line(format!(
                        "  {} SAML metadata {source} (every {}s) domains {domains} \
                         idp_initiated {} sha1 {} sp_key {}",
                        idp.name,
                        idp.metadata_refresh_seconds,
                        if idp.allow_idp_initiated {
                            "allowed"
                        } else {
                            "refused"
                        },
                        if idp.allow_sha1 { "allowed" } else { "refused" },
                        if idp.sp_key_file.is_some() {
                            "yes"
                        } else {
                            "no"
                        },
                    ));
                    line(format!(
                        "    SP metadata for the IdP's administrator: {}{}",
                        s.public_origin(),
                        crate::saml::idp::metadata_path(&idp.name)
                    ));
                }
            }
            for (claim, values) in &idp.role_claims {
                let pairs: Vec<String> = values.iter().map(|(v, r)| format!("{v}→{r}")).collect();
                line(format!(
                    "    roles from claim {claim}: {}",
                    pairs.join(", ")
                ));
            }
        }
    }
    if s.token.enabled {
        line(format!(
            "minted token: x-gatehouse-jwt, {:?}, aud {}, ttl {}s",
            s.token.algorithm, s.token.audience, s.token.ttl_seconds
        ));
    }
    for client in &s.clients {
        let kind = match client.kind {
            ClientKind::Native => "native",
            ClientKind::Spa => "spa",
        };
        line(format!(
            "app client {} ({kind}) redirect_uris {}",
            client.client_id,
            client.redirect_uris.join(" ")
        ));
    }
    match (&s.local, &s.email) {
        (Some(local), Some(email)) => {
            let methods: Vec<&str> = local.methods.iter().map(|m| m.as_str()).collect();
            line(format!(
                "local sign-in: default methods {}, mfa {:?}, lockout after {} failures for {}s",
                methods.join(","),
                local.mfa,
                local.lockout_failures,
                local.lockout_seconds
            ));
            let transport = if email.smtp_url == "log" {
                "the log (development only: nothing is sent)".to_owned()
            } else {
                redact_url(&email.smtp_url)
            };
            line(format!(
                "email: from {} via {transport}{}",
                email.from,
                email
                    .smtp_password_env
                    .as_ref()
                    .map(|v| format!(", password from ${v}"))
                    .unwrap_or_default()
            ));
        }
        _ => line("local sign-in: off (no [local] section)".to_owned()),
    }
    if s.impersonation.enabled {
        line(format!(
            "impersonation: role {}, sessions {}s{}",
            s.impersonation.role,
            s.impersonation.session_ttl_seconds,
            if s.impersonation.allow_more_privileged {
                ", more privileged targets allowed"
            } else {
                ""
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_routes_in_order() {
        let s = Settings::from_toml(
            r#"
            [[route]]
            path_prefix = "/public/"
            access = "public"
            [[route]]
            host = "*.example.com"
            path_prefix = "/admin/"
            methods = ["GET"]
            access = "authenticated"
            roles = ["admin"]
            api = true
            [[route]]
            path_prefix = "/billing/"
            access = "authenticated"
            mfa = true
            max_auth_age_seconds = 600
            "#,
            Vec::new(),
        )
        .unwrap();
        let text = describe(&s);
        assert!(
            text.contains("[0] path_prefix /public/ -> public"),
            "{text}"
        );
        assert!(
            text.contains(
                "[1] host *.example.com path_prefix /admin/ methods GET -> authenticated, any role of admin, api (no redirects)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "[2] path_prefix /billing/ -> authenticated, step-up: multi-factor authentication, a sign-in within the last 600 seconds"
            ),
            "{text}"
        );
        assert!(text.contains("identity providers: none"), "{text}");
        assert!(text.contains("local sign-in: off"), "{text}");
    }

    #[test]
    fn describes_local_sign_in() {
        let s = Settings::from_toml(
            r#"
            [email]
            smtp_url = "smtp://mailer:secret@mail.test:587?tls=required"
            smtp_password_env = "SMTP_PW"
            from = "Acme <no-reply@acme.test>"
            [local]
            methods = ["email_code", "password"]
            mfa = "off"
            "#,
            Vec::new(),
        )
        .unwrap();
        let text = describe(&s);
        assert!(
            text.contains(
                "local sign-in: default methods email_code,password, mfa Off, lockout after 10 failures for 900s"
            ),
            "{text}"
        );
        assert!(text.contains("password from $SMTP_PW"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
