//! A gRPC ext_authz server that allows everything without looking: the floor any ext_authz
//! service can reach on this machine. `bench/run` measures it beside gatehouse, so the report
//! separates what the ext_authz round trip itself costs from what gatehouse adds.

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

struct Allow;

#[tonic::async_trait]
impl Authorization for Allow {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..Default::default()
        }))
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9292".into())
        .parse()
        .expect("listen address");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(AuthorizationServer::new(Allow))
            .serve(addr)
            .await
            .expect("serve");
    });
}
