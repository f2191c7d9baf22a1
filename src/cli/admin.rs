//! Admin commands that work on the configured database: `migrate`, `org`, `user`, `session`,
//! `audit`.
//!
//! Changes that cached sessions must not outlive are recorded as revocations in the same
//! transaction (see [`crate::session::revocations`]); afterwards the command asks the local
//! server, if one runs, to apply them now, so the change is in effect when the command returns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use chrono::DateTime;

use super::{AuditArgs, CliError, Command, KeysCommand, OrgCommand, SessionCommand, UserCommand};
use crate::clock::unix_now;
use crate::config::Settings;
use crate::session::{self, Lifetimes};
use crate::store::{AuditEvent, AuditFilter, AuditKind, Outcome, Store, User};

/// Who the audit trail says did it.
const ACTOR: &str = "cli";

pub async fn run(settings: Settings, command: Command) -> Result<(), CliError> {
    let store = Store::connect(&settings.database.url, 2).await?;
    if matches!(command, Command::Migrate) {
        store.migrate().await?;
        eprintln!(
            "migrations applied to {}",
            crate::store::redact_url(&settings.database.url)
        );
        return Ok(());
    }
    // Admin commands bring the schema up to date too: a fresh install needs no extra step.
    if settings.database.migrate {
        store.migrate().await?;
    }
    let now = unix_now();
    let changed = match command {
        Command::Org(OrgCommand::Add {
            name,
            domains,
            auto_enable,
        }) => {
            let org = store.create_org(&name, &domains, auto_enable, now).await?;
            store
                .record_audit(
                    &AuditEvent::new(AuditKind::OrgCreated, Outcome::Success, now)
                        .actor(ACTOR)
                        .detail(format!("{} ({})", org.name, org.domains.join(","))),
                )
                .await?;
            println!("{}", org.id);
            eprintln!(
                "created org {:?} for {}{}",
                org.name,
                org.domains.join(", "),
                if org.auto_enable {
                    " (new users enabled automatically)"
                } else {
                    ""
                }
            );
            false
        }
        Command::User(cmd) => user(&store, cmd, now).await?,
        Command::Session(cmd) => session(&store, &settings, cmd, now).await?,
        Command::Audit(args) => {
            audit(&store, args).await?;
            false
        }
        Command::Keys(cmd) => keys(&store, &settings, cmd, now).await?,
        Command::Serve | Command::Migrate | Command::CheckConfig => false,
    };
    if changed {
        nudge_local_server(&settings).await;
    }
    store.close().await;
    Ok(())
}

/// `keys rotate` and `keys list`. Returns whether the local server should reload.
async fn keys(
    store: &Store,
    settings: &Settings,
    cmd: KeysCommand,
    now: i64,
) -> Result<bool, CliError> {
    match cmd {
        KeysCommand::Rotate { now: at_once } => {
            let (kid, activates_at) = crate::tokens::rotate(settings, store, now, at_once)
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?;
            store
                .record_audit(
                    &AuditEvent::new(AuditKind::KeyRotated, Outcome::Success, now)
                        .actor(ACTOR)
                        .detail(format!("kid {kid}, signs from {}", rfc3339(activates_at))),
                )
                .await?;
            println!("{kid}");
            eprintln!(
                "added signing key {kid}: published now, signing from {}",
                rfc3339(activates_at)
            );
            Ok(true)
        }
        KeysCommand::List => {
            let keys = store.signing_keys().await?;
            println!("{:<24}  {:<6}  {:<25}  STATE", "KID", "ALG", "SIGNS FROM");
            let current = keys
                .iter()
                .rev()
                .find(|k| k.activates_at <= now)
                .map(|k| k.kid.clone());
            for k in &keys {
                let state = if Some(&k.kid) == current.as_ref() {
                    "current"
                } else if k.activates_at > now {
                    "next"
                } else {
                    "retired (published until its tokens expire)"
                };
                println!(
                    "{:<24}  {:<6}  {:<25}  {state}",
                    k.kid,
                    k.algorithm,
                    rfc3339(k.activates_at)
                );
            }
            Ok(false)
        }
    }
}

