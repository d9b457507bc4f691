//! The `[wasm]` table: how the wasm runtime runs the plugin's component.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::context::{At, Context, Seg, invalid};
use super::text::quote;

/// The `[wasm]` table: how the wasm runtime runs the plugin's component.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WasmSettings {
    /// How instances are used: `"persistent"` or `"per-call"`. Default:
    /// [`WasmInstanceMode::Persistent`].
    pub instance: WasmInstanceMode,
}

/// How the wasm runtime uses instances of a component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WasmInstanceMode {
    /// One long-lived instance keeps its state between calls; calls are serialised. An
    /// instance that traps is replaced (and initialised again) on the next call. The default.
    #[default]
    Persistent,
    /// A fresh instance for every call (and every event): no state survives a call, the
    /// strongest isolation between calls.
    PerCall,
}

impl WasmInstanceMode {
    /// The manifest spelling: `persistent` or `per-call`.
    pub fn as_str(self) -> &'static str {
        match self {
            WasmInstanceMode::Persistent => "persistent",
            WasmInstanceMode::PerCall => "per-call",
        }
    }
}

impl fmt::Display for WasmInstanceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[wasm]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawWasm {
    instance: Option<String>,
}

impl Context<'_> {
    /// Validates `[wasm]`: a known instance mode.
    pub(super) fn wasm(&self, raw: RawWasm) -> Result<WasmSettings> {
        let instance = match raw.instance.as_deref() {
            None | Some("persistent") => WasmInstanceMode::Persistent,
            Some("per-call") => WasmInstanceMode::PerCall,
            Some(other) => {
                return Err(self.error(
                    &[Seg::Key("wasm"), Seg::Key("instance")],
                    At::Value,
                    invalid(format!("instance {} is not one of: persistent, per-call", quote(other))),
                ));
            }
        };
        Ok(WasmSettings { instance })
    }
}
