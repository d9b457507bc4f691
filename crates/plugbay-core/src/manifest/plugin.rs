//! The `[plugin]` table: who the plugin is and how to load it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::context::{At, Context, Problem, Seg, invalid};
use super::range::Allowed;
use super::text::{check_relative_path, lower_or_digit, quote};

/// The `[plugin]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginSection {
    /// The plugin id: 1 to 64 characters from `a-z`, `0-9` and `-`, not starting or ending
    /// with `-`; equal to the plugin's folder name. Required.
    pub id: String,
    /// The plugin's version (semver, e.g. `1.2.0`). Required.
    #[serde(serialize_with = "serialize_display")]
    pub version: semver::Version,
    /// Which runtime loads the plugin. Required.
    pub runtime: RuntimeKind,
    /// The artifact to load, relative to the plugin folder (no `..`, not absolute, at most
    /// 255 characters). For native plugins the host adds the platform suffix. Required.
    pub entry: String,
    /// The contract (ABI) version the plugin was built against, at least 1. Default: 1.
    pub abi: u32,
}

/// Which runtime runs a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// A shared library (`.so`, `.dll`, `.dylib`) loaded into the host process.
    Native,
    /// A WebAssembly module run by wasmtime in the host process.
    Wasm,
    /// A separate executable the host starts and talks to over a pipe.
    Process,
}

impl RuntimeKind {
    /// Every runtime, in the order the manifest documentation lists them.
    pub const ALL: [RuntimeKind; 3] = [RuntimeKind::Native, RuntimeKind::Wasm, RuntimeKind::Process];

    /// The manifest spelling: `native`, `wasm` or `process`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Native => "native",
            RuntimeKind::Wasm => "wasm",
            RuntimeKind::Process => "process",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn serialize_display<T: fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// `[plugin]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawPlugin {
    id: Option<String>,
    version: Option<String>,
    runtime: Option<String>,
    entry: Option<String>,
    abi: Option<i64>,
}

const ID_RULE: &str = "a plugin id is 1 to 64 characters from a-z, 0-9 and '-', not starting or \
                       ending with '-' (e.g. \"log-processor\")";
const VERSION_RULE: &str = "a version is a semver version such as \"1.2.0\"";
const RUNTIME_RULE: &str = "the runtime is one of \"native\", \"wasm\" or \"process\"";
const ENTRY_RULE: &str = "the entry is the artifact's path relative to the plugin folder \
                          (e.g. \"liblog_processor\")";
const MAX_ENTRY_CHARS: usize = 255;
const ABI: Allowed<u32> = Allowed::new(1, u32::MAX);

impl Context<'_> {
    /// Validates `[plugin]`; `folder_name`, when given, must equal its id.
    pub(super) fn plugin_section(
        &self,
        plugin: Option<RawPlugin>,
        folder_name: Option<&str>,
    ) -> Result<PluginSection> {
        use Seg::Key;

        let Some(plugin) = plugin else {
            return Err(self.error(
                &[Key("plugin")],
                At::Value,
                invalid("the [plugin] table is missing; it needs id, version, runtime and entry"),
            ));
        };
        let required = |name: &'static str, what: &str| {
            self.error(
                &[Key("plugin"), Key(name)],
                At::Value,
                invalid(format!("the required field plugin.{name} is missing; {what}")),
            )
        };
        let id = plugin.id.ok_or_else(|| required("id", ID_RULE))?;
        self.check(&[Key("plugin"), Key("id")], At::Value, check_id(&id))?;
        if let Some(folder) = folder_name
            && folder != id
        {
            return Err(self.error(
                &[Key("plugin"), Key("id")],
                At::Value,
                invalid(format!(
                    "plugin.id {} must equal the plugin's folder name {}",
                    quote(&id),
                    quote(folder)
                )),
            ));
        }
        let version = plugin.version.ok_or_else(|| required("version", VERSION_RULE))?;
        let version = self.check(&[Key("plugin"), Key("version")], At::Value, parse_version(&version))?;
        let runtime = plugin.runtime.ok_or_else(|| required("runtime", RUNTIME_RULE))?;
        let runtime = self.check(&[Key("plugin"), Key("runtime")], At::Value, parse_runtime(&runtime))?;
        let entry = plugin.entry.ok_or_else(|| required("entry", ENTRY_RULE))?;
        self.check(&[Key("plugin"), Key("entry")], At::Value, check_relative_path(&entry, MAX_ENTRY_CHARS))?;
        let abi = self.number(&[Key("plugin"), Key("abi")], plugin.abi, ABI)?.unwrap_or(1);
        Ok(PluginSection { id, version, runtime, entry, abi })
    }
}

/// Checks that `id` is a valid plugin id (the rule `plugin.id` follows), e.g. for an id
/// that arrives over an API before any folder is looked at.
///
/// # Errors
/// `invalid_argument` saying what is allowed.
pub fn validate_id(id: &str) -> Result<()> {
    check_id(id).map_err(|(code, message)| Error::new(code, message))
}

pub(super) fn check_id(id: &str) -> Result<(), Problem> {
    let ok = (1..=64).contains(&id.len())
        && id.chars().all(|c| lower_or_digit(c) || c == '-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok { Ok(()) } else { Err(invalid(format!("plugin id {} is not allowed; {ID_RULE}", quote(id)))) }
}

fn parse_version(version: &str) -> Result<semver::Version, Problem> {
    semver::Version::parse(version).map_err(|error| {
        invalid(format!(
            "version {} is not semver ({error}); use a version such as \"1.2.0\"",
            quote(version)
        ))
    })
}

fn parse_runtime(runtime: &str) -> Result<RuntimeKind, Problem> {
    RuntimeKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == runtime)
        .ok_or_else(|| invalid(format!("runtime {} is not known; {RUNTIME_RULE}", quote(runtime))))
}
