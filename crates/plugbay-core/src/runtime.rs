//! The [`Runtime`] / [`Loaded`] / [`Instance`] traits every runtime implements, and the
//! pieces they share (the description check, the host callbacks).
//!
//! A runtime turns artifact bytes into a [`Loaded`] artifact (Discovered -> Loaded), a
//! loaded artifact into running [`Instance`]s (Loaded -> Initialized), and an instance
//! serves calls. Runtimes know nothing of routing, of each other, or of the lifecycle.

mod death;
pub mod native;
pub mod process;
#[cfg(feature = "wasm")]
pub mod wasm;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::Event;
use crate::call::{Call, Payload};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, RuntimeKind};

pub use death::{Death, ExitStatus};

/// A boxed, sendable future (the async half of the runtime traits).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of starting a call: finished already (in-process runtimes, no thread hop),
/// or a future to await under the call's deadline.
pub enum CallOutcome {
    /// The call ran to completion on the caller's thread.
    Done(Result<Payload>),
    /// The call is in progress elsewhere.
    Pending(BoxFuture<'static, Result<Payload>>),
}

/// One call as an instance receives it: the method (already checked against the
/// manifest's whitelist), the request, when the caller stops waiting, and the call's depth
/// in plugin-to-plugin calls, which the runtime hands back with every call the plugin makes
/// through the host API while it serves this one.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    /// The method.
    pub method: &'a str,
    /// The request.
    pub payload: &'a Payload,
    /// When the caller stops waiting, if it set a deadline; runtimes that can pass it on
    /// (process) or enforce it (wasm, by epoch interruption) do; native calls cannot be
    /// pre-empted and ignore it.
    pub deadline: Option<Instant>,
    /// See [`Call::depth`].
    pub depth: u32,
}

/// What a plugin says it is, from its `describe` operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    /// The plugin id.
    pub id: String,
    /// The plugin version (semver text).
    pub version: String,
    /// Capability -> methods.
    pub provides: BTreeMap<String, Vec<String>>,
}

impl Description {
    /// Checks the description against the manifest: same id, same version, and the same
    /// capabilities with the same methods (order does not matter).
    ///
    /// # Errors
    /// `failed_precondition` saying exactly what differs.
    pub fn check_against(&self, manifest: &Manifest) -> Result<()> {
        let mismatch = |what: String| {
            Error::precondition(format!("the plugin's describe disagrees with its manifest: {what}"))
        };
        if self.id != manifest.plugin.id {
            return Err(mismatch(format!("id {:?} vs {:?} in plugin.toml", self.id, manifest.plugin.id)));
        }
        if self.version != manifest.plugin.version.to_string() {
            return Err(mismatch(format!(
                "version {:?} vs {:?} in plugin.toml",
                self.version,
                manifest.plugin.version.to_string()
            )));
        }
        let normalise = |map: &BTreeMap<String, Vec<String>>| -> BTreeMap<String, Vec<String>> {
            map.iter()
                .map(|(capability, methods)| {
                    let mut methods = methods.clone();
                    methods.sort();
                    methods.dedup();
                    (capability.clone(), methods)
                })
                .collect()
        };
        let (described, declared) = (normalise(&self.provides), normalise(&manifest.provides));
        if described != declared {
            return Err(mismatch(format!(
                "provides {} vs {} in plugin.toml",
                serde_json::to_string(&described).unwrap_or_default(),
                serde_json::to_string(&declared).unwrap_or_default()
            )));
        }
        Ok(())
    }
}

/// The artifact a runtime is asked to load. For runtimes that read it (native), the bytes
/// the host read from beneath the plugin folder, so the code that runs is the code that was
/// checked; process plugins are run from their path (checked to be a regular file beneath
/// the folder), and running exactly the checked bytes comes with signed artifacts.
pub struct Artifact<'a> {
    /// The accepted manifest.
    pub manifest: &'a Manifest,
    /// The plugin folder: where a process plugin runs (its working directory), and what
    /// relative `[permissions]` paths are resolved against, wherever the artifact sits
    /// beneath it.
    pub folder: &'a Path,
    /// The artifact file, beneath `folder` (for messages, and the program a process plugin
    /// runs).
    pub path: &'a Path,
    /// The artifact's bytes (empty when the runtime does not read them, see
    /// [`Runtime::reads_artifact`]).
    pub bytes: Vec<u8>,
}

