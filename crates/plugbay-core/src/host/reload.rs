//! Replacing a running plugin without losing a call (versioned swap, probation, rollback),
//! lazy loading on the first call, and acting on the folder watcher's notices.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::lifecycle::{read_manifest, read_manifest_pinned};
use super::{ErrorInfo, Host, HostInner, PluginEntry};
use crate::bus::Event;
use crate::call::Payload;
use crate::error::{Error, Result};
use crate::lifecycle::State;
use crate::manifest::Manifest;
use crate::runtime::{CallOutcome, Invocation, Loaded};
use crate::scheduler::Slot;
use crate::trust::SignatureInfo;
use crate::watch;

/// The bus topic of reloads. Actions: `switched` (a new version takes the calls),
/// `completed` (its probation passed; the old version is stopped), `failed` (the new
/// version never took a call), `rolled_back` (it failed during its probation; the old one
/// serves again). The payload is a JSON [`ReloadEvent`].
pub const RELOAD_TOPIC: &str = "plugbay.reload";

/// The payload of a [`RELOAD_TOPIC`] event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ReloadEvent {
    /// The plugin.
    pub plugin: String,
    /// The version serving before.
    pub from: String,
    /// The version tried.
    pub to: String,
    /// Why it failed or was rolled back (empty otherwise).
    pub reason: String,
}

/// The previous version of a plugin, kept ready (but taking no new calls) for
/// [`crate::HostConfig::reload_probation`] after a reload switched away from it.
pub(super) struct Probation {
    old_slots: Vec<Arc<Slot>>,
    old_loaded: Arc<dyn Loaded>,
    old_manifest: Arc<Manifest>,
    old_signature: Option<SignatureInfo>,
    new_slots: Vec<Arc<Slot>>,
}

impl Probation {
    /// Whether `slot` is one of the new version's instances.
    pub(super) fn tries(&self, slot: &Arc<Slot>) -> bool {
        self.new_slots.iter().any(|s| Arc::ptr_eq(s, slot))
    }

    /// The old version's instances.
    pub(super) fn old_slots(&self) -> &[Arc<Slot>] {
        &self.old_slots
    }
}

impl Host {
    /// Replaces the plugin with what its folder holds now, without losing a call: the new
    /// version is loaded and started beside the old one (init, health, and the manifest's
    /// `[load] smoke_method` if any), then routing switches to it atomically; calls already
    /// running on the old version finish there. The old version is kept ready for
    /// [`crate::HostConfig::reload_probation`]: if a new instance dies within it, calls go
    /// back to the old version. Every call is answered by exactly one version.
    ///
    /// A plugin that is not running (failed, quarantined, stopped, unloaded) is loaded
    /// afresh instead, which lifts a quarantine. Events on [`RELOAD_TOPIC`] say what
    /// happened; [`crate::PluginInfo::reload_error`] keeps why the last reload failed.
    ///
    /// # Errors
    /// `not_found` for an unknown id; why the new version was refused (the old one keeps
    /// serving).
    pub async fn reload(&self, id: &str) -> Result<()> {
        let entry = self.inner.registry.find(id)?;
        let _operation = entry.operation.lock().await;
        self.inner.reload_locked(&entry).await
    }

    /// Starts watching [`crate::HostConfig::plugin_dirs`] (done by [`Host::load_all`]
    /// when [`crate::HostConfig::watch`] is set): a new plugin folder is loaded, a removed
    /// one is unloaded, a changed one is reloaded, each once its files have been quiet for
    /// [`crate::HostConfig::watch_debounce`]. Calling it again does nothing.
    ///
    /// # Errors
    /// `failed_precondition` when a folder cannot be watched.
    pub fn watch(&self) -> Result<()> {
        let mut watcher = self.inner.watcher.lock();
        if watcher.is_some() {
            return Ok(());
        }
        let roots: Vec<PathBuf> = self.inner.config.plugin_dirs.clone();
        let (changes, notices) = tokio::sync::mpsc::unbounded_channel();
        *watcher = Some(watch::start(&roots, changes)?);
        let host = Arc::downgrade(&self.inner);
        let quiet = self.inner.config.watch_debounce;
        self.inner.spawn(watch::debounce(notices, quiet, move |folder| {
            let host = host.clone();
            async move {
                if let Some(host) = host.upgrade() {
                    Host { inner: host }.folder_changed(&folder).await;
                }
            }
        }));
        Ok(())
    }

