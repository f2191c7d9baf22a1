//! SAML identity providers through the real Envoy, on SQLite and PostgreSQL.
//!
//! The forged-response corpus: an IdP whose key the test holds (metadata from a file), a
//! valid signed Response that signs in, and every listed forgery of it refused with an error
//! page and a `login_failed` audit event naming the rule. The real IdP (SimpleSAMLphp) tests
//! are in `saml_idp`.

use std::io::Read;

use crate::support;

use support::browser::{Browser, Page, Pending};
use support::saml::{
    AssertionSpec, KeyPair, PASSWORD_PROTECTED, PERSISTENT, RSA_SHA1, RSA_SHA256, ResponseSpec,
    idp_metadata, logout_request, new_id, now, post_encode, redirect_query, sign,
    signature_template,
};
use support::{Backend, Stack, StackOptions, base_config};

on_both_backends!(
    a_valid_signed_response_signs_in,
    forged_responses_are_refused_and_audited,
    replayed_assertions_are_refused_on_every_replica,
    responses_for_another_browser_are_refused,
    sp_metadata_names_the_acs_and_entity_id,
    idp_logout_requests_must_be_signed_recent_and_for_this_sp,
    step_up_asks_the_idp_to_authenticate_again_with_mfa,
    metadata_with_only_transient_name_ids_is_refused_at_start,
    an_entity_id_cannot_be_another_idps,
    trusted_emails_link_and_orgs_choose_a_saml_idp,
);

const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const FORGE_ENTITY: &str = "https://forge.test/idp";
const UNSOLICITED_ENTITY: &str = "https://unsolicited.test/idp";
/// Nothing listens there: the tests stop before the browser would go to the IdP.
const IDP_SSO: &str = "http://127.0.0.1:9/sso";
const IDP_ORIGIN: &str = "http://127.0.0.1:9";
const IDP_SLO: &str = "http://127.0.0.1:9/slo";
/// The forge IdP's MFA class (REFEDS MFA, as SAML IdPs name it).
const MFA: &str = "https://refeds.org/profile/mfa";
const STEP_UP_ROUTE: &str =
    "\n[[route]]\npath_prefix = \"/vault/\"\naccess = \"authenticated\"\nmfa = true\n";

struct Forge {
    stack: Stack,
    idp: KeyPair,
    other: KeyPair,
    _dir: tempfile::TempDir,
}

async fn forge(backend: Backend) -> Forge {
    let dir = tempfile::tempdir().expect("tempdir");
    let idp = KeyPair::generate(dir.path(), "idp");
    let other = KeyPair::generate(dir.path(), "other");
    let forge_md = dir.path().join("forge.xml");
    let unsolicited_md = dir.path().join("unsolicited.xml");
    std::fs::write(
        &forge_md,
        idp_metadata(FORGE_ENTITY, &idp, IDP_SSO, Some(IDP_SLO)),
    )
    .unwrap();
    std::fs::write(
        &unsolicited_md,
        idp_metadata(UNSOLICITED_ENTITY, &idp, IDP_SSO, None),
    )
    .unwrap();
    let idps = format!(
        "\n[[idp]]\nname = \"forge\"\nkind = \"saml\"\nmetadata_file = \"{}\"\n\
         domains = [\"forge.test\"]\nemail_attribute = \"email\"\nname_attribute = \"displayName\"\n\
         role_claims = {{ groups = {{ engineering = \"dev\" }} }}\n\
         mfa_acr_values = [\"{MFA}\"]\n\
         \n[[idp]]\nname = \"unsolicited\"\nkind = \"saml\"\nmetadata_file = \"{}\"\n\
         domains = [\"unsolicited.test\"]\nemail_attribute = \"email\"\nallow_idp_initiated = true\n\
         \n[limits]\nlogin_starts_per_ip = 0\nfailed_callbacks_per_ip = 0\n",
        forge_md.display(),
        unsolicited_md.display()
    );
    let stack = Stack::start_with(
        backend,
        StackOptions {
            config: Box::new(move |urls| {
                format!(
                    "{}{idps}{STEP_UP_ROUTE}{}",
                    base_config(urls),
                    support::ROUTES
                )
            }),
            ..StackOptions::default()
        },
    )
    .await;
    for (name, domain) in [("Forge", "forge.test"), ("Unsolicited", "unsolicited.test")] {
        stack
            .gatehouse
            .cli_ok(&["org", "add", name, "--domain", domain, "--auto-enable"])
            .await;
    }
    Forge {
        stack,
        idp,
        other,
        _dir: dir,
    }
}

impl Forge {
    fn acs(&self) -> String {
        format!("{}/auth/saml/acs", self.stack.base)
    }

    fn sp_entity(&self, idp: &str) -> String {
        format!("{}/auth/saml/{idp}/metadata", self.stack.base)
    }

