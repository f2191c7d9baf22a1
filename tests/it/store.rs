//! The store and the session service on real databases: each test gets a fresh SQLite file or
//! PostgreSQL database.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use gatehouse::email::Email;
use gatehouse::identity::SessionCaller;
use gatehouse::metrics::Metrics;
use gatehouse::provisioning::{self, EmailTrust, Vouching};
use gatehouse::session::revocations::RevocationSync;
use gatehouse::session::{CachePolicy, Lifetimes, OpaqueToken, Sessions};
use gatehouse::store::{
    AuditFilter, AuditKind, NewLoginState, PendingLoginCaps, ProvisionOutcome, ProvisionRequest,
    Store, StoreError,
};
use support::{Backend, TestDb};

on_both_backends!(
    sessions_expire_and_are_cached,
    revocations_reach_the_cache,
    store_failure_is_unavailable,
    last_seen_is_written_back,
    orgs_match_exact_domains_only,
    roles_and_enablement_are_idempotent,
    provisioning_rules,
    unicode_lookalikes_never_link_or_place,
    idps_vouch_only_for_their_domains,
    concurrent_first_logins_make_one_user,
    login_state_is_single_use_and_bound,
    pending_logins_are_capped,
    audit_filters,
);

const NOW: i64 = 1_800_000_000;

fn sessions(store: &Store) -> Sessions {
    let (sessions, writer) = Sessions::new(
        store.clone(),
        Lifetimes {
            idle: 100,
            absolute: 1000,
        },
        CachePolicy {
            ttl_seconds: 60,
            fallback_ttl_seconds: 2,
            stale_seconds: 0,
            max_entries: 1000,
        },
        Arc::new(Metrics::new()),
    );
    tokio::spawn(writer.run());
    sessions
}

async fn user(store: &Store, email: &str, enabled: bool) -> uuid::Uuid {
    let (user, _) = store
        .ensure_user(email, enabled, "test", NOW)
        .await
        .unwrap();
    user.id
}

fn user_id(caller: &SessionCaller) -> Option<uuid::Uuid> {
    match caller {
        SessionCaller::User(p) => Some(p.user.identity.user_id),
        _ => None,
    }
}

/// A bearer service with no issuers, for the revocation sync.
fn no_bearer(store: &Store) -> Arc<gatehouse::bearer::Bearer> {
    let settings = gatehouse::config::Settings::from_toml("", Vec::new()).unwrap();
    Arc::new(gatehouse::bearer::Bearer::new(
        &settings,
        store.clone(),
        Arc::new(Metrics::new()),
        reqwest_client(),
    ))
}

fn reqwest_client() -> reqwest::Client {
    gatehouse::jwt::http_client().unwrap()
}