/// The OS sandbox of a process plugin's instance (docs/sandbox.md).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SandboxReport {
    /// The host's sandbox setting.
    pub mode: crate::config::SandboxMode,
    /// The layers in place (`user-namespace`, `mount-namespace`, ..., `landlock`).
    pub layers: Vec<String>,
    /// The layers that could not be built (best-effort only), each with why.
    pub missing: Vec<String>,
}

impl SandboxReport {
    /// The report of a program run with the sandbox off.
    pub fn off() -> SandboxReport {
        SandboxReport { mode: crate::config::SandboxMode::Off, layers: Vec::new(), missing: Vec::new() }
    }
}

/// Severity of a plugin's log line; defined with its C numbers in the contract crate
/// ([`plugbay_abi::LogLevel`]) and re-exported here.
pub use plugbay_abi::LogLevel;

/// The host API as runtimes see it: what a plugin may ask of the host. Implemented by the
/// host; runtimes bridge their contract's `log` / `publish` / `invoke` onto it.
pub trait HostCallbacks: Send + Sync {
    /// A log line from `plugin`.
    fn log(&self, plugin: &str, level: LogLevel, message: &str);

    /// An event published by `plugin`.
    ///
    /// # Errors
    /// `resource_exhausted` when the bus queue is full; `invalid_argument` for a bad topic.
    fn publish(&self, plugin: &str, topic: &str, action: &str, payload: Payload) -> Result<()>;

    /// A call made by `plugin` through the host, served synchronously on this thread
    /// (for in-process runtimes, whose host API is a plain function call).
    ///
    /// # Errors
    /// Whatever the call fails with.
    fn invoke(&self, plugin: &str, call: Call) -> Result<Payload>;

    /// A call made by `plugin` through the host, awaited (for runtimes whose host API is
    /// served on the host's async runtime, such as process plugins).
    fn invoke_async(&self, plugin: &str, call: Call) -> BoxFuture<'static, Result<Payload>>;
}

/// What an instance needs from the host when it is created.
#[derive(Clone)]
pub struct InstanceContext {
    /// The plugin id (tags log lines and events).
    pub plugin: Arc<str>,
    /// Configuration bytes for init (empty when none are configured).
    pub config: Vec<u8>,
    /// The host API.
    pub callbacks: Arc<dyn HostCallbacks>,
    /// Responses larger than this are refused with `resource_exhausted`.
    pub max_payload_bytes: usize,
    /// The deadline of a call that sets none, when the manifest sets no `limits.timeout_ms`
    /// (`HostConfig::default_timeout`); runtimes that can interrupt a call (wasm) use it.
    pub default_timeout: Duration,
}

/// A runtime: native, wasm or process.
pub trait Runtime: Send + Sync + 'static {
    /// Which runtime this is.
    fn kind(&self) -> RuntimeKind;

    /// Whether [`Runtime::load`] needs the artifact's bytes. When `false` the host only
    /// checks that the artifact is a regular file beneath the plugin folder and passes no
    /// bytes (a process plugin's program is run from its path).
    fn reads_artifact(&self) -> bool {
        true
    }

    /// Loads and checks an artifact (Discovered -> Loaded).
    ///
    /// # Errors
    /// `failed_precondition` for an artifact this runtime cannot use, with the cause.
    fn load<'a>(&'a self, artifact: Artifact<'a>) -> BoxFuture<'a, Result<Arc<dyn Loaded>>>;
}

