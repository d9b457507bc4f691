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
use crate::metrics::{MetricsSnapshot, PluginMetrics, PluginStats, UnroutedStats};
use crate::platform;
use crate::runtime::native::NativeRuntime;
use crate::runtime::process::ProcessRuntime;
#[cfg(feature = "wasm")]
use crate::runtime::wasm::WasmRuntime;
use crate::runtime::{Artifact, CallOutcome, HostCallbacks, InstanceContext, Loaded, LogLevel, Runtime};
use crate::safe_fs;
use crate::scheduler::{Scheduler, Slot};
use crate::supervisor::{self, CrashLog, CrashReport, FailureWindow};

mod reload;
mod supervise;

pub use reload::{RELOAD_TOPIC, ReloadEvent};

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
    /// Crash reports, newest last.
    crashes: CrashLog,
    /// The last state snapshot of each plugin that takes them, by id.
    snapshots: Mutex<std::collections::HashMap<String, bytes::Bytes>>,
    /// Lazy plugins not loaded yet, by the capabilities and `plugin:<id>` that wake them.
    lazy: Mutex<std::collections::HashMap<String, Arc<PluginEntry>>>,
    /// The plugins-folder watch, once started.
    watcher: Mutex<Option<crate::watch::FolderWatch>>,
    /// The tokio runtime the host's background tasks run on.
    handle: tokio::runtime::Handle,
    /// Errors of calls that reached no plugin.
    unrouted: UnroutedStats,
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
    /// Failures within the `[restart]` window, for the crash-loop check.
    failures: FailureWindow,
    /// Restarts the supervisor made since the plugin was loaded by hand.
    restarts: u32,
    /// The previous version, kept ready for a while after a reload switched away from it.
    probation: Option<reload::Probation>,
    /// Loaded on its first call (`[load] lazy`).
    lazy: bool,
    /// Why the last reload failed (the plugin kept serving its previous version).
    reload_error: Option<ErrorInfo>,
    /// The call counters, created when the manifest is first read (kept across restarts
    /// and reloads while the manifest lists the same methods).
    stats: Option<Arc<PluginStats>>,
}

