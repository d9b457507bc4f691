//! [`Host`]: built from a [`HostConfig`], it loads plugins, routes calls, and publishes
//! events. It wires the parts together and holds no logic of theirs.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};

use crate::bus::{self, Bus, Event, LIFECYCLE_TOPIC, LifecycleChange};
use crate::call::{Call, Payload, Target};
use crate::catalog;
use crate::config::HostConfig;
use crate::error::{Code, Error, Result};
use crate::lifecycle::State;
use crate::manifest::{MANIFEST_FILE, MAX_MANIFEST_BYTES, Manifest, RuntimeKind};
use crate::platform;
use crate::runtime::native::NativeRuntime;
use crate::runtime::process::ProcessRuntime;
#[cfg(feature = "wasm")]
use crate::runtime::wasm::WasmRuntime;
use crate::runtime::{Artifact, CallOutcome, HostCallbacks, InstanceContext, Loaded, LogLevel, Runtime};
use crate::safe_fs;
use crate::scheduler::{Scheduler, Slot};

/// The plugin container. Cheap to clone (all clones share one host).
///
/// ```no_run
/// # async fn example() -> plugbay_core::Result<()> {
/// use plugbay_core::{Call, Host, HostConfig, Payload};
///
/// let host = Host::build(HostConfig::with_plugin_dir("target/plugins"))?;
/// let report = host.load_all().await;
/// for failure in &report.failed {
///     eprintln!("{failure}");
/// }
/// let reply = host.invoke(Call::new("text.transform@1", "upper", Payload::json("hello")?)).await?;
/// assert_eq!(reply.to_json::<String>()?, "HELLO");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    config: HostConfig,
    native: NativeRuntime,
    process: ProcessRuntime,
    #[cfg(feature = "wasm")]
    wasm: WasmRuntime,
    scheduler: Scheduler,
    bus: Bus,
    /// Every plugin folder the host knows, by folder path (ids may clash; folders cannot).
    plugins: Mutex<BTreeMap<PathBuf, Arc<PluginEntry>>>,
    /// The host's own tokio runtime, when it was built outside one.
    owned_runtime: Mutex<Option<tokio::runtime::Runtime>>,
    /// This host, weakly, for plugins' callbacks (instances live inside the host, so a
    /// strong reference would be a cycle).
    me: Weak<HostInner>,
}

/// One plugin folder's record.
struct PluginEntry {
    folder: PathBuf,
    /// Serialises lifecycle operations on this plugin (load, start, stop, unload).
    operation: tokio::sync::Mutex<()>,
    status: Mutex<PluginStatus>,
}

struct PluginStatus {
    id: String,
    state: State,
    manifest: Option<Arc<Manifest>>,
    error: Option<ErrorInfo>,
    loaded: Option<Arc<dyn Loaded>>,
    /// The routable instances (several for process plugins with replicas).
    slots: Vec<Arc<Slot>>,
}

/// A failure as data: its code and the whole message with its context.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorInfo {
    /// The error's code.
    pub code: Code,
    /// The rendered error (`Error`'s `Display`).
    pub message: String,
}

impl From<&Error> for ErrorInfo {
    fn from(error: &Error) -> ErrorInfo {
        ErrorInfo { code: error.code(), message: error.to_string() }
    }
}

/// What the host knows about one plugin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    /// The plugin id (the folder name when the manifest could not be read).
    pub id: String,
    /// The plugin folder.
    pub folder: PathBuf,
    /// The version from the manifest, if it was read.
    pub version: Option<String>,
    /// The runtime from the manifest, if it was read.
    pub runtime: Option<RuntimeKind>,
    /// Where it is in its lifecycle.
    pub state: State,
    /// The capabilities it provides (from the manifest).
    pub capabilities: Vec<String>,
    /// Why it is not running, when it failed.
    pub error: Option<ErrorInfo>,
}

/// The outcome of loading a plugins folder: who loaded and who did not, and why.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Ids of the plugins now running.
    pub loaded: Vec<String>,
    /// The plugins (or folders) that failed, each with its error.
    pub failed: Vec<Error>,
}

