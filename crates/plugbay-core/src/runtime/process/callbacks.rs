//! The host API for one process plugin: a `HostService` gRPC server on the socket the host
//! assigned that program (`PLUGBAY_HOST_SOCKET`). The socket identifies the plugin, so a
//! plugin cannot speak for another. A framed plugin may send the same requests on its
//! framed connection instead (`framed`), served by the same [`Callbacks`].

use std::path::Path;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use plugbay_proto::plugin::v1 as pb;
use plugbay_proto::plugin::v1::host_service_server::{HostService, HostServiceServer};
use tokio::sync::oneshot;

use crate::call::{Call, ContentType, Payload};
use crate::error::{Error, Result};
use crate::runtime::HostCallbacks;

/// The server; stops when closed or dropped.
pub(super) struct Server {
    state: Arc<State>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

struct State {
    plugin: String,
    /// Set when the instance is initialised; until then callbacks answer `unavailable`.
    callbacks: OnceLock<Arc<dyn HostCallbacks>>,
    /// The depths ([`Call::depth`]) of the host's calls this program is serving now.
    serving: Mutex<Vec<u32>>,
}

impl State {
    /// The depth an `Invoke` from this program runs at: one deeper than the deepest call
    /// the program is serving. Requests on one connection do not say which call they
    /// belong to, and the host does not take the program's word for it, so a loop through
    /// process plugins deepens at every turn and meets `max_call_depth` like any other.
    fn invoke_depth(&self) -> u32 {
        self.serving.lock().iter().copied().max().unwrap_or(0)
    }
}

/// One host call in flight to the program, counted in [`State::serving`] until dropped.
pub(super) struct Serving {
    state: Arc<State>,
    depth: u32,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let mut serving = self.state.serving.lock();
        if let Some(at) = serving.iter().position(|&depth| depth == self.depth) {
            serving.swap_remove(at);
        }
    }
}

impl Server {
    /// Listens on `path` and serves in the background, on `handle`.
    pub(super) fn bind(path: &Path, plugin: &str, handle: &tokio::runtime::Handle) -> Result<Server> {
        // Registered with `handle`'s reactor, whichever runtime the caller runs on.
        let _entered = handle.enter();
        let listener = tokio::net::UnixListener::bind(path).map_err(|error| {
            Error::internal(format!("cannot listen for host callbacks on {}: {error}", path.display()))
        })?;
        let state = Arc::new(State {
            plugin: plugin.to_owned(),
            callbacks: OnceLock::new(),
            serving: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let service = HostServiceServer::new(Callbacks(state.clone()))
            .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(super::MAX_MESSAGE_BYTES);
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let plugin = plugin.to_owned();
        handle.spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(plugin, "the host callback server stopped: {error}");
            }
        });
        Ok(Server { state, stop: Mutex::new(Some(stop)) })
    }

    /// Starts answering with `callbacks`.
    pub(super) fn serve(&self, callbacks: Arc<dyn HostCallbacks>) {
        let _ = self.state.callbacks.set(callbacks);
    }

    /// Counts a call of `depth` as served by the program until the guard drops, so the
    /// program's own calls through the host run one deeper.
    pub(super) fn serving(&self, depth: u32) -> Serving {
        self.state.serving.lock().push(depth);
        Serving { state: self.state.clone(), depth }
    }

    /// The service, for host API requests on the plugin's framed connection.
    pub(super) fn service(&self) -> Callbacks {
        Callbacks(self.state.clone())
    }

    /// Stops the server (idempotent).
    pub(super) fn close(&self) {
        if let Some(stop) = self.stop.lock().take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close();
    }
}

/// `HostService` for one program, over gRPC on its callback socket or over its framed
/// connection. Cheap to clone.
#[derive(Clone)]
pub(super) struct Callbacks(Arc<State>);

impl Callbacks {
    fn callbacks(&self) -> std::result::Result<&Arc<dyn HostCallbacks>, tonic::Status> {
        self.0
            .callbacks
            .get()
            .ok_or_else(|| Error::unavailable("the host API is available once init starts").into())
    }
}

#[tonic::async_trait]
impl HostService for Callbacks {
    async fn log(
        &self,
        request: tonic::Request<pb::LogRequest>,
    ) -> std::result::Result<tonic::Response<pb::LogResponse>, tonic::Status> {
        let request = request.into_inner();
        let level = plugbay_proto::log_level(request.level);
        let message = request.message.as_bytes();
        let message = super::output::printable(&message[..message.len().min(super::output::MAX_LINE)]);
        self.callbacks()?.log(&self.0.plugin, level, &message);
        Ok(tonic::Response::new(pb::LogResponse {}))
    }

    async fn publish(
        &self,
        request: tonic::Request<pb::PublishRequest>,
    ) -> std::result::Result<tonic::Response<pb::PublishResponse>, tonic::Status> {
        let request = request.into_inner();
        let payload =
            Payload::with_type(Bytes::from(request.payload), ContentType::new(request.content_type));
        self.callbacks()?
            .publish(&self.0.plugin, &request.topic, &request.action, payload)
            .map_err(tonic::Status::from)?;
        Ok(tonic::Response::new(pb::PublishResponse {}))
    }

    async fn invoke(
        &self,
        request: tonic::Request<pb::InvokeRequest>,
    ) -> std::result::Result<tonic::Response<pb::InvokeResponse>, tonic::Status> {
        let callbacks = self.callbacks()?;
        let request = request.into_inner();
        let payload =
            Payload::with_type(Bytes::from(request.payload), ContentType::new(request.content_type));
        let call = Call::new(&request.target, request.method, payload).nested_in(self.0.invoke_depth());
        let response = callbacks.invoke_async(&self.0.plugin, call).await.map_err(tonic::Status::from)?;
        Ok(tonic::Response::new(pb::InvokeResponse {
            payload: response.bytes.to_vec(),
            content_type: response.content_type.as_str().to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use plugbay_proto::plugin::v1::host_service_client::HostServiceClient;

    use super::*;

    #[test]
    fn the_callback_server_runs_on_the_hosts_runtime_not_the_callers() {
        let host =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.sock");
        // Bound from a caller's runtime that is gone right after.
        let caller = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let server = caller.block_on(async { Server::bind(&path, "fixture", host.handle()) }).unwrap();
        drop(caller);
        let answer = host.block_on(async {
            let channel = plugbay_proto::connect_unix(&path).await.unwrap();
            let request = pb::LogRequest { level: 3, message: "hello".into() };
            tokio::time::timeout(Duration::from_secs(5), HostServiceClient::new(channel).log(request)).await
        });
        let status = answer.expect("the server answers: its task lives on the host's runtime").unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("once init starts"), "{status:?}");
        drop(server);
    }
}