    /// A Response and assertion for `user`@forge.test answering `request_id`, valid in every
    /// way; the cases change one thing.
    fn valid(&self, request_id: Option<&str>, user: &str) -> (ResponseSpec, AssertionSpec) {
        let (issuer, idp, domain) = if request_id.is_some() {
            (FORGE_ENTITY, "forge", "forge.test")
        } else {
            (UNSOLICITED_ENTITY, "unsolicited", "unsolicited.test")
        };
        let t = now();
        (
            ResponseSpec {
                id: new_id("r"),
                issuer: issuer.into(),
                destination: self.acs(),
                in_response_to: request_id.map(String::from),
                status: SUCCESS.into(),
            },
            AssertionSpec {
                id: new_id("a"),
                issuer: issuer.into(),
                name_id: format!("{user}-persistent-id"),
                name_id_format: PERSISTENT.into(),
                recipient: self.acs(),
                in_response_to: request_id.map(String::from),
                not_before: t - 30,
                not_on_or_after: t + 300,
                audience: self.sp_entity(idp),
                attributes: vec![
                    ("email".into(), vec![format!("{user}@{domain}")]),
                    ("displayName".into(), vec![format!("{user} Example")]),
                    ("groups".into(), vec!["engineering".into(), "staff".into()]),
                ],
                session_index: new_id("s"),
                authn_context: PASSWORD_PROTECTED.into(),
            },
        )
    }

    /// The usual shape: the assertion signed by the IdP's key, the Response not.
    fn signed(&self, r: &ResponseSpec, a: &AssertionSpec) -> String {
        let assertion = sign(
            &a.xml(Some(&signature_template(&a.id, RSA_SHA256, false))),
            &self.idp,
        );
        r.xml(None, &assertion)
    }

    /// Starts a login at `idp` in `browser` and stops before the IdP: the AuthnRequest's ID
    /// and the RelayState.
    async fn start(&self, browser: &mut Browser, idp: &str) -> (String, String) {
        let (id, relay, _) = self
            .start_at(browser, &format!("/auth/login?idp={idp}&rd=%2Freports"))
            .await;
        (id, relay)
    }

    /// Opens `path` and stops before the IdP: the AuthnRequest's ID, the RelayState and the
    /// request itself.
    async fn start_at(&self, browser: &mut Browser, path: &str) -> (String, String, String) {
        let pending = browser
            .navigate_until(&format!("{}{path}", self.stack.base), &|_, url| {
                url.port() == Some(9)
            })
            .await
            .expect_err("should stop before the IdP");
        let pairs: std::collections::HashMap<_, _> =
            pending.url.query_pairs().into_owned().collect();
        let deflated = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            &pairs["SAMLRequest"],
        )
        .expect("base64");
        let mut xml = String::new();
        flate2::read::DeflateDecoder::new(deflated.as_slice())
            .read_to_string(&mut xml)
            .expect("inflate");
        let id = regex::Regex::new(r#"ID="(_[0-9a-f]{32})""#)
            .unwrap()
            .captures(&xml)
            .unwrap_or_else(|| panic!("no ID in {xml}"))[1]
            .to_owned();
        (id, pairs["RelayState"].clone(), xml)
    }

    /// POSTs `xml` to the ACS as the IdP's page would (cross-site, from the IdP's origin).
    async fn post(&self, browser: &mut Browser, xml: &str, relay: Option<&str>) -> Page {
        self.post_raw(browser, &post_encode(xml), relay).await
    }

    async fn post_raw(&self, browser: &mut Browser, encoded: &str, relay: Option<&str>) -> Page {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("SAMLResponse", encoded);
        if let Some(relay) = relay {
            form.append_pair("RelayState", relay);
        }
        browser
            .resume(Pending {
                method: "POST".into(),
                url: url::Url::parse(&self.acs()).unwrap(),
                body: Some(form.finish()),
                initiator: Some(IDP_ORIGIN.into()),
                hops: Vec::new(),
            })
            .await
    }

