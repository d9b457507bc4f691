//! The host's side of supervision: watching instances (death, health, stuck calls),
//! restarting them under their `[restart]` policy with backoff, quarantining a plugin that
//! keeps failing, and writing crash reports. The decisions themselves are in
//! [`crate::supervisor`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{HostInner, PluginEntry};
use crate::bus::Event;
use crate::call::{Call, Payload};
use crate::error::{Code, Error};
use crate::lifecycle::State;
use crate::manifest::{Health, MANIFEST_FILE};
use crate::runtime::Death;
use crate::scheduler::Slot;
use crate::supervisor::{self, ALERT_TOPIC, Alert, CrashReport, Verdict};

/// How often the stuck-call watchdog looks at in-process instances.
const STUCK_CHECK_EVERY: Duration = Duration::from_millis(50);

/// Looks at every routed in-process instance every [`STUCK_CHECK_EVERY`] and marks those
/// with a call running past the plugin's timeout as stuck (the scheduler skips them), until
/// the host is dropped.
pub(super) async fn watch_stuck_calls(host: Weak<HostInner>) {
    let mut ticks = tokio::time::interval(STUCK_CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(host) = host.upgrade() else { return };
        let now_ms = supervisor::coarse_now_ms();
        let table = host.scheduler.snapshot();
        for slot in table.slots() {
            let Some(watch) = &slot.watch else { continue };
            let timeout_ms = host.rules.timeout_of(slot).as_millis() as u64;
            let newly = watch.check(now_ms, timeout_ms);
            if newly > 0 {
                tracing::warn!(
                    plugin = %slot.plugin,
                    "{newly} call(s) have run past the timeout of {timeout_ms} ms; no new calls go to this instance until they return"
                );
            }
        }
    }
}

/// Resolves, with the reason, once `failures` health checks in a row failed. Never
/// resolves for instances without health checks, or while checks are off.
async fn unhealthy(slot: Weak<Slot>, health: Health) -> String {
    if health.interval_ms == 0 {
        return std::future::pending().await;
    }
    let (interval, timeout) =
        (Duration::from_millis(health.interval_ms), Duration::from_millis(health.timeout_ms));
    let mut failed = 0;
    loop {
        tokio::time::sleep(interval).await;
        let Some(slot) = slot.upgrade() else { return std::future::pending().await };
        let Some(check) = slot.instance.check_health(timeout) else { return std::future::pending().await };
        match check.await {
            Ok(()) => failed = 0,
            Err(error) => {
                failed += 1;
                tracing::warn!(plugin = %slot.plugin, "health check {failed}/{} failed: {error}", health.failures);
                if failed >= health.failures {
                    return format!(
                        "failed {failed} health checks in a row (every {} ms, {} ms each; last: {}); the process was killed",
                        health.interval_ms,
                        health.timeout_ms,
                        error.message()
                    );
                }
            }
        }
    }
}

impl HostInner {
    /// Watches an instance that can die or hang on its own (a process): when it exits, or
    /// fails its health checks (then it is killed, SIGCONT first so a stopped one dies),
    /// the supervisor takes over.
    pub(super) fn supervise(&self, entry: &Arc<PluginEntry>, slot: &Arc<Slot>) {
        let Some(died) = slot.instance.died() else { return };
        let (host, entry, watched) = (self.me.clone(), entry.clone(), Arc::downgrade(slot));
        let health = slot.manifest.health.clone();
        self.spawn(async move {
            let death = tokio::select! {
                death = died => match watched.upgrade().and_then(|slot| slot.killed_because.lock().take()) {
                    Some(why) => death.because(why),
                    None => death,
                },
                reason = unhealthy(watched.clone(), health) => {
                    if let Some(slot) = watched.upgrade() {
                        slot.instance.kill();
                    }
                    Death::from_cause(reason)
                }
            };
            let (Some(host), Some(slot)) = (host.upgrade(), watched.upgrade()) else { return };
            host.instance_ended(&entry, &slot, death).await;
        });
    }

