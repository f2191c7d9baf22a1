//! Races (issue 17), on SQLite and PostgreSQL: simultaneous first logins (one account, one org
//! domain), replicas starting together on an empty database, `keys rotate` on two replicas at
//! once, and role changes racing with a cache fill. Each "replica" is its own connection pool
//! (store level) or its own gatehouse process (on one database).

use std::sync::Arc;

use crate::support;

use gatehouse::email::Email;
use gatehouse::provisioning::{self, EmailTrust};
use gatehouse::store::{ProvisionRequest, Store};
use support::processes::{Gatehouse, run_cli};
use support::{Backend, Stack, StackOptions, TestDb, base_config};

on_both_backends!(
    fifty_first_logins_of_one_account_make_one_user,
    fifty_first_logins_of_one_org_domain_place_everyone_in_it,
    replicas_starting_together_on_an_empty_database_make_one_key,
    keys_rotate_on_two_replicas_at_once_leaves_one_current_key,
    role_changes_racing_with_cache_fills_end_in_the_final_state,
);

const NOW: i64 = 1_800_000_000;

fn first_login(subject: &str, email: &str) -> ProvisionRequest {
    let email = Email::parse(email).expect("email");
    let vouching = provisioning::vouch("main", &email, Some(true), &EmailTrust::Any, true);
    ProvisionRequest {
        issuer: "https://idp.test/".into(),
        subject: subject.into(),
        idp: "main".into(),
        email: Some(email),
        email_verified: Some(true),
        vouching,
        name: None,
        new_users_enabled: false,
        may_create: true,
        ip: None,
        user_agent: None,
        now: NOW,
    }
}

