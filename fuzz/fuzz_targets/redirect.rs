//! `rd` validation. Property: an accepted target is a local path (one leading `/`, no
//! backslash) or an absolute URL on the public origin or an allowed host, with the public
//! URL's scheme and no credentials.
#![no_main]

use gatehouse::broker::redirect::RedirectPolicy;
use libfuzzer_sys::fuzz_target;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let policy = RedirectPolicy::new(
        Url::parse("https://app.example.com").unwrap(),
        &["partner.example.net".to_owned(), "reports.example.com:8443".to_owned()],
    );
    let target = policy.target(Some(raw));
    let t = target.as_str();
    if t == "/" {
        return;
    }
    if t.starts_with('/') {
        assert!(!t.starts_with("//") && !t.contains('\\'), "{raw:?} -> {t:?}");
        let resolved = Url::parse("https://app.example.com").unwrap().join(t).unwrap();
        assert_eq!(resolved.host_str(), Some("app.example.com"), "{raw:?} -> {t:?}");
        return;
    }
    let url = Url::parse(t).unwrap_or_else(|e| panic!("{raw:?} -> {t:?}: {e}"));
    assert_eq!(url.scheme(), "https", "{t:?}");
    assert!(url.username().is_empty() && url.password().is_none(), "{t:?}");
    let origin = (url.host_str().unwrap_or_default().to_owned(), url.port_or_known_default());
    let allowed = [
        ("app.example.com".to_owned(), Some(443)),
        ("partner.example.net".to_owned(), Some(443)),
        ("reports.example.com".to_owned(), Some(8443)),
    ];
    assert!(allowed.contains(&origin), "{raw:?} -> {t:?}");
});
