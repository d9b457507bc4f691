//! The native runtime: dynamic libraries behind the C ABI of `include/plugbay.h`.
//!
//! # What it guarantees
//! - The library is opened from a private, sealed copy of the bytes the host read (a
//!   `memfd` on Linux), so replacing the file on disk never changes the code that runs and
//!   the loader's cache never hands back an old version.
//! - Exactly one symbol is resolved, `plugbay_plugin_v1`. Its table is checked before any
//!   plugin function runs: ABI version first ("built for ABI 2, this host speaks 1"), then
//!   the table's size, then every function pointer (no NULL is ever called).
//! - A call runs on the caller's thread: no hand-off, no queue. Calls to a plugin that does
//!   not declare `PLUGBAY_FLAG_THREAD_SAFE` are serialised per instance, and a re-entrant
//!   call into such an instance (through `invoke`) is refused instead of deadlocking.
//! - The instance is shut down when its last reference drops, so a call still in flight
//!   keeps its code mapped. The library is closed only if it declares
//!   `PLUGBAY_FLAG_UNLOADABLE`; otherwise it stays mapped for the life of the process.
//!
//! # What it cannot guarantee
//! Native code shares the host's address space: a plugin that crashes (SIGSEGV, abort)
//! takes the host process with it, and a call cannot be pre-empted once it runs. Run code
//! you do not trust on the `process` or `wasm` runtimes.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use plugbay_abi::{self as abi, Buf, CallV1, EventV1, HostApiV1, Output, PluginV1, Str};

use crate::bus::Event;
use crate::call::{Call, ContentType, Payload};
use crate::error::{Code, Error, Result};
use crate::manifest::RuntimeKind;
use crate::runtime::{
    Artifact, BoxFuture, CallOutcome, Description, HostCallbacks, Instance, InstanceContext, Invocation,
    Loaded, LogLevel, Runtime,
};

#[cfg(target_os = "linux")]
mod elf_check;
mod private_copy;

/// Longest description a plugin may return.
const MAX_DESCRIPTION_BYTES: usize = 1 << 20;
/// Longest error message kept from a plugin (longer ones are cut).
const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// The native runtime. Stateless: every loaded library carries its own handle.
#[derive(Debug, Default)]
pub struct NativeRuntime;

impl Runtime for NativeRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Native
    }

    fn load<'a>(&'a self, artifact: Artifact<'a>) -> BoxFuture<'a, Result<Arc<dyn Loaded>>> {
        Box::pin(
            async move { NativeLoaded::open(&artifact).map(|loaded| Arc::new(loaded) as Arc<dyn Loaded>) },
        )
    }
}

/// An open library; closed on drop only when the plugin declared itself unloadable.
struct Library {
    library: Option<libloading::Library>,
    /// The private copy it was opened from. Kept open as long as the library is loaded:
    /// the loader recognises libraries by path, so a path (`/proc/self/fd/N`) must not be
    /// reused for another library while this one is mapped.
    copy: Option<private_copy::PrivateCopy>,
    unloadable: bool,
}

impl Drop for Library {
    fn drop(&mut self) {
        if let Some(library) = self.library.take() {
            if self.unloadable {
                drop(library);
            } else {
                // Kept mapped on purpose: the plugin did not declare PLUGBAY_FLAG_UNLOADABLE,
                // and dlclose under thread-local destructors or leaked threads is a crash.
                std::mem::forget(library);
                std::mem::forget(self.copy.take());
            }
        }
    }
}

/// Reads the file name part of a path for messages.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// A loaded and checked native library.
pub struct NativeLoaded {
    /// The table; valid while `library` is alive (it is only ever used beside it).
    table: &'static PluginV1,
    library: Arc<Library>,
    description: Description,
    thread_safe: bool,
}

