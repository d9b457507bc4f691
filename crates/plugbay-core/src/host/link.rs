//! The host as plugins see it: their host API calls (`log`, `publish`, `invoke`) enter the
//! host here, are checked against the plugin's `[permissions] invoke` and `publish`, and
//! calls go through the same pipeline as the embedder's.

use std::sync::{Arc, Weak};

use super::HostInner;
use crate::bus::{self, Event};
use crate::call::{Call, Payload};
use crate::error::{Error, Result};
use crate::manifest::Permissions;
use crate::runtime::{BoxFuture, HostCallbacks, LogLevel};

/// The host as one plugin's callbacks see it (weakly: instances live inside the host, so
/// a strong reference would be a cycle), with what its manifest lets it call and publish.
pub(super) struct HostLink {
    pub(super) host: Weak<HostInner>,
    pub(super) permissions: Permissions,
}

impl HostLink {
    fn host(&self) -> Result<Arc<HostInner>> {
        self.host.upgrade().ok_or_else(|| Error::unavailable("the host is shutting down"))
    }

    /// `permission_denied` naming the calling plugin, unless `[permissions] invoke` lets
    /// it make `call`.
    fn may_invoke(&self, plugin: &str, call: &Call) -> Result<()> {
        if self.permissions.may_invoke(&call.target, &call.method) {
            return Ok(());
        }
        Err(Error::denied(format!(
            "the plugin may not call {}/{}: its [permissions] invoke does not list it (it lists: {})",
            call.target,
            call.method,
            listed(&self.permissions.invoke)
        ))
        .with_plugin(plugin))
    }
}

fn listed(grants: &[String]) -> String {
    if grants.is_empty() { "nothing".to_owned() } else { grants.join(", ") }
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
        if !self.permissions.may_publish(topic) {
            return Err(Error::denied(format!(
                "the plugin may not publish on {topic}: its [permissions] publish does not list it (it lists: {})",
                listed(&self.permissions.publish)
            ))
            .with_plugin(plugin));
        }
        self.host()?.publish(Event::new(topic, action, payload, plugin))
    }

    fn invoke(&self, plugin: &str, call: Call) -> Result<Payload> {
        self.may_invoke(plugin, &call)?;
        self.host()?.dispatch_sync(&call)
    }

    fn invoke_async(&self, plugin: &str, call: Call) -> BoxFuture<'static, Result<Payload>> {
        let allowed = self.may_invoke(plugin, &call);
        let host = self.host();
        Box::pin(async move {
            allowed?;
            host?.dispatch(&call).await
        })
    }
}
