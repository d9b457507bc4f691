//! Events: publishing on the bus (lifecycle announcements among them) and delivering
//! queued events to the plugins that subscribe to their topic.

use std::sync::Weak;

use tokio::sync::mpsc;

use super::HostInner;
use crate::bus::{Event, LIFECYCLE_TOPIC, LifecycleChange};
use crate::call::Payload;
use crate::error::{Code, Error, Result};
use crate::lifecycle::State;
use crate::runtime::CallOutcome;

impl HostInner {
    /// Publishes `event` on the bus; it is queued for plugins only when one subscribes.
    ///
    /// # Errors
    /// `resource_exhausted` when the plugin delivery queue is full.
    pub(super) fn publish(&self, event: Event) -> Result<()> {
        let to_plugins = self.scheduler.snapshot().wants_event(&event.topic, &event.source);
        self.bus.publish(event, to_plugins)
    }

    /// Publishes a lifecycle transition on [`LIFECYCLE_TOPIC`].
    pub(super) fn announce(&self, plugin: &str, from: Option<State>, to: State, reason: String) {
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
}

/// Delivers queued events to the plugins whose manifest subscribes to their topic.
pub(super) async fn deliver_to_plugins(host: Weak<HostInner>, mut queue: mpsc::Receiver<Event>) {
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
                    match tokio::time::timeout(host.rules.timeout_of(slot), future).await {
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