/// What a native library's table says, for `plugbay inspect`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NativeInfo {
    /// The ABI version in the table.
    pub abi_version: u32,
    /// The table's size in bytes as the plugin built it.
    pub struct_size: u32,
    /// The raw `flags` bits.
    pub flags: u32,
    /// `PLUGBAY_FLAG_THREAD_SAFE`: calls may run concurrently.
    pub thread_safe: bool,
    /// `PLUGBAY_FLAG_UNLOADABLE`: the library may be closed.
    pub unloadable: bool,
    /// The table's entries (all must be set for a table to be accepted).
    pub functions: Vec<&'static str>,
    /// What describe returned.
    pub description: Description,
}

/// Opens a native artifact exactly as a load does (ELF check, private copy, one symbol,
/// table checks, describe) and reports its table, without creating an instance.
///
/// # Errors
/// The same errors as loading the plugin.
pub fn inspect(artifact: Artifact<'_>) -> Result<NativeInfo> {
    let loaded = NativeLoaded::open(&artifact)?;
    let table = loaded.table;
    Ok(NativeInfo {
        abi_version: table.abi_version,
        struct_size: table.struct_size,
        flags: table.flags,
        thread_safe: loaded.thread_safe,
        unloadable: loaded.unloadable(),
        functions: vec!["describe", "init", "call", "on_event", "shutdown", "free_buf"],
        description: loaded.description.clone(),
    })
}

impl NativeLoaded {
    fn open(artifact: &Artifact<'_>) -> Result<NativeLoaded> {
        let path = artifact.path;
        if artifact.bytes.is_empty() {
            return Err(Error::precondition(format!(
                "{} is empty (0 bytes), not a native library",
                shown(path)
            )));
        }
        #[cfg(target_os = "linux")]
        elf_check::check(&artifact.bytes).map_err(|reason| {
            Error::precondition(format!("{} is not a loadable native library: {reason}", shown(path)))
        })?;
        let copy = private_copy::PrivateCopy::new(&artifact.bytes).map_err(|error| {
            Error::internal(format!("cannot make a private copy of {}: {error}", shown(path)))
        })?;
        let copy_path = copy.path().display().to_string();
        // SAFETY: opening a library runs its initialisers; that is what loading a native
        // plugin means, and why native plugins must be trusted code (see the module docs).
        let opened = unsafe { open_library(copy.path()) };
        let library = opened.map_err(|error| {
            let reason = std::error::Error::source(&error)
                .map_or_else(|| error.to_string(), |cause| cause.to_string());
            let reason = reason.replace(&copy_path, "the private copy");
            Error::precondition(format!("{} is not a loadable native library: {reason}", shown(path)))
        })?;
        // SAFETY: we only read the symbol's address here; its type is checked by the
        // contract (`include/plugbay.h`) and every field of the table is validated below
        // before anything else in the library is called.
        let entry: abi::EntryFn = match unsafe { library.get::<abi::EntryFn>(abi::ENTRY_SYMBOL) } {
            Ok(symbol) => *symbol,
            Err(_) => {
                return Err(Error::precondition(format!(
                    "{} does not export `plugbay_plugin_v1`, the one symbol the host resolves \
                     (build it against include/plugbay.h or with plugbay-sdk's export_plugin!)",
                    shown(path)
                )));
            }
        };
        // SAFETY: the entry takes no arguments and returns a pointer; it is the plugin's
        // documented constructor of the static table.
        let table_ptr = unsafe { entry() };
        // SAFETY: `table_ptr` is checked for NULL and its first field read alone, so a table
        // of another ABI version (possibly shorter) is never read past its version.
        let table = unsafe { check_table(table_ptr, path)? };
        let manifest_abi = artifact.manifest.plugin.abi;
        if manifest_abi != table.abi_version {
            return Err(Error::precondition(format!(
                "plugin.toml says abi = {manifest_abi} but {} is built for ABI {}",
                shown(path),
                table.abi_version
            ))
            .with_field("plugin.abi"));
        }
        let library = Arc::new(Library {
            library: Some(library),
            copy: Some(copy),
            unloadable: table.flags & abi::FLAG_UNLOADABLE != 0,
        });
        let description = describe(table, path)?;
        Ok(NativeLoaded {
            table,
            library,
            description,
            thread_safe: table.flags & abi::FLAG_THREAD_SAFE != 0,
        })
    }

