//! The wasm runtime: WebAssembly components (the `plugbay:plugin` world of
//! `wit/plugbay.wit`) run by wasmtime in the host process, sandboxed.
//!
//! # What it guarantees
//! - **Nothing by default**: a plugin gets the directories, environment variables and
//!   network its manifest's `[permissions]` grant, no more ([`capabilities`]). A component
//!   that imports `wasi:sockets` without `network = true`, or an interface the host does not
//!   provide (another version of the plugbay world, say), fails to load with an error that
//!   names the import; nothing is instantiated.
//! - **Limits**: memory from `limits.memory_mb` (a refused grow is `resource_exhausted`), a
//!   deadline per call enforced by epoch interruption (`deadline_exceeded` within one
//!   [`engine::EPOCH_TICK`] of it), a bounded wasm stack (deep recursion is
//!   `resource_exhausted`, never a host crash), an artifact size cap checked before
//!   compiling, and compilation on tokio's blocking pool, one at a time.
//! - **Faults stay inside**: a trap fails that call (`internal` with the trap code), the
//!   instance is discarded, and the next call gets a fresh one (restored from the last
//!   snapshot when the component exports the optional `state` interface, see [`state`]).
//! - **Unload is real**: dropping the last reference drops every store and instance.
//! - **Speed**: one [`wasmtime::Engine`] per host, pre-linked instantiation
//!   (`InstancePre`), the pooling allocator, and compiled components cached on disk
//!   ([`cache`]) when [`crate::HostConfig::wasm_cache_dir`] is set.
//!
//! Instances of a component that cannot wait (it imports nothing but the host's `log` and
//! `publish`), persistent or per-call, are created and called on the caller's thread:
//! `Host::invoke` finishes them without a fiber, and `Host::resolve`'s synchronous paths
//! serve them, lending the response from the guest's memory ([`inline`]). Every other call
//! is asynchronous
//! ([`CallOutcome::Pending`](crate::runtime::CallOutcome)); the synchronous paths answer
//! those with `failed_precondition`.

mod cache;
mod capabilities;
mod engine;
mod inline;
mod instance;
mod limits;
mod state;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use wasmtime::component::{HasSelf, Linker};

use crate::error::{Code, Error, Result};
use crate::manifest::RuntimeKind;
use crate::runtime::wasm::cache::{Cache, Lookup};
use crate::runtime::wasm::capabilities::Grants;
use crate::runtime::wasm::engine::WasmEngine;
use crate::runtime::wasm::instance::{Shared, StoreState, WasmInstance};
use crate::runtime::{Artifact, BoxFuture, Description, Instance, InstanceContext, Loaded, Runtime};

/// Host bindings generated from `wit/plugbay.wit`.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/plugbay.wit",
        world: "plugin",
        // Only `invoke` waits (for another plugin): `log` and `publish` are synchronous, so
        // a component that imports nothing else can be called on the caller's thread.
        imports: { "plugbay:plugin/host.invoke": async },
        exports: { default: async },
    });
}

/// The wasm runtime of one host: its engine (created on the first wasm load) and cache.
pub struct WasmRuntime {
    engine: OnceLock<Arc<WasmEngine>>,
    /// Whether the engine uses the pooling allocator ([`crate::HostConfig::wasm_pooling`]).
    pooling: bool,
    /// WASI and the host API, linked once for every plugin of this runtime (what a plugin
    /// may use is decided by its WASI context and the import check, not by the linker).
    linker: OnceLock<Linker<StoreState>>,
    cache: Option<Cache>,
}

impl WasmRuntime {
    /// A runtime that caches compiled components in `cache_dir` (created with mode 0700)
    /// when given, and pools instance slots when `pooling`. Cheap: the engine is created on
    /// the first load.
    pub fn new(cache_dir: Option<&Path>, pooling: bool) -> WasmRuntime {
        WasmRuntime {
            engine: OnceLock::new(),
            pooling,
            linker: OnceLock::new(),
            cache: cache_dir.and_then(Cache::open),
        }
    }

    fn engine(&self) -> Result<Arc<WasmEngine>> {
        if let Some(engine) = self.engine.get() {
            return Ok(engine.clone());
        }
        let engine = WasmEngine::start(self.pooling)?;
        Ok(self.engine.get_or_init(|| engine).clone())
    }