impl Host {
    /// Builds a host. Validates the configuration first; loads nothing (see
    /// [`Host::load_all`]). Uses the current tokio runtime if there is one, otherwise starts
    /// a small one of its own for background work (event delivery).
    ///
    /// # Errors
    /// `invalid_argument` for a bad configuration; `internal` if no runtime can be started.
    pub fn build(config: HostConfig) -> Result<Host> {
        config.validate()?;
        let (handle, owned_runtime) = match tokio::runtime::Handle::try_current() {
            Ok(handle) => (handle, None),
            Err(_) => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("plugbay-host")
                    .enable_all()
                    .build()
                    .map_err(|error| {
                        Error::internal(format!("cannot start the host's tokio runtime: {error}"))
                    })?;
                (runtime.handle().clone(), Some(runtime))
            }
        };
        let (bus, deliveries) = Bus::new(config.event_queue);
        #[cfg(feature = "wasm")]
        let wasm = WasmRuntime::new(config.wasm_cache_dir.as_deref());
        let inner = Arc::new_cyclic(|me| HostInner {
            me: me.clone(),
            config,
            native: NativeRuntime,
            process: ProcessRuntime,
            #[cfg(feature = "wasm")]
            wasm,
            scheduler: Scheduler::new(),
            bus,
            plugins: Mutex::new(BTreeMap::new()),
            owned_runtime: Mutex::new(owned_runtime),
        });
        handle.spawn(deliver_to_plugins(Arc::downgrade(&inner), deliveries));
        Ok(Host { inner })
    }

    /// The configuration the host was built with.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Loads every plugin in every folder of [`HostConfig::plugin_dirs`]. One broken plugin
    /// never stops the others; each failure is in the report and in [`Host::plugins`].
    pub async fn load_all(&self) -> LoadReport {
        let mut report = LoadReport::default();
        for dir in self.inner.config.plugin_dirs.clone() {
            let candidates = match catalog::scan(&dir) {
                Ok(candidates) => candidates,
                Err(error) => {
                    report.failed.push(error);
                    continue;
                }
            };
            for candidate in candidates {
                let result = match candidate.problem {
                    Some(problem) => {
                        Err(self.inner.fail_discovery(&candidate.folder, &candidate.name, problem))
                    }
                    None => self.load_folder(&candidate.folder).await,
                };
                match result {
                    Ok(id) => report.loaded.push(id),
                    Err(error) => report.failed.push(error),
                }
            }
        }
        report
    }

    /// Loads (or loads again) the plugin in `folder` and starts it; returns its id.
    ///
    /// # Errors
    /// The reason the plugin could not be started, naming the plugin and the file; the
    /// plugin is then listed as `failed` with that error.
    pub async fn load_folder(&self, folder: &Path) -> Result<String> {
        let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let entry = self.inner.entry_for(folder, &name);
        let _operation = entry.operation.lock().await;
        {
            let state = entry.status.lock().state;
            if matches!(state, State::Running | State::Initialized | State::Loaded | State::Draining) {
                return Err(Error::precondition(format!("the plugin is already {state}")).with_plugin(&name));
            }
            if state != State::Discovered {
                self.inner.transition(&entry, State::Discovered, "loading from its folder")?;
            }
        }
        match self.inner.bring_up(&entry, &name).await {
            Ok(id) => Ok(id),
            Err(error) => {
                let error = error.with_plugin(entry.status.lock().id.clone());
                self.inner.fail(&entry, &error);
                Err(error)
            }
        }
    }

    /// Calls a method on a capability or a plugin and waits for the response.
    ///
    /// Native calls run on the caller's thread (no hand-off) and cannot be pre-empted: a
    /// deadline is checked before the call starts, not during it.
    ///
    /// # Errors
    /// `not_found` (no such capability or plugin), `unavailable` (stopped or stopping),
    /// `permission_denied` (method not in `[provides]`), `deadline_exceeded`, or the
    /// plugin's own error; each names the plugin and the method.
    pub async fn invoke(&self, call: Call) -> Result<Payload> {
        let slot = self.inner.route(&call.target, &call.method)?;
        let _in_flight = slot.enter()?;
        let context = |error: Error| error.with_plugin(&*slot.plugin).with_method(&call.method);
        if call.deadline.is_some_and(|deadline| deadline.remaining().is_zero()) {
            return Err(context(Error::new(
                Code::DeadlineExceeded,
                "the deadline passed before the call started",
            )));
        }
        let deadline = call.deadline.map(|deadline| deadline.instant());
        match slot.instance.call(&call.method, &call.payload, deadline) {
            CallOutcome::Done(result) => result.map_err(context),
            CallOutcome::Pending(future) => {
                let timeout = match call.deadline {
                    Some(deadline) => deadline.remaining(),
                    None => self.inner.timeout_of(&slot),
                };
                match tokio::time::timeout(timeout, future).await {
                    Ok(result) => result.map_err(context),
                    Err(_) => Err(context(Error::new(
                        Code::DeadlineExceeded,
                        format!("no response within {} ms", timeout.as_millis()),
                    ))),
                }
            }
        }
    }

    /// The synchronous fast path for embedders: the same routing, whitelist and errors as
    /// [`Host::invoke`], run entirely on the calling thread.
    ///
    /// # Errors
    /// As [`Host::invoke`]; also `failed_precondition` for a plugin whose runtime only
    /// serves calls asynchronously.
    pub fn invoke_sync(&self, call: &Call) -> Result<Payload> {
        self.inner.invoke_sync(call)
    }

    /// Resolves `target` and `method` once, for repeated synchronous calls without the
    /// routing lookup. The handle stays bound to the instance chosen now (no round-robin)
    /// and answers `unavailable` once that instance stops.
    ///
    /// # Errors
    /// As the routing errors of [`Host::invoke`].
    pub fn resolve(&self, target: &Target, method: &str) -> Result<MethodHandle> {
        let slot = self.inner.route(target, method)?;
        Ok(MethodHandle { slot, method: method.into() })
    }

    /// Every plugin the host knows, sorted by id, with state, capabilities and errors.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let entries: Vec<_> = self.inner.plugins.lock().values().cloned().collect();
        let mut infos: Vec<PluginInfo> = entries.iter().map(|entry| entry.info()).collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| a.folder.cmp(&b.folder)));
        infos
    }

    /// One plugin by id.
    ///
    /// # Errors
    /// `not_found` when no plugin has that id.
    pub fn plugin(&self, id: &str) -> Result<PluginInfo> {
        self.inner.find(id).map(|entry| entry.info())
    }

    /// Stops a running plugin: no new calls, calls in flight finish (up to
    /// [`HostConfig::drain_timeout`]), then the instance shuts down once its last call
    /// returns. The plugin stays loaded and can be started again.
    ///
    /// # Errors
    /// `not_found` for an unknown id; `failed_precondition` when it is not running.
    pub async fn stop(&self, id: &str) -> Result<()> {
        let entry = self.inner.find(id)?;
        let _operation = entry.operation.lock().await;
        self.inner.stop_entry(&entry).await
    }

    /// Starts a stopped plugin again (a new instance from the loaded artifact), or loads a
    /// failed, quarantined or unloaded one from its folder.
    ///
    /// # Errors
    /// `not_found` for an unknown id; `failed_precondition` when it is already running; the
    /// init error otherwise.
    pub async fn start(&self, id: &str) -> Result<()> {
        let entry = self.inner.find(id)?;
        let state = entry.status.lock().state;
        match state {
            State::Stopped => {
                let _operation = entry.operation.lock().await;
                // Another start may have run while this one waited for the lock.
                let state = entry.status.lock().state;
                if state != State::Stopped {
                    return Err(
                        Error::precondition(format!("cannot start a plugin that is {state}")).with_plugin(id)
                    );
                }
                let result = self.inner.instantiate(&entry).await;
                result.inspect_err(|error| self.inner.fail(&entry, error))
            }
            State::Failed | State::Quarantined | State::Unloaded | State::BackingOff => {
                self.load_folder(&entry.folder).await.map(drop)
            }
            other => {
                Err(Error::precondition(format!("cannot start a plugin that is {other}")).with_plugin(id))
            }
        }
    }

    /// Stops the plugin if it runs, then releases it. A native library is closed only if it
    /// declared itself unloadable and no call is in flight; otherwise it stays mapped.
    ///
    /// # Errors
    /// `not_found` for an unknown id; `failed_precondition` if it is already unloaded.
    pub async fn unload(&self, id: &str) -> Result<()> {
        let entry = self.inner.find(id)?;
        let _operation = entry.operation.lock().await;
        if entry.status.lock().state == State::Running {
            self.inner.stop_entry(&entry).await?;
        }
        self.inner.transition(&entry, State::Unloaded, "unloaded on request")?;
        let mut status = entry.status.lock();
        status.loaded = None;
        status.slots.clear();
        Ok(())
    }

    /// A receiver of every event from now on: lifecycle transitions (topic
    /// [`LIFECYCLE_TOPIC`]) and everything plugins or callers publish. A receiver that
    /// falls more than [`HostConfig::event_queue`] events behind loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.bus.subscribe()
    }

    /// Publishes an event to subscribers and to plugins whose manifest subscribes to its
    /// topic.
    ///
    /// # Errors
    /// `invalid_argument` for a bad topic; `resource_exhausted` when the queue is full.
    pub fn publish(&self, event: Event) -> Result<()> {
        bus::check_topic(&event.topic)?;
        self.inner.bus.publish(event)
    }
}