    /// Whether the library declared `PLUGBAY_FLAG_UNLOADABLE`.
    pub fn unloadable(&self) -> bool {
        self.library.unloadable
    }
}

/// Opens a library with every symbol bound now, so a missing dependency fails here.
///
/// # Safety
/// Runs the library's initialisers.
unsafe fn open_library(path: &Path) -> std::result::Result<libloading::Library, libloading::Error> {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: as this function's contract.
        unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(libloading::Library::from)
    }
    #[cfg(not(unix))]
    {
        // SAFETY: as this function's contract.
        unsafe { libloading::Library::new(path) }
    }
}

/// Validates the table a plugin's entry returned.
///
/// # Safety
/// `table` must be NULL or point to at least 4 readable bytes; if its version is
/// [`abi::ABI_VERSION`] and its size field is large enough, to a whole [`PluginV1`] that
/// lives as long as the library.
unsafe fn check_table(table: *const PluginV1, path: &Path) -> Result<&'static PluginV1> {
    if table.is_null() {
        return Err(Error::precondition(format!("{}: plugbay_plugin_v1() returned NULL", shown(path))));
    }
    // SAFETY: non-NULL, and every ABI version starts with a u32 version field.
    let version = unsafe { table.cast::<u32>().read_unaligned() };
    if version != abi::ABI_VERSION {
        return Err(Error::precondition(format!(
            "{} is built for ABI {version}, this host speaks {}",
            shown(path),
            abi::ABI_VERSION
        )));
    }
    // SAFETY: a version-1 table starts with (version, size); reading the size is in bounds.
    let size = unsafe { table.cast::<u32>().add(1).read_unaligned() } as usize;
    if size < PluginV1::BASE_SIZE {
        return Err(Error::precondition(format!(
            "{}: its ABI 1 table is {size} bytes, smaller than the {} the ABI defines",
            shown(path),
            PluginV1::BASE_SIZE
        )));
    }
    let table: &'static PluginV1 = if size >= size_of::<PluginV1>() {
        // SAFETY: version and size say this is a whole v1 table, static in the library.
        unsafe { &*table }
    } else {
        // A table from before the optional fields were appended: copy the part it has and
        // leave the rest NULL (never read past the plugin's table). The copy lives as long
        // as the library may be used: leaked, a few dozen bytes per load of such a plugin.
        let mut copy = PluginV1 {
            abi_version: 0,
            struct_size: 0,
            flags: 0,
            reserved: 0,
            describe: None,
            init: None,
            call: None,
            on_event: None,
            shutdown: None,
            free_buf: None,
            snapshot: None,
            restore: None,
        };
        // SAFETY: the plugin's table has at least BASE_SIZE readable bytes (its size says
        // so); `copy` is a PluginV1, at least that large; the two do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                table.cast::<u8>(),
                (&raw mut copy).cast::<u8>(),
                PluginV1::BASE_SIZE,
            )
        };
        Box::leak(Box::new(copy))
    };
    let missing = [
        ("describe", table.describe.is_none()),
        ("init", table.init.is_none()),
        ("call", table.call.is_none()),
        ("on_event", table.on_event.is_none()),
        ("shutdown", table.shutdown.is_none()),
        ("free_buf", table.free_buf.is_none()),
    ];
    if let Some((name, _)) = missing.iter().find(|(_, is_null)| *is_null) {
        return Err(Error::precondition(format!(
            "{}: the table's `{name}` function pointer is NULL; every entry must be set",
            shown(path)
        )));
    }
    Ok(table)
}