    /// Acts on a changed plugin folder: gone -> unloaded; new or not running -> loaded;
    /// running -> reloaded. Failures are in the plugin's listing and events, not returned.
    async fn folder_changed(&self, folder: &Path) {
        let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let known = self.inner.registry.get(folder);
        let result = match known {
            Some(entry) if !folder.is_dir() => {
                let _operation = entry.operation.lock().await;
                self.inner.forget_lazy(&entry);
                let state = entry.status.lock().state;
                match state {
                    State::Unloaded => Ok(()),
                    _ => self.inner.unload_locked(&entry, "its folder was removed").await,
                }
            }
            None if !folder.is_dir() => Ok(()),
            None => self.inner.load_or_register(folder, &name).await,
            Some(entry) => {
                let _operation = entry.operation.lock().await;
                let lazy_and_idle = {
                    let status = entry.status.lock();
                    status.lazy && matches!(status.state, State::Discovered | State::Unloaded)
                };
                if lazy_and_idle {
                    // Not loaded yet: read the new manifest at the next first call.
                    self.inner.forget_lazy(&entry);
                    drop(_operation);
                    self.inner.load_or_register(folder, &name).await
                } else {
                    self.inner.reload_locked(&entry).await
                }
            }
        };
        if let Err(error) = result {
            tracing::warn!(folder = %folder.display(), "acting on a changed plugin folder: {error}");
        }
    }
}

impl HostInner {
    /// Loads a plugin folder, or only registers it when its manifest says `[load] lazy`.
    pub(super) async fn load_or_register(&self, folder: &Path, name: &str) -> Result<()> {
        if self.register_lazy(folder, name) {
            return Ok(());
        }
        let entry = self.entry_for(folder, name);
        let _operation = entry.operation.lock().await;
        self.load_locked(&entry, name).await.map(drop)
    }

    /// See [`Host::reload`]; the caller holds the entry's operation lock.
    pub(super) async fn reload_locked(&self, entry: &Arc<PluginEntry>) -> Result<()> {
        let (state, name) = {
            let status = entry.status.lock();
            (status.state, status.id.clone())
        };
        match state {
            State::Running => {}
            State::Draining => {
                return Err(
                    Error::precondition("the plugin is stopping; reload it once stopped").with_plugin(name)
                );
            }
            _ => return self.load_locked(entry, &name).await.map(drop),
        }
        let from = version_of(entry);
        match self.swap(entry, &name).await {
            Ok(()) => Ok(()),
            Err(error) => {
                let error = error.with_plugin(&name);
                tracing::warn!(plugin = %name, "reload failed; the previous version keeps serving: {error}");
                entry.status.lock().reload_error = Some(ErrorInfo::from(&error));
                let to = read_manifest(&entry.folder, &name)
                    .map(|m| m.plugin.version.to_string())
                    .unwrap_or_default();
                self.announce_reload(
                    "failed",
                    ReloadEvent { plugin: name, from, to, reason: error.to_string() },
                );
                Err(error)
            }
        }
    }

    /// Starts the folder's version beside the running one and switches routing to it.
    async fn swap(&self, entry: &Arc<PluginEntry>, name: &str) -> Result<()> {
        let (manifest, manifest_digest) = read_manifest_pinned(&entry.folder, name)?;
        let (loaded, _, signature) = self.load_artifact(&entry.folder, &manifest, &manifest_digest).await?;
        let (old_slots, old_loaded, old_manifest, old_signature) = {
            let status = entry.status.lock();
            let (Some(old_loaded), Some(old_manifest)) = (status.loaded.clone(), status.manifest.clone())
            else {
                return Err(Error::precondition("the plugin is not loaded"));
            };
            (status.slots.clone(), old_loaded, old_manifest, status.signature.clone())
        };
        // Hand the running version's state to the new one.
        if let Some(first) = old_slots.first() {
            self.take_snapshot(name, first).await;
        }
        let slots = self.start_instances(entry, name, &*loaded, &manifest).await?;
        if let Err(error) = self.smoke_test(&slots, &manifest).await {
            for slot in &slots {
                slot.instance.shutdown().await;
            }
            return Err(error);
        }
        let from = old_manifest.plugin.version.to_string();
        let to = manifest.plugin.version.to_string();
        let earlier = {
            let mut status = entry.status.lock();
            status.loaded = Some(loaded);
            status.manifest = Some(manifest);
            status.signature = Some(signature);
            status.reload_error = None;
            let probation = Probation {
                old_slots: old_slots.clone(),
                old_loaded,
                old_manifest,
                old_signature,
                new_slots: slots.clone(),
            };
            status.probation.replace(probation)
        };
        self.route_instances(entry, name, slots.clone());
        for slot in &old_slots {
            slot.close();
        }
        if let Some(earlier) = earlier {
            // A reload during another's probation: that older version is done.
            self.retire(earlier.old_slots, self.config.drain_timeout);
        }
        tracing::info!(plugin = %name, "reloaded: {from} -> {to}; the previous version is on probation");
        self.announce_reload(
            "switched",
            ReloadEvent { plugin: name.to_owned(), from, to, reason: String::new() },
        );
        self.end_probation_later(entry, slots);
        Ok(())
    }

