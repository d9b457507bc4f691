//! The `#[repr(C)]` mirror of `include/plugbay.h`, plugbay's native plugin contract.
//!
//! This crate has no required dependencies and no logic beyond number tables: it is the one
//! place where the C header's structs, constants and function-pointer types are spelled in
//! Rust, and where plugbay's error [`Code`]s and [`LogLevel`]s are defined with their one
//! mapping to the C numbers (and gRPC's, which are the same by design). The optional `serde`
//! feature derives `Serialize`/`Deserialize` for [`Code`] (snake_case names), for the host,
//! whose JSON reports carry codes. The host
//! (`plugbay-core`) and the Rust SDK (`plugbay-sdk`) both build on it, and a test in the
//! suite compiles a C file with static assertions on every size and offset below, so the
//! header and this crate cannot drift apart.
//!
//! # The contract in one paragraph
//! A plugin library exports one symbol, [`ENTRY_SYMBOL`] (`plugbay_plugin_v1`), a function
//! returning a pointer to a [`PluginV1`] table: its ABI version, its own size, flags, and
//! six function pointers (describe, init, call, on_event, shutdown, free_buf), then two
//! optional ones (snapshot, restore) that a table of the older, shorter size does not have. The host
//! hands every instance a [`HostApiV1`] table (log, publish, invoke, free_buf). Bytes cross
//! as borrowed [`Str`] or owned [`Buf`] pairs; an owned buffer is released by the side that
//! allocated it. Fallible functions return a [`Status`] and put a message in
//! [`Output::error`].
#![no_std]

use core::ffi::c_void;

mod codes;

pub use codes::{Code, LogLevel};

/// The ABI version this crate (and `include/plugbay.h`) describes.
pub const ABI_VERSION: u32 = 1;

/// The name of the one symbol a native plugin exports, NUL-terminated for `dlsym`.
pub const ENTRY_SYMBOL: &[u8] = b"plugbay_plugin_v1\0";

/// [`PluginV1::flags`] bit: `call` and `on_event` may run concurrently on one instance.
pub const FLAG_THREAD_SAFE: u32 = 0x1;
/// [`PluginV1::flags`] bit: the library may be unloaded once no call is in flight.
pub const FLAG_UNLOADABLE: u32 = 0x2;

/// A status code (`plugbay_status_t`); the numbers are gRPC's (`PLUGBAY_OK`, `PLUGBAY_INTERNAL`,
/// ...). [`Code::status`] and [`Code::from_status`] are the one mapping to [`Code`].
pub type Status = i32;

/// Success.
pub const STATUS_OK: Status = 0;
/// The request was malformed.
pub const STATUS_INVALID_ARGUMENT: Status = 3;
/// The deadline passed.
pub const STATUS_DEADLINE_EXCEEDED: Status = 4;
/// The thing asked for does not exist.
pub const STATUS_NOT_FOUND: Status = 5;
/// Not allowed.
pub const STATUS_PERMISSION_DENIED: Status = 7;
/// A limit was hit.
pub const STATUS_RESOURCE_EXHAUSTED: Status = 8;
/// The system is not in a state that allows the operation.
pub const STATUS_FAILED_PRECONDITION: Status = 9;
/// A bug or an unexpected failure.
pub const STATUS_INTERNAL: Status = 13;
/// Temporarily unable to serve.
pub const STATUS_UNAVAILABLE: Status = 14;

/// Log level for [`HostApiV1::log`]: error.
pub const LOG_ERROR: i32 = 1;
/// Log level: warning.
pub const LOG_WARN: i32 = 2;
/// Log level: information.
pub const LOG_INFO: i32 = 3;
/// Log level: debug.
pub const LOG_DEBUG: i32 = 4;
/// Log level: trace.
pub const LOG_TRACE: i32 = 5;

/// Borrowed bytes (`plugbay_str_t`), valid for the duration of one function call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Str {
    /// First byte; may be NULL when `len` is 0.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl Str {
    /// The empty string.
    pub const EMPTY: Str = Str { ptr: core::ptr::null(), len: 0 };

    /// Borrows a byte slice for the duration of a call.
    pub const fn from_bytes(bytes: &[u8]) -> Str {
        Str { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    /// Views the bytes.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid and unchanged for `'a`
    /// (or `len` must be 0).
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: the caller guarantees `ptr..ptr+len` is readable for `'a`.
            unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// Owned bytes (`plugbay_buf_t`), released by the allocating side's `free_buf`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Buf {
    /// First byte; NULL for an empty buffer (which is never freed).
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
}

impl Buf {
    /// The empty buffer.
    pub const EMPTY: Buf = Buf { ptr: core::ptr::null_mut(), len: 0 };

    /// Whether the buffer holds nothing (and must not be freed).
    pub fn is_empty(&self) -> bool {
        self.ptr.is_null() || self.len == 0
    }
}

/// What a fallible plugin function writes back (`plugbay_output_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// The result on success (for describe: the description JSON).
    pub payload: Buf,
    /// The result's media type on success; empty means "the request's content type".
    pub content_type: Buf,
    /// A UTF-8 message on failure.
    pub error: Buf,
}

