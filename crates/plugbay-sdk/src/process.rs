//! Running a [`Plugin`] as a process plugin: [`serve`] speaks the host's handshake and
//! gRPC contract (docs/process-protocol.md), so the same plugin type builds as a native
//! `cdylib` (with `export_plugin!`) or as a program (with `serve`).

use std::path::PathBuf;
use std::sync::Arc;

use plugbay_proto::handshake::{self, COOKIE, TRANSPORT_FRAMED, TRANSPORT_GRPC, env as names};
use plugbay_proto::plugin::v1 as pb;
use plugbay_proto::plugin::v1::plugin_service_server::{PluginService, PluginServiceServer};
use tokio::sync::{OnceCell, watch};

use crate::Plugin;

mod callbacks;
mod framed;
use crate::host::Host;
use crate::types::{ErrorCode, Event, Input, PluginError};
use callbacks::ProcessHost;

/// The protocol version this SDK speaks.
const VERSION: u32 = handshake::PROTOCOL_VERSION;
/// Largest gRPC message sent or received (the host refuses responses over its own
/// `max_payload_bytes` with `resource_exhausted`).
const MAX_MESSAGE_BYTES: usize = plugbay_proto::MAX_MESSAGE_BYTES;

/// Runs `P` as a process plugin until the host asks it to shut down (or dies). Call it from
/// `main`: `fn main() { plugbay_sdk::serve::<MyPlugin>() }`.
///
/// Started by hand (without the host's environment) it prints what it is and exits with
/// status 1.
///
/// The connection is served by an async runtime with one worker thread. Plugin code runs
/// on the thread that read its request, without a hand-off: that thread first gives its
/// worker role to another (tokio's `block_in_place`), so plugin code may block or call the
/// host while other requests are served. Over the framed transport the handshake is
/// printed as soon as the socket listens, before that runtime starts. For the quickest
/// start, link the program statically (docs/process-protocol.md, "Starting fast").
pub fn serve<P: Plugin>() -> ! {
    let code = match std::env::var(names::COOKIE) {
        Ok(cookie) if cookie == COOKIE => match run::<P>() {
            Ok(()) => 0,
            Err(message) => {
                eprintln!("plugbay plugin {}: {message}", P::describe().id);
                1
            }
        },
        _ => {
            let description = P::describe();
            eprintln!(
                "This is plugbay plugin {} {}, a process plugin. It is not meant to be run by hand: \
                 put it in a plugin folder with a plugin.toml (runtime = \"process\") and let plugbay \
                 start it, e.g. `plugbay call <capability> <method> --plugins <folder>`.",
                description.id, description.version
            );
            1
        }
    };
    std::process::exit(code)
}

fn run<P: Plugin>() -> Result<(), String> {
    let offered = env(names::PROTOCOL_VERSIONS)?;
    if !handshake::lists(&offered, &VERSION.to_string()) {
        return Err(format!(
            "no common protocol version: the host offers {offered}, this SDK speaks {VERSION}"
        ));
    }
    let socket = PathBuf::from(env(names::SOCKET)?);
    let host_socket = PathBuf::from(env(names::HOST_SOCKET)?);
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .map_err(|error| format!("cannot listen on {}: {error}", socket.display()))?;
    let transports = std::env::var(names::TRANSPORTS).unwrap_or_default();
    let framed = handshake::lists(&transports, TRANSPORT_FRAMED);
    // A host that takes host API calls on the framed connection says so; an older one
    // does not, and gets them on its callback socket.
    let features = std::env::var(names::FRAMED_FEATURES).unwrap_or_default();
    let host_calls = framed && handshake::lists(&features, plugbay_proto::framed::FEATURE_HOST_CALLS);
    if framed {
        // The socket listens already: the host may connect and send its first request
        // while tokio starts (the kernel queues both), so the two starts overlap.
        println!("{}", handshake::line(VERSION, &socket, TRANSPORT_FRAMED));
    }
    // One worker serves the connection; a request runs plugin code in place after handing
    // the worker role to a thread of the blocking pool (`Service::blocking`).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start tokio: {error}"))?;
    // The first pool thread starts now, while the host connects and asks Describe, not when
    // Init needs it.
    drop(runtime.spawn_blocking(|| {}));
    let served =
        runtime.block_on(run_async::<P>(listener, socket, host_socket, framed.then_some(host_calls)));
    // The process exits next: do not wait for plugin code still running (the replies that
    // had to go out are written).
    runtime.shutdown_background();
    served
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("the host did not set {name}"))
}

