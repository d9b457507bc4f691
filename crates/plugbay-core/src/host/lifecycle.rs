//! The lifecycle: the only code that changes a plugin's state, with the side effects that
//! go with each transition (routing table, events, restart counters, snapshots). Loading,
//! starting, stopping, failing and releasing a plugin are here; the checked state machine
//! itself is [`crate::lifecycle::State`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::HostInner;
use super::admission::ReadBytes;
use super::info::ErrorInfo;
use super::link::HostLink;
use super::registry::PluginEntry;
use crate::error::{Code, Error, Result};
use crate::lifecycle::State;
use crate::manifest::{MANIFEST_FILE, MAX_MANIFEST_BYTES, Manifest, RuntimeKind};
use crate::metrics::PluginStats;
use crate::runtime::{Artifact, InstanceContext, Loaded, Runtime};
use crate::safe_fs;
use crate::scheduler::Slot;
use crate::trust::{FileDigest, SignatureInfo};

impl HostInner {
    /// Loads (or loads again) `entry` from its folder; the caller holds its operation lock.
    /// A load by hand (or a changed folder) lifts a quarantine and starts the failure count
    /// over; a stopped plugin is released first and loaded afresh.
    pub(super) async fn load_locked(&self, entry: &Arc<PluginEntry>, name: &str) -> Result<String> {
        let state = entry.state();
        if matches!(state, State::Running | State::Initialized | State::Loaded | State::Draining) {
            return Err(Error::precondition(format!("the plugin is already {state}")).with_plugin(name));
        }
        {
            let mut status = entry.status.lock();
            status.failures.clear();
            status.restarts = 0;
        }
        if state == State::Stopped {
            self.release(entry, "released to be loaded afresh from its folder")?;
        }
        if entry.state() != State::Discovered {
            self.transition(entry, State::Discovered, "loading from its folder")?;
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
    pub(super) async fn unload_locked(&self, entry: &PluginEntry, reason: &str) -> Result<()> {
        if entry.state() == State::Running {
            self.stop_entry(entry).await?;
        }
        self.release(entry, reason)
    }

    /// -> Unloaded: drops the loaded artifact and any instances left.
    fn release(&self, entry: &PluginEntry, reason: &str) -> Result<()> {
        self.transition(entry, State::Unloaded, reason)?;
        let mut status = entry.status.lock();
        status.loaded = None;
        status.signature = None;
        status.slots.clear();
        Ok(())
    }

    /// The record of `folder`; a folder seen for the first time is announced `discovered`.
    pub(super) fn entry_for(&self, folder: &Path, name: &str) -> Arc<PluginEntry> {
        let (entry, new) = self.registry.entry(folder, name);
        if new {
            self.announce(name, None, State::Discovered, format!("found in {}", folder.display()));
        }
        entry
    }

    /// Records a plugin the catalog refused before reading it.
    pub(super) fn fail_discovery(&self, folder: &Path, name: &str, error: Error) -> Error {
        let entry = self.entry_for(folder, name);
        self.fail(&entry, &error);
        error
    }

    /// Checks and applies a transition, then publishes it.
    pub(super) fn transition(&self, entry: &PluginEntry, to: State, reason: impl Into<String>) -> Result<()> {
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

    /// Marks a plugin failed with `error` (from any state that may fail).
    pub(super) fn fail(&self, entry: &PluginEntry, error: &Error) {
        tracing::warn!(target: crate::events::LOAD_FAILURE_LOG_TARGET, folder = %entry.folder.display(), "{error}");
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
            self.spawn(async move {
                for slot in &slots {
                    slot.instance.shutdown().await;
                }
            });
        }
    }

    /// Discovered -> Loaded -> Initialized -> Running.
    pub(super) async fn bring_up(&self, entry: &Arc<PluginEntry>, name: &str) -> Result<String> {
        let (manifest, manifest_digest) = read_manifest_pinned(&entry.folder, name)?;
        let id = manifest.plugin.id.clone();
        {
            let mut status = entry.status.lock();
            status.id = id.clone();
            status.manifest = Some(manifest.clone());
        }
        self.registry.refuse_duplicate(entry, &id)?;
        let (loaded, artifact_path, signature) =
            self.load_artifact(&entry.folder, &manifest, &manifest_digest).await?;
        {
            let mut status = entry.status.lock();
            status.loaded = Some(loaded);
            status.signature = Some(signature);
        }
        self.transition(entry, State::Loaded, format!("{} loaded", artifact_path.display()))?;
        self.instantiate(entry).await?;
        Ok(id)
    }

    /// Reads the artifact `manifest` names beneath `folder`, judges the folder's signature
    /// on the bytes read (`manifest_digest` is the parsed manifest's), and has its runtime
    /// load and check those bytes (describe must match the manifest); returns it, its path
    /// and the signature's finding.
    pub(super) async fn load_artifact(
        &self,
        folder: &Path,
        manifest: &Manifest,
        manifest_digest: &FileDigest,
    ) -> Result<(Arc<dyn Loaded>, PathBuf, SignatureInfo)> {
        let manifest_path = folder.join(MANIFEST_FILE);
        let runtime = self.runtime(manifest.plugin.runtime).map_err(|e| e.with_file(&manifest_path))?;
        let artifact_name = manifest.artifact_file_name();
        let artifact_path = folder.join(&artifact_name);
        let limit = self.config.max_artifact_bytes;
        let relative = Path::new(&artifact_name);
        let bytes = if runtime.reads_artifact() {
            safe_fs::read_beneath(folder, relative, limit, Code::ResourceExhausted)
        } else {
            safe_fs::check_beneath(folder, relative, limit, Code::ResourceExhausted).map(|()| Vec::new())
        }
        .map_err(|error| error.with_field("plugin.entry"))?;
        let read = ReadBytes {
            manifest: manifest_digest,
            artifact: runtime.reads_artifact().then_some((artifact_name.as_str(), bytes.as_slice())),
        };
        let signature = self.admit(folder, &manifest.plugin.id, read)?;
        let loaded = runtime.load(Artifact { manifest, folder, path: &artifact_path, bytes }).await?;
        loaded.description().check_against(manifest).map_err(|error| error.with_file(&artifact_path))?;
        Ok((loaded, artifact_path, signature))
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
    pub(super) fn instance_context(&self, id: &str, manifest: &Manifest) -> InstanceContext {
        let link = HostLink { host: self.me.clone(), permissions: manifest.permissions.clone() };
        InstanceContext {
            plugin: Arc::from(id),
            config: self.config.plugin_config.get(id).cloned().unwrap_or_default(),
            callbacks: Arc::new(link),
            max_payload_bytes: self.config.max_payload_bytes,
            default_timeout: self.config.default_timeout,
        }
    }

    /// (Loaded | Stopped) -> Initialized -> Running.
    pub(super) async fn instantiate(self: &HostInner, entry: &Arc<PluginEntry>) -> Result<()> {
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
    pub(super) async fn start_instances(
        &self,
        entry: &PluginEntry,
        id: &str,
        loaded: &dyn Loaded,
        manifest: &Arc<Manifest>,
    ) -> Result<Vec<Arc<Slot>>> {
        let context = self.instance_context(id, manifest);
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
    pub(super) fn route_instances(&self, entry: &Arc<PluginEntry>, id: &str, slots: Vec<Arc<Slot>>) {
        if let Some(report) = slots.first().and_then(|slot| slot.instance.sandbox()) {
            self.warn_of_missing_layers(id, &report);
        }
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
    pub(super) async fn stop_entry(&self, entry: &PluginEntry) -> Result<()> {
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
}

/// Reads and validates `folder/plugin.toml` (the folder's name must be the id).
pub(super) fn read_manifest(folder: &Path, name: &str) -> Result<Arc<Manifest>> {
    read_manifest_pinned(folder, name).map(|(manifest, _)| manifest)
}

/// [`read_manifest`], with the digest of the bytes parsed (what a signature must cover).
pub(super) fn read_manifest_pinned(folder: &Path, name: &str) -> Result<(Arc<Manifest>, FileDigest)> {
    let bytes = safe_fs::read_beneath(
        folder,
        Path::new(MANIFEST_FILE),
        MAX_MANIFEST_BYTES as u64,
        Code::InvalidArgument,
    )?;
    let manifest = Manifest::parse(&bytes, &folder.join(MANIFEST_FILE), Some(name))?;
    Ok((Arc::new(manifest), FileDigest::of(MANIFEST_FILE, &bytes)))
}