    /// The `detail` of every `login_failed` event, oldest first.
    async fn failures(&self) -> Vec<String> {
        let out = self.stack.gatehouse.cli_ok(&["audit", "--json"]).await;
        let mut details: Vec<(i64, String)> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["kind"] == "login_failed")
            .map(|v| {
                (
                    v["id"].as_i64().unwrap_or_default(),
                    v["detail"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        details.sort();
        details.into_iter().map(|(_, d)| d).collect()
    }
}

fn assert_signed_in(page: &Page, email: &str) {
    assert!(
        page.response.reached_upstream(),
        "{:#?}\n{}",
        page.hops,
        page.body()
    );
    assert_eq!(
        page.response
            .upstream_header("x-gatehouse-email")
            .as_deref(),
        Some(email)
    );
}

fn assert_refused(page: &Page, browser: &Browser, what: &str) {
    assert!(
        matches!(page.status(), 400 | 403),
        "{what}: expected an error page, got {} {:#?}\n{}",
        page.status(),
        page.hops,
        page.body()
    );
    assert!(
        page.body().contains("Sign-in failed"),
        "{what}: {}",
        page.body()
    );
    assert_eq!(
        browser.cookie("127.0.0.1", "gatehouse"),
        None,
        "{what}: the browser holds a session"
    );
}

async fn a_valid_signed_response_signs_in(backend: Backend) {
    let forge = forge(backend).await;
    let mut browser = Browser::new();
    let (id, relay) = forge.start(&mut browser, "forge").await;
    let (r, a) = forge.valid(Some(&id), "alice");
    let page = forge
        .post(&mut browser, &forge.signed(&r, &a), Some(&relay))
        .await;
    assert_signed_in(&page, "alice@forge.test");
    assert_eq!(page.url.path(), "/reports", "lands on rd");
    let roles = page
        .response
        .upstream_header("x-gatehouse-roles")
        .unwrap_or_default();
    assert!(
        roles.split(',').any(|r| r == "dev"),
        "groups → roles: {roles:?}"
    );
    let show = forge
        .stack
        .gatehouse
        .cli_ok(&["user", "show", "alice@forge.test"])
        .await;
    assert!(
        show.contains(FORGE_ENTITY),
        "identity is (entityID, NameID): {show}"
    );
    assert!(show.contains("alice-persistent-id"), "{show}");

    // The Response signed as well (both signatures verify), and a signed Response with an
    // unsigned assertion: both shapes real IdPs send.
    for both in [true, false] {
        let mut browser = Browser::new();
        let (id, relay) = forge.start(&mut browser, "forge").await;
        let (r, a) = forge.valid(Some(&id), "bob");
        let assertion = if both {
            sign(
                &a.xml(Some(&signature_template(&a.id, RSA_SHA256, false))),
                &forge.idp,
            )
        } else {
            a.xml(None)
        };
        let xml = sign(
            &r.xml(
                Some(&signature_template(&r.id, RSA_SHA256, true)),
                &assertion,
            ),
            &forge.idp,
        );
        let page = forge.post(&mut browser, &xml, Some(&relay)).await;
        assert_signed_in(&page, "bob@forge.test");
    }
}

/// A forgery: the name, how to make it from a valid pair, and the audit reason expected.
type Build = Box<dyn Fn(&Forge, ResponseSpec, AssertionSpec) -> String>;

fn corpus() -> Vec<(&'static str, Build, &'static str)> {
    let sig = |a: &AssertionSpec| signature_template(&a.id, RSA_SHA256, false);
    let evil = |a: &AssertionSpec| {
        let mut e = a.clone();
        e.id = new_id("evil");
        e.name_id = "mallory-persistent-id".into();
        e.attributes[0].1 = vec!["ceo@forge.test".into()];
        e
    };
    vec![
        (
            "XSW1: a new Response around an evil assertion, the signed Response inside its Signature",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                let signed = sign(
                    &r.xml(
                        Some(&signature_template(&r.id, RSA_SHA256, false)),
                        &a.xml(None),
                    ),
                    &f.idp,
                );
                let mut outer = r.clone();
                outer.id = new_id("evilr");
                let signature_at = signed.find("<ds:Signature").unwrap();
                let signature_end =
                    signed.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
                let signature = &signed[signature_at..signature_end];
                let wrapped = signature.replace(
                    "</ds:Signature>",
                    &format!("<ds:Object>{signed}</ds:Object></ds:Signature>"),
                );
                outer.xml(Some(&wrapped), &evil(&a).xml(None))
            }) as Build,
            "saml_wrapping",
        ),
        (
            "XSW2: a new Response with the signed Response as a sibling before the evil assertion",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                let signed = sign(
                    &r.xml(
                        Some(&signature_template(&r.id, RSA_SHA256, false)),
                        &a.xml(None),
                    ),
                    &f.idp,
                );
                let mut outer = r.clone();
                outer.id = new_id("evilr");
                outer.xml(Some(&signed), &evil(&a).xml(None))
            }),
            "saml_wrapping",
        ),
        (
            "XSW3: an evil assertion before the signed one",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                let signed = sign(&a.xml(Some(&sig(&a))), &f.idp);
                r.xml(None, &format!("{}{signed}", evil(&a).xml(None)))
            }),
            "saml_wrapping",
        ),
        (
            "XSW4: an evil assertion wrapping the signed one",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                let signed = sign(&a.xml(Some(&sig(&a))), &f.idp);
                let outer = evil(&a)
                    .xml(None)
                    .replace("</saml:Assertion>", &format!("{signed}</saml:Assertion>"));
                r.xml(None, &outer)
            }),
            "saml_wrapping",
        ),
        (
            "XSW5: the signature copied into an evil assertion, the signed one appended",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                let signed = sign(&a.xml(Some(&sig(&a))), &f.idp);
                let start = signed.find("<ds:Signature").unwrap();
                let end = signed.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
                let mut e = evil(&a);
                e.id = a.id.clone() + "x";
                let forged = e.xml(Some(&signed[start..end]));
                let unsigned_original = format!("{}{}", &signed[..start], &signed[end..]);
                r.xml(None, &format!("{forged}{unsigned_original}"))
            }),
            "saml_wrapping",
        ),
        (
            "XSW6: an evil assertion whose copied signature holds the signed one in an Object",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                let signed = sign(&a.xml(Some(&sig(&a))), &f.idp);
                let start = signed.find("<ds:Signature").unwrap();
                let end = signed.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
                let wrapped = signed[start..end].replace(
                    "</ds:Signature>",
                    &format!("<ds:Object>{signed}</ds:Object></ds:Signature>"),
                );
                r.xml(None, &evil(&a).xml(Some(&wrapped)))
            }),
            "saml_wrapping",
        ),
        (
            "XSW7: the signed assertion hidden in Extensions, an evil one in its place",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                let signed = sign(&a.xml(Some(&sig(&a))), &f.idp);
                r.xml(
                    Some(&format!("<samlp:Extensions>{signed}</samlp:Extensions>")),
                    &evil(&a).xml(None),
                )
            }),
            "saml_wrapping",
        ),
        (
            "XSW8: an evil assertion whose signature's Object holds the original, unsigned",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                let signed = sign(&a.xml(Some(&sig(&a))), &f.idp);
                let start = signed.find("<ds:Signature").unwrap();
                let end = signed.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
                let original = format!("{}{}", &signed[..start], &signed[end..]);
                let wrapped = signed[start..end].replace(
                    "</ds:Signature>",
                    &format!("<ds:Object>{original}</ds:Object></ds:Signature>"),
                );
                r.xml(None, &evil(&a).xml(Some(&wrapped)))
            }),
            "saml_wrapping",
        ),
        (
            "a second Reference, to a local file (work before the signature is checked)",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                f.signed(&r, &a).replace(
                    "</ds:SignedInfo>",
                    "<ds:Reference URI=\"file:///dev/zero\"><ds:DigestMethod \
                     Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue>AA==\
                     </ds:DigestValue></ds:Reference></ds:SignedInfo>",
                )
            }),
            "saml_wrapping",
        ),
        (
            "an XSLT transform",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                f.signed(&r, &a).replace(
                    "</ds:Transforms>",
                    "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xslt-19991116\"/></ds:Transforms>",
                )
            }),
            "saml_wrapping",
        ),
        (
            "an unsolicited assertion in an unsigned Response naming this login's request",
            Box::new(move |f: &Forge, r: ResponseSpec, mut a: AssertionSpec| {
                a.in_response_to = None;
                f.signed(&r, &a)
            }),
            "saml_in_response_to",
        ),
        (
            "a signature template never filled (unsigned)",
            Box::new(move |_: &Forge, r: ResponseSpec, a: AssertionSpec| {
                r.xml(None, &a.xml(Some(&sig(&a))))
            }),
            "saml_signature",
        ),
        (
            "an unsigned assertion in an unsigned Response",
            Box::new(move |_: &Forge, r: ResponseSpec, a: AssertionSpec| r.xml(None, &a.xml(None))),
            "saml_signature",
        ),
        (
            "signed with another key",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                r.xml(None, &sign(&a.xml(Some(&sig(&a))), &f.other))
            }),
            "saml_signature",
        ),
        (
            "signed with another key whose certificate is embedded in KeyInfo",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                let signed = sign(
                    &a.xml(Some(&signature_template(&a.id, RSA_SHA256, true))),
                    &f.other,
                );
                assert!(signed.contains("<ds:X509Certificate>"), "{signed}");
                r.xml(None, &signed)
            }),
            "saml_signature",
        ),
        (
            "a valid signature over a sibling element (the Status), not the assertion",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                let status_id = new_id("st");
                let xml = r
                    .xml(
                        Some(&signature_template(&status_id, RSA_SHA256, false)),
                        &a.xml(None),
                    )
                    .replace(
                        "<samlp:Status>",
                        &format!("<samlp:Status ID=\"{status_id}\">"),
                    );
                sign(&xml, &f.idp)
            }),
            "saml_wrapping",
        ),
        (
            "a comment injected into the NameID after signing",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                f.signed(&r, &a).replace(
                    "-persistent-id</saml:NameID>",
                    "-persistent-id<!---->.evil</saml:NameID>",
                )
            }),
            "saml_hostile_xml",
        ),
        (
            "a wrong Audience",
            Box::new(move |f: &Forge, r: ResponseSpec, mut a: AssertionSpec| {
                a.audience = "https://other-sp.test/metadata".into();
                f.signed(&r, &a)
            }),
            "saml_audience",
        ),
        (
            "a wrong Destination",
            Box::new(move |f: &Forge, mut r: ResponseSpec, a: AssertionSpec| {
                r.destination = "https://other-sp.test/acs".into();
                f.signed(&r, &a)
            }),
            "saml_destination",
        ),
        (
            "a wrong Recipient",
            Box::new(move |f: &Forge, r: ResponseSpec, mut a: AssertionSpec| {
                a.recipient = "https://other-sp.test/acs".into();
                f.signed(&r, &a)
            }),
            "saml_destination",
        ),
        (
            "expired",
            Box::new(move |f: &Forge, r: ResponseSpec, mut a: AssertionSpec| {
                a.not_before = now() - 900;
                a.not_on_or_after = now() - 120;
                f.signed(&r, &a)
            }),
            "saml_time",
        ),
        (
            "not yet valid",
            Box::new(move |f: &Forge, r: ResponseSpec, mut a: AssertionSpec| {
                a.not_before = now() + 300;
                a.not_on_or_after = now() + 900;
                f.signed(&r, &a)
            }),
            "saml_time",
        ),
        (
            "a DOCTYPE with an entity",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                format!("<!DOCTYPE r [<!ENTITY e \"x\">]>{}", f.signed(&r, &a))
            }),
            "saml_hostile_xml",
        ),
        (
            "an external entity (XXE)",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                format!(
                    "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
                    f.signed(&r, &a)
                )
                .replace(
                    "persistent-id</saml:NameID>",
                    "persistent-id&x;</saml:NameID>",
                )
            }),
            "saml_hostile_xml",
        ),
        (
            "a billion-laughs payload",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                let mut dtd = String::from("<!DOCTYPE r [<!ENTITY l0 \"lol\">");
                for i in 1..10 {
                    let refs = format!("&l{};", i - 1).repeat(10);
                    dtd.push_str(&format!("<!ENTITY l{i} \"{refs}\">"));
                }
                dtd.push_str("]>");
                format!("{dtd}{}", f.signed(&r, &a)).replace(
                    "persistent-id</saml:NameID>",
                    "persistent-id&l9;</saml:NameID>",
                )
            }),
            "saml_hostile_xml",
        ),
        (
            "SHA-1 while allow_sha1 is off",
            Box::new(move |f: &Forge, r: ResponseSpec, a: AssertionSpec| {
                r.xml(
                    None,
                    &sign(
                        &a.xml(Some(&signature_template(&a.id, RSA_SHA1, false))),
                        &f.idp,
                    ),
                )
            }),
            "saml_weak_algorithm",
        ),
    ]
}

