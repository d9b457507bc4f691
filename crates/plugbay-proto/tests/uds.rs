//! gRPC over a Unix socket with the tonic this crate is built on: a `PluginService` server and
//! the `grpc.health.v1` service on a `tokio::net::UnixListener`, reached through
//! [`plugbay_proto::connect_unix`]. This is the pattern the process runtime (host side) and the
//! SDK (plugin side) follow.

use std::collections::HashMap;
use std::path::Path;

use plugbay_proto::PLUGIN_SERVICE_NAME;
use plugbay_proto::plugin::v1::plugin_service_client::PluginServiceClient;
use plugbay_proto::plugin::v1::plugin_service_server::{PluginService, PluginServiceServer};
use plugbay_proto::plugin::v1::{
    CallRequest, CallResponse, DescribeRequest, DescribeResponse, EventRequest, EventResponse, InitRequest,
    InitResponse, MethodList, RestoreRequest, RestoreResponse, ShutdownRequest, ShutdownResponse,
    SnapshotRequest, SnapshotResponse,
};
use plugbay_proto::tonic::transport::Server;
use plugbay_proto::tonic::{Code, Request, Response, Status};
use plugbay_proto::tonic_health::ServingStatus;
use plugbay_proto::tonic_health::pb::HealthCheckRequest;
use plugbay_proto::tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use plugbay_proto::tonic_health::pb::health_client::HealthClient;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

/// The largest gRPC message either side accepts here: tonic refuses messages over 4 MiB by
/// default (with `out_of_range`), below plugbay's 16 MiB default payload limit, so both the
/// plugin's server and the host's client raise it (payload plus room for the other fields).
const MAX_MESSAGE_BYTES: usize = (16 << 20) + (64 << 10);

/// A plugin that provides `echo@1` with one method, `echo`.
struct Echo;

#[plugbay_proto::tonic::async_trait]
impl PluginService for Echo {
    async fn describe(&self, _: Request<DescribeRequest>) -> Result<Response<DescribeResponse>, Status> {
        let provides =
            HashMap::from([("echo@1".to_owned(), MethodList { methods: vec!["echo".to_owned()] })]);
        Ok(Response::new(DescribeResponse { id: "echo".to_owned(), version: "1.0.0".to_owned(), provides }))
    }

    async fn init(&self, _: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        Ok(Response::new(InitResponse {}))
    }

    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        let request = request.into_inner();
        match request.method.as_str() {
            "echo" => {
                Ok(Response::new(CallResponse { payload: request.payload, content_type: String::new() }))
            }
            other => Err(Status::not_found(format!("no method {other:?}"))),
        }
    }

    async fn on_event(&self, _: Request<EventRequest>) -> Result<Response<EventResponse>, Status> {
        Ok(Response::new(EventResponse {}))
    }

    async fn shutdown(&self, _: Request<ShutdownRequest>) -> Result<Response<ShutdownResponse>, Status> {
        Ok(Response::new(ShutdownResponse {}))
    }

    async fn snapshot(&self, _: Request<SnapshotRequest>) -> Result<Response<SnapshotResponse>, Status> {
        Err(Status::unimplemented("this plugin keeps no state"))
    }

    async fn restore(&self, _: Request<RestoreRequest>) -> Result<Response<RestoreResponse>, Status> {
        Err(Status::unimplemented("this plugin keeps no state"))
    }
}

/// Serves `PluginService` and `grpc.health.v1` on the Unix socket `path`, the way a process
/// plugin does (the SDK's `serve()`):
///
/// 1. bind a [`UnixListener`] on the path the host assigned (`PLUGBAY_SOCKET`);
/// 2. wrap it in tokio-stream's [`UnixListenerStream`], a stream of accepted connections;
/// 3. build one tonic [`Server`] with the health service and the plugin service and run it with
///    `serve_with_incoming_shutdown(stream, signal)` (plain HTTP/2, no TLS);
/// 4. mark `plugbay.plugin.v1.PluginService` `SERVING` on the health reporter once ready.
///
/// The listener is bound before this returns, so a client may connect at once (a real plugin
/// prints its handshake line at this point). The server stops when `stop` is sent or dropped.
async fn serve_unix(
    path: &Path,
) -> (JoinHandle<Result<(), plugbay_proto::tonic::transport::Error>>, oneshot::Sender<()>) {
    let listener = UnixListener::bind(path).expect("bind the plugin socket");
    let (reporter, health) = plugbay_proto::tonic_health::server::health_reporter();
    reporter.set_service_status(PLUGIN_SERVICE_NAME, ServingStatus::Serving).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(health)
        .add_service(PluginServiceServer::new(Echo).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = stopped.await;
        });
    (tokio::spawn(server), stop)
}

#[tokio::test]
async fn describe_call_and_health_over_a_unix_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plugin.sock");
    let (server, stop) = serve_unix(&path).await;

    // Host side: one channel, shared by the health client and the plugin client.
    let channel = plugbay_proto::connect_unix(&path).await.expect("connect over the Unix socket");

    let mut health = HealthClient::new(channel.clone());
    let checked = health
        .check(HealthCheckRequest { service: PLUGIN_SERVICE_NAME.to_owned() })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(checked.status(), WireStatus::Serving);
    let unknown = health
        .check(HealthCheckRequest { service: "no.such.Service".to_owned() })
        .await
        .expect_err("an unknown service is not found");
    assert_eq!(unknown.code(), Code::NotFound);

    let mut plugin = PluginServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let described = plugin.describe(DescribeRequest {}).await.expect("describe").into_inner();
    assert_eq!(described.id, "echo");
    assert_eq!(described.version, "1.0.0");
    assert_eq!(described.provides["echo@1"].methods, ["echo"]);

    // Concurrent calls on one connection, each with a deadline (sent as grpc-timeout).
    let calls = (0..8u8).map(|n| {
        let mut plugin = plugin.clone();
        async move {
            let mut request = Request::new(CallRequest {
                method: "echo".to_owned(),
                payload: vec![n],
                content_type: "application/octet-stream".to_owned(),
            });
            request.set_timeout(std::time::Duration::from_secs(5));
            plugin.call(request).await.map(|response| response.into_inner().payload)
        }
    });
    let mut tasks = Vec::new();
    for call in calls {
        tasks.push(tokio::spawn(call));
    }
    for (n, task) in (0..8u8).zip(tasks) {
        assert_eq!(task.await.expect("join").expect("call"), [n]);
    }

    // Over tonic's 4 MiB default, fine with the raised limits on both sides.
    let big = vec![7u8; 5 << 20];
    let echoed = plugin
        .call(CallRequest { method: "echo".to_owned(), payload: big.clone(), content_type: String::new() })
        .await
        .expect("a 5 MiB call")
        .into_inner();
    assert_eq!(echoed.payload, big);

    // A plugin error arrives as its gRPC status code and message.
    let error = plugin
        .call(CallRequest { method: "nope".to_owned(), payload: Vec::new(), content_type: String::new() })
        .await
        .expect_err("unknown method");
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(error.message(), "no method \"nope\"");

    drop(stop);
    server.await.expect("join").expect("server stopped cleanly");
}

#[tokio::test]
async fn connecting_to_a_missing_socket_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let result = plugbay_proto::connect_unix(dir.path().join("absent.sock")).await;
    assert!(result.is_err());
}

#[test]
fn descriptor_set_names_the_package() {
    let needle = b"plugbay.plugin.v1";
    assert!(plugbay_proto::FILE_DESCRIPTOR_SET.windows(needle.len()).any(|window| window == needle));
}
