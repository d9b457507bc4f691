//! A wasm plugin's instances: the store each one lives in (WASI context, memory limiter,
//! host API), the two instance modes, and the call path.
//!
//! - `persistent`: one long-lived instance keeps its state between calls; calls are
//!   serialised. An instance that traps (or is interrupted at its deadline) is discarded and
//!   the next call gets a fresh one, initialised again.
//! - `per-call`: every call gets a fresh instance from the pre-linked component
//!   (`InstancePre`, pooled slots), initialised, used once and dropped.
//!
//! An instance of a component that cannot wait ([`inline`]), persistent or per-call, is
//! created, initialised and called on the caller's thread without a fiber: `Instance::call`
//! finishes before it returns and `call_borrowed` lends the response from the guest's
//! memory. Its lock is then a plain mutex, never held across a
//! suspension: every operation on such an instance runs to completion in one poll.
//!
//! A persistent instance of a component that exports the `state` interface ([`state`])
//! keeps its last snapshot: a fresh instance that replaces a trapped one is restored from
//! it, as the host restores a restarted instance from its own copy. Per-call instances keep
//! no state, so they take no snapshots.
//!
//! [`state`]: crate::runtime::wasm::state
//! [`inline`]: crate::runtime::wasm::inline

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bus::Event;
use crate::call::{Call, ContentType, Deadline, Payload, Target};
use crate::error::{Code, Error, Result};
use crate::manifest::{Limits, WasmInstanceMode};
use crate::runtime::wasm::bindings::exports::plugbay::plugin::guest::Guest;
use crate::runtime::wasm::bindings::plugbay::plugin::{host, types};
use crate::runtime::wasm::bindings::{Plugin, PluginIndices, PluginPre};
use crate::runtime::wasm::capabilities::Grants;
use crate::runtime::wasm::engine::WasmEngine;
use crate::runtime::wasm::inline::{self, InlineExports, InlineFunctions};
use crate::runtime::wasm::limits::{MemoryLimiter, guest_failure};
use crate::runtime::wasm::state::StateExports;
use crate::runtime::{
    CallOutcome, Description, HostCallbacks, Instance, InstanceContext, Invocation, LogLevel,
};

/// What every instance of one loaded plugin shares.
pub(crate) struct Shared {
    pub(crate) engine: Arc<WasmEngine>,
    pub(crate) pre: PluginPre<StoreState>,
    /// Where the world's exports are, looked up once.
    pub(crate) indices: PluginIndices,
    /// The optional `state` interface's exports.
    pub(crate) state: Option<StateExports>,
    /// `init` and `call`, when this component's instances run on the caller's thread.
    pub(crate) inline: Option<InlineExports>,
    pub(crate) grants: Grants,
    pub(crate) limits: Limits,
    pub(crate) mode: WasmInstanceMode,
}