async fn sessions_expire_and_are_cached(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let s = sessions(&store);
    let alice = user(&store, "alice@acme.test", true).await;
    let token = s
        .create(alice, None, None, Default::default(), NOW)
        .await
        .unwrap();
    assert_eq!(token.as_str().len(), 43, "256-bit token, base64url");
    // Only the hash is stored.
    assert!(
        store
            .load_session(token.as_str(), NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .load_session(&token.hash().to_hex(), NOW)
            .await
            .unwrap()
            .is_some()
    );

    assert_eq!(user_id(&s.resolve(&token, NOW + 10).await), Some(alice));
    // Idle: no use for 100 s.
    assert!(matches!(
        s.resolve(&token, NOW + 10 + 100).await,
        SessionCaller::Anonymous
    ));

    // Absolute: used every 90 s, still ends at 1000 s.
    let token = s
        .create(alice, None, None, Default::default(), NOW)
        .await
        .unwrap();
    let mut t = NOW;
    while t + 90 < NOW + 1000 {
        t += 90;
        assert!(
            user_id(&s.resolve(&token, t).await).is_some(),
            "at +{}",
            t - NOW
        );
    }
    assert!(matches!(
        s.resolve(&token, NOW + 1000).await,
        SessionCaller::Anonymous
    ));

    // A token the server never issued is not adopted.
    let stranger = OpaqueToken::generate().unwrap();
    assert!(matches!(
        s.resolve(&stranger, NOW).await,
        SessionCaller::Anonymous
    ));
    // A fresh token at every login.
    let a = s
        .create(alice, None, None, Default::default(), NOW)
        .await
        .unwrap();
    let b = s
        .create(alice, None, None, Default::default(), NOW)
        .await
        .unwrap();
    assert_ne!(a, b);
}

async fn revocations_reach_the_cache(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let s = sessions(&store);
    let sync = RevocationSync::new(
        store.clone(),
        s.clone(),
        no_bearer(&store),
        Arc::new(Metrics::new()),
    );
    let now = gatehouse::clock::unix_now();
    let alice = user(&store, "alice@acme.test", true).await;
    let bob = user(&store, "bob@acme.test", true).await;
    let ta = s
        .create(alice, None, None, Default::default(), now)
        .await
        .unwrap();
    let tb = s
        .create(bob, None, None, Default::default(), now)
        .await
        .unwrap();
    assert!(user_id(&s.resolve(&ta, now).await).is_some());
    assert!(user_id(&s.resolve(&tb, now).await).is_some());

    // Revoked in the database by someone else: this replica still has it cached...
    store
        .revoke_sessions(Some(alice), "test", now)
        .await
        .unwrap();
    assert!(
        user_id(&s.resolve(&ta, now).await).is_some(),
        "served from cache"
    );
    // ...until it reads the revocation list.
    assert_eq!(sync.sync().await.unwrap(), 1);
    assert!(matches!(
        s.resolve(&ta, now).await,
        SessionCaller::Anonymous
    ));
    assert!(
        user_id(&s.resolve(&tb, now).await).is_some(),
        "bob unaffected"
    );
    assert_eq!(
        sync.sync().await.unwrap(),
        0,
        "each revocation applies once"
    );

    // Disabling revokes too.
    store
        .set_user_enabled(bob, false, "test", now)
        .await
        .unwrap();
    sync.sync().await.unwrap();
    assert!(matches!(
        s.resolve(&tb, now).await,
        SessionCaller::Anonymous
    ));
}

async fn store_failure_is_unavailable(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let s = sessions(&store);
    let alice = user(&store, "alice@acme.test", true).await;
    let cached = s
        .create(alice, None, None, Default::default(), NOW)
        .await
        .unwrap();
    let uncached = s
        .create(alice, None, None, Default::default(), NOW)
        .await
        .unwrap();
    assert!(user_id(&s.resolve(&cached, NOW).await).is_some());
    store.close().await;
    assert!(matches!(
        s.resolve(&uncached, NOW).await,
        SessionCaller::Unavailable
    ));
    assert!(user_id(&s.resolve(&cached, NOW).await).is_some());
}

async fn last_seen_is_written_back(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let s = sessions(&store);
    let alice = user(&store, "alice@acme.test", true).await;
    let token = s
        .create(alice, None, None, Default::default(), NOW)
        .await
        .unwrap();
    let hash = token.hash().to_hex();
    s.resolve(&token, NOW + 30).await;
    s.resolve(&token, NOW + 61).await;
    let mut last_seen = 0;
    for _ in 0..100 {
        last_seen = store
            .load_session(&hash, NOW)
            .await
            .unwrap()
            .unwrap()
            .last_seen_at;
        if last_seen == NOW + 61 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last_seen, NOW + 61, "written once the minute has passed");
    // Another replica (a fresh cache) sees the activity, so the session is still live 90 s
    // after the last use, though 151 s after creation.
    let other = sessions(&store);
    assert!(user_id(&other.resolve(&token, NOW + 151).await).is_some());
}

async fn orgs_match_exact_domains_only(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let acme = store
        .create_org(
            "Acme",
            &["acme.test".into(), "ACME.example".into()],
            false,
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        acme.domains,
        vec!["acme.example".to_owned(), "acme.test".to_owned()]
    );
    assert_eq!(
        store.org_for_domain("acme.test").await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(
        store
            .org_for_domain("Acme.Example")
            .await
            .unwrap()
            .map(|o| o.id),
        Some(acme.id)
    );
    for other in ["sub.acme.test", "acme.test.evil", "cme.test", "test"] {
        assert_eq!(store.org_for_domain(other).await.unwrap(), None, "{other}");
    }
    let err = store
        .create_org("Other", &["acme.test".into()], false, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(matches!(
        store
            .create_org("Bad", &["not a domain".into()], false, NOW)
            .await,
        Err(StoreError::Invalid(_))
    ));

    // ensure_user places users by exact domain and follows the org's auto-enable.
    store
        .create_org("Globex", &["globex.test".into()], true, NOW)
        .await
        .unwrap();
    let (u, created) = store
        .ensure_user("a@acme.test", false, "test", NOW)
        .await
        .unwrap();
    assert!(created && !u.enabled && u.org_id == Some(acme.id));
    let (u, _) = store
        .ensure_user("b@globex.test", false, "test", NOW)
        .await
        .unwrap();
    assert!(u.enabled, "auto-enable org");
    let (u, _) = store
        .ensure_user("c@sub.acme.test", false, "test", NOW)
        .await
        .unwrap();
    assert_eq!(u.org_id, None);
    let (u, created) = store
        .ensure_user("A@ACME.TEST", false, "test", NOW)
        .await
        .unwrap();
    assert!(
        !created && u.email == "a@acme.test",
        "emails are case-insensitive"
    );
    assert!(
        store
            .ensure_user("a@b@acme.test", false, "test", NOW)
            .await
            .is_err()
    );
}

async fn roles_and_enablement_are_idempotent(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let id = user(&store, "alice@acme.test", false).await;
    assert!(store.set_user_enabled(id, true, "test", NOW).await.unwrap());
    assert!(!store.set_user_enabled(id, true, "test", NOW).await.unwrap());
    assert!(
        store
            .set_role(id, "admin", true, "test", NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_role(id, "admin", true, "test", NOW)
            .await
            .unwrap()
    );
    assert!(store.set_role(id, "dev", true, "test", NOW).await.unwrap());
    assert_eq!(store.roles_of(id).await.unwrap(), vec!["admin", "dev"]);
    // A session load brings the roles in the same query, in the same order.
    let token = sessions(&store)
        .create(id, None, None, Default::default(), NOW)
        .await
        .unwrap();
    let loaded = store
        .load_session(&token.hash().to_hex(), NOW)
        .await
        .unwrap()
        .expect("the session");
    assert_eq!(loaded.roles, vec!["admin", "dev"]);
    assert!(
        store
            .set_role(id, "admin", false, "test", NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_role(id, "admin", false, "test", NOW)
            .await
            .unwrap()
    );
    assert!(store.set_role(id, "a,b", true, "test", NOW).await.is_err());
    let users = store.list_users(None, None, 1000).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].roles, vec!["dev"]);
}

fn login(sub: &str, email: Option<&str>, verified: Option<bool>) -> ProvisionRequest {
    login_via(sub, email, verified, &EmailTrust::Any, true)
}

/// A sign-in through an IdP trusted for `trust`, with the broker's rules applied.
fn login_via(
    sub: &str,
    email: Option<&str>,
    verified: Option<bool>,
    trust: &EmailTrust,
    linking: bool,
) -> ProvisionRequest {
    let email = email.map(|e| Email::parse(e).expect("valid email"));
    let vouching = email.as_ref().map_or_else(Vouching::nothing, |e| {
        provisioning::vouch("main", e, verified, trust, linking)
    });
    ProvisionRequest {
        issuer: "https://idp.test/".into(),
        subject: sub.into(),
        idp: "main".into(),
        email,
        email_verified: verified,
        vouching,
        name: Some("Someone".into()),
        new_users_enabled: false,
        may_create: true,
        ip: Some("127.0.0.1".into()),
        user_agent: Some("test".into()),
        now: NOW,
    }
}

async fn provisioning_rules(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let acme = store
        .create_org("Acme", &["acme.test".into()], false, NOW)
        .await
        .unwrap();
    store
        .create_org("Globex", &["globex.test".into()], true, NOW)
        .await
        .unwrap();
    let staff = user(&store, "staff@acme.test", true).await;
    user(&store, "other@acme.test", true).await;

    // A new identity with a new email: a new, disabled user in the domain's org.
    let created = store
        .provision(&login("s1", Some("New@Acme.test"), Some(true)))
        .await
        .unwrap();
    let ProvisionOutcome::Created(u) = &created else {
        panic!("{created:?}")
    };
    assert_eq!(
        (u.email.as_str(), u.enabled, u.org_id),
        ("new@acme.test", false, Some(acme.id))
    );
    // The same identity again: the same user, whatever the email says now.
    let again = store
        .provision(&login("s1", Some("renamed@acme.test"), Some(false)))
        .await
        .unwrap();
    assert_eq!(again, ProvisionOutcome::Existing(u.clone()));
    // Identity is (issuer, subject): the same subject at another issuer is someone else.
    let mut elsewhere = login("s1", Some("s1@globex.test"), Some(true));
    elsewhere.issuer = "https://other-idp.test/".into();
    let ProvisionOutcome::Created(e) = store.provision(&elsewhere).await.unwrap() else {
        panic!()
    };
    assert_ne!(e.id, u.id);
    assert!(e.enabled, "the org auto-enables");

    // A verified email that belongs to an existing user: linked, not duplicated.
    let linked = store
        .provision(&login("s2", Some("staff@acme.test"), Some(true)))
        .await
        .unwrap();
    assert!(
        matches!(&linked, ProvisionOutcome::Linked(u) if u.id == staff),
        "{linked:?}"
    );
    assert_eq!(store.identities_of(staff).await.unwrap().len(), 1);

    // Unverified, unknown or non-boolean verification: never linked, and the login is refused
    // (the email is taken).
    for verified in [Some(false), None] {
        let err = store
            .provision(&login("s3", Some("other@acme.test"), verified))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(_)),
            "{verified:?}: {err}"
        );
    }
    // Linking switched off.
    let no_link = login_via(
        "s4",
        Some("other@acme.test"),
        Some(true),
        &EmailTrust::Any,
        false,
    );
    assert!(matches!(
        store.provision(&no_link).await,
        Err(StoreError::Conflict(_))
    ));
    // No email: refused. (A malformed one never gets past `Email::parse`.)
    assert!(matches!(
        store.provision(&login("s5", None, None)).await,
        Err(StoreError::Invalid(_))
    ));
    // Nothing of the refused logins was kept.
    let users = store.list_users(None, None, 1000).await.unwrap();
    assert_eq!(users.len(), 4, "{users:?}");
    // Someone registers an unverified address at the IdP before its owner signs in: they
    // get a user, but not the org (which auto-enables), and the owner's verified sign-in is
    // not linked into it.
    let squat = store
        .provision(&login("squatter", Some("ceo@globex.test"), Some(false)))
        .await
        .unwrap();
    let ProvisionOutcome::Created(sq) = &squat else {
        panic!("{squat:?}")
    };
    assert_eq!(
        (sq.org_id, sq.enabled),
        (None, false),
        "no org, not auto-enabled"
    );
    let err = store
        .provision(&login("real-ceo", Some("ceo@globex.test"), Some(true)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(store.identities_of(sq.id).await.unwrap().len(), 1);
    // new_users_enabled switches the default.
    let mut open = login("s7", Some("open@nowhere.test"), Some(true));
    open.new_users_enabled = true;
    let ProvisionOutcome::Created(o) = store.provision(&open).await.unwrap() else {
        panic!()
    };
    assert!(o.enabled && o.org_id.is_none());
}

/// The events of one kind, as (user, detail).
async fn events(store: &Store, kind: AuditKind) -> Vec<(Option<uuid::Uuid>, String)> {
    store
        .list_audit(&AuditFilter {
            kind: Some(kind),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.user_id, e.detail.unwrap_or_default()))
        .collect()
}

/// Addresses that only Unicode case mapping or normalization would merge stay apart: a
/// verified lookalike never links into the account it imitates, and a non-ASCII local part is
/// never placed (or auto-enabled) by its domain. Before the fix, the Kelvin sign (U+212A)
/// lower-cased into `ken@acme.test` and linked.
async fn unicode_lookalikes_never_link_or_place(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let acme = store
        .create_org("Acme", &["acme.test".into()], true, NOW)
        .await
        .unwrap();
    let books = store
        .create_org("Books", &["xn--bcher-kva.test".into()], true, NOW)
        .await
        .unwrap();
    let ken = user(&store, "ken@acme.test", true).await;
    let admin = user(&store, "admin@acme.test", true).await;

    for (sub, lookalike, imitated) in [
        ("kelvin", "\u{212a}en@acme.test", ken),
        ("dotless", "adm\u{131}n@acme.test", admin),
        ("dotted", "ADM\u{130}N@acme.test", admin),
        ("fullwidth", "\u{ff4b}en@acme.test", ken),
    ] {
        let outcome = store
            .provision(&login(sub, Some(lookalike), Some(true)))
            .await
            .unwrap();
        let ProvisionOutcome::Created(u) = &outcome else {
            panic!("{lookalike:?} linked: {outcome:?}")
        };
        assert_ne!(u.id, imitated, "{lookalike:?}");
        assert_eq!(u.email, lookalike, "{lookalike:?} is kept exactly");
        assert_eq!(
            (u.org_id, u.enabled),
            (None, false),
            "{lookalike:?}: not placed in Acme, so not auto-enabled"
        );
        let limited = events(&store, AuditKind::ProvisioningLimited).await;
        assert!(
            limited
                .iter()
                .any(|(user, d)| *user == Some(u.id) && d.contains("not ASCII")),
            "{lookalike:?}: {limited:?}"
        );
    }
    assert_eq!(store.identities_of(ken).await.unwrap().len(), 0);
    assert_eq!(store.identities_of(admin).await.unwrap().len(), 0);

    // ASCII letter case is one mailbox: that links.
    let outcome = store
        .provision(&login("ken-sso", Some("KEN@Acme.Test"), Some(true)))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, ProvisionOutcome::Linked(u) if u.id == ken),
        "{outcome:?}"
    );

    // An IDN domain in its Unicode form is not its punycode form: no placement in Books.
    let ProvisionOutcome::Created(jo) = store
        .provision(&login("jo", Some("jo@b\u{fc}cher.test"), Some(true)))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((jo.org_id, jo.enabled), (None, false));
    // Upper-cased non-ASCII is another string: not linked to jo.
    let outcome = store
        .provision(&login("jo-upper", Some("JO@B\u{dc}CHER.TEST"), Some(true)))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, ProvisionOutcome::Created(u) if u.id != jo.id),
        "{outcome:?}"
    );
    // The byte-identical address is the same mailbox: linked.
    let outcome = store
        .provision(&login("jo-again", Some("jo@b\u{fc}cher.test"), Some(true)))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, ProvisionOutcome::Linked(u) if u.id == jo.id),
        "{outcome:?}"
    );
    // The punycode form is ASCII: placed in Books, which auto-enables.
    let ProvisionOutcome::Created(puny) = store
        .provision(&login("jo-puny", Some("Jo@XN--BCHER-KVA.test"), Some(true)))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(puny.email, "jo@xn--bcher-kva.test");
    assert_eq!((puny.org_id, puny.enabled), (Some(books.id), true));
    let _ = acme;
}

