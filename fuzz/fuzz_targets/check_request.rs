//! `CheckRequest` → `AuthzRequest` from arbitrary protobuf bytes. Properties: no panic; an
//! accepted request has an upper-case method; its path is refused by the gate's normalization
//! (a 400) unless it starts with `/` (Envoy sends an empty one for CONNECT).
#![no_main]

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use gatehouse::policy::normalize;
use gatehouse::server::grpc::authz_request;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(check) = CheckRequest::decode(data) else { return };
    if let Ok(request) = authz_request(check) {
        assert_eq!(request.method, request.method.to_ascii_uppercase());
        if normalize(&request.path).is_ok() {
            assert!(request.path.starts_with('/'), "{:?}", request.path);
        }
    }
});