async fn forged_responses_are_refused_and_audited(backend: Backend) {
    let forge = forge(backend).await;
    let mut expected = Vec::new();
    for (name, build, reason) in corpus() {
        let mut browser = Browser::new();
        let (id, relay) = forge.start(&mut browser, "forge").await;
        let (r, a) = forge.valid(Some(&id), "alice");
        let xml = build(&forge, r, a);
        let page = forge.post(&mut browser, &xml, Some(&relay)).await;
        assert_refused(&page, &browser, name);
        expected.push((name, reason));
    }
    // Sizes and encodings that stop before any parsing.
    let mut browser = Browser::new();
    let (_, relay) = forge.start(&mut browser, "forge").await;
    let huge = "A".repeat(10 * 1024 * 1024);
    let page = forge.post_raw(&mut browser, &huge, Some(&relay)).await;
    assert_refused(&page, &browser, "a 10 MB response");
    expected.push(("a 10 MB response", "saml_hostile_xml"));
    // IdP-initiated at an IdP that does not allow it.
    let mut browser = Browser::new();
    let (mut r, mut a) = forge.valid(None, "alice");
    r.issuer = FORGE_ENTITY.into();
    a.issuer = FORGE_ENTITY.into();
    a.audience = forge.sp_entity("forge");
    let page = forge.post(&mut browser, &forge.signed(&r, &a), None).await;
    assert_refused(&page, &browser, "IdP-initiated while it is off");
    expected.push(("IdP-initiated while it is off", "saml_unsolicited"));

    let failures = forge.failures().await;
    assert_eq!(
        failures.len(),
        expected.len(),
        "one audit event per refusal: {failures:#?}"
    );
    for ((name, reason), detail) in expected.iter().zip(&failures) {
        assert!(
            detail.starts_with(&format!("{reason}:")),
            "{name}: audited as {detail:?}, expected {reason}"
        );
    }
    // None of them made a user.
    let users = forge.stack.gatehouse.cli_ok(&["user", "list"]).await;
    assert!(!users.contains("forge.test"), "{users}");
}