impl Shared {
    /// A new store (WASI context with the plugin's grants, memory limiter, epoch deadline)
    /// and an instance in it, not yet initialised.
    ///
    /// # Errors
    /// Instantiation failures (memory over the limit: `resource_exhausted`).
    async fn instantiate(
        &self,
        plugin: Arc<str>,
        callbacks: Option<Arc<dyn HostCallbacks>>,
        deadline: Instant,
    ) -> Result<Live> {
        let state = StoreState {
            plugin,
            callbacks,
            // A component that cannot wait imports no WASI: it gets no context to build.
            wasi: match self.inline {
                Some(_) => None,
                None => Some(self.grants.wasi()?),
            },
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(&self.limits),
            deadline: Some(deadline),
            depth: 0,
        };
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.engine.ticks_until(deadline));
        // Synchronously (no fiber) when the component cannot wait and this thread's stack
        // has room for the guest's start functions; on a fiber otherwise.
        let instance = match self.inline.is_some() && inline::stack_has_room() {
            true => self.pre.instance_pre().instantiate(&mut store),
            false => self.pre.instance_pre().instantiate_async(&mut store).await,
        };
        let instance = instance.map_err(|error| guest_failure(&error, "instantiate"))?;
        let inline = match &self.inline {
            Some(inline) => Some(inline.functions(&mut store, &instance)?),
            None => None,
        };
        Ok(Live { store, plugin: None, instance, inline })
    }

    /// Runs the plugin's describe in a throw-away instance (host API unavailable there),
    /// after checking the types of the exports found by name at load (`state`, and the
    /// synchronous path's `init` and `call`) on it.
    ///
    /// # Errors
    /// `failed_precondition` when an export does not match the contract, or describe traps
    /// or returns something that is not a description.
    pub(crate) async fn describe(&self, plugin: Arc<str>) -> Result<Description> {
        let deadline = Instant::now() + DESCRIBE_TIMEOUT;
        let mut live = self.instantiate(plugin, None, deadline).await?;
        if let Some(state) = &self.state {
            state.check(&mut live.store, &live.instance)?;
        }
        if let Some(inline) = &self.inline {
            inline.check(&mut live.store, &live.instance)?;
        }
        let (guest, store) = live.guest(&self.indices).map_err(|error| guest_failure(&error, "describe"))?;
        let json = guest.call_describe(store).await.map_err(|error| guest_failure(&error, "describe"))?;
        serde_json::from_str(&json).map_err(|error| {
            Error::precondition(format!("describe returned no valid description ({error}): {json:.200}"))
        })
    }
}

/// How long describe may run at load time.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The host state inside each store.
pub(crate) struct StoreState {
    plugin: Arc<str>,
    /// The host API; `None` while describing at load time.
    callbacks: Option<Arc<dyn HostCallbacks>>,
    /// The WASI context with the plugin's grants; `None` for a component that imports no
    /// WASI ([`Shared::inline`]).
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// The deadline of the operation running in this store, passed on to the calls the
    /// guest makes through the host, so a guest waiting on another plugin gives up with it.
    deadline: Option<Instant>,
    /// The depth of the call running in this store ([`Call::depth`]), so the calls the
    /// guest makes through the host are one deeper (0 for other operations).
    depth: u32,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Only a component that imports WASI can reach this, and it has its context; an
        // empty one (nothing granted) stands in otherwise.
        let ctx = self.wasi.get_or_insert_with(|| WasiCtx::builder().build());
        WasiCtxView { ctx, table: &mut self.table }
    }
}

/// A live instance in its store.
pub(crate) struct Live {
    store: Store<StoreState>,
    /// The guest's exports through the generated bindings, looked up (and type-checked) on
    /// first use: the synchronous path calls [`Live::inline`] instead, so its per-call
    /// instances never pay for them.
    plugin: Option<Plugin>,
    instance: wasmtime::component::Instance,
    /// The exports the synchronous path calls ([`Shared::inline`]).
    inline: Option<InlineFunctions>,
}

impl Live {
    /// The guest's exports (looked up on first use) and the store to call them in.
    fn guest(&mut self, indices: &PluginIndices) -> wasmtime::Result<(&Guest, &mut Store<StoreState>)> {
        let plugin = match self.plugin.take() {
            Some(plugin) => plugin,
            None => indices.load(&mut self.store, &self.instance)?,
        };
        Ok((self.plugin.insert(plugin).plugbay_plugin_guest(), &mut self.store))
    }
}

/// Where a persistent instance waits between calls; the lock serialises calls.
enum LiveSlot {
    /// For components that can wait inside a call: an async mutex, held across it.
    Waits(tokio::sync::Mutex<Option<Live>>),
    /// For components that cannot ([`inline`]): a plain mutex, held only while an
    /// operation runs to completion on this thread.
    Inline(parking_lot::Mutex<Option<Live>>),
}

/// An instance of a wasm plugin (see the module docs for the two modes).
pub(crate) struct WasmInstance {
    inner: Arc<InstanceInner>,
}

