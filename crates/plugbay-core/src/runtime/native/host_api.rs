//! The host API as C functions handed to a native plugin at init: `log`, `publish`,
//! `invoke` and `free_buf`, bridged onto [`HostCallbacks`]. A panic inside the host never
//! unwinds into the plugin: it becomes an `internal` status.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bytes::Bytes;
use plugbay_abi::{self as abi, Buf, HostApiV1, Output, Str};

use crate::call::{Call, ContentType, Payload};
use crate::error::{Error, Result};
use crate::runtime::{HostCallbacks, LogLevel};

/// The host's record of one native instance: what the host API's `host_ctx` points to.
/// Boxed, so its address is stable and unique while the instance lives.
pub(super) struct HostContext {
    /// The plugin id, for the callbacks.
    pub(super) plugin: Arc<str>,
    /// The host.
    pub(super) callbacks: Arc<dyn HostCallbacks>,
}

/// The host API table for the instance whose record is `context`. The table must not
/// outlive `context` (both are kept by the instance, until its shutdown returns).
pub(super) fn table(context: &HostContext) -> HostApiV1 {
    HostApiV1 {
        abi_version: abi::ABI_VERSION,
        struct_size: size_of::<HostApiV1>() as u32,
        host_ctx: std::ptr::from_ref::<HostContext>(context).cast_mut().cast::<c_void>(),
        log: host_log,
        publish: host_publish,
        invoke: host_invoke,
        free_buf: host_free_buf,
    }
}

thread_local! {
    /// The depth ([`Call::depth`]) of the native call this thread is serving: the plugin's
    /// host API `invoke` runs on the same thread, inside that call, one deeper.
    static SERVING_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Sets the depth of the call this thread serves for one call, and puts the outer call's
/// back when dropped.
pub(super) struct Serving(u32);

impl Serving {
    /// Serving a call of `depth` until dropped.
    pub(super) fn at(depth: u32) -> Serving {
        Serving(SERVING_DEPTH.replace(depth))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        SERVING_DEPTH.set(self.0);
    }
}

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

/// Runs `body`, turning a panic into `fallback` (a panic must not unwind into C).
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
