//! The process runtime: plugins as separate programs, in any language, spoken to over gRPC
//! on a Unix socket after a version-checked handshake (docs/process-protocol.md).
//!
//! A crash in a process plugin never hurts the host: its calls in flight fail at once with
//! `unavailable` (with the exit status and the last stderr lines), and its `[restart]`
//! policy decides what follows (docs/supervision.md). Loading starts one program, checks its handshake, health and description, and
//! keeps it as the first instance; further replicas are started the same way.

mod callbacks;
mod client;
mod framed;
pub(crate) mod handshake;
pub(crate) mod output;
mod runner;
mod sandbox;

pub use handshake::PLUGIN_COOKIE;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use plugbay_proto::plugin::v1 as pb;
use plugbay_proto::plugin::v1::plugin_service_client::PluginServiceClient;
use plugbay_proto::tonic_health::pb::HealthCheckRequest;
use plugbay_proto::tonic_health::pb::health_check_response::ServingStatus;
use plugbay_proto::tonic_health::pb::health_client::HealthClient;
use plugbay_sandbox::ProgramImage;
use tonic::transport::Channel;

use crate::bus::Event;
use crate::call::{ContentType, Payload};
use crate::config::SandboxMode;
use crate::error::{Code, Error, Result};
use crate::manifest::{Manifest, ProcessTransport, RuntimeKind};
use crate::runtime::{
    Artifact, BoxFuture, CallOutcome, Death, Description, ExitStatus, Instance, InstanceContext, Invocation,
    Loaded, Runtime, SandboxReport,
};
use client::{PluginClient, RpcError};
use handshake::Transport;
use runner::{Program, Running, Sockets};

/// The gRPC service name whose health must be SERVING.
const SERVICE_NAME: &str = plugbay_proto::PLUGIN_SERVICE_NAME;
/// Largest gRPC message accepted from a plugin (responses are also checked against the
/// host's `max_payload_bytes`).
const MAX_MESSAGE_BYTES: usize = plugbay_proto::MAX_MESSAGE_BYTES;

/// The process runtime.
#[derive(Debug)]
pub struct ProcessRuntime {
    /// Where programs get their private directories (`None`: the temporary directory).
    socket_dir: Option<std::path::PathBuf>,
    /// Where every background task of the runtime runs (output pumps, reapers, framed
    /// readers, callback servers): the host's runtime.
    handle: tokio::runtime::Handle,
    /// Whether programs run inside the sandbox.
    sandbox: SandboxMode,
    /// Host paths every sandboxed program sees read-only.
    sandbox_read: Arc<[std::path::PathBuf]>,
}

