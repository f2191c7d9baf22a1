//! The strict screen every SAML message passes before an XML library (libxml2 under
//! xmlsec) sees it: a small, fixed shape, or nothing. Pure, table-tested.
//!
//! Refused before any other work: more than [`Limits::max_bytes`]; anything but UTF-8; a
//! DOCTYPE (so no entity declarations: XXE, billion laughs); references to entities other
//! than the five predefined ones and character references; processing instructions (other
//! than the XML declaration); comments anywhere (a comment inside a NameID makes a verifier
//! and a reader see different text: CVE-2017-11427); CDATA sections; nesting deeper than
//! [`Limits::max_depth`]; more than [`Limits::max_elements`] elements or
//! [`Limits::max_attributes`] attributes on one element; and anything that is not
//! well-formed. Responses from real IdPs have none of these.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// Bounds on a message's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_elements: usize,
    pub max_attributes: usize,
}

impl Default for Limits {
    /// Generous for real responses (a few KiB, depth ~10, a few hundred elements with many
    /// attributes), small against floods.
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024,
            max_depth: 32,
            max_elements: 4096,
            max_attributes: 32,
        }
    }
}

/// Why a message was refused (for the audit trail; the page says less).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hostile {
    #[error("the message is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the message is not UTF-8")]
    NotUtf8,
    #[error("the message has a DOCTYPE (DTDs and entity declarations are refused)")]
    Doctype,
    #[error("the message refers to an entity other than the predefined ones: {0:?}")]
    Entity(String),
    #[error("the message has a processing instruction")]
    ProcessingInstruction,
    #[error("the message has a comment (refused anywhere: CVE-2017-11427)")]
    Comment,
    #[error("the message has a CDATA section")]
    Cdata,
    #[error("the message nests deeper than {0} elements")]
    TooDeep(usize),
    #[error("the message has more than {0} elements")]
    TooManyElements(usize),
    #[error("an element has more than {0} attributes")]
    TooManyAttributes(usize),
    #[error("the message is not well-formed XML: {0}")]
    Malformed(String),
    #[error("the message has no root element")]
    Empty,
}

const PREDEFINED: [&[u8]; 5] = [b"lt", b"gt", b"amp", b"apos", b"quot"];

/// Checks `xml` against `limits`; `Ok` means it may be parsed and verified.
pub fn screen(xml: &[u8], limits: Limits) -> Result<(), Hostile> {
    if xml.len() > limits.max_bytes {
        return Err(Hostile::TooLarge(limits.max_bytes));
    }
    let text = std::str::from_utf8(xml).map_err(|_| Hostile::NotUtf8)?;
    // XML 1.0 allows no control characters but tab, line feed and carriage return.
    if let Some(c) = text
        .bytes()
        .find(|b| b.is_ascii_control() && !matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return Err(Hostile::Malformed(format!("control character 0x{c:02x}")));
    }
    // A byte-order mark may precede the declaration (some IdPs' metadata has one).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    let (mut depth, mut elements, mut roots) = (0usize, 0usize, 0usize);
    let mut events = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| Hostile::Malformed(e.to_string()))?;
        events += 1;
        match event {
            Event::Start(start) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
                if depth > limits.max_depth {
                    return Err(Hostile::TooDeep(limits.max_depth));
                }
                element(&start, &mut elements, limits)?;
            }
            Event::Empty(start) => {
                if depth == 0 {
                    roots += 1;
                }
                element(&start, &mut elements, limits)?;
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(text) => {
                if depth == 0 && !text.iter().all(u8::is_ascii_whitespace) {
                    return Err(Hostile::Malformed("text outside the root element".into()));
                }
            }
            Event::GeneralRef(reference) => {
                let allowed = reference.is_char_ref() || PREDEFINED.contains(&&*reference);
                if !allowed {
                    return Err(Hostile::Entity(
                        String::from_utf8_lossy(&reference).into_owned(),
                    ));
                }
            }
            // Only as the very first thing, and only version, encoding and standalone: the
            // reader returns anything from `<?xml` to the next `?>` as the declaration.
            Event::Decl(decl) => {
                if events > 1 || !is_declaration(&decl) {
                    return Err(Hostile::Malformed("not a plain XML declaration".into()));
                }
            }
            Event::DocType(_) => return Err(Hostile::Doctype),
            Event::PI(_) => return Err(Hostile::ProcessingInstruction),
            Event::Comment(_) => return Err(Hostile::Comment),
            Event::CData(_) => return Err(Hostile::Cdata),
            Event::Eof => break,
        }
        if roots > 1 {
            return Err(Hostile::Malformed("more than one root element".into()));
        }
    }
    if roots == 0 {
        return Err(Hostile::Empty);
    }
    if depth != 0 {
        return Err(Hostile::Malformed("unclosed elements".into()));
    }
    Ok(())
}