/// Returns whether cached sessions may now be stale.
async fn user(store: &Store, cmd: UserCommand, now: i64) -> Result<bool, CliError> {
    match cmd {
        UserCommand::List => {
            let users = store.list_users().await?;
            println!(
                "{:<36}  {:<8}  {:<36}  {:<20}  EMAIL",
                "ID", "ENABLED", "ORG", "ROLES"
            );
            for u in users {
                println!(
                    "{:<36}  {:<8}  {:<36}  {:<20}  {}",
                    u.id,
                    if u.enabled { "yes" } else { "no" },
                    u.org_id
                        .map(|o| o.to_string())
                        .unwrap_or_else(|| "-".into()),
                    if u.roles.is_empty() {
                        "-".into()
                    } else {
                        u.roles.join(",")
                    },
                    u.email
                );
            }
            Ok(false)
        }
        UserCommand::Show { email } => {
            let user = store.require_user(&email).await?;
            show_user(store, &user, now).await?;
            Ok(false)
        }
        UserCommand::Enable { email } => {
            let user = store.require_user(&email).await?;
            let changed = store.set_user_enabled(user.id, true, ACTOR, now).await?;
            eprintln!(
                "{} {}",
                user.email,
                if changed {
                    "enabled"
                } else {
                    "was already enabled"
                }
            );
            Ok(changed)
        }
        UserCommand::Disable { email } => {
            let user = store.require_user(&email).await?;
            let changed = store.set_user_enabled(user.id, false, ACTOR, now).await?;
            eprintln!(
                "{} {}",
                user.email,
                if changed {
                    "disabled; their sessions are revoked"
                } else {
                    "was already disabled"
                }
            );
            Ok(changed)
        }
        UserCommand::Grant { email, role } => {
            let user = store.require_user(&email).await?;
            let changed = store.set_role(user.id, &role, true, ACTOR, now).await?;
            eprintln!(
                "{} {} {role:?}",
                user.email,
                if changed {
                    "now has role"
                } else {
                    "already had role"
                }
            );
            Ok(changed)
        }
        UserCommand::Revoke { email, role } => {
            let user = store.require_user(&email).await?;
            let changed = store.set_role(user.id, &role, false, ACTOR, now).await?;
            eprintln!(
                "{} {} {role:?}",
                user.email,
                if changed {
                    "no longer has role"
                } else {
                    "did not have role"
                }
            );
            Ok(changed)
        }
    }
}

async fn show_user(store: &Store, user: &User, now: i64) -> Result<(), CliError> {
    println!("id:       {}", user.id);
    println!("email:    {}", user.email);
    println!("name:     {}", user.name.as_deref().unwrap_or("-"));
    let org = match user.org_id {
        Some(id) => match store.org_by_id(id).await? {
            Some(org) => format!("{} ({})", org.name, org.id),
            None => id.to_string(),
        },
        None => "-".to_owned(),
    };
    println!("org:      {org}");
    println!("enabled:  {}", if user.enabled { "yes" } else { "no" });
    println!(
        "roles:    {}",
        if user.roles.is_empty() {
            "-".to_owned()
        } else {
            user.roles.join(",")
        }
    );
    println!("created:  {}", rfc3339(user.created_at));
    println!(
        "sessions: {} live",
        store.count_live_sessions(user.id, now).await?
    );
    let identities = store.identities_of(user.id).await?;
    if identities.is_empty() {
        println!("identities: none");
    } else {
        println!("identities:");
        for i in identities {
            println!(
                "  {} {} (idp {}, email {}, verified {}, last login {})",
                i.issuer,
                i.subject,
                i.idp,
                i.email.as_deref().unwrap_or("-"),
                i.email_verified.map_or("-".to_owned(), |v| v.to_string()),
                rfc3339(i.last_login_at)
            );
        }
    }
    Ok(())
}

