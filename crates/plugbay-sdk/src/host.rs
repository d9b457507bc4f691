//! [`Host`]: the host API a plugin calls back into (log, publish, invoke).

use plugbay_abi::{self as abi, HostApiV1, Output as RawOutput, Str};

use crate::backend::HostApi;
use crate::types::{ErrorCode, Input, LogLevel, PluginError, Response};

/// The host, as seen from a plugin instance: cheap to clone, usable from any thread.
///
/// A `Host` is valid until the instance's `shutdown` returns; do not keep clones in
/// globals that outlive the instance.
#[derive(Clone)]
pub struct Host {
    backend: Backend,
}

/// Where host API calls go.
#[derive(Clone)]
enum Backend {
    /// Nowhere: a plugin under unit test.
    Detached,
    /// The C ABI table of a native host.
    Native(&'static HostApiV1),
    /// Another transport (a process plugin's connection to the host).
    #[cfg_attr(not(feature = "process"), allow(dead_code))]
    Remote(std::sync::Arc<dyn HostApi>),
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Detached => "detached",
            Backend::Native(_) => "native",
            Backend::Remote(_) => "remote",
        };
        f.debug_struct("Host").field("backend", &kind).finish()
    }
}

impl Host {
    /// A host that is not there: logs go to stderr, publish succeeds and does nothing, and
    /// invoke fails with `unavailable`. For unit tests of a plugin without a host.
    pub fn detached() -> Host {
        Host { backend: Backend::Detached }
    }

    /// A host reached through `api` (a process plugin's connection).
    #[cfg_attr(not(feature = "process"), allow(dead_code))]
    pub(crate) fn remote(api: std::sync::Arc<dyn HostApi>) -> Host {
        Host { backend: Backend::Remote(api) }
    }

    /// Wraps the table the host passed to init.
    ///
    /// # Safety
    /// `api` must be NULL or point to a host API table that stays valid until the
    /// instance's shutdown returns, as `include/plugbay.h` promises.
    #[cfg_attr(not(feature = "native"), allow(dead_code))]
    pub(crate) unsafe fn from_raw(api: *const HostApiV1) -> Host {
        // SAFETY: the caller guarantees validity for the instance's lifetime; the 'static
        // here is that promise written as a type, and `Host` is documented not to outlive it.
        match unsafe { api.as_ref() } {
            Some(api) => Host { backend: Backend::Native(api) },
            None => Host::detached(),
        }
    }

    /// Writes a log line, tagged with this plugin's id by the host. It never waits for the
    /// host: in a process plugin lines are queued (and dropped when 1024 are pending).
    pub fn log(&self, level: LogLevel, message: &str) {
        match &self.backend {
            // SAFETY: the table is valid (see `from_raw`) and `message` outlives the call.
            Backend::Native(api) => unsafe {
                (api.log)(api.host_ctx, level.raw(), Str::from_bytes(message.as_bytes()))
            },
            Backend::Detached => eprintln!("[{level:?}] {message}"),
            Backend::Remote(host) => host.log(level, message),
        }
    }

    /// Publishes an event on the host's bus: `topic` (`[a-z0-9._-]`), `action` (what
    /// happened, e.g. `"put"`), the payload and its content type.
    ///
    /// # Errors
    /// The host's refusal (bad topic, queue full) as a [`PluginError`].
    pub fn publish(
        &self,
        topic: &str,
        action: &str,
        payload: &[u8],
        content_type: &str,
    ) -> Result<(), PluginError> {
        let api = match &self.backend {
            Backend::Native(api) => *api,
            Backend::Detached => return Ok(()),
            Backend::Remote(host) => return host.publish(topic, action, payload, content_type),
        };
        let mut out = RawOutput::EMPTY;
        // SAFETY: the table is valid; every argument outlives the call; `out` is writable.
        let status = unsafe {
            (api.publish)(
                api.host_ctx,
                Str::from_bytes(topic.as_bytes()),
                Str::from_bytes(action.as_bytes()),
                Str::from_bytes(payload),
                Str::from_bytes(content_type.as_bytes()),
                &mut out,
            )
        };
        take(api, status, out).map(drop)
    }

    /// Calls a capability (`"kv@1"`) or a plugin (`"plugin:kv-store"`) through the host.
    ///
    /// # Errors
    /// The callee's error, or the host's (`not_found`, `permission_denied`, ...).
    pub fn invoke(&self, target: &str, method: &str, input: Input<'_>) -> Result<Response, PluginError> {
        let api = match &self.backend {
            Backend::Native(api) => *api,
            Backend::Detached => {
                return Err(PluginError::new(ErrorCode::Unavailable, "no host (Host::detached)"));
            }
            Backend::Remote(host) => return host.invoke(target, method, input),
        };
        let mut out = RawOutput::EMPTY;
        // SAFETY: the table is valid; every argument outlives the call; `out` is writable.
        let status = unsafe {
            (api.invoke)(
                api.host_ctx,
                Str::from_bytes(target.as_bytes()),
                Str::from_bytes(method.as_bytes()),
                Str::from_bytes(input.bytes),
                Str::from_bytes(input.content_type.as_bytes()),
                &mut out,
            )
        };
        take(api, status, out)
    }
}

/// Copies the host-allocated buffers of `out` into a result and frees them on the host.
fn take(api: &HostApiV1, status: abi::Status, out: RawOutput) -> Result<Response, PluginError> {
    let copy = |buf: abi::Buf| -> Vec<u8> {
        if buf.is_empty() {
            return Vec::new();
        }
        // SAFETY: the host wrote `len` bytes at `ptr` and keeps them until free_buf.
        let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec();
        // SAFETY: the buffer came from this host and is freed exactly once, here.
        unsafe { (api.free_buf)(api.host_ctx, buf) };
        bytes
    };
    let payload = copy(out.payload);
    let content_type = String::from_utf8_lossy(&copy(out.content_type)).into_owned();
    let error = String::from_utf8_lossy(&copy(out.error)).into_owned();
    if status == abi::STATUS_OK {
        Ok(Response { bytes: payload, content_type })
    } else {
        Err(PluginError::new(ErrorCode::from_status(status).unwrap_or(ErrorCode::Internal), error))
    }
}