struct InstanceInner {
    shared: Arc<Shared>,
    context: InstanceContext,
    /// The persistent instance; `None` between a trap and the next call, and always in
    /// per-call mode.
    live: LiveSlot,
    /// The last snapshot taken from or restored into this instance (persistent mode with
    /// the `state` interface only), restored into an instance that replaces a trapped one.
    last_state: parking_lot::Mutex<Option<Bytes>>,
}

impl WasmInstance {
    /// Creates the instance and runs the plugin's init (per-call mode checks init once here,
    /// so a broken plugin fails to start rather than on every call).
    ///
    /// # Errors
    /// Instantiation failures (memory over the limit: `resource_exhausted`) and the
    /// plugin's init error.
    pub(crate) async fn start(shared: Arc<Shared>, context: InstanceContext) -> Result<WasmInstance> {
        let live = match shared.inline {
            Some(_) => LiveSlot::Inline(parking_lot::Mutex::new(None)),
            None => LiveSlot::Waits(tokio::sync::Mutex::new(None)),
        };
        let inner =
            Arc::new(InstanceInner { shared, context, live, last_state: parking_lot::Mutex::new(None) });
        let live = inner.run(inner.fresh()).await?;
        if inner.shared.mode == WasmInstanceMode::Persistent {
            inner.put_live(live).await;
        }
        Ok(WasmInstance { inner })
    }
}

impl InstanceInner {
    /// Takes the persistent instance out of its slot.
    async fn take_live(&self) -> Option<Live> {
        match &self.live {
            LiveSlot::Waits(mutex) => mutex.lock().await.take(),
            LiveSlot::Inline(mutex) => mutex.lock().take(),
        }
    }

    /// Puts `live` in the slot.
    async fn put_live(&self, live: Live) {
        match &self.live {
            LiveSlot::Waits(mutex) => *mutex.lock().await = Some(live),
            LiveSlot::Inline(mutex) => *mutex.lock() = Some(live),
        }
    }

    /// Runs `operation`: awaited when the instance can wait, else to completion on this
    /// thread, so an inline slot's lock is never held across a suspension.
    async fn run<R>(&self, operation: impl Future<Output = Result<R>>) -> Result<R> {
        match self.live {
            LiveSlot::Waits(_) => operation.await,
            LiveSlot::Inline(_) => run_to_completion(operation),
        }
    }

    /// Sets `live`'s epoch deadline and the deadline its host calls pass on.
    fn arm(&self, live: &mut Live, deadline: Instant) {
        live.store.set_epoch_deadline(self.shared.engine.ticks_until(deadline));
        let state = live.store.data_mut();
        state.deadline = Some(deadline);
        state.depth = 0;
    }

    /// The deadline of a call that brought none: the plugin's `limits.timeout_ms`, else the
    /// host's default.
    fn deadline(&self, deadline: Option<Instant>) -> Instant {
        deadline.unwrap_or_else(|| {
            let timeout = self
                .shared
                .limits
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(self.context.default_timeout);
            Instant::now() + timeout
        })
    }

    /// A new store and instance, initialised, and restored from the last snapshot when this
    /// instance keeps one. A snapshot the plugin cannot restore is dropped (with a warning)
    /// and the instance starts empty, as after a restart without one: otherwise every later
    /// call would fail on it again.
    async fn fresh(&self) -> Result<Live> {
        loop {
            let mut live = self.initialised().await?;
            let last_state = self.last_state.lock().clone();
            let (Some(state), Some(exports)) = (last_state, self.state_exports()) else { return Ok(live) };
            let restored = exports.restore(&mut live.store, &live.instance, &state).await;
            let (why, sound) = match restored {
                Ok(Ok(())) => {
                    tracing::debug!(plugin = %self.context.plugin, "wasm: restored {} bytes of state", state.len());
                    return Ok(live);
                }
                Ok(Err(failure)) => (from_failure(failure, "restore"), true),
                Err(error) => (guest_failure(&error, "restore"), false),
            };
            tracing::warn!(
                plugin = %self.context.plugin,
                "wasm: the last snapshot ({} bytes) could not be restored, so it was dropped and the instance starts empty: {why}",
                state.len()
            );
            *self.last_state.lock() = None;
            if sound {
                return Ok(live); // refused, but the instance is sound
            }
            // It trapped: this instance is broken; the next one starts without the snapshot.
        }
    }