/// Calls the plugin's `describe` and parses its JSON.
fn describe(table: &'static PluginV1, path: &Path) -> Result<Description> {
    let mut out = Output::EMPTY;
    let describe = table.describe.expect("checked by check_table");
    // SAFETY: checked table; NULL instance as the contract says for describe; `out` is ours.
    let status = unsafe { describe(std::ptr::null_mut(), &mut out) };
    let taken = Taken::take(table, std::ptr::null_mut(), out);
    if status != abi::STATUS_OK {
        return Err(taken.into_error(status).with_field("describe"));
    }
    if taken.payload.len() > MAX_DESCRIPTION_BYTES {
        return Err(Error::precondition(format!(
            "{}: describe returned {} bytes, more than the {MAX_DESCRIPTION_BYTES} allowed",
            shown(path),
            taken.payload.len()
        )));
    }
    let text = std::str::from_utf8(&taken.payload).map_err(|error| {
        Error::precondition(format!("{}: describe returned bytes that are not UTF-8 ({error})", shown(path)))
    })?;
    serde_json::from_str(text).map_err(|error| {
        Error::precondition(format!(
            "{}: describe returned JSON that is not a description \
             ({{\"id\", \"version\", \"provides\"}}): {error}",
            shown(path)
        ))
    })
}

/// The buffers of one plugin output, copied out and already freed on the plugin's side.
struct Taken {
    payload: Vec<u8>,
    error: Vec<u8>,
}

impl Taken {
    /// Copies and frees every buffer of `out`.
    fn take(table: &PluginV1, instance: *mut c_void, out: Output) -> Taken {
        let copy = |buf: Buf, limit: usize| -> Vec<u8> {
            if buf.is_empty() {
                return Vec::new();
            }
            // SAFETY: the plugin wrote `len` bytes at `ptr` and keeps them until free_buf.
            let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len.min(limit)) }.to_vec();
            free(table, instance, buf);
            bytes
        };
        free(table, instance, out.content_type);
        Taken { payload: copy(out.payload, usize::MAX), error: copy(out.error, MAX_ERROR_MESSAGE_BYTES) }
    }

    fn into_error(self, status: abi::Status) -> Error {
        error_from_status(status, &self.error)
    }
}

/// Releases a plugin-allocated buffer through the plugin's own free function.
fn free(table: &PluginV1, instance: *mut c_void, buf: Buf) {
    if buf.is_empty() {
        return;
    }
    let free_buf = table.free_buf.expect("checked by check_table");
    // SAFETY: `buf` came from this plugin's output and is freed exactly once.
    unsafe { free_buf(instance, buf) };
}

/// A plugin's failure status and message as an [`Error`].
fn error_from_status(status: abi::Status, message: &[u8]) -> Error {
    let mut message = String::from_utf8_lossy(message).into_owned();
    if message.is_empty() {
        message = "the plugin returned an error without a message".to_owned();
    }
    match Code::from_status(status) {
        Some(code) => Error::new(code, message),
        None => Error::internal(format!("the plugin returned unknown status {status}: {message}")),
    }
}

impl Loaded for NativeLoaded {
    fn description(&self) -> &Description {
        &self.description
    }

    fn instantiate(&self, context: InstanceContext) -> BoxFuture<'_, Result<Arc<dyn Instance>>> {
        Box::pin(async move {
            self.instantiate_now(context).map(|instance| Arc::new(instance) as Arc<dyn Instance>)
        })
    }
}

