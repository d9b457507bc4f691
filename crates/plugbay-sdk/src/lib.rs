//! Write plugbay plugins in Rust.
//!
//! Implement [`Plugin`] for your type and export it with [`export_plugin!`]; build the
//! crate as a `cdylib` and it is a native plugin that speaks `include/plugbay.h`. You write
//! no `unsafe`: the SDK owns the C ABI, copies bytes across it, frees buffers on the right
//! side, and catches panics so they reach the host as `internal` errors instead of
//! unwinding into it.
//!
//! ```
//! use plugbay_sdk::{Description, Host, Input, Output, Plugin, PluginError};
//!
//! struct Shout;
//!
//! impl Plugin for Shout {
//!     fn describe() -> Description {
//!         Description::new("shout", "1.0.0").provides("text.shout@1", &["shout"])
//!     }
//!
//!     fn init(_host: Host, _config: &[u8]) -> Result<Self, PluginError> {
//!         Ok(Shout)
//!     }
//!
//!     fn call(&self, method: &str, input: Input<'_>) -> Result<Output, PluginError> {
//!         match method {
//!             "shout" => Ok(Output::json(&input.json::<String>()?.to_uppercase())?),
//!             other => Err(PluginError::unknown_method(other)),
//!         }
//!     }
//! }
//!
//! plugbay_sdk::export_plugin!(Shout);
//! # fn main() {}
//! ```
//!
//! The same type can be tested without a host: call `Shout::init(Host::detached(), b"")`
//! and then `call` directly.

mod backend;
mod host;
mod types;

#[cfg(feature = "native")]
#[doc(hidden)]
pub mod native;
#[cfg(feature = "process")]
mod process;

pub use host::Host;
pub use plugbay_abi as abi;
#[cfg(feature = "process")]
pub use process::serve;
pub use types::{Description, ErrorCode, Event, Input, LogLevel, Output, PluginError, Response};

/// A plugin: one type, created by [`Plugin::init`], serving calls through `&self`.
///
/// The host may call `call` and `on_event` from several threads at once, so keep mutable
/// state behind a `Mutex` or atomics (the type must be `Sync`).
pub trait Plugin: Sized + Send + Sync + 'static {
    /// Whether the host may unload (dlclose) the library once no call is in flight.
    /// Defaults to `false`: Rust thread-local destructors and `dlclose` do not mix, so a
    /// library is kept mapped unless you know it registers none.
    const UNLOADABLE: bool = false;

    /// What the plugin is and provides. The host compares it with `plugin.toml` before
    /// init and refuses the plugin when they disagree.
    fn describe() -> Description;

    /// Creates the instance from the configuration bytes the host passes (may be empty).
    ///
    /// # Errors
    /// Any error refuses the plugin with that error's code and message.
    fn init(host: Host, config: &[u8]) -> Result<Self, PluginError>;

    /// Serves one call. `method` is one the manifest whitelists under `[provides]`.
    ///
    /// # Errors
    /// The error's code and message reach the caller unchanged.
    fn call(&self, method: &str, input: Input<'_>) -> Result<Output, PluginError>;

    /// Receives an event for a topic the manifest lists under `[subscribes]`.
    ///
    /// # Errors
    /// The error is logged by the host; the event is not redelivered.
    fn on_event(&self, event: Event<'_>) -> Result<(), PluginError> {
        let _ = event;
        Ok(())
    }

    /// Called once before the instance is dropped; no call runs during or after it.
    fn shutdown(&self) {}

    /// Whether the plugin keeps state across restarts through [`Plugin::snapshot`] and
    /// [`Plugin::restore`]. Default `false` (the host never asks).
    const SNAPSHOTS: bool = false;

    /// The instance's state, in any format. The host keeps the last one (taken on a
    /// graceful stop and every `[restart] snapshot_interval_ms`) and hands it to
    /// [`Plugin::restore`] of the next instance, after a crash too. Calls may run
    /// concurrently with it.
    ///
    /// # Errors
    /// The host logs the error and keeps the previous snapshot.
    fn snapshot(&self) -> Result<Vec<u8>, PluginError> {
        Ok(Vec::new())
    }

    /// Loads a state written by [`Plugin::snapshot`], right after init and before any
    /// call.
    ///
    /// # Errors
    /// The instance is refused (it does not start) with this error.
    fn restore(&self, state: &[u8]) -> Result<(), PluginError> {
        let _ = state;
        Ok(())
    }
}