    /// A new store and instance, initialised.
    async fn initialised(&self) -> Result<Live> {
        let mut live = self
            .shared
            .instantiate(
                self.context.plugin.clone(),
                Some(self.context.callbacks.clone()),
                self.deadline(None),
            )
            .await?;
        let init = match live.inline.filter(|_| inline::stack_has_room()) {
            Some(functions) => inline::init(functions, &mut live.store, &self.context.config),
            None => match live.guest(&self.shared.indices) {
                Ok((guest, store)) => guest.call_init(store, &self.context.config).await,
                Err(error) => Err(error),
            },
        };
        match init {
            Ok(Ok(())) => Ok(live),
            Ok(Err(failure)) => Err(from_failure(failure, "init")),
            Err(error) => Err(guest_failure(&error, "init")),
        }
    }

    /// The `state` exports, when this instance keeps state (persistent mode).
    fn state_exports(&self) -> Option<StateExports> {
        self.shared.state.filter(|_| self.shared.mode == WasmInstanceMode::Persistent)
    }

    /// The plugin's `snapshot`, kept as this instance's last state too.
    async fn snapshot(&self) -> Result<Option<Bytes>> {
        let Some(exports) = self.state_exports() else { return Ok(None) };
        let state = self
            .with_instance(
                None,
                async |live: &mut Live| exports.snapshot(&mut live.store, &live.instance).await,
                || "snapshot".to_owned(),
            )
            .await?
            .map_err(|failure| from_failure(failure, "snapshot"))?;
        let state = Bytes::from(state);
        *self.last_state.lock() = Some(state.clone());
        Ok(Some(state))
    }

    /// The plugin's `restore` with `state`, kept as this instance's last state.
    async fn restore(&self, state: Bytes) -> Result<()> {
        let Some(exports) = self.state_exports() else { return Ok(()) };
        self.with_instance(
            None,
            async |live: &mut Live| exports.restore(&mut live.store, &live.instance, &state).await,
            || "restore".to_owned(),
        )
        .await?
        .map_err(|failure| from_failure(failure, "restore"))?;
        *self.last_state.lock() = Some(state);
        Ok(())
    }

    /// Runs `operation` on an instance (the persistent one, or a fresh one per call) with
    /// the call's deadline; discards the instance if the guest trapped.
    async fn with_instance<R>(
        &self,
        deadline: Option<Instant>,
        operation: impl AsyncFnOnce(&mut Live) -> wasmtime::Result<R>,
        doing: impl Fn() -> String,
    ) -> Result<R> {
        let deadline = self.deadline(deadline);
        self.with_slot(async |slot: &mut Option<Live>| self.operate(slot, deadline, operation, doing).await)
            .await
    }

    /// Runs `operation` on the locked slot: awaited under the async mutex when the instance
    /// can wait, else to completion on this thread under the plain one.
    async fn with_slot<R>(&self, operation: impl AsyncFnOnce(&mut Option<Live>) -> Result<R>) -> Result<R> {
        match &self.live {
            LiveSlot::Waits(mutex) => operation(&mut *mutex.lock().await).await,
            LiveSlot::Inline(mutex) => run_to_completion(operation(&mut mutex.lock())),
        }
    }

    /// [`InstanceInner::with_instance`] on the locked `slot`.
    async fn operate<R>(
        &self,
        slot: &mut Option<Live>,
        deadline: Instant,
        operation: impl AsyncFnOnce(&mut Live) -> wasmtime::Result<R>,
        doing: impl Fn() -> String,
    ) -> Result<R> {
        // Taken out while the guest runs: if this future is dropped mid-call (the caller
        // gave up), the instance goes with it and the next call starts a fresh one.
        let mut live = match slot.take() {
            Some(live) => live,
            None => self.fresh().await?,
        };
        self.arm(&mut live, deadline);
        match operation(&mut live).await {
            Ok(result) => {
                if self.shared.mode == WasmInstanceMode::Persistent {
                    *slot = Some(live);
                }
                Ok(result)
            }
            Err(error) => Err(guest_failure(&error, &doing())),
        }
    }