impl NativeLoaded {
    fn instantiate_now(&self, context: InstanceContext) -> Result<NativeInstance> {
        let host_ctx =
            Box::new(HostContext { plugin: context.plugin.clone(), callbacks: context.callbacks.clone() });
        let host_api = Box::new(HostApiV1 {
            abi_version: abi::ABI_VERSION,
            struct_size: size_of::<HostApiV1>() as u32,
            host_ctx: std::ptr::from_ref::<HostContext>(&host_ctx).cast_mut().cast::<c_void>(),
            log: host_log,
            publish: host_publish,
            invoke: host_invoke,
            free_buf: host_free_buf,
        });
        let init = self.table.init.expect("checked by check_table");
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut out = Output::EMPTY;
        // SAFETY: checked table; the host API table and context are boxed and live as long
        // as the instance (both move into `NativeInstance`); `config` outlives the call.
        let status = unsafe { init(&*host_api, Str::from_bytes(&context.config), &mut instance, &mut out) };
        let taken = Taken::take(self.table, std::ptr::null_mut(), out);
        if status != abi::STATUS_OK {
            return Err(taken.into_error(status).with_field("init"));
        }
        Ok(NativeInstance {
            table: self.table,
            instance: InstancePtr(instance),
            serial: (!self.thread_safe).then(|| Mutex::new(())),
            max_payload_bytes: context.max_payload_bytes,
            _host_api: host_api,
            _host_ctx: host_ctx,
            _library: self.library.clone(),
        })
    }
}

/// The plugin's opaque instance pointer.
struct InstancePtr(*mut c_void);

// SAFETY: the pointer is only passed back to the plugin's own functions. The contract lets
// the host call them from any thread; concurrent calls happen only when the plugin declared
// PLUGBAY_FLAG_THREAD_SAFE, and are serialised by `NativeInstance::serial` otherwise.
unsafe impl Send for InstancePtr {}
// SAFETY: as above.
unsafe impl Sync for InstancePtr {}

/// What the host API's `host_ctx` points to.
struct HostContext {
    plugin: Arc<str>,
    callbacks: Arc<dyn HostCallbacks>,
}

/// One native instance.
pub struct NativeInstance {
    table: &'static PluginV1,
    instance: InstancePtr,
    /// Present when the plugin is not thread-safe: held for the duration of every call.
    serial: Option<Mutex<()>>,
    max_payload_bytes: usize,
    _host_api: Box<HostApiV1>,
    _host_ctx: Box<HostContext>,
    /// Dropped last: keeps the code mapped while the instance exists.
    _library: Arc<Library>,
}

thread_local! {
    /// The non-thread-safe instances whose serial lock this thread holds, to refuse
    /// re-entrant calls instead of deadlocking.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Holds an instance's serial lock (if any) for one call.
struct SerialGuard<'a> {
    _lock: Option<parking_lot::MutexGuard<'a, ()>>,
    key: Option<usize>,
}

impl Drop for SerialGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            HELD.with(|held| held.borrow_mut().retain(|k| *k != key));
        }
    }
}

