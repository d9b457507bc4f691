//! The synchronous path of the wasm runtime: a call that runs on the caller's thread, with
//! no fiber and no future, and lends the response to the caller straight from the guest's
//! memory.
//!
//! It serves the instances (persistent and per-call) of components that cannot wait. A guest can only wait
//! inside an import the host defines as `async`: the host API's `invoke` (it waits for
//! another plugin) and WASI (streams, files, clocks, sockets). A component that imports
//! nothing but the host's `log` and `publish` never suspends, so wasmtime lets its store be
//! instantiated and called without a fiber ([`runs_inline`]). Every other component is
//! served asynchronously.
//!
//! The guest runs on the caller's stack here, so the path is only taken when that stack has
//! room for the whole bounded wasm stack ([`stack_has_room`]); a call on a thread with less
//! takes the fiber, which has a stack of its own.
#![allow(unsafe_code)] // TypedFunc::new_unchecked on a function checked at instantiation, see `call`

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{
    ComponentExportIndex, ComponentType, Func, Lift, Lower, TypedFunc, WasmList, WasmStr,
};
use wasmtime::{AsContextMut, Engine, Store};

use crate::error::{Error, Result};
use crate::runtime::wasm::bindings::plugbay::plugin::types::Failure;
use crate::runtime::wasm::engine::MAX_WASM_STACK;

/// The contract's interfaces a component may import and still run inline.
const TYPES_INTERFACE: &str = "plugbay:plugin/types@1.0.0";
const HOST_INTERFACE: &str = "plugbay:plugin/host@1.0.0";
/// The exported interface that holds `call`.
const GUEST_INTERFACE: &str = "plugbay:plugin/guest@1.0.0";
/// The host API's one function that can wait.
const WAITING_HOST_FUNCTION: &str = "invoke";

/// Stack the host's own frames may need below the guest's (wasmtime's entry and exit, and
/// `log` / `publish` called at the guest's deepest point).
const HOST_FRAMES_MARGIN: usize = 256 << 10;

/// Whether `component` imports nothing that can wait: only the contract's types and the
/// host API without `invoke`. Such a component's store can be called synchronously.
pub(crate) fn runs_inline(component: &wasmtime::component::Component, engine: &Engine) -> bool {
    component.component_type().imports(engine).all(|(name, item)| match name {
        TYPES_INTERFACE => true,
        HOST_INTERFACE => match item.ty {
            ComponentItem::ComponentInstance(host) => {
                host.exports(engine).all(|(function, _)| function != WAITING_HOST_FUNCTION)
            }
            _ => false,
        },
        _ => false,
    })
}

/// Whether the current thread's stack has room for a guest at its deepest plus the host's
/// frames. Unknown stack bounds count as no room.
pub(crate) fn stack_has_room() -> bool {
    stacker::remaining_stack().is_some_and(|remaining| remaining >= MAX_WASM_STACK + HOST_FRAMES_MARGIN)
}

/// `payload` as the guest takes it, borrowed from the caller.
#[derive(ComponentType, Lower)]
#[component(record)]
struct PayloadArg<'a> {
    #[component(name = "content-type")]
    content_type: &'a str,
    bytes: &'a [u8],
}

/// `payload` as the guest returns it, still in the guest's memory.
#[derive(ComponentType, Lift)]
#[component(record)]
struct PayloadView {
    #[component(name = "content-type")]
    content_type: WasmStr,
    bytes: WasmList<u8>,
}

/// `call: func(method: string, input: payload) -> result<payload, failure>`, as lent.
type CallParams<'a> = (&'a str, PayloadArg<'a>);
type CallResults = (std::result::Result<PayloadView, Failure>,);
/// `init: func(config: list<u8>) -> result<_, failure>`.
type InitParams<'a> = (&'a [u8],);
type InitResults = (std::result::Result<(), Failure>,);

/// Where a component's `init` and `call` exports are.
#[derive(Clone, Copy)]
pub(crate) struct InlineExports {
    init: ComponentExportIndex,
    call: ComponentExportIndex,
}

/// An instance's `init` and `call` (their types checked at load).
#[derive(Clone, Copy)]
pub(crate) struct InlineFunctions {
    init: Func,
    call: Func,
}