async fn session(
    store: &Store,
    settings: &Settings,
    cmd: SessionCommand,
    now: i64,
) -> Result<bool, CliError> {
    match cmd {
        SessionCommand::Create { email } => {
            let (user, created) = store
                .ensure_user(&email, settings.provisioning.new_users_enabled, ACTOR, now)
                .await?;
            if created {
                eprintln!(
                    "created user {} ({})",
                    user.email,
                    if user.enabled {
                        "enabled"
                    } else {
                        "not enabled yet: `gatehouse user enable` lets them in"
                    }
                );
            }
            let lifetimes = Lifetimes::from_config(&settings.session);
            let token = session::create(store, lifetimes, user.id, None, None, now).await?;
            store
                .record_audit(
                    &AuditEvent::new(AuditKind::SessionCreated, Outcome::Success, now)
                        .user(user.id)
                        .actor(ACTOR),
                )
                .await?;
            println!("{}", token.as_str());
            eprintln!(
                "send it as: Cookie: {}={}",
                settings.cookie_name(),
                token.as_str()
            );
            Ok(false)
        }
        SessionCommand::Revoke { user, all } => {
            let target = match (user, all) {
                (Some(email), false) => Some(store.require_user(&email).await?),
                (None, true) => None,
                _ => return Err(CliError::Usage("give --user EMAIL or --all".into())),
            };
            let count = store
                .revoke_sessions(target.as_ref().map(|u| u.id), ACTOR, now)
                .await?;
            eprintln!(
                "revoked {count} session(s){}",
                target
                    .map(|u| format!(" of {}", u.email))
                    .unwrap_or_default()
            );
            Ok(true)
        }
    }
}

async fn audit(store: &Store, args: AuditArgs) -> Result<(), CliError> {
    let user_id = match &args.user {
        Some(email) => Some(store.require_user(email).await?.id),
        None => None,
    };
    let kind = match &args.kind {
        Some(k) => Some(AuditKind::parse(k).ok_or_else(|| {
            let known: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
            CliError::Usage(format!("unknown kind {k:?}; one of: {}", known.join(", ")))
        })?),
        None => None,
    };
    let since = match &args.since {
        Some(s) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| CliError::Usage(format!("--since {s:?}: {e} (want RFC 3339)")))?
                .timestamp(),
        ),
        None => None,
    };
    let records = store
        .list_audit(&AuditFilter {
            user_id,
            kind,
            since,
            limit: Some(args.limit),
        })
        .await?;
    for r in records {
        if args.json {
            let mut value = serde_json::to_value(&r).unwrap_or_default();
            value["time"] = serde_json::Value::String(rfc3339(r.at));
            println!("{value}");
        } else {
            println!(
                "{}  {:<17} {:<7}  {}  {}{}{}",
                rfc3339(r.at),
                r.kind,
                r.outcome,
                r.email.as_deref().or(r.actor.as_deref()).unwrap_or("-"),
                r.idp
                    .as_deref()
                    .map(|i| format!("idp={i} "))
                    .unwrap_or_default(),
                r.ip.as_deref()
                    .map(|i| format!("ip={i} "))
                    .unwrap_or_default(),
                r.detail.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn rfc3339(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| unix.to_string())
}

/// Asks a gatehouse running on this machine to apply revocations now. Best effort: with no
/// server running there is no cache to update, and remote replicas learn within
/// `session.revocation_poll_ms` (or at once, through PostgreSQL `NOTIFY`).
async fn nudge_local_server(settings: &Settings) {
    let admin_listen = settings.server.admin_listen;
    let ip = match admin_listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!(
        "http://{}/admin/v1/revocations/sync",
        SocketAddr::new(ip, admin_listen.port())
    );
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut request = client.post(&url);
    if let Some(token) = settings.admin_token() {
        request = request.bearer_auth(secrecy::ExposeSecret::expose_secret(&token));
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => {
            tracing::debug!("local gatehouse applied the change");
        }
        Ok(r) => eprintln!(
            "note: the local gatehouse answered {} to {url}; it will apply the change within its poll interval",
            r.status()
        ),
        Err(e) if e.is_connect() => {
            tracing::debug!("no local gatehouse at {url}");
        }
        Err(e) => eprintln!("note: could not reach the local gatehouse at {url}: {e}"),
    }
}
