use super::*;

/// An enveloped signature over the element with `id`, as IdPs write them.
fn sig(id: &str) -> String {
    format!(
        "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>\
         <ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
         <ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\
         <ds:Reference URI=\"#{id}\"><ds:Transforms>\
         <ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
         <ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\">\
         <ec:InclusiveNamespaces xmlns:ec=\"http://www.w3.org/2001/10/xml-exc-c14n#\" PrefixList=\"xs\"/>\
         </ds:Transform></ds:Transforms>\
         <ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/>\
         <ds:DigestValue>AA==</ds:DigestValue></ds:Reference></ds:SignedInfo>\
         <ds:SignatureValue>AA==</ds:SignatureValue></ds:Signature>"
    )
}

fn response(body: &str) -> String {
    format!(
        "<samlp:Response xmlns:samlp=\"{PROTOCOL_NS}\" xmlns:saml=\"{ASSERTION_NS}\" ID=\"r1\" \
         Destination=\"https://sp.test/acs\" InResponseTo=\"_req\"><saml:Issuer>idp</saml:Issuer>\
         <samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/>\
         </samlp:Status>{body}</samlp:Response>"
    )
}

fn assertion(id: &str, inner: &str) -> String {
    format!("<saml:Assertion ID=\"{id}\"><saml:Issuer>idp</saml:Issuer>{inner}</saml:Assertion>")
}

fn doc(xml: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(xml).unwrap()
}

fn shape_of(xml: &str) -> Result<Shape, ShapeError> {
    shape(&roxmltree::Document::parse(xml).unwrap())
}

#[test]
fn one_response_one_assertion_signatures_where_they_belong() {
    let ok = response(&assertion("a1", &sig("a1")));
    assert_eq!(
        shape_of(&ok),
        Ok(Shape {
            response_id: "r1".into(),
            carried: Carried::Plain { id: "a1".into() }
        })
    );
    let encrypted = response("<saml:EncryptedAssertion/>");
    assert_eq!(shape_of(&encrypted).unwrap().carried, Carried::Encrypted);
    let cases: Vec<(String, ShapeError)> = vec![
        (response(""), ShapeError::Assertions(0)),
        (
            response(&format!("{}{}", assertion("a1", ""), assertion("a2", ""))),
            ShapeError::Assertions(2),
        ),
        (
            response(&assertion("a1", &assertion("a2", ""))),
            ShapeError::Assertions(2),
        ),
        (
            response(&format!(
                "<samlp:Extensions>{}</samlp:Extensions>",
                assertion("a1", "")
            )),
            ShapeError::AssertionMisplaced,
        ),
        (
            response(&format!("{}{}", assertion("a1", ""), response(""))),
            ShapeError::Responses(2),
        ),
        (
            response(&assertion(
                "a1",
                &format!("<saml:Subject>{}</saml:Subject>", sig("a1")),
            )),
            ShapeError::SignatureMisplaced,
        ),
        (
            response(&assertion("r1", "")),
            ShapeError::DuplicateId("r1".into()),
        ),
        (
            assertion("a1", "").replace(
                "<saml:Assertion ",
                &format!("<saml:Assertion xmlns:saml=\"{ASSERTION_NS}\" "),
            ),
            ShapeError::NotResponse,
        ),
    ];
    for (xml, want) in cases {
        assert_eq!(shape_of(&xml), Err(want), "{xml}");
    }
}

#[test]
fn signatures_are_plain_enveloped_ones_over_their_parent() {
    let good = response(&assertion("a1", &sig("a1")));
    assert!(shape_of(&good).is_ok());
    let form = |s: &'static str| Err(ShapeError::SignatureForm(s));
    let cases: Vec<(String, Result<Shape, ShapeError>)> = vec![
        (
            good.replace("URI=\"#a1\"", "URI=\"#r1\""),
            form("the Reference must name its parent's ID"),
        ),
        (
            good.replace("URI=\"#a1\"", "URI=\"file:///dev/zero\""),
            form("the Reference must name its parent's ID"),
        ),
        (
            good.replace("URI=\"#a1\"", "URI=\"\""),
            form("the Reference must name its parent's ID"),
        ),
        (
            good.replace(
                "</ds:SignedInfo>",
                "<ds:Reference URI=\"http://169.254.169.254/\"/></ds:SignedInfo>",
            ),
            form("exactly one Reference"),
        ),
        (
            good.replace(
                "</ds:Transforms>",
                "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xslt-19991116\"/></ds:Transforms>",
            ),
            form("a transform other than enveloped-signature and C14N"),
        ),
        (
            good.replace(
                "enveloped-signature\"/>",
                "enveloped-signature\"><ds:XPath>1</ds:XPath></ds:Transform>",
            ),
            form("a transform with parameters"),
        ),
        (
            good.replace(
                "</ds:Signature>",
                "<ds:Object><ds:Manifest/></ds:Object></ds:Signature>",
            ),
            form("an Object, Manifest or RetrievalMethod"),
        ),
        (
            good.replace(
                "<ds:SignatureValue>",
                "<ds:KeyInfo><ds:RetrievalMethod URI=\"file:///etc/passwd\"/></ds:KeyInfo><ds:SignatureValue>",
            ),
            form("an Object, Manifest or RetrievalMethod"),
        ),
        (
            response(&format!(
                "<saml:EncryptedAssertion>{}</saml:EncryptedAssertion>",
                sig("a1")
            )),
            Err(ShapeError::SignatureMisplaced),
        ),
    ];
    for (xml, want) in cases {
        assert_eq!(shape_of(&xml), want, "{xml}");
    }
}

