//! The optional `state` interface of `wit/plugbay.wit` (world `stateful-plugin`): a
//! component that exports it hands the host a snapshot of its state and gets it back in its
//! next instance. Found by name when the component is loaded; a component without it is an
//! ordinary `plugin` and takes no snapshots.

use wasmtime::component::{Component, ComponentExportIndex, Instance};
use wasmtime::{AsContextMut, Store};

use crate::error::{Error, Result};
use crate::runtime::wasm::bindings::plugbay::plugin::types::Failure;

/// The exported interface's name.
pub(crate) const STATE_INTERFACE: &str = "plugbay:plugin/state@1.0.0";

/// `snapshot: func() -> result<list<u8>, failure>`, as wasmtime sees it.
type SnapshotResults = (std::result::Result<Vec<u8>, Failure>,);
/// `restore`'s result, `result<_, failure>`.
type RestoreResults = (std::result::Result<(), Failure>,);

/// Where a component's `snapshot` and `restore` are.
#[derive(Clone, Copy)]
pub(crate) struct StateExports {
    snapshot: ComponentExportIndex,
    restore: ComponentExportIndex,
}

impl StateExports {
    /// The state exports of `component`, if it exports the interface.
    ///
    /// # Errors
    /// `failed_precondition` when it exports the interface without one of its functions.
    pub(crate) fn find(component: &Component) -> Result<Option<StateExports>> {
        let Some(interface) = component.get_export_index(None, STATE_INTERFACE) else { return Ok(None) };
        let function = |name: &str| {
            component.get_export_index(Some(&interface), name).ok_or_else(|| {
                Error::precondition(format!("the component exports {STATE_INTERFACE} without `{name}`"))
            })
        };
        Ok(Some(StateExports { snapshot: function("snapshot")?, restore: function("restore")? }))
    }

    /// Checks both functions' types against the contract in a live instance, so a component
    /// with the wrong signatures fails to load rather than on its first snapshot.
    ///
    /// # Errors
    /// `failed_precondition` naming the function and wasmtime's reason.
    pub(crate) fn check<T>(&self, store: &mut Store<T>, instance: &Instance) -> Result<()> {
        let wrong = |name: &str, error: wasmtime::Error| {
            Error::precondition(format!("{STATE_INTERFACE}#{name} does not match wit/plugbay.wit: {error:#}"))
        };
        instance
            .get_typed_func::<(), SnapshotResults>(store.as_context_mut(), self.snapshot)
            .map_err(|error| wrong("snapshot", error))?;
        instance
            .get_typed_func::<(&[u8],), RestoreResults>(store.as_context_mut(), self.restore)
            .map_err(|error| wrong("restore", error))?;
        Ok(())
    }

    /// Calls `snapshot` in `instance`.
    pub(crate) async fn snapshot<T: Send>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
    ) -> wasmtime::Result<std::result::Result<Vec<u8>, Failure>> {
        let function =
            instance.get_typed_func::<(), SnapshotResults>(store.as_context_mut(), self.snapshot)?;
        Ok(function.call_async(store.as_context_mut(), ()).await?.0)
    }

    /// Calls `restore` in `instance` with `state`.
    pub(crate) async fn restore<T: Send>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
        state: &[u8],
    ) -> wasmtime::Result<std::result::Result<(), Failure>> {
        let function =
            instance.get_typed_func::<(&[u8],), RestoreResults>(store.as_context_mut(), self.restore)?;
        Ok(function.call_async(store.as_context_mut(), (state,)).await?.0)
    }
}