    /// The synchronous path ([`inline`]): runs the call on this thread (after the call
    /// before it, as a native plugin's per-instance mutex does) and lends the response to
    /// `receive`. `None` when this instance is not inline. On a thread whose stack is too
    /// small for the guest, the guest runs on a fiber's stack, still on this thread.
    fn call_inline(
        &self,
        method: &str,
        payload: &[u8],
        content_type: &str,
        deadline: Option<Instant>,
        receive: &mut dyn FnMut(&[u8], &str),
    ) -> Option<Result<()>> {
        let LiveSlot::Inline(mutex) = &self.live else { return None };
        let mut slot = mutex.lock();
        if !inline::stack_has_room() {
            let payload = Payload {
                content_type: ContentType::new(content_type),
                bytes: Bytes::copy_from_slice(payload),
            };
            let call = self.call_locked(&mut slot, method, &payload, deadline, 0);
            return Some(
                run_to_completion(call).map(|output| receive(&output.bytes, output.content_type.as_str())),
            );
        }
        let mut live = match slot.take() {
            Some(live) => live,
            None => match run_to_completion(self.fresh()) {
                Ok(live) => live,
                Err(error) => return Some(Err(error)),
            },
        };
        let deadline = self.deadline(deadline);
        self.arm(&mut live, deadline);
        let functions = live.inline.expect("inline instances keep their exports");
        let max_bytes = self.context.max_payload_bytes;
        let mut too_long = None;
        let outcome =
            inline::call(functions, &mut live.store, method, payload, content_type, &mut |bytes, ct| {
                if bytes.len() > max_bytes {
                    too_long = Some(bytes.len());
                } else {
                    receive(bytes, ct);
                }
            });
        let result = match outcome {
            Ok(result) => {
                if self.shared.mode == WasmInstanceMode::Persistent {
                    *slot = Some(live);
                }
                result.map_err(|failure| from_failure(failure, &format!("call {method}")))
            }
            Err(error) => Err(guest_failure(&error, &format!("call {method}"))),
        };
        Some(result.and_then(|()| match too_long {
            Some(length) => Err(response_too_long(length, max_bytes)),
            None => Ok(()),
        }))
    }

    async fn call(
        &self,
        method: &str,
        payload: &Payload,
        deadline: Option<Instant>,
        depth: u32,
    ) -> Result<Payload> {
        self.with_slot(async |slot: &mut Option<Live>| {
            self.call_locked(slot, method, payload, deadline, depth).await
        })
        .await
    }

    /// A call through the guest's generated bindings (on a fiber) with `slot` locked.
    async fn call_locked(
        &self,
        slot: &mut Option<Live>,
        method: &str,
        payload: &Payload,
        deadline: Option<Instant>,
        depth: u32,
    ) -> Result<Payload> {
        let input = types::Payload {
            content_type: payload.content_type.as_str().to_owned(),
            bytes: payload.bytes.to_vec(),
        };
        // Named only when something failed: a format per call costs more than the rest of
        // the host's side of it.
        let doing = || format!("call {method}");
        let output = self
            .operate(
                slot,
                self.deadline(deadline),
                async |live: &mut Live| {
                    live.store.data_mut().depth = depth;
                    let (guest, store) = live.guest(&self.shared.indices)?;
                    guest.call_call(store, method, &input).await
                },
                doing,
            )
            .await?;
        let output = output.map_err(|failure| from_failure(failure, &doing()))?;
        if output.bytes.len() > self.context.max_payload_bytes {
            return Err(response_too_long(output.bytes.len(), self.context.max_payload_bytes));
        }
        Ok(Payload { content_type: ContentType::new(output.content_type), bytes: Bytes::from(output.bytes) })
    }