#[test]
fn only_strong_algorithms_inside_signed_info() {
    let strong = response(&assertion("a1", &sig("a1")));
    assert_eq!(check_algorithms(&doc(&strong), false), Ok(()));
    let sha1 = strong
        .replace(
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        )
        .replace(
            "http://www.w3.org/2001/04/xmlenc#sha256",
            "http://www.w3.org/2000/09/xmldsig#sha1",
        );
    assert!(matches!(
        check_algorithms(&doc(&sha1), false),
        Err(ShapeError::Algorithm(_))
    ));
    assert_eq!(check_algorithms(&doc(&sha1), true), Ok(()));
    let md5 = strong.replace("xmldsig-more#rsa-sha256", "xmldsig-more#rsa-md5");
    assert!(check_algorithms(&doc(&md5), true).is_err(), "never MD5");
    // An encrypted key's OAEP digest is not a signature algorithm.
    let oaep = response(&format!(
        "{}<x:EncryptionMethod xmlns:x=\"{XMLENC_NS}\"><ds:DigestMethod \
         xmlns:ds=\"{DSIG_NS}\" Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha1\"/>\
         </x:EncryptionMethod>",
        assertion("a1", &sig("a1"))
    ));
    assert_eq!(check_algorithms(&doc(&oaep), false), Ok(()));
}

#[test]
fn facts_of_an_assertion() {
    let xml = response(&assertion(
        "a1",
        "<saml:Subject><saml:NameID Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:persistent\">\
         u-1</saml:NameID><saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">\
         <saml:SubjectConfirmationData Recipient=\"https://sp.test/acs\" InResponseTo=\"_req\" \
         NotOnOrAfter=\"2030-01-01T00:05:00Z\"/></saml:SubjectConfirmation></saml:Subject>\
         <saml:Conditions NotBefore=\"2030-01-01T00:00:00.123Z\" NotOnOrAfter=\"garbage\">\
         <saml:AudienceRestriction><saml:Audience>sp</saml:Audience></saml:AudienceRestriction>\
         </saml:Conditions><saml:AuthnStatement AuthnInstant=\"2030-01-01T00:00:00Z\" SessionIndex=\"s1\">\
         <saml:AuthnContext><saml:AuthnContextClassRef>mfa</saml:AuthnContextClassRef></saml:AuthnContext>\
         </saml:AuthnStatement><saml:AttributeStatement><saml:Attribute Name=\"urn:oid:1\" FriendlyName=\"mail\">\
         <saml:AttributeValue>a@b.test</saml:AttributeValue></saml:Attribute><saml:Attribute Name=\"groups\">\
         <saml:AttributeValue>x</saml:AttributeValue><saml:AttributeValue>y</saml:AttributeValue>\
         </saml:Attribute></saml:AttributeStatement>",
    ));
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let response = response_facts(doc.root_element());
    assert_eq!(response.destination.as_deref(), Some("https://sp.test/acs"));
    assert_eq!(response.in_response_to.as_deref(), Some("_req"));
    assert_eq!(
        response.status,
        "urn:oasis:names:tc:SAML:2.0:status:Success"
    );
    let a = assertion_facts(doc.root_element().last_element_child().unwrap());
    assert_eq!(a.name_id, "u-1", "trimmed");
    assert_eq!(a.recipient.as_deref(), Some("https://sp.test/acs"));
    assert_eq!(a.not_before, Some(1_893_456_000));
    assert_eq!(
        a.not_on_or_after,
        Some(i64::MIN),
        "an unreadable end has passed"
    );
    assert_eq!(a.confirmation_not_on_or_after, Some(1_893_456_300));
    assert_eq!(a.audience_restrictions, vec![vec!["sp".to_owned()]]);
    assert_eq!(a.session_index.as_deref(), Some("s1"));
    assert_eq!(a.authn_context.as_deref(), Some("mfa"));
    assert_eq!(a.attributes["mail"], vec!["a@b.test".to_owned()]);
    assert_eq!(a.attributes["urn:oid:1"], vec!["a@b.test".to_owned()]);
    assert_eq!(a.attributes["groups"], vec!["x".to_owned(), "y".to_owned()]);
}
