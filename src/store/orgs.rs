//! Organizations and the exact email domains that place users in them.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::sql::{insert_audit, insert_revocation};
use super::{Actor, AuditEvent, AuditKind, Outcome, Store, StoreError, with_pool, with_write_tx};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub auto_enable: bool,
    pub domains: Vec<String>,
    /// The `[[idp]]` its users sign in with (home-realm discovery), if not the default.
    pub idp: Option<String>,
    /// Extra authorize parameters for its logins (e.g. the Auth0 `connection`).
    pub idp_params: BTreeMap<String, String>,
    /// Every route needs MFA for its users.
    pub require_mfa: bool,
    /// The sign-in methods it allows (`sso`, `email_code`, `password`, `totp`); `None`: the
    /// default (see `crate::local::methods`).
    pub methods: Option<Vec<String>>,
}

/// A change to an org's sign-in settings; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSignInChange {
    /// An empty name clears it (back to home-realm discovery by `[[idp]] domains`).
    #[serde(default)]
    pub idp: Option<String>,
    #[serde(default)]
    pub idp_params: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub require_mfa: Option<bool>,
    #[serde(default)]
    pub auto_enable: Option<bool>,
    /// Checked by the caller (`crate::admin`); an empty list goes back to the default.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
}

#[derive(sqlx::FromRow)]
struct OrgRow {
    id: Uuid,
    name: String,
    auto_enable: bool,
    idp: Option<String>,
    idp_params: Option<String>,
    require_mfa: bool,
    methods: Option<String>,
}

const ORG_COLUMNS: &str =
    "o.id, o.name, o.auto_enable, o.idp, o.idp_params, o.require_mfa, o.methods";

impl OrgRow {
    fn into_org(self, domains: Vec<String>) -> Org {
        Org {
            id: self.id,
            name: self.name,
            auto_enable: self.auto_enable,
            domains,
            idp: self.idp,
            // Written only by `set_org_signin` from a map; unreadable JSON means none.
            idp_params: self
                .idp_params
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default(),
            require_mfa: self.require_mfa,
            methods: self
                .methods
                .map(|m| m.split(',').map(str::to_owned).collect()),
        }
    }
}

