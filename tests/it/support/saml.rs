//! SAML test material: keys made with the `openssl` CLI, IdP metadata, Responses written from
//! parts, and XML-DSig signatures made by the `xmlsec1` CLI (Debian's xmlsec1): the forged
//! corpus is built from a valid, signed Response that the test then changes in one way.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const PASSWORD_PROTECTED: &str =
    "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
pub const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
pub const RSA_SHA256: (&str, &str) = (
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmlenc#sha256",
);
pub const RSA_SHA1: (&str, &str) = (
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "http://www.w3.org/2000/09/xmldsig#sha1",
);

/// An RSA key and its self-signed certificate (PEM files).
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub key: PathBuf,
    pub cert: PathBuf,
}

impl KeyPair {
    pub fn generate(dir: &Path, name: &str) -> Self {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.crt"));
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .arg("-subj")
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(status.status.success(), "openssl: {status:?}");
        Self { key, cert }
    }

    /// The certificate as base64 DER (for metadata and KeyInfo).
    pub fn cert_b64(&self) -> String {
        let pem = std::fs::read_to_string(&self.cert).expect("read cert");
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }
}

/// IdP metadata naming `cert` as the signing key.
pub fn idp_metadata(entity_id: &str, cert: &KeyPair, sso: &str, slo: Option<&str>) -> String {
    let slo = slo
        .map(|url| {
            format!(
                "<md:SingleLogoutService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" \
                 Location=\"{url}\"/>"
            )
        })
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\"?>\n<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
         xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{entity_id}\">\
         <md:IDPSSODescriptor protocolSupportEnumeration=\"{PROTOCOL}\">\
         <md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}\
         </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>{slo}\
         <md:NameIDFormat>{PERSISTENT}</md:NameIDFormat>\
         <md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" \
         Location=\"{sso}\"/></md:IDPSSODescriptor></md:EntityDescriptor>\n",
        cert.cert_b64()
    )
}

