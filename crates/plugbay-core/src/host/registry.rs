//! The registry: every plugin folder the host knows, its record ([`PluginEntry`]), and the
//! index of lazy plugins by the targets that wake them. It finds and lists; the lifecycle
//! (`host/lifecycle.rs`) is the one that changes a record's state.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::info::{ErrorInfo, PluginInfo};
use super::reload;
use crate::call::Target;
use crate::error::{Error, Result};
use crate::lifecycle::State;
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::metrics::PluginStats;
use crate::runtime::Loaded;
use crate::scheduler::Slot;
use crate::supervisor::FailureWindow;
use crate::trust::SignatureInfo;

/// One plugin folder's record.
pub(super) struct PluginEntry {
    pub(super) folder: PathBuf,
    /// Serialises lifecycle operations on this plugin (load, start, stop, unload).
    pub(super) operation: tokio::sync::Mutex<()>,
    pub(super) status: Mutex<PluginStatus>,
}

/// What the host knows of one plugin now; changed only by the lifecycle.
pub(super) struct PluginStatus {
    pub(super) id: String,
    pub(super) state: State,
    pub(super) manifest: Option<Arc<Manifest>>,
    pub(super) error: Option<ErrorInfo>,
    pub(super) loaded: Option<Arc<dyn Loaded>>,
    /// The routable instances (several for process plugins with replicas).
    pub(super) slots: Vec<Arc<Slot>>,
    /// Failures within the `[restart]` window, for the crash-loop check.
    pub(super) failures: FailureWindow,
    /// Restarts the supervisor made since the plugin was loaded by hand.
    pub(super) restarts: u32,
    /// The previous version, kept ready for a while after a reload switched away from it.
    pub(super) probation: Option<reload::Probation>,
    /// Loaded on its first call (`[load] lazy`).
    pub(super) lazy: bool,
    /// Why the last reload failed (the plugin kept serving its previous version).
    pub(super) reload_error: Option<ErrorInfo>,
    /// The call counters, created when the manifest is first read (kept across restarts
    /// and reloads while the manifest lists the same methods).
    pub(super) stats: Option<Arc<PluginStats>>,
    /// The signature of the version loaded, as the host judged it at its load.
    pub(super) signature: Option<SignatureInfo>,
}

impl PluginEntry {
    fn new(folder: &Path, name: &str) -> PluginEntry {
        PluginEntry {
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
                signature: None,
            }),
        }
    }

    /// The plugin's current state.
    pub(super) fn state(&self) -> State {
        self.status.lock().state
    }

    /// The listing of this plugin.
    pub(super) fn info(&self) -> PluginInfo {
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
            sandbox: status.slots.first().and_then(|slot| slot.instance.sandbox()),
            pids: status.slots.iter().filter_map(|slot| slot.instance.pid()).collect(),
            signature: status.signature.clone(),
        }
    }
}

/// In-process calls seen stuck past their timeout on `slots`.
pub(super) fn stuck_calls(slots: &[Arc<Slot>]) -> u64 {
    let stuck = slots.iter().filter_map(|slot| slot.watch.as_ref());
    stuck.map(|watch| watch.stuck_total.load(std::sync::atomic::Ordering::Relaxed)).sum()
}

/// Every plugin folder the host knows, by folder path (ids may clash; folders cannot), and
/// the lazy plugins by the capabilities and `plugin:<id>` that wake them.
#[derive(Default)]
pub(super) struct Registry {
    plugins: Mutex<BTreeMap<PathBuf, Arc<PluginEntry>>>,
    lazy: Mutex<HashMap<String, Arc<PluginEntry>>>,
}

impl Registry {
    /// The record of `folder`, and whether it was made now (a newly discovered plugin).
    pub(super) fn entry(&self, folder: &Path, name: &str) -> (Arc<PluginEntry>, bool) {
        let mut plugins = self.plugins.lock();
        if let Some(entry) = plugins.get(folder) {
            return (entry.clone(), false);
        }
        let entry = Arc::new(PluginEntry::new(folder, name));
        plugins.insert(folder.to_path_buf(), entry.clone());
        (entry, true)
    }

    /// The record of `folder`, if the host knows it.
    pub(super) fn get(&self, folder: &Path) -> Option<Arc<PluginEntry>> {
        self.plugins.lock().get(folder).cloned()
    }

    /// Every record, in folder order.
    pub(super) fn all(&self) -> Vec<Arc<PluginEntry>> {
        self.plugins.lock().values().cloned().collect()
    }

    /// The plugin with id `id`; of two folders with that id, the one that is not a refused
    /// duplicate.
    ///
    /// # Errors
    /// `not_found` when no plugin has that id.
    pub(super) fn find(&self, id: &str) -> Result<Arc<PluginEntry>> {
        let plugins = self.plugins.lock();
        let mut matches = plugins.values().filter(|entry| entry.status.lock().id == id);
        let first = matches.next().cloned();
        let better = matches.find(|entry| entry.state() != State::Failed).cloned();
        match (first, better) {
            (Some(first), Some(better)) if first.state() == State::Failed => Ok(better),
            (Some(first), _) => Ok(first),
            (None, _) => Err(Error::not_found(format!("no plugin with id {id:?}")).with_plugin(id)),
        }
    }

    /// Refuses `id` for `entry` when another folder's plugin with that id is loaded.
    ///
    /// # Errors
    /// `invalid_argument` naming both folders and the field.
    pub(super) fn refuse_duplicate(&self, entry: &PluginEntry, id: &str) -> Result<()> {
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

    /// Makes calls to `manifest`'s capabilities and to `plugin:<id>` wake `entry`.
    pub(super) fn wake_on_call(&self, entry: &Arc<PluginEntry>, manifest: &Manifest) {
        let mut lazy = self.lazy.lock();
        lazy.insert(format!("plugin:{}", manifest.plugin.id), entry.clone());
        for capability in manifest.provides.keys() {
            lazy.insert(capability.clone(), entry.clone());
        }
    }

    /// Stops `entry` from being woken by calls.
    pub(super) fn forget_lazy(&self, entry: &Arc<PluginEntry>) {
        self.lazy.lock().retain(|_, e| !Arc::ptr_eq(e, entry));
    }

    /// The lazy plugin a call to `target` would wake, if any.
    pub(super) fn lazy_entry(&self, target: &Target) -> Option<Arc<PluginEntry>> {
        let lazy = self.lazy.lock();
        match target {
            Target::Capability(capability) => lazy.get(capability.as_str()).cloned(),
            Target::Plugin(id) => lazy.get(&format!("plugin:{id}")).cloned(),
        }
    }
}
