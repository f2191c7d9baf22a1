//! How a Rust service behind the proxy verifies the token gatehouse mints (`x-gatehouse-jwt`)
//! with the `jsonwebtoken` crate: keys from gatehouse's JWKS, issuer = gatehouse's
//! `public_url`, audience = `token.audience`.
//!
//! cargo run --example verify_minted_token -- http://127.0.0.1:10000 internal "$TOKEN"
//!
//! A real service fetches the JWKS once and again only for an unknown `kid`, as here.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// The claims gatehouse puts in the token.
#[derive(Debug, Deserialize)]
struct Claims {
    /// The user's stable UUID.
    sub: String,
    email: String,
    org: Option<String>,
    roles: Vec<String>,
    /// Present while support staff impersonate the user: `act.sub` is their UUID.
    act: Option<Actor>,
}

#[derive(Debug, Deserialize)]
struct Actor {
    sub: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (issuer, audience, token) = match (args.next(), args.next(), args.next()) {
        (Some(i), Some(a), Some(t)) => (i, a, t),
        _ => return Err("usage: verify_minted_token PUBLIC_URL AUDIENCE TOKEN".into()),
    };
    let jwks: JwkSet = reqwest::get(format!("{issuer}/.well-known/jwks.json"))
        .await?
        .json()
        .await?;

    let header = decode_header(&token)?;
    let kid = header.kid.ok_or("the token names no key")?;
    let jwk = jwks
        .find(&kid)
        .ok_or("unknown key: refetch the JWKS once")?;
    // The algorithm comes from the key gatehouse published, never from the token alone.
    let alg: Algorithm = jwk
        .common
        .key_algorithm
        .ok_or("the key states no algorithm")?
        .to_string()
        .parse()?;
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&issuer]);
    validation.set_audience(&[&audience]);
    let claims = decode::<Claims>(&token, &DecodingKey::from_jwk(jwk)?, &validation)?.claims;

    println!(
        "user {} <{}> org {:?} roles {:?}",
        claims.sub, claims.email, claims.org, claims.roles
    );
    if let Some(act) = claims.act {
        println!("impersonated by {}", act.sub);
    }
    Ok(())
}