/// An IdP vouches only for the domains it is trusted for: elsewhere its verified emails
/// neither link nor place, and an account it created is never linked into by a trusted
/// sign-in later.
async fn idps_vouch_only_for_their_domains(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let acme = store
        .create_org("Acme", &["acme.test".into()], true, NOW)
        .await
        .unwrap();
    let staff = user(&store, "staff@acme.test", true).await;
    let globex_only = EmailTrust::Domains(vec!["globex.test".into()]);
    let acme_only = EmailTrust::Domains(vec!["acme.test".into()]);

    // Another customer's IdP asserts a verified acme.test address: created outside Acme (so not
    // auto-enabled), and the audit says why.
    let ProvisionOutcome::Created(u) = store
        .provision(&login_via(
            "g1",
            Some("newbie@acme.test"),
            Some(true),
            &globex_only,
            true,
        ))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((u.org_id, u.enabled), (None, false));
    let limited = events(&store, AuditKind::ProvisioningLimited).await;
    assert!(
        limited
            .iter()
            .any(|(user, d)| *user == Some(u.id)
                && d.contains("not trusted for email domain acme.test")),
        "{limited:?}"
    );
    // ... or the address of an existing acme.test user: refused, not linked.
    let err = store
        .provision(&login_via(
            "g2",
            Some("staff@acme.test"),
            Some(true),
            &globex_only,
            true,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("not trusted")),
        "{err}"
    );
    assert!(store.identities_of(staff).await.unwrap().is_empty());
    // The untrusted IdP got in first: acme's own IdP does not link into that account later.
    let ProvisionOutcome::Created(squat) = store
        .provision(&login_via(
            "g3",
            Some("boss@acme.test"),
            Some(true),
            &globex_only,
            true,
        ))
        .await
        .unwrap()
    else {
        panic!()
    };
    let mut trusted = login_via("a1", Some("boss@acme.test"), Some(true), &acme_only, true);
    trusted.issuer = "https://acme-idp.test/".into();
    let err = store.provision(&trusted).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(store.identities_of(squat.id).await.unwrap().len(), 1);
    // A squatter cannot launder the account by later verifying an address of their own: the
    // identity's `vouched` speaks for the account's address only.
    let ProvisionOutcome::Created(victim) = store
        .provision(&login("sq", Some("victim@acme.test"), Some(false)))
        .await
        .unwrap()
    else {
        panic!()
    };
    let again = store
        .provision(&login("sq", Some("attacker@gmail.test"), Some(true)))
        .await
        .unwrap();
    assert!(matches!(again, ProvisionOutcome::Existing(_)), "{again:?}");
    let mut real = login_via("v1", Some("victim@acme.test"), Some(true), &acme_only, true);
    real.issuer = "https://acme-idp.test/".into();
    let err = store.provision(&real).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(store.identities_of(victim.id).await.unwrap().len(), 1);
    // An admin-created account with a non-ASCII local part is not placed by its domain either.
    let (kelvin, _) = store
        .ensure_user("\u{212a}en@acme.test", false, "test", NOW)
        .await
        .unwrap();
    assert_eq!(kelvin.org_id, None);
    // The trusted IdP links and places as before.
    let mut trusted = login_via("a2", Some("staff@acme.test"), Some(true), &acme_only, true);
    trusted.issuer = "https://acme-idp.test/".into();
    let outcome = store.provision(&trusted).await.unwrap();
    assert!(
        matches!(&outcome, ProvisionOutcome::Linked(u) if u.id == staff),
        "{outcome:?}"
    );
    let mut trusted = login_via("a3", Some("fresh@acme.test"), Some(true), &acme_only, true);
    trusted.issuer = "https://acme-idp.test/".into();
    let ProvisionOutcome::Created(fresh) = store.provision(&trusted).await.unwrap() else {
        panic!()
    };
    assert_eq!((fresh.org_id, fresh.enabled), (Some(acme.id), true));
}