fn element(start: &BytesStart<'_>, elements: &mut usize, limits: Limits) -> Result<(), Hostile> {
    *elements += 1;
    if *elements > limits.max_elements {
        return Err(Hostile::TooManyElements(limits.max_elements));
    }
    // The reader takes everything up to `>` as the tag; a name must be an XML name, or
    // `<a<!DOCTYPE …` would pass as one element.
    if !is_name(start.name().as_ref()) {
        return Err(Hostile::Malformed(
            "an element name that is not an XML name".into(),
        ));
    }
    let mut count = 0;
    for attribute in start.attributes() {
        // Duplicate or malformed attributes are errors of the iterator (checks are on).
        let attribute = attribute.map_err(|e| Hostile::Malformed(e.to_string()))?;
        count += 1;
        if count > limits.max_attributes {
            return Err(Hostile::TooManyAttributes(limits.max_attributes));
        }
        if !is_name(attribute.key.as_ref()) {
            return Err(Hostile::Malformed(
                "an attribute name that is not an XML name".into(),
            ));
        }
        // XML forbids `<` in attribute values; the reader does not check.
        if attribute.value.contains(&b'<') {
            return Err(Hostile::Malformed("a < in an attribute value".into()));
        }
        entities_in_value(&attribute.value)?;
    }
    Ok(())
}

/// `<?xml version="1.x" encoding="…" standalone="…"?>` and nothing else.
fn is_declaration(decl: &[u8]) -> bool {
    static DECLARATION: std::sync::OnceLock<Option<regex::bytes::Regex>> =
        std::sync::OnceLock::new();
    DECLARATION
        .get_or_init(|| {
            regex::bytes::Regex::new(
                r#"^xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*("1\.[0-9]"|'1\.[0-9]')([ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*("[A-Za-z][A-Za-z0-9._-]*"|'[A-Za-z][A-Za-z0-9._-]*'))?([ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*("(yes|no)"|'(yes|no)'))?[ \t\r\n]*$"#,
            )
            .ok()
        })
        .as_ref()
        .is_some_and(|re| re.is_match(decl))
}

/// An XML name (prefix included): a letter, `_`, `:` or a non-ASCII character, then those,
/// digits, `-` and `.` (non-ASCII taken as name characters: the parsers after the screen check
/// them exactly).
fn is_name(name: &[u8]) -> bool {
    let start = |b: u8| b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80;
    match name.split_first() {
        Some((&first, rest)) => {
            start(first)
                && rest
                    .iter()
                    .all(|&b| start(b) || b.is_ascii_digit() || b == b'-' || b == b'.')
        }
        None => false,
    }
}