impl Drop for HostInner {
    fn drop(&mut self) {
        if let Some(runtime) = self.owned_runtime.get_mut().take() {
            runtime.shutdown_background();
        }
    }
}

/// A resolved `(instance, method)` for repeated synchronous calls: see [`Host::resolve`].
#[derive(Clone)]
pub struct MethodHandle {
    slot: Arc<Slot>,
    method: Box<str>,
}

impl MethodHandle {
    /// Calls the method and returns the response (copied once out of the plugin).
    ///
    /// # Errors
    /// `unavailable` once the plugin stopped; the plugin's own error otherwise.
    pub fn call(&self, payload: &Payload) -> Result<Payload> {
        let _in_flight = self.slot.enter()?;
        match self.slot.instance.call(&self.method, payload, None) {
            CallOutcome::Done(result) => {
                result.map_err(|e| e.with_plugin(&*self.slot.plugin).with_method(&*self.method))
            }
            CallOutcome::Pending(_) => Err(not_synchronous(&self.slot)),
        }
    }

    /// Calls the method and lends the response bytes and content type to `receive`
    /// without copying them; returns what `receive` returns.
    ///
    /// # Errors
    /// As [`MethodHandle::call`].
    pub fn call_borrowed<R>(
        &self,
        payload: &[u8],
        content_type: &str,
        receive: impl FnOnce(&[u8], &str) -> R,
    ) -> Result<R> {
        let _in_flight = self.slot.enter()?;
        let mut receive = Some(receive);
        let mut result = None;
        let outcome =
            self.slot.instance.call_borrowed(&self.method, payload, content_type, &mut |bytes, ct| {
                if let Some(receive) = receive.take() {
                    result = Some(receive(bytes, ct));
                }
            });
        match outcome {
            Some(Ok(())) => result.ok_or_else(|| Error::internal("the runtime returned no response")),
            Some(Err(error)) => Err(error.with_plugin(&*self.slot.plugin).with_method(&*self.method)),
            None => Err(not_synchronous(&self.slot)),
        }
    }

