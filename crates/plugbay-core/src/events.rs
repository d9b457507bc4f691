//! Every event topic the host publishes, and their payloads, in one place.
//!
//! | topic | actions | payload (JSON) |
//! |---|---|---|
//! | [`LIFECYCLE_TOPIC`] (`plugbay.lifecycle`) | the state entered (`running`, `failed`, ...) | [`LifecycleChange`] |
//! | [`RELOAD_TOPIC`] (`plugbay.reload`) | `switched`, `completed`, `failed`, `rolled_back` | [`ReloadEvent`] |
//! | [`ALERT_TOPIC`] (`plugbay.alert`) | `quarantined`, `sandbox_degraded`, `signature_warning` | [`Alert`] |
//!
//! Plugins and callers publish their own topics ([`Event`], checked by [`check_topic`]);
//! crash reports ([`CrashReport`]) are kept by the host and read with
//! [`crate::Host::crashes`].

pub use crate::bus::{Event, LIFECYCLE_TOPIC, LifecycleChange, check_topic, topic_matches};
pub use crate::host::{RELOAD_TOPIC, ReloadEvent};
pub use crate::supervisor::{ALERT_TOPIC, Alert, CRASH_LOG_CAPACITY, CallRecord, CrashReport, RECENT_CALLS};

/// The `tracing` target of the warning the host logs when a plugin fails to load or fails
/// later (with a `folder` field): the daemon reports those failures itself and filters this
/// line out so they are not shown twice.
pub const LOAD_FAILURE_LOG_TARGET: &str = "plugbay_core::load_failure";
