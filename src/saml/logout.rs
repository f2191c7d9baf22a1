//! Single logout over the HTTP-Redirect binding: the `LogoutRequest` gatehouse sends when a
//! user signs out, the `LogoutRequest` an IdP sends when the user's IdP session ends (it must
//! be signed: the binding's query signature is checked against the metadata certificates),
//! and the `LogoutResponse`s both ways. The signed string is the raw query as received, in
//! the binding's order (SAML Bindings §3.4.4.1), not a re-encoding of it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use quick_xml::escape::escape;

use super::binding::{BindingError, Outgoing, redirect_decode, redirect_url};
use super::facts::{child, text};
use super::messages::{ASSERTION_NS, PROTOCOL_NS, instant, new_id};
use super::metadata::is;
use super::rules::STATUS_SUCCESS;
use super::screen::{Limits, screen};
use super::verify::VerifyError;
use crate::session::token::RandomError;

/// What a `LogoutRequest` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub id: String,
    pub issuer: String,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
    pub not_on_or_after: Option<i64>,
    pub issue_instant: Option<i64>,
    pub destination: Option<String>,
}

/// What a `LogoutResponse` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutAnswer {
    pub issuer: Option<String>,
    pub in_response_to: Option<String>,
    pub success: bool,
}

/// A received redirect-binding message: the decoded XML and what the signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub xml: String,
    pub relay_state: Option<String>,
    /// `(signed text, SigAlg, signature bytes)` when the query is signed.
    pub signature: Option<(String, String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutError {
    #[error("{0}")]
    Binding(#[from] BindingError),
    #[error("{0}")]
    Hostile(#[from] super::screen::Hostile),
    #[error("the logout message is not what it should be: {0}")]
    Invalid(&'static str),
    #[error("the LogoutRequest is not signed (an IdP-initiated logout must be)")]
    Unsigned,
    #[error("{0}")]
    Verify(#[from] VerifyError),
    #[error("the LogoutRequest {0:?} was already used (replay)")]
    Replayed(String),
    #[error("the LogoutRequest has expired, or was issued too long ago or in the future")]
    Expired,
}

/// Reads a redirect-binding query carrying `param` (`SAMLRequest` or `SAMLResponse`).
pub fn receive(raw_query: &str, param: &str) -> Result<Received, LogoutError> {
    let mut message = None;
    let mut relay = None;
    let mut sig_alg = None;
    let mut signature = None;
    for part in raw_query.split('&') {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let slot = match key {
            k if k == param => &mut message,
            "RelayState" => &mut relay,
            "SigAlg" => &mut sig_alg,
            "Signature" => &mut signature,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(LogoutError::Invalid("a parameter appears twice"));
        }
    }
    let decode = |raw: &str| {
        percent_encoding::percent_decode_str(&raw.replace('+', " "))
            .decode_utf8()
            .map(|v| v.into_owned())
            .map_err(|_| LogoutError::Invalid("parameter is not UTF-8"))
    };
    let raw_message = message.ok_or(LogoutError::Invalid("no message"))?;
    let limits = Limits::default();
    let xml = redirect_decode(&decode(raw_message)?, limits.max_bytes)?;
    screen(&xml, limits)?;
    let xml = String::from_utf8(xml).map_err(|_| LogoutError::Invalid("not UTF-8"))?;
    let signature = match (sig_alg, signature) {
        (Some(alg), Some(sig)) => {
            let mut signed = format!("{param}={raw_message}");
            if let Some(relay) = relay {
                signed.push_str(&format!("&RelayState={relay}"));
            }
            signed.push_str(&format!("&SigAlg={alg}"));
            let bytes = STANDARD
                .decode(decode(sig)?.as_bytes())
                .map_err(|_| LogoutError::Invalid("Signature is not base64"))?;
            Some((signed, decode(alg)?, bytes))
        }
        (None, None) => None,
        _ => {
            return Err(LogoutError::Invalid(
                "SigAlg without Signature or the reverse",
            ));
        }
    };
    Ok(Received {
        xml,
        relay_state: relay.map(decode).transpose()?,
        signature,
    })
}

/// Reads a screened `LogoutRequest`.
pub fn parse_request(xml: &str) -> Result<LogoutRequest, LogoutError> {
    let doc = roxmltree::Document::parse(xml).map_err(|_| LogoutError::Invalid("not XML"))?;
    let root = doc.root_element();
    if !is(&root, PROTOCOL_NS, "LogoutRequest") {
        return Err(LogoutError::Invalid("not a LogoutRequest"));
    }
    let name_id = child(root, ASSERTION_NS, "NameID").ok_or(LogoutError::Invalid("no NameID"))?;
    Ok(LogoutRequest {
        id: root
            .attribute("ID")
            .ok_or(LogoutError::Invalid("no ID"))?
            .to_owned(),
        issuer: child(root, ASSERTION_NS, "Issuer")
            .map(text)
            .ok_or(LogoutError::Invalid("no Issuer"))?,
        name_id: text(name_id),
        name_id_format: name_id.attribute("Format").map(String::from),
        session_index: child(root, PROTOCOL_NS, "SessionIndex").map(text),
        not_on_or_after: root
            .attribute("NotOnOrAfter")
            .map(|t| instant_of(t).unwrap_or(i64::MIN)),
        issue_instant: root.attribute("IssueInstant").and_then(instant_of),
        destination: root.attribute("Destination").map(String::from),
    })
}

fn instant_of(t: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(t.trim())
        .ok()
        .map(|t| t.timestamp())
}

/// Reads a screened `LogoutResponse`.
pub fn parse_response(xml: &str) -> Result<LogoutAnswer, LogoutError> {
    let doc = roxmltree::Document::parse(xml).map_err(|_| LogoutError::Invalid("not XML"))?;
    let root = doc.root_element();
    if !is(&root, PROTOCOL_NS, "LogoutResponse") {
        return Err(LogoutError::Invalid("not a LogoutResponse"));
    }
    let success = child(root, PROTOCOL_NS, "Status")
        .and_then(|s| child(s, PROTOCOL_NS, "StatusCode"))
        .and_then(|c| c.attribute("Value"))
        == Some(STATUS_SUCCESS);
    Ok(LogoutAnswer {
        issuer: child(root, ASSERTION_NS, "Issuer").map(text),
        in_response_to: root.attribute("InResponseTo").map(String::from),
        success,
    })
}

/// A `LogoutRequest` for `name_id` (and the session index of that sign-in), as a redirect URL.
pub fn request_url(
    out: &Outgoing<'_>,
    name_id: &str,
    name_id_format: Option<&str>,
    session_index: Option<&str>,
    now: i64,
) -> Result<(String, String), LogoutError> {
    let id = new_id().map_err(random)?;
    let format = name_id_format
        .map(|f| format!(" Format=\"{}\"", escape(f)))
        .unwrap_or_default();
    let index = session_index
        .map(|s| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", escape(s)))
        .unwrap_or_default();
    let xml = format!(
        "<samlp:LogoutRequest xmlns:samlp=\"{PROTOCOL_NS}\" xmlns:saml=\"{ASSERTION_NS}\" \
         ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\">\
         <saml:Issuer>{}</saml:Issuer><saml:NameID{format}>{}</saml:NameID>{index}\
         </samlp:LogoutRequest>",
        instant(now),
        escape(out.destination),
        escape(out.issuer),
        escape(name_id),
    );
    Ok((id, redirect_url(out, "SAMLRequest", &xml)?))
}

/// A `LogoutResponse` (Success) to the IdP's `LogoutRequest` `in_response_to`.
pub fn response_url(
    out: &Outgoing<'_>,
    in_response_to: &str,
    now: i64,
) -> Result<String, LogoutError> {
    let id = new_id().map_err(random)?;
    let xml = format!(
        "<samlp:LogoutResponse xmlns:samlp=\"{PROTOCOL_NS}\" xmlns:saml=\"{ASSERTION_NS}\" \
         ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\" InResponseTo=\"{}\">\
         <saml:Issuer>{}</saml:Issuer><samlp:Status><samlp:StatusCode Value=\"{STATUS_SUCCESS}\"/>\
         </samlp:Status></samlp:LogoutResponse>",
        instant(now),
        escape(out.destination),
        escape(in_response_to),
        escape(out.issuer),
    );
    Ok(redirect_url(out, "SAMLResponse", &xml)?)
}

fn random(_: RandomError) -> LogoutError {
    LogoutError::Invalid("no randomness")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_of(url: &str) -> &str {
        url.split_once('?').map(|(_, q)| q).unwrap_or_default()
    }

    #[test]
    fn messages_round_trip_through_the_redirect_binding() {
        let out = Outgoing {
            destination: "https://idp.test/slo?tenant=1",
            issuer: "https://sp.test/auth/saml/big/metadata",
            relay_state: Some("https://sp.test/bye?a=1&b=2"),
            key: None,
        };
        let (id, url) = request_url(&out, "u-1", None, Some("s-9"), 1_800_000_000).unwrap();
        assert!(
            url.starts_with("https://idp.test/slo?tenant=1&SAMLRequest="),
            "{url}"
        );
        let query = query_of(&url).trim_start_matches("tenant=1&");
        let received = receive(query, "SAMLRequest").unwrap();
        assert_eq!(
            received.relay_state.as_deref(),
            Some("https://sp.test/bye?a=1&b=2")
        );
        assert_eq!(received.signature, None);
        let request = parse_request(&received.xml).unwrap();
        assert_eq!(request.id, id);
        assert_eq!(request.name_id, "u-1");
        assert_eq!(request.session_index.as_deref(), Some("s-9"));
        assert_eq!(request.issuer, out.issuer);
        assert_eq!(request.destination.as_deref(), Some(out.destination));
        assert_eq!(request.issue_instant, Some(1_800_000_000));

        let url = response_url(&out, &id, 1_800_000_000).unwrap();
        let received = receive(
            query_of(&url).trim_start_matches("tenant=1&"),
            "SAMLResponse",
        )
        .unwrap();
        let answer = parse_response(&received.xml).unwrap();
        assert_eq!(answer.in_response_to, Some(id));
        assert!(answer.success);
        assert_eq!(answer.issuer.as_deref(), Some(out.issuer));
    }

    #[test]
    fn the_signed_text_is_the_raw_query_in_the_binding_order() {
        let xml =
            "<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_1\"/>";
        let message: String = url::form_urlencoded::byte_serialize(
            super::super::binding::redirect_encode(xml).as_bytes(),
        )
        .collect();
        // Sent in another order, with encodings a re-encoder would change (%7E, +).
        let query = format!(
            "Signature=c2ln&SigAlg=http%3A%2F%2Falg&RelayState=a%7Eb+c&SAMLRequest={message}"
        );
        let received = receive(&query, "SAMLRequest").unwrap();
        let (signed, alg, signature) = received.signature.unwrap();
        assert_eq!(
            signed,
            format!("SAMLRequest={message}&RelayState=a%7Eb+c&SigAlg=http%3A%2F%2Falg")
        );
        assert_eq!(alg, "http://alg");
        assert_eq!(signature, b"sig");
        assert_eq!(received.relay_state.as_deref(), Some("a~b c"));

        let refused = [
            format!("SAMLRequest={message}&SAMLRequest={message}"),
            format!("SAMLRequest={message}&SigAlg=x"),
            format!("SAMLRequest={message}&Signature=c2ln"),
            format!("SAMLRequest={message}&SigAlg=x&Signature=%%%"),
            "RelayState=x".to_owned(),
            "SAMLRequest=%FF%FE".to_owned(),
        ];
        for query in refused {
            assert!(receive(&query, "SAMLRequest").is_err(), "{query}");
        }
    }
}