    /// The plugin this handle is bound to.
    pub fn plugin(&self) -> &str {
        &self.slot.plugin
    }
}

fn not_synchronous(slot: &Slot) -> Error {
    Error::precondition(format!(
        "the {} runtime serves calls asynchronously; use Host::invoke",
        slot.manifest.plugin.runtime
    ))
    .with_plugin(&*slot.plugin)
}

impl PluginEntry {
    fn info(&self) -> PluginInfo {
        let status = self.status.lock();
        let manifest = status.manifest.as_deref();
        PluginInfo {
            id: status.id.clone(),
            folder: self.folder.clone(),
            version: manifest.map(|m| m.plugin.version.to_string()),
            runtime: manifest.map(|m| m.plugin.runtime),
            state: status.state,
            capabilities: manifest.map(|m| m.provides.keys().cloned().collect()).unwrap_or_default(),
            error: status.error.clone(),
        }
    }
}

thread_local! {
    /// How deep the current thread is in plugin-to-plugin calls through the host.
    static CALL_DEPTH: Cell<u32> = const { Cell::new(0) };
}

impl HostInner {
    fn entry_for(&self, folder: &Path, name: &str) -> Arc<PluginEntry> {
        let mut plugins = self.plugins.lock();
        if let Some(entry) = plugins.get(folder) {
            return entry.clone();
        }
        let entry = Arc::new(PluginEntry {
            folder: folder.to_path_buf(),
            operation: tokio::sync::Mutex::new(()),
            status: Mutex::new(PluginStatus {
                id: name.to_owned(),
                state: State::Discovered,
                manifest: None,
                error: None,
                loaded: None,
                slots: Vec::new(),
            }),
        });
        plugins.insert(folder.to_path_buf(), entry.clone());
        drop(plugins);
        self.announce(name, None, State::Discovered, format!("found in {}", folder.display()));
        entry
    }