impl InlineExports {
    /// The `init` and `call` exports of `component`.
    ///
    /// # Errors
    /// `failed_precondition` when the component does not export them (linking already
    /// refuses such a component; this is the same check in other words).
    pub(crate) fn find(component: &wasmtime::component::Component) -> Result<InlineExports> {
        let missing = |name: &str| {
            Error::precondition(format!("the component does not export {GUEST_INTERFACE}#{name}"))
        };
        let guest = component.get_export_index(None, GUEST_INTERFACE).ok_or_else(|| missing("call"))?;
        let export = |name: &str| component.get_export_index(Some(&guest), name).ok_or_else(|| missing(name));
        Ok(InlineExports { init: export("init")?, call: export("call")? })
    }

    /// Checks the types of `init` and `call` against the contract on `instance`, once per
    /// loaded component (export types belong to the component, so one instance's check
    /// holds for all of them). The load runs it on the instance that describes the plugin,
    /// so no instance is called through [`InlineExports::functions`] unchecked.
    ///
    /// # Errors
    /// `failed_precondition` naming the export whose type does not match.
    pub(crate) fn check<T>(
        &self,
        store: &mut Store<T>,
        instance: &wasmtime::component::Instance,
    ) -> Result<()> {
        let wrong = |name: &str, error: wasmtime::Error| {
            Error::precondition(format!("{GUEST_INTERFACE}#{name} does not match wit/plugbay.wit: {error:#}"))
        };
        instance
            .get_typed_func::<InitParams<'_>, InitResults>(store.as_context_mut(), self.init)
            .map_err(|error| wrong("init", error))?;
        instance
            .get_typed_func::<CallParams<'_>, CallResults>(store.as_context_mut(), self.call)
            .map_err(|error| wrong("call", error))?;
        Ok(())
    }

    /// The functions of `instance` (types checked by [`InlineExports::check`] at load).
    ///
    /// # Errors
    /// `failed_precondition` when an export is missing (linking already refuses such a
    /// component).
    pub(crate) fn functions<T>(
        &self,
        store: &mut Store<T>,
        instance: &wasmtime::component::Instance,
    ) -> Result<InlineFunctions> {
        let mut function = |index: ComponentExportIndex, name: &str| {
            instance.get_func(store.as_context_mut(), index).ok_or_else(|| {
                Error::precondition(format!("the instance does not export {GUEST_INTERFACE}#{name}"))
            })
        };
        Ok(InlineFunctions { init: function(self.init, "init")?, call: function(self.call, "call")? })
    }
}

/// Runs the guest's `init` with `config` in `store` on this thread.
///
/// # Errors
/// The outer error is a trap (wasmtime's); the inner one the guest's own failure.
pub(crate) fn init<T>(
    functions: InlineFunctions,
    store: &mut Store<T>,
    config: &[u8],
) -> wasmtime::Result<std::result::Result<(), Failure>> {
    // SAFETY: `functions` came from `InlineExports::functions` on an instance of a component
    // whose `init` `InlineExports::check` checked at load against exactly these parameter
    // and result types.
    let typed = unsafe { TypedFunc::<InitParams<'_>, InitResults>::new_unchecked(functions.init) };
    Ok(typed.call(store.as_context_mut(), (config,))?.0)
}

/// Runs the guest's `call` in `store` on this thread and lends the response bytes and
/// content type to `receive`.
///
/// # Errors
/// The outer error is a trap (wasmtime's); the inner one the guest's own failure.
pub(crate) fn call<T>(
    functions: InlineFunctions,
    store: &mut Store<T>,
    method: &str,
    payload: &[u8],
    content_type: &str,
    receive: &mut dyn FnMut(&[u8], &str),
) -> wasmtime::Result<std::result::Result<(), Failure>> {
    // SAFETY: `functions` came from `InlineExports::functions` on an instance of a component
    // whose `call` `InlineExports::check` checked at load against exactly these parameter
    // and result types.
    let typed = unsafe { TypedFunc::<CallParams<'_>, CallResults>::new_unchecked(functions.call) };
    let (result,) =
        typed.call(store.as_context_mut(), (method, PayloadArg { content_type, bytes: payload }))?;
    let view = match result {
        Ok(view) => view,
        Err(failure) => return Ok(Err(failure)),
    };
    let content_type = view.content_type.to_str(&*store)?;
    receive(view.bytes.as_le_slice(&*store), &content_type);
    Ok(Ok(()))
}
