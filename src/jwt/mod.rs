//! Verifying JWTs signed by someone else: ID tokens from an IdP (and, with the same rules,
//! access tokens). Signatures and the registered claims are checked by `jsonwebtoken`; this
//! module decides which keys and algorithms are acceptable and which claims must match.
//!
//! Rules that hold for every token:
//! - asymmetric algorithms only ([`ALLOWED_ALGORITHMS`]): never `none` (it does not even
//!   parse), never HS* (whose "key" would be a public value or a shared secret);
//! - keys only from the issuer's JWKS ([`KeySet`]); a key's own `alg`, when it states one,
//!   must be the token's;
//! - `iss` exact; `aud` must name us; `exp` and `nbf` with a small leeway.
//!
//! Claims are deserialized into the caller's type, so an odd value in a claim gatehouse does
//! not need cannot fail a token, and a claim it does need is read as loosely or strictly as
//! the caller decides (see `email_verified` in the broker).

pub mod jwks;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::de::DeserializeOwned;

pub use jwks::JwksCache;

/// The HTTP client for talking to issuers (discovery, JWKS, token and userinfo endpoints):
/// never follows a redirect (SSRF), never waits long.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Signing algorithms accepted from issuers: asymmetric only.
pub const ALLOWED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("signing algorithm {0} is not accepted")]
    Algorithm(String),
    /// No key in the issuer's JWKS matches the token's `kid`: the issuer may have rotated its
    /// keys, so this is the one error that justifies refetching the JWKS.
    #[error("signed with a key the issuer does not publish (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(String),
}

/// One verification key from a JWKS.
#[derive(Clone)]
pub struct Key {
    kid: Option<String>,
    /// The `alg` the JWK states, if any.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    decoding: DecodingKey,
}

/// The usable signing keys of one JWKS.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.kid))
            .finish()
    }
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify gatehouse-accepted signatures
    /// (encryption keys, symmetric keys, unknown key types or algorithms) are skipped, one at
    /// a time, so one odd key cannot make a whole JWKS unusable.
    pub fn from_json(body: &[u8]) -> Result<Self, JwtError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(body)
            .map_err(|e| JwtError::Fetch(format!("not a JWKS document: {e}")))?;
        let keys = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| Key::from_jwk(&jwk))
            .collect();
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether the set still has the key `kid` (any key, for a token that named none).
    pub fn has(&self, kid: Option<&str>) -> bool {
        match kid {
            Some(kid) => self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
            None => !self.keys.is_empty(),
        }
    }

    /// The key for a token header: by `kid`, or, for a token without one, the only key that
    /// can verify its algorithm. A key fits when it is of the algorithm's type (RSA, EC, OKP)
    /// and its own `alg`, if stated, is the token's.
    fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<&Key, JwtError> {
        let fits = |k: &&Key| k.family == alg.family() && k.alg.is_none_or(|a| a == alg);
        let mut candidates = self.keys.iter().filter(|k| match kid {
            Some(kid) => k.kid.as_deref() == Some(kid),
            None => true,
        });
        match kid {
            Some(_) => candidates
                .find(fits)
                .ok_or_else(|| JwtError::UnknownKey(kid.map(String::from))),
            None => {
                let fitting: Vec<&Key> = candidates.filter(fits).collect();
                match fitting.as_slice() {
                    [only] => Ok(only),
                    [] => Err(JwtError::UnknownKey(None)),
                    _ => Err(JwtError::Invalid(
                        "the token names no key (kid) and the issuer publishes several".into(),
                    )),
                }
            }
        }
    }
}

impl Key {
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return None;
        }
        let family = match jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            // Symmetric and unknown keys never verify a token here.
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            Some(a) => {
                let a: Algorithm = a.to_string().parse().ok()?;
                if !ALLOWED_ALGORITHMS.contains(&a) {
                    return None;
                }
                Some(a)
            }
            None => None,
        };
        Some(Self {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            decoding: DecodingKey::from_jwk(jwk).ok()?,
        })
    }
}

