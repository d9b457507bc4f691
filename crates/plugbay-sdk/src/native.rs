//! The C ABI behind [`export_plugin!`](crate::export_plugin): one `extern "C"` function per
//! table entry, generic over the [`Plugin`] type. Everything here catches panics: no unwind
//! ever crosses into the host.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use plugbay_abi::{self as abi, Buf, CallV1, EventV1, HostApiV1, Output as RawOutput, PluginV1, Str};

use crate::Plugin;
use crate::host::Host;
use crate::types::{ErrorCode, Event, Input, PluginError};

/// Exports `plugin` as a native plugbay plugin: defines the `plugbay_plugin_v1` symbol.
///
/// Use it once per `cdylib`, at the crate root: `plugbay_sdk::export_plugin!(MyPlugin);`
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        static __PLUGBAY_PLUGIN_V1: $crate::abi::PluginV1 = $crate::native::table::<$plugin>();

        /// The entry symbol of the plugbay native ABI, version 1.
        #[unsafe(no_mangle)]
        pub extern "C" fn plugbay_plugin_v1() -> *const $crate::abi::PluginV1 {
            &__PLUGBAY_PLUGIN_V1
        }
    };
}

/// The table for plugin type `P` (used by `export_plugin!`).
pub const fn table<P: Plugin>() -> PluginV1 {
    let unloadable = if P::UNLOADABLE { abi::FLAG_UNLOADABLE } else { 0 };
    PluginV1 {
        abi_version: abi::ABI_VERSION,
        struct_size: size_of::<PluginV1>() as u32,
        flags: abi::FLAG_THREAD_SAFE | unloadable,
        reserved: 0,
        describe: Some(describe::<P>),
        init: Some(init::<P>),
        call: Some(call::<P>),
        on_event: Some(on_event::<P>),
        shutdown: Some(shutdown::<P>),
        free_buf: Some(free_buf),
        snapshot: if P::SNAPSHOTS { Some(snapshot::<P>) } else { None },
        restore: if P::SNAPSHOTS { Some(restore::<P>) } else { None },
    }
}

/// Moves bytes to the host; released by [`free_buf`].
fn give(bytes: Vec<u8>) -> Buf {
    if bytes.is_empty() {
        return Buf::EMPTY;
    }
    let boxed: Box<[u8]> = bytes.into_boxed_slice();
    let len = boxed.len();
    Buf { ptr: Box::into_raw(boxed).cast::<u8>(), len }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned());
    format!("the plugin panicked: {text}")
}

/// Runs `body`, turning its error or panic into a status plus a message in `out`.
///
/// # Safety
/// `out` must be NULL or point to a writable `plugbay_output_t`.
unsafe fn guarded(
    out: *mut RawOutput,
    body: impl FnOnce(&mut RawOutput) -> Result<(), PluginError>,
) -> abi::Status {
    let mut local = RawOutput::EMPTY;
    let result = catch_unwind(AssertUnwindSafe(|| body(&mut local)));
    let status = match result {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err(error)) => {
            local.error = give(error.message.into_bytes());
            error.code.status()
        }
        Err(panic) => {
            local.error = give(panic_message(&*panic).into_bytes());
            ErrorCode::Internal.status()
        }
    };
    // SAFETY: the caller guarantees `out` is NULL or writable.
    match unsafe { out.as_mut() } {
        Some(out) => *out = local,
        None => release(local),
    }
    status
}

fn release(output: RawOutput) {
    for buf in [output.payload, output.content_type, output.error] {
        // SAFETY: every buffer in a local output came from `give`.
        unsafe { free_buf(std::ptr::null_mut(), buf) };
    }
}

fn text<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, PluginError> {
    std::str::from_utf8(bytes).map_err(|_| PluginError::invalid_argument(format!("the {what} is not UTF-8")))
}

unsafe extern "C" fn describe<P: Plugin>(_instance: *mut c_void, out: *mut RawOutput) -> abi::Status {
    let body = |out: &mut RawOutput| {
        out.payload = give(serde_json::to_vec(&P::describe())?);
        Ok(())
    };
    // SAFETY: the host passes a writable output.
    unsafe { guarded(out, body) }
}

