//! Routing: which running instance serves a call. The table is an immutable snapshot
//! swapped atomically (`arc-swap`), so the call path takes no lock; writers (load, stop)
//! build a new table.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::call::Target;
use crate::error::{Code, Error, Result};
use crate::manifest::{Manifest, RuntimeKind};
use crate::metrics::PluginStats;
use crate::runtime::Instance;
use crate::supervisor::{self, RecentCalls};

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
    /// Which replica of the plugin this is (0-based), for reports.
    pub(crate) index: usize,
    /// Its last calls, for crash reports (async calls only: in-process calls that crash
    /// take the host with them, and recording them would slow the fast path).
    pub(crate) recent: RecentCalls,
    /// Calls in a row that ran past their deadline (process): reset by any answer.
    pub(crate) timeouts_in_a_row: AtomicU64,
    /// Calls started so far, counted only for `[load] idle_timeout_ms` (the idle check
    /// sees whether any call started since it last looked, on tokio's clock).
    calls_started: Option<AtomicU64>,
    /// Why the host killed the instance, when it did (for the crash report).
    pub(crate) killed_because: parking_lot::Mutex<Option<String>>,
    /// Watches calls that run on the caller's thread (native), which cannot be pre-empted.
    pub(crate) watch: Option<CallWatch>,
    /// `limits.max_concurrency`, when set.
    limit: Option<ConcurrencyLimit>,
    /// The plugin's call counters (shared by its replicas and kept across restarts).
    pub(crate) stats: Arc<PluginStats>,
    in_flight: AtomicUsize,
    accepting: AtomicBool,
    idle: Notify,
}

/// A closed slot refused a call at the door: the call never reached the plugin, so the
/// pipeline may route it again (a reload or stop closed the slot after routing chose it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// How many calls at once a [`CallWatch`] tracks; more concurrent calls run untracked.
const WATCHED_CALLS: usize = 16;
/// The bit of a watch cell that says its call was already counted as stuck.
const COUNTED: u64 = 1 << 63;

/// Start times of the calls running on an in-process instance, so a watchdog can see a
/// call that overran its timeout while it still runs. Entering costs one coarse clock read
/// and one compare-and-swap; no thread hand-off.
#[derive(Default)]
pub(crate) struct CallWatch {
    /// Coarse start time in ms + 1 of each tracked call (plus [`COUNTED`]); 0 = free.
    started: [AtomicU64; WATCHED_CALLS],
    /// Whether a call has run past the timeout (no new calls are routed here meanwhile).
    stuck: AtomicBool,
    /// Calls seen stuck since the instance started (a metric).
    pub(crate) stuck_total: AtomicU64,
}

impl CallWatch {
    fn claim(&self, now_ms: u64) -> Option<usize> {
        let first = thread_hint() % WATCHED_CALLS;
        (0..WATCHED_CALLS).map(|step| (first + step) % WATCHED_CALLS).find(|&cell| {
            self.started[cell].compare_exchange(0, now_ms + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        })
    }

    /// Marks the instance stuck while any tracked call has run `timeout_ms` or longer;
    /// returns how many calls newly crossed that line (each call is counted once).
    pub(crate) fn check(&self, now_ms: u64, timeout_ms: u64) -> u64 {
        let (mut stuck, mut newly) = (0, 0);
        for cell in &self.started {
            let value = cell.load(Ordering::Acquire);
            if value == 0 || now_ms.saturating_sub((value & !COUNTED) - 1) < timeout_ms {
                continue;
            }
            stuck += 1;
            let first_time = value & COUNTED == 0
                && cell.compare_exchange(value, value | COUNTED, Ordering::AcqRel, Ordering::Relaxed).is_ok();
            newly += u64::from(first_time);
        }
        self.stuck.store(stuck > 0, Ordering::Release);
        self.stuck_total.fetch_add(newly, Ordering::Relaxed);
        newly
    }

    /// Whether a call is stuck on this instance now.
    pub(crate) fn is_stuck(&self) -> bool {
        self.stuck.load(Ordering::Acquire)
    }
}

/// A small per-thread number, to spread threads over the watch cells.
fn thread_hint() -> usize {
    thread_local! {
        static HINT: usize = {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            NEXT.fetch_add(1, Ordering::Relaxed)
        };
    }
    HINT.with(|hint| *hint)
}

/// `limits.max_concurrency`: that many calls run at once, as many more wait; the rest are
/// refused with `resource_exhausted` at once.
struct ConcurrencyLimit {
    permits: Arc<Semaphore>,
    max: usize,
    waiting: AtomicUsize,
}

/// Below this much time left after the queue, a call is not started: it could not be
/// answered.
const MIN_CALL_TIME: Duration = Duration::from_millis(1);

/// A place in a [`ConcurrencyLimit`]'s queue, given back when dropped: when the wait ends
/// with a permit, at its deadline, or because the caller stopped waiting.
struct QueuePlace<'a>(&'a AtomicUsize);