    /// An instance ended on its own: out of routing at once, a crash report, then restart,
    /// quarantine or failure as the plugin's `[restart]` says.
    async fn instance_ended(&self, entry: &Arc<PluginEntry>, slot: &Arc<Slot>, death: Death) {
        let reason = death.to_string();
        let _operation = entry.operation.lock().await;
        let (id, remaining, probation) = {
            let mut status = entry.status.lock();
            if !status.slots.iter().any(|s| Arc::ptr_eq(s, slot)) {
                return; // stopped on purpose, or already handled
            }
            status.slots.retain(|s| !Arc::ptr_eq(s, slot));
            let on_probation = status.probation.as_ref().is_some_and(|p| p.tries(slot));
            (
                status.id.clone(),
                status.slots.clone(),
                if on_probation { status.probation.take() } else { None },
            )
        };
        if let Some(probation) = probation {
            // A reload's new version died soon after the switch: back to the old one.
            self.crashes.push(CrashReport {
                time_ms: supervisor::unix_ms(),
                plugin: id.clone(),
                instance: slot.index,
                reason: reason.clone(),
                exit: Some(death.exit),
                last_calls: slot.recent.snapshot(),
                action: "reload rolled back to the previous version".into(),
            });
            self.roll_back(entry, probation, &reason);
            return;
        }
        if remaining.is_empty() {
            self.scheduler.remove(&id);
        } else {
            self.scheduler.insert(&id, remaining.clone());
        }
        let error = Error::unavailable(reason).with_plugin(&id);
        self.after_failure(entry, Some(slot), &error, Some(&death), remaining.is_empty());
    }

    /// The plugin's first start failed in an instance (init error, crash at start): the
    /// policy decides whether to try again. The plugin is already `failed`.
    pub(super) fn after_start_failure(&self, entry: &Arc<PluginEntry>, error: &Error) {
        self.after_failure(entry, None, error, None, true);
    }

    /// Records the failure, writes the crash report, and acts on the verdict. `slot` is the
    /// instance that ended (for its replica number and last calls), `None` when none
    /// started; `death` how it died, when it did (whether it was clean, its exit status for
    /// the report); `last` says no instance of the plugin is left.
    fn after_failure(
        &self,
        entry: &Arc<PluginEntry>,
        slot: Option<&Arc<Slot>>,
        error: &Error,
        death: Option<&Death>,
        last: bool,
    ) {
        let clean = death.is_some_and(Death::clean);
        let Some(manifest) = entry.status.lock().manifest.clone() else { return };
        let restart = &manifest.restart;
        let verdict = supervisor::restarts(restart.policy, clean).then(|| {
            entry.status.lock().failures.record(
                tokio::time::Instant::now().into_std(),
                restart,
                supervisor::jitter(),
            )
        });
        let action = match verdict {
            None if clean => format!("not restarted: it exited cleanly (policy {})", restart.policy),
            None => format!("not restarted (policy {})", restart.policy),
            Some(Verdict::Restart { attempt, delay }) => {
                format!("restart {attempt} of {} in {} ms", restart.max_restarts, delay.as_millis())
            }
            Some(Verdict::Quarantine { failures }) => {
                format!("quarantined after {failures} failures within {} s", restart.window_s)
            }
        };
        let id = manifest.plugin.id.clone();
        tracing::warn!(plugin = %id, "{}; {action}", error.message());
        self.crashes.push(CrashReport {
            time_ms: supervisor::unix_ms(),
            plugin: id.clone(),
            instance: slot.map_or(0, |slot| slot.index),
            reason: error.message().to_owned(),
            exit: death.map(|death| death.exit),
            last_calls: slot.map(|slot| slot.recent.snapshot()).unwrap_or_default(),
            action,
        });
        match verdict {
            Some(Verdict::Quarantine { failures }) => self.quarantine(entry, error, failures),
            Some(Verdict::Restart { attempt, delay }) if last => {
                self.fail(entry, error);
                self.back_off(entry, attempt, delay);
            }
            Some(Verdict::Restart { delay, .. }) => {
                let index = slot.map_or(0, |slot| slot.index);
                self.replace_instance(entry, index, delay);
            }
            None if last => self.fail(entry, error),
            None => {}
        }
    }