    /// Calls the manifest's `[load] smoke_method` on the first new instance.
    async fn smoke_test(&self, slots: &[Arc<Slot>], manifest: &Manifest) -> Result<()> {
        let (Some(method), Some(slot)) = (&manifest.load.smoke_method, slots.first()) else { return Ok(()) };
        let payload = Payload::bytes(manifest.load.smoke_payload.clone().into_bytes());
        let timeout = self.rules.timeout_of(slot);
        let invocation = Invocation {
            method,
            payload: &payload,
            deadline: Some(std::time::Instant::now() + timeout),
            depth: 0,
        };
        let result = match slot.instance.call(invocation) {
            CallOutcome::Done(result) => result,
            CallOutcome::Pending(future) => {
                tokio::time::timeout(timeout, future).await.unwrap_or_else(|_| {
                    Err(Error::unavailable(format!("no answer within {} ms", timeout.as_millis())))
                })
            }
        };
        result.map(drop).map_err(|error| {
            Error::new(error.code(), format!("the smoke call {method:?} failed: {}", error.message()))
                .with_field("load.smoke_method")
        })
    }

    /// After the probation, the old version drains and stops, unless a rollback or another
    /// reload took over meanwhile.
    fn end_probation_later(&self, entry: &Arc<PluginEntry>, new_slots: Vec<Arc<Slot>>) {
        let (host, entry) = (self.me.clone(), entry.clone());
        let probation = self.config.reload_probation;
        self.spawn(async move {
            tokio::time::sleep(probation).await;
            let Some(host) = host.upgrade() else { return };
            let _operation = entry.operation.lock().await;
            let ended = {
                let mut status = entry.status.lock();
                let ours = status.probation.as_ref().is_some_and(|p| {
                    p.new_slots.len() == new_slots.len()
                        && p.new_slots.iter().zip(&new_slots).all(|(a, b)| Arc::ptr_eq(a, b))
                });
                if ours { status.probation.take() } else { None }
            };
            if let Some(ended) = ended {
                let plugin = entry.status.lock().id.clone();
                let event = ReloadEvent {
                    plugin,
                    from: ended.old_manifest.plugin.version.to_string(),
                    to: version_of(&entry),
                    reason: String::new(),
                };
                host.retire(ended.old_slots, host.config.drain_timeout);
                host.announce_reload("completed", event);
            }
        });
    }

    /// A new instance died during its probation: the old version serves again.
    pub(super) fn roll_back(&self, entry: &Arc<PluginEntry>, probation: Probation, reason: &str) {
        let (id, dropped) = {
            let mut status = entry.status.lock();
            let dropped = std::mem::replace(&mut status.slots, probation.old_slots.clone());
            status.loaded = Some(probation.old_loaded.clone());
            status.manifest = Some(probation.old_manifest.clone());
            status.signature = probation.old_signature.clone();
            let error = Error::unavailable(format!("the new version failed during its probation: {reason}"));
            status.reload_error = Some(ErrorInfo::from(&error.with_plugin(status.id.clone())));
            (status.id.clone(), dropped)
        };
        for slot in &probation.old_slots {
            slot.reopen();
        }
        self.scheduler.insert(&id, probation.old_slots.clone());
        if let Some(first) = probation.old_slots.first() {
            self.snapshot_periodically(entry, first);
        }
        self.retire(dropped, Duration::ZERO);
        tracing::warn!(plugin = %id, "reload rolled back: {reason}");
        let event = ReloadEvent {
            plugin: id,
            from: probation.old_manifest.plugin.version.to_string(),
            to: probation
                .new_slots
                .first()
                .map(|s| s.manifest.plugin.version.to_string())
                .unwrap_or_default(),
            reason: reason.to_owned(),
        };
        self.announce_reload("rolled_back", event);
    }

