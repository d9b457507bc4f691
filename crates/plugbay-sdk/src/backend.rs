//! [`HostApi`]: the host API as a transport implements it. [`crate::Host`] holds one; the
//! process transport (`process`) implements it. Both import this module and not each
//! other.

use crate::types::{Input, LogLevel, PluginError, Response};

/// A way to reach the host from a plugin instance: log, publish, invoke.
pub(crate) trait HostApi: Send + Sync {
    /// Writes a log line; never waits for the host.
    fn log(&self, level: LogLevel, message: &str);

    /// Publishes an event.
    fn publish(
        &self,
        topic: &str,
        action: &str,
        payload: &[u8],
        content_type: &str,
    ) -> Result<(), PluginError>;

    /// Calls a capability or a plugin through the host.
    fn invoke(&self, target: &str, method: &str, input: Input<'_>) -> Result<Response, PluginError>;
}