/// A failure as data: its code and the whole message with its context.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Running instances (replicas).
    pub instances: usize,
    /// Restarts the supervisor made since the plugin was last loaded or started by hand.
    pub restarts: u32,
    /// In-process calls seen running past their timeout since the instance started (they
    /// cannot be pre-empted; see [`Host::invoke`]).
    pub stuck_calls: u64,
    /// Loaded on its first call (`[load] lazy`).
    pub lazy: bool,
    /// Why the last reload failed; the plugin kept (or went back to) its previous version.
    /// Cleared by the next successful reload.
    pub reload_error: Option<ErrorInfo>,
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
        let process = ProcessRuntime::new(handle.clone(), config.process_socket_dir.clone());
        #[cfg(feature = "wasm")]
        let wasm = WasmRuntime::new(config.wasm_cache_dir.as_deref(), config.wasm_pooling);
        let inner = Arc::new_cyclic(|me| HostInner {
            me: me.clone(),
            config,
            native: NativeRuntime,
            process,
            #[cfg(feature = "wasm")]
            wasm,
            scheduler: Scheduler::new(),
            bus,
            crashes: CrashLog::default(),
            snapshots: Mutex::new(std::collections::HashMap::new()),
            lazy: Mutex::new(std::collections::HashMap::new()),
            watcher: Mutex::new(None),
            handle: handle.clone(),
            unrouted: UnroutedStats::default(),
            plugins: Mutex::new(BTreeMap::new()),
            owned_runtime: Mutex::new(owned_runtime),
        });
        handle.spawn(deliver_to_plugins(Arc::downgrade(&inner), deliveries));
        handle.spawn(supervise::watch_stuck_calls(Arc::downgrade(&inner)));
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
                if candidate.problem.is_none() && self.inner.register_lazy(&candidate.folder, &candidate.name)
                {
                    continue;
                }
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
        if self.inner.config.watch
            && let Err(error) = self.watch()
        {
            report.failed.push(error);
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
        self.inner.load_locked(&entry, &name).await
    }

    /// Calls a method on a capability or a plugin and waits for the response.
    ///
    /// The call's deadline is the caller's ([`Call::deadline`]) or the plugin's
    /// `limits.timeout_ms` (else [`HostConfig::default_timeout`]), whichever comes first.
    /// Process calls are cancelled at the deadline and the caller gets `deadline_exceeded`
    /// at once. Native calls run on the caller's thread (no hand-off) and cannot be
    /// pre-empted: the caller waits until the plugin returns, then gets
    /// `deadline_exceeded` (the late response is discarded) if the deadline passed; while
    /// such a call runs past the plugin's timeout the instance is "stuck": no new calls are
    /// routed to it, and [`PluginInfo::stuck_calls`] counts it.
    ///
    /// With `limits.max_concurrency`, that many calls run at once per instance and as many
    /// wait; more get `resource_exhausted` at once. When the instance serving a call dies
    /// and the method is listed in the manifest's `[retry] idempotent`, the call is retried
    /// once on another running instance; otherwise never.
    ///
    /// # Errors
    /// `not_found` (no such capability or plugin), `unavailable` (stopped, stopping, or
    /// the instance died), `permission_denied` (method not in `[provides]`),
    /// `deadline_exceeded`, `resource_exhausted`, or the plugin's own error; each names
    /// the plugin and the method.
    pub async fn invoke(&self, call: Call) -> Result<Payload> {
        let slot = match self.inner.route(&call.target, &call.method) {
            Ok(slot) => slot,
            Err(error) => {
                // A lazy plugin is loaded by its first call.
                let Some(entry) = self.inner.lazy_entry(&call.target) else {
                    self.inner.unrouted.record(error.code());
                    return Err(error);
                };
                self.inner.wake(&entry).await?;
                self.inner.route(&call.target, &call.method)?
            }
        };
        let counters = slot.stats.clone();
        let stats = counters.method(&call.method);
        let started = stats.and_then(|stats| stats.begin(counters.timing_every));
        let result = self.invoke_on(slot, &call).await;
        if let Some(stats) = stats {
            stats.finish(started, result.as_ref().err().map(Error::code));
        }
        result
    }

    /// The rest of [`Host::invoke`] once the call is routed: re-routing a call turned away
    /// by an instance that just closed, and the one retry of an idempotent method.
    async fn invoke_on(&self, slot: Arc<Slot>, call: &Call) -> Result<Payload> {
        let mut slot = slot;
        let mut result = self.inner.call_slot(&slot, call).await;
        // Routed to an instance that closed (a reload switched away from it) before the
        // call got in: the call never reached it, so it goes to the current one.
        for _ in 0..3 {
            match &result {
                Err(error) if slot.turned_away(error) => {
                    let Ok(current) = self.inner.route(&call.target, &call.method) else { break };
                    slot = current;
                    result = self.inner.call_slot(&slot, call).await;
                }
                _ => break,
            }
        }
        match result {
            Err(error) if self.inner.may_retry(&slot, &call.method, &error) => {
                // The instance died under an idempotent call: once more, elsewhere.
                let Some(other) = self.inner.route_elsewhere(call, &slot) else { return Err(error) };
                tracing::debug!(plugin = %slot.plugin, method = %call.method, "retrying on another instance: {error}");
                self.inner.call_slot(&other, call).await
            }
            result => result,
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
            State::Failed | State::Quarantined | State::Unloaded | State::BackingOff | State::Discovered => {
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
        self.inner.unload_locked(&entry, "unloaded on request").await
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
        self.inner.publish(event)
    }

    /// Crash reports (instances that died, failed their health checks or failed to start
    /// under a restart policy), oldest first; only `plugin`'s when given. The host keeps
    /// the last [`supervisor::CRASH_LOG_CAPACITY`].
    pub fn crashes(&self, plugin: Option<&str>) -> Vec<CrashReport> {
        self.inner.crashes.list(plugin)
    }

    /// Loads the plugin folder named `name` from one of [`HostConfig::plugin_dirs`]. The
    /// name is matched against the folders a scan finds; no path is built from it, so a
    /// traversal-shaped name (`../etc`) is refused rather than followed.
    ///
    /// # Errors
    /// `invalid_argument` for a name that cannot be a plugin id; `not_found` when no plugins
    /// folder has a sub-folder of that name; otherwise as [`Host::load_folder`].
    pub async fn load_by_name(&self, name: &str) -> Result<String> {
        crate::manifest::validate_id(name)?;
        for dir in &self.inner.config.plugin_dirs {
            let Ok(candidates) = catalog::scan(dir) else { continue };
            if let Some(candidate) = candidates.into_iter().find(|candidate| candidate.name == name) {
                return match candidate.problem {
                    Some(problem) => Err(self.inner.fail_discovery(&candidate.folder, name, problem)),
                    None => self.load_folder(&candidate.folder).await,
                };
            }
        }
        Err(Error::not_found(format!("no plugin folder named {name:?} in the plugins folders"))
            .with_plugin(name))
    }

    /// Stops every running plugin, each draining its calls in flight (up to
    /// [`HostConfig::drain_timeout`]), side by side. For a graceful shutdown of the host.
    pub async fn stop_all(&self) {
        let running: Vec<String> = self
            .plugins()
            .into_iter()
            .filter(|info| info.state == State::Running)
            .map(|info| info.id)
            .collect();
        let mut stops = tokio::task::JoinSet::new();
        for id in running {
            let host = self.clone();
            stops.spawn(async move {
                if let Err(error) = host.stop(&id).await {
                    tracing::warn!(plugin = %id, "stop at shutdown failed: {error}");
                }
            });
        }
        while stops.join_next().await.is_some() {}
    }

    /// The call counters, states and restarts of every plugin, for an exporter.
    pub fn metrics(&self) -> MetricsSnapshot {
        let entries: Vec<_> = self.inner.plugins.lock().values().cloned().collect();
        let mut plugins: Vec<PluginMetrics> = entries
            .iter()
            .map(|entry| {
                let status = entry.status.lock();
                PluginMetrics {
                    id: status.id.clone(),
                    state: status.state,
                    instances: status.slots.len(),
                    restarts: u64::from(status.restarts),
                    stuck_calls: stuck_calls(&status.slots),
                    methods: status.stats.as_ref().map(|stats| stats.snapshot()).unwrap_or_default(),
                }
            })
            .collect();
        plugins.sort_by(|a, b| a.id.cmp(&b.id));
        MetricsSnapshot { plugins, unrouted_errors: MetricsSnapshot::unrouted(&self.inner.unrouted) }
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
            instances: status.slots.len(),
            restarts: status.restarts,
            stuck_calls: stuck_calls(&status.slots),
            lazy: status.lazy,
            reload_error: status.reload_error.clone(),
        }
    }
}