impl<'a> QueuePlace<'a> {
    /// A place, or `None` when all `limit.max` places are taken.
    fn take(limit: &'a ConcurrencyLimit) -> Option<QueuePlace<'a>> {
        let taken = limit.waiting.fetch_add(1, Ordering::AcqRel);
        let place = QueuePlace(&limit.waiting);
        (taken < limit.max).then_some(place)
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slot {
    pub(crate) fn new(
        instance: Arc<dyn Instance>,
        manifest: Arc<Manifest>,
        manifest_path: PathBuf,
        index: usize,
        stats: Arc<PluginStats>,
    ) -> Slot {
        let limit = manifest.limits.max_concurrency.map(|max| ConcurrencyLimit {
            permits: Arc::new(Semaphore::new(max as usize)),
            max: max as usize,
            waiting: AtomicUsize::new(0),
        });
        let calls_started = (manifest.load.idle_timeout_ms > 0).then(|| AtomicU64::new(0));
        Slot {
            calls_started,
            plugin: Arc::from(manifest.plugin.id.as_str()),
            instance,
            watch: (manifest.plugin.runtime == RuntimeKind::Native).then(CallWatch::default),
            manifest,
            manifest_path,
            index,
            recent: RecentCalls::default(),
            timeouts_in_a_row: AtomicU64::new(0),
            killed_because: parking_lot::Mutex::new(None),
            limit,
            stats,
            in_flight: AtomicUsize::new(0),
            accepting: AtomicBool::new(true),
            idle: Notify::new(),
        }
    }

    /// Whether this instance's plugin subscribes to `topic` (its manifest's `[subscribes]
    /// topics`) and is not `source`, the event's publisher.
    pub(crate) fn wants_event(&self, topic: &str, source: &str) -> bool {
        *self.plugin != *source
            && self.manifest.subscribes.topics.iter().any(|pattern| crate::bus::topic_matches(pattern, topic))
    }

    /// Counts a call in; refused with [`Closed`] once the slot is draining.
    pub(crate) fn enter(&self) -> Result<InFlight<'_>, Closed> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(Closed);
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Some(calls_started) = &self.calls_started {
            calls_started.fetch_add(1, Ordering::Relaxed);
        }
        let (watched, started_ms) = match &self.watch {
            Some(watch) => {
                let now = supervisor::coarse_now_ms();
                (watch.claim(now), now)
            }
            None => (None, 0),
        };
        let guard = InFlight { slot: self, watched, started_ms };
        // Re-check after counting in: a drain that began in between sees our count or we
        // see its flag, never neither.
        if !self.accepting.load(Ordering::SeqCst) {
            drop(guard);
            return Err(Closed);
        }
        Ok(guard)
    }

    /// Takes a concurrency permit when `limits.max_concurrency` is set: at once if one is
    /// free, else waits in a queue as long as the limit, for at most `patience` (the time
    /// left to the call's deadline). Returns the permit and the patience left (the clock is
    /// read only when the call had to wait).
    ///
    /// # Errors
    /// `resource_exhausted` when the queue is full too; `deadline_exceeded` when the
    /// deadline passed in the queue (its place is given back, and the call never started).
    pub(crate) async fn admit(&self, patience: Duration) -> Result<(Option<OwnedSemaphorePermit>, Duration)> {
        let Some(limit) = &self.limit else { return Ok((None, patience)) };
        if let Ok(permit) = limit.permits.clone().try_acquire_owned() {
            return Ok((Some(permit), patience));
        }
        let Some(_place) = QueuePlace::take(limit) else { return Err(self.too_busy(true)) };
        let queued = std::time::Instant::now();
        let waited = tokio::time::timeout(patience, limit.permits.clone().acquire_owned()).await;
        let left = patience.saturating_sub(queued.elapsed());
        match waited {
            // Admitted with (almost) nothing left: the plugin is not asked to answer in no time.
            Ok(Ok(permit)) if left >= MIN_CALL_TIME => Ok((Some(permit), left)),
            Ok(Err(_)) => Err(self.draining_error()),
            Ok(Ok(_)) | Err(_) => Err(Error::new(
                Code::DeadlineExceeded,
                format!(
                    "waited {} ms in the queue (limits.max_concurrency = {} calls were running) \
                     and the deadline passed before the call started",
                    queued.elapsed().as_millis(),
                    limit.max
                ),
            )
            .with_plugin(&*self.plugin)),
        }
    }

    /// [`Slot::admit`] without waiting (for synchronous calls).
    pub(crate) fn try_admit(&self) -> Result<Option<OwnedSemaphorePermit>> {
        let Some(limit) = &self.limit else { return Ok(None) };
        limit.permits.clone().try_acquire_owned().map(Some).map_err(|_| self.too_busy(false))
    }

    /// The refusal of a call beyond the limit; `queued` when the caller could have waited
    /// (asynchronous calls) and the queue was full too.
    fn too_busy(&self, queued: bool) -> Error {
        let max = self.manifest.limits.max_concurrency.unwrap_or_default();
        let message = if queued {
            format!(
                "{max} calls are running and {max} waiting (limits.max_concurrency = {max}); try again later"
            )
        } else {
            format!(
                "{max} calls are running (limits.max_concurrency = {max}) and a synchronous call cannot wait; try again later"
            )
        };
        Error::new(Code::ResourceExhausted, message).with_plugin(&*self.plugin)
    }

    /// Whether the instance has a call stuck past its timeout (no new calls go to it).
    pub(crate) fn is_stuck(&self) -> bool {
        self.watch.as_ref().is_some_and(CallWatch::is_stuck)
    }

    /// The error of a call refused because the slot closed ([`Closed`]).
    pub(crate) fn draining_error(&self) -> Error {
        Error::unavailable("the plugin is stopping and takes no new calls").with_plugin(&*self.plugin)
    }

    /// Calls in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Calls started on this slot so far; 0 when not tracked (no `[load] idle_timeout_ms`).
    pub(crate) fn calls_started(&self) -> u64 {
        self.calls_started.as_ref().map_or(0, |started| started.load(Ordering::Relaxed))
    }

    /// Takes new calls again (a rolled-back reload's old version).
    pub(crate) fn reopen(&self) {
        self.accepting.store(true, Ordering::SeqCst);
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
pub(crate) struct InFlight<'a> {
    slot: &'a Slot,
    /// The watch cell holding this call's start time.
    watched: Option<usize>,
    /// When the call started on the coarse clock (ms), for in-process (watched) slots; 0
    /// otherwise.
    started_ms: u64,
}

impl InFlight<'_> {
    /// When the call started (coarse clock, ms; in-process slots only, else 0).
    pub(crate) fn started_ms(&self) -> u64 {
        self.started_ms
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let (Some(cell), Some(watch)) = (self.watched, &self.slot.watch) {
            watch.started[cell].store(0, Ordering::Release);
        }
        let before = self.slot.in_flight.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && !self.slot.accepting.load(Ordering::SeqCst) {
            self.slot.idle.notify_waiters();
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

    /// Whether a routable plugin other than `source` subscribes to `topic`.
    pub(crate) fn wants_event(&self, topic: &str, source: &str) -> bool {
        self.slots().any(|slot| slot.wants_event(topic, source))
    }
}

/// The error when every instance that could serve a call has one stuck past its timeout.
fn all_stuck(slot: &Slot) -> Error {
    Error::unavailable(
        "every instance that could serve this call is still running a call past its timeout \
         (in-process calls cannot be pre-empted); no new calls go to it until that call returns",
    )
    .with_plugin(&*slot.plugin)
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
                let mut in_turn = providers.in_turn().filter(|slot| !slot.is_stuck());
                let Some(first) = in_turn.next() else { return Err(all_stuck(&providers.slots[0])) };
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
                let Some(slot) = providers.in_turn().find(|slot| !slot.is_stuck()) else {
                    return Err(all_stuck(&providers.slots[0]));
                };
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
