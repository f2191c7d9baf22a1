//! SAML input before any signature check: the bindings' decoding, the XML screen, and the
//! readers that run on screened XML (the Response's shape, IdP metadata, logout messages).
//! Properties: decoding never exceeds its bound; nothing the screen accepts has a DOCTYPE,
//! comment, processing instruction or CDATA section; no reader panics.
#![no_main]

use gatehouse::saml::binding::{post_decode, redirect_decode};
use gatehouse::saml::screen::{Limits, screen};
use gatehouse::saml::{facts, logout, metadata};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(xml) = redirect_decode(text, 64 * 1024) {
            assert!(xml.len() <= 64 * 1024);
        }
        if let Ok(xml) = post_decode(text, 64 * 1024) {
            assert!(xml.len() <= 64 * 1024);
        }
        let _ = logout::receive(text, "SAMLRequest");
    }
    if screen(data, limits).is_err() {
        return;
    }
    let text = std::str::from_utf8(data).expect("the screen accepts UTF-8 only");
    for forbidden in ["<!DOCTYPE", "<!--", "<![CDATA["] {
        assert!(!text.contains(forbidden), "screened input holds {forbidden}");
    }
    let _ = metadata::parse(data);
    let _ = logout::parse_request(text);
    let _ = logout::parse_response(text);
    if let Ok(doc) = roxmltree::Document::parse(text) {
        if let Ok(shape) = facts::shape(&doc) {
            assert!(!shape.response_id.is_empty() || doc.root_element().attribute("ID") == Some(""));
        }
        let _ = facts::check_algorithms(&doc, false);
        let root = doc.root_element();
        let _ = facts::response_facts(root);
        let _ = facts::assertion_facts(root);
    }
});
