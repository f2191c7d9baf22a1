//! Sign-in without an identity provider, end to end (browser model or plain HTTP client → real
//! Envoy → gatehouse, with a real SMTP server and the real OpenID Provider for the SSO org), on
//! SQLite and on PostgreSQL: emailed codes and links, passwords with reset and lockout, TOTP,
//! the multi-step API, and what an SSO org refuses.

use std::time::{Duration, Instant};

use crate::support;

use base64::Engine;
use serde_json::{Value, json};
use support::browser::{Browser, Form, Page, forms};
use support::op::idp_toml;
use support::smtp::{Mail, Smtp};
use support::{Backend, Gatehouse, Response, Stack, StackOptions, StackUrls, base_config, send};

on_both_backends!(
    passwordless_sign_up_and_sign_in_by_code_and_link,
    emailed_codes_are_single_use_expire_and_allow_five_attempts,
    passwords_set_change_reset_and_weak_ones_refused,
    no_account_enumeration,
    lockout_notifies_holds_across_restarts_and_unlocks,
    an_sso_org_refuses_local_credentials,
    totp_enrollment_replay_recovery_and_step_up,
    multi_step_api_end_to_end,
    smtp_down_is_a_503_and_recovers,
);

const HOST: &str = "127.0.0.1";
const TOKEN_KEY_VAR: &str = "GH_TEST_TOKEN_KEY";
const API: &str = "https://api.test";
const PRODUCT: &str = "Acme Portal";
const STRONG: &str = "violet-harbor-cactus-93";
const STRONG_2: &str = "quiet-lantern-orbit-58";

struct LocalStack {
    stack: Stack,
    smtp: Smtp,
    dir: tempfile::TempDir,
}

fn config(urls: &StackUrls, smtp: &str, local_extra: &str) -> String {
    let local_extra = if local_extra.contains("lockout_failures") {
        local_extra.to_owned()
    } else {
        format!("lockout_failures = 3\n{local_extra}")
    };
    let base = base_config(urls).replace(
        "open_signup = true",
        "open_signup = false\nnew_users_enabled = true",
    );
    format!(
        r#"{base}
[token]
enabled = true
encryption_key_env = "{TOKEN_KEY_VAR}"

[email]
smtp_url = "{smtp}"
from = "Acme Portal <no-reply@portal.test>"
product_name = "{PRODUCT}"

[local]
methods = ["email_code", "password"]
{local_extra}

[limits]
login_starts_per_ip = 100000
login_starts_per_account = 100000
local_failures_per_ip = 100000
emails_per_account = 100000
token_calls_per_ip = 100000
token_calls_per_account = 100000
{idp}
{admin}
[[client]]
client_id = "cli"
kind = "native"
redirect_uris = ["http://127.0.0.1/callback"]
audience = "{API}"

[[route]]
path_prefix = "/vault/"
access = "authenticated"
mfa = true

[[route]]
path_prefix = "/recent/"
access = "authenticated"
max_auth_age_seconds = 1

[[route]]
path_prefix = "/v1/"
access = "authenticated"
api = true
bearer = {{ issuers = ["{base_url}"], audiences = ["{API}"] }}
{routes}"#,
        idp = idp_toml("main", &urls.issuers[0]),
        admin = support::admin::SECTION,
        base_url = urls.base,
        routes = support::ROUTES,
    )
}

fn token_key() -> String {
    base64::engine::general_purpose::STANDARD.encode([9u8; 32])
}

/// The stack with an SMTP server, the OP (for SSO orgs), and the orgs Small (`small.test`, no
/// IdP: local methods by default) and Initech (`initech.test`, SSO through `main`).
async fn local_stack(backend: Backend, local_extra: &'static str) -> LocalStack {
    let dir = tempfile::tempdir().expect("tempdir");
    let smtp = Smtp::start(dir.path()).await;
    let smtp_url = smtp.url();
    let stack = Stack::start_with(
        backend,
        StackOptions {
            providers: vec![Vec::new()],
            config: Box::new(move |urls| config(urls, &smtp_url, local_extra)),
            env: vec![
                (TOKEN_KEY_VAR.to_owned(), token_key()),
                (
                    support::admin::TOKEN_VAR.to_owned(),
                    support::admin::TOKEN.to_owned(),
                ),
            ],
            ..StackOptions::default()
        },
    )
    .await;
    let gh = &stack.gatehouse;
    gh.cli_ok(&[
        "org",
        "add",
        "Small",
        "--domain",
        "small.test",
        "--auto-enable",
    ])
    .await;
    gh.cli_ok(&["org", "add", "Initech", "--domain", "initech.test"])
        .await;
    gh.cli_ok(&["org", "set", "Initech", "--idp", "main"]).await;
    LocalStack { stack, smtp, dir }
}

fn form(page: &Page, action: &str) -> Form {
    forms(page)
        .into_iter()
        .find(|f| f.action.path() == action)
        .unwrap_or_else(|| {
            panic!(
                "no form posting to {action} on {}: {}",
                page.url,
                page.body()
            )
        })
}

fn has_session(browser: &Browser) -> bool {
    browser
        .cookie(HOST, "gatehouse")
        .is_some_and(|v| !v.is_empty())
}

/// Opens `/auth/login` for `email` through Envoy: the local sign-in page.
async fn local_page(browser: &mut Browser, ls: &LocalStack, email: &str, query: &str) -> Page {
    let page = browser
        .navigate(&format!(
            "{}/auth/login?login_hint={email}&rd=%2Fapp%2Fhome{query}",
            ls.stack.base
        ))
        .await;
    assert_eq!(page.status(), 200, "{:#?}\n{}", page.hops, page.body());
    assert_eq!(page.url.path(), "/auth/local", "{:#?}", page.hops);
    page
}