    fn announce_reload(&self, action: &str, event: ReloadEvent) {
        let payload = Payload::json(&event).unwrap_or_default();
        let _ = self.publish(Event::new(RELOAD_TOPIC, action, payload, "host"));
    }

    // ---- lazy loading ----

    /// When `folder`'s manifest says `[load] lazy`, lists the plugin (`discovered`) and
    /// remembers which targets wake it, instead of loading it. Returns whether it did.
    pub(super) fn register_lazy(&self, folder: &Path, name: &str) -> bool {
        let Ok(manifest) = read_manifest(folder, name) else { return false };
        if !manifest.load.lazy {
            return false;
        }
        let entry = self.entry_for(folder, name);
        self.registry.wake_on_call(&entry, &manifest);
        let mut status = entry.status.lock();
        status.lazy = true;
        status.id = manifest.plugin.id.clone();
        status.manifest = Some(manifest);
        true
    }

    /// Stops `entry` from being woken by calls (its folder changed or went away).
    pub(super) fn forget_lazy(&self, entry: &Arc<PluginEntry>) {
        self.registry.forget_lazy(entry);
    }

    /// The lazy plugin a call to `target` would wake, if any.
    pub(super) fn lazy_entry(&self, target: &crate::call::Target) -> Option<Arc<PluginEntry>> {
        self.registry.lazy_entry(target)
    }

    /// Loads a lazy plugin for its first call. Concurrent first calls wait for one load.
    pub(super) async fn wake(&self, entry: &Arc<PluginEntry>) -> Result<()> {
        let _operation = entry.operation.lock().await;
        let (state, id) = {
            let status = entry.status.lock();
            (status.state, status.id.clone())
        };
        match state {
            State::Running => Ok(()),
            State::Discovered | State::Unloaded => {
                tracing::debug!(plugin = %id, "loading on its first call");
                self.load_locked(entry, &id).await?;
                self.unload_when_idle(entry);
                Ok(())
            }
            other => Err(Error::unavailable(format!("plugin {id:?} is {other}")).with_plugin(id)),
        }
    }

    /// With `[load] idle_timeout_ms`, unloads the plugin once no call has started for that
    /// long (and none runs); the next call loads it again. Measured on tokio's clock only,
    /// so it runs under a paused clock in tests.
    fn unload_when_idle(&self, entry: &Arc<PluginEntry>) {
        let Some(manifest) = entry.status.lock().manifest.clone() else { return };
        let idle_ms = manifest.load.idle_timeout_ms;
        if idle_ms == 0 {
            return;
        }
        let (host, entry) = (self.me.clone(), entry.clone());
        let idle = Duration::from_millis(idle_ms);
        self.spawn(async move {
            let check_every = Duration::from_millis((idle_ms / 4).max(25));
            let (mut seen, mut quiet_since) = (None, tokio::time::Instant::now());
            loop {
                tokio::time::sleep(check_every).await;
                let Some(host) = host.upgrade() else { return };
                let slots = {
                    let status = entry.status.lock();
                    if status.state != State::Running {
                        return;
                    }
                    status.slots.clone()
                };
                let started: u64 = slots.iter().map(|slot| slot.calls_started()).sum();
                let busy = slots.iter().any(|slot| slot.in_flight() > 0);
                if busy || seen != Some(started) {
                    (seen, quiet_since) = (Some(started), tokio::time::Instant::now());
                    continue;
                }
                if quiet_since.elapsed() < idle {
                    continue;
                }
                let _operation = entry.operation.lock().await;
                if entry.status.lock().state == State::Running {
                    let reason = format!(
                        "no call for {idle_ms} ms ([load] idle_timeout_ms); loaded again on the next call"
                    );
                    let _ = host.unload_locked(&entry, &reason).await;
                }
                return;
            }
        });
    }
}

/// The running version of `entry`, as text.
fn version_of(entry: &PluginEntry) -> String {
    entry.status.lock().manifest.as_ref().map(|m| m.plugin.version.to_string()).unwrap_or_default()
}

impl HostInner {
    /// Lets `slots` finish their calls (up to `drain`), then shuts them down, in the
    /// background.
    fn retire(&self, slots: Vec<Arc<Slot>>, drain: Duration) {
        if slots.is_empty() {
            return;
        }
        self.spawn(async move {
            let deadline = tokio::time::Instant::now() + drain;
            for slot in &slots {
                slot.drain(deadline).await;
            }
            for slot in &slots {
                slot.instance.shutdown().await;
            }
        });
    }
}
