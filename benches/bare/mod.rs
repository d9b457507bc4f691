//! The daemon's baseline: a bare axum echo server (`POST /echo`) and a bare tonic echo server
//! (`plugbay.plugin.v1.HostService/Invoke`, the same wire format as the daemon's `Invoke`),
//! default settings, on ephemeral loopback ports. Shared by the `bare_servers` example (load
//! from h2load) and the `daemon_load` benchmark (which runs them in a child process).

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use plugbay_proto::plugin::v1::host_service_server::{HostService, HostServiceServer};
use plugbay_proto::plugin::v1::{
    InvokeRequest, InvokeResponse, LogRequest, LogResponse, PublishRequest, PublishResponse,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// The route of the axum echo.
pub const HTTP_PATH: &str = "/echo";

/// Answers `Invoke` with its own payload; nothing else.
struct Echo;

#[tonic::async_trait]
impl HostService for Echo {
    async fn log(&self, _request: Request<LogRequest>) -> Result<Response<LogResponse>, Status> {
        Err(Status::unimplemented("echo only"))
    }

    async fn publish(&self, _request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        Err(Status::unimplemented("echo only"))
    }

    async fn invoke(&self, request: Request<InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(InvokeResponse { payload: request.payload, content_type: request.content_type }))
    }
}

/// The axum echo: the body back with its content type.
async fn echo(headers: HeaderMap, body: Bytes) -> (HeaderMap, Bytes) {
    let mut reply = HeaderMap::new();
    if let Some(content_type) = headers.get(axum::http::header::CONTENT_TYPE) {
        reply.insert(axum::http::header::CONTENT_TYPE, content_type.clone());
    }
    (reply, body)
}

/// Binds both servers, prints `bare http=ADDR grpc=ADDR` (one line, flushed), then serves
/// until the process is killed.
///
/// # Errors
/// When a port cannot be bound or a server fails.
pub async fn run() -> std::io::Result<()> {
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    println!("bare http={} grpc={}", http.local_addr()?, grpc.local_addr()?);
    let app = Router::new().route(HTTP_PATH, post(echo));
    let http = tokio::spawn(async move { axum::serve(http, app).await });
    let grpc = tonic::transport::Server::builder()
        .add_service(HostServiceServer::new(Echo))
        .serve_with_incoming(TcpListenerStream::new(grpc));
    let (http, grpc) = tokio::join!(http, grpc);
    http.map_err(std::io::Error::other)??;
    grpc.map_err(std::io::Error::other)
}