/// What a token must say about who issued it and for whom.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    /// The token's `aud` must contain one of these. `None`: the caller checks `aud` itself
    /// (bearer routes each accept their own audiences).
    pub audiences: Option<&'a [String]>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_seconds: u64,
    /// `sub` must be present (every token but a back-channel logout token, which may name
    /// only a session, `sid`).
    pub subject_required: bool,
}

/// A verified token's claims, and the `typ` of its header.
#[derive(Debug)]
pub struct Verified<C> {
    pub header_typ: Option<String>,
    /// The key it was verified with.
    pub kid: Option<String>,
    pub claims: C,
}

/// Verifies a compact JWT against `keys` and `expect`, and deserializes its claims.
pub fn verify<C: DeserializeOwned>(
    token: &str,
    keys: &KeySet,
    expect: &Expect<'_>,
) -> Result<Verified<C>, JwtError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
    if !ALLOWED_ALGORITHMS.contains(&header.alg) {
        return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
    }
    let key = keys.key_for(header.kid.as_deref(), header.alg)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = expect.leeway_seconds;
    validation.validate_nbf = true;
    validation.set_issuer(&[expect.issuer]);
    let mut required = vec!["exp", "iss"];
    if expect.subject_required {
        required.push("sub");
    }
    match expect.audiences {
        Some(audiences) => {
            validation.set_audience(audiences);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    jsonwebtoken::decode::<C>(token, &key.decoding, &validation)
        .map(|data| Verified {
            header_typ: data.header.typ,
            kid: data.header.kid,
            claims: data.claims,
        })
        .map_err(|e| JwtError::Invalid(describe(e.kind())))
}

/// A failed check in words an operator can act on (the audit trail shows it).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::ExpiredSignature => "expired (exp)".into(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "issued by another issuer (iss)".into(),
        ErrorKind::InvalidAudience => "meant for another audience (aud)".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the {claim} claim is missing"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the {claim} claim is malformed"),
        ErrorKind::InvalidAlgorithm => "the key does not match the algorithm".into(),
        ErrorKind::Json(e) => format!("the claims are not what a token needs: {e}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn odd_keys_are_skipped_not_fatal() {
        let rsa = json!({"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig",
            "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"});
        let document = json!({"keys": [
            {"kty": "oct", "kid": "h1", "alg": "HS256", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird", "kid": "w1"},
            {"kty": "RSA", "kid": "x1", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "alg": "ES512", "crv": "P-521", "x": "AA", "y": "AA"},
            rsa,
        ]});
        let set = KeySet::from_json(document.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1, "{set:?}");
        assert!(set.key_for(Some("r1"), Algorithm::RS256).is_ok());
        // The key says RS256: it does not verify PS256 tokens.
        assert_eq!(
            set.key_for(Some("r1"), Algorithm::PS256).err(),
            Some(JwtError::UnknownKey(Some("r1".into())))
        );
        assert_eq!(
            set.key_for(Some("h1"), Algorithm::RS256).err(),
            Some(JwtError::UnknownKey(Some("h1".into())))
        );
        assert!(set.key_for(None, Algorithm::RS256).is_ok(), "the only key");
        assert!(KeySet::from_json(b"{\"nope\": 1}").is_err());
    }

    #[test]
    fn keys_are_chosen_by_type_when_the_token_names_none() {
        let document = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        ]});
        let set = KeySet::from_json(document.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        let rsa = set.key_for(None, Algorithm::RS256).unwrap();
        assert_eq!(rsa.family, AlgorithmFamily::Rsa);
        let ec = set.key_for(None, Algorithm::ES256).unwrap();
        assert_eq!(ec.family, AlgorithmFamily::Ec);
        assert!(set.key_for(None, Algorithm::EdDSA).is_err());
    }
}
