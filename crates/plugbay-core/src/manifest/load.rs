//! The `[load]` table: when the plugin is loaded, unloaded when idle, and smoke-tested on a
//! reload.

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::context::{At, Context, Seg, invalid};
use super::provides::{Provides, is_provided};
use super::range::Allowed;
use super::text::quote;

/// The `[load]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Load {
    /// `true`: listed at startup but loaded on the first call to it (concurrent first calls
    /// cause one load). Default: `false`.
    pub lazy: bool,
    /// For lazy plugins: unload again after this many milliseconds without a call, 0
    /// (never) or 100 to 86 400 000. Default: 0.
    pub idle_timeout_ms: u64,
    /// A method the host calls on a new version during a reload, before switching to it;
    /// the reload is rolled back when it fails. Must be listed in `[provides]`. Default:
    /// none.
    pub smoke_method: Option<String>,
    /// The payload of the smoke call (UTF-8 text, e.g. JSON). Default: empty.
    pub smoke_payload: String,
}

/// `[load]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawLoad {
    lazy: bool,
    idle_timeout_ms: Option<i64>,
    smoke_method: Option<String>,
    smoke_payload: String,
}

const IDLE_TIMEOUT_MS: Allowed<u64> = Allowed::zero_or("never", 100, 86_400_000);

impl Context<'_> {
    /// Validates `[load]`: the idle timeout in its range, the smoke method listed in
    /// `[provides]`.
    pub(super) fn load(&self, raw: RawLoad, provides: &Provides) -> Result<Load> {
        let field = |name: &'static str| [Seg::Key("load"), Seg::Key(name)];
        let idle_timeout_ms = self.number(&field("idle_timeout_ms"), raw.idle_timeout_ms, IDLE_TIMEOUT_MS)?;
        if let Some(method) = &raw.smoke_method
            && !is_provided(provides, method)
        {
            return Err(self.error(
                &field("smoke_method"),
                At::Value,
                invalid(format!("method {} is not listed in [provides]", quote(method))),
            ));
        }
        Ok(Load {
            lazy: raw.lazy,
            idle_timeout_ms: idle_timeout_ms.unwrap_or_default(),
            smoke_method: raw.smoke_method,
            smoke_payload: raw.smoke_payload,
        })
    }
}