impl ProcessRuntime {
    /// A runtime that spawns its background tasks on `handle` (the host's runtime), whose
    /// programs get their private directories in `socket_dir`
    /// ([`crate::HostConfig::process_socket_dir`]; `None`: the temporary directory) and
    /// run in the sandbox as `sandbox` says ([`crate::HostConfig::sandbox`]). Unless the
    /// sandbox is off, what this machine offers is probed now, once per process.
    /// `sandbox_read` are host paths every sandboxed program sees read-only
    /// ([`crate::HostConfig::sandbox_read`]).
    pub fn new(
        handle: tokio::runtime::Handle,
        socket_dir: Option<std::path::PathBuf>,
        sandbox: SandboxMode,
        sandbox_read: Vec<std::path::PathBuf>,
    ) -> ProcessRuntime {
        if sandbox != SandboxMode::Off {
            sandbox::sandboxing();
        }
        ProcessRuntime { socket_dir, handle, sandbox, sandbox_read: sandbox_read.into() }
    }
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn load<'a>(&'a self, artifact: Artifact<'a>) -> BoxFuture<'a, Result<Arc<dyn Loaded>>> {
        Box::pin(async move {
            // Absolute, since the program runs with the plugin folder as its working directory.
            let program = std::path::absolute(artifact.path).map_err(|error| {
                Error::internal(format!("cannot resolve {}: {error}", artifact.path.display()))
            })?;
            let folder = std::path::absolute(artifact.folder).map_err(|error| {
                Error::internal(format!("cannot resolve {}: {error}", artifact.folder.display()))
            })?;
            // An ELF program runs from a sealed copy of the bytes the host read (and judged):
            // the file is never opened by path again. A script runs by its path (its
            // interpreter opens it; docs/trust.md says what that leaves open).
            let image = if ProgramImage::is_elf(&artifact.bytes) {
                let image =
                    ProgramImage::seal(&artifact.manifest.plugin.id, &artifact.bytes).map_err(|error| {
                        Error::internal(format!("cannot make a sealed copy of the program: {error}"))
                            .with_file(artifact.path)
                    })?;
                Some(Arc::new(image))
            } else {
                None
            };
            let spec = Spec {
                manifest: artifact.manifest.clone(),
                folder,
                program,
                image,
                socket_dir: self.socket_dir.clone(),
                handle: self.handle.clone(),
                sandbox: self.sandbox,
                sandbox_read: self.sandbox_read.clone(),
            };
            // The first program is started now, to ask it what it is; it becomes the first
            // instance, initialised by `instantiate`.
            let started = spec.start().await?;
            let timeout = spec.start_timeout();
            let description = match tokio::time::timeout(timeout, started.describe()).await {
                Ok(Ok(description)) => description,
                Ok(Err(error)) if error.code() != Code::DeadlineExceeded => {
                    started.running.kill();
                    return Err(started.running.explain(error).await);
                }
                Ok(Err(_)) | Err(_) => {
                    started.running.kill();
                    let error = Error::unavailable(format!(
                        "describe did not answer within {} ms",
                        timeout.as_millis()
                    ));
                    return Err(started.running.explain(error).await);
                }
            };
            Ok(Arc::new(ProcessLoaded { spec, description, first: Mutex::new(Some(started)) })
                as Arc<dyn Loaded>)
        })
    }
}

/// What is needed to start the plugin's program.
struct Spec {
    manifest: Manifest,
    folder: std::path::PathBuf,
    program: std::path::PathBuf,
    /// The program's verified bytes when it is an ELF executable.
    image: Option<Arc<ProgramImage>>,
    socket_dir: Option<std::path::PathBuf>,
    handle: tokio::runtime::Handle,
    sandbox: SandboxMode,
    sandbox_read: Arc<[std::path::PathBuf]>,
}

/// A program after the handshake, connected and healthy, not yet initialised.
struct Started {
    running: Running,
    client: PluginClient,
    /// The gRPC health client (gRPC transport only; framed plugins are checked with
    /// Describe).
    health: Option<HealthClient<Channel>>,
    callbacks: callbacks::Server,
    /// Passed on as the deadline of Describe and Init.
    start_timeout: Duration,
    /// The sandbox it runs in (`None`: the sandbox is off).
    sandbox: Option<SandboxReport>,
}

impl Spec {
    fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.manifest.process.start_timeout_ms)
    }

    async fn start(&self) -> Result<Started> {
        let id = &self.manifest.plugin.id;
        let sockets = Sockets::new(id, self.socket_dir.as_deref())?;
        // Listening before the program starts (docs/process-protocol.md, section 1).
        let callbacks = callbacks::Server::bind(&sockets.host, id, &self.handle)?;
        let program = Program {
            plugin: id,
            folder: &self.folder,
            program: self.program.clone(),
            image: self.image.clone(),
            args: &self.manifest.process.args,
            env: &self.manifest.permissions.env,
            transports: match self.manifest.process.transport {
                ProcessTransport::Auto => &[Transport::Framed, Transport::Grpc],
                ProcessTransport::Grpc => &[Transport::Grpc],
            },
        };
        let deadline = tokio::time::Instant::now() + self.start_timeout();
        let planned =
            sandbox::plan(self.sandbox, &self.sandbox_read, &self.manifest, &self.folder, sockets.dir())?;
        let (prepared, sandbox) = match planned {
            Some(planned) => (Some(planned.prepared), Some(planned.report)),
            None => (None, None),
        };
        let running = runner::start(program, sockets, prepared, self.start_timeout(), &self.handle).await?;
        let connect = connect_and_check_health(&running, callbacks.service(), &self.handle);
        match tokio::time::timeout_at(deadline, connect).await {
            Ok(Ok((client, health))) => Ok(Started {
                running,
                client,
                health,
                callbacks,
                start_timeout: self.start_timeout(),
                sandbox,
            }),
            Ok(Err(error)) => {
                running.kill();
                Err(running.explain(error).await)
            }
            Err(_) => {
                running.kill();
                let error = Error::unavailable(format!(
                    "the plugin's health never reported SERVING within the start timeout of {} ms; \
                     the program was killed",
                    self.start_timeout().as_millis()
                ));
                Err(running.explain(error).await)
            }
        }
    }
}

