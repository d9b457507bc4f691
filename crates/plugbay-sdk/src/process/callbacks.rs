//! A process plugin's host API (log, publish, invoke): over the framed connection itself
//! when the host takes host calls there, else over gRPC to the host's callback socket
//! (`PLUGBAY_HOST_SOCKET`), connected on first use.

use std::path::PathBuf;
use std::sync::Arc;

use plugbay_proto::plugin::v1 as pb;
use plugbay_proto::plugin::v1::host_service_client::HostServiceClient;
use tokio::sync::OnceCell;
use tonic::transport::Channel;

use plugbay_proto::framed::Kind;

use super::MAX_MESSAGE_BYTES;
use super::framed::Link;
use crate::backend::HostApi;
use crate::types::{Input, LogLevel, PluginError, Response};

/// The host API of a process plugin. Logging never waits for the host.
pub(crate) struct ProcessHost {
    route: Route,
    handle: tokio::runtime::Handle,
}

/// Where host API requests go.
enum Route {
    /// `HostService` over gRPC on the callback socket; log lines are sent in order by a task.
    Grpc { connection: Arc<Connection>, logs: tokio::sync::mpsc::Sender<pb::LogRequest> },
    /// Frames on the plugin's framed connection (feature `host-calls`).
    Framed(Arc<Link>),
}

/// The connection to the host's callback socket, made on first use (most plugins never
/// call back, and a start should not pay for a connection it does not need).
struct Connection {
    socket: PathBuf,
    client: OnceCell<HostServiceClient<Channel>>,
}

impl Connection {
    /// The client, connecting the first time.
    async fn client(&self) -> Result<HostServiceClient<Channel>, tonic::Status> {
        self.client
            .get_or_try_init(|| async {
                plugbay_proto::connect_unix(&self.socket)
                    .await
                    .map(|channel| {
                        HostServiceClient::new(channel)
                            .max_decoding_message_size(MAX_MESSAGE_BYTES)
                            .max_encoding_message_size(MAX_MESSAGE_BYTES)
                    })
                    .map_err(|error| {
                        tonic::Status::unavailable(format!(
                            "cannot reach the host's callback socket: {error}"
                        ))
                    })
            })
            .await
            .cloned()
    }
}

/// Log lines queued for the host (over gRPC) before new ones are dropped.
const LOG_QUEUE: usize = 1024;

impl ProcessHost {
    /// A host API over gRPC to the callback socket at `socket`; log lines are sent in order
    /// by a task on `handle`.
    pub(super) fn grpc(socket: PathBuf, handle: tokio::runtime::Handle) -> ProcessHost {
        let connection = Arc::new(Connection { socket, client: OnceCell::new() });
        let (logs, mut queue) = tokio::sync::mpsc::channel::<pb::LogRequest>(LOG_QUEUE);
        let sender = connection.clone();
        handle.spawn(async move {
            while let Some(line) = queue.recv().await {
                if let Ok(mut client) = sender.client().await {
                    let _ = client.log(line).await;
                }
            }
        });
        ProcessHost { route: Route::Grpc { connection, logs }, handle }
    }

    /// A host API over the framed connection `link`.
    pub(super) fn framed(link: Arc<Link>, handle: tokio::runtime::Handle) -> ProcessHost {
        ProcessHost { route: Route::Framed(link), handle }
    }

    fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        // Plugin code runs inside `block_in_place` (see `Service::blocking`) or on threads of
        // its own, never as a runtime worker, so blocking on the runtime here is allowed.
        self.handle.block_on(future)
    }
}

impl HostApi for ProcessHost {
    fn log(&self, level: LogLevel, message: &str) {
        let request =
            pb::LogRequest { level: plugbay_proto::log_level_number(level), message: message.to_owned() };
        match &self.route {
            Route::Grpc { logs, .. } => {
                let _ = logs.try_send(request);
            }
            Route::Framed(link) => link.log(&request),
        }
    }

    fn publish(
        &self,
        topic: &str,
        action: &str,
        payload: &[u8],
        content_type: &str,
    ) -> Result<(), PluginError> {
        let request = pb::PublishRequest {
            topic: topic.to_owned(),
            action: action.to_owned(),
            payload: payload.to_vec(),
            content_type: content_type.to_owned(),
        };
        let published: Result<pb::PublishResponse, tonic::Status> = match &self.route {
            Route::Grpc { connection, .. } => self.block_on(async {
                connection.client().await?.publish(request).await.map(tonic::Response::into_inner)
            }),
            Route::Framed(link) => self.block_on(link.request(Kind::Publish, &request)),
        };
        published.map(drop).map_err(PluginError::from)
    }

    fn invoke(&self, target: &str, method: &str, input: Input<'_>) -> Result<Response, PluginError> {
        let request = pb::InvokeRequest {
            target: target.to_owned(),
            method: method.to_owned(),
            payload: input.bytes.to_vec(),
            content_type: input.content_type.to_owned(),
        };
        let response: pb::InvokeResponse = match &self.route {
            Route::Grpc { connection, .. } => self.block_on(async {
                connection.client().await?.invoke(request).await.map(tonic::Response::into_inner)
            }),
            Route::Framed(link) => self.block_on(link.request(Kind::Invoke, &request)),
        }
        .map_err(PluginError::from)?;
        Ok(Response { bytes: response.payload, content_type: response.content_type })
    }
}