    /// Failed -> Quarantined: no more attempts; an alert event says why.
    fn quarantine(&self, entry: &Arc<PluginEntry>, error: &Error, failures: usize) {
        self.fail(entry, error);
        let window = entry.status.lock().manifest.as_ref().map_or(0, |m| m.restart.window_s);
        let reason = format!(
            "{failures} failures within {window} s (more than [restart] max_restarts); last: {}",
            error.message()
        );
        let plugin = entry.status.lock().id.clone();
        if self.transition(entry, State::Quarantined, reason.clone()).is_ok() {
            let alert = Alert { plugin, kind: "quarantined".into(), reason };
            let payload = Payload::json(&alert).unwrap_or_default();
            let _ = self.publish(Event::new(ALERT_TOPIC, "quarantined", payload, "host"));
        }
    }

    /// Failed -> BackingOff, then after `delay` a fresh start from the folder (unless an
    /// operator acted meanwhile).
    fn back_off(&self, entry: &Arc<PluginEntry>, attempt: u32, delay: Duration) {
        let reason = format!("restart {attempt} in {} ms", delay.as_millis());
        if self.transition(entry, State::BackingOff, reason).is_err() {
            return;
        }
        let (host, entry) = (self.me.clone(), entry.clone());
        self.spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(host) = host.upgrade() else { return };
            let _operation = entry.operation.lock().await;
            if entry.status.lock().state != State::BackingOff {
                return; // started, stopped or unloaded by hand meanwhile
            }
            if host.transition(&entry, State::Discovered, format!("restart {attempt}")).is_err() {
                return;
            }
            entry.status.lock().restarts += 1;
            let name = entry.status.lock().id.clone();
            if let Err(error) = host.bring_up(&entry, &name).await {
                let error = error.with_plugin(&name);
                host.fail(&entry, &error);
                host.after_failure(&entry, None, &error, None, true);
            }
        });
    }

    /// After `delay`, starts a new instance in place of replica `index` while the others
    /// keep serving.
    fn replace_instance(&self, entry: &Arc<PluginEntry>, index: usize, delay: Duration) {
        let (host, entry) = (self.me.clone(), entry.clone());
        self.spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(host) = host.upgrade() else { return };
            let _operation = entry.operation.lock().await;
            let (state, loaded, manifest, id) = {
                let status = entry.status.lock();
                (status.state, status.loaded.clone(), status.manifest.clone(), status.id.clone())
            };
            let (State::Running, Some(loaded), Some(manifest)) = (state, loaded, manifest) else { return };
            let Some(stats) = entry.status.lock().stats.clone() else { return };
            entry.status.lock().restarts += 1;
            let instance = match loaded.instantiate(host.instance_context(&id, &manifest)).await {
                Ok(instance) => host.restore_into(&id, instance).await,
                Err(error) => Err(error),
            };
            match instance {
                Ok(instance) => {
                    let slot = Arc::new(Slot::new(
                        instance,
                        manifest,
                        entry.folder.join(MANIFEST_FILE),
                        index,
                        stats,
                    ));
                    let slots = {
                        let mut status = entry.status.lock();
                        status.slots.push(slot.clone());
                        status.slots.clone()
                    };
                    host.scheduler.insert(&id, slots);
                    host.supervise(&entry, &slot);
                    if index == 0 {
                        host.snapshot_periodically(&entry, &slot);
                    }
                    tracing::info!(plugin = %id, "instance {index} restarted");
                }
                Err(error) => {
                    let last = entry.status.lock().slots.is_empty();
                    host.after_failure(&entry, None, &error.with_plugin(&id), None, last);
                }
            }
        });
    }

    /// Restores the plugin's last snapshot (if the host has one) into a fresh instance.
    pub(super) async fn restore_into(
        &self,
        id: &str,
        instance: Arc<dyn crate::runtime::Instance>,
    ) -> crate::error::Result<Arc<dyn crate::runtime::Instance>> {
        let state = self.snapshots.lock().get(id).cloned();
        if let Some(state) = state {
            let size = state.len();
            instance.restore(state).await.map_err(|error| {
                Error::new(
                    error.code(),
                    format!("restoring its last snapshot ({size} bytes) failed: {}", error.message()),
                )
            })?;
            tracing::debug!(plugin = %id, "restored a snapshot of {size} bytes");
        }
        Ok(instance)
    }

    /// Asks the instance for a snapshot and keeps it as the plugin's last one. A failure is
    /// logged; the previous snapshot stays.
    pub(super) async fn take_snapshot(&self, id: &str, slot: &Slot) {
        match slot.instance.snapshot().await {
            Ok(Some(state)) => {
                self.snapshots.lock().insert(id.to_owned(), state);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(plugin = %id, "snapshot failed; the previous one is kept: {error}"),
        }
    }

    /// Every `[restart] snapshot_interval_ms`, takes a snapshot of `slot` while it is one of
    /// the plugin's running instances.
    pub(super) fn snapshot_periodically(&self, entry: &Arc<PluginEntry>, slot: &Arc<Slot>) {
        let interval = slot.manifest.restart.snapshot_interval_ms;
        if interval == 0 {
            return;
        }
        let (host, entry, watched) = (self.me.clone(), entry.clone(), Arc::downgrade(slot));
        self.spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(interval));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let (Some(host), Some(slot)) = (host.upgrade(), watched.upgrade()) else { return };
                let id = {
                    let status = entry.status.lock();
                    if !status.slots.iter().any(|s| Arc::ptr_eq(s, &slot)) {
                        return; // stopped, died or replaced
                    }
                    status.id.clone()
                };
                host.take_snapshot(&id, &slot).await;
            }
        });
    }

    /// Whether a failed call may run again elsewhere: its instance died under it and the
    /// manifest lists the method as idempotent.
    pub(super) fn may_retry(&self, slot: &Slot, method: &str, error: &Error) -> bool {
        error.code() == Code::Unavailable
            && !slot.instance.is_alive()
            && slot.manifest.retry.idempotent.iter().any(|m| m == method)
    }

    /// Another live instance for `call` than `failed`, if the scheduler has one.
    pub(super) fn route_elsewhere(&self, call: &Call, failed: &Arc<Slot>) -> Option<Arc<Slot>> {
        // Routing rotates through the providers; a few turns find another one if any.
        (0..4)
            .filter_map(|_| self.route(&call.target, &call.method).ok())
            .find(|slot| !Arc::ptr_eq(slot, failed) && slot.instance.is_alive())
    }
}

impl HostInner {
    /// Publishes a `sandbox_degraded` alert when a plugin runs without some sandbox layers
    /// (the best-effort mode), naming each and why.
    pub(super) fn warn_of_missing_layers(&self, id: &str, report: &crate::runtime::SandboxReport) {
        if report.missing.is_empty() {
            return;
        }
        let reason = format!("started without the sandbox layers: {}", report.missing.join("; "));
        tracing::warn!(plugin = %id, "{reason}");
        let alert = Alert { plugin: id.to_owned(), kind: "sandbox_degraded".into(), reason };
        let payload = Payload::json(&alert).unwrap_or_default();
        let _ = self.publish(Event::new(ALERT_TOPIC, "sandbox_degraded", payload, "host"));
    }
}
