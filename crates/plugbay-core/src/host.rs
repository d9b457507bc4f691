//! [`Host`]: built from a [`HostConfig`], it loads plugins, routes calls, and publishes
//! events. It wires the parts together and holds no logic of theirs.

use std::path::Path;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::bus::{self, Bus, Event};
use crate::call::{Call, Payload, Target};
use crate::catalog;
use crate::config::HostConfig;
use crate::error::{Error, Result};
use crate::lifecycle::State;
use crate::metrics::{MetricsSnapshot, PluginMetrics, UnroutedStats};
use crate::runtime::native::NativeRuntime;
use crate::runtime::process::ProcessRuntime;
#[cfg(feature = "wasm")]
use crate::runtime::wasm::WasmRuntime;
use crate::scheduler::Scheduler;
use crate::supervisor::{CrashLog, CrashReport};

mod admission;
mod dispatch;
mod events;
mod info;
mod inspect;
mod lifecycle;
mod link;
mod registry;
mod reload;
mod supervise;
#[cfg(test)]
mod tests;

use dispatch::CallRules;
pub use dispatch::MethodHandle;
pub use info::{ErrorInfo, LoadReport, PluginInfo};
pub use inspect::{ArtifactInspection, Inspection, LoadInspection, ManifestInspection, NativeInspection};
use registry::{PluginEntry, Registry, stuck_calls};
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
    /// The plugins-folder watch, once started.
    watcher: Mutex<Option<crate::watch::FolderWatch>>,
    /// The tokio runtime every background task of the host runs on (see
    /// [`HostInner::spawn`]).
    handle: tokio::runtime::Handle,
    /// Errors of calls that reached no plugin.
    unrouted: UnroutedStats,
    /// Every plugin folder the host knows, and the lazy ones by what wakes them.
    registry: Registry,
    /// The settings every call is measured against (the call pipeline's).
    rules: CallRules,
    /// The host's own tokio runtime, when it was built outside one.
    owned_runtime: Mutex<Option<tokio::runtime::Runtime>>,
    /// This host, weakly, for plugins' callbacks (instances live inside the host, so a
    /// strong reference would be a cycle).
    me: Weak<HostInner>,
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
        let process = ProcessRuntime::new(
            handle.clone(),
            config.process_socket_dir.clone(),
            config.sandbox,
            config.sandbox_read.clone(),
        );
        #[cfg(feature = "wasm")]
        let wasm = WasmRuntime::new(config.wasm_cache_dir.as_deref(), config.wasm_pooling);
        let inner = Arc::new_cyclic(|me| HostInner {
            me: me.clone(),
            rules: CallRules::of(&config),
            config,
            native: NativeRuntime,
            process,
            #[cfg(feature = "wasm")]
            wasm,
            scheduler: Scheduler::new(),
            bus,
            crashes: CrashLog::default(),
            snapshots: Mutex::new(std::collections::HashMap::new()),
            watcher: Mutex::new(None),
            handle: handle.clone(),
            unrouted: UnroutedStats::default(),
            registry: Registry::default(),
            owned_runtime: Mutex::new(owned_runtime),
        });
        inner.spawn(events::deliver_to_plugins(Arc::downgrade(&inner), deliveries));
        inner.spawn(supervise::watch_stuck_calls(Arc::downgrade(&inner)));
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
        self.load_folder_entry(folder).await.1
    }

    /// [`Host::load_folder`], also returning the folder's record.
    async fn load_folder_entry(&self, folder: &Path) -> (Arc<PluginEntry>, Result<String>) {
        let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let entry = self.inner.entry_for(folder, &name);
        let result = {
            let _operation = entry.operation.lock().await;
            self.inner.load_locked(&entry, &name).await
        };
        (entry, result)
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
    /// wait (time in the queue counts against the deadline); more get `resource_exhausted`
    /// at once. When the instance serving a call dies and the method is listed in the
    /// manifest's `[retry] idempotent`, the call is retried once on another running
    /// instance; otherwise never.
    ///
    /// # Errors
    /// `not_found` (no such capability or plugin), `unavailable` (stopped, stopping, or
    /// the instance died), `permission_denied` (method not in `[provides]`),
    /// `deadline_exceeded`, `resource_exhausted`, or the plugin's own error; each names
    /// the plugin and the method.
    pub async fn invoke(&self, call: Call) -> Result<Payload> {
        self.inner.dispatch(&call).await
    }

    /// The synchronous fast path for embedders: the same routing, whitelist and errors as
    /// [`Host::invoke`], run entirely on the calling thread.
    ///
    /// # Errors
    /// As [`Host::invoke`]; also `failed_precondition` for a plugin whose runtime only
    /// serves calls asynchronously.
    pub fn invoke_sync(&self, call: &Call) -> Result<Payload> {
        self.inner.dispatch_sync(call)
    }

    /// Resolves `target` and `method` once, for repeated synchronous calls without the
    /// routing lookup. The handle stays bound to the instance chosen now (no round-robin)
    /// and answers `unavailable` once that instance stops.
    ///
    /// # Errors
    /// As the routing errors of [`Host::invoke`].
    pub fn resolve(&self, target: &Target, method: &str) -> Result<MethodHandle> {
        let slot = self.inner.route(target, method)?;
        Ok(MethodHandle::new(slot, method, self.inner.rules))
    }

    /// Every plugin the host knows, sorted by id, with state, capabilities and errors.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let entries: Vec<_> = self.inner.registry.all();
        let mut infos: Vec<PluginInfo> = entries.iter().map(|entry| entry.info()).collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| a.folder.cmp(&b.folder)));
        infos
    }

    /// One plugin by id.
    ///
    /// # Errors
    /// `not_found` when no plugin has that id.
    pub fn plugin(&self, id: &str) -> Result<PluginInfo> {
        self.inner.registry.find(id).map(|entry| entry.info())
    }

    /// Stops a running plugin: no new calls, calls in flight finish (up to
    /// [`HostConfig::drain_timeout`]), then the instance shuts down once its last call
    /// returns. The plugin stays loaded and can be started again.
    ///
    /// # Errors
    /// `not_found` for an unknown id; `failed_precondition` when it is not running.
    pub async fn stop(&self, id: &str) -> Result<()> {
        let entry = self.inner.registry.find(id)?;
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
        let entry = self.inner.registry.find(id)?;
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
        let entry = self.inner.registry.find(id)?;
        let _operation = entry.operation.lock().await;
        self.inner.unload_locked(&entry, "unloaded on request").await
    }

    /// A receiver of every event from now on: lifecycle transitions (topic
    /// [`bus::LIFECYCLE_TOPIC`]) and everything plugins or callers publish. A receiver that
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
    /// the last [`crate::supervisor::CRASH_LOG_CAPACITY`].
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
        let entries: Vec<_> = self.inner.registry.all();
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

impl HostInner {
    /// Runs `task` in the background on the host's runtime: the one way the host starts
    /// background work, so every task runs where [`Host::build`] says.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.handle.spawn(task);
    }
}
