//! The host's client of a plugin program, over whichever transport the handshake chose, and
//! [`RpcError`], what an RPC's failure is as data.

use std::time::Duration;

use plugbay_proto::framed::Kind;
use plugbay_proto::plugin::v1 as pb;
use plugbay_proto::plugin::v1::plugin_service_client::PluginServiceClient;
use tonic::transport::Channel;

use super::framed::FramedClient;

/// A connection to one plugin program. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub(super) enum PluginClient {
    /// gRPC over HTTP/2.
    Grpc(PluginServiceClient<Channel>),
    /// Length-prefixed frames (see `framed`).
    Framed(FramedClient),
}

/// Why an RPC to a plugin failed.
#[derive(Debug)]
pub(super) enum RpcError {
    /// The plugin answered with this status.
    Plugin(tonic::Status),
    /// No answer within the RPC's timeout (the timeout, when known).
    Timeout(Option<Duration>),
    /// The connection failed or closed (most likely the program died); why, for people.
    Transport(String),
}

impl RpcError {
    /// Classifies a status from tonic's client by its typed source, never by its text: a
    /// status tonic made from a local error carries that error as its source (a
    /// [`tonic::TimeoutExpired`] for the client's deadline; a transport, hyper, h2 or I/O
    /// error otherwise), while a status the plugin sent has none.
    pub(super) fn from_grpc(status: tonic::Status) -> RpcError {
        let Some(source) = std::error::Error::source(&status) else {
            return RpcError::Plugin(status);
        };
        let mut cause = Some(source);
        while let Some(error) = cause {
            if error.is::<tonic::TimeoutExpired>() {
                return RpcError::Timeout(None);
            }
            cause = error.source();
        }
        RpcError::Transport(format!("{}: {source}", status.message()))
    }

    /// The same error, naming `timeout` if it is a timeout that does not name its own.
    fn timed_out_after(self, timeout: Option<Duration>) -> RpcError {
        match self {
            RpcError::Timeout(None) => RpcError::Timeout(timeout),
            other => other,
        }
    }

    /// The gRPC code the plugin answered with, if it answered.
    pub(super) fn plugin_code(&self) -> Option<tonic::Code> {
        match self {
            RpcError::Plugin(status) => Some(status.code()),
            _ => None,
        }
    }
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
        ) -> Result<$response, RpcError> {
            match self {
                PluginClient::Grpc(client) => client
                    .clone()
                    .$name(request(message, timeout))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| RpcError::from_grpc(status).timed_out_after(timeout)),
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

    rpc!(describe, Kind::Describe, pb::DescribeRequest, pb::DescribeResponse);
    rpc!(init, Kind::Init, pb::InitRequest, pb::InitResponse);
    rpc!(call, Kind::Call, pb::CallRequest, pb::CallResponse);
    rpc!(on_event, Kind::OnEvent, pb::EventRequest, pb::EventResponse);
    rpc!(shutdown, Kind::Shutdown, pb::ShutdownRequest, pb::ShutdownResponse);
    rpc!(snapshot, Kind::Snapshot, pb::SnapshotRequest, pb::SnapshotResponse);
    rpc!(restore, Kind::Restore, pb::RestoreRequest, pb::RestoreResponse);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_by_their_source_not_their_text() {
        // A plugin may say anything, "transport error" and "Timeout" included.
        for said in ["transport error: broken pipe", "Timeout expired"] {
            let status = tonic::Status::unknown(said);
            assert!(matches!(RpcError::from_grpc(status), RpcError::Plugin(_)), "{said}");
        }
        let timeout = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(timeout.code(), tonic::Code::Cancelled);
        assert!(matches!(RpcError::from_grpc(timeout), RpcError::Timeout(None)));
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe");
        let broken = tonic::Status::from_error(Box::new(io));
        assert!(matches!(RpcError::from_grpc(broken), RpcError::Transport(why) if why.contains("pipe")));
    }
}