/// Asks for a code on the sign-in page: the code page, and the mail (the `n`th to `email`).
async fn request_code(
    browser: &mut Browser,
    ls: &LocalStack,
    page: &Page,
    email: &str,
    n: usize,
) -> (Page, Mail) {
    let sent = browser
        .submit(page, &form(page, "/auth/local/code/send"), &[])
        .await;
    assert_eq!(sent.status(), 200, "{}", sent.body());
    assert!(sent.body().contains("Check your email"), "{}", sent.body());
    (sent, ls.smtp.nth(email, n).await)
}

/// Signs a new browser in with an emailed code; returns the browser (signed in).
async fn sign_in_by_code(ls: &LocalStack, email: &str, n: usize) -> Browser {
    let mut browser = Browser::new();
    let page = local_page(&mut browser, ls, email, "").await;
    let (code_page, mail) = request_code(&mut browser, ls, &page, email, n).await;
    let done = browser
        .submit(
            &code_page,
            &form(&code_page, "/auth/local/code"),
            &[("code", &mail.code())],
        )
        .await;
    assert_eq!(done.status(), 200, "{:#?}\n{}", done.hops, done.body());
    assert!(has_session(&browser), "{:#?}", done.hops);
    browser
}

/// GET through Envoy as this browser; the upstream's view.
async fn visit(browser: &mut Browser, ls: &LocalStack, path: &str) -> Page {
    browser.navigate(&format!("{}{path}", ls.stack.base)).await
}

fn upstream_email(page: &Page) -> Option<String> {
    if !page.response.reached_upstream() {
        return None;
    }
    page.response.upstream_header("x-gatehouse-email")
}

async fn api(ls: &LocalStack, path: &str, token: Option<&str>, body: &Value) -> Response {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("user-agent", "local-signin-tests/1"),
    ];
    if let Some(t) = token {
        headers.push(("x-session-token", t));
    }
    send(
        ls.stack.envoy.listener,
        "POST",
        path,
        &headers,
        Some(("application/json", body.to_string().into_bytes())),
    )
    .await
}