async fn replayed_assertions_are_refused_on_every_replica(backend: Backend) {
    let forge = forge(backend).await;
    // An unsolicited response (allowed for this IdP) can be posted again: only the replay
    // cache stops it.
    let (r, a) = forge.valid(None, "carol");
    let xml = forge.signed(&r, &a);
    let mut browser = Browser::new();
    let page = forge.post(&mut browser, &xml, None).await;
    assert_signed_in(&page, "carol@unsolicited.test");

    let mut attacker = Browser::new();
    let page = forge.post(&mut attacker, &xml, None).await;
    assert_refused(&page, &attacker, "replay on the same replica");

    // Another replica on the same database, with the same config.
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(&forge.stack.gatehouse.config).unwrap();
    let second = support::processes::Gatehouse::start(dir.path(), &config, &[]).await;
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("SAMLResponse", &post_encode(&xml));
    let body = form.finish();
    let response = support::client::send_bytes(
        second.http,
        "POST",
        "/auth/saml/acs",
        &[("host", b"127.0.0.1"), ("origin", IDP_ORIGIN.as_bytes())],
        Some(("application/x-www-form-urlencoded", body.into_bytes())),
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.body);
    assert!(
        response.body.contains("Sign-in failed"),
        "{}",
        response.body
    );

    let failures = forge.failures().await;
    assert_eq!(failures.len(), 2, "{failures:#?}");
    assert!(
        failures.iter().all(|d| d.starts_with("saml_replay:")),
        "{failures:#?}"
    );
}

