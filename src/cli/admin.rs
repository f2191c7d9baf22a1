//! Admin commands that work on the configured database: `migrate`, `org`, `user`, `session`,
//! `audit`.
//!
//! Changes that cached sessions must not outlive are recorded as revocations in the same
//! transaction (see [`crate::session::revocations`]); afterwards the command asks the local
//! server, if one runs, to apply them now, so the change is in effect when the command returns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::{AuditArgs, CliError, Command, KeysCommand, OrgCommand, SessionCommand, UserCommand};
use crate::admin::{Admin, AdminError, AuditQuery, UserDetail, rfc3339};
use crate::clock::unix_now;
use crate::config::Settings;
use crate::store::{OrgSignInChange, Store};

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
    let admin = Admin::new(&store, &settings, crate::admin::cli_actor());
    let now = unix_now();
    let changed = match command {
        Command::Org(OrgCommand::Add {
            name,
            domains,
            auto_enable,
        }) => {
            let org = admin.create_org(&name, &domains, auto_enable, now).await?;
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
        Command::Org(OrgCommand::Set {
            org,
            idp,
            params,
            clear_params,
            require_mfa,
            no_require_mfa,
            auto_enable,
            no_auto_enable,
            methods,
        }) => {
            let flag = |on: bool, off: bool| match (on, off) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let change = OrgSignInChange {
                idp,
                idp_params: match (clear_params, params.is_empty()) {
                    (true, _) => Some(Default::default()),
                    (false, false) => Some(params.into_iter().collect()),
                    (false, true) => None,
                },
                require_mfa: flag(require_mfa, no_require_mfa),
                auto_enable: flag(auto_enable, no_auto_enable),
                methods: methods.map(|m| {
                    m.split([',', ' '])
                        .map(str::trim)
                        .filter(|w| !w.is_empty())
                        .map(String::from)
                        .collect()
                }),
            };
            let org = admin.set_org_signin(&org, &change, now).await?;
            println!(
                "org {:?}: idp={} params={:?} require_mfa={} auto_enable={} methods={}",
                org.name,
                org.idp.as_deref().unwrap_or("(discovery)"),
                org.idp_params,
                org.require_mfa,
                org.auto_enable,
                org.methods
                    .as_ref()
                    .map_or_else(|| "(default)".to_owned(), |m| m.join(","))
            );
            // Sessions of its users may now need MFA: replicas drop their caches.
            true
        }
        Command::Org(OrgCommand::List) => {
            println!(
                "{:<36}  {:<11}  {:<3}  {:<12}  {:<24}  DOMAINS",
                "ID", "AUTO-ENABLE", "MFA", "IDP", "NAME"
            );
            let yes_no = |b: bool| if b { "yes" } else { "no" };
            for org in admin.list_orgs().await? {
                println!(
                    "{:<36}  {:<11}  {:<3}  {:<12}  {:<24}  {}",
                    org.id,
                    yes_no(org.auto_enable),
                    yes_no(org.require_mfa),
                    org.idp.as_deref().unwrap_or("-"),
                    org.name,
                    org.domains.join(",")
                );
            }
            false
        }
        Command::User(cmd) => user(&admin, cmd, now).await?,
        Command::Session(cmd) => session(&admin, cmd, now).await?,
        Command::Audit(args) => {
            audit(&admin, args).await?;
            false
        }
        Command::Keys(cmd) => keys(&admin, cmd, now).await?,
        Command::Serve | Command::Migrate | Command::CheckConfig => false,
    };
    if changed {
        nudge_local_server(&settings).await;
    }
    store.close().await;
    Ok(())
}

impl From<AdminError> for CliError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Store(se) => Self::Store(se),
            other => Self::Usage(other.to_string()),
        }
    }
}