/// Runs `requests` at once, half on each store ("replica"); the outcomes' user ids (or the
/// errors).
async fn provision_at_once(
    stores: [Store; 2],
    requests: Vec<ProvisionRequest>,
) -> Vec<Result<uuid::Uuid, String>> {
    let start = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, request) in requests.into_iter().enumerate() {
        let store = stores[i % 2].clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            store
                .provision(&request)
                .await
                .map(|o| o.user().id)
                .map_err(|e| e.to_string())
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

async fn fifty_first_logins_of_one_account_make_one_user(backend: Backend) {
    let db = TestDb::create(backend).await;
    let stores = [db.store().await, db.store().await];
    let requests = (0..50)
        .map(|_| first_login("dup-sub", "dup@acme.test"))
        .collect();
    let outcomes = provision_at_once(stores.clone(), requests).await;
    let ids: Vec<uuid::Uuid> = outcomes
        .iter()
        .map(|o| {
            *o.as_ref()
                .unwrap_or_else(|e| panic!("a first login failed: {e}"))
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "every login is the same user: {ids:?}"
    );
    let users = stores[0].list_users(None, None, 100).await.unwrap();
    assert_eq!(users.len(), 1, "{users:#?}");
    let identities = stores[0].identities_of(ids[0]).await.unwrap();
    assert_eq!(identities.len(), 1, "{identities:#?}");
}

async fn fifty_first_logins_of_one_org_domain_place_everyone_in_it(backend: Backend) {
    let db = TestDb::create(backend).await;
    let stores = [db.store().await, db.store().await];
    let org = stores[0]
        .create_org("Initech", &["initech.test".into()], false, NOW)
        .await
        .unwrap();
    let requests = (0..50)
        .map(|i| first_login(&format!("sub-{i}"), &format!("user{i}@initech.test")))
        .collect();
    let outcomes = provision_at_once(stores.clone(), requests).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let users = stores[0].list_users(None, None, 100).await.unwrap();
    assert_eq!(users.len(), 50);
    assert!(users.iter().all(|u| u.org_id == Some(org.id)), "{users:#?}");
    let orgs = stores[0].list_orgs().await.unwrap();
    assert_eq!(orgs.len(), 1, "{orgs:#?}");
}

const TOKEN_CONFIG: &str = "\n[token]\nenabled = true\nencryption_key = \"KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=\"\n";

/// A config for a replica on `db` with minted tokens on.
fn replica_config(db: &TestDb) -> String {
    let urls = support::StackUrls {
        base: "http://127.0.0.1:10000".into(),
        database: db.url.clone(),
        issuers: Vec::new(),
    };
    format!("{}{TOKEN_CONFIG}", base_config(&urls))
}

/// The `keys list` lines (header dropped).
async fn keys(dir: &std::path::Path, config: &std::path::Path) -> Vec<String> {
    let out = run_cli(
        &["--config", config.to_str().unwrap(), "keys", "list"],
        &[],
        dir,
    )
    .await;
    assert!(out.success, "{out:?}");
    out.stdout.lines().skip(1).map(String::from).collect()
}

async fn replicas_starting_together_on_an_empty_database_make_one_key(backend: Backend) {
    // Fresh databases each try: the race is in the first start only.
    for attempt in 0..4 {
        let db = TestDb::create(backend).await;
        // Migrate first: two replicas migrating one empty database at once is another race
        // (sqlx takes a lock for it), not this one.
        db.store().await;
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let config = replica_config(&db);
        let (a, b) = tokio::join!(
            Gatehouse::start(dirs[0].path(), &config, &[]),
            Gatehouse::start(dirs[1].path(), &config, &[]),
        );
        let listed = keys(dirs[0].path(), &a.config).await;
        assert_eq!(
            listed.len(),
            1,
            "attempt {attempt}: {listed:#?}\n{}\n{}",
            a.logs(),
            b.logs()
        );
        assert!(listed[0].ends_with("current"), "{listed:#?}");
        drop((a, b));
    }
}

async fn keys_rotate_on_two_replicas_at_once_leaves_one_current_key(backend: Backend) {
    let db = TestDb::create(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let replica = Gatehouse::start(dir.path(), &replica_config(&db), &[]).await;
    for args in [&["keys", "rotate", "--now"][..], &["keys", "rotate"][..]] {
        let (x, y) = tokio::join!(replica.cli(args), replica.cli(args));
        assert!(x.success && y.success, "{x:?} {y:?}");
        let listed = keys(dir.path(), &replica.config).await;
        let current = listed.iter().filter(|l| l.ends_with("current")).count();
        assert_eq!(current, 1, "{args:?}: {listed:#?}");
    }
}

async fn role_changes_racing_with_cache_fills_end_in_the_final_state(backend: Backend) {
    let stack = Stack::start_with(
        backend,
        StackOptions {
            config: Box::new(|urls| format!("{}{}", base_config(urls), support::ROUTES)),
            ..StackOptions::default()
        },
    )
    .await;
    let cookie = stack.gatehouse.enabled_session("race@acme.test", &[]).await;
    let header = format!("gatehouse={cookie}");
    let listener = stack.envoy.listener;
    // Checks fill the cache without pause while the role is granted and revoked.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let stop = stop.clone();
        let header = header.clone();
        tokio::spawn(async move {
            let mut checks = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && checks < 5_000 {
                support::send(listener, "GET", "/admin/x", &[("cookie", &header)], None).await;
                checks += 1;
            }
            checks
        })
    };
    for _ in 0..5 {
        stack
            .gatehouse
            .cli_ok(&["user", "grant", "race@acme.test", "admin"])
            .await;
        stack
            .gatehouse
            .cli_ok(&["user", "revoke", "race@acme.test", "admin"])
            .await;
    }
    stack
        .gatehouse
        .cli_ok(&["user", "grant", "race@acme.test", "admin"])
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let checks = checker.await.unwrap();
    assert!(checks > 0);
    // The final state, at once: the CLI's change reaches the replica's cache through the
    // revocation it writes (and its nudge), not after the cache TTL.
    let r = stack.get("/admin/x", &[("cookie", &header)]).await;
    assert!(r.reached_upstream(), "granted last: {r:?}");
    assert_eq!(
        r.upstream_header("x-gatehouse-roles").as_deref(),
        Some("admin")
    );
    stack
        .gatehouse
        .cli_ok(&["user", "revoke", "race@acme.test", "admin"])
        .await;
    let r = stack.get("/admin/x", &[("cookie", &header)]).await;
    assert_eq!(r.status, 403, "revoked last: {r:?}");
}
