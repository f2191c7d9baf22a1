//! SAML against a real IdP (SimpleSAMLphp under `php -S`), through the real Envoy, on SQLite
//! and PostgreSQL: SP-initiated sign-in (org by domain, roles from the groups attribute,
//! identity headers, the minted token), single logout both ways, and the metadata refresh
//! with the last good copy kept while the IdP is down.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::support;

use support::browser::{Browser, Page, forms};
use support::processes::free_port;
use support::saml::KeyPair;
use support::simplesamlphp::{SimpleSamlPhp, SpUrls};
use support::{Backend, Stack, StackOptions, base_config};

on_both_backends!(
    sign_in_and_out_at_a_real_idp,
    metadata_is_refreshed_and_the_last_good_copy_kept,
    encrypted_assertions_need_the_sp_key,
);

struct Setup {
    stack: Stack,
    idp: SimpleSamlPhp,
    dir: tempfile::TempDir,
}

async fn setup(backend: Backend) -> Setup {
    setup_with(backend, Encryption::None).await
}

/// Whether the IdP encrypts assertions, and whether gatehouse has the key.
#[derive(PartialEq)]
enum Encryption {
    None,
    WithSpKey,
    WithoutSpKey,
}

async fn setup_with(backend: Backend, encryption: Encryption) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = free_port();
    let base = format!("http://127.0.0.1:{listener}");
    let key = KeyPair::generate(dir.path(), "idp-key");
    let sp = KeyPair::generate(dir.path(), "sp-key");
    let sp_toml = if encryption == Encryption::WithSpKey {
        format!(
            "sp_key_file = \"{}\"\nsp_cert_file = \"{}\"\n",
            sp.key.display(),
            sp.cert.display()
        )
    } else {
        String::new()
    };
    let idp = SimpleSamlPhp::start(
        dir.path(),
        free_port(),
        &SpUrls {
            entity_id: format!("{base}/auth/saml/bigcorp/metadata"),
            acs: format!("{base}/auth/saml/acs"),
            slo: format!("{base}/auth/saml/slo"),
            encrypt_for: (encryption != Encryption::None).then(|| sp.cert_b64()),
            signed_requests: encryption == Encryption::WithSpKey,
        },
        &key,
    )
    .await;
    let idp_toml = format!(
        "\n[[idp]]\nname = \"bigcorp\"\nkind = \"saml\"\nmetadata_url = \"{}\"\n\
         metadata_refresh_seconds = 5\ndomains = [\"bigcorp.test\"]\n\
         email_attribute = \"email\"\nname_attribute = \"displayName\"\n\
         role_claims = {{ groups = {{ engineering = \"dev\" }} }}\n{sp_toml}\n[token]\nenabled = true\nencryption_key = \"{}\"\n",
        idp.metadata_url(),
        base64::engine::general_purpose::STANDARD.encode([42u8; 32])
    );
    let stack = Stack::start_with(
        backend,
        StackOptions {
            config: Box::new(move |urls| {
                format!("{}{idp_toml}{}", base_config(urls), support::ROUTES)
            }),
            listener_port: Some(listener),
            ..StackOptions::default()
        },
    )
    .await;
    stack
        .gatehouse
        .cli_ok(&[
            "org",
            "add",
            "BigCorp",
            "--domain",
            "bigcorp.test",
            "--auto-enable",
        ])
        .await;
    Setup { stack, idp, dir }
}

/// Opens `/reports` for `user@bigcorp.test` and signs in at the IdP's form.
async fn sign_in(browser: &mut Browser, s: &Setup, user: &str, password: &str) -> Page {
    let start = format!(
        "{}/auth/login?login_hint={user}%40bigcorp.test&rd=%2Freports",
        s.stack.base
    );
    let page = browser.navigate(&start).await;
    let login = forms(&page)
        .into_iter()
        .find(|f| f.fields.iter().any(|(k, _)| k == "password"))
        .unwrap_or_else(|| panic!("the IdP's login form: {:#?}\n{}", page.hops, page.body()));
    let page = browser
        .submit(&page, &login, &[("username", user), ("password", password)])
        .await;
    post_saml_response(browser, page).await
}

/// SimpleSAMLphp's page carrying the Response submits itself by script; this browser model
/// submits it as the script would.
async fn post_saml_response(browser: &mut Browser, page: Page) -> Page {
    match forms(&page)
        .into_iter()
        .find(|f| f.fields.iter().any(|(k, _)| k == "SAMLResponse"))
    {
        Some(form) => browser.submit(&page, &form, &[]).await,
        None => page,
    }
}