async fn init(ls: &LocalStack, email: &str) -> (String, Value) {
    let r = api(
        ls,
        "/auth/v1/init",
        None,
        &json!({ "email": email, "client_id": "cli" }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r
        .header("x-session-token")
        .expect("x-session-token")
        .to_owned();
    (token, r.json())
}

async fn authenticate(ls: &LocalStack, token: &str, body: Value) -> Response {
    api(ls, "/auth/v1/authenticate", Some(token), &body).await
}

async fn refresh(ls: &LocalStack, refresh_token: &str) -> Response {
    let body = format!("grant_type=refresh_token&client_id=cli&refresh_token={refresh_token}");
    send(
        ls.stack.envoy.listener,
        "POST",
        "/auth/token",
        &[],
        Some(("application/x-www-form-urlencoded", body.into_bytes())),
    )
    .await
}

async fn audit(ls: &LocalStack, kind: &str) -> Vec<Value> {
    ls.stack
        .gatehouse
        .cli_ok(&["audit", "--kind", kind, "--json"])
        .await
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit json"))
        .collect()
}

/// `gatehouse user set-password EMAIL`, the password on stdin.
async fn set_password(
    gh: &Gatehouse,
    email: &str,
    password: &str,
) -> support::processes::CliOutput {
    use tokio::io::AsyncWriteExt;
    let config = gh.config.to_string_lossy().into_owned();
    let mut child = tokio::process::Command::new(support::processes::gatehouse_bin())
        .args(["user", "set-password", email, "--config", &config])
        .env(TOKEN_KEY_VAR, token_key())
        .env(support::admin::TOKEN_VAR, support::admin::TOKEN)
        .env("GATEHOUSE_SERVER_ADMIN_LISTEN", gh.admin.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .expect("write");
    drop(stdin);
    let out = child.wait_with_output().await.expect("wait");
    support::processes::CliOutput {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A TOTP code for `secret` (base32, as the enrollment page shows it) at `at` (Unix seconds),
/// computed independently of gatehouse (totp-rs).
fn totp_code(secret: &str, at: u64) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .expect("base32 secret");
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes)
        .expect("totp")
        .generate(at)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The secret in text on the enrollment page.
fn enrollment_secret(page: &Page) -> String {
    let body = page.body();
    let marker = "<code class=\"secret\">";
    let start = body.find(marker).expect("secret on the page") + marker.len();
    let end = body[start..].find("</code>").expect("end of secret") + start;
    body[start..end].to_owned()
}

// === emailed codes and links ===

async fn passwordless_sign_up_and_sign_in_by_code_and_link(backend: Backend) {
    let ls = local_stack(backend, "").await;
    // Seed 001's path: a person from a domain no org lists signs up at a page that asks for
    // it (`signup=1`). The first page asks for the email (local sign-in is configured).
    let mut browser = Browser::new();
    let first = browser
        .navigate(&format!(
            "{}/auth/login?signup=1&rd=%2Fapp%2Fhome",
            ls.stack.base
        ))
        .await;
    assert!(
        first.body().contains("name=\"login_hint\""),
        "{}",
        first.body()
    );
    assert!(first.body().contains("name=\"signup\" value=\"1\""));
    let page = browser
        .submit(
            &first,
            &forms(&first)[0],
            &[("login_hint", "newbie@solo.test")],
        )
        .await;
    assert_eq!(page.url.path(), "/auth/local", "{:#?}", page.hops);
    let (code_page, mail) = request_code(&mut browser, &ls, &page, "newbie@solo.test", 1).await;
    // One mail: text and HTML parts, naming the product, with both a code and a link.
    assert_eq!(mail.content_type, "multipart/alternative");
    assert!(mail.subject.contains(PRODUCT), "{}", mail.subject);
    assert!(mail.text.contains(PRODUCT) && mail.html.contains(PRODUCT));
    assert!(mail.link().contains("/auth/local/link?t="), "{}", mail.text);
    assert!(mail.from.contains("no-reply@portal.test"));
    let done = browser
        .submit(
            &code_page,
            &form(&code_page, "/auth/local/code"),
            &[("code", &mail.code())],
        )
        .await;
    assert_eq!(done.url.path(), "/app/home", "{:#?}", done.hops);
    assert_eq!(upstream_email(&done).as_deref(), Some("newbie@solo.test"));
    assert_eq!(audit(&ls, "user_provisioned").await.len(), 1);

    // Without signup=1 a stranger gets a "no account" mail, no code (and the same page).
    let mut stranger = Browser::new();
    let page = local_page(&mut stranger, &ls, "other@solo.test", "").await;
    let (_, mail) = request_code(&mut stranger, &ls, &page, "other@solo.test", 1).await;
    assert!(mail.text.contains("no account"), "{}", mail.text);

    // A link: refused in another browser, accepted in the one that asked, then spent.
    let mut asker = Browser::new();
    let page = local_page(&mut asker, &ls, "bo@small.test", "").await;
    let (_, mail) = request_code(&mut asker, &ls, &page, "bo@small.test", 1).await;
    let mut elsewhere = Browser::new();
    let refused = elsewhere.navigate(&mail.link()).await;
    assert_eq!(refused.status(), 403, "{}", refused.body());
    assert!(
        refused.body().contains("same browser"),
        "{}",
        refused.body()
    );
    assert!(!has_session(&elsewhere));
    let done = asker.navigate(&mail.link()).await;
    assert_eq!(done.url.path(), "/app/home", "{:#?}", done.hops);
    assert_eq!(upstream_email(&done).as_deref(), Some("bo@small.test"));
    let again = asker.navigate(&mail.link()).await;
    assert_eq!(again.status(), 400, "a link works once: {}", again.body());

    // A returning user signs in by code: no second user.
    let mut back = sign_in_by_code(&ls, "bo@small.test", 2).await;
    let home = visit(&mut back, &ls, "/app/home").await;
    assert_eq!(upstream_email(&home).as_deref(), Some("bo@small.test"));
    assert_eq!(ls.stack.db.count("users").await, 2);
    // A route that wants a recent sign-in sends a local session back to its own sign-in page
    // (no TOTP involved): a new code, and the route lets it through.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let again = visit(&mut back, &ls, "/recent/report").await;
    assert_eq!(again.url.path(), "/auth/local", "{:#?}", again.hops);
    assert!(again.body().contains("bo@small.test"));
    let (code_page, mail) = request_code(&mut back, &ls, &again, "bo@small.test", 3).await;
    let done = back
        .submit(
            &code_page,
            &form(&code_page, "/auth/local/code"),
            &[("code", &mail.code())],
        )
        .await;
    assert_eq!(done.url.path(), "/recent/report", "{:#?}", done.hops);
    assert_eq!(upstream_email(&done).as_deref(), Some("bo@small.test"));
    let logins = audit(&ls, "login_succeeded").await;
    assert!(logins.iter().all(|e| e["idp"] == "local"), "{logins:?}");
}

async fn emailed_codes_are_single_use_expire_and_allow_five_attempts(backend: Backend) {
    let ls = local_stack(backend, "").await;
    let email = "cy@small.test";
    // Reuse: the code that signed one browser in does nothing a second time.
    let mut browser = Browser::new();
    let page = local_page(&mut browser, &ls, email, "").await;
    let (code_page, mail) = request_code(&mut browser, &ls, &page, email, 1).await;
    let code_form = form(&code_page, "/auth/local/code");
    let done = browser
        .submit(&code_page, &code_form, &[("code", &mail.code())])
        .await;
    assert_eq!(done.url.path(), "/app/home");
    let mut replay = Browser::new();
    let replay_page = local_page(&mut replay, &ls, email, "").await;
    let (replay_code_page, _) = request_code(&mut replay, &ls, &replay_page, email, 2).await;
    let replayed = replay
        .submit(
            &replay_code_page,
            &form(&replay_code_page, "/auth/local/code"),
            &[("code", &mail.code())],
        )
        .await;
    assert_eq!(replayed.status(), 400, "{}", replayed.body());
    assert!(!has_session(&replay));

    // Expiry: a code past its time is refused even when right.
    let mut late = Browser::new();
    let page = local_page(&mut late, &ls, email, "").await;
    let (code_page, mail) = request_code(&mut late, &ls, &page, email, 3).await;
    ls.stack
        .db
        .execute("UPDATE local_flows SET code_expires_at = 1 WHERE code_hash IS NOT NULL")
        .await;
    let expired = late
        .submit(
            &code_page,
            &form(&code_page, "/auth/local/code"),
            &[("code", &mail.code())],
        )
        .await;
    assert_eq!(expired.status(), 400);
    assert!(
        expired.body().contains("not correct, or it has expired"),
        "{}",
        expired.body()
    );
    assert!(!has_session(&late));

    // Five wrong attempts; the sixth is refused even with the right code.
    let mut guesser = Browser::new();
    let page = local_page(&mut guesser, &ls, "dee@small.test", "").await;
    let (code_page, mail) = request_code(&mut guesser, &ls, &page, "dee@small.test", 1).await;
    let right = mail.code();
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let code_form = form(&code_page, "/auth/local/code");
    for attempt in 1..=5 {
        let r = guesser
            .submit(&code_page, &code_form, &[("code", wrong)])
            .await;
        assert_eq!(r.status(), 400, "attempt {attempt}: {}", r.body());
    }
    let sixth = guesser
        .submit(&code_page, &code_form, &[("code", &right)])
        .await;
    assert_eq!(sixth.status(), 400, "{}", sixth.body());
    assert!(!has_session(&guesser));
    let failures = audit(&ls, "login_failed").await;
    assert!(failures.len() >= 7, "{failures:?}");
}

// === passwords ===

async fn passwords_set_change_reset_and_weak_ones_refused(backend: Backend) {
    let ls = local_stack(backend, "").await;
    let email = "eve@small.test";
    // Setting a password needs a proven address: a session from an emailed code.
    let mut first = sign_in_by_code(&ls, email, 1).await;
    let page = visit(&mut first, &ls, "/auth/local/account/password").await;
    assert_eq!(page.status(), 200, "{}", page.body());
    assert!(!page.body().contains("name=\"current\""), "no password yet");
    let pw_form = form(&page, "/auth/local/account/password");
    for weak in [
        "short",
        "password12345",
        "eve@small.test-2024",
        "acme portal rocks 1",
    ] {
        let r = first.submit(&page, &pw_form, &[("password", weak)]).await;
        assert_eq!(r.status(), 400, "{weak:?} must be refused: {}", r.body());
    }
    let saved = first.submit(&page, &pw_form, &[("password", STRONG)]).await;
    assert_eq!(saved.status(), 200, "{}", saved.body());
    assert!(saved.body().contains("Saved"));
    assert_eq!(audit(&ls, "password_set").await.len(), 1);

    // Sign in with it in a second browser, and get app tokens through the API.
    let mut second = Browser::new();
    let page = local_page(&mut second, &ls, email, "").await;
    let done = second
        .submit(
            &page,
            &form(&page, "/auth/local/password"),
            &[("password", STRONG)],
        )
        .await;
    assert_eq!(done.url.path(), "/app/home", "{:#?}", done.hops);
    let (token, _) = init(&ls, email).await;
    let tokens = authenticate(
        &ls,
        &token,
        json!({"method": "password", "password": STRONG}),
    )
    .await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let old_refresh = tokens.json()["refresh_token"].as_str().unwrap().to_owned();

    // Change it in the second browser: the first browser's session and the refresh token end;
    // the second browser stays signed in.
    let page = visit(&mut second, &ls, "/auth/local/account/password").await;
    assert!(page.body().contains("name=\"current\""));
    let change = form(&page, "/auth/local/account/password");
    let wrong = second
        .submit(
            &page,
            &change,
            &[("current", "nope"), ("password", STRONG_2)],
        )
        .await;
    assert_eq!(wrong.status(), 400);
    let changed = second
        .submit(
            &page,
            &change,
            &[("current", STRONG), ("password", STRONG_2)],
        )
        .await;
    assert_eq!(changed.status(), 200, "{}", changed.body());
    let kept = visit(&mut second, &ls, "/app/home").await;
    assert_eq!(upstream_email(&kept).as_deref(), Some(email));
    let ended = visit(&mut first, &ls, "/app/home").await;
    assert_ne!(
        upstream_email(&ended).as_deref(),
        Some(email),
        "old session must end"
    );
    let r = refresh(&ls, &old_refresh).await;
    assert_eq!(r.status, 400, "{}", r.body);

    // Reset through the emailed link: every session and refresh token ends.
    let (token, _) = init(&ls, email).await;
    let tokens = authenticate(
        &ls,
        &token,
        json!({"method": "password", "password": STRONG_2}),
    )
    .await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let old_refresh = tokens.json()["refresh_token"].as_str().unwrap().to_owned();
    let mut third = Browser::new();
    let forgot = third
        .navigate(&format!("{}/auth/local/forgot", ls.stack.base))
        .await;
    let sent = third
        .submit(
            &forgot,
            &form(&forgot, "/auth/local/forgot"),
            &[("email", email)],
        )
        .await;
    assert_eq!(sent.status(), 200, "{}", sent.body());
    let mail = ls.smtp.nth(email, 2).await;
    assert!(mail.subject.contains("Reset"), "{}", mail.subject);
    let reset_page = third.navigate(&mail.link()).await;
    assert_eq!(reset_page.status(), 200, "{}", reset_page.body());
    let reset_form = form(&reset_page, "/auth/local/reset");
    let weak = third
        .submit(&reset_page, &reset_form, &[("password", "12345678901234")])
        .await;
    assert_eq!(weak.status(), 400);
    let reset = third
        .submit(&reset_page, &reset_form, &[("password", STRONG)])
        .await;
    assert_eq!(reset.status(), 200, "{}", reset.body());
    let again = third
        .submit(&reset_page, &reset_form, &[("password", STRONG_2)])
        .await;
    assert_eq!(again.status(), 400, "a reset link works once");
    let ended = visit(&mut second, &ls, "/app/home").await;
    assert_ne!(upstream_email(&ended).as_deref(), Some(email));
    assert_eq!(refresh(&ls, &old_refresh).await.status, 400);
    assert_eq!(audit(&ls, "password_reset").await.len(), 1);
    // The new password works; the old one does not.
    let (token, _) = init(&ls, email).await;
    let old = authenticate(
        &ls,
        &token,
        json!({"method": "password", "password": STRONG_2}),
    )
    .await;
    assert_eq!(old.status, 400);
    let new = authenticate(
        &ls,
        &token,
        json!({"method": "password", "password": STRONG}),
    )
    .await;
    assert_eq!(new.status, 200, "{}", new.body);
}

async fn no_account_enumeration(backend: Backend) {
    let ls = local_stack(backend, "lockout_failures = 100000").await;
    let known = "kim@small.test";
    let unknown = "ghost@small.test";
    ls.stack.gatehouse.session_for(known).await;
    let out = set_password(&ls.stack.gatehouse, known, STRONG).await;
    assert!(out.success, "{}", out.stderr);

    // Forgot: the same page for both (one browser, so the same CSRF token).
    let mut browser = Browser::new();
    let forgot = browser
        .navigate(&format!("{}/auth/local/forgot", ls.stack.base))
        .await;
    let f = form(&forgot, "/auth/local/forgot");
    let a = browser.submit(&forgot, &f, &[("email", known)]).await;
    let b = browser.submit(&forgot, &f, &[("email", unknown)]).await;
    assert_eq!((a.status(), a.body()), (b.status(), b.body()));
    ls.smtp.nth(known, 1).await;
    ls.smtp.nth(unknown, 1).await;

    // The API: init, a code request and a wrong password answer alike.
    let (ta, ia) = init(&ls, known).await;
    let (tb, ib) = init(&ls, unknown).await;
    assert_eq!(ia, ib);
    let send_a = authenticate(&ls, &ta, json!({"method": "email_code", "send": true})).await;
    let send_b = authenticate(&ls, &tb, json!({"method": "email_code", "send": true})).await;
    assert_eq!((send_a.status, &send_a.body), (send_b.status, &send_b.body));
    let pw_a = authenticate(
        &ls,
        &ta,
        json!({"method": "password", "password": "wrong-horse-1"}),
    )
    .await;
    let pw_b = authenticate(
        &ls,
        &tb,
        json!({"method": "password", "password": "wrong-horse-1"}),
    )
    .await;
    assert_eq!((pw_a.status, &pw_a.body), (pw_b.status, &pw_b.body));
    assert_eq!(pw_a.status, 400);

    // Timing: a wrong password for a known and an unknown address, 200 tries each, alternated.
    // Measured and printed; the assertion is loose (shared CI machines are noisy): the issue's
    // bar is a median difference under 20%.
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..400 {
        let email = if i % 2 == 0 { known } else { unknown };
        let (token, _) = init(&ls, email).await;
        let started = Instant::now();
        let r = authenticate(
            &ls,
            &token,
            json!({"method": "password", "password": "not-it-at-all-9"}),
        )
        .await;
        times[i % 2].push(started.elapsed());
        assert_eq!(r.status, 400);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mk, mu) = (median(&mut times[0]), median(&mut times[1]));
    let ratio = mk.as_secs_f64() / mu.as_secs_f64();
    println!(
        "enumeration timing ({backend:?}): known median {mk:?}, unknown median {mu:?}, ratio {ratio:.3}"
    );
    assert!(
        (0.5..2.0).contains(&ratio),
        "known {mk:?} vs unknown {mu:?}"
    );
}

// === lockout ===

async fn lockout_notifies_holds_across_restarts_and_unlocks(backend: Backend) {
    let mut ls = local_stack(backend, "").await;
    let email = "lou@hooli.test";
    // Hooli signs in with SSO and allows passwords too. Lou first signs in with SSO.
    let gh = &ls.stack.gatehouse;
    gh.cli_ok(&[
        "org",
        "add",
        "Hooli",
        "--domain",
        "hooli.test",
        "--auto-enable",
    ])
    .await;
    gh.cli_ok(&[
        "org",
        "set",
        "Hooli",
        "--idp",
        "main",
        "--methods",
        "sso,password",
    ])
    .await;
    let sso_login = |ls: &LocalStack| {
        let base = ls.stack.base.clone();
        async move {
            let mut browser = Browser::new();
            let page = browser
                .navigate(&format!(
                    "{base}/auth/login?login_hint={email}&sso=1&rd=%2Fapp%2Fhome"
                ))
                .await;
            let custom = forms(&page)
                .into_iter()
                .find(|f| f.id.as_deref() == Some("custom"))
                .expect("the OP's page");
            let done = browser
                .submit(
                    &page,
                    &custom,
                    &[("sub", "lou"), ("email", email), ("email_verified", "true")],
                )
                .await;
            upstream_email(&done)
        }
    };
    assert_eq!(sso_login(&ls).await.as_deref(), Some(email));
    let out = set_password(gh, email, STRONG).await;
    assert!(out.success, "{}", out.stderr);

    // Three wrong passwords block local sign-in: the right one is then refused, with the
    // same answer as a wrong one.
    let (token, _) = init(&ls, email).await;
    for _ in 0..3 {
        let r = authenticate(
            &ls,
            &token,
            json!({"method": "password", "password": "bad-guess-77"}),
        )
        .await;
        assert_eq!(r.status, 400);
    }
    let (token, _) = init(&ls, email).await;
    let wrong = authenticate(
        &ls,
        &token,
        json!({"method": "password", "password": "bad-guess-77"}),
    )
    .await;
    let right = authenticate(
        &ls,
        &token,
        json!({"method": "password", "password": STRONG}),
    )
    .await;
    assert_eq!((right.status, &right.body), (wrong.status, &wrong.body));
    // Failures during the block do not start another one (nor another mail).
    let (token, _) = init(&ls, email).await;
    for _ in 0..4 {
        let r = authenticate(
            &ls,
            &token,
            json!({"method": "password", "password": "bad-guess-78"}),
        )
        .await;
        assert_eq!(r.status, 400);
    }
    // One notification mail per block, and the audit event.
    let notice = ls.smtp.nth(email, 1).await;
    assert!(notice.subject.contains("blocked"), "{}", notice.subject);
    // When, from where, with what: the address Envoy saw and the user agent.
    assert!(notice.text.contains("Last attempt: 20"), "{}", notice.text);
    assert!(notice.text.contains(" UTC, from "), "{}", notice.text);
    assert!(
        notice.text.contains("local-signin-tests/1"),
        "{}",
        notice.text
    );
    assert_eq!(ls.smtp.to(email).len(), 1, "one notice per block");
    assert_eq!(audit(&ls, "account_locked").await.len(), 1);
    // SSO is not affected.
    assert_eq!(sso_login(&ls).await.as_deref(), Some(email));

    // The block is in the database: it holds after a restart, and on a second replica.
    let config = std::fs::read_to_string(&ls.stack.gatehouse.config).expect("config");
    ls.stack.gatehouse.stop().await;
    let restarted_dir = tempfile::tempdir().expect("tempdir");
    let env = [
        (TOKEN_KEY_VAR, token_key()),
        (support::admin::TOKEN_VAR, support::admin::TOKEN.to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let restarted = Gatehouse::start(restarted_dir.path(), &config, &env).await;
    let try_password = |gh: &Gatehouse| {
        let gh_http = gh.http;
        async move {
            let init = send(
                gh_http,
                "POST",
                "/auth/v1/init",
                &[("content-type", "application/json")],
                Some((
                    "application/json",
                    json!({"email": email, "client_id": "cli"})
                        .to_string()
                        .into_bytes(),
                )),
            )
            .await;
            let token = init.header("x-session-token").expect("token").to_owned();
            send(
                gh_http,
                "POST",
                "/auth/v1/authenticate",
                &[
                    ("content-type", "application/json"),
                    ("x-session-token", &token),
                ],
                Some((
                    "application/json",
                    json!({"method": "password", "password": STRONG})
                        .to_string()
                        .into_bytes(),
                )),
            )
            .await
            .status
        }
    };
    assert_eq!(
        try_password(&restarted).await,
        400,
        "blocked after a restart"
    );
    let replica = if backend == Backend::Postgres {
        let dir = tempfile::tempdir().expect("tempdir");
        let replica = Gatehouse::start(dir.path(), &config, &env).await;
        assert_eq!(
            try_password(&replica).await,
            400,
            "blocked on a second replica"
        );
        Some((replica, dir))
    } else {
        None
    };

    // `user unlock` lifts it (audited).
    restarted.cli_ok(&["user", "unlock", email]).await;
    assert_eq!(audit_on(&restarted, "account_unlocked").await.len(), 1);
    assert_eq!(try_password(&restarted).await, 200);
    if let Some((replica, _)) = &replica {
        assert_eq!(try_password(replica).await, 200);
    }
}

async fn audit_on(gh: &Gatehouse, kind: &str) -> Vec<Value> {
    gh.cli_ok(&["audit", "--kind", kind, "--json"])
        .await
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit json"))
        .collect()
}

// === SSO orgs ===

async fn an_sso_org_refuses_local_credentials(backend: Backend) {
    let ls = local_stack(backend, "").await;
    let email = "ian@initech.test";
    // Discovery sends the address to the IdP, not the local page.
    let mut browser = Browser::new();
    let page = browser
        .navigate(&format!("{}/auth/login?login_hint={email}", ls.stack.base))
        .await;
    assert!(support::op::is_interaction(&page), "{:#?}", page.hops);
    // The API says SSO, with the authorize URL; local steps are refused by name.
    let (token, methods) = init(&ls, email).await;
    assert_eq!(methods["methods"], json!(["sso"]));
    let authorize = methods["authorize_url"].as_str().expect("authorize_url");
    assert!(
        authorize.contains("/auth/authorize?")
            && authorize.contains("login_hint=ian%40initech.test")
    );
    for step in [
        json!({"method": "password", "password": STRONG}),
        json!({"method": "email_code", "send": true}),
        json!({"method": "email_code", "code": "123456"}),
    ] {
        let r = authenticate(&ls, &token, step).await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(r.json()["error"], "access_denied");
        assert_eq!(
            r.json()["error_description"],
            "initech.test signs in with Initech SSO."
        );
    }
    // The pages refuse too, and so do the forgot form and the operator's set-password.
    let mut browser = Browser::new();
    let page = browser
        .navigate(&format!("{}/auth/local?login_hint={email}", ls.stack.base))
        .await;
    assert_eq!(page.status(), 403);
    assert!(
        page.body()
            .contains("initech.test signs in with Initech SSO.")
    );
    let forgot = browser
        .navigate(&format!("{}/auth/local/forgot", ls.stack.base))
        .await;
    let r = browser
        .submit(
            &forgot,
            &form(&forgot, "/auth/local/forgot"),
            &[("email", email)],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(ls.smtp.to(email).is_empty());
    ls.stack.gatehouse.session_for(email).await;
    let out = set_password(&ls.stack.gatehouse, email, STRONG).await;
    assert!(!out.success);
    assert!(out.stderr.contains("Initech SSO"), "{}", out.stderr);
    // The admin API sets an org's methods (audited); listing a local one lets it in.
    let admin = support::admin::Api::new(ls.stack.gatehouse.admin);
    let org = admin
        .expect(
            200,
            "PATCH",
            "/admin/v1/orgs/Initech",
            Some(json!({"methods": ["password", "sso"]})),
        )
        .await;
    assert_eq!(org["methods"], json!(["sso", "password"]));
    admin
        .expect(
            400,
            "PATCH",
            "/admin/v1/orgs/Initech",
            Some(json!({"methods": ["totp"]})),
        )
        .await;
    assert!(audit(&ls, "org_updated").await.len() >= 2);
    let (token, methods) = init(&ls, email).await;
    assert_eq!(methods["methods"], json!(["sso", "password"]));
    let r = authenticate(
        &ls,
        &token,
        json!({"method": "password", "password": STRONG}),
    )
    .await;
    assert_eq!(
        r.status, 400,
        "checked now, and wrong (no password yet): {}",
        r.body
    );
    assert_eq!(r.json()["error"], "invalid_grant");
    // An org without local sign-in configured cannot be given local methods by mistake.
    let bad = ls
        .stack
        .gatehouse
        .cli(&["org", "set", "Initech", "--methods", "sso,magic"])
        .await;
    assert!(
        !bad.success && bad.stderr.contains("magic"),
        "{}",
        bad.stderr
    );
}

// === TOTP ===

async fn totp_enrollment_replay_recovery_and_step_up(backend: Backend) {
    let ls = local_stack(backend, "").await;
    let email = "tia@small.test";
    let mut browser = sign_in_by_code(&ls, email, 1).await;
    // The MFA route steps the local session up: not enrolled yet, so enrollment first.
    let page = visit(&mut browser, &ls, "/vault/secret").await;
    assert_eq!(
        page.url.path(),
        "/auth/local/totp/enroll",
        "{:#?}",
        page.hops
    );
    assert!(page.body().contains("<svg"), "a QR code");
    let secret = enrollment_secret(&page);
    let enroll = form(&page, "/auth/local/totp/enroll");
    let wrong = browser.submit(&page, &enroll, &[("code", "000000")]).await;
    assert_eq!(wrong.status(), 400);
    assert_eq!(
        enrollment_secret(&wrong),
        secret,
        "the same secret is shown again"
    );
    let at = now();
    let code = totp_code(&secret, at);
    let codes_page = browser.submit(&page, &enroll, &[("code", &code)]).await;
    assert_eq!(codes_page.status(), 200, "{}", codes_page.body());
    let recovery: Vec<String> = codes_page
        .body()
        .split("<li>")
        .skip(1)
        .map(|s| s.split("</li>").next().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    assert_eq!(audit(&ls, "mfa_enrolled").await.len(), 1);
    // The new session has MFA: the route lets it through.
    let vault = visit(&mut browser, &ls, "/vault/secret").await;
    assert_eq!(
        upstream_email(&vault).as_deref(),
        Some(email),
        "{:#?}",
        vault.hops
    );

    // A second sign-in asks for TOTP; the code used at enrollment is refused (replay).
    let mut other = Browser::new();
    let page = local_page(&mut other, &ls, email, "").await;
    let (code_page, mail) = request_code(&mut other, &ls, &page, email, 2).await;
    let totp_page = other
        .submit(
            &code_page,
            &form(&code_page, "/auth/local/code"),
            &[("code", &mail.code())],
        )
        .await;
    assert!(
        totp_page.body().contains("Two-factor"),
        "{}",
        totp_page.body()
    );
    assert!(!has_session(&other));
    let totp_form = form(&totp_page, "/auth/local/totp");
    // A first factor cannot replace the second by enrolling a new device.
    let bypass = visit(&mut other, &ls, "/auth/local/totp/enroll").await;
    assert_eq!(bypass.status(), 403, "{}", bypass.body());
    assert!(!bypass.body().contains("<svg"));
    // Nor can a session that did not use TOTP (here: one made by the CLI).
    let cli_session = ls.stack.gatehouse.session_for(email).await;
    let mut holder = Browser::new();
    holder.set_cookie(HOST, "gatehouse", &cli_session);
    let bypass = visit(&mut holder, &ls, "/auth/local/totp/enroll").await;
    assert_eq!(bypass.status(), 403, "{}", bypass.body());
    let replay = other
        .submit(&totp_page, &totp_form, &[("code", &code)])
        .await;
    assert_eq!(replay.status(), 400, "{}", replay.body());
    // The next step's code (within the skew) works once.
    let next = totp_code(&secret, at + 30);
    let done = other
        .submit(&totp_page, &totp_form, &[("code", &next)])
        .await;
    assert_eq!(done.url.path(), "/app/home", "{:#?}", done.hops);
    let vault = visit(&mut other, &ls, "/vault/x").await;
    assert_eq!(upstream_email(&vault).as_deref(), Some(email));

    // A recovery code works once.
    let use_recovery = |n: usize| {
        let ls = &ls;
        let code = recovery[0].clone();
        async move {
            let mut b = Browser::new();
            let page = local_page(&mut b, ls, email, "").await;
            let (code_page, mail) = request_code(&mut b, ls, &page, email, n).await;
            let totp_page = b
                .submit(
                    &code_page,
                    &form(&code_page, "/auth/local/code"),
                    &[("code", &mail.code())],
                )
                .await;
            let done = b
                .submit(
                    &totp_page,
                    &form(&totp_page, "/auth/local/totp"),
                    &[("code", &code)],
                )
                .await;
            (done.status(), has_session(&b))
        }
    };
    assert_eq!(use_recovery(3).await, (200, true));
    assert!(!use_recovery(4).await.1, "a recovery code is single use");

    // An operator's reset removes TOTP (audited).
    ls.stack
        .gatehouse
        .cli_ok(&["user", "mfa-reset", email])
        .await;
    assert_eq!(audit(&ls, "mfa_reset").await.len(), 1);
}

// === the API ===

async fn multi_step_api_end_to_end(backend: Backend) {
    let ls = local_stack(backend, "").await;
    let email = "api@globex.test";
    let gh = &ls.stack.gatehouse;
    gh.cli_ok(&[
        "org",
        "add",
        "Globex",
        "--domain",
        "globex.test",
        "--auto-enable",
    ])
    .await;
    gh.cli_ok(&["org", "set", "Globex", "--methods", "email_code,totp"])
        .await;
    // Enroll TOTP in the browser first (the org requires it at the first sign-in).
    let mut browser = Browser::new();
    let page = local_page(&mut browser, &ls, email, "").await;
    assert!(
        !page.body().contains("type=\"password\""),
        "Globex offers no password"
    );
    let (code_page, mail) = request_code(&mut browser, &ls, &page, email, 1).await;
    let enroll_page = browser
        .submit(
            &code_page,
            &form(&code_page, "/auth/local/code"),
            &[("code", &mail.code())],
        )
        .await;
    assert_eq!(
        enroll_page.url.path(),
        "/auth/local/totp/enroll",
        "{:#?}",
        enroll_page.hops
    );
    let secret = enrollment_secret(&enroll_page);
    let at = now();
    let done = browser
        .submit(
            &enroll_page,
            &form(&enroll_page, "/auth/local/totp/enroll"),
            &[("code", &totp_code(&secret, at))],
        )
        .await;
    assert_eq!(done.status(), 200);
    assert!(has_session(&browser));

    // init → email_code → totp → tokens, from a plain HTTP client.
    let (token, methods) = init(&ls, email).await;
    assert_eq!(methods["methods"], json!(["email_code", "totp"]));
    let r = authenticate(
        &ls,
        &token,
        json!({"method": "password", "password": STRONG}),
    )
    .await;
    assert_eq!(r.status, 403, "Globex refuses passwords: {}", r.body);
    let r = authenticate(&ls, &token, json!({"method": "email_code", "send": true})).await;
    assert_eq!(r.json(), json!({"next": ["email_code"]}), "{}", r.body);
    let code = ls.smtp.nth(email, 2).await.code();
    let r = authenticate(&ls, &token, json!({"method": "totp", "code": "123456"})).await;
    assert_eq!(r.status, 400, "TOTP before the first factor: {}", r.body);
    let r = authenticate(&ls, &token, json!({"method": "email_code", "code": code})).await;
    assert_eq!(r.json(), json!({"next": ["totp"]}), "{}", r.body);
    let r = authenticate(
        &ls,
        &token,
        json!({"method": "totp", "code": totp_code(&secret, at + 30)}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let tokens = r.json();
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().expect("access_token");
    let refresh_token = tokens["refresh_token"].as_str().expect("refresh_token");
    // The access token on a bearer route.
    let api_call = ls
        .stack
        .get(
            "/v1/things",
            &[("authorization", &format!("Bearer {access}"))],
        )
        .await;
    assert_eq!(api_call.status, 200, "{}", api_call.body);
    assert_eq!(
        api_call.upstream_header("x-gatehouse-email").as_deref(),
        Some(email)
    );
    // Refresh works.
    let refreshed = refresh(&ls, refresh_token).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    // The x-session-token is spent; an expired one is refused; garbage too.
    let r = authenticate(&ls, &token, json!({"method": "email_code", "send": true})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    let (expired, _) = init(&ls, email).await;
    ls.stack
        .db
        .execute("UPDATE local_flows SET expires_at = 1")
        .await;
    let r = authenticate(&ls, &expired, json!({"method": "email_code", "send": true})).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = authenticate(
        &ls,
        "garbage",
        json!({"method": "email_code", "send": true}),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    // Five failed steps kill a flow.
    let (dying, _) = init(&ls, email).await;
    authenticate(&ls, &dying, json!({"method": "email_code", "send": true})).await;
    for _ in 0..5 {
        let r = authenticate(
            &ls,
            &dying,
            json!({"method": "email_code", "code": "000000"}),
        )
        .await;
        assert_eq!(r.status, 400);
    }
    let code = ls.smtp.nth(email, 3).await.code();
    let r = authenticate(&ls, &dying, json!({"method": "email_code", "code": code})).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    // An unknown client and a malformed body are refused.
    let r = api(
        &ls,
        "/auth/v1/init",
        None,
        &json!({"email": email, "client_id": "nope"}),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = api(&ls, "/auth/v1/init", None, &json!({"mail": email})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
    let _ = &ls.dir;
}

// === SMTP outage ===

async fn smtp_down_is_a_503_and_recovers(backend: Backend) {
    let mut ls = local_stack(backend, "").await;
    let email = "sam@small.test";
    let mut browser = Browser::new();
    let page = local_page(&mut browser, &ls, email, "").await;
    let send_form = form(&page, "/auth/local/code/send");
    ls.smtp.stop().await;
    let down = browser.submit(&page, &send_form, &[]).await;
    assert_eq!(down.status(), 503, "{}", down.body());
    assert!(down.body().contains("Nothing was lost"), "{}", down.body());
    let events = audit(&ls, "email_failed").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["outcome"], "failure");
    // SMTP comes back: the same flow sends, and the code signs in.
    ls.smtp = Smtp::start_on(ls.smtp.port, ls.dir.path()).await;
    let sent = browser.submit(&page, &send_form, &[]).await;
    assert_eq!(sent.status(), 200, "{}", sent.body());
    let mail = ls.smtp.nth(email, 1).await;
    let done = browser
        .submit(
            &sent,
            &form(&sent, "/auth/local/code"),
            &[("code", &mail.code())],
        )
        .await;
    assert_eq!(done.url.path(), "/app/home", "{:#?}", done.hops);
}
