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
use crate::runtime::{HostCallbacks, LogLevel};

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
    /// Listens on `path` and serves in the background.
    pub(super) fn bind(path: &Path, plugin: &str) -> Result<Server> {
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
        tokio::spawn(async move {
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

/// A plugbay error as a gRPC status with the same code.
fn status(error: Error) -> tonic::Status {
    tonic::Status::new(tonic::Code::from_i32(error.code().grpc()), error.to_string())
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
            .ok_or_else(|| status(Error::unavailable("the host API is available once init starts")))
    }
}

#[tonic::async_trait]
impl HostService for Callbacks {
    async fn log(
        &self,
        request: tonic::Request<pb::LogRequest>,
    ) -> std::result::Result<tonic::Response<pb::LogResponse>, tonic::Status> {
        let request = request.into_inner();
        let level =
            match pb::log_request::Level::try_from(request.level).unwrap_or(pb::log_request::Level::Info) {
                pb::log_request::Level::Error => LogLevel::Error,
                pb::log_request::Level::Warn => LogLevel::Warn,
                pb::log_request::Level::Debug => LogLevel::Debug,
                pb::log_request::Level::Trace => LogLevel::Trace,
                _ => LogLevel::Info,
            };
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
            .map_err(status)?;
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
            return Err(status(Error::new(
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
        let response = callbacks.invoke_async(&self.0.plugin, call).await.map_err(status)?;
        Ok(tonic::Response::new(pb::InvokeResponse {
            payload: response.bytes.to_vec(),
            content_type: response.content_type.as_str().to_owned(),
        }))
    }
}