thread_local! {
    /// How deep the current thread is in plugin-to-plugin calls through the host.
    static CALL_DEPTH: Cell<u32> = const { Cell::new(0) };
}

impl HostInner {
    /// Loads (or loads again) `entry` from its folder; the caller holds its operation lock.
    /// A load by hand (or a changed folder) lifts a quarantine and starts the failure count
    /// over.
    async fn load_locked(&self, entry: &Arc<PluginEntry>, name: &str) -> Result<String> {
        {
            let mut status = entry.status.lock();
            status.failures.clear();
            status.restarts = 0;
        }
        {
            let state = entry.status.lock().state;
            if matches!(state, State::Running | State::Initialized | State::Loaded | State::Draining) {
                return Err(Error::precondition(format!("the plugin is already {state}")).with_plugin(name));
            }
            if state != State::Discovered {
                self.transition(entry, State::Discovered, "loading from its folder")?;
            }
        }
        match self.bring_up(entry, name).await {
            Ok(id) => Ok(id),
            Err(error) => {
                let error = error.with_plugin(entry.status.lock().id.clone());
                // Failing to start an instance (init, a crash or hang at start) is what
                // restart policies are for; a bad manifest or artifact is not.
                let instance_failed = {
                    let status = entry.status.lock();
                    let process =
                        status.manifest.as_ref().is_some_and(|m| m.plugin.runtime == RuntimeKind::Process);
                    status.state == State::Loaded
                        || (status.state == State::Discovered && process && error.code() == Code::Unavailable)
                };
                self.fail(entry, &error);
                if instance_failed {
                    self.after_start_failure(entry, &error);
                }
                Err(error)
            }
        }
    }

