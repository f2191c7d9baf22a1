//! Driving the OpenID Provider fixture's pages (tests/op) from the browser model.

use super::browser::{Browser, Form, Page, forms};

/// Whether `page` is the OP's account-choice page.
pub fn is_interaction(page: &Page) -> bool {
    page.body().contains("<p id=\"prompt\">")
}

/// The OP's form for one predefined account.
pub fn account(page: &Page, sub: &str) -> Form {
    forms(page)
        .into_iter()
        .find(|f| f.fields.iter().any(|(k, v)| k == "sub" && v == sub))
        .unwrap_or_else(|| panic!("no account {sub} on {}: {:#?}", page.url, page.hops))
}

/// The OP's free-form account (any sub and claims).
pub fn custom(page: &Page) -> Form {
    forms(page)
        .into_iter()
        .find(|f| f.id.as_deref() == Some("custom"))
        .expect("custom account form")
}

/// Opens `url`, expects the OP's account page, and signs in as `sub`.
pub async fn sign_in_at(browser: &mut Browser, url: &str, sub: &str) -> Page {
    let page = browser.navigate(url).await;
    assert!(
        is_interaction(&page),
        "expected the OP's login page: {:#?}",
        page.hops
    );
    let form = account(&page, sub);
    browser.submit(&page, &form, &[]).await
}

/// An `[[idp]]` section for the fixture's query-mode client.
pub fn idp_toml(name: &str, issuer: &str) -> String {
    format!(
        "\n[[idp]]\nname = \"{name}\"\nissuer = \"{issuer}\"\nclient_id = \"gh-query\"\n\
         client_secret = \"gh-query-secret\"\nresponse_mode = \"query\"\n"
    )
}