/// Connects over the transport the plugin chose; a framed plugin's host API requests on
/// the connection go to `host`.
async fn connect_and_check_health(
    running: &Running,
    host: callbacks::Callbacks,
    handle: &tokio::runtime::Handle,
) -> Result<(PluginClient, Option<HealthClient<Channel>>)> {
    if running.transport == Transport::Framed {
        // The framed transport has no health service: the plugin listens before it prints
        // the handshake, and Describe (next) answers once it serves.
        let client =
            framed::FramedClient::connect(&running.socket, host, handle.clone()).await.map_err(|error| {
                Error::unavailable(format!("cannot connect to {}: {error}", running.socket.display()))
            })?;
        return Ok((PluginClient::Framed(client), None));
    }
    let channel = plugbay_proto::connect_unix(&running.socket).await.map_err(|error| {
        Error::unavailable(format!("cannot connect to {}: {error}", running.socket.display()))
    })?;
    let mut health = HealthClient::new(channel.clone());
    let request = HealthCheckRequest { service: SERVICE_NAME.to_owned() };
    let mut last;
    loop {
        if !running.is_running() {
            return Err(Error::unavailable("the program exited before its health reported SERVING"));
        }
        match health.check(request.clone()).await {
            Ok(response) => {
                let status = response.into_inner().status;
                if status == ServingStatus::Serving as i32 {
                    break;
                }
                last = format!("status {status}");
            }
            Err(status) => last = format!("{}: {}", status.code(), status.message()),
        }
        tracing::trace!(plugin = %running.plugin, "waiting for health: {last}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = PluginServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    Ok((PluginClient::Grpc(client), Some(health)))
}

/// A failed RPC as a plugbay error: the plugin's status with its code (unknown codes
/// become `internal`), a timeout as `deadline_exceeded`, a broken connection as
/// `unavailable`.
fn rpc_error(error: RpcError) -> Error {
    match error {
        RpcError::Plugin(status) => match Code::from_grpc(status.code() as i32) {
            Some(code) => Error::new(code, status.message().to_owned()),
            None => Error::internal(format!(
                "the plugin answered with gRPC status {:?}: {}",
                status.code(),
                status.message()
            )),
        },
        RpcError::Timeout(Some(timeout)) => Error::new(
            Code::DeadlineExceeded,
            // Rounded up: the budget left is a hair under the call's whole one.
            format!("no response within {} ms; the call was cancelled", timeout.as_micros().div_ceil(1000)),
        ),
        RpcError::Timeout(None) => {
            Error::new(Code::DeadlineExceeded, "no response before the deadline; the call was cancelled")
        }
        RpcError::Transport(why) => Error::unavailable(format!("the connection to the plugin failed: {why}")),
    }
}

impl Started {
    async fn describe(&self) -> Result<Description> {
        let response = self
            .client
            .describe(pb::DescribeRequest {}, Some(self.start_timeout))
            .await
            .map_err(rpc_error)?;
        Ok(Description {
            id: response.id,
            version: response.version,
            provides: response
                .provides
                .into_iter()
                .map(|(capability, list)| (capability, list.methods))
                .collect(),
        })
    }
}

/// A loaded process plugin: how to start more instances, and the first one, started.
struct ProcessLoaded {
    spec: Spec,
    description: Description,
    first: Mutex<Option<Started>>,
}

impl Loaded for ProcessLoaded {
    fn description(&self) -> &Description {
        &self.description
    }

    fn instantiate(&self, context: InstanceContext) -> BoxFuture<'_, Result<Arc<dyn Instance>>> {
        Box::pin(async move {
            let first = self.first.lock().take();
            let started = match first {
                Some(started) if started.running.is_running() => started,
                _ => self.spec.start().await?,
            };
            started.callbacks.serve(context.callbacks.clone());
            let timeout = self.spec.start_timeout();
            let request =
                pb::InitRequest { config: context.config.clone(), plugin_id: context.plugin.to_string() };
            let init = tokio::time::timeout(timeout, started.client.init(request, Some(timeout))).await;
            match init {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => {
                    started.running.kill();
                    return Err(started.running.explain(rpc_error(status)).await);
                }
                Err(_) => {
                    started.running.kill();
                    let error =
                        Error::unavailable(format!("init did not answer within {} ms", timeout.as_millis()));
                    return Err(started.running.explain(error).await);
                }
            }
            Ok(Arc::new(ProcessInstance {
                started,
                max_payload_bytes: context.max_payload_bytes,
                grace: Duration::from_millis(self.spec.manifest.process.shutdown_grace_ms),
                shut_down: tokio::sync::OnceCell::new(),
            }) as Arc<dyn Instance>)
        })
    }
}

/// One running program serving calls.
struct ProcessInstance {
    started: Started,
    max_payload_bytes: usize,
    grace: Duration,
    shut_down: tokio::sync::OnceCell<()>,
}

impl ProcessInstance {
    /// The error for calls once the program is gone.
    fn gone(&self, exit: ExitStatus) -> Error {
        Error::unavailable(format!("the plugin process {exit}{}", self.started.running.stderr.render()))
    }

    /// Runs an RPC, failing at once with `unavailable` if the program exits meanwhile.
    fn guarded<T: Send + 'static>(
        &self,
        rpc: impl std::future::Future<Output = std::result::Result<T, RpcError>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T>> {
        let mut exited = self.started.running.exited.clone();
        let tail = self.started.running.stderr.clone();
        Box::pin(async move {
            let died = |exit: Option<ExitStatus>| {
                let exit = exit.unwrap_or(ExitStatus::Unknown);
                Error::unavailable(format!("the plugin process {exit} during the call{}", tail.render()))
            };
            let error = tokio::select! {
                biased;
                result = rpc => match result {
                    Ok(value) => return Ok(value),
                    Err(error) => error,
                },
                exit = exited.wait_for(Option::is_some) => return Err(died(exit.ok().and_then(|e| *e))),
            };
            let RpcError::Transport(_) = error else { return Err(rpc_error(error)) };
            // The connection broke: most likely the program died. Say how, if it did.
            let exit = tokio::time::timeout(Duration::from_secs(1), exited.wait_for(Option::is_some)).await;
            match exit {
                Ok(Ok(exit)) => Err(died(*exit)),
                _ => Err(rpc_error(error)),
            }
        })
    }
}

impl Instance for ProcessInstance {
    fn call(&self, invocation: Invocation<'_>) -> CallOutcome {
        let Invocation { method, payload, deadline, depth } = invocation;
        if let Some(exit) = *self.started.running.exited.borrow() {
            return CallOutcome::Done(Err(self.gone(exit)));
        }
        let serving = self.started.callbacks.serving(depth);
        let request = pb::CallRequest {
            method: method.to_owned(),
            payload: payload.bytes.to_vec(),
            content_type: payload.content_type.as_str().to_owned(),
        };
        let timeout = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
        let client = self.started.client.clone();
        let rpc = async move { client.call(request, timeout).await };
        let call = self.guarded(rpc);
        let request_type = payload.content_type.clone();
        let limit = self.max_payload_bytes;
        CallOutcome::Pending(Box::pin(async move {
            let response = call.await;
            drop(serving);
            let response = response?;
            if response.payload.len() > limit {
                return Err(Error::new(
                    Code::ResourceExhausted,
                    format!(
                        "the plugin returned {} bytes, more than the host's limit of {limit} (max_payload_bytes)",
                        response.payload.len()
                    ),
                ));
            }
            let content_type = if response.content_type.is_empty() {
                request_type
            } else {
                ContentType::new(response.content_type)
            };
            Ok(Payload { bytes: response.payload.into(), content_type })
        }))
    }

    fn on_event(&self, event: &Event) -> CallOutcome {
        let request = pb::EventRequest {
            topic: event.topic.clone(),
            action: event.action.clone(),
            payload: event.payload.bytes.to_vec(),
            content_type: event.payload.content_type.as_str().to_owned(),
            source: event.source.clone(),
            timestamp_ms: event.timestamp_ms,
        };
        let client = self.started.client.clone();
        let call = self.guarded(async move { client.on_event(request, None).await });
        CallOutcome::Pending(Box::pin(async move { call.await.map(|_| Payload::default()) }))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.shut_down
                .get_or_init(|| async {
                    let running = &self.started.running;
                    if running.is_running() {
                        let ask = self.started.client.shutdown(pb::ShutdownRequest {}, Some(self.grace));
                        let ask = tokio::time::timeout(self.grace, ask);
                        let _ = ask.await;
                        running.stop(self.grace).await;
                    }
                    self.started.callbacks.close();
                })
                .await;
        })
    }

    fn check_health(&self, timeout: Duration) -> Option<BoxFuture<'_, Result<()>>> {
        Some(Box::pin(async move {
            let check = async {
                match &self.started.health {
                    Some(health) => {
                        let request = HealthCheckRequest { service: SERVICE_NAME.to_owned() };
                        let response = health
                            .clone()
                            .check(request)
                            .await
                            .map_err(|status| rpc_error(RpcError::from_grpc(status)))?;
                        let status = response.into_inner().status;
                        if status != ServingStatus::Serving as i32 {
                            return Err(Error::unavailable(format!(
                                "health reports {:?}",
                                ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown)
                            )));
                        }
                        Ok(())
                    }
                    // The framed transport has no health service: Describe answers when
                    // the plugin serves.
                    None => self
                        .started
                        .client
                        .describe(pb::DescribeRequest {}, Some(timeout))
                        .await
                        .map(drop)
                        .map_err(rpc_error),
                }
            };
            match tokio::time::timeout(timeout, check).await {
                Ok(result) => result,
                Err(_) => Err(Error::new(
                    Code::DeadlineExceeded,
                    format!("no health answer within {} ms", timeout.as_millis()),
                )),
            }
        }))
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Option<bytes::Bytes>>> {
        Box::pin(async move {
            let timeout = Some(self.started.start_timeout);
            match self.started.client.snapshot(pb::SnapshotRequest {}, timeout).await {
                Ok(response) if response.supported => Ok(Some(response.state.into())),
                Ok(_) => Ok(None),
                // Plugins in other languages need not implement it.
                Err(error) if error.plugin_code() == Some(tonic::Code::Unimplemented) => Ok(None),
                Err(error) => Err(rpc_error(error)),
            }
        })
    }

    fn restore(&self, state: bytes::Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let request = pb::RestoreRequest { state: state.to_vec() };
            match self.started.client.restore(request, Some(self.started.start_timeout)).await {
                Ok(_) => Ok(()),
                Err(error) if error.plugin_code() == Some(tonic::Code::Unimplemented) => Ok(()),
                Err(error) => Err(rpc_error(error)),
            }
        })
    }

    fn kill(&self) {
        self.started.running.kill();
    }

    fn is_alive(&self) -> bool {
        self.started.running.is_running()
    }

    fn sandbox(&self) -> Option<SandboxReport> {
        Some(self.started.sandbox.clone().unwrap_or_else(SandboxReport::off))
    }

    fn pid(&self) -> Option<u32> {
        Some(self.started.running.pid())
    }

    fn died(&self) -> Option<BoxFuture<'static, Death>> {
        let mut exited = self.started.running.exited.clone();
        let tail = self.started.running.stderr.clone();
        let pid = self.started.running.pid();
        let broken = self.started.client.closed();
        Some(Box::pin(async move {
            let mut exit_watch = exited.clone();
            let exit = async move { exit_watch.wait_for(Option::is_some).await.ok().and_then(|e| *e) };
            let exit = tokio::select! {
                exit = exit => exit,
                why = broken => {
                    // A broken connection usually means the program died: say how, if so.
                    let exit = async move { exited.wait_for(Option::is_some).await.ok().and_then(|e| *e) };
                    match tokio::time::timeout(Duration::from_secs(1), exit).await {
                        Ok(Some(exit)) => Some(exit),
                        _ => {
                            let cause = format!("the connection to the plugin process (pid {pid}) broke: {why}");
                            return Death::from_cause(cause);
                        }
                    }
                }
            };
            // Decided on the exit status the host reaped, never on the program's output.
            Death::exited(exit.unwrap_or(ExitStatus::Unknown), pid, tail.lines())
        }))
    }
}
