//! ID token validation (OIDC Core §3.1.3.7) and the identity it yields, completed from
//! userinfo where the token leaves claims out.
//!
//! The ID token is verified by gatehouse's own JWT rules rather than `openidconnect`'s typed
//! claims: those refuse a whole token over one odd claim (Amazon Cognito sends
//! `"email_verified": "true"`, a string), where gatehouse only needs to count such a value as
//! not verified.

use serde::Deserialize;
use serde_json::Value;

use super::error::LoginError;
use crate::jwt::{self, Expect, JwtError, KeySet};
use crate::store::LoginFacts;

/// `exp` may be this far in the past (clock skew between us and the IdP).
pub const EXP_LEEWAY_SECONDS: u64 = 30;
/// `iat` may be this far in the future.
const IAT_LEEWAY_SECONDS: i64 = 60;

/// The claims gatehouse uses, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    /// `Some(true)` only for the JSON boolean `true`.
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    /// `amr`, `acr`, `auth_time` and `sid` from the ID token (never from userinfo: they speak
    /// about this login).
    pub login: LoginFacts,
    /// The claims `[[idp]] role_claims` names, from the ID token or else from userinfo.
    pub role_claims: serde_json::Map<String, Value>,
}

/// What an ID token must say for this login.
#[derive(Debug, Clone)]
pub struct IdTokenExpect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Unix seconds, for `iat`.
    pub now: i64,
}

/// `aud` is a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audiences {
    One(String),
    Many(Vec<String>),
}

