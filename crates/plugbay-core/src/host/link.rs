//! The host as plugins see it: their host API calls (`log`, `publish`, `invoke`) enter the
//! host here, and calls go through the same pipeline as the embedder's.

use std::sync::{Arc, Weak};

use super::HostInner;
use crate::bus::{self, Event};
use crate::call::{Call, Payload};
use crate::error::{Error, Result};
use crate::runtime::{BoxFuture, HostCallbacks, LogLevel};

/// The host as plugins' callbacks see it (weakly: instances live inside the host, so a
/// strong reference would be a cycle).
pub(super) struct HostLink(pub(super) Weak<HostInner>);

impl HostLink {
    fn host(&self) -> Result<Arc<HostInner>> {
        self.0.upgrade().ok_or_else(|| Error::unavailable("the host is shutting down"))
    }
}

impl HostCallbacks for HostLink {
    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        match level {
            LogLevel::Error => tracing::error!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
        }
    }

    fn publish(&self, plugin: &str, topic: &str, action: &str, payload: Payload) -> Result<()> {
        bus::check_topic(topic)?;
        self.host()?.publish(Event::new(topic, action, payload, plugin))
    }

    fn invoke(&self, _plugin: &str, call: Call) -> Result<Payload> {
        self.host()?.dispatch_sync(&call)
    }

    fn invoke_async(&self, _plugin: &str, call: Call) -> BoxFuture<'static, Result<Payload>> {
        let host = self.host();
        Box::pin(async move { host?.dispatch(&call).await })
    }
}