    /// Stops `entry` if it runs, then releases it; the caller holds its operation lock.
    async fn unload_locked(&self, entry: &PluginEntry, reason: &str) -> Result<()> {
        if entry.status.lock().state == State::Running {
            self.stop_entry(entry).await?;
        }
        self.transition(entry, State::Unloaded, reason)?;
        let mut status = entry.status.lock();
        status.loaded = None;
        status.slots.clear();
        Ok(())
    }

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
                failures: FailureWindow::default(),
                restarts: 0,
                probation: None,
                lazy: false,
                reload_error: None,
                stats: None,
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
            // The last error stays visible through restarts and quarantine.
            if to == State::Running {
                status.error = None;
            }
            (status.id.clone(), from)
        };
        self.announce(&id, Some(from), to, reason.into());
        Ok(())
    }

    /// Publishes `event` on the bus; it is queued for plugins only when one subscribes.
    ///
    /// # Errors
    /// `resource_exhausted` when the plugin delivery queue is full.
    fn publish(&self, event: Event) -> Result<()> {
        let to_plugins = self.scheduler.snapshot().wants_event(&event.topic, &event.source);
        self.bus.publish(event, to_plugins)
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
        let _ = self.publish(Event::new(LIFECYCLE_TOPIC, to.as_str(), payload, "host"));
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
        let manifest = read_manifest(&entry.folder, name)?;
        let id = manifest.plugin.id.clone();
        {
            let mut status = entry.status.lock();
            status.id = id.clone();
            status.manifest = Some(manifest.clone());
        }
        self.refuse_duplicate(entry, &id)?;
        let (loaded, artifact_path) = self.load_artifact(&entry.folder, &manifest).await?;
        entry.status.lock().loaded = Some(loaded);
        self.transition(entry, State::Loaded, format!("{} loaded", artifact_path.display()))?;
        self.instantiate(entry).await?;
        Ok(id)
    }

    /// Reads the artifact `manifest` names beneath `folder` and has its runtime load and
    /// check it (describe must match the manifest); returns it and its path.
    async fn load_artifact(&self, folder: &Path, manifest: &Manifest) -> Result<(Arc<dyn Loaded>, PathBuf)> {
        let manifest_path = folder.join(MANIFEST_FILE);
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
        let loaded = runtime.load(Artifact { manifest, path: &artifact_path, bytes }).await?;
        loaded.description().check_against(manifest).map_err(|error| error.with_file(&artifact_path))?;
        Ok((loaded, artifact_path))
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

    /// What a new instance of plugin `id` gets.
    fn instance_context(&self, id: &str) -> InstanceContext {
        InstanceContext {
            plugin: Arc::from(id),
            config: self.config.plugin_config.get(id).cloned().unwrap_or_default(),
            callbacks: Arc::new(HostLink(self.me.clone())),
            max_payload_bytes: self.config.max_payload_bytes,
            default_timeout: self.config.default_timeout,
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
        let slots = self.start_instances(entry, &id, &*loaded, &manifest).await?;
        let count = slots.len();
        self.transition(entry, State::Initialized, format!("init succeeded ({count} instance(s))"))?;
        self.route_instances(entry, &id, slots);
        self.transition(entry, State::Running, "routing calls to it")
    }

    /// Starts the plugin's instances (one, or `[process] replicas`), each restored from the
    /// last snapshot; on any failure the ones already started are shut down.
    async fn start_instances(
        &self,
        entry: &PluginEntry,
        id: &str,
        loaded: &dyn Loaded,
        manifest: &Arc<Manifest>,
    ) -> Result<Vec<Arc<Slot>>> {
        let context = self.instance_context(id);
        let stats = {
            let mut status = entry.status.lock();
            match &status.stats {
                Some(stats) if stats.matches(manifest) => stats.clone(),
                _ => status.stats.insert(Arc::new(PluginStats::for_manifest(manifest))).clone(),
            }
        };
        let replicas = match manifest.plugin.runtime {
            RuntimeKind::Process => manifest.process.replicas as usize,
            _ => 1,
        };
        let mut slots = Vec::with_capacity(replicas);
        for index in 0..replicas {
            let instance = match loaded.instantiate(context.clone()).await {
                Ok(instance) => self.restore_into(id, instance).await,
                Err(error) => Err(error),
            };
            match instance {
                Ok(instance) => slots.push(Arc::new(Slot::new(
                    instance,
                    manifest.clone(),
                    entry.folder.join(MANIFEST_FILE),
                    index,
                    stats.clone(),
                ))),
                Err(error) => {
                    for slot in &slots {
                        slot.instance.shutdown().await;
                    }
                    return Err(error);
                }
            }
        }
        Ok(slots)
    }

    /// Makes `slots` the plugin's routed instances (replacing any), and watches them.
    fn route_instances(&self, entry: &Arc<PluginEntry>, id: &str, slots: Vec<Arc<Slot>>) {
        entry.status.lock().slots = slots.clone();
        self.scheduler.insert(id, slots.clone());
        for slot in &slots {
            self.supervise(entry, slot);
        }
        if let Some(first) = slots.first() {
            self.snapshot_periodically(entry, first);
        }
    }

    /// Running -> Draining -> Stopped.
    async fn stop_entry(&self, entry: &PluginEntry) -> Result<()> {
        self.transition(entry, State::Draining, "stop requested")?;
        let (id, mut slots, probation) = {
            let mut status = entry.status.lock();
            (status.id.clone(), std::mem::take(&mut status.slots), status.probation.take())
        };
        // The version a reload replaced stops too (after the running one's snapshot).
        let retired = probation.map(|p| p.old_slots().to_vec()).unwrap_or_default();
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
        if let Some(first) = slots.first() {
            self.take_snapshot(&id, first).await;
        }
        for slot in &retired {
            still_running += slot.drain(deadline).await;
        }
        slots.extend(retired);
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
        let in_flight = slot.enter()?;
        let _permit = slot.try_admit()?;
        let context = |error: Error| error.with_plugin(&*slot.plugin).with_method(&call.method);
        let budget = self.budget(&slot, call).map_err(context)?;
        let started_ms = in_flight.started_ms();
        let watched = slot.watch.is_some();
        // A runtime that enforces deadlines (wasm on this thread) gets the call's budget.
        let deadline = (!watched).then(|| std::time::Instant::now() + budget);
        match slot.instance.call(&call.method, &call.payload, deadline) {
            CallOutcome::Done(result) if watched => {
                overrun(started_ms, budget).map_or(result, Err).map_err(context)
            }
            CallOutcome::Done(result) => result.map_err(context),
            CallOutcome::Pending(_) => Err(not_synchronous(&slot)),
        }
    }

    /// How long a call may take: the caller's deadline or the plugin's timeout, whichever
    /// comes first. `deadline_exceeded` when the caller's deadline already passed.
    fn budget(&self, slot: &Slot, call: &Call) -> Result<std::time::Duration> {
        let timeout = self.timeout_of(slot);
        match call.deadline.map(|deadline| deadline.remaining()) {
            Some(remaining) if remaining.is_zero() => {
                Err(Error::new(Code::DeadlineExceeded, "the deadline passed before the call started"))
            }
            Some(remaining) => Ok(remaining.min(timeout)),
            None => Ok(timeout),
        }
    }

    /// One call on one instance, under its concurrency limit and deadline.
    async fn call_slot(&self, slot: &Arc<Slot>, call: &Call) -> Result<Payload> {
        let in_flight = slot.enter()?;
        let _permit = slot.admit().await?;
        let context = |error: Error| error.with_plugin(&*slot.plugin).with_method(&call.method);
        let budget = self.budget(slot, call).map_err(context)?;
        if slot.watch.is_some() {
            // In-process: runs here, now; cannot be pre-empted.
            let started_ms = in_flight.started_ms();
            return match slot.instance.call(&call.method, &call.payload, None) {
                CallOutcome::Done(result) => overrun(started_ms, budget).map_or(result, Err).map_err(context),
                CallOutcome::Pending(future) => future.await.map_err(context),
            };
        }
        let started = std::time::Instant::now();
        let record = slot.recent.start(&call.method, call.payload.bytes.len());
        let result = match slot.instance.call(&call.method, &call.payload, Some(started + budget)) {
            CallOutcome::Done(result) => result,
            CallOutcome::Pending(future) => match tokio::time::timeout(budget, future).await {
                Ok(result) => result,
                Err(_) => Err(Error::new(
                    Code::DeadlineExceeded,
                    format!("no response within {} ms; the call was cancelled", budget.as_millis()),
                )),
            },
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.code().as_str(),
        };
        slot.recent.finish(record, started.elapsed().as_micros() as u64, outcome);
        self.count_timeouts(slot, &result);
        result.map_err(context)
    }
}

/// `deadline_exceeded` when an in-process call that started at `started_ms` (coarse clock)
/// returned after its `budget`. Measured on the coarse clock, so only overruns beyond its
/// resolution (a few ms) are reported: a response is never discarded by mistake.
fn overrun(started_ms: u64, budget: std::time::Duration) -> Option<Error> {
    let took = supervisor::coarse_now_ms().saturating_sub(started_ms);
    let budget_ms = budget.as_millis() as u64;
    (took > budget_ms + supervisor::coarse_resolution_ms()).then(|| {
        Error::new(
            Code::DeadlineExceeded,
            format!(
                "the call returned after about {took} ms, past its deadline of {budget_ms} ms; \
                 in-process calls cannot be pre-empted, so the caller waited and the late response was discarded"
            ),
        )
    })
}

/// In-process calls seen stuck past their timeout on `slots`.
fn stuck_calls(slots: &[Arc<Slot>]) -> u64 {
    let stuck = slots.iter().filter_map(|slot| slot.watch.as_ref());
    stuck.map(|watch| watch.stuck_total.load(std::sync::atomic::Ordering::Relaxed)).sum()
}

/// Reads and validates `folder/plugin.toml` (the folder's name must be the id).
fn read_manifest(folder: &Path, name: &str) -> Result<Arc<Manifest>> {
    let bytes = safe_fs::read_beneath(
        folder,
        Path::new(MANIFEST_FILE),
        MAX_MANIFEST_BYTES as u64,
        Code::InvalidArgument,
    )?;
    Ok(Arc::new(Manifest::parse(&bytes, &folder.join(MANIFEST_FILE), Some(name))?))
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
        self.host()?.publish(Event::new(topic, action, payload, plugin))
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
            if !slot.wants_event(&event.topic, &event.source) {
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