    /// Records a plugin the catalog refused before reading it.
    fn fail_discovery(&self, folder: &Path, name: &str, error: Error) -> Error {
        let entry = self.entry_for(folder, name);
        self.fail(&entry, &error);
        error
    }

    fn find(&self, id: &str) -> Result<Arc<PluginEntry>> {
        let plugins = self.plugins.lock();
        let mut matches = plugins.values().filter(|entry| entry.status.lock().id == id);
        // Prefer the entry that is not a refused duplicate.
        let first = matches.next().cloned();
        let better = matches.find(|entry| entry.status.lock().state != State::Failed).cloned();
        match (first, better) {
            (Some(first), Some(better)) if first.status.lock().state == State::Failed => Ok(better),
            (Some(first), _) => Ok(first),
            (None, _) => Err(Error::not_found(format!("no plugin with id {id:?}")).with_plugin(id)),
        }
    }

    /// Checks and applies a transition, then publishes it.
    fn transition(&self, entry: &PluginEntry, to: State, reason: impl Into<String>) -> Result<()> {
        let (id, from) = {
            let mut status = entry.status.lock();
            let from = status.state;
            from.transition(to).map_err(|error| error.with_plugin(status.id.clone()))?;
            status.state = to;
            if to != State::Failed {
                status.error = None;
            }
            (status.id.clone(), from)
        };
        self.announce(&id, Some(from), to, reason.into());
        Ok(())
    }

    fn announce(&self, plugin: &str, from: Option<State>, to: State, reason: String) {
        match &from {
            Some(from) => tracing::debug!(plugin, %from, %to, %reason, "lifecycle"),
            None => tracing::debug!(plugin, %to, %reason, "lifecycle"),
        }
        let change = LifecycleChange { plugin: plugin.to_owned(), from, to, reason };
        let payload = Payload::json(&change).unwrap_or_default();
        // A full plugin queue must not block or fail a lifecycle step; subscribers still
        // get the event through the broadcast outlet.
        let _ = self.bus.publish(Event::new(LIFECYCLE_TOPIC, to.as_str(), payload, "host"));
    }

    /// Marks a plugin failed with `error` (from any state that may fail).
    fn fail(&self, entry: &PluginEntry, error: &Error) {
        tracing::warn!(folder = %entry.folder.display(), "{error}");
        let state = entry.status.lock().state;
        if state.can_become(State::Failed) {
            let _ = self.transition(entry, State::Failed, error.to_string());
        }
        let (id, slots) = {
            let mut status = entry.status.lock();
            status.error = Some(ErrorInfo::from(error));
            (status.id.clone(), std::mem::take(&mut status.slots))
        };
        if !slots.is_empty() {
            // A failed plugin takes no calls; its instances shut down in the background.
            self.scheduler.remove(&id);
            tokio::spawn(async move {
                for slot in &slots {
                    slot.instance.shutdown().await;
                }
            });
        }
    }