async fn responses_for_another_browser_are_refused(backend: Backend) {
    let forge = forge(backend).await;
    let mut victim = Browser::new();
    let (victim_id, victim_relay) = forge.start(&mut victim, "forge").await;
    let mut attacker = Browser::new();
    let (_, attacker_relay) = forge.start(&mut attacker, "forge").await;
    // The victim's response, posted in the attacker's browser with the attacker's own login.
    let (r, a) = forge.valid(Some(&victim_id), "alice");
    let xml = forge.signed(&r, &a);
    let page = forge.post(&mut attacker, &xml, Some(&attacker_relay)).await;
    assert_refused(
        &page,
        &attacker,
        "InResponseTo of another browser's request",
    );
    // … with the victim's RelayState: that login is bound to the victim's browser.
    let page = forge.post(&mut attacker, &xml, Some(&victim_relay)).await;
    assert_refused(&page, &attacker, "another browser's RelayState");
    // … without any: an unsolicited response answering a request is refused.
    let page = forge.post(&mut attacker, &xml, None).await;
    assert_refused(&page, &attacker, "InResponseTo without a login");
    let failures = forge.failures().await;
    let reasons: Vec<&str> = failures
        .iter()
        .map(|d| d.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        reasons,
        ["saml_in_response_to", "state_invalid", "saml_unsolicited"],
        "{failures:#?}"
    );
    // The victim's login is still pending and completes.
    let page = forge.post(&mut victim, &xml, Some(&victim_relay)).await;
    assert_signed_in(&page, "alice@forge.test");
}

async fn sp_metadata_names_the_acs_and_entity_id(backend: Backend) {
    let forge = forge(backend).await;
    let response = forge.stack.get("/auth/saml/forge/metadata", &[]).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/samlmetadata+xml")
    );
    for part in [
        format!("entityID=\"{}\"", forge.sp_entity("forge")),
        format!("Location=\"{}\"", forge.acs()),
        format!("Location=\"{}/auth/saml/slo\"", forge.stack.base),
    ] {
        assert!(response.body.contains(&part), "{part} in {}", response.body);
    }
    assert!(
        !response.body.contains("X509Certificate"),
        "no SP key, no certificate"
    );
    let missing = forge.stack.get("/auth/saml/nobody/metadata", &[]).await;
    assert_eq!(missing.status, 404);
}

async fn step_up_asks_the_idp_to_authenticate_again_with_mfa(backend: Backend) {
    let forge = forge(backend).await;
    let mut browser = Browser::new();
    let (id, relay) = forge.start(&mut browser, "forge").await;
    let (r, a) = forge.valid(Some(&id), "alice");
    let page = forge
        .post(&mut browser, &forge.signed(&r, &a), Some(&relay))
        .await;
    assert_signed_in(&page, "alice@forge.test");

    // An MFA route: back to the same IdP, asked to authenticate again, with MFA.
    let (id, relay, request) = forge.start_at(&mut browser, "/vault/keys").await;
    assert!(request.contains("ForceAuthn=\"true\""), "{request}");
    assert!(
        request.contains(&format!(
            "<saml:AuthnContextClassRef>{MFA}</saml:AuthnContextClassRef>"
        )),
        "{request}"
    );
    // An answer without MFA is refused; the session is left as it was.
    let (r, a) = forge.valid(Some(&id), "alice");
    let page = forge
        .post(&mut browser, &forge.signed(&r, &a), Some(&relay))
        .await;
    assert_eq!(page.status(), 403, "{:#?}", page.hops);
    assert!(page.body().contains("did not confirm"), "{}", page.body());
    let failures = forge.failures().await;
    assert!(
        failures
            .last()
            .is_some_and(|d| d.starts_with("insufficient_authentication:")),
        "{failures:#?}"
    );
    // With it, the route opens.
    let (id, relay, _) = forge.start_at(&mut browser, "/vault/keys").await;
    let (r, mut a) = forge.valid(Some(&id), "alice");
    a.authn_context = MFA.into();
    let page = forge
        .post(&mut browser, &forge.signed(&r, &a), Some(&relay))
        .await;
    assert_signed_in(&page, "alice@forge.test");
    assert_eq!(page.url.path(), "/vault/keys");
}

