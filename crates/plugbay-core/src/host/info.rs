//! What the host tells about its plugins: [`PluginInfo`], [`ErrorInfo`], [`LoadReport`].

use std::path::PathBuf;

use crate::error::{Code, Error};
use crate::lifecycle::State;
use crate::manifest::RuntimeKind;
use crate::runtime::SandboxReport;
use crate::trust::SignatureInfo;

/// A failure as data: its code and the whole message with its context.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorInfo {
    /// The error's code.
    pub code: Code,
    /// The rendered error (`Error`'s `Display`).
    pub message: String,
}

impl From<&Error> for ErrorInfo {
    fn from(error: &Error) -> ErrorInfo {
        ErrorInfo { code: error.code(), message: error.to_string() }
    }
}

/// What the host knows about one plugin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PluginInfo {
    /// The plugin id (the folder name when the manifest could not be read).
    pub id: String,
    /// The plugin folder.
    pub folder: PathBuf,
    /// The version from the manifest, if it was read.
    pub version: Option<String>,
    /// The runtime from the manifest, if it was read.
    pub runtime: Option<RuntimeKind>,
    /// Where it is in its lifecycle.
    pub state: State,
    /// The capabilities it provides (from the manifest).
    pub capabilities: Vec<String>,
    /// Why it is not running, when it failed.
    pub error: Option<ErrorInfo>,
    /// Running instances (replicas).
    pub instances: usize,
    /// Restarts the supervisor made since the plugin was last loaded or started by hand.
    pub restarts: u32,
    /// In-process calls seen running past their timeout since the instance started (they
    /// cannot be pre-empted; see [`Host::invoke`]).
    pub stuck_calls: u64,
    /// Loaded on its first call (`[load] lazy`).
    pub lazy: bool,
    /// Why the last reload failed; the plugin kept (or went back to) its previous version.
    /// Cleared by the next successful reload.
    pub reload_error: Option<ErrorInfo>,
    /// The OS sandbox its running instance is in (process plugins; `None` for the others,
    /// or while no instance runs).
    pub sandbox: Option<SandboxReport>,
    /// The process ids of its running instances as the host sees them (process plugins;
    /// a sandboxed program's is its sandbox's init, which ends with it).
    pub pids: Vec<u32>,
    /// Its signature as the host judged it when it loaded this version (`None` until it
    /// is loaded; docs/trust.md).
    pub signature: Option<SignatureInfo>,
}

/// The outcome of loading a plugins folder: who loaded and who did not, and why.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct LoadReport {
    /// Ids of the plugins now running.
    pub loaded: Vec<String>,
    /// The plugins (or folders) that failed, each with its error.
    pub failed: Vec<Error>,
}
