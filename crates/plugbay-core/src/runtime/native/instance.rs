//! One native instance: its creation (init), the call path, events, snapshots, and the
//! serialisation of plugins that are not thread-safe.

use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use plugbay_abi::{self as abi, Buf, CallV1, EventV1, HostApiV1, Output, Str};

use super::Library;
use super::host_api::{self, HostContext, Serving};
use super::table::Table;
use crate::bus::Event;
use crate::call::{ContentType, Payload};
use crate::error::{Code, Error, Result};
use crate::runtime::{BoxFuture, CallOutcome, Instance, InstanceContext, Invocation};

/// The plugin's opaque instance pointer. Plugins may return NULL or one static for every
/// instance, so it identifies nothing on the host's side.
struct InstancePtr(*mut c_void);

// SAFETY: the pointer is only passed back to the plugin's own functions. The contract lets
// the host call them from any thread; concurrent calls happen only when the plugin declared
// PLUGBAY_FLAG_THREAD_SAFE, and are serialised by `NativeInstance::serial` otherwise.
unsafe impl Send for InstancePtr {}
// SAFETY: as above.
unsafe impl Sync for InstancePtr {}

/// The serial lock of an instance that is not thread-safe.
struct Serial {
    /// Held for the duration of every call.
    lock: Mutex<()>,
    /// This instance among all native instances of the process, for [`HELD`].
    id: u64,
}

/// Ids for [`Serial::id`], never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// One native instance.
pub struct NativeInstance {
    table: Table,
    instance: InstancePtr,
    /// Present when the plugin is not thread-safe.
    serial: Option<Serial>,
    max_payload_bytes: usize,
    _host_api: Held<HostApiV1>,
    _host_ctx: Held<HostContext>,
    /// Dropped last: keeps the code mapped while the instance exists.
    _library: Arc<Library>,
}

/// A value the plugin holds a pointer to (the host API table, its context): allocated
/// once and freed only when this owner drops, so moving the owner (as a `Box` move would,
/// under Rust's aliasing rules) never invalidates the plugin's pointer.
struct Held<T>(std::ptr::NonNull<T>);

impl<T> Held<T> {
    fn new(value: T) -> Held<T> {
        Held(std::ptr::NonNull::from(Box::leak(Box::new(value))))
    }