async fn metadata_with_only_transient_name_ids_is_refused_at_start(backend: Backend) {
    let forge = forge(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let transient = idp_metadata(FORGE_ENTITY, &forge.idp, IDP_SSO, None).replace(
        PERSISTENT,
        "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
    );
    let metadata = dir.path().join("transient.xml");
    std::fs::write(&metadata, transient).unwrap();
    let config = std::fs::read_to_string(&forge.stack.gatehouse.config)
        .unwrap()
        .replace(
            &dir_of(&forge.stack.gatehouse.config, "forge.xml"),
            &metadata.display().to_string(),
        );
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, config).unwrap();
    let out = support::processes::run_cli(
        &["--config", path.to_str().unwrap(), "serve"],
        &[],
        dir.path(),
    )
    .await;
    assert!(!out.success, "{out:?}");
    assert!(
        out.stderr.contains("only transient NameIDs") && out.stderr.contains("persistent"),
        "{}",
        out.stderr
    );
}

/// The metadata file named `name` in the config at `config` (the forge's own tempdir).
fn dir_of(config: &std::path::Path, name: &str) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("metadata_file = \""))
        .map(|l| l.trim_end_matches('"').to_owned())
        .find(|p| p.ends_with(name))
        .expect("metadata_file")
}

async fn idp_logout_requests_must_be_signed_recent_and_for_this_sp(backend: Backend) {
    let forge = forge(backend).await;
    let mut browser = Browser::new();
    let (id, relay) = forge.start(&mut browser, "forge").await;
    let (r, a) = forge.valid(Some(&id), "alice");
    let page = forge
        .post(&mut browser, &forge.signed(&r, &a), Some(&relay))
        .await;
    assert_signed_in(&page, "alice@forge.test");
    let slo = format!("{}/auth/saml/slo", forge.stack.base);
    let request = |issued: i64, destination: &str| {
        logout_request(FORGE_ENTITY, destination, &a.name_id, issued)
    };
    let refused = [
        (
            "unsigned",
            redirect_query("SAMLRequest", &request(now(), &slo), None),
        ),
        (
            "signed with another key",
            redirect_query("SAMLRequest", &request(now(), &slo), Some(&forge.other)),
        ),
        (
            "issued ten minutes ago",
            redirect_query("SAMLRequest", &request(now() - 600, &slo), Some(&forge.idp)),
        ),
        (
            "for another SP",
            redirect_query(
                "SAMLRequest",
                &request(now(), "https://other-sp.test/slo"),
                Some(&forge.idp),
            ),
        ),
    ];
    for (what, query) in refused {
        let r = forge
            .stack
            .get(&format!("/auth/saml/slo?{query}"), &[])
            .await;
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        let page = browser
            .navigate(&format!("{}/reports", forge.stack.base))
            .await;
        assert!(
            page.response.reached_upstream(),
            "{what}: the session must live"
        );
    }
    let valid = redirect_query("SAMLRequest", &request(now(), &slo), Some(&forge.idp));
    let r = forge
        .stack
        .get(&format!("/auth/saml/slo?{valid}"), &[])
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert!(
        r.location()
            .unwrap_or_default()
            .starts_with(&format!("{IDP_SLO}?SAMLResponse=")),
        "{:?}",
        r.location()
    );
    let page = browser
        .navigate_until(&format!("{}/reports", forge.stack.base), &|_, url| {
            url.port() == Some(9)
        })
        .await;
    assert!(
        !matches!(&page, Ok(p) if p.response.reached_upstream()),
        "the session ended"
    );
    let again = forge
        .stack
        .get(&format!("/auth/saml/slo?{valid}"), &[])
        .await;
    assert_eq!(again.status, 400, "a replayed LogoutRequest");
}

/// `serve` with the forge's config changed by `edit`: its stderr, after it refused to start.
async fn refused_start(forge: &Forge, edit: impl Fn(String) -> String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = edit(std::fs::read_to_string(&forge.stack.gatehouse.config).unwrap());
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, config).unwrap();
    let out = support::processes::run_cli(
        &["--config", path.to_str().unwrap(), "serve"],
        &[],
        dir.path(),
    )
    .await;
    assert!(!out.success, "{out:?}");
    out.stderr
}