fn claims_of(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

async fn audit(stack: &Stack) -> Vec<(String, String, String)> {
    let out = stack.gatehouse.cli_ok(&["audit", "--json"]).await;
    let mut events: Vec<(i64, (String, String, String))> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (
                v["id"].as_i64().unwrap_or_default(),
                (s("kind"), s("outcome"), s("detail")),
            )
        })
        .collect();
    events.sort_by_key(|(id, _)| *id);
    events.into_iter().map(|(_, e)| e).collect()
}

async fn sign_in_and_out_at_a_real_idp(backend: Backend) {
    let s = setup(backend).await;
    let orgs = s.stack.gatehouse.cli_ok(&["org", "list"]).await;

    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &s, "alice", "alicepw").await;
    assert!(
        page.response.reached_upstream(),
        "{:#?}\n{}",
        page.hops,
        page.body()
    );
    assert_eq!(page.url.path(), "/reports");
    let r = &page.response;
    assert_eq!(
        r.upstream_header("x-gatehouse-email").as_deref(),
        Some("alice@bigcorp.test")
    );
    let user_id = r.upstream_header("x-gatehouse-user-id").expect("user id");
    let org_header = r
        .upstream_header("x-gatehouse-org-id")
        .expect("placed in the org by domain");
    assert!(orgs.contains(&org_header), "the BigCorp org: {orgs}");
    assert_eq!(
        r.upstream_header("x-gatehouse-roles").as_deref(),
        Some("dev"),
        "engineering → dev"
    );
    let claims = claims_of(&r.upstream_header("x-gatehouse-jwt").expect("minted token"));
    assert_eq!(claims["sub"], user_id.as_str());
    assert_eq!(claims["email"], "alice@bigcorp.test");
    assert_eq!(claims["org"], org_header.as_str());
    assert_eq!(claims["roles"], serde_json::json!(["dev"]));
    assert_eq!(claims["iss"], s.stack.base.as_str());
    let show = s
        .stack
        .gatehouse
        .cli_ok(&["user", "show", "alice@bigcorp.test"])
        .await;
    assert!(
        show.contains(&s.idp.entity_id()),
        "identity issuer = entityID: {show}"
    );

    // The same person again: the persistent NameID maps to the same user.
    let mut again = Browser::new();
    let page = sign_in(&mut again, &s, "alice", "alicepw").await;
    assert_eq!(
        page.response
            .upstream_header("x-gatehouse-user-id")
            .as_deref(),
        Some(user_id.as_str())
    );
    // Bob is not in engineering.
    let mut bob = Browser::new();
    let page = sign_in(&mut bob, &s, "bob", "bobpw").await;
    assert_eq!(page.response.upstream_header("x-gatehouse-roles"), None);

    // SP-initiated single logout: the session ends here, then at the IdP, then the browser
    // lands on rd.
    let page = browser
        .navigate(&format!("{}/auth/logout?rd=%2Fpublic%2Fbye", s.stack.base))
        .await;
    assert!(
        page.hops
            .iter()
            .any(|h| h.contains("SingleLogoutService.php")),
        "went to the IdP: {:#?}",
        page.hops
    );
    assert!(
        page.hops
            .iter()
            .any(|h| h.contains("/auth/saml/slo?SAMLResponse=")),
        "came back with its LogoutResponse: {:#?}",
        page.hops
    );
    assert_eq!(page.url.path(), "/public/bye", "{:#?}", page.hops);
    assert_eq!(browser.cookie("127.0.0.1", "gatehouse"), None);
    // The IdP session is gone too: a new visit meets the IdP's login form.
    let page = browser
        .navigate(&format!(
            "{}/auth/login?login_hint=alice%40bigcorp.test&rd=%2Freports",
            s.stack.base
        ))
        .await;
    assert!(
        forms(&page)
            .iter()
            .any(|f| f.fields.iter().any(|(k, _)| k == "password")),
        "signed out at the IdP: {:#?}",
        page.hops
    );

    // IdP-initiated single logout: alice signs in again, then ends her IdP session there.
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &s, "alice", "alicepw").await;
    assert!(page.response.reached_upstream());
    let page = browser
        .navigate(&format!(
            "{}/saml2/idp/SingleLogoutService.php?ReturnTo={}",
            s.idp.base,
            url::form_urlencoded::byte_serialize(
                format!("{}/public/after", s.stack.base).as_bytes()
            )
            .collect::<String>()
        ))
        .await;
    assert!(
        page.hops
            .iter()
            .any(|h| h.contains("/auth/saml/slo?SAMLRequest=")),
        "the IdP sent its LogoutRequest: {:#?}",
        page.hops
    );
    assert_eq!(page.url.path(), "/public/after", "{:#?}", page.hops);
    // The session cookie is still in this browser, but the session has ended.
    let page = browser
        .navigate_until(&format!("{}/reports", s.stack.base), &|_, url| {
            url.host_str() == Some(support::simplesamlphp::HOST)
        })
        .await;
    assert!(
        page.is_err(),
        "the session was ended by the IdP's LogoutRequest"
    );

    let events = audit(&s.stack).await;
    let has = |kind: &str, outcome: &str, detail: &str| {
        events
            .iter()
            .any(|(k, o, d)| k == kind && o == outcome && d.contains(detail))
    };
    assert!(has("login_succeeded", "success", "new user"), "{events:#?}");
    assert!(
        has("logout", "success", "SAML single logout completed"),
        "{events:#?}"
    );
    assert!(
        has("backchannel_logout", "success", "SAML LogoutRequest"),
        "{events:#?}"
    );
    // An IdP-initiated LogoutRequest that is not signed is refused (and audited).
    let page = browser
        .navigate(&format!("{}/auth/saml/slo?SAMLRequest=AAAA", s.stack.base))
        .await;
    assert_eq!(page.status(), 400);
    drop(s.dir);
}

