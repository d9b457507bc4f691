//! The host API for one process plugin: a `HostService` gRPC server on the socket the host
//! assigned that program (`PLUGBAY_HOST_SOCKET`). The socket identifies the plugin, so a
//! plugin cannot speak for another. A framed plugin may send the same requests on its
//! framed connection instead (`framed`), served by the same [`Callbacks`].

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
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
    /// `Invoke`s from this program still in flight. A process plugin that calls itself
    /// (directly or in a ring) holds one more per level, so this bounds recursion through
    /// the host, as well as a program flooding the host with calls.
    invokes: AtomicU32,
}

/// `Invoke`s one program may have in flight through the host: [`MAX_INVOKES_PER_DEPTH`]
/// times the host's `max_call_depth`.
const MAX_INVOKES_PER_DEPTH: u32 = 4;

/// Counts one `Invoke` out when dropped.
struct InvokeGuard<'a>(&'a AtomicU32);

impl Drop for InvokeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
            invokes: AtomicU32::new(0),
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
        let limit = callbacks.max_call_depth().saturating_mul(MAX_INVOKES_PER_DEPTH);
        let _counted = InvokeGuard(&self.0.invokes);
        let in_flight = self.0.invokes.fetch_add(1, Ordering::SeqCst) + 1;
        if in_flight > limit {
            return Err(tonic::Status::from(Error::new(
                crate::error::Code::ResourceExhausted,
                format!(
                    "plugin {} has {in_flight} calls through the host in flight, more than {limit} \
                     ({MAX_INVOKES_PER_DEPTH} x max_call_depth): a call loop?",
                    self.0.plugin
                ),
            )));
        }
        let request = request.into_inner();
        let payload =
            Payload::with_type(Bytes::from(request.payload), ContentType::new(request.content_type));
        let call = Call::new(&request.target, request.method, payload);
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
