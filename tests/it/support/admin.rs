//! The admin API (`/admin/v1/*`) of a running gatehouse, with its admin token.

use std::net::SocketAddr;

use super::client::{Response, send};

/// The admin token the tests configure (`[admin] token_env`).
pub const TOKEN: &str = "test-admin-token-0123456789";
pub const TOKEN_VAR: &str = "GH_TEST_ADMIN_TOKEN";

/// The `[admin]` section naming [`TOKEN_VAR`]; pass `(TOKEN_VAR, TOKEN)` in the environment.
pub const SECTION: &str = "\n[admin]\ntoken_env = \"GH_TEST_ADMIN_TOKEN\"\n";

pub fn env() -> (&'static str, &'static str) {
    (TOKEN_VAR, TOKEN)
}

pub struct Api {
    pub addr: SocketAddr,
    pub token: String,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            token: TOKEN.to_owned(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        json: Option<serde_json::Value>,
    ) -> Response {
        let auth = format!("Bearer {}", self.token);
        let body = json.map(|j| ("application/json", j.to_string().into_bytes()));
        send(self.addr, method, path, &[("authorization", &auth)], body).await
    }

    /// A call that must answer `status`; returns the JSON body.
    pub async fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        json: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let r = self.call(method, path, json).await;
        assert_eq!(r.status, status, "{method} {path}: {r:?}");
        r.json()
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.expect(200, "GET", path, None).await
    }

    /// A session for `email` (the user made if new): the token.
    pub async fn session(&self, email: &str) -> String {
        let created = self
            .expect(
                201,
                "POST",
                "/admin/v1/sessions",
                Some(serde_json::json!({ "user": email })),
            )
            .await;
        created["token"].as_str().expect("token").to_owned()
    }

    /// A session for `email` (the user made if new), and the user enabled: the token.
    pub async fn enabled_session(&self, email: &str) -> String {
        let token = self.session(email).await;
        self.expect(
            200,
            "POST",
            &format!("/admin/v1/users/{email}/enable"),
            None,
        )
        .await;
        token
    }
}