/// Serves on `listener` (bound to `socket`, non-blocking) over the framed transport when
/// `framed` is set (the handshake line is printed already; inside, whether the host takes
/// host calls on the connection), else over gRPC; `host_socket` is the host's callback
/// socket.
async fn run_async<P: Plugin>(
    listener: std::os::unix::net::UnixListener,
    socket: PathBuf,
    host_socket: PathBuf,
    framed: Option<bool>,
) -> Result<(), String> {
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|error| format!("cannot listen on {}: {error}", socket.display()))?;
    let (stop, stopped) = watch::channel(false);
    let service = Service::<P> {
        plugin: Arc::new(OnceCell::new()),
        host_socket,
        handle: tokio::runtime::Handle::current(),
        stop,
    };
    if let Some(host_calls) = framed {
        framed::serve(listener, Arc::new(service), host_calls, stopped).await;
        return Ok(());
    }
    let (health_reporter, health_service) = plugbay_proto::tonic_health::server::health_reporter();
    health_reporter.set_serving::<PluginServiceServer<Service<P>>>().await;
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(
            PluginServiceServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            async move {
                let mut stopped = stopped;
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        );
    println!("{}", handshake::line(VERSION, &socket, TRANSPORT_GRPC));
    server.await.map_err(|error| format!("the gRPC server failed: {error}"))
}

/// A plugin's error as a gRPC status: the code's number, the message unchanged.
impl From<PluginError> for tonic::Status {
    fn from(error: PluginError) -> tonic::Status {
        tonic::Status::new(tonic::Code::from_i32(error.code.grpc()), error.message)
    }
}

/// A status from the host as a plugin error with the same code (`internal` for a code
/// plugbay does not use) and message.
impl From<tonic::Status> for PluginError {
    fn from(status: tonic::Status) -> PluginError {
        let code = ErrorCode::from_grpc(status.code() as i32).unwrap_or(ErrorCode::Internal);
        PluginError::new(code, status.message().to_owned())
    }
}

/// The gRPC face of a plugin.
pub(crate) struct Service<P: Plugin> {
    plugin: Arc<OnceCell<P>>,
    host_socket: PathBuf,
    handle: tokio::runtime::Handle,
    stop: watch::Sender<bool>,
}

impl<P: Plugin> Service<P> {
    /// Creates the plugin (Init) with `config`; its host API goes over `link` when given,
    /// else to the callback socket.
    async fn start(&self, config: Vec<u8>, link: Option<Arc<framed::Link>>) -> Result<(), tonic::Status> {
        let host = match link {
            Some(link) => ProcessHost::framed(link, self.handle.clone()),
            None => ProcessHost::grpc(self.host_socket.clone(), self.handle.clone()),
        };
        let host = Host::remote(Arc::new(host));
        let plugin = Self::blocking(move || P::init(host, &config)).await?;
        self.plugin.set(plugin).map_err(|_| tonic::Status::failed_precondition("init was called twice"))
    }

    fn plugin(&self) -> Result<Arc<OnceCell<P>>, tonic::Status> {
        if self.plugin.get().is_none() {
            return Err(tonic::Status::failed_precondition("the plugin is not initialised"));
        }
        Ok(self.plugin.clone())
    }

    /// Runs plugin code on this thread, turning a panic into `internal`. The thread first
    /// hands its worker role to another (`block_in_place`): the plugin may block, or call
    /// the host (which blocks on the runtime), while the connection keeps being served. No
    /// thread hand-off on the request's path: measured, it saves two cross-thread wake-ups
    /// per call (BENCHMARKS.md).
    async fn blocking<T: Send + 'static>(
        body: impl FnOnce() -> Result<T, PluginError> + Send + 'static,
    ) -> Result<T, tonic::Status> {
        let body = std::panic::AssertUnwindSafe(body);
        match tokio::task::block_in_place(move || std::panic::catch_unwind(body)) {
            Ok(result) => result.map_err(tonic::Status::from),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".to_owned());
                Err(tonic::Status::internal(format!("the plugin panicked: {message}")))
            }
        }
    }
}

