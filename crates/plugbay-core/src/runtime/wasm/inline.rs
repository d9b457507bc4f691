//! The synchronous path of the wasm runtime: a call that runs on the caller's thread, with
//! no fiber and no future, and lends the response to the caller straight from the guest's
//! memory.
//!
//! It serves persistent instances of components that cannot wait. A guest can only wait
//! inside an import the host defines as `async`: the host API's `invoke` (it waits for
//! another plugin) and WASI (streams, files, clocks, sockets). A component that imports
//! nothing but the host's `log` and `publish` never suspends, so wasmtime lets its store be
//! called without a fiber ([`runs_inline`]). Every other component, and every per-call
//! instance, is served asynchronously.
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

/// Where a component's `call` export is; its type is checked once per loaded component.
#[derive(Clone, Copy)]
pub(crate) struct InlineCall {
    call: ComponentExportIndex,
}

impl InlineCall {
    /// The `call` export of `component`.
    ///
    /// # Errors
    /// `failed_precondition` when the component does not export it (linking already
    /// refuses such a component; this is the same check in other words).
    pub(crate) fn find(component: &wasmtime::component::Component) -> Result<InlineCall> {
        let missing = || Error::precondition(format!("the component does not export {GUEST_INTERFACE}#call"));
        let guest = component.get_export_index(None, GUEST_INTERFACE).ok_or_else(missing)?;
        let call = component.get_export_index(Some(&guest), "call").ok_or_else(missing)?;
        Ok(InlineCall { call })
    }

    /// The `call` function of `instance`, its type checked against the contract.
    ///
    /// # Errors
    /// `failed_precondition` when the export does not have the contract's type.
    pub(crate) fn function<T>(
        &self,
        store: &mut Store<T>,
        instance: &wasmtime::component::Instance,
    ) -> Result<Func> {
        let typed = instance
            .get_typed_func::<CallParams<'_>, CallResults>(store.as_context_mut(), self.call)
            .map_err(|error| {
                Error::precondition(format!(
                    "{GUEST_INTERFACE}#call does not match wit/plugbay.wit: {error:#}"
                ))
            })?;
        Ok(*typed.func())
    }
}

/// Runs `call` (a function returned by [`InlineCall::function`]) in `store` on this thread
/// and lends the response bytes and content type to `receive`.
///
/// # Errors
/// The outer error is a trap (wasmtime's); the inner one the guest's own failure.
pub(crate) fn call<T>(
    call: Func,
    store: &mut Store<T>,
    method: &str,
    payload: &[u8],
    content_type: &str,
    receive: &mut dyn FnMut(&[u8], &str),
) -> wasmtime::Result<std::result::Result<(), Failure>> {
    // SAFETY: `call` came from `InlineCall::function`, which checked it against exactly
    // these parameter and result types.
    let typed = unsafe { TypedFunc::<CallParams<'_>, CallResults>::new_unchecked(call) };
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