    /// The linker every plugin is instantiated with, built on first use.
    fn linker(&self, engine: &WasmEngine) -> Result<&Linker<StoreState>> {
        if let Some(linker) = self.linker.get() {
            return Ok(linker);
        }
        let mut linker: Linker<StoreState> = Linker::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state))
            .map_err(|error| Error::internal(format!("cannot link the host API: {error:#}")))?;
        Ok(self.linker.get_or_init(|| linker))
    }

    async fn open(&self, artifact: Artifact<'_>) -> Result<WasmLoaded> {
        let path = artifact.path;
        let shown = path.display();
        if artifact.bytes.is_empty() {
            return Err(Error::precondition(format!(
                "{shown} is empty (0 bytes), not a WebAssembly component"
            )));
        }
        if artifact.bytes.len() > limits::MAX_ARTIFACT_BYTES {
            return Err(Error::new(
                Code::ResourceExhausted,
                format!(
                    "{shown} is {} bytes; the wasm runtime compiles at most {} MiB",
                    artifact.bytes.len(),
                    limits::MAX_ARTIFACT_BYTES >> 20
                ),
            ));
        }
        let engine = self.engine()?;
        let bytes = Arc::new(artifact.bytes);
        let component = self.component(&engine, bytes).await.map_err(|error| error.with_file(path))?;
        let manifest = artifact.manifest;
        let plugin: Arc<str> = Arc::from(manifest.plugin.id.as_str());
        let grants = Grants::resolve(&manifest.permissions, artifact.folder, &plugin)?;
        grants.check_imports(&component, engine.engine())?;
        let pre = self
            .linker(&engine)?
            .instantiate_pre(&component).and_then(bindings::PluginPre::new).map_err(|error| {
            Error::precondition(format!(
                "{shown} cannot be linked against the plugbay:plugin@1 world and the granted WASI: {error:#}"
            ))
        })?;
        let indices = bindings::PluginIndices::new(pre.instance_pre())
            .map_err(|error| Error::precondition(format!("{shown}: {error:#}")))?;
        let state = state::StateExports::find(&component).map_err(|error| error.with_file(path))?;
        let mode = manifest.wasm.instance;
        let inline = match inline::runs_inline(&component, engine.engine()) {
            true => Some(inline::InlineExports::find(&component).map_err(|error| error.with_file(path))?),
            false => None,
        };
        let shared = Arc::new(Shared {
            engine,
            pre,
            indices,
            state,
            inline,
            grants,
            limits: manifest.limits.clone(),
            mode,
        });
        let description = shared.describe(plugin).await.map_err(|error| error.with_file(path))?;
        Ok(WasmLoaded { shared, description })
    }

    /// The compiled component: from the cache when a valid entry exists, else compiled
    /// (off the async threads) and stored.
    async fn component(
        &self,
        engine: &Arc<WasmEngine>,
        bytes: Arc<Vec<u8>>,
    ) -> Result<wasmtime::component::Component> {
        let Some(cache) = &self.cache else { return engine.compile(bytes).await };
        match cache.load(engine.engine(), &bytes) {
            Lookup::Hit(component) => Ok(component),
            Lookup::Miss(entry) => {
                let component = engine.compile(bytes).await?;
                cache.store(&entry, &component);
                Ok(component)
            }
        }
    }
}

impl Runtime for WasmRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Wasm
    }

    fn load<'a>(&'a self, artifact: Artifact<'a>) -> BoxFuture<'a, Result<Arc<dyn Loaded>>> {
        Box::pin(async move { self.open(artifact).await.map(|loaded| Arc::new(loaded) as Arc<dyn Loaded>) })
    }
}

/// A compiled, linked and described component.
struct WasmLoaded {
    shared: Arc<Shared>,
    description: Description,
}

impl Loaded for WasmLoaded {
    fn description(&self) -> &Description {
        &self.description
    }

    fn instantiate(&self, context: InstanceContext) -> BoxFuture<'_, Result<Arc<dyn Instance>>> {
        Box::pin(async move {
            WasmInstance::start(self.shared.clone(), context)
                .await
                .map(|instance| Arc::new(instance) as Arc<dyn Instance>)
        })
    }
}