unsafe extern "C" fn init<P: Plugin>(
    host: *const HostApiV1,
    config: Str,
    instance: *mut *mut c_void,
    out: *mut RawOutput,
) -> abi::Status {
    let body = |_: &mut RawOutput| {
        if instance.is_null() {
            return Err(PluginError::invalid_argument("init was given no place for the instance"));
        }
        // SAFETY: the host keeps the table valid until shutdown, and the config bytes
        // for the duration of this call.
        let (host, config) = unsafe { (Host::from_raw(host), config.as_bytes()) };
        let plugin = P::init(host, config)?;
        // SAFETY: checked non-NULL above; the host passes a writable pointer.
        unsafe { *instance = Box::into_raw(Box::new(plugin)).cast::<c_void>() };
        Ok(())
    };
    // SAFETY: the host passes a writable output.
    unsafe { guarded(out, body) }
}

unsafe extern "C" fn call<P: Plugin>(
    instance: *mut c_void,
    call: *const CallV1,
    out: *mut RawOutput,
) -> abi::Status {
    let body = |out: &mut RawOutput| {
        // SAFETY: `instance` came from `init::<P>` and is alive until shutdown; `call`
        // and the bytes it points to are valid for this call.
        let (plugin, call) = unsafe { (&*instance.cast::<P>(), &*call) };
        // SAFETY: as above.
        let (method, payload, content_type) =
            unsafe { (call.method.as_bytes(), call.payload.as_bytes(), call.content_type.as_bytes()) };
        let input = Input { bytes: payload, content_type: text(content_type, "content type")? };
        let output = plugin.call(text(method, "method name")?, input)?;
        out.payload = give(output.bytes);
        out.content_type = give(output.content_type.map(String::into_bytes).unwrap_or_default());
        Ok(())
    };
    // SAFETY: the host passes a writable output.
    unsafe { guarded(out, body) }
}

unsafe extern "C" fn on_event<P: Plugin>(
    instance: *mut c_void,
    event: *const EventV1,
    out: *mut RawOutput,
) -> abi::Status {
    let body = |_: &mut RawOutput| {
        // SAFETY: `instance` came from `init::<P>`; the event is valid for this call.
        let (plugin, raw) = unsafe { (&*instance.cast::<P>(), &*event) };
        // SAFETY: as above.
        let event = unsafe {
            Event {
                topic: text(raw.topic.as_bytes(), "topic")?,
                action: text(raw.action.as_bytes(), "action")?,
                payload: raw.payload.as_bytes(),
                content_type: text(raw.content_type.as_bytes(), "content type")?,
                source: text(raw.source.as_bytes(), "source")?,
                timestamp_ms: raw.timestamp_ms,
            }
        };
        plugin.on_event(event)
    };
    // SAFETY: the host passes a writable output.
    unsafe { guarded(out, body) }
}

unsafe extern "C" fn snapshot<P: Plugin>(instance: *mut c_void, out: *mut RawOutput) -> abi::Status {
    let body = |out: &mut RawOutput| {
        // SAFETY: `instance` came from `init::<P>` and is alive until shutdown.
        let plugin = unsafe { &*instance.cast::<P>() };
        out.payload = give(plugin.snapshot()?);
        Ok(())
    };
    // SAFETY: the host passes a writable output.
    unsafe { guarded(out, body) }
}

unsafe extern "C" fn restore<P: Plugin>(
    instance: *mut c_void,
    state: Str,
    out: *mut RawOutput,
) -> abi::Status {
    let body = |_: &mut RawOutput| {
        // SAFETY: `instance` came from `init::<P>`; `state` is valid for this call.
        let (plugin, state) = unsafe { (&*instance.cast::<P>(), state.as_bytes()) };
        plugin.restore(state)
    };
    // SAFETY: the host passes a writable output.
    unsafe { guarded(out, body) }
}

unsafe extern "C" fn shutdown<P: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: `instance` came from `init::<P>`'s Box and the host calls shutdown once.
    let plugin = unsafe { Box::from_raw(instance.cast::<P>()) };
    // A panic in shutdown or drop is swallowed: it must not unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(move || {
        plugin.shutdown();
        drop(plugin);
    }));
}

/// Releases a buffer made by [`give`].
unsafe extern "C" fn free_buf(_instance: *mut c_void, buf: Buf) {
    if buf.is_empty() {
        return;
    }
    // SAFETY: `buf` came from `give` (a leaked `Box<[u8]>` of exactly `len` bytes) and the
    // host frees each buffer once.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(buf.ptr, buf.len)) });
}