async fn an_entity_id_cannot_be_another_idps(backend: Backend) {
    let forge = forge(backend).await;
    // Identities are (issuer, subject): metadata naming an OIDC IdP's issuer could sign in as
    // that IdP's users.
    let stderr = refused_start(&forge, |c| {
        format!("{c}\n[[idp]]\nname = \"okta\"\nissuer = \"{FORGE_ENTITY}\"\nclient_id = \"c\"\n")
    })
    .await;
    assert!(
        stderr.contains("another configured identity provider's issuer"),
        "{stderr}"
    );
    // A pinned entityID must be the metadata's.
    let stderr = refused_start(&forge, |c| {
        c.replacen(
            "name = \"forge\"\n",
            "name = \"forge\"\nentity_id = \"https://someone-else.test/idp\"\n",
            1,
        )
    })
    .await;
    assert!(stderr.contains("not the entity_id configured"), "{stderr}");
    // Two SAML IdPs whose metadata name one entityID: neither signs anyone in.
    let twin = forge
        .stack
        .gatehouse
        .config
        .parent()
        .unwrap()
        .join("twin.xml");
    std::fs::write(&twin, idp_metadata(FORGE_ENTITY, &forge.idp, IDP_SSO, None)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(&forge.stack.gatehouse.config).unwrap()
        + &format!(
            "\n[[idp]]\nname = \"twin\"\nkind = \"saml\"\nmetadata_file = \"{}\"\n",
            twin.display()
        );
    let twin_replica = support::processes::Gatehouse::start(dir.path(), &config, &[]).await;
    let mut browser = Browser::new();
    let (id, relay) = forge.start(&mut browser, "forge").await;
    let (r, a) = forge.valid(Some(&id), "alice");
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("SAMLResponse", &post_encode(&forge.signed(&r, &a)));
    form.append_pair("RelayState", &relay);
    let binding = browser
        .cookie("127.0.0.1", "gatehouse-login")
        .expect("binding cookie");
    let cookie = format!("gatehouse-login={binding}");
    let response = support::client::send_bytes(
        twin_replica.http,
        "POST",
        "/auth/saml/acs",
        &[("host", b"127.0.0.1"), ("cookie", cookie.as_bytes())],
        Some((
            "application/x-www-form-urlencoded",
            form.finish().into_bytes(),
        )),
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.body);
    let failures = forge.failures().await;
    assert!(
        failures
            .last()
            .is_some_and(|d| d.starts_with("saml_unknown_issuer:") && d.contains("more than one")),
        "{failures:#?}"
    );
}

async fn trusted_emails_link_and_orgs_choose_a_saml_idp(backend: Backend) {
    let forge = forge(backend).await;
    // An account made before SSO: the IdP vouches for forge.test, so its sign-in links to it.
    forge
        .stack
        .gatehouse
        .enabled_session("dana@forge.test", &["admin"])
        .await;
    let before = forge
        .stack
        .gatehouse
        .cli_ok(&["user", "show", "dana@forge.test"])
        .await;
    let mut browser = Browser::new();
    let (id, relay) = forge.start(&mut browser, "forge").await;
    let (r, a) = forge.valid(Some(&id), "dana");
    let page = forge
        .post(&mut browser, &forge.signed(&r, &a), Some(&relay))
        .await;
    assert_signed_in(&page, "dana@forge.test");
    let roles = page
        .response
        .upstream_header("x-gatehouse-roles")
        .unwrap_or_default();
    assert!(
        roles.split(',').any(|r| r == "admin"),
        "the existing account: {roles}"
    );
    let after = forge
        .stack
        .gatehouse
        .cli_ok(&["user", "show", "dana@forge.test"])
        .await;
    let id_line = |t: &str| t.lines().next().unwrap_or_default().to_owned();
    assert_eq!(id_line(&before), id_line(&after), "{after}");
    assert!(after.contains(FORGE_ENTITY), "{after}");

    // The other IdP vouches only for unsolicited.test: its word on a forge.test address
    // neither links nor signs in as dana.
    let (r, mut a) = forge.valid(None, "mallory");
    a.attributes[0].1 = vec!["dana@forge.test".into()];
    let mut attacker = Browser::new();
    let page = forge.post(&mut attacker, &forge.signed(&r, &a), None).await;
    assert_eq!(page.status(), 403, "{:#?}", page.hops);
    assert!(
        page.body()
            .contains("is not trusted for email domain forge.test"),
        "{}",
        page.body()
    );
    let show = forge
        .stack
        .gatehouse
        .cli_ok(&["user", "show", "dana@forge.test"])
        .await;
    assert!(!show.contains(UNSOLICITED_ENTITY), "not linked: {show}");

    // An org can choose the SAML IdP for its domain.
    forge
        .stack
        .gatehouse
        .cli_ok(&["org", "add", "Initech", "--domain", "initech.test"])
        .await;
    forge
        .stack
        .gatehouse
        .cli_ok(&["org", "set", "Initech", "--idp", "forge"])
        .await;
    let mut browser = Browser::new();
    let (_, _, request) = forge
        .start_at(&mut browser, "/auth/login?login_hint=pat%40initech.test")
        .await;
    assert!(request.contains("<samlp:AuthnRequest"), "{request}");
}