impl NativeInstance {
    fn enter(&self) -> Result<SerialGuard<'_>> {
        let Some(serial) = &self.serial else { return Ok(SerialGuard { _lock: None, key: None }) };
        let key = self.instance.0 as usize;
        if HELD.with(|held| held.borrow().contains(&key)) {
            return Err(Error::precondition(
                "re-entrant call into a plugin that is not thread-safe (it is already serving a call on \
                 this thread); declare PLUGBAY_FLAG_THREAD_SAFE or avoid calling yourself through the host",
            ));
        }
        let lock = serial.lock();
        HELD.with(|held| held.borrow_mut().push(key));
        Ok(SerialGuard { _lock: Some(lock), key: Some(key) })
    }

    /// Runs the plugin's call and hands its output to `receive` before freeing it.
    fn call_raw<R>(
        &self,
        method: &str,
        payload: &[u8],
        content_type: &str,
        receive: impl FnOnce(&[u8], &[u8]) -> Result<R>,
    ) -> Result<R> {
        let _guard = self.enter()?;
        let call = CallV1 {
            struct_size: size_of::<CallV1>() as u32,
            reserved: 0,
            method: Str::from_bytes(method.as_bytes()),
            payload: Str::from_bytes(payload),
            content_type: Str::from_bytes(content_type.as_bytes()),
        };
        let mut out = Output::EMPTY;
        let call_fn = self.table.call.expect("checked by check_table");
        // SAFETY: checked table; the instance is alive (we hold `self`); `call` and the
        // bytes it borrows outlive the call; serialised by `_guard` unless thread-safe.
        let status = unsafe { call_fn(self.instance.0, &call, &mut out) };
        if status != abi::STATUS_OK {
            let error = Taken::take(self.table, self.instance.0, out).into_error(status);
            return Err(error);
        }
        let result = self.lend(&out, receive);
        free(self.table, self.instance.0, out.payload);
        free(self.table, self.instance.0, out.content_type);
        free(self.table, self.instance.0, out.error);
        result
    }

    /// Lends a successful output's payload and content type to `receive`.
    fn lend<R>(&self, out: &Output, receive: impl FnOnce(&[u8], &[u8]) -> Result<R>) -> Result<R> {
        if out.payload.len > self.max_payload_bytes {
            return Err(Error::new(
                Code::ResourceExhausted,
                format!(
                    "the plugin returned {} bytes, more than the host's limit of {} (max_payload_bytes)",
                    out.payload.len, self.max_payload_bytes
                ),
            ));
        }
        let view = |buf: Buf| -> &[u8] {
            if buf.is_empty() {
                &[]
            } else {
                // SAFETY: the plugin wrote `len` bytes at `ptr`, kept until we free them.
                unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }
            }
        };
        let content_type = view(out.content_type);
        receive(view(out.payload), &content_type[..content_type.len().min(1024)])
    }
}

fn content_type_of(raw: &[u8], request: &ContentType) -> Result<ContentType> {
    if raw.is_empty() {
        return Ok(request.clone());
    }
    match std::str::from_utf8(raw) {
        Ok(text) => Ok(ContentType::new(text)),
        Err(_) => Err(Error::internal("the plugin returned a content type that is not UTF-8")),
    }
}

thread_local! {
    /// The depth ([`Call::depth`]) of the native call this thread is serving: the plugin's
    /// host API `invoke` runs on the same thread, inside that call, one deeper.
    static SERVING_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Sets [`SERVING_DEPTH`] for one call and puts the outer call's back when dropped.
struct Serving(u32);

impl Serving {
    fn at(depth: u32) -> Serving {
        Serving(SERVING_DEPTH.replace(depth))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        SERVING_DEPTH.set(self.0);
    }
}

impl Instance for NativeInstance {
    fn call(&self, invocation: Invocation<'_>) -> CallOutcome {
        let Invocation { method, payload, depth, .. } = invocation;
        let _serving = Serving::at(depth);
        CallOutcome::Done(self.call_raw(
            method,
            &payload.bytes,
            payload.content_type.as_str(),
            |bytes, ct| {
                Ok(Payload {
                    bytes: Bytes::copy_from_slice(bytes),
                    content_type: content_type_of(ct, &payload.content_type)?,
                })
            },
        ))
    }

    fn call_borrowed(
        &self,
        method: &str,
        payload: &[u8],
        content_type: &str,
        receive: &mut dyn FnMut(&[u8], &str),
    ) -> Option<Result<()>> {
        let _serving = Serving::at(0);
        Some(self.call_raw(method, payload, content_type, |bytes, ct| {
            let ct = if ct.is_empty() {
                content_type
            } else {
                std::str::from_utf8(ct)
                    .map_err(|_| Error::internal("the plugin returned a content type that is not UTF-8"))?
            };
            receive(bytes, ct);
            Ok(())
        }))
    }

    fn on_event(&self, event: &Event) -> CallOutcome {
        let result = self.enter().and_then(|_guard| {
            let raw = EventV1 {
                struct_size: size_of::<EventV1>() as u32,
                reserved: 0,
                topic: Str::from_bytes(event.topic.as_bytes()),
                action: Str::from_bytes(event.action.as_bytes()),
                payload: Str::from_bytes(&event.payload.bytes),
                content_type: Str::from_bytes(event.payload.content_type.as_str().as_bytes()),
                source: Str::from_bytes(event.source.as_bytes()),
                timestamp_ms: event.timestamp_ms,
            };
            let mut out = Output::EMPTY;
            let on_event = self.table.on_event.expect("checked by check_table");
            // SAFETY: checked table; live instance; `raw` and its bytes outlive the call.
            let status = unsafe { on_event(self.instance.0, &raw, &mut out) };
            let taken = Taken::take(self.table, self.instance.0, out);
            if status == abi::STATUS_OK { Ok(Payload::default()) } else { Err(taken.into_error(status)) }
        });
        CallOutcome::Done(result)
    }

    fn snapshot(&self) -> crate::runtime::BoxFuture<'_, Result<Option<Bytes>>> {
        let result = self.state_call(|table| {
            let snapshot = table.snapshot?;
            // SAFETY: checked table with the optional fields; live instance; `out` is ours.
            Some(Box::new(move |instance, out: &mut Output| unsafe { snapshot(instance, out) }))
        });
        Box::pin(async move { result.transpose().map(|state| state.map(Bytes::from)) })
    }

    fn restore(&self, state: Bytes) -> crate::runtime::BoxFuture<'_, Result<()>> {
        let result = self.state_call(|table| {
            let restore = table.restore?;
            let state = state.clone();
            // SAFETY: checked table with the optional fields; live instance; `state` is
            // borrowed for the call only; `out` is ours.
            Some(Box::new(move |instance, out: &mut Output| unsafe {
                restore(instance, Str::from_bytes(&state), out)
            }))
        });
        Box::pin(async move { result.transpose().map(drop) })
    }
}

