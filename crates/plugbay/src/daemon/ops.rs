//! The plugin operations both APIs offer, by name: one place maps them to [`Host`].

use plugbay_core::{Host, Result};

/// An operation on one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Load the folder of that name from the plugins folder.
    Load,
    /// Stop and release it.
    Unload,
    /// Replace it by the version in its folder ([`plugbay_core::Host::reload`]: versioned
    /// swap, probation, rollback).
    Reload,
    /// Stop it (its calls in flight finish).
    Stop,
    /// Start it again.
    Start,
}

impl Operation {
    /// The operations a `POST /v1/plugins/{id}/{action}` may name.
    pub const ACTIONS: [(&'static str, Operation); 3] =
        [("reload", Operation::Reload), ("stop", Operation::Stop), ("start", Operation::Start)];

    /// Runs the operation on plugin `id`; returns the id it now has (a load reads it from
    /// the manifest).
    ///
    /// # Errors
    /// The host's error: `invalid_argument` for an id that cannot be one, `not_found`,
    /// `failed_precondition`, or why the plugin did not load.
    pub async fn run(self, host: &Host, id: &str) -> Result<String> {
        plugbay_core::manifest::validate_id(id)?;
        match self {
            Operation::Load => return host.load_by_name(id).await,
            Operation::Unload => host.unload(id).await?,
            Operation::Reload => host.reload(id).await.map(drop)?,
            Operation::Stop => host.stop(id).await?,
            Operation::Start => host.start(id).await?,
        }
        Ok(id.to_owned())
    }
}