/// `xs:dateTime` of a Unix time.
pub fn instant(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .expect("time")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A signature template (enveloped, exclusive C14N) for the element with `id`, to be filled by
/// `xmlsec1 --sign`; `key_info` leaves room for the signing certificate.
pub fn signature_template(id: &str, alg: (&str, &str), key_info: bool) -> String {
    let key_info = if key_info {
        "<ds:KeyInfo><ds:X509Data/></ds:KeyInfo>"
    } else {
        ""
    };
    format!(
        "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>\
         <ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
         <ds:SignatureMethod Algorithm=\"{}\"/><ds:Reference URI=\"#{id}\"><ds:Transforms>\
         <ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
         <ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>\
         <ds:DigestMethod Algorithm=\"{}\"/><ds:DigestValue></ds:DigestValue></ds:Reference>\
         </ds:SignedInfo><ds:SignatureValue></ds:SignatureValue>{key_info}</ds:Signature>",
        alg.0, alg.1
    )
}

/// Fills the first signature template of `xml` with `key` (xmlsec1 CLI).
pub fn sign(xml: &str, key: &KeyPair) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.xml");
    let output = dir.path().join("out.xml");
    std::fs::write(&input, xml).expect("write");
    let out = Command::new("xmlsec1")
        .arg("--sign")
        .arg("--privkey-pem")
        .arg(format!("{},{}", key.key.display(), key.cert.display()))
        .args(["--id-attr:ID", &format!("{ASSERTION}:Assertion")])
        .args(["--id-attr:ID", &format!("{PROTOCOL}:Response")])
        .args(["--id-attr:ID", &format!("{PROTOCOL}:Status")])
        .arg("--output")
        .arg(&output)
        .arg(&input)
        .output()
        .expect("run xmlsec1 (apt-get install xmlsec1)");
    assert!(
        out.status.success(),
        "xmlsec1: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = std::fs::read_to_string(&output).expect("read signed");
    // Drop the XML declaration so the result can be embedded.
    match signed.strip_prefix("<?xml version=\"1.0\"?>") {
        Some(rest) => rest.trim_start().to_owned(),
        None => signed,
    }
}

/// What goes into an assertion.
#[derive(Debug, Clone)]
pub struct AssertionSpec {
    pub id: String,
    pub issuer: String,
    pub name_id: String,
    pub name_id_format: String,
    pub recipient: String,
    pub in_response_to: Option<String>,
    pub not_before: i64,
    pub not_on_or_after: i64,
    pub audience: String,
    pub attributes: Vec<(String, Vec<String>)>,
    pub session_index: String,
    pub authn_context: String,
}

impl AssertionSpec {
    /// The assertion with a signature template after its Issuer when `signature` is given.
    pub fn xml(&self, signature: Option<&str>) -> String {
        let irt = self
            .in_response_to
            .as_ref()
            .map(|id| format!(" InResponseTo=\"{id}\""))
            .unwrap_or_default();
        let attributes: String = self
            .attributes
            .iter()
            .map(|(name, values)| {
                let values: String = values
                    .iter()
                    .map(|v| format!("<saml:AttributeValue>{v}</saml:AttributeValue>"))
                    .collect();
                format!("<saml:Attribute Name=\"{name}\">{values}</saml:Attribute>")
            })
            .collect();
        format!(
            "<saml:Assertion xmlns:saml=\"{ASSERTION}\" ID=\"{id}\" Version=\"2.0\" \
             IssueInstant=\"{now}\"><saml:Issuer>{issuer}</saml:Issuer>{sig}\
             <saml:Subject><saml:NameID Format=\"{format}\">{name_id}</saml:NameID>\
             <saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">\
             <saml:SubjectConfirmationData NotOnOrAfter=\"{end}\" Recipient=\"{recipient}\"{irt}/>\
             </saml:SubjectConfirmation></saml:Subject>\
             <saml:Conditions NotBefore=\"{start}\" NotOnOrAfter=\"{end}\"><saml:AudienceRestriction>\
             <saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions>\
             <saml:AuthnStatement AuthnInstant=\"{now}\" SessionIndex=\"{session}\"><saml:AuthnContext>\
             <saml:AuthnContextClassRef>{context}</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>\
             <saml:AttributeStatement>{attributes}</saml:AttributeStatement></saml:Assertion>",
            id = self.id,
            now = instant(now()),
            issuer = self.issuer,
            sig = signature.unwrap_or_default(),
            format = self.name_id_format,
            name_id = self.name_id,
            end = instant(self.not_on_or_after),
            start = instant(self.not_before),
            recipient = self.recipient,
            audience = self.audience,
            session = self.session_index,
            context = self.authn_context,
        )
    }
}

/// What goes around it.
#[derive(Debug, Clone)]
pub struct ResponseSpec {
    pub id: String,
    pub issuer: String,
    pub destination: String,
    pub in_response_to: Option<String>,
    pub status: String,
}

impl ResponseSpec {
    /// The Response around `assertion`, with a signature template after its Issuer when
    /// `signature` is given.
    pub fn xml(&self, signature: Option<&str>, assertion: &str) -> String {
        let irt = self
            .in_response_to
            .as_ref()
            .map(|id| format!(" InResponseTo=\"{id}\""))
            .unwrap_or_default();
        format!(
            "<samlp:Response xmlns:samlp=\"{PROTOCOL}\" xmlns:saml=\"{ASSERTION}\" ID=\"{id}\" \
             Version=\"2.0\" IssueInstant=\"{now}\" Destination=\"{destination}\"{irt}>\
             <saml:Issuer>{issuer}</saml:Issuer>{sig}<samlp:Status>\
             <samlp:StatusCode Value=\"{status}\"/></samlp:Status>{assertion}</samlp:Response>",
            id = self.id,
            now = instant(now()),
            destination = self.destination,
            issuer = self.issuer,
            sig = signature.unwrap_or_default(),
            status = self.status,
        )
    }
}

pub fn post_encode(xml: &str) -> String {
    STANDARD.encode(xml.as_bytes())
}

/// A fresh SAML ID.
pub fn new_id(tag: &str) -> String {
    format!("_{tag}{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// A redirect-binding query carrying `xml` as `param`, signed (RSA-SHA256, the `openssl` CLI)
/// with `key` when given.
pub fn redirect_query(param: &str, xml: &str, key: Option<&KeyPair>) -> String {
    use std::io::Write;
    let mut deflater =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflater.write_all(xml.as_bytes()).expect("deflate");
    let encoded = STANDARD.encode(deflater.finish().expect("deflate"));
    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let mut query = format!("{param}={}", enc(&encoded));
    if let Some(key) = key {
        query.push_str(&format!("&SigAlg={}", enc(RSA_SHA256.0)));
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key.key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(query.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("openssl");
        assert!(out.status.success());
        query.push_str(&format!("&Signature={}", enc(&STANDARD.encode(out.stdout))));
    }
    query
}

/// An IdP's `LogoutRequest` for `name_id`.
pub fn logout_request(issuer: &str, destination: &str, name_id: &str, issued: i64) -> String {
    format!(
        "<samlp:LogoutRequest xmlns:samlp=\"{PROTOCOL}\" xmlns:saml=\"{ASSERTION}\" ID=\"{}\" \
         Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{destination}\">\
         <saml:Issuer>{issuer}</saml:Issuer><saml:NameID Format=\"{PERSISTENT}\">{name_id}\
         </saml:NameID></samlp:LogoutRequest>",
        new_id("lr"),
        instant(issued)
    )
}