impl NativeInstance {
    /// Runs an optional state function (snapshot or restore) under the instance's serial
    /// lock; `None` when the plugin's table has no such function.
    fn state_call(
        &self,
        function: impl FnOnce(&PluginV1) -> Option<Box<dyn FnOnce(*mut c_void, &mut Output) -> abi::Status + '_>>,
    ) -> Option<Result<Vec<u8>>> {
        if !self.table.has_snapshots() {
            return None;
        }
        let run = function(self.table)?;
        Some(self.enter().and_then(|_guard| {
            let mut out = Output::EMPTY;
            let status = run(self.instance.0, &mut out);
            let taken = Taken::take(self.table, self.instance.0, out);
            if status == abi::STATUS_OK { Ok(taken.payload) } else { Err(taken.into_error(status)) }
        }))
    }
}

impl Drop for NativeInstance {
    fn drop(&mut self) {
        let shutdown = self.table.shutdown.expect("checked by check_table");
        // SAFETY: the last reference is gone, so no call is running; shutdown is called
        // exactly once, before the host API table and the library are released.
        unsafe { shutdown(self.instance.0) };
    }
}

// ---- the host API, as C functions handed to the plugin ----

/// Allocates a host buffer (released by [`host_free_buf`]).
fn host_buf(bytes: Vec<u8>) -> Buf {
    if bytes.is_empty() {
        return Buf::EMPTY;
    }
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    Buf { ptr: Box::into_raw(boxed).cast::<u8>(), len }
}

/// Writes `result` into the plugin's `out` (if it gave one) and returns the status.
///
/// # Safety
/// `out` must be NULL or writable.
unsafe fn answer(out: *mut Output, result: Result<Option<Payload>>) -> abi::Status {
    let (status, output) = match result {
        Ok(payload) => {
            let mut output = Output::EMPTY;
            if let Some(payload) = payload {
                output.payload = host_buf(payload.bytes.to_vec());
                output.content_type = host_buf(payload.content_type.as_str().as_bytes().to_vec());
            }
            (abi::STATUS_OK, output)
        }
        Err(error) => {
            let mut output = Output::EMPTY;
            output.error = host_buf(error.to_string().into_bytes());
            (error.code().status(), output)
        }
    };
    // SAFETY: the caller guarantees `out` is NULL or writable.
    match unsafe { out.as_mut() } {
        Some(out) => *out = output,
        None => {
            for buf in [output.payload, output.content_type, output.error] {
                // SAFETY: made by host_buf just above.
                unsafe { host_free_buf(std::ptr::null_mut(), buf) };
            }
        }
    }
    status
}