async fn metadata_is_refreshed_and_the_last_good_copy_kept(backend: Backend) {
    let mut s = setup(backend).await;
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &s, "alice", "alicepw").await;
    assert!(page.response.reached_upstream(), "{:#?}", page.hops);

    // The IdP goes away: refreshes fail, logins still start from the last good copy.
    s.idp.stop().await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let logs = std::fs::read_to_string(&s.stack.gatehouse.log).unwrap_or_default();
    assert!(
        logs.contains("SAML metadata refresh failed") && logs.contains("kept_last_good"),
        "{logs}"
    );
    let start = s
        .stack
        .get(
            "/auth/login?login_hint=alice%40bigcorp.test&rd=%2Freports",
            &[],
        )
        .await;
    assert_eq!(start.status, 302, "{}", start.body);
    assert!(
        start
            .location()
            .unwrap_or_default()
            .contains("SSOService.php?SAMLRequest="),
        "{:?}",
        start.location()
    );

    // It comes back with a new signing key: once the metadata is read again, its responses
    // verify (they could not with the old copy's certificate).
    let rolled = KeyPair::generate(s.dir.path(), "rolled");
    s.idp.restart_with(&rolled).await;
    let mut signed_in = false;
    for _ in 0..20 {
        let mut browser = Browser::new();
        let page = sign_in(&mut browser, &s, "bob", "bobpw").await;
        if page.response.reached_upstream() {
            signed_in = true;
            break;
        }
        assert!(
            page.body().contains("could not be verified"),
            "{}",
            page.body()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(signed_in, "the new key was picked up by a refresh");
}

async fn encrypted_assertions_need_the_sp_key(backend: Backend) {
    let s = setup_with(backend, Encryption::WithSpKey).await;
    // The SP metadata now carries the certificate to encrypt for, and requests are signed.
    let metadata = s.stack.get("/auth/saml/bigcorp/metadata", &[]).await;
    assert!(
        metadata.body.contains("<ds:X509Certificate>"),
        "{}",
        metadata.body
    );
    assert!(
        metadata.body.contains("AuthnRequestsSigned=\"true\""),
        "{}",
        metadata.body
    );
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &s, "alice", "alicepw").await;
    assert!(
        page.response.reached_upstream(),
        "{:#?}\n{}",
        page.hops,
        page.body()
    );
    assert!(
        page.hops
            .iter()
            .any(|h| h.contains("&SigAlg=") && h.contains("&Signature=")),
        "the AuthnRequest was signed (and the IdP, told to, verified it): {:#?}",
        page.hops
    );
    let log =
        std::fs::read_to_string(s.dir.path().join("data/simplesamlphp.log")).unwrap_or_default();
    assert!(
        log.contains("EncryptedAssertion"),
        "the IdP encrypted the assertion"
    );
    // Single logout with a signed LogoutRequest, which the IdP verifies.
    let page = browser
        .navigate(&format!("{}/auth/logout?rd=%2Fpublic%2Fbye", s.stack.base))
        .await;
    assert!(
        page.hops
            .iter()
            .any(|h| h.contains("/auth/saml/slo?SAMLResponse=")),
        "the IdP accepted the signed LogoutRequest: {:#?}",
        page.hops
    );
    assert_eq!(page.url.path(), "/public/bye");

    // The same IdP encrypting for a gatehouse without the key: refused, audited.
    let s = setup_with(backend, Encryption::WithoutSpKey).await;
    let mut browser = Browser::new();
    let page = sign_in(&mut browser, &s, "alice", "alicepw").await;
    assert_eq!(page.status(), 400, "{:#?}", page.hops);
    assert!(page.body().contains("Sign-in failed"), "{}", page.body());
    let events = audit(&s.stack).await;
    assert!(
        events
            .iter()
            .any(|(k, _, d)| k == "login_failed" && d.starts_with("saml_decryption:")),
        "{events:#?}"
    );
}
