//! Organizations and the exact email domains that place users in them.

use uuid::Uuid;

use super::{Store, StoreError, with_pool, with_write_tx};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub auto_enable: bool,
    pub domains: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct OrgRow {
    id: Uuid,
    name: String,
    auto_enable: bool,
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
            }),
        }
    }

    /// The org owning exactly this domain (no suffix matching).
    pub async fn org_for_domain(&self, domain: &str) -> Result<Option<Org>, StoreError> {
        let domain = domain.to_ascii_lowercase();
        let row: Option<OrgRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT o.id, o.name, o.auto_enable FROM organizations o \
                 JOIN org_domains d ON d.org_id = o.id WHERE d.domain = $1",
            )
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
            sqlx::query_as("SELECT id, name, auto_enable FROM organizations ORDER BY name")
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
            .map(|row| Org {
                domains: domains
                    .iter()
                    .filter(|(org, _)| *org == row.id)
                    .map(|(_, d)| d.clone())
                    .collect(),
                id: row.id,
                name: row.name,
                auto_enable: row.auto_enable,
            })
            .collect())
    }

    pub async fn org_by_id(&self, id: Uuid) -> Result<Option<Org>, StoreError> {
        let row: Option<OrgRow> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT id, name, auto_enable FROM organizations WHERE id = $1")
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
        Ok(Org {
            id: row.id,
            name: row.name,
            auto_enable: row.auto_enable,
            domains: domains.into_iter().map(|(d,)| d).collect(),
        })
    }
}

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