async fn concurrent_first_logins_make_one_user(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .provision(&login("racer", Some("racer@acme.test"), Some(true)))
                .await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(
            t.await
                .unwrap()
                .expect("every concurrent login succeeds")
                .user()
                .id,
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(store.list_users(None, None, 1000).await.unwrap().len(), 1);
    assert_eq!(store.identities_of(ids[0]).await.unwrap().len(), 1);
}

const CAPS: PendingLoginCaps = PendingLoginCaps {
    per_browser: 10,
    per_client: 1000,
};

/// Pending logins are capped per browser binding and per client address; the newest stay.
async fn pending_logins_are_capped(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let caps = PendingLoginCaps {
        per_browser: 3,
        per_client: 5,
    };
    let start = |n: usize, binding: &str, ip: Option<&str>| NewLoginState {
        state_hash: format!("{n:064}"),
        binding_hash: binding.repeat(64),
        client_ip: ip.map(String::from),
        nonce: "n".into(),
        pkce_verifier: "v".into(),
        idp: "main".into(),
        redirect_to: "/".into(),
        created_at: NOW,
        expires_at: NOW + 600,
        signup: false,
        step_up: None,
        account: None,
    };
    // One browser, ten tabs: the three newest survive.
    for n in 0..10 {
        store
            .insert_login_state(&start(n, "a", Some("192.0.2.1")), caps)
            .await
            .unwrap();
    }
    let alive = |n: usize| {
        let store = store.clone();
        async move { store.login_state_exists(&format!("{n:064}")).await.unwrap() }
    };
    for n in 0..10 {
        assert_eq!(alive(n).await, n >= 7, "state {n}");
    }
    // A client with a fresh binding per request: its five newest survive, and another
    // client's are untouched.
    for n in 100..120 {
        store
            .insert_login_state(
                &start(n, &format!("{}", n % 10), Some("198.51.100.7")),
                caps,
            )
            .await
            .unwrap();
    }
    for n in 100..120 {
        assert_eq!(alive(n).await, n >= 115, "state {n}");
    }
    for n in 7..10 {
        assert!(alive(n).await, "state {n} of the other client");
    }
    // Without a known address only the browser cap applies.
    for n in 200..204 {
        store
            .insert_login_state(&start(n, "z", None), caps)
            .await
            .unwrap();
    }
    assert_eq!(db.count("login_states").await, 3 + 5 + 3);
}

async fn login_state_is_single_use_and_bound(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let state = NewLoginState {
        state_hash: "s".repeat(64),
        binding_hash: "b".repeat(64),
        client_ip: Some("192.0.2.1".into()),
        nonce: "n".into(),
        pkce_verifier: "v".into(),
        idp: "main".into(),
        redirect_to: "/x".into(),
        created_at: NOW,
        expires_at: NOW + 600,
        signup: false,
        step_up: None,
        account: None,
    };
    store.insert_login_state(&state, CAPS).await.unwrap();
    let other_browser = "c".repeat(64);
    assert_eq!(
        store
            .consume_login_state(&state.state_hash, &other_browser, NOW)
            .await
            .unwrap(),
        None
    );
    assert!(
        store.login_state_exists(&state.state_hash).await.unwrap(),
        "a stranger cannot burn it"
    );
    let got = store
        .consume_login_state(&state.state_hash, &state.binding_hash, NOW)
        .await
        .unwrap();
    assert_eq!(got.map(|s| s.nonce), Some("n".to_owned()));
    assert_eq!(
        store
            .consume_login_state(&state.state_hash, &state.binding_hash, NOW)
            .await
            .unwrap(),
        None
    );

    let expired = NewLoginState {
        state_hash: "e".repeat(64),
        ..state.clone()
    };
    store.insert_login_state(&expired, CAPS).await.unwrap();
    assert_eq!(
        store
            .consume_login_state(&expired.state_hash, &expired.binding_hash, NOW + 600)
            .await
            .unwrap(),
        None
    );
    assert!(store.purge_expired(NOW + 601).await.unwrap() >= 1);
    assert!(!store.login_state_exists(&expired.state_hash).await.unwrap());
}

async fn audit_filters(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.store().await;
    let alice = user(&store, "alice@acme.test", false).await;
    store
        .set_user_enabled(alice, true, "cli", NOW + 10)
        .await
        .unwrap();
    store
        .set_role(alice, "admin", true, "cli", NOW + 20)
        .await
        .unwrap();
    user(&store, "bob@acme.test", false).await;
    let all = store.list_audit(&AuditFilter::default()).await.unwrap();
    let kinds: Vec<&str> = all.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "user_created",
            "role_granted",
            "user_enabled",
            "user_created"
        ],
        "newest first"
    );
    let mine = store
        .list_audit(&AuditFilter {
            user_id: Some(alice),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 3);
    assert!(
        mine.iter()
            .all(|r| r.email.as_deref() == Some("alice@acme.test"))
    );
    let granted = store
        .list_audit(&AuditFilter {
            kind: Some(AuditKind::RoleGranted),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].detail.as_deref(), Some("admin"));
    let recent = store
        .list_audit(&AuditFilter {
            since: Some(NOW + 15),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 1, "{recent:?}");
    let until = store
        .list_audit(&AuditFilter {
            until: Some(NOW + 10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(until.len(), 3, "{until:?}");

    // A failed login through an IdP, for the outcome and idp filters.
    store
        .record_audit(
            &gatehouse::store::AuditEvent::new(
                AuditKind::LoginFailed,
                gatehouse::store::Outcome::Failure,
                NOW + 30,
            )
            .idp("main")
            .user(alice),
        )
        .await
        .unwrap();
    let failures = store
        .list_audit(&AuditFilter {
            outcome: Some(gatehouse::store::Outcome::Failure),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].kind, "login_failed");
    let by_idp = |idp: &str| AuditFilter {
        idp: Some(idp.to_owned()),
        ..Default::default()
    };
    assert_eq!(store.list_audit(&by_idp("main")).await.unwrap().len(), 1);
    assert_eq!(store.list_audit(&by_idp("other")).await.unwrap().len(), 0);

    // Part of an email, with LIKE's wildcards taken literally.
    let search = |text: &str| AuditFilter {
        email_contains: Some(text.to_owned()),
        ..Default::default()
    };
    assert_eq!(store.list_audit(&search("ALICE@")).await.unwrap().len(), 4);
    assert_eq!(
        store.list_audit(&search("@acme.test")).await.unwrap().len(),
        5
    );
    assert_eq!(store.list_audit(&search("%")).await.unwrap().len(), 0);
    assert_eq!(store.list_audit(&search("_lice")).await.unwrap().len(), 0);

    // Pages: newest first, each strictly older than the cursor.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_audit(&AuditFilter {
                before_id: before,
                limit: Some(2),
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|e| e.id);
        seen.extend(page.into_iter().map(|e| e.id));
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted, "every event once, newest first");
    assert_eq!(seen.len(), 5);

    // Retention.
    assert_eq!(store.prune_audit(NOW + 15).await.unwrap(), 3);
    assert_eq!(
        store
            .list_audit(&AuditFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
}