    /// Discovered -> Loaded -> Initialized -> Running.
    async fn bring_up(&self, entry: &Arc<PluginEntry>, name: &str) -> Result<String> {
        let folder = &entry.folder;
        let manifest_path = folder.join(MANIFEST_FILE);
        let bytes = safe_fs::read_beneath(
            folder,
            Path::new(MANIFEST_FILE),
            MAX_MANIFEST_BYTES as u64,
            Code::InvalidArgument,
        )?;
        let manifest = Arc::new(Manifest::parse(&bytes, &manifest_path, Some(name))?);
        let id = manifest.plugin.id.clone();
        {
            let mut status = entry.status.lock();
            status.id = id.clone();
            status.manifest = Some(manifest.clone());
        }
        self.refuse_duplicate(entry, &id)?;
        let runtime = self.runtime(manifest.plugin.runtime).map_err(|e| e.with_file(&manifest_path))?;
        let artifact_name = match manifest.plugin.runtime {
            RuntimeKind::Native => platform::native_library_file_name(&manifest.plugin.entry),
            _ => manifest.plugin.entry.clone(),
        };
        let artifact_path = folder.join(&artifact_name);
        let limit = self.config.max_artifact_bytes;
        let relative = Path::new(&artifact_name);
        let bytes = if runtime.reads_artifact() {
            safe_fs::read_beneath(folder, relative, limit, Code::ResourceExhausted)
        } else {
            safe_fs::check_beneath(folder, relative, limit, Code::ResourceExhausted).map(|()| Vec::new())
        }
        .map_err(|error| error.with_field("plugin.entry"))?;
        let loaded = runtime.load(Artifact { manifest: &manifest, path: &artifact_path, bytes }).await?;
        loaded.description().check_against(&manifest).map_err(|error| error.with_file(&artifact_path))?;
        entry.status.lock().loaded = Some(loaded);
        self.transition(entry, State::Loaded, format!("{} loaded", artifact_path.display()))?;
        self.instantiate(entry).await?;
        Ok(id)
    }

    /// A second folder with an id that another folder already uses is refused.
    fn refuse_duplicate(&self, entry: &PluginEntry, id: &str) -> Result<()> {
        let plugins = self.plugins.lock();
        let other = plugins.values().find(|other| {
            other.folder != entry.folder && {
                let status = other.status.lock();
                status.id == id
                    && !matches!(status.state, State::Unloaded | State::Failed | State::Discovered)
            }
        });
        match other {
            Some(other) => Err(Error::invalid(format!(
                "plugin id {id:?} is already used by {}; this folder {} is refused (ids must be unique per host)",
                other.folder.display(),
                entry.folder.display()
            ))
            .with_field("plugin.id")
            .with_file(entry.folder.join(MANIFEST_FILE))),
            None => Ok(()),
        }
    }

    fn runtime(&self, kind: RuntimeKind) -> Result<&dyn Runtime> {
        match kind {
            RuntimeKind::Native => Ok(&self.native),
            RuntimeKind::Process => Ok(&self.process),
            #[cfg(feature = "wasm")]
            RuntimeKind::Wasm => Ok(&self.wasm),
            #[allow(unreachable_patterns)] // only reachable without the `wasm` feature
            other => Err(Error::precondition(format!(
                "the {other} runtime is not available in this build of plugbay (built without the `wasm` feature)"
            ))
            .with_field("plugin.runtime")),
        }
    }