/// The ID token claims gatehouse reads. The profile claims are loose JSON values: a value of
/// an unexpected type counts as absent (or, for `email_verified`, as not verified) instead of
/// refusing the token.
#[derive(Debug, Deserialize)]
pub struct IdTokenClaims {
    iss: String,
    sub: String,
    aud: Audiences,
    iat: serde_json::Number,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    email: Option<Value>,
    #[serde(default)]
    email_verified: Option<Value>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    amr: Option<Value>,
    #[serde(default)]
    acr: Option<Value>,
    /// Loose, like the profile claims: an odd type counts as absent.
    #[serde(default)]
    auth_time: Option<Value>,
    #[serde(default)]
    sid: Option<Value>,
    /// Everything else, for `role_claims`.
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

impl IdTokenClaims {
    /// The identity, keeping the claims named in `role_claims` (role mapping).
    pub fn into_identity<'a>(
        mut self,
        role_claims: impl Iterator<Item = &'a String>,
    ) -> VerifiedIdentity {
        let mut amr: Vec<String> = match &self.amr {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        amr.sort();
        amr.dedup();
        let login = LoginFacts {
            amr,
            acr: self.acr.as_ref().and_then(Value::as_str).map(String::from),
            auth_time: self.auth_time.as_ref().and_then(Value::as_i64),
            idp_subject: Some(self.sub.clone()),
            idp_sid: self.sid.as_ref().and_then(Value::as_str).map(String::from),
        };
        let role_claims = role_claims
            .filter_map(|claim| self.other.remove(claim).map(|v| (claim.clone(), v)))
            .collect();
        VerifiedIdentity {
            login,
            role_claims,
            issuer: self.iss,
            subject: self.sub,
            email: self
                .email
                .as_ref()
                .and_then(Value::as_str)
                .map(String::from),
            email_verified: match self.email_verified {
                Some(Value::Bool(b)) => Some(b),
                Some(other) => {
                    // Not verified, and not asked again of userinfo, which would say the same.
                    tracing::info!(value = %other, "email_verified is not a boolean; treating the email as unverified");
                    Some(false)
                }
                None => None,
            },
            name: self.name.as_ref().and_then(Value::as_str).map(String::from),
        }
    }
}

/// Validates an ID token (OIDC Core §3.1.3.7): a signature by a key from the issuer's JWKS
/// with an accepted algorithm, `iss` exact, `aud` is this client and no one else, `azp` (when
/// present) is this client, `exp` (with leeway), `iat` not in the future, and `nonce` is this
/// login's.
pub fn verify_id_token(
    token: &str,
    keys: &KeySet,
    expect: &IdTokenExpect<'_>,
) -> Result<IdTokenClaims, JwtError> {
    let audiences = [expect.client_id.to_owned()];
    let claims: IdTokenClaims = jwt::verify(
        token,
        keys,
        &Expect {
            issuer: expect.issuer,
            audiences: Some(&audiences),
            leeway_seconds: EXP_LEEWAY_SECONDS,
            subject_required: true,
        },
    )?
    .claims;
    let invalid = |m: String| Err(JwtError::Invalid(m));
    let others: Vec<&String> = match &claims.aud {
        Audiences::One(a) => vec![a],
        Audiences::Many(list) => list.iter().collect(),
    }
    .into_iter()
    .filter(|a| a.as_str() != expect.client_id)
    .collect();
    if !others.is_empty() {
        return invalid(format!("the token is also for other audiences: {others:?}"));
    }
    if let Some(azp) = &claims.azp
        && azp != expect.client_id
    {
        return invalid(format!(
            "authorized party (azp) is {azp:?}, not this client"
        ));
    }
    let iat = claims.iat.as_f64().unwrap_or(f64::MAX);
    if iat > (expect.now + IAT_LEEWAY_SECONDS) as f64 {
        return invalid(format!("issued in the future (iat {iat})"));
    }
    match &claims.nonce {
        Some(n) if n == expect.nonce => Ok(claims),
        Some(_) => invalid("the nonce is not this login's".into()),
        None => invalid("the token has no nonce".into()),
    }
}

/// Applies a userinfo response: `sub` must match; fills only what is still missing.
pub fn merge_userinfo(identity: &mut VerifiedIdentity, body: &Value) -> Result<(), LoginError> {
    match body.get("sub").and_then(Value::as_str) {
        Some(sub) if sub == identity.subject => {}
        Some(_) => {
            return Err(LoginError::Userinfo(
                "userinfo is about another subject than the ID token".into(),
            ));
        }
        None => return Err(LoginError::Userinfo("userinfo has no sub".into())),
    }
    let email = body.get("email").and_then(Value::as_str);
    // Verification speaks about an address: only take it for the address we are using.
    let same_address = match (&identity.email, email) {
        (Some(ours), Some(theirs)) => ours.eq_ignore_ascii_case(theirs),
        (None, _) => true,
        (Some(_), None) => false,
    };
    if identity.email.is_none() {
        identity.email = email.map(String::from);
    }
    if identity.email_verified.is_none() && same_address {
        identity.email_verified = body.get("email_verified").and_then(Value::as_bool);
    }
    if identity.name.is_none() {
        identity.name = body.get("name").and_then(Value::as_str).map(String::from);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::unix_now;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    const ISSUER: &str = "https://idp.test";
    const CLIENT: &str = "gatehouse";
    const SECRET: &str = "client-secret";
    const TRUSTED_PEM: &str = include_str!("../../tests/fixtures/id-token-test-key.pem");
    const OTHER_PEM: &str = include_str!("../../tests/fixtures/other-test-key.pem");

    fn rsa_key(pem: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
    }

    /// The issuer's JWKS: the trusted key's public half as `k1`.
    fn jwks() -> KeySet {
        let mut jwk = Jwk::from_encoding_key(&rsa_key(TRUSTED_PEM), Algorithm::RS256).unwrap();
        jwk.common.key_id = Some("k1".into());
        KeySet::from_json(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap()
    }

    fn now() -> i64 {
        unix_now()
    }

    /// A token with the usual claims, `changes` merged over them (`null` removes one).
    fn claims(changes: Value) -> Value {
        let mut c = json!({
            "iss": ISSUER, "sub": "alice", "aud": CLIENT, "exp": now() + 300, "iat": now(),
            "nonce": "n-1", "email": "alice@acme.test", "email_verified": true,
        });
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn signed(claims: &Value, key: &EncodingKey, alg: Algorithm, kid: Option<&str>) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(String::from);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn check(token: &str) -> Result<IdTokenClaims, JwtError> {
        verify_id_token(
            token,
            &jwks(),
            &IdTokenExpect {
                issuer: ISSUER,
                client_id: CLIENT,
                nonce: "n-1",
                now: now(),
            },
        )
    }

    /// The ID token rules of DESIGN.md, one row each.
    #[test]
    fn id_token_validation_table() {
        let key = rsa_key(TRUSTED_PEM);
        let t = now();
        let cases: Vec<(&str, Value, bool)> = vec![
            ("valid", json!({}), true),
            ("issuer differs", json!({"iss": "https://idp.test/"}), false),
            (
                "issuer of another tenant",
                json!({"iss": "https://evil.test"}),
                false,
            ),
            ("no issuer", json!({"iss": null}), false),
            (
                "audience is another client",
                json!({"aud": "other-client"}),
                false,
            ),
            ("audience list with us", json!({"aud": [CLIENT]}), true),
            (
                "extra untrusted audience, no azp",
                json!({"aud": [CLIENT, "other-client"]}),
                false,
            ),
            (
                "extra untrusted audience, azp us",
                json!({"aud": [CLIENT, "other"], "azp": CLIENT}),
                false,
            ),
            ("no audience", json!({"aud": null}), false),
            (
                "azp names another client",
                json!({"azp": "other-client"}),
                false,
            ),
            ("azp names us", json!({"azp": CLIENT}), true),
            ("expired within leeway", json!({"exp": t - 10}), true),
            ("expired", json!({"exp": t - 120}), false),
            ("no exp", json!({"exp": null}), false),
            (
                "issued slightly in the future",
                json!({"iat": t + 30}),
                true,
            ),
            (
                "issued in the future",
                json!({"iat": t + 600, "exp": t + 900}),
                false,
            ),
            ("not valid yet", json!({"nbf": t + 600}), false),
            ("nonce differs", json!({"nonce": "n-2"}), false),
            ("nonce missing", json!({"nonce": null}), false),
            ("no subject", json!({"sub": null}), false),
        ];
        for (what, changes, ok) in cases {
            let token = signed(&claims(changes), &key, Algorithm::RS256, Some("k1"));
            let result = check(&token);
            assert_eq!(result.is_ok(), ok, "{what}: {result:?}");
        }
    }

    #[test]
    fn keys_only_from_the_issuers_jwks_and_no_weak_algorithms() {
        let c = claims(json!({}));
        // A key the JWKS does not list (unknown kid): the error that triggers the refetch.
        let unknown = signed(&c, &rsa_key(OTHER_PEM), Algorithm::RS256, Some("k2"));
        assert_eq!(
            check(&unknown).err(),
            Some(JwtError::UnknownKey(Some("k2".into())))
        );
        // Another key claiming the trusted kid: the signature does not verify.
        let forged = signed(&c, &rsa_key(OTHER_PEM), Algorithm::RS256, Some("k1"));
        assert!(matches!(check(&forged), Err(JwtError::Invalid(_))));
        // No kid: the only key is tried, and the signature decides.
        let no_kid = signed(&c, &rsa_key(TRUSTED_PEM), Algorithm::RS256, None);
        assert!(check(&no_kid).is_ok());
        // HS256 with the client secret, or with the RSA public key as the HMAC secret: symmetric
        // algorithms are never accepted.
        let public_key = public_key_text();
        for secret in [SECRET.as_bytes(), public_key.as_bytes()] {
            let hs = signed(
                &c,
                &EncodingKey::from_secret(secret),
                Algorithm::HS256,
                Some("k1"),
            );
            assert!(
                matches!(check(&hs), Err(JwtError::Algorithm(_))),
                "HS256 accepted"
            );
        }
        // alg none does not even parse.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(c.to_string());
        assert!(matches!(
            check(&format!("{header}.{payload}.")),
            Err(JwtError::Malformed(_))
        ));
        for garbage in ["", "a.b.c", "not a token", &"x".repeat(10_000)] {
            assert!(check(garbage).is_err(), "{garbage:?}");
        }
    }

    /// The RSA public key as published (its JWK text): what an attacker would use as the HMAC
    /// secret in the classic algorithm-confusion attack.
    fn public_key_text() -> String {
        let jwk = Jwk::from_encoding_key(&rsa_key(TRUSTED_PEM), Algorithm::RS256).unwrap();
        serde_json::to_string(&jwk).unwrap()
    }

    /// Only the JSON boolean `true` verifies an email. Anything else in `email_verified` (Amazon
    /// Cognito sends the string "true") is accepted and counts as not verified; absent means
    /// "ask userinfo".
    #[test]
    fn email_verified_table() {
        let key = rsa_key(TRUSTED_PEM);
        let cases = [
            (json!(true), Some(true)),
            (json!(false), Some(false)),
            (json!("true"), Some(false)),
            (json!("True"), Some(false)),
            (json!(1), Some(false)),
            (json!({"value": true}), Some(false)),
            (Value::Null, None),
        ];
        for (value, want) in cases {
            let token = signed(
                &claims(json!({ "email_verified": value })),
                &key,
                Algorithm::RS256,
                Some("k1"),
            );
            let identity = check(&token)
                .unwrap_or_else(|e| panic!("{value}: {e}"))
                .into_identity(std::iter::empty());
            assert_eq!(identity.email_verified, want, "{value}");
            assert_eq!(identity.email.as_deref(), Some("alice@acme.test"));
        }
        // Other profile claims of an odd type are dropped, not fatal.
        let token = signed(
            &claims(json!({"email": 42, "name": {"en": "x"}})),
            &key,
            Algorithm::RS256,
            Some("k1"),
        );
        let identity = check(&token).unwrap().into_identity(std::iter::empty());
        assert_eq!((identity.email, identity.name), (None, None));
    }

    #[test]
    fn login_facts_and_role_claims_come_from_the_id_token() {
        let key = rsa_key(TRUSTED_PEM);
        let token = signed(
            &claims(json!({
                "amr": ["pwd", "mfa", "pwd"], "acr": "urn:mfa", "auth_time": 1234,
                "sid": "op-session", "groups": ["eng", "ops"], "department": "x",
            })),
            &key,
            Algorithm::RS256,
            Some("k1"),
        );
        let wanted = ["groups".to_owned(), "roles".to_owned()];
        let identity = check(&token).unwrap().into_identity(wanted.iter());
        assert_eq!(identity.login.amr, vec!["mfa", "pwd"]);
        assert_eq!(identity.login.acr.as_deref(), Some("urn:mfa"));
        assert_eq!(identity.login.auth_time, Some(1234));
        assert_eq!(identity.login.idp_sid.as_deref(), Some("op-session"));
        assert_eq!(identity.login.idp_subject.as_deref(), Some("alice"));
        assert_eq!(
            identity.role_claims.len(),
            1,
            "only named claims, only present ones"
        );
        assert_eq!(identity.role_claims["groups"], json!(["eng", "ops"]));
        // A lone string amr counts; odd types are dropped.
        let token = signed(
            &claims(json!({"amr": "otp", "acr": 5, "auth_time": "soon"})),
            &key,
            Algorithm::RS256,
            Some("k1"),
        );
        let identity = check(&token).unwrap().into_identity(std::iter::empty());
        assert_eq!(identity.login.amr, vec!["otp"]);
        assert_eq!((identity.login.acr, identity.login.auth_time), (None, None));
    }

    fn identity() -> VerifiedIdentity {
        VerifiedIdentity {
            issuer: "https://idp/".into(),
            subject: "alice".into(),
            email: None,
            email_verified: None,
            name: None,
            login: LoginFacts::default(),
            role_claims: serde_json::Map::new(),
        }
    }

    #[test]
    fn userinfo_merge_table() {
        let cases = [
            (
                json!({"sub": "alice", "email": "a@x.test", "email_verified": true}),
                Some(Some(true)),
            ),
            (
                json!({"sub": "alice", "email": "a@x.test", "email_verified": false}),
                Some(Some(false)),
            ),
            // Only the JSON boolean counts.
            (
                json!({"sub": "alice", "email": "a@x.test", "email_verified": "true"}),
                Some(None),
            ),
            (
                json!({"sub": "alice", "email": "a@x.test", "email_verified": 1}),
                Some(None),
            ),
            (json!({"sub": "alice", "email": "a@x.test"}), Some(None)),
            // Another subject, or none: refused.
            (
                json!({"sub": "mallory", "email": "a@x.test", "email_verified": true}),
                None,
            ),
            (json!({"email": "a@x.test", "email_verified": true}), None),
        ];
        for (body, want) in cases {
            let mut id = identity();
            let result = merge_userinfo(&mut id, &body);
            match want {
                None => assert!(result.is_err(), "{body}"),
                Some(verified) => {
                    assert!(result.is_ok(), "{body}");
                    assert_eq!(id.email_verified, verified, "{body}");
                    assert_eq!(id.email.as_deref(), Some("a@x.test"));
                }
            }
        }
        // What the ID token said wins.
        let mut id = identity();
        id.email = Some("token@x.test".into());
        id.email_verified = Some(false);
        merge_userinfo(
            &mut id,
            &json!({"sub": "alice", "email": "other@x.test", "email_verified": true}),
        )
        .unwrap();
        assert_eq!(
            (id.email.as_deref(), id.email_verified),
            (Some("token@x.test"), Some(false))
        );
        // Userinfo's verification of another address says nothing about the token's.
        let mut id = identity();
        id.email = Some("token@x.test".into());
        let other = json!({"sub": "alice", "email": "other@x.test", "email_verified": true});
        merge_userinfo(&mut id, &other).unwrap();
        assert_eq!(id.email_verified, None);
        let mut id = identity();
        id.email = Some("Token@X.test".into());
        let same = json!({"sub": "alice", "email": "token@x.test", "email_verified": true});
        merge_userinfo(&mut id, &same).unwrap();
        assert_eq!(id.email_verified, Some(true));
    }
}
