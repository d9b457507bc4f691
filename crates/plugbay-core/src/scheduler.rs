//! Routing: which running instance serves a call. The table is an immutable snapshot
//! swapped atomically (`arc-swap`), so the call path takes no lock; writers (load, stop)
//! build a new table.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::call::Target;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::metrics::PluginStats;
use crate::runtime::Instance;

/// A routable instance of a plugin, with its in-flight accounting.
pub(crate) struct Slot {
    /// The plugin id.
    pub(crate) plugin: Arc<str>,
    /// The instance that serves calls.
    pub(crate) instance: Arc<dyn Instance>,
    /// The manifest it runs under (its `[provides]` is the method whitelist).
    pub(crate) manifest: Arc<Manifest>,
    /// `plugins/<id>/plugin.toml`, for messages.
    pub(crate) manifest_path: PathBuf,
    /// The plugin's call counters (shared by its replicas and kept across restarts).
    pub(crate) stats: Arc<PluginStats>,
    in_flight: AtomicUsize,
    accepting: AtomicBool,
    idle: Notify,
}

impl Slot {
    pub(crate) fn new(
        instance: Arc<dyn Instance>,
        manifest: Arc<Manifest>,
        manifest_path: PathBuf,
        stats: Arc<PluginStats>,
    ) -> Slot {
        Slot {
            plugin: Arc::from(manifest.plugin.id.as_str()),
            instance,
            manifest,
            manifest_path,
            stats,
            in_flight: AtomicUsize::new(0),
            accepting: AtomicBool::new(true),
            idle: Notify::new(),
        }
    }

    /// Counts a call in; refused once the slot is draining.
    pub(crate) fn enter(&self) -> Result<InFlight<'_>> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(self.draining_error());
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self);
        // Re-check after counting in: a drain that began in between sees our count or we
        // see its flag, never neither.
        if !self.accepting.load(Ordering::SeqCst) {
            drop(guard);
            return Err(self.draining_error());
        }
        Ok(guard)
    }

    fn draining_error(&self) -> Error {
        Error::unavailable("the plugin is stopping and takes no new calls").with_plugin(&*self.plugin)
    }

    /// Calls in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops taking new calls (calls already counted in go on).
    pub(crate) fn close(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Closes the slot and waits until `deadline` for the calls in flight; returns how many
    /// are still running when it gives up (0 when drained).
    pub(crate) async fn drain(&self, deadline: tokio::time::Instant) -> usize {
        self.close();
        loop {
            let idle = self.idle.notified();
            let running = self.in_flight();
            if running == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight();
            }
        }
    }

    /// Whether `method` is whitelisted: under `capability`, or under any capability.
    pub(crate) fn allows(&self, capability: Option<&str>, method: &str) -> bool {
        match capability {
            Some(capability) => self
                .manifest
                .provides
                .get(capability)
                .is_some_and(|methods| methods.iter().any(|m| m == method)),
            None => self.manifest.provides.values().any(|methods| methods.iter().any(|m| m == method)),
        }
    }

    /// The `permission_denied` error for a method that is not whitelisted.
    pub(crate) fn not_listed(&self, capability: Option<&str>, method: &str) -> Error {
        let under = match capability {
            Some(capability) => format!("under [provides] {capability:?}"),
            None => "under any capability in [provides]".to_owned(),
        };
        Error::denied(format!("method {method:?} is not listed {under}; the call did not reach the plugin"))
            .with_plugin(&*self.plugin)
            .with_file(&self.manifest_path)
            .with_method(method)
    }
}

/// One call counted in on a slot; counted out on drop.
pub(crate) struct InFlight<'a>(&'a Slot);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let before = self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && !self.0.accepting.load(Ordering::SeqCst) {
            self.0.idle.notify_waiters();
        }
    }
}

/// The providers of one capability, picked in turn.
struct Providers {
    slots: Vec<Arc<Slot>>,
    next: AtomicUsize,
}

impl Providers {
    fn new() -> Providers {
        Providers { slots: Vec::new(), next: AtomicUsize::new(0) }
    }

    /// The next provider in turn, then the others once around the ring.
    fn in_turn(&self) -> impl Iterator<Item = &Arc<Slot>> {
        let count = self.slots.len();
        let start = if count <= 1 { 0 } else { self.next.fetch_add(1, Ordering::Relaxed) % count };
        (0..count).map(move |step| &self.slots[(start + step) % count])
    }
}

/// A snapshot of who serves what.
#[derive(Default)]
pub(crate) struct RoutingTable {
    capabilities: HashMap<String, Providers>,
    plugins: HashMap<Arc<str>, Providers>,
}

impl RoutingTable {
    fn from_slots<'a>(slots: impl IntoIterator<Item = &'a Arc<Slot>>) -> RoutingTable {
        let mut table = RoutingTable::default();
        for slot in slots {
            for capability in slot.manifest.provides.keys() {
                table
                    .capabilities
                    .entry(capability.clone())
                    .or_insert_with(Providers::new)
                    .slots
                    .push(slot.clone());
            }
            table.plugins.entry(slot.plugin.clone()).or_insert_with(Providers::new).slots.push(slot.clone());
        }
        table
    }

    /// Every routable slot.
    pub(crate) fn slots(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.plugins.values().flat_map(|providers| providers.slots.iter())
    }
}

/// Picks instances for calls.
pub(crate) struct Scheduler {
    table: ArcSwap<RoutingTable>,
}

impl Scheduler {
    pub(crate) fn new() -> Scheduler {
        Scheduler { table: ArcSwap::from_pointee(RoutingTable::default()) }
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    /// The slot that serves `method` on `target`: round-robin across the capability's
    /// providers, skipping none (all in the table are running).
    ///
    /// # Errors
    /// `not_found` when nothing routable matches (the host adds why);
    /// `permission_denied` when the method is not whitelisted.
    pub(crate) fn route(&self, target: &Target, method: &str) -> Result<Arc<Slot>> {
        let table = self.table.load();
        match target {
            Target::Capability(capability) => {
                let Some(providers) = table.capabilities.get(capability.as_str()) else {
                    return Err(Error::not_found(format!(
                        "no running plugin provides capability {capability:?}"
                    )));
                };
                let mut in_turn = providers.in_turn();
                let first = in_turn.next().expect("a capability in the table has a provider");
                if first.allows(Some(capability), method) {
                    return Ok(first.clone());
                }
                // Another provider may list the method.
                in_turn
                    .find(|slot| slot.allows(Some(capability), method))
                    .cloned()
                    .ok_or_else(|| first.not_listed(Some(capability), method))
            }
            Target::Plugin(id) => {
                let Some(providers) = table.plugins.get(id.as_str()) else {
                    return Err(Error::not_found(format!("plugin {id:?} is not running")).with_plugin(id));
                };
                let slot = providers.in_turn().next().expect("a plugin in the table has an instance");
                if slot.allows(None, method) { Ok(slot.clone()) } else { Err(slot.not_listed(None, method)) }
            }
        }
    }

    /// Routes `plugin` to `slots` (replacing its previous ones, if any).
    pub(crate) fn insert(&self, plugin: &str, slots: Vec<Arc<Slot>>) {
        self.table.rcu(|table| {
            let others = table.slots().filter(|s| &*s.plugin != plugin);
            RoutingTable::from_slots(others.chain(slots.iter()))
        });
    }

    /// Stops routing to `plugin`.
    pub(crate) fn remove(&self, plugin: &str) {
        self.table.rcu(|table| RoutingTable::from_slots(table.slots().filter(|s| &*s.plugin != plugin)));
    }
}