/// Borrows a `Str` from the plugin as UTF-8.
///
/// # Safety
/// `s` must describe readable bytes for the duration of the current call.
unsafe fn utf8<'a>(s: Str, what: &str) -> Result<&'a str> {
    // SAFETY: as the function's contract.
    std::str::from_utf8(unsafe { s.as_bytes() })
        .map_err(|_| Error::invalid(format!("the {what} is not UTF-8")))
}

/// Recovers the host context.
///
/// # Safety
/// `ctx` must be the `host_ctx` of a live instance's host API table.
unsafe fn context<'a>(ctx: *mut c_void) -> &'a HostContext {
    // SAFETY: as the function's contract: it points to the boxed HostContext.
    unsafe { &*ctx.cast::<HostContext>() }
}

fn catch<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

unsafe extern "C" fn host_log(ctx: *mut c_void, level: i32, message: Str) {
    catch((), || {
        // SAFETY: the plugin passes back our host_ctx and a message valid for this call.
        let (ctx, message) = unsafe { (context(ctx), message.as_bytes()) };
        ctx.callbacks.log(&ctx.plugin, LogLevel::from_raw(level), &String::from_utf8_lossy(message));
    })
}

unsafe extern "C" fn host_publish(
    ctx: *mut c_void,
    topic: Str,
    action: Str,
    payload: Str,
    content_type: Str,
    out: *mut Output,
) -> abi::Status {
    let result = catch(Err(Error::internal("the host panicked while publishing")), || {
        // SAFETY: our host_ctx; the strings are valid for this call.
        let ctx = unsafe { context(ctx) };
        // SAFETY: as above.
        let (topic, action, content_type, bytes) = unsafe {
            (
                utf8(topic, "topic")?,
                utf8(action, "action")?,
                utf8(content_type, "content type")?,
                payload.as_bytes(),
            )
        };
        let payload = Payload::with_type(Bytes::copy_from_slice(bytes), ContentType::new(content_type));
        ctx.callbacks.publish(&ctx.plugin, topic, action, payload).map(|()| None)
    });
    // SAFETY: the plugin passes a writable output or NULL.
    unsafe { answer(out, result) }
}

unsafe extern "C" fn host_invoke(
    ctx: *mut c_void,
    target: Str,
    method: Str,
    payload: Str,
    content_type: Str,
    out: *mut Output,
) -> abi::Status {
    let result = catch(Err(Error::internal("the host panicked while invoking")), || {
        // SAFETY: our host_ctx; the strings are valid for this call.
        let ctx = unsafe { context(ctx) };
        // SAFETY: as above.
        let (target, method, content_type, bytes) = unsafe {
            (
                utf8(target, "target")?,
                utf8(method, "method")?,
                utf8(content_type, "content type")?,
                payload.as_bytes(),
            )
        };
        let payload = Payload::with_type(Bytes::copy_from_slice(bytes), ContentType::new(content_type));
        let call = Call::new(target, method, payload).nested_in(SERVING_DEPTH.get());
        ctx.callbacks.invoke(&ctx.plugin, call).map(Some)
    });
    // SAFETY: the plugin passes a writable output or NULL.
    unsafe { answer(out, result) }
}

unsafe extern "C" fn host_free_buf(_ctx: *mut c_void, buf: Buf) {
    if buf.is_empty() {
        return;
    }
    // SAFETY: `buf` came from `host_buf` (a leaked Box<[u8]> of exactly `len` bytes) and
    // the plugin frees each buffer once.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(buf.ptr, buf.len)) });
}
