//! JWT header and claims parsing, and JWKS documents. Properties: no panic; nothing the fuzzer
//! writes verifies against a key it does not hold (an allow here is a forgery).
#![no_main]

use std::sync::OnceLock;

use gatehouse::jwt::{Expect, KeySet, verify};
use libfuzzer_sys::fuzz_target;

/// An RSA (2048-bit) and a P-256 public key: to pass, the fuzzer would have to compute an RSA
/// or ECDSA signature.
const JWKS: &str = r#"{"keys":[
 {"kty":"RSA","kid":"r1","alg":"RS256","use":"sig","e":"AQAB",
  "n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"},
 {"kty":"EC","kid":"e1","alg":"ES256","use":"sig","crv":"P-256",
  "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
]}"#;

fn keys() -> &'static KeySet {
    static K: OnceLock<KeySet> = OnceLock::new();
    K.get_or_init(|| KeySet::from_json(JWKS.as_bytes()).expect("fuzz JWKS"))
}

fuzz_target!(|data: &[u8]| {
    let _ = KeySet::from_json(data);
    let Ok(token) = std::str::from_utf8(data) else { return };
    let audiences = ["api".to_owned()];
    let expect = Expect {
        issuer: "https://issuer.test",
        audiences: Some(&audiences),
        leeway_seconds: 30,
        subject_required: true,
    };
    let verified = verify::<serde_json::Value>(token, keys(), &expect);
    assert!(verified.is_err(), "a token verified without the private key: {token:?}");
});
