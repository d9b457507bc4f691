//! The one call pipeline. Every call — [`Host::invoke`](super::Host::invoke),
//! [`Host::invoke_sync`](super::Host::invoke_sync), a [`MethodHandle`], and a plugin's call
//! through the host API — takes the same steps, so a rule written here holds on every path:
//!
//! ```text
//! route -> enter (in-flight count) -> budget (deadline, depth)
//!       -> admit (concurrency permit, or a queue place until the deadline) -> run
//!       -> overrun / timeout -> metrics -> turned away: route again | died: retry once
//! ```
//! The asynchronous face ([`HostInner::dispatch`]) waits for a concurrency permit and for
//! out-of-process answers; the synchronous face ([`HostInner::dispatch_sync`]) runs the
//! call on the caller's thread and never waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::HostInner;
use crate::call::{Call, Deadline, Payload, Target};
use crate::config::HostConfig;
use crate::error::{Code, Error, Result};
use crate::metrics::{MethodStats, PluginStats};
use crate::runtime::{CallOutcome, Invocation};
use crate::scheduler::Slot;
use crate::supervisor;

/// How often a call closed under it is routed again before the caller gets the refusal.
const REROUTES: usize = 3;

/// The host settings every call is measured against (copied into each [`MethodHandle`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallRules {
    /// A call's time when neither the caller nor the manifest sets one.
    default_timeout: Duration,
    /// The deepest plugin-to-plugin call allowed ([`Call::depth`]).
    max_call_depth: u32,
}

impl CallRules {
    pub(crate) fn of(config: &HostConfig) -> CallRules {
        CallRules { default_timeout: config.default_timeout, max_call_depth: config.max_call_depth }
    }

    /// The plugin's `limits.timeout_ms`, else the host default.
    pub(crate) fn timeout_of(&self, slot: &Slot) -> Duration {
        slot.manifest.limits.timeout_ms.map(Duration::from_millis).unwrap_or(self.default_timeout)
    }

    /// The budget step: how long the call may take (the caller's deadline or the plugin's
    /// timeout, whichever comes first), and whether it may run at this depth.
    ///
    /// # Errors
    /// `deadline_exceeded` when the caller's deadline already passed; `resource_exhausted`
    /// when the call is deeper than `max_call_depth` (plugins calling each other in a loop).
    fn budget(&self, slot: &Slot, deadline: Option<Deadline>, depth: u32) -> Result<Duration> {
        if depth > self.max_call_depth {
            return Err(Error::new(
                Code::ResourceExhausted,
                format!(
                    "plugins called each other {depth} deep through the host, past max_call_depth = {} \
                     (a call loop?); the call did not reach the plugin",
                    self.max_call_depth
                ),
            ));
        }
        let timeout = self.timeout_of(slot);
        match deadline.map(Deadline::remaining) {
            Some(remaining) if remaining.is_zero() => {
                Err(Error::new(Code::DeadlineExceeded, "the deadline passed before the call started"))
            }
            Some(remaining) => Ok(remaining.min(timeout)),
            None => Ok(timeout),
        }
    }
}

/// How one attempt on one instance ended.
pub(crate) enum Attempt<T> {
    /// It ran (or was refused by a rule); this is its result.
    Ran(Result<T>),
    /// The instance closed before the call got in: it never reached the plugin.
    TurnedAway,
}

/// The metrics step: a call counted in on its method's counters (timed one in
/// `timing_every`), counted out with its outcome.
struct Measured<'a> {
    stats: Option<&'a MethodStats>,
    started: Option<Instant>,
}

