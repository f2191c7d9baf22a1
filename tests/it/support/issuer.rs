//! A token issuer the test controls: it publishes a discovery document and a JWKS, signs
//! tokens with RSA keys from `tests/fixtures`, rotates its keys and goes down on request.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The issuer's keys: kid and private key (PEM).
pub const KEYS: [(&str, &str); 2] = [
    (
        "issuer-key-1",
        include_str!("../../fixtures/id-token-test-key.pem"),
    ),
    (
        "issuer-key-2",
        include_str!("../../fixtures/other-test-key.pem"),
    ),
];

struct IssuerState {
    /// The key that signs (index into `KEYS`).
    current: usize,
    /// The keys the JWKS lists.
    published: Vec<usize>,
    down: bool,
    /// JWKS documents served.
    jwks_fetches: usize,
}

pub struct TestIssuer {
    pub issuer: String,
    state: Arc<Mutex<IssuerState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn encoding_key(index: usize) -> EncodingKey {
    EncodingKey::from_rsa_pem(KEYS[index].1.as_bytes()).expect("fixture key")
}

pub fn public_jwk(index: usize) -> Value {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(index), Algorithm::RS256).expect("jwk");
    jwk.common.key_id = Some(KEYS[index].0.to_owned());
    serde_json::to_value(jwk).expect("jwk json")
}

#[derive(Clone)]
struct Shared {
    issuer: String,
    state: Arc<Mutex<IssuerState>>,
}

impl TestIssuer {
    pub async fn start() -> Self {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST).await
    }

    /// Listening on `ip` (a network namespace's link, say), port chosen by the system.
    pub async fn start_on(ip: std::net::Ipv4Addr) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("bind issuer");
        let addr = listener.local_addr().expect("issuer addr");
        let issuer = format!("http://{addr}/");
        let state = Arc::new(Mutex::new(IssuerState {
            current: 0,
            published: vec![0],
            down: false,
            jwks_fetches: 0,
        }));
        let shared = Shared {
            issuer: issuer.clone(),
            state: state.clone(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            issuer,
            state,
            task,
        }
    }

    /// Signs `claims` with the current key (RS256, its kid).
    pub fn sign(&self, claims: &Value) -> String {
        let current = self.state.lock().unwrap().current;
        sign_rs256(current, Some(KEYS[current].0), claims)
    }

    /// An access token for `sub`, valid for an hour.
    pub fn access_token(&self, sub: &str, aud: &str, scope: &str) -> String {
        self.sign(&self.claims(sub, aud, scope))
    }

    pub fn claims(&self, sub: &str, aud: &str, scope: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer, "sub": sub, "aud": aud, "scope": scope,
            "iat": now, "nbf": now - 5, "exp": now + 3600,
        })
    }

    /// Signs with the other key from now on and publishes only that one.
    pub fn rotate(&self) {
        let mut state = self.state.lock().unwrap();
        state.current = 1 - state.current;
        state.published = vec![state.current];
    }

    /// How many JWKS documents it has served.
    pub fn jwks_fetches(&self) -> usize {
        self.state.lock().unwrap().jwks_fetches
    }

    /// Answers 503 to everything while down.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }
}

pub fn sign_rs256(key: usize, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, &encoding_key(key)).expect("sign")
}

pub fn now() -> i64 {
    gatehouse::clock::unix_now()
}

async fn discovery(State(s): State<Shared>) -> Response {
    if s.state.lock().unwrap().down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(json!({
        "issuer": s.issuer,
        "jwks_uri": format!("{}jwks", s.issuer),
        "authorization_endpoint": format!("{}authorize", s.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn jwks(State(s): State<Shared>) -> Response {
    let mut state = s.state.lock().unwrap();
    if state.down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    state.jwks_fetches += 1;
    let keys: Vec<Value> = state.published.iter().map(|i| public_jwk(*i)).collect();
    axum::Json(json!({ "keys": keys })).into_response()
}