    /// (Loaded | Stopped) -> Initialized -> Running.
    async fn instantiate(self: &HostInner, entry: &Arc<PluginEntry>) -> Result<()> {
        let (loaded, manifest, id) = {
            let status = entry.status.lock();
            (status.loaded.clone(), status.manifest.clone(), status.id.clone())
        };
        let (Some(loaded), Some(manifest)) = (loaded, manifest) else {
            return Err(Error::precondition("the plugin is not loaded").with_plugin(id));
        };
        let context = InstanceContext {
            plugin: Arc::from(id.as_str()),
            config: self.config.plugin_config.get(&id).cloned().unwrap_or_default(),
            callbacks: Arc::new(HostLink(self.me.clone())),
            max_payload_bytes: self.config.max_payload_bytes,
            default_timeout: self.config.default_timeout,
        };
        let replicas = match manifest.plugin.runtime {
            RuntimeKind::Process => manifest.process.replicas as usize,
            _ => 1,
        };
        let mut slots = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            match loaded.instantiate(context.clone()).await {
                Ok(instance) => slots.push(Arc::new(Slot::new(
                    instance,
                    manifest.clone(),
                    entry.folder.join(MANIFEST_FILE),
                ))),
                Err(error) => {
                    for slot in &slots {
                        slot.instance.shutdown().await;
                    }
                    return Err(error);
                }
            }
        }
        self.transition(entry, State::Initialized, format!("init succeeded ({replicas} instance(s))"))?;
        entry.status.lock().slots = slots.clone();
        self.scheduler.insert(&id, slots.clone());
        for slot in &slots {
            self.watch_for_death(entry, slot);
        }
        self.transition(entry, State::Running, "routing calls to it")
    }

    /// When an instance dies on its own (a process exits), takes the plugin out of routing
    /// and marks it failed with the reason; calls in flight on it have already failed.
    fn watch_for_death(&self, entry: &Arc<PluginEntry>, slot: &Arc<Slot>) {
        let Some(died) = slot.instance.died() else { return };
        let (host, entry, slot) = (self.me.clone(), entry.clone(), Arc::downgrade(slot));
        tokio::spawn(async move {
            let reason = died.await;
            let (Some(host), Some(slot)) = (host.upgrade(), slot.upgrade()) else { return };
            let routed = entry.status.lock().slots.iter().any(|s| Arc::ptr_eq(s, &slot));
            if !routed {
                return; // stopped on purpose
            }
            let id = entry.status.lock().id.clone();
            let _operation = entry.operation.lock().await;
            if !entry.status.lock().slots.iter().any(|s| Arc::ptr_eq(s, &slot)) {
                return;
            }
            host.scheduler.remove(&id);
            let slots = std::mem::take(&mut entry.status.lock().slots);
            for other in slots.iter().filter(|s| !Arc::ptr_eq(s, &slot)) {
                other.instance.shutdown().await;
            }
            host.fail(&entry, &Error::unavailable(reason).with_plugin(id));
        });
    }

    /// Running -> Draining -> Stopped.
    async fn stop_entry(&self, entry: &PluginEntry) -> Result<()> {
        self.transition(entry, State::Draining, "stop requested")?;
        let (id, slots) = {
            let mut status = entry.status.lock();
            (status.id.clone(), std::mem::take(&mut status.slots))
        };
        self.scheduler.remove(&id);
        // Every replica stops taking calls at once, and all share one drain deadline.
        for slot in &slots {
            slot.close();
        }
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        let mut still_running = 0;
        for slot in &slots {
            still_running += slot.drain(deadline).await;
        }
        // Replicas shut down side by side, each within its own grace period.
        let mut shutdowns = tokio::task::JoinSet::new();
        for slot in &slots {
            let slot = slot.clone();
            shutdowns.spawn(async move { slot.instance.shutdown().await });
        }
        while shutdowns.join_next().await.is_some() {}
        let reason = if still_running == 0 {
            "drained".to_owned()
        } else {
            format!(
                "drain deadline of {} ms passed with {still_running} calls in flight; the instance shuts down when they return",
                self.config.drain_timeout.as_millis()
            )
        };
        drop(slots);
        self.transition(entry, State::Stopped, reason)
    }

    fn route(&self, target: &Target, method: &str) -> Result<Arc<Slot>> {
        self.scheduler.route(target, method).map_err(|error| {
            if error.code() != Code::NotFound {
                return error;
            }
            // Slow path: say why the target is not routable.
            let Target::Plugin(id) = target else { return error.with_method(method) };
            match self.find(id) {
                Ok(entry) => {
                    let status = entry.status.lock();
                    let mut message = format!("plugin {id:?} is {}", status.state);
                    if let Some(cause) = &status.error {
                        message.push_str(&format!(": {}", cause.message));
                    }
                    Error::unavailable(message).with_plugin(id).with_method(method)
                }
                Err(_) => error.with_method(method),
            }
        })
    }

    fn timeout_of(&self, slot: &Slot) -> std::time::Duration {
        slot.manifest
            .limits
            .timeout_ms
            .map(std::time::Duration::from_millis)
            .unwrap_or(self.config.default_timeout)
    }

    fn invoke_sync(&self, call: &Call) -> Result<Payload> {
        let slot = self.route(&call.target, &call.method)?;
        let _in_flight = slot.enter()?;
        if call.deadline.is_some_and(|deadline| deadline.remaining().is_zero()) {
            return Err(Error::new(Code::DeadlineExceeded, "the deadline passed before the call started")
                .with_plugin(&*slot.plugin)
                .with_method(&call.method));
        }
        let deadline = call.deadline.map(|deadline| deadline.instant());
        match slot.instance.call(&call.method, &call.payload, deadline) {
            CallOutcome::Done(result) => {
                result.map_err(|e| e.with_plugin(&*slot.plugin).with_method(&call.method))
            }
            CallOutcome::Pending(_) => Err(not_synchronous(&slot)),
        }
    }
}

