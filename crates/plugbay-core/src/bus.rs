//! The event bus: [`Event`]s, topic matching, and the two ways events travel: to the host's
//! subscribers (a broadcast channel; a slow subscriber loses the oldest events, never blocks
//! the host) and to plugins that subscribe to a topic (a bounded queue drained by one task).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc};

use crate::call::Payload;
use crate::error::{Code, Error, Result};
use crate::lifecycle::State;

/// The topic of lifecycle events; the payload is a [`LifecycleChange`] as JSON.
pub const LIFECYCLE_TOPIC: &str = "plugbay.lifecycle";

/// One event on the bus.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Event {
    /// The topic, e.g. `kv.changed` or [`LIFECYCLE_TOPIC`].
    pub topic: String,
    /// What happened (for lifecycle events: the new state).
    pub action: String,
    /// The event's data.
    pub payload: Payload,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Who published it: a plugin id, or `host`.
    pub source: String,
}

impl Event {
    /// An event stamped with the current time.
    pub fn new(
        topic: impl Into<String>,
        action: impl Into<String>,
        payload: Payload,
        source: impl Into<String>,
    ) -> Event {
        Event {
            topic: topic.into(),
            action: action.into(),
            payload,
            timestamp_ms: now_ms(),
            source: source.into(),
        }
    }

    /// The lifecycle change this event carries, if it is a lifecycle event.
    pub fn lifecycle(&self) -> Option<LifecycleChange> {
        if self.topic != LIFECYCLE_TOPIC {
            return None;
        }
        self.payload.to_json().ok()
    }
}

/// The payload of a lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct LifecycleChange {
    /// The plugin id (the folder name when the manifest could not be read).
    pub plugin: String,
    /// The state before; `None` when the plugin was just discovered.
    pub from: Option<State>,
    /// The state after.
    pub to: State,
    /// Why, in words (for `failed`: the error).
    pub reason: String,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Whether a subscription pattern matches a topic: the exact topic, `prefix.*` for every
/// topic below `prefix`, or `*` for all.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    if pattern == "*" || pattern == topic {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => {
            topic.len() > prefix.len() + 1
                && topic.starts_with(prefix)
                && topic.as_bytes()[prefix.len()] == b'.'
        }
        None => false,
    }
}

/// Checks a topic a plugin or caller publishes to.
///
/// # Errors
/// `invalid_argument` for an empty, over-long or oddly spelled topic.
pub fn check_topic(topic: &str) -> Result<()> {
    let ok = !topic.is_empty()
        && topic.len() <= 128
        && topic.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("topic {topic:?} must be 1-128 characters of [a-z0-9._-]")))
    }
}

/// The bus's two outlets.
pub(crate) struct Bus {
    watchers: broadcast::Sender<Event>,
    deliveries: mpsc::Sender<Event>,
}

impl Bus {
    /// A bus with room for `capacity` undelivered events per outlet; the receiver is for
    /// the task that delivers events to plugins.
    pub(crate) fn new(capacity: usize) -> (Bus, mpsc::Receiver<Event>) {
        let (watchers, _) = broadcast::channel(capacity);
        let (deliveries, queue) = mpsc::channel(capacity);
        (Bus { watchers, deliveries }, queue)
    }

    /// A new receiver of every event from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.watchers.subscribe()
    }

    /// Publishes to the host's subscribers, and queues delivery to plugins when
    /// `to_plugins` (a running plugin subscribes to the topic). An event no plugin wants
    /// never enters the queue, so it wakes no task.
    ///
    /// # Errors
    /// `resource_exhausted` when the plugin delivery queue is full (the host's subscribers
    /// still got the event).
    pub(crate) fn publish(&self, event: Event, to_plugins: bool) -> Result<()> {
        if !to_plugins {
            let _ = self.watchers.send(event);
            return Ok(());
        }
        let _ = self.watchers.send(event.clone());
        self.deliveries.try_send(event).map_err(|error| match error {
            mpsc::error::TrySendError::Full(event) => Error::new(
                Code::ResourceExhausted,
                format!("the event queue is full; event on {:?} not delivered to plugins", event.topic),
            ),
            mpsc::error::TrySendError::Closed(_) => Error::unavailable("the host is shutting down"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("kv.changed", "kv.changed"));
        assert!(topic_matches("kv.*", "kv.changed"));
        assert!(!topic_matches("kv.*", "kv"));
        assert!(!topic_matches("kv.*", "kvx.changed"));
        assert!(topic_matches("*", "anything"));
        assert!(!topic_matches("kv.changed", "kv.changed.more"));
    }

    #[test]
    fn topics_are_checked() {
        assert!(check_topic("kv.changed").is_ok());
        assert_eq!(check_topic("").unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(check_topic("Bad Topic").unwrap_err().code(), Code::InvalidArgument);
    }
}
