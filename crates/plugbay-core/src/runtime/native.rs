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
//!   call into such an instance (through `invoke`) is refused instead of deadlocking. The
//!   host tells instances apart by its own id for each, never by the plugin's instance
//!   pointer (which may be NULL, or one static, for every instance).
//! - The instance is shut down when its last reference drops, so a call still in flight
//!   keeps its code mapped. The library is closed only if it declares
//!   `PLUGBAY_FLAG_UNLOADABLE`; otherwise it stays mapped for the life of the process.
//!
//! # What it cannot guarantee
//! Native code shares the host's address space: a plugin that crashes (SIGSEGV, abort)
//! takes the host process with it, and a call cannot be pre-empted once it runs. Run code
//! you do not trust on the `process` or `wasm` runtimes.
//!
//! # Where things are
//! This file opens and checks a library and makes instances; `table` reads and checks the
//! plugin's table once (the call path never checks an entry again); `instance` holds the
//! call path and the serialisation of plugins that are not thread-safe; `host_api` holds
//! the C functions the plugin calls back (log, publish, invoke).
#![allow(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use plugbay_abi::{self as abi, Output};

use crate::error::{Error, Result};
use crate::manifest::RuntimeKind;
use crate::runtime::{Artifact, BoxFuture, Description, Instance, InstanceContext, Loaded, Runtime};

#[cfg(target_os = "linux")]
mod elf_check;
mod host_api;
mod instance;
mod private_copy;
mod table;

pub use instance::NativeInstance;
use table::Table;

/// Longest description a plugin may return.
const MAX_DESCRIPTION_BYTES: usize = 1 << 20;

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
    /// The checked table; its functions are valid while `library` is alive (it is only
    /// ever used beside it).
    table: Table,
    library: Arc<Library>,
    description: Description,
}

/// What a native library's table says, for [`crate::Host::inspect`].
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
        // of another ABI version (possibly shorter) is never read past its version; a v1
        // table is read no further than its size field says.
        let table = unsafe { Table::read(table_ptr, path)? };
        let manifest_abi = artifact.manifest.plugin.abi;
        if manifest_abi != table.abi_version {
            return Err(Error::precondition(format!(
                "plugin.toml says abi = {manifest_abi} but {} is built for ABI {}",
                shown(path),
                table.abi_version
            ))
            .with_field("plugin.abi"));
        }
        let library =
            Arc::new(Library { library: Some(library), copy: Some(copy), unloadable: table.unloadable() });
        let description = describe(&table, path)?;
        Ok(NativeLoaded { table, library, description })
    }

    /// Whether the library declared `PLUGBAY_FLAG_UNLOADABLE`.
    pub fn unloadable(&self) -> bool {
        self.library.unloadable
    }

    /// What the checked table says.
    fn info(&self) -> NativeInfo {
        let table = &self.table;
        NativeInfo {
            abi_version: table.abi_version,
            struct_size: table.struct_size,
            flags: table.flags,
            thread_safe: table.thread_safe(),
            unloadable: self.unloadable(),
            functions: table::REQUIRED.to_vec(),
            description: self.description.clone(),
        }
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

/// Calls the plugin's `describe` and parses its JSON.
fn describe(table: &Table, path: &Path) -> Result<Description> {
    let mut out = Output::EMPTY;
    // SAFETY: checked table; NULL instance as the contract says for describe; `out` is ours.
    let status = unsafe { (table.describe)(std::ptr::null_mut(), &mut out) };
    let taken = table.take(std::ptr::null_mut(), out);
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

impl Loaded for NativeLoaded {
    fn description(&self) -> &Description {
        &self.description
    }

    fn native_info(&self) -> Option<NativeInfo> {
        Some(self.info())
    }

    fn instantiate(&self, context: InstanceContext) -> BoxFuture<'_, Result<Arc<dyn Instance>>> {
        Box::pin(async move {
            NativeInstance::init(self.table, self.library.clone(), context)
                .map(|instance| Arc::new(instance) as Arc<dyn Instance>)
        })
    }
}