/// The host as plugins' callbacks see it.
struct HostLink(Weak<HostInner>);

impl HostLink {
    fn host(&self) -> Result<Arc<HostInner>> {
        self.0.upgrade().ok_or_else(|| Error::unavailable("the host is shutting down"))
    }
}

impl HostCallbacks for HostLink {
    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        match level {
            LogLevel::Error => tracing::error!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
        }
    }

    fn publish(&self, plugin: &str, topic: &str, action: &str, payload: Payload) -> Result<()> {
        bus::check_topic(topic)?;
        self.host()?.bus.publish(Event::new(topic, action, payload, plugin))
    }

    fn invoke(&self, plugin: &str, call: Call) -> Result<Payload> {
        let host = self.host()?;
        let depth = CALL_DEPTH.get();
        if depth >= host.config.max_call_depth {
            return Err(Error::new(
                Code::ResourceExhausted,
                format!("plugins called each other {depth} deep through the host (max_call_depth)"),
            )
            .with_plugin(plugin));
        }
        CALL_DEPTH.set(depth + 1);
        let result = host.invoke_sync(&call);
        CALL_DEPTH.set(depth);
        result
    }

    fn max_call_depth(&self) -> u32 {
        self.0.upgrade().map_or(1, |host| host.config.max_call_depth)
    }

    fn invoke_async(&self, _plugin: &str, call: Call) -> crate::runtime::BoxFuture<'static, Result<Payload>> {
        let host = self.host();
        Box::pin(async move { Host { inner: host? }.invoke(call).await })
    }
}

/// Delivers queued events to the plugins whose manifest subscribes to their topic.
async fn deliver_to_plugins(host: Weak<HostInner>, mut queue: mpsc::Receiver<Event>) {
    while let Some(event) = queue.recv().await {
        let Some(host) = host.upgrade() else { return };
        let table = host.scheduler.snapshot();
        for slot in table.slots() {
            let subscribed = slot
                .manifest
                .subscribes
                .topics
                .iter()
                .any(|pattern| bus::topic_matches(pattern, &event.topic));
            if !subscribed || *slot.plugin == *event.source {
                continue;
            }
            let Ok(_in_flight) = slot.enter() else { continue };
            let result = match slot.instance.on_event(&event) {
                CallOutcome::Done(result) => result,
                CallOutcome::Pending(future) => {
                    match tokio::time::timeout(host.timeout_of(slot), future).await {
                        Ok(result) => result,
                        Err(_) => Err(Error::new(Code::DeadlineExceeded, "on_event did not finish in time")),
                    }
                }
            };
            if let Err(error) = result {
                tracing::warn!(plugin = %slot.plugin, topic = %event.topic, "event delivery failed: {error}");
            }
        }
    }
}