/// A loaded, checked artifact from which instances are made.
pub trait Loaded: Send + Sync {
    /// What the plugin's describe operation returned.
    fn description(&self) -> &Description;

    /// For a native library, what its table says (for [`crate::Host::inspect`]); `None`
    /// for the other runtimes.
    fn native_info(&self) -> Option<native::NativeInfo> {
        None
    }

    /// Creates an instance (Loaded -> Initialized): runs the plugin's init.
    ///
    /// # Errors
    /// The plugin's init error, with its code.
    fn instantiate(&self, context: InstanceContext) -> BoxFuture<'_, Result<Arc<dyn Instance>>>;
}

/// A running copy of a plugin.
///
/// An in-process instance is shut down when the last reference to it drops, so a call
/// still in flight keeps it (and its code) alive; out-of-process ones are also asked to
/// stop through [`Instance::shutdown`].
pub trait Instance: Send + Sync {
    /// Starts a call (see [`Invocation`]). A call the plugin makes through the host API
    /// while it serves this one must reach [`HostCallbacks`] as a [`Call`] nested in
    /// `invocation.depth` ([`Call::depth`]).
    fn call(&self, invocation: Invocation<'_>) -> CallOutcome;

    /// The zero-copy synchronous form: runs the call on this thread and lends the response
    /// bytes and content type to `receive` before releasing them. Only the embedder makes
    /// such calls, so their depth is 0. `None` when this runtime
    /// cannot serve calls synchronously (the default: out-of-process and wasm instances).
    fn call_borrowed(
        &self,
        method: &str,
        payload: &[u8],
        content_type: &str,
        receive: &mut dyn FnMut(&[u8], &str),
    ) -> Option<Result<()>> {
        let _ = (method, payload, content_type, receive);
        None
    }

    /// Delivers an event.
    fn on_event(&self, event: &Event) -> CallOutcome;

    /// Stops the instance gracefully (process: the Shutdown call, a grace period, then
    /// SIGKILL). Called once no call is in flight, or when the drain deadline passed. The
    /// default does nothing: in-process instances shut down when dropped.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// For instances that can die on their own (a process that exits): a future that
    /// resolves, with how it ended, when it does. `None` for in-process instances.
    fn died(&self) -> Option<BoxFuture<'static, Death>> {
        None
    }

    /// For instances that can stop answering while alive (a process): one health check
    /// that must succeed within `timeout`. `None` when the runtime has nothing to check.
    fn check_health(&self, timeout: std::time::Duration) -> Option<BoxFuture<'_, Result<()>>> {
        let _ = timeout;
        None
    }

    /// The instance's state as bytes, for the host to keep and hand to
    /// [`Instance::restore`] on a later instance. `None` when the plugin does not take
    /// snapshots (the default).
    fn snapshot(&self) -> BoxFuture<'_, Result<Option<bytes::Bytes>>> {
        Box::pin(async { Ok(None) })
    }

    /// Loads a state from [`Instance::snapshot`] into this fresh instance, after init and
    /// before any call. The default ignores it.
    fn restore(&self, state: bytes::Bytes) -> BoxFuture<'_, Result<()>> {
        let _ = state;
        Box::pin(async { Ok(()) })
    }

    /// Whether the instance is still alive (a process that has not exited). In-process
    /// instances always are.
    fn is_alive(&self) -> bool {
        true
    }

    /// The OS sandbox the instance runs in; `None` for runtimes that have none (native and
    /// wasm run inside the host's process).
    fn sandbox(&self) -> Option<SandboxReport> {
        None
    }

    /// The instance's process id as the host sees it, for a runtime that runs one (for a
    /// sandboxed program, its sandbox's init, which runs the program as its child and ends
    /// with it); `None` for in-process runtimes.
    fn pid(&self) -> Option<u32> {
        None
    }

    /// Ends the instance at once, without a graceful shutdown (an unhealthy process is
    /// killed, stopped or not). Its [`Instance::died`] future then resolves. The default
    /// does nothing.
    fn kill(&self) {}
}