impl Output {
    /// An output with every buffer empty, as the host passes it in.
    pub const EMPTY: Output = Output { payload: Buf::EMPTY, content_type: Buf::EMPTY, error: Buf::EMPTY };
}

/// One call (`plugbay_call_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CallV1 {
    /// `size_of::<CallV1>()` as the host built it.
    pub struct_size: u32,
    /// Zero.
    pub reserved: u32,
    /// The method name (UTF-8).
    pub method: Str,
    /// The request payload.
    pub payload: Str,
    /// The request's media type (UTF-8).
    pub content_type: Str,
}

/// One event (`plugbay_event_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EventV1 {
    /// `size_of::<EventV1>()` as the host built it.
    pub struct_size: u32,
    /// Zero.
    pub reserved: u32,
    /// The topic, e.g. `events.log`.
    pub topic: Str,
    /// What happened, e.g. `created`.
    pub action: Str,
    /// The event's payload.
    pub payload: Str,
    /// The payload's media type.
    pub content_type: Str,
    /// Who published it: a plugin id or `host`.
    pub source: Str,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// `log(host_ctx, level, message)`.
pub type HostLogFn = unsafe extern "C" fn(host_ctx: *mut c_void, level: i32, message: Str);
/// `publish(host_ctx, topic, action, payload, content_type, out)`.
pub type HostPublishFn = unsafe extern "C" fn(
    host_ctx: *mut c_void,
    topic: Str,
    action: Str,
    payload: Str,
    content_type: Str,
    out: *mut Output,
) -> Status;
/// `invoke(host_ctx, target, method, payload, content_type, out)`.
pub type HostInvokeFn = unsafe extern "C" fn(
    host_ctx: *mut c_void,
    target: Str,
    method: Str,
    payload: Str,
    content_type: Str,
    out: *mut Output,
) -> Status;
/// `free_buf(host_ctx, buf)` for buffers the host allocated.
pub type HostFreeBufFn = unsafe extern "C" fn(host_ctx: *mut c_void, buf: Buf);