#[tonic::async_trait]
impl<P: Plugin> PluginService for Service<P> {
    async fn describe(
        &self,
        _request: tonic::Request<pb::DescribeRequest>,
    ) -> Result<tonic::Response<pb::DescribeResponse>, tonic::Status> {
        let description = P::describe();
        Ok(tonic::Response::new(pb::DescribeResponse {
            id: description.id,
            version: description.version,
            provides: description
                .provides
                .into_iter()
                .map(|(capability, methods)| (capability, pb::MethodList { methods }))
                .collect(),
        }))
    }

    async fn init(
        &self,
        request: tonic::Request<pb::InitRequest>,
    ) -> Result<tonic::Response<pb::InitResponse>, tonic::Status> {
        self.start(request.into_inner().config, None).await?;
        Ok(tonic::Response::new(pb::InitResponse {}))
    }

    async fn call(
        &self,
        request: tonic::Request<pb::CallRequest>,
    ) -> Result<tonic::Response<pb::CallResponse>, tonic::Status> {
        let plugin = self.plugin()?;
        let request = request.into_inner();
        let output = Self::blocking(move || {
            let plugin = plugin.get().expect("checked by plugin()");
            let input = Input { bytes: &request.payload, content_type: &request.content_type };
            plugin.call(&request.method, input)
        })
        .await?;
        Ok(tonic::Response::new(pb::CallResponse {
            payload: output.bytes,
            content_type: output.content_type.unwrap_or_default(),
        }))
    }

    async fn on_event(
        &self,
        request: tonic::Request<pb::EventRequest>,
    ) -> Result<tonic::Response<pb::EventResponse>, tonic::Status> {
        let plugin = self.plugin()?;
        let event = request.into_inner();
        Self::blocking(move || {
            let plugin = plugin.get().expect("checked by plugin()");
            plugin.on_event(Event {
                topic: &event.topic,
                action: &event.action,
                payload: &event.payload,
                content_type: &event.content_type,
                source: &event.source,
                timestamp_ms: event.timestamp_ms,
            })
        })
        .await?;
        Ok(tonic::Response::new(pb::EventResponse {}))
    }

    async fn shutdown(
        &self,
        _request: tonic::Request<pb::ShutdownRequest>,
    ) -> Result<tonic::Response<pb::ShutdownResponse>, tonic::Status> {
        if self.plugin.get().is_some() {
            // On a blocking thread, like every other call into plugin code, so shutdown may
            // still use the host (log, publish); a panic is reported, not propagated.
            let plugin = self.plugin.clone();
            let _ = Self::blocking(move || {
                plugin.get().expect("checked above").shutdown();
                Ok(())
            })
            .await;
        }
        let _ = self.stop.send(true);
        Ok(tonic::Response::new(pb::ShutdownResponse {}))
    }

    async fn snapshot(
        &self,
        _request: tonic::Request<pb::SnapshotRequest>,
    ) -> Result<tonic::Response<pb::SnapshotResponse>, tonic::Status> {
        if !P::SNAPSHOTS {
            return Ok(tonic::Response::new(pb::SnapshotResponse { supported: false, state: Vec::new() }));
        }
        let plugin = self.plugin()?;
        let state = Self::blocking(move || plugin.get().expect("checked by plugin()").snapshot()).await?;
        Ok(tonic::Response::new(pb::SnapshotResponse { supported: true, state }))
    }

    async fn restore(
        &self,
        request: tonic::Request<pb::RestoreRequest>,
    ) -> Result<tonic::Response<pb::RestoreResponse>, tonic::Status> {
        let plugin = self.plugin()?;
        let state = request.into_inner().state;
        Self::blocking(move || plugin.get().expect("checked by plugin()").restore(&state)).await?;
        Ok(tonic::Response::new(pb::RestoreResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_errors_cross_grpc_with_the_contracts_numbers() {
        for code in ErrorCode::ALL {
            let status = tonic::Status::from(PluginError::new(code, "m"));
            assert_eq!(status.code() as i32, code.status(), "{code}");
            assert_eq!(PluginError::from(status), PluginError::new(code, "m"));
        }
        assert_eq!(PluginError::from(tonic::Status::unknown("x")).code, ErrorCode::Internal);
    }
}
