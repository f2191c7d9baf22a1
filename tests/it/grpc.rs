//! The gRPC edge called directly, as Envoy would: `Authorization/Check` and
//! `grpc.health.v1.Health/Check`.

use crate::support;

use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use support::{Backend, Gatehouse, TestDb};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn check(path: &str, headers: &[(&str, &[u8])]) -> CheckRequest {
    support::check::check_request("gw.test", path, headers)
}

async fn start(db: &TestDb, dir: &std::path::Path) -> Gatehouse {
    let urls = support::StackUrls {
        base: "http://gw.test".into(),
        database: db.url.clone(),
        issuers: vec![],
    };
    Gatehouse::start(
        dir,
        &format!("{}{}", support::base_config(&urls), support::ROUTES),
        &[],
    )
    .await
}

#[tokio::test]
async fn check_answers_and_health_is_serving() {
    let db = TestDb::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let gh = start(&db, dir.path()).await;
    let token = gh.enabled_session("alice@acme.test", &[]).await;
    let endpoint = format!("http://{}", gh.grpc);
    let mut client = AuthorizationClient::connect(endpoint.clone())
        .await
        .unwrap();

    let cookie = format!("gatehouse={token}");
    let allowed = client
        .check(check(
            "/app",
            &[
                ("cookie", cookie.as_bytes()),
                ("cookie", b"other=1"),
                ("x-gatehouse-roles", b"root"),
                ("x-gatehouse-org-id", b"spoofed"),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allowed.status.unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = allowed.http_response else {
        panic!("expected an OK response");
    };
    let set: Vec<(String, String)> = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref().map(|h| (h.key.clone(), h.value.clone())))
        .collect();
    let get = |k: &str| set.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("x-gatehouse-email").as_deref(), Some("alice@acme.test"));
    // Alice has no roles and no org: no header for either (not an empty one), and the spoofed
    // copies are removed instead.
    assert_eq!(get("x-gatehouse-roles"), None, "{set:?}");
    assert_eq!(get("x-gatehouse-org-id"), None, "{set:?}");
    assert_eq!(get("cookie").as_deref(), Some("other=1"));
    // Set headers overwrite the spoofed ones; a spoofed name gatehouse does not set is removed,
    // and nothing it sets is also in the remove list (Envoy applies removals last).
    let mut removed = ok.headers_to_remove.clone();
    removed.sort();
    assert_eq!(removed, ["x-gatehouse-org-id", "x-gatehouse-roles"]);
    assert!(
        set.iter().all(|(n, _)| !removed.contains(n)),
        "{set:?} {removed:?}"
    );
    for h in &ok.headers {
        assert_eq!(h.append_action, 2, "OVERWRITE_IF_EXISTS_OR_ADD");
    }

    let impersonation_spoof = client
        .check(check(
            "/app",
            &[
                ("cookie", cookie.as_bytes()),
                ("x-gatehouse-impersonator-id", b"x"),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(HttpResponse::OkResponse(ok)) = impersonation_spoof.http_response else {
        panic!("expected an OK response");
    };
    // The session cookie was the only cookie: the header goes.
    assert_eq!(
        ok.headers_to_remove,
        vec![
            "x-gatehouse-impersonator-id".to_owned(),
            "cookie".to_owned()
        ]
    );

    let denied = client
        .check(check("/app", &[("accept", b"text/html")]))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(denied.status.unwrap().code, 0);
    let Some(HttpResponse::DeniedResponse(d)) = denied.http_response else {
        panic!("expected a denied response");
    };
    assert_eq!(d.status.unwrap().code, 302);
    assert!(
        d.headers
            .iter()
            .any(|h| h.header.as_ref().is_some_and(|h| h.key == "location"))
    );

    // Malformed input is a clear 400, not an error status.
    let empty = client
        .check(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let Some(HttpResponse::DeniedResponse(d)) = empty.http_response else {
        panic!("expected a denied response");
    };
    assert_eq!(d.status.unwrap().code, 400);

    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}