    async fn on_event(&self, event: Event) -> Result<()> {
        let data = types::Payload {
            content_type: event.payload.content_type.as_str().to_owned(),
            bytes: event.payload.bytes.to_vec(),
        };
        let result = self
            .with_instance(
                None,
                async |live: &mut Live| {
                    let (guest, store) = live.guest(&self.shared.indices)?;
                    guest.call_on_event(store, &event.topic, &event.action, &event.source, &data).await
                },
                || "on_event".to_owned(),
            )
            .await?;
        result.map_err(|failure| from_failure(failure, "on_event"))
    }

    async fn shutdown(&self) {
        let Some(mut live) = self.take_live().await else { return };
        let deadline = self.deadline(None);
        self.arm(&mut live, deadline);
        let shutdown = self
            .run(async {
                let (guest, store) =
                    live.guest(&self.shared.indices).map_err(|error| guest_failure(&error, "shutdown"))?;
                guest.call_shutdown(store).await.map_err(|error| guest_failure(&error, "shutdown"))
            })
            .await;
        if let Err(error) = shutdown {
            tracing::warn!(plugin = %self.context.plugin, "wasm shutdown failed: {error}");
        }
    }
}

impl Instance for WasmInstance {
    fn call(&self, invocation: Invocation<'_>) -> CallOutcome {
        let Invocation { method, payload, deadline, depth } = invocation;
        let mut response = None;
        let done = self.inner.call_inline(
            method,
            &payload.bytes,
            payload.content_type.as_str(),
            deadline,
            &mut |bytes, content_type| {
                let content_type = match content_type == payload.content_type.as_str() {
                    true => payload.content_type.clone(),
                    false => ContentType::new(content_type),
                };
                response = Some(Payload { content_type, bytes: Bytes::copy_from_slice(bytes) });
            },
        );
        if let Some(result) = done {
            return CallOutcome::Done(result.and_then(|()| {
                response.ok_or_else(|| Error::internal("the wasm call returned no response"))
            }));
        }
        let (inner, method, payload) = (self.inner.clone(), method.to_owned(), payload.clone());
        CallOutcome::Pending(Box::pin(async move { inner.call(&method, &payload, deadline, depth).await }))
    }

    fn call_borrowed(
        &self,
        method: &str,
        payload: &[u8],
        content_type: &str,
        receive: &mut dyn FnMut(&[u8], &str),
    ) -> Option<Result<()>> {
        self.inner.call_inline(method, payload, content_type, None, receive)
    }

    fn on_event(&self, event: &Event) -> CallOutcome {
        let (inner, event) = (self.inner.clone(), event.clone());
        CallOutcome::Pending(Box::pin(async move {
            inner.on_event(event).await.map(|()| Payload::bytes(Bytes::new()))
        }))
    }

    fn shutdown(&self) -> crate::runtime::BoxFuture<'_, ()> {
        Box::pin(self.inner.shutdown())
    }

    fn snapshot(&self) -> crate::runtime::BoxFuture<'_, Result<Option<Bytes>>> {
        Box::pin(self.inner.snapshot())
    }

    fn restore(&self, state: Bytes) -> crate::runtime::BoxFuture<'_, Result<()>> {
        Box::pin(self.inner.restore(state))
    }
}

/// Drives `operation`, which cannot suspend (an inline instance's), to its end on this
/// thread; an operation that suspends anyway is dropped and fails, so no lock is held
/// across a suspension.
fn run_to_completion<R>(operation: impl Future<Output = Result<R>>) -> Result<R> {
    match pin!(operation).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(Error::internal("a wasm instance that cannot wait suspended; it was discarded")),
    }
}

/// A response over `max_payload_bytes`.
fn response_too_long(length: usize, max_bytes: usize) -> Error {
    Error::new(
        Code::ResourceExhausted,
        format!("the response is {length} bytes; the limit is {max_bytes} (max_payload_bytes)"),
    )
}