/// `keys rotate` and `keys list`. Returns whether the local server should reload.
async fn keys(admin: &Admin<'_>, cmd: KeysCommand, now: i64) -> Result<bool, CliError> {
    match cmd {
        KeysCommand::Rotate { now: at_once } => {
            let key = admin.rotate_key(at_once, now).await?;
            println!("{}", key.kid);
            eprintln!(
                "added signing key {}: published now, signing from {}",
                key.kid,
                rfc3339(key.activates_at)
            );
            Ok(true)
        }
        KeysCommand::List => {
            println!("{:<24}  {:<6}  {:<25}  STATE", "KID", "ALG", "SIGNS FROM");
            for k in admin.keys(now).await? {
                let state = match k.state {
                    "retired" => "retired (published until its tokens expire)",
                    other => other,
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
async fn user(admin: &Admin<'_>, cmd: UserCommand, now: i64) -> Result<bool, CliError> {
    let said = |email: &str, changed: bool, yes: &str, no: &str| {
        eprintln!("{email} {}", if changed { yes } else { no });
    };
    match cmd {
        UserCommand::List { search } => {
            println!(
                "{:<36}  {:<8}  {:<36}  {:<20}  EMAIL",
                "ID", "ENABLED", "ORG", "ROLES"
            );
            let mut cursor: Option<String> = None;
            loop {
                let page = admin
                    .list_users(search.as_deref(), cursor.as_deref(), Some(1000))
                    .await?;
                for u in &page.users {
                    println!(
                        "{:<36}  {:<8}  {:<36}  {:<20}  {}",
                        u.id,
                        if u.enabled { "yes" } else { "no" },
                        u.org_id.map_or_else(|| "-".into(), |o| o.to_string()),
                        if u.roles.is_empty() {
                            "-".into()
                        } else {
                            u.roles.join(",")
                        },
                        u.email
                    );
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            Ok(false)
        }
        UserCommand::Show { user } => {
            print_user(&admin.user_detail(&user, now).await?);
            Ok(false)
        }
        UserCommand::Enable { user } => {
            let c = admin.set_enabled(&user, true, now).await?;
            said(&c.user.email, c.changed, "enabled", "was already enabled");
            Ok(c.changed)
        }
        UserCommand::Disable { user } => {
            let c = admin.set_enabled(&user, false, now).await?;
            said(
                &c.user.email,
                c.changed,
                "disabled; their sessions are revoked",
                "was already disabled",
            );
            Ok(c.changed)
        }
        UserCommand::Grant { user, role } => {
            let c = admin.set_role(&user, &role, true, now).await?;
            said(
                &c.user.email,
                c.changed,
                &format!("now has role {role:?}"),
                &format!("already had role {role:?}"),
            );
            Ok(c.changed)
        }
        UserCommand::Revoke { user, role } => {
            let c = admin.set_role(&user, &role, false, now).await?;
            said(
                &c.user.email,
                c.changed,
                &format!("no longer has role {role:?}"),
                &format!("did not have role {role:?}"),
            );
            Ok(c.changed)
        }
        UserCommand::Unlink {
            user,
            issuer,
            subject,
        } => {
            let u = admin.unlink_identity(&user, &issuer, &subject, now).await?;
            eprintln!(
                "{}: identity ({issuer}, {subject}) removed; their sessions are revoked",
                u.email
            );
            Ok(true)
        }
        UserCommand::SetPassword { user } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| CliError::Usage(format!("reading the password from stdin: {e}")))?;
            let password = line.trim_end_matches(['\r', '\n']).to_owned();
            let u = admin.set_password(&user, password, now).await?;
            eprintln!(
                "{}: password set; their other sessions and refresh tokens are revoked",
                u.email
            );
            Ok(true)
        }
        UserCommand::Unlock { user } => {
            let c = admin.unlock(&user, now).await?;
            said(
                &c.user.email,
                c.changed,
                "unlocked",
                "was not locked (failure count cleared)",
            );
            Ok(false)
        }
        UserCommand::MfaReset { user } => {
            let c = admin.mfa_reset(&user, now).await?;
            said(
                &c.user.email,
                c.changed,
                "no longer has TOTP; they set it up again at their next sign-in",
                "had no TOTP",
            );
            Ok(false)
        }
    }
}

fn print_user(d: &UserDetail) {
    let user = &d.user;
    println!("id:       {}", user.id);
    println!("email:    {}", user.email);
    println!("name:     {}", user.name.as_deref().unwrap_or("-"));
    let org = match (&d.org, user.org_id) {
        (Some(org), _) => format!("{} ({})", org.name, org.id),
        (None, Some(id)) => id.to_string(),
        (None, None) => "-".to_owned(),
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
    if !d.idp_roles.is_empty() {
        let mapped: Vec<String> = d
            .idp_roles
            .iter()
            .map(|m| format!("{} (idp {})", m.role, m.idp))
            .collect();
        println!("          from IdP claims: {}", mapped.join(", "));
    }
    println!("created:  {}", rfc3339(user.created_at));
    println!("sessions: {} live", d.live_sessions);
    if d.identities.is_empty() {
        println!("identities: none");
    } else {
        println!("identities:");
        for i in &d.identities {
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
}

async fn session(admin: &Admin<'_>, cmd: SessionCommand, now: i64) -> Result<bool, CliError> {
    match cmd {
        SessionCommand::Create { email } => {
            let created = admin.create_session(&email, now).await?;
            if created.user_created {
                eprintln!(
                    "created user {} ({})",
                    created.user.email,
                    if created.user.enabled {
                        "enabled"
                    } else {
                        "not enabled yet: `gatehouse user enable` lets them in"
                    }
                );
            }
            println!("{}", created.token);
            eprintln!(
                "send it as: Cookie: {}={}",
                created.cookie_name, created.token
            );
            Ok(false)
        }
        SessionCommand::Revoke { user, all } => {
            let target = match (user, all) {
                (Some(user), false) => Some(user),
                (None, true) => None,
                _ => return Err(CliError::Usage("give --user USER or --all".into())),
            };
            let count = admin.revoke_sessions(target.as_ref(), now).await?;
            eprintln!(
                "revoked {count} session(s){}",
                target.map(|u| format!(" of {u}")).unwrap_or_default()
            );
            Ok(true)
        }
    }
}

/// Prints the most recent `--limit` matching events, oldest first.
async fn audit(admin: &Admin<'_>, args: AuditArgs) -> Result<(), CliError> {
    let mut events = Vec::new();
    let mut query = AuditQuery {
        user: args.user,
        kind: args.kind,
        outcome: args.outcome,
        idp: args.idp,
        since: args.since,
        until: args.until,
        limit: None,
        cursor: None,
    };
    let wanted = usize::try_from(args.limit.max(0)).unwrap_or(0);
    while events.len() < wanted {
        let page_size = (wanted - events.len()).min(1000);
        query.limit = Some(i64::try_from(page_size).unwrap_or(1000));
        let page = admin.audit(&query).await?;
        events.extend(page.events);
        match page.next_cursor {
            Some(next) => query.cursor = Some(next),
            None => break,
        }
    }
    events.reverse();
    for r in events {
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