/// The host API table (`plugbay_host_api_v1_t`), valid from init until shutdown returns.
#[repr(C)]
#[derive(Debug)]
pub struct HostApiV1 {
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<HostApiV1>()`.
    pub struct_size: u32,
    /// Opaque; passed back as the first argument of every function below.
    pub host_ctx: *mut c_void,
    /// Writes a log line tagged with the plugin id.
    pub log: HostLogFn,
    /// Publishes an event on the host's bus.
    pub publish: HostPublishFn,
    /// Calls a capability (`kv@1`) or a plugin (`plugin:kv-store`) through the host.
    pub invoke: HostInvokeFn,
    /// Releases a buffer the host allocated.
    pub free_buf: HostFreeBufFn,
}

// SAFETY: the contract (include/plugbay.h) makes every function of the host API callable
// from any thread for as long as the table is valid, and `host_ctx` is only ever passed
// back to those functions, never dereferenced by the plugin.
unsafe impl Send for HostApiV1 {}
// SAFETY: as above; the table itself is never written after the host builds it.
unsafe impl Sync for HostApiV1 {}

/// `describe(instance, out)`; `instance` is NULL.
pub type DescribeFn = unsafe extern "C" fn(instance: *mut c_void, out: *mut Output) -> Status;
/// `init(host, config, instance_out, out)`.
pub type InitFn = unsafe extern "C" fn(
    host: *const HostApiV1,
    config: Str,
    instance: *mut *mut c_void,
    out: *mut Output,
) -> Status;
/// `call(instance, call, out)`.
pub type CallFn =
    unsafe extern "C" fn(instance: *mut c_void, call: *const CallV1, out: *mut Output) -> Status;
/// `on_event(instance, event, out)`.
pub type OnEventFn =
    unsafe extern "C" fn(instance: *mut c_void, event: *const EventV1, out: *mut Output) -> Status;
/// `shutdown(instance)`.
pub type ShutdownFn = unsafe extern "C" fn(instance: *mut c_void);
/// `free_buf(instance, buf)` for buffers the plugin allocated.
pub type FreeBufFn = unsafe extern "C" fn(instance: *mut c_void, buf: Buf);
/// `snapshot(instance, out)`: the instance's state as bytes in `out.payload`.
pub type SnapshotFn = unsafe extern "C" fn(instance: *mut c_void, out: *mut Output) -> Status;
/// `restore(instance, state, out)`: loads a snapshot into a fresh instance.
pub type RestoreFn = unsafe extern "C" fn(instance: *mut c_void, state: Str, out: *mut Output) -> Status;

/// The plugin's table (`plugbay_plugin_v1_t`).
///
/// Function pointers are `Option`s so the host can refuse a table with a NULL entry
/// instead of calling it (`Option<extern fn>` has the same layout as a nullable pointer).
#[repr(C)]
#[derive(Debug)]
pub struct PluginV1 {
    /// The ABI version the plugin was built against.
    pub abi_version: u32,
    /// `size_of::<PluginV1>()` as the plugin built it.
    pub struct_size: u32,
    /// [`FLAG_THREAD_SAFE`] | [`FLAG_UNLOADABLE`].
    pub flags: u32,
    /// Zero.
    pub reserved: u32,
    /// Writes the description JSON.
    pub describe: Option<DescribeFn>,
    /// Creates an instance.
    pub init: Option<InitFn>,
    /// Serves one call.
    pub call: Option<CallFn>,
    /// Receives an event.
    pub on_event: Option<OnEventFn>,
    /// Releases an instance.
    pub shutdown: Option<ShutdownFn>,
    /// Releases a buffer the plugin allocated.
    pub free_buf: Option<FreeBufFn>,
    /// Optional (present when `struct_size` covers it): writes the instance's state.
    pub snapshot: Option<SnapshotFn>,
    /// Optional (present when `struct_size` covers it): loads a state into a new instance.
    pub restore: Option<RestoreFn>,
}

impl PluginV1 {
    /// `struct_size` of a table without the optional snapshot/restore fields (plugins
    /// built against the first ABI 1 header).
    pub const BASE_SIZE: usize = core::mem::offset_of!(PluginV1, snapshot);

    /// Whether a table of `struct_size` bytes has the snapshot/restore fields.
    pub fn has_snapshots(&self) -> bool {
        self.struct_size as usize >= core::mem::size_of::<PluginV1>()
    }
}

// SAFETY: the table is immutable after the plugin builds it and its function pointers are
// plain code addresses; whether calls may run concurrently is declared by FLAG_THREAD_SAFE
// and enforced by the host, not by the table's type.
unsafe impl Sync for PluginV1 {}

/// The signature of the exported entry symbol, `plugbay_plugin_v1`.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginV1;

/// The layout facts a C compiler checks against `include/plugbay.h` (see the suite's
/// `abi_layout` test): `(struct name, field or "", size or offset)`.
pub fn layout_facts() -> impl Iterator<Item = (&'static str, &'static str, usize)> {
    use core::mem::{offset_of, size_of};
    [
        ("plugbay_str_t", "", size_of::<Str>()),
        ("plugbay_str_t", "len", offset_of!(Str, len)),
        ("plugbay_buf_t", "", size_of::<Buf>()),
        ("plugbay_buf_t", "len", offset_of!(Buf, len)),
        ("plugbay_output_t", "", size_of::<Output>()),
        ("plugbay_output_t", "content_type", offset_of!(Output, content_type)),
        ("plugbay_output_t", "error", offset_of!(Output, error)),
        ("plugbay_call_t", "", size_of::<CallV1>()),
        ("plugbay_call_t", "method", offset_of!(CallV1, method)),
        ("plugbay_call_t", "payload", offset_of!(CallV1, payload)),
        ("plugbay_call_t", "content_type", offset_of!(CallV1, content_type)),
        ("plugbay_event_t", "", size_of::<EventV1>()),
        ("plugbay_event_t", "topic", offset_of!(EventV1, topic)),
        ("plugbay_event_t", "action", offset_of!(EventV1, action)),
        ("plugbay_event_t", "payload", offset_of!(EventV1, payload)),
        ("plugbay_event_t", "content_type", offset_of!(EventV1, content_type)),
        ("plugbay_event_t", "source", offset_of!(EventV1, source)),
        ("plugbay_event_t", "timestamp_ms", offset_of!(EventV1, timestamp_ms)),
        ("plugbay_host_api_v1_t", "", size_of::<HostApiV1>()),
        ("plugbay_host_api_v1_t", "host_ctx", offset_of!(HostApiV1, host_ctx)),
        ("plugbay_host_api_v1_t", "log", offset_of!(HostApiV1, log)),
        ("plugbay_host_api_v1_t", "publish", offset_of!(HostApiV1, publish)),
        ("plugbay_host_api_v1_t", "invoke", offset_of!(HostApiV1, invoke)),
        ("plugbay_host_api_v1_t", "free_buf", offset_of!(HostApiV1, free_buf)),
        ("plugbay_plugin_v1_t", "", size_of::<PluginV1>()),
        ("plugbay_plugin_v1_t", "flags", offset_of!(PluginV1, flags)),
        ("plugbay_plugin_v1_t", "describe", offset_of!(PluginV1, describe)),
        ("plugbay_plugin_v1_t", "init", offset_of!(PluginV1, init)),
        ("plugbay_plugin_v1_t", "call", offset_of!(PluginV1, call)),
        ("plugbay_plugin_v1_t", "on_event", offset_of!(PluginV1, on_event)),
        ("plugbay_plugin_v1_t", "shutdown", offset_of!(PluginV1, shutdown)),
        ("plugbay_plugin_v1_t", "free_buf", offset_of!(PluginV1, free_buf)),
        ("plugbay_plugin_v1_t", "snapshot", offset_of!(PluginV1, snapshot)),
        ("plugbay_plugin_v1_t", "restore", offset_of!(PluginV1, restore)),
    ]
    .into_iter()
}