    fn get(&self) -> &T {
        // SAFETY: allocated in `new` and freed only in `drop`; only shared references are
        // ever made from it.
        unsafe { self.0.as_ref() }
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::leak` in `new` and is freed once, here.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

// SAFETY: `Held<T>` owns its `T` exactly as a `Box<T>` does.
unsafe impl<T: Send> Send for Held<T> {}
// SAFETY: as above; it only hands out shared references.
unsafe impl<T: Sync> Sync for Held<T> {}

thread_local! {
    /// The ids of the non-thread-safe instances whose serial lock this thread holds, to
    /// refuse re-entrant calls instead of deadlocking.
    static HELD: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Holds an instance's serial lock (if any) for one call.
struct SerialGuard<'a> {
    _lock: Option<MutexGuard<'a, ()>>,
    id: Option<u64>,
}

impl Drop for SerialGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            HELD.with(|held| held.borrow_mut().retain(|held| *held != id));
        }
    }
}

impl NativeInstance {
    /// Runs the plugin's init with a fresh host API table and returns the instance.
    ///
    /// # Errors
    /// The plugin's init error, with its code and the field `init`.
    pub(super) fn init(
        table: Table,
        library: Arc<Library>,
        context: InstanceContext,
    ) -> Result<NativeInstance> {
        let host_ctx =
            Held::new(HostContext { plugin: context.plugin.clone(), callbacks: context.callbacks.clone() });
        let host_api = Held::new(host_api::table(host_ctx.get()));
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut out = Output::EMPTY;
        // SAFETY: checked table; the host API table and context are `Held` (allocated once,
        // freed only after shutdown), so the pointers the plugin keeps stay valid however the
        // instance moves; `config` outlives the call.
        let status = unsafe {
            (table.init)(host_api.get(), Str::from_bytes(&context.config), &mut instance, &mut out)
        };
        // The header's rule: a failed init's buffers are freed with a NULL instance, a
        // successful one's with the instance it made.
        if status != abi::STATUS_OK {
            return Err(table.take(std::ptr::null_mut(), out).into_error(status).with_field("init"));
        }
        let _ = table.take(instance, out);
        let serial = (!table.thread_safe())
            .then(|| Serial { lock: Mutex::new(()), id: NEXT_ID.fetch_add(1, Ordering::Relaxed) });
        Ok(NativeInstance {
            table,
            instance: InstancePtr(instance),
            serial,
            max_payload_bytes: context.max_payload_bytes,
            _host_api: host_api,
            _host_ctx: host_ctx,
            _library: library,
        })
    }

    /// Takes the serial lock of a plugin that is not thread-safe, refusing a call into an
    /// instance this thread is already serving.
    fn enter(&self) -> Result<SerialGuard<'_>> {
        let Some(serial) = &self.serial else { return Ok(SerialGuard { _lock: None, id: None }) };
        if HELD.with(|held| held.borrow().contains(&serial.id)) {
            return Err(Error::precondition(
                "re-entrant call into a plugin that is not thread-safe (it is already serving a call on \
                 this thread); declare PLUGBAY_FLAG_THREAD_SAFE or avoid calling yourself through the host",
            ));
        }
        let lock = serial.lock.lock();
        HELD.with(|held| held.borrow_mut().push(serial.id));
        Ok(SerialGuard { _lock: Some(lock), id: Some(serial.id) })
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
        // SAFETY: checked table; the instance is alive (we hold `self`); `call` and the
        // bytes it borrows outlive the call; serialised by `_guard` unless thread-safe.
        let status = unsafe { (self.table.call)(self.instance.0, &call, &mut out) };
        if status != abi::STATUS_OK {
            return Err(self.table.take(self.instance.0, out).into_error(status));
        }
        let result = self.lend(&out, receive);
        for buf in [out.payload, out.content_type, out.error] {
            self.table.free(self.instance.0, buf);
        }
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

    /// Runs an optional state function (snapshot or restore) under the instance's serial
    /// lock; `None` when the plugin's table has no such function.
    fn state_call(
        &self,
        function: Option<impl FnOnce(*mut c_void, &mut Output) -> abi::Status>,
    ) -> Option<Result<Vec<u8>>> {
        let run = function?;
        Some(self.enter().and_then(|_guard| {
            let mut out = Output::EMPTY;
            let status = run(self.instance.0, &mut out);
            self.table.take(self.instance.0, out).into_result(status)
        }))
    }
}

/// The response's content type: the plugin's, or the request's when it named none.
fn content_type_of<'a>(raw: &'a [u8], request: &'a str) -> Result<&'a str> {
    if raw.is_empty() {
        return Ok(request);
    }
    std::str::from_utf8(raw)
        .map_err(|_| Error::internal("the plugin returned a content type that is not UTF-8"))
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
                    content_type: match content_type_of(ct, "")? {
                        "" => payload.content_type.clone(),
                        named => ContentType::new(named),
                    },
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
            receive(bytes, content_type_of(ct, content_type)?);
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
            // SAFETY: checked table; live instance; `raw` and its bytes outlive the call.
            let status = unsafe { (self.table.on_event)(self.instance.0, &raw, &mut out) };
            self.table.take(self.instance.0, out).into_result(status).map(|_| Payload::default())
        });
        CallOutcome::Done(result)
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Option<Bytes>>> {
        let result = self.state_call(self.table.snapshot.map(|snapshot| {
            // SAFETY: an optional entry the table's size covers; live instance; `out` is ours.
            move |instance: *mut c_void, out: &mut Output| unsafe { snapshot(instance, out) }
        }));
        Box::pin(async move { result.transpose().map(|state| state.map(Bytes::from)) })
    }

    fn restore(&self, state: Bytes) -> BoxFuture<'_, Result<()>> {
        let result = self.state_call(self.table.restore.map(|restore| {
            // SAFETY: an optional entry the table's size covers; live instance; `state` is
            // borrowed for the call only; `out` is ours.
            move |instance: *mut c_void, out: &mut Output| unsafe {
                restore(instance, Str::from_bytes(&state), out)
            }
        }));
        Box::pin(async move { result.transpose().map(drop) })
    }
}

impl Drop for NativeInstance {
    fn drop(&mut self) {
        // SAFETY: the last reference is gone, so no call is running; shutdown is called
        // exactly once, before the host API table and the library are released.
        unsafe { (self.table.shutdown)(self.instance.0) };
    }
}