impl Store {
    /// Creates an org with its domains. Fails with `Conflict` if the name or a domain is taken.
    pub async fn create_org(
        &self,
        name: &str,
        domains: &[String],
        auto_enable: bool,
        now: i64,
    ) -> Result<Org, StoreError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("org name must not be empty".into()));
        }
        let mut domains = domains
            .iter()
            .map(|d| normalize_domain(d))
            .collect::<Result<Vec<_>, _>>()?;
        domains.sort();
        domains.dedup();
        let id = Uuid::new_v4();
        let result: Result<(), StoreError> = async {
            with_write_tx!(self, |tx| {
                sqlx::query(
                    "INSERT INTO organizations (id, name, auto_enable, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(name)
                .bind(auto_enable)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                for domain in &domains {
                    sqlx::query("INSERT INTO org_domains (domain, org_id) VALUES ($1, $2)")
                        .bind(domain)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
            });
            Ok(())
        }
        .await;
        match result {
            Err(e) if e.is_unique_violation() => Err(StoreError::Conflict(format!(
                "an org named {name:?} or one of the domains {domains:?} already exists"
            ))),
            Err(e) => Err(e),
            Ok(()) => Ok(Org {
                id,
                name: name.to_owned(),
                auto_enable,
                domains,
                idp: None,
                idp_params: BTreeMap::new(),
                require_mfa: false,
                methods: None,
            }),
        }
    }

    /// The org owning exactly this domain (no suffix matching).
    pub async fn org_for_domain(&self, domain: &str) -> Result<Option<Org>, StoreError> {
        let domain = domain.to_ascii_lowercase();
        let row: Option<OrgRow> = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {ORG_COLUMNS} FROM organizations o \
                 JOIN org_domains d ON d.org_id = o.id WHERE d.domain = $1"
            ))
            .bind(&domain)
            .fetch_optional(pool)
            .await?
        });
        match row {
            Some(row) => Ok(Some(self.org_with_domains(row).await?)),
            None => Ok(None),
        }
    }

    /// Every org with its domains, by name.
    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        let rows: Vec<OrgRow> = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {ORG_COLUMNS} FROM organizations o ORDER BY o.name"
            ))
            .fetch_all(pool)
            .await?
        });
        let domains: Vec<(Uuid, String)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT org_id, domain FROM org_domains ORDER BY domain")
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| {
                let own = domains
                    .iter()
                    .filter(|(org, _)| *org == row.id)
                    .map(|(_, d)| d.clone())
                    .collect();
                row.into_org(own)
            })
            .collect())
    }

    pub async fn org_by_id(&self, id: Uuid) -> Result<Option<Org>, StoreError> {
        let row: Option<OrgRow> = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {ORG_COLUMNS} FROM organizations o WHERE o.id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        match row {
            Some(row) => Ok(Some(self.org_with_domains(row).await?)),
            None => Ok(None),
        }
    }

    async fn org_with_domains(&self, row: OrgRow) -> Result<Org, StoreError> {
        let domains: Vec<(String,)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT domain FROM org_domains WHERE org_id = $1 ORDER BY domain")
                .bind(row.id)
                .fetch_all(pool)
                .await?
        });
        Ok(row.into_org(domains.into_iter().map(|(d,)| d).collect()))
    }

    /// The org with this name, or with this id.
    pub async fn org_by_name_or_id(&self, name_or_id: &str) -> Result<Option<Org>, StoreError> {
        if let Ok(id) = Uuid::parse_str(name_or_id) {
            return self.org_by_id(id).await;
        }
        let row: Option<OrgRow> = with_pool!(self, |pool| {
            sqlx::query_as(&format!(
                "SELECT {ORG_COLUMNS} FROM organizations o WHERE o.name = $1"
            ))
            .bind(name_or_id.trim())
            .fetch_optional(pool)
            .await?
        });
        match row {
            Some(row) => Ok(Some(self.org_with_domains(row).await?)),
            None => Ok(None),
        }
    }

    /// Whether the org requires MFA of its users.
    pub async fn org_requires_mfa(&self, id: Uuid) -> Result<bool, StoreError> {
        let row: Option<(bool,)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT require_mfa FROM organizations WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.is_some_and(|(required,)| required))
    }

    /// Changes an org's sign-in settings, audited as `org_updated`. The caller checks that a
    /// named IdP is configured. Cached sessions of its users are dropped on every replica, so
    /// a new MFA requirement applies at once.
    pub async fn set_org_signin(
        &self,
        name_or_id: &str,
        change: &OrgSignInChange,
        actor: impl Into<Actor>,
        now: i64,
    ) -> Result<Org, StoreError> {
        let actor: Actor = actor.into();
        let org = self
            .org_by_name_or_id(name_or_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no org {name_or_id:?}")))?;
        let idp = match &change.idp {
            Some(idp) => Some(idp.trim().to_owned()).filter(|i| !i.is_empty()),
            None => org.idp.clone(),
        };
        let params = change.idp_params.clone().unwrap_or(org.idp_params.clone());
        if params
            .keys()
            .any(|k| k.is_empty() || RESERVED_PARAMS.contains(&k.as_str()))
        {
            return Err(StoreError::Invalid(format!(
                "authorize parameters may not be empty or one gatehouse sets itself ({})",
                RESERVED_PARAMS.join(", ")
            )));
        }
        let params_json = (!params.is_empty())
            .then(|| serde_json::to_string(&params))
            .transpose()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let require_mfa = change.require_mfa.unwrap_or(org.require_mfa);
        let auto_enable = change.auto_enable.unwrap_or(org.auto_enable);
        let methods = match &change.methods {
            Some(list) if list.is_empty() => None,
            Some(list) => Some(list.clone()),
            None => org.methods.clone(),
        };
        let methods_text = methods.as_ref().map(|m| m.join(","));
        let detail = format!(
            "org {}: idp={} params={} require_mfa={require_mfa} auto_enable={auto_enable} \
             methods={}",
            org.name,
            idp.as_deref().unwrap_or("(default)"),
            params_json.as_deref().unwrap_or("{}"),
            methods_text.as_deref().unwrap_or("(default)"),
        );
        with_write_tx!(self, |tx| {
            sqlx::query(
                "UPDATE organizations SET idp = $2, idp_params = $3, require_mfa = $4, \
                 auto_enable = $5, methods = $6 WHERE id = $1",
            )
            .bind(org.id)
            .bind(idp.as_deref())
            .bind(params_json.as_deref())
            .bind(require_mfa)
            .bind(auto_enable)
            .bind(methods_text.as_deref())
            .execute(&mut *tx)
            .await?;
            if require_mfa != org.require_mfa {
                // Every session caches its org's rule: drop them all (rare, and safe).
                insert_revocation!(&mut *tx, None::<Uuid>, None::<&str>, now);
            }
            let event = AuditEvent::new(AuditKind::OrgUpdated, Outcome::Success, now)
                .by(&actor)
                .detail(detail);
            insert_audit!(&mut *tx, &event);
        });
        Ok(Org {
            idp,
            idp_params: params,
            require_mfa,
            auto_enable,
            methods,
            ..org
        })
    }
}

/// Authorize parameters an org may not override: gatehouse sets them for every login.
const RESERVED_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "login_hint",
    "prompt",
    "max_age",
    "acr_values",
];

fn normalize_domain(raw: &str) -> Result<String, StoreError> {
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !domain.starts_with('.');
    if valid {
        Ok(domain)
    } else {
        Err(StoreError::Invalid(format!("{raw:?} is not a domain name")))
    }
}