/// A guest's error value, as a plugbay error with the guest's code.
fn from_failure(failure: types::Failure, doing: &str) -> Error {
    Error::new(code_from_wit(failure.code), format!("{doing}: {}", failure.message))
}

/// A plugbay error as a guest sees it.
fn to_failure(error: &Error) -> types::Failure {
    types::Failure { code: code_to_wit(error.code()), message: error.to_string() }
}

/// The one mapping of WIT's `code` to plugbay's.
fn code_from_wit(code: types::Code) -> Code {
    match code {
        types::Code::InvalidArgument => Code::InvalidArgument,
        types::Code::DeadlineExceeded => Code::DeadlineExceeded,
        types::Code::NotFound => Code::NotFound,
        types::Code::PermissionDenied => Code::PermissionDenied,
        types::Code::ResourceExhausted => Code::ResourceExhausted,
        types::Code::FailedPrecondition => Code::FailedPrecondition,
        types::Code::Internal => Code::Internal,
        types::Code::Unavailable => Code::Unavailable,
    }
}

/// The one mapping of plugbay's code to WIT's (a code WIT does not have is `internal`).
fn code_to_wit(code: Code) -> types::Code {
    match code {
        Code::InvalidArgument => types::Code::InvalidArgument,
        Code::DeadlineExceeded => types::Code::DeadlineExceeded,
        Code::NotFound => types::Code::NotFound,
        Code::PermissionDenied => types::Code::PermissionDenied,
        Code::ResourceExhausted => types::Code::ResourceExhausted,
        Code::FailedPrecondition => types::Code::FailedPrecondition,
        Code::Unavailable => types::Code::Unavailable,
        _ => types::Code::Internal,
    }
}

/// The one mapping of WIT's log `level` to plugbay's.
fn level_from_wit(level: types::Level) -> LogLevel {
    match level {
        types::Level::Error => LogLevel::Error,
        types::Level::Warn => LogLevel::Warn,
        types::Level::Info => LogLevel::Info,
        types::Level::Debug => LogLevel::Debug,
        types::Level::Trace => LogLevel::Trace,
    }
}

/// Longest log line a guest may send through the host API; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

impl StoreState {
    /// The host API, refused while describing at load time.
    fn host_api(&self) -> std::result::Result<Arc<dyn HostCallbacks>, types::Failure> {
        self.callbacks.clone().ok_or_else(|| types::Failure {
            code: types::Code::FailedPrecondition,
            message: "the host API is not available during describe".to_owned(),
        })
    }
}

impl types::Host for StoreState {}

impl host::Host for StoreState {
    fn log(&mut self, level: types::Level, message: String) {
        let level = level_from_wit(level);
        let mut end = message.len().min(MAX_LOG_LINE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        match &self.callbacks {
            Some(callbacks) => callbacks.log(&self.plugin, level, &message[..end]),
            None => tracing::info!(plugin = %self.plugin, "{}", &message[..end]),
        }
    }

    fn publish(
        &mut self,
        topic: String,
        action: String,
        payload: types::Payload,
    ) -> std::result::Result<(), types::Failure> {
        let payload = Payload {
            content_type: ContentType::new(payload.content_type),
            bytes: Bytes::from(payload.bytes),
        };
        self.host_api()?.publish(&self.plugin, &topic, &action, payload).map_err(|error| to_failure(&error))
    }

    async fn invoke(
        &mut self,
        target: String,
        method: String,
        payload: types::Payload,
    ) -> std::result::Result<types::Payload, types::Failure> {
        let target = Target::parse(&target);
        let payload = Payload {
            content_type: ContentType::new(payload.content_type),
            bytes: Bytes::from(payload.bytes),
        };
        let call = Call::to(target, method, payload)
            .with_deadline(self.deadline.map(Deadline::at))
            .nested_in(self.depth);
        let reply =
            self.host_api()?.invoke_async(&self.plugin, call).await.map_err(|error| to_failure(&error))?;
        Ok(types::Payload {
            content_type: reply.content_type.as_str().to_owned(),
            bytes: reply.bytes.to_vec(),
        })
    }
}
