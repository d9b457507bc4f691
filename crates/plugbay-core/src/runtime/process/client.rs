//! The host's client of a plugin program, over whichever transport the handshake chose.

use std::time::Duration;

use plugbay_proto::plugin::v1 as pb;
use plugbay_proto::plugin::v1::plugin_service_client::PluginServiceClient;
use tonic::transport::Channel;

use super::framed::{self, FramedClient};

/// A connection to one plugin program. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub(super) enum PluginClient {
    /// gRPC over HTTP/2.
    Grpc(PluginServiceClient<Channel>),
    /// Length-prefixed frames (see `framed`).
    Framed(FramedClient),
}

/// A gRPC request with an optional deadline (`grpc-timeout`).
fn request<T>(message: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

macro_rules! rpc {
    ($name:ident, $kind:expr, $request:ty, $response:ty) => {
        /// One RPC; `timeout` is passed on to the plugin.
        pub(super) async fn $name(
            &self,
            message: $request,
            timeout: Option<Duration>,
        ) -> Result<$response, tonic::Status> {
            match self {
                PluginClient::Grpc(client) => {
                    client.clone().$name(request(message, timeout)).await.map(tonic::Response::into_inner)
                }
                PluginClient::Framed(client) => client.rpc($kind, &message, timeout).await,
            }
        }
    };
}

impl PluginClient {
    /// Resolves, with the reason, when the connection breaks for good (framed only: a gRPC
    /// channel reconnects, and the program's exit is watched separately).
    pub(super) fn closed(&self) -> super::BoxFuture<'static, String> {
        match self {
            PluginClient::Grpc(_) => Box::pin(std::future::pending()),
            PluginClient::Framed(client) => Box::pin(client.closed()),
        }
    }

    rpc!(describe, framed::DESCRIBE, pb::DescribeRequest, pb::DescribeResponse);
    rpc!(init, framed::INIT, pb::InitRequest, pb::InitResponse);
    rpc!(call, framed::CALL, pb::CallRequest, pb::CallResponse);
    rpc!(on_event, framed::ON_EVENT, pb::EventRequest, pb::EventResponse);
    rpc!(shutdown, framed::SHUTDOWN, pb::ShutdownRequest, pb::ShutdownResponse);
    rpc!(snapshot, framed::SNAPSHOT, pb::SnapshotRequest, pb::SnapshotResponse);
    rpc!(restore, framed::RESTORE, pb::RestoreRequest, pb::RestoreResponse);
}