impl<'a> Measured<'a> {
    fn start(counters: &'a PluginStats, method: &str) -> Measured<'a> {
        Measured::of(counters, counters.method(method))
    }

    /// [`Measured::start`] with the method's counters already found.
    fn of(counters: &PluginStats, stats: Option<&'a MethodStats>) -> Measured<'a> {
        Measured { stats, started: stats.and_then(|stats| stats.begin(counters.timing_every)) }
    }

    fn finish<T>(self, result: &Result<T>) {
        if let Some(stats) = self.stats {
            stats.finish(self.started, result.as_ref().err().map(Error::code));
        }
    }
}

/// Runs one call on `slot` on this thread: admit without waiting, budget, run, overrun.
/// `run` gets the deadline to enforce (for runtimes that can: wasm) and answers `None` when
/// its runtime cannot serve the call synchronously.
pub(crate) fn run_here<T>(
    rules: &CallRules,
    slot: &Slot,
    method: &str,
    deadline: Option<Deadline>,
    depth: u32,
    run: impl FnOnce(Option<Instant>) -> Option<Result<T>>,
) -> Attempt<T> {
    let Ok(in_flight) = slot.enter() else { return Attempt::TurnedAway };
    let context = |error: Error| error.with_plugin(&*slot.plugin).with_method(method);
    let result = slot.try_admit().and_then(|_permit| {
        let budget = rules.budget(slot, deadline, depth)?;
        let watched = slot.watch.is_some();
        // A runtime that enforces deadlines (wasm on this thread) gets the call's budget.
        let enforce = (!watched).then(|| Instant::now() + budget);
        let result = run(enforce).unwrap_or_else(|| Err(not_synchronous(slot)));
        match watched {
            true => overrun(in_flight.started_ms(), budget).map_or(result, Err),
            false => result,
        }
    });
    Attempt::Ran(result.map_err(context))
}

/// Runs one call on `slot`, waiting where the plugin's runtime makes it wait: budget, admit
/// (a concurrency permit, or a place in its queue until the deadline), run, overrun or
/// timeout. Time spent in the queue counts against the call's budget.
async fn run_awaiting(rules: &CallRules, slot: &Arc<Slot>, call: &Call) -> Attempt<Payload> {
    let Ok(in_flight) = slot.enter() else { return Attempt::TurnedAway };
    let context = |error: Error| error.with_plugin(&*slot.plugin).with_method(&call.method);
    let budget = match rules.budget(slot, call.deadline, call.depth()) {
        Ok(budget) => budget,
        Err(error) => return Attempt::Ran(Err(context(error))),
    };
    let (_permit, left) = match slot.admit(budget).await {
        Ok(admitted) => admitted,
        Err(error) => return Attempt::Ran(Err(context(error))),
    };
    let mut invocation =
        Invocation { method: &call.method, payload: &call.payload, deadline: None, depth: call.depth() };
    if slot.watch.is_some() {
        // In-process: runs here, now; cannot be pre-empted. Its overrun is measured from
        // when it entered, the queue included.
        let started_ms = in_flight.started_ms();
        let result = match slot.instance.call(invocation) {
            CallOutcome::Done(result) => overrun(started_ms, budget).map_or(result, Err),
            CallOutcome::Pending(future) => future.await,
        };
        return Attempt::Ran(result.map_err(context));
    }
    // Only a call given the plugin's whole timeout counts against the plugin when it
    // overruns (a short caller deadline or a long queue wait is not the plugin's fault).
    let plugin_timeout = left >= rules.timeout_of(slot);
    let budget = left;
    let started = tokio::time::Instant::now();
    // The caller's own instant when it is the limit: a nested call made under the same
    // deadline then expires on the same timer tick as its caller and is answered (and
    // counted) before its caller is given up, never dropped unfinished with it.
    let expiry = match call.deadline {
        Some(deadline) => deadline.timer_instant().min(started + budget),
        None => started + budget,
    };
    invocation.deadline = Some(expiry.into_std());
    let record = slot.recent.start(&call.method, call.payload.bytes.len());
    let result = match slot.instance.call(invocation) {
        CallOutcome::Done(result) => result,
        CallOutcome::Pending(future) => match tokio::time::timeout_at(expiry, future).await {
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
    count_timeouts(slot, &result, plugin_timeout);
    Attempt::Ran(result.map_err(context))
}

/// What the pipeline does after an attempt.
enum Next {
    /// The caller gets this.
    Answer(Result<Payload>),
    /// Another attempt, on this instance.
    Try(Arc<Slot>),
}

impl HostInner {
    /// The asynchronous face of the pipeline: [`super::Host::invoke`], and calls plugins
    /// make through the host API from an async runtime (process, wasm).
    pub(super) async fn dispatch(&self, call: &Call) -> Result<Payload> {
        let slot = match self.route(&call.target, &call.method) {
            Ok(slot) => slot,
            Err(error) => {
                // A lazy plugin is loaded by its first call.
                let Some(entry) = self.lazy_entry(&call.target) else {
                    self.unrouted.record(error.code());
                    return Err(error);
                };
                self.wake(&entry).await?;
                self.route(&call.target, &call.method)?
            }
        };
        let counters = slot.stats.clone();
        let measured = Measured::start(&counters, &call.method);
        let (mut slot, mut reroutes, mut retried) = (slot, 0, false);
        let result = loop {
            let attempt = match run_awaiting(&self.rules, &slot, call).await {
                Attempt::Ran(Ok(payload)) => break Ok(payload),
                other => other,
            };
            match self.after(attempt, &slot, call, &mut reroutes, &mut retried) {
                Next::Answer(result) => break result,
                Next::Try(next) => slot = next,
            }
        };
        measured.finish(&result);
        result
    }

    /// The synchronous face of the pipeline: [`super::Host::invoke_sync`], and calls
    /// in-process plugins make through the host API on the thread that serves them.
    pub(super) fn dispatch_sync(&self, call: &Call) -> Result<Payload> {
        let slot = self.route(&call.target, &call.method).inspect_err(|error| {
            self.unrouted.record(error.code());
        });
        let slot = match slot {
            Err(error) if self.lazy_entry(&call.target).is_some() => {
                return Err(Error::precondition(format!(
                    "{} is loaded lazily, by its first call through Host::invoke; \
                     synchronous calls do not load plugins: {}",
                    call.target,
                    error.message()
                )));
            }
            slot => slot?,
        };
        let counters = slot.stats.clone();
        let measured = Measured::start(&counters, &call.method);
        let (mut slot, mut reroutes, mut retried) = (slot, 0, false);
        let result = loop {
            let attempt =
                run_here(&self.rules, &slot, &call.method, call.deadline, call.depth(), |deadline| {
                    let invocation = Invocation {
                        method: &call.method,
                        payload: &call.payload,
                        deadline,
                        depth: call.depth(),
                    };
                    match slot.instance.call(invocation) {
                        CallOutcome::Done(result) => Some(result),
                        CallOutcome::Pending(_) => None,
                    }
                });
            let attempt = match attempt {
                Attempt::Ran(Ok(payload)) => break Ok(payload),
                other => other,
            };
            match self.after(attempt, &slot, call, &mut reroutes, &mut retried) {
                Next::Answer(result) => break result,
                Next::Try(next) => slot = next,
            }
        };
        measured.finish(&result);
        result
    }

    /// The retry step, the same for both faces: a call turned away by an instance that
    /// closed after routing chose it goes to the current one (it never reached the plugin);
    /// a call whose instance died under it runs once more elsewhere when the manifest lists
    /// the method in `[retry] idempotent`; anything else is the answer.
    fn after(
        &self,
        attempt: Attempt<Payload>,
        slot: &Arc<Slot>,
        call: &Call,
        reroutes: &mut usize,
        retried: &mut bool,
    ) -> Next {
        match attempt {
            Attempt::TurnedAway => {
                let current = self.route(&call.target, &call.method);
                match current {
                    Ok(current) if *reroutes < REROUTES => {
                        *reroutes += 1;
                        Next::Try(current)
                    }
                    _ => Next::Answer(Err(slot.draining_error().with_method(&call.method))),
                }
            }
            Attempt::Ran(Err(error)) if !*retried && self.may_retry(slot, &call.method, &error) => {
                *retried = true;
                match self.route_elsewhere(call, slot) {
                    Some(other) => {
                        tracing::debug!(plugin = %slot.plugin, method = %call.method, "retrying on another instance: {error}");
                        Next::Try(other)
                    }
                    None => Next::Answer(Err(error)),
                }
            }
            Attempt::Ran(result) => Next::Answer(result),
        }
    }

    /// The routing step: the scheduler's choice, or why the target is not routable.
    pub(super) fn route(&self, target: &Target, method: &str) -> Result<Arc<Slot>> {
        self.scheduler.route(target, method).map_err(|error| {
            if error.code() != Code::NotFound {
                return error;
            }
            // Slow path: say why the target is not routable.
            let Target::Plugin(id) = target else { return error.with_method(method) };
            match self.registry.find(id) {
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
}

/// A resolved `(instance, method)` for repeated synchronous calls: see
/// [`Host::resolve`](super::Host::resolve). Its calls take the pipeline's steps (admission
/// under `limits.max_concurrency`, the deadline, the overrun check, metrics) minus routing.
#[derive(Clone)]
pub struct MethodHandle {
    slot: Arc<Slot>,
    method: Box<str>,
    /// Where the method's counters are in `slot.stats`, found once.
    stats_index: Option<usize>,
    rules: CallRules,
}

impl MethodHandle {
    pub(super) fn new(slot: Arc<Slot>, method: &str, rules: CallRules) -> MethodHandle {
        let stats_index = slot.stats.method_index(method);
        MethodHandle { slot, method: method.into(), stats_index, rules }
    }

    /// Calls the method and returns the response (copied once out of the plugin).
    ///
    /// # Errors
    /// `unavailable` once the plugin stopped; `resource_exhausted` when
    /// `limits.max_concurrency` calls are running; `deadline_exceeded` when an in-process
    /// call returned past its timeout; the plugin's own error otherwise.
    pub fn call(&self, payload: &Payload) -> Result<Payload> {
        self.measured(|deadline| {
            let invocation = Invocation { method: &self.method, payload, deadline, depth: 0 };
            match self.slot.instance.call(invocation) {
                CallOutcome::Done(result) => Some(result),
                CallOutcome::Pending(_) => None,
            }
        })
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
        self.measured(|_deadline| {
            let mut receive = Some(receive);
            let mut answer = None;
            let outcome =
                self.slot.instance.call_borrowed(&self.method, payload, content_type, &mut |bytes, ct| {
                    if let Some(receive) = receive.take() {
                        answer = Some(receive(bytes, ct));
                    }
                })?;
            Some(
                outcome
                    .and_then(|()| answer.ok_or_else(|| Error::internal("the runtime returned no response"))),
            )
        })
    }

    /// The plugin this handle is bound to.
    pub fn plugin(&self) -> &str {
        &self.slot.plugin
    }

    fn measured<T>(&self, run: impl FnOnce(Option<Instant>) -> Option<Result<T>>) -> Result<T> {
        let stats = &self.slot.stats;
        let measured = Measured::of(stats, self.stats_index.map(|index| stats.method_at(index)));
        let result = match run_here(&self.rules, &self.slot, &self.method, None, 0, run) {
            Attempt::Ran(result) => result,
            Attempt::TurnedAway => Err(self.slot.draining_error().with_method(&*self.method)),
        };
        measured.finish(&result);
        result
    }
}

fn not_synchronous(slot: &Slot) -> Error {
    Error::precondition(format!(
        "the {} runtime serves calls asynchronously; use Host::invoke",
        slot.manifest.plugin.runtime
    ))
}

/// `deadline_exceeded` when an in-process call that started at `started_ms` (coarse clock)
/// returned after its `budget`. Measured on the coarse clock, so only overruns beyond its
/// resolution (a few ms) are reported: a response is never discarded by mistake.
fn overrun(started_ms: u64, budget: Duration) -> Option<Error> {
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

/// Counts calls in a row that ran past the plugin's own timeout on an instance that can be
/// killed (a process); at `[health] failures` of them the process is killed and replaced.
/// A call that had less time (`full_timeout` false: a shorter caller deadline, or time
/// spent in the queue) does not count when it times out; any answer resets the count.
fn count_timeouts<T>(slot: &Slot, result: &Result<T>, full_timeout: bool) {
    use std::sync::atomic::Ordering;
    let timed_out = matches!(result, Err(error) if error.code() == Code::DeadlineExceeded);
    if !timed_out {
        slot.timeouts_in_a_row.store(0, Ordering::Relaxed);
        return;
    }
    if !full_timeout {
        return;
    }
    let count = slot.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
    let limit = u64::from(slot.manifest.health.failures);
    if count == limit && slot.instance.died().is_some() {
        let why = format!("{count} calls in a row ran past their deadline; the process was killed");
        tracing::warn!(plugin = %slot.plugin, "{why}");
        *slot.killed_because.lock() = Some(why);
        slot.instance.kill();
    }
}