/// Attribute values come raw: every `&name;` in one must be predefined or a character
/// reference.
fn entities_in_value(value: &[u8]) -> Result<(), Hostile> {
    let mut rest = value;
    while let Some(at) = rest.iter().position(|b| *b == b'&') {
        let after = &rest[at + 1..];
        let end = after.iter().position(|b| *b == b';').ok_or_else(|| {
            Hostile::Malformed("an unterminated reference in an attribute".into())
        })?;
        let name = &after[..end];
        if !(name.starts_with(b"#") || PREDEFINED.contains(&name)) {
            return Err(Hostile::Entity(String::from_utf8_lossy(name).into_owned()));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_r1" Version="2.0" Destination="https://sp.test/auth/saml/acs">
  <saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">https://idp.test</saml:Issuer>
  <saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a1">
    <saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">u&amp;1&#x41;</saml:NameID></saml:Subject>
    <saml:AttributeStatement><saml:Attribute Name="groups"><saml:AttributeValue>a &lt; b</saml:AttributeValue></saml:Attribute></saml:AttributeStatement>
  </saml:Assertion>
</samlp:Response>"#;

    fn check(xml: &str) -> Result<(), Hostile> {
        screen(xml.as_bytes(), Limits::default())
    }

    #[test]
    fn a_plain_response_passes() {
        assert_eq!(check(RESPONSE), Ok(()));
        assert_eq!(check("<a x=\"&quot;&#10;\"/>"), Ok(()));
    }

    /// What a refusal must be.
    type Expect = fn(&Hostile) -> bool;

    #[test]
    fn hostile_shapes_are_refused() {
        let billion_laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        let xxe = r#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        let comment_in_name_id = RESPONSE.replace("u&amp;1", "user@idp.test<!---->.evil.test");
        let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
        let many = format!("<r>{}</r>", "<e/>".repeat(5000));
        let attrs = format!(
            "<r {}/>",
            (0..40)
                .map(|i| format!("a{i}=\"1\""))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let cases: Vec<(String, Expect)> = vec![
            (billion_laughs.into(), |h| matches!(h, Hostile::Doctype)),
            // Found by the saml_xml fuzz target: the reader took this whole text as one tag,
            // so a DOCTYPE inside it passed the screen (the strict parsers after refused it).
            (
                "<m:a}c:S\u{7}\u{0}dS<!DOCTYPE q%q<\u{0}\u{0}q\"e\"\u{1}OsSeDScriptor/>".into(),
                |h| matches!(h, Hostile::Malformed(_)),
            ),
            ("<a<!DOCTYPE x/>".into(), |h| {
                matches!(h, Hostile::Malformed(_))
            }),
            ("<a>\u{1}</a>".into(), |h| {
                matches!(h, Hostile::Malformed(_))
            }),
            // Also from the fuzzer: markup inside what the reader took for the declaration.
            ("\t<?xml <?x a=\"1\">Y<!DOCTYPE <!-- ?><r/>".into(), |h| {
                matches!(h, Hostile::Malformed(_))
            }),
            ("<?xml version=\"1.0\" <!-- ?><r/>".into(), |h| {
                matches!(h, Hostile::Malformed(_))
            }),
            // Also from the fuzzer: a comment's opening as an attribute's name, and inside a
            // value.
            ("<md:E xmlns:md=\"u\" <!--entityID=\"e\"/>".into(), |h| {
                matches!(h, Hostile::Malformed(_))
            }),
            (
                "<md:E xmlns=\":m h<!--:x\" ID=\"e\">)md></md:E>".into(),
                |h| matches!(h, Hostile::Malformed(_)),
            ),
            (xxe.into(), |h| matches!(h, Hostile::Doctype)),
            (
                "<r>&x;</r>".into(),
                |h| matches!(h, Hostile::Entity(n) if n == "x"),
            ),
            (
                "<r a=\"&x;\"/>".into(),
                |h| matches!(h, Hostile::Entity(n) if n == "x"),
            ),
            (comment_in_name_id, |h| matches!(h, Hostile::Comment)),
            ("<r><?php evil ?></r>".into(), |h| {
                matches!(h, Hostile::ProcessingInstruction)
            }),
            ("<r><![CDATA[x]]></r>".into(), |h| {
                matches!(h, Hostile::Cdata)
            }),
            (deep, |h| matches!(h, Hostile::TooDeep(32))),
            (many, |h| matches!(h, Hostile::TooManyElements(4096))),
            (attrs, |h| matches!(h, Hostile::TooManyAttributes(32))),
            ("<r a=\"1\" a=\"2\"/>".into(), |h| {
                matches!(h, Hostile::Malformed(_))
            }),
            ("<a><b></a></b>".into(), |h| {
                matches!(h, Hostile::Malformed(_))
            }),
            ("<a></a><b/>".into(), |h| matches!(h, Hostile::Malformed(_))),
            ("<a>".into(), |h| matches!(h, Hostile::Malformed(_))),
            ("just text".into(), |h| {
                matches!(h, Hostile::Malformed(_) | Hostile::Empty)
            }),
            ("".into(), |h| matches!(h, Hostile::Empty)),
        ];
        for (xml, expected) in &cases {
            let got = check(xml);
            assert!(got.as_ref().is_err_and(expected), "{xml:.80?} gave {got:?}");
        }
        let ten_megabytes = format!("<r>{}</r>", "x".repeat(10 * 1024 * 1024));
        assert_eq!(check(&ten_megabytes), Err(Hostile::TooLarge(256 * 1024)));
        assert_eq!(
            screen(
                &[b'<', b'r', b'>', 0xff, b'<', b'/', b'r', b'>'],
                Limits::default()
            ),
            Err(Hostile::NotUtf8)
        );
    }
}
