//! The plugin manifest, `plugin.toml`: [`Manifest::read`] and [`Manifest::parse`] turn it into a
//! validated [`Manifest`], or into an [`Error`] that names the file, the field, the line and
//! column, and what is allowed.
//!
//! ```
//! use std::path::Path;
//! use plugbay_core::manifest::{Manifest, RuntimeKind};
//!
//! let toml = br#"
//! [plugin]
//! id = "log-processor"
//! version = "1.2.0"
//! runtime = "native"
//! entry = "liblog_processor"
//!
//! [provides]
//! "log.parse@1" = ["parse", "parse_batch"]
//! "#;
//! let path = Path::new("plugins/log-processor/plugin.toml");
//! let manifest = Manifest::parse(toml, path, Some("log-processor"))?;
//! assert_eq!(manifest.plugin.runtime, RuntimeKind::Native);
//! assert_eq!(manifest.plugin.abi, 1);
//! assert_eq!(manifest.methods_of("log.parse@1").map(<[String]>::len), Some(2));
//! # Ok::<(), plugbay_core::Error>(())
//! ```
//!
//! Parsing happens in two steps: serde reads the TOML into private `Raw*` structs (unknown keys
//! and wrong types fail here, named by their path via `serde_path_to_error`), then every value
//! is checked and converted into the public types. Spans for validation errors come from
//! toml's spanned document tree ([`toml::de::DeTable`]), looked up by the field's path.
//!
//! One module per section holds its public type, its raw shape and its rules: `plugin`,
//! `provides` (with `[subscribes]`), `labels`, `limits`, `permissions`, `supervision`
//! (`[restart]`, `[health]`, `[retry]`), `load`, `process` and `wasm`. Beside them, `context`
//! locates an error in the document, `range` is the one check of every numeric field, and
//! `text` holds the text rules several sections share.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};

use crate::error::{Code, Error, Result};

mod context;
mod labels;
mod limits;
mod load;
mod permissions;
mod plugin;
mod process;
mod provides;
mod range;
mod supervision;
mod text;
mod wasm;

use context::{Context, Seg, line_col, locate_value};
pub use limits::Limits;
use limits::RawLimits;
pub use load::Load;
use load::RawLoad;
pub use permissions::Permissions;
use permissions::RawPermissions;
use plugin::RawPlugin;
pub use plugin::{PluginSection, RuntimeKind, validate_id};
use process::RawProcess;
pub use process::{ProcessSettings, ProcessTransport};
use provides::RawSubscribes;
pub use provides::Subscribes;
pub use supervision::{Health, Restart, RestartPolicy, Retry};
use supervision::{RawHealth, RawRestart, RawRetry};
use wasm::RawWasm;
pub use wasm::{WasmInstanceMode, WasmSettings};

/// The largest manifest accepted, in bytes (1 MiB). Larger files are refused before parsing.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// The manifest's file name inside a plugin folder.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// A parsed and validated `plugin.toml`.
///
/// Only [`Manifest::parse`] and [`Manifest::read`] build one from a file, so every value in
/// it has passed the rules documented on its field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// `[plugin]`: who the plugin is and how to load it. Required.
    pub plugin: PluginSection,
    /// `[provides]`: capability (`"name@major"`, e.g. `"log.parse@1"`) -> the methods it
    /// exports. Only these methods can be called (the whitelist). Default: empty (a plugin
    /// may only subscribe).
    pub provides: BTreeMap<String, Vec<String>>,
    /// `[subscribes]`: the bus topics the plugin receives. Default: none.
    pub subscribes: Subscribes,
    /// `[labels]`: free-form key -> value metadata for selection and display. Default: none.
    pub labels: BTreeMap<String, String>,
    /// `[limits]`: resource limits; each unset one takes the host's default. Default: all unset.
    pub limits: Limits,
    /// `[permissions]`: sandbox grants for wasm and process plugins. Default: nothing granted.
    pub permissions: Permissions,
    /// `[restart]`: what the host does when the plugin fails. Default: see [`Restart`].
    pub restart: Restart,
    /// `[health]`: periodic health checks of process plugins. Default: see [`Health`].
    pub health: Health,
    /// `[retry]`: which methods may be retried on another instance. Default: none.
    pub retry: Retry,
    /// `[load]`: when the plugin is loaded. Default: at startup.
    pub load: Load,
    /// `[process]`: settings of the process runtime (ignored by the others). Default: see
    /// [`ProcessSettings`].
    pub process: ProcessSettings,
    /// `[wasm]`: settings of the wasm runtime (ignored by the others). Default: see
    /// [`WasmSettings`].
    pub wasm: WasmSettings,
}

impl Manifest {
    /// Parses and validates manifest bytes.
    ///
    /// `path` is only used in errors. `folder_name`, when given, must equal `plugin.id`.
    ///
    /// # Errors
    ///
    /// [`Code::InvalidArgument`] when the bytes are over [`MAX_MANIFEST_BYTES`], not UTF-8,
    /// empty, not TOML, have an unknown key or a value of the wrong type, miss a required
    /// field, or break a rule documented on a field; [`Code::PermissionDenied`] when `entry`
    /// or a permission path escapes the plugin folder (absolute or with `..`). Every error
    /// names `path`, and the dotted field and its 1-based line and column where they are known.
    pub fn parse(bytes: &[u8], path: &Path, folder_name: Option<&str>) -> Result<Manifest> {
        let early = |error: Error| {
            let error = error.with_file(path);
            match folder_name {
                Some(folder) => error.with_plugin(folder),
                None => error,
            }
        };
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(early(too_large(bytes.len() as u64)));
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => {
                let offset = error.valid_up_to();
                // The prefix up to `valid_up_to` is valid UTF-8 by definition.
                let valid = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
                let (line, column) = line_col(valid, offset);
                return Err(early(
                    Error::invalid(format!(
                        "the manifest is not valid UTF-8: byte 0x{:02x} at byte offset {offset}; \
                         save it as UTF-8",
                        bytes[offset]
                    ))
                    .with_position(line, column),
                ));
            }
        };
        if text.trim().is_empty() {
            return Err(early(empty()));
        }
        let doc = match DeTable::parse(text) {
            Ok(doc) => doc,
            Err(error) => {
                let mut out = Error::invalid(format!("not valid TOML: {}", error.message()));
                if let Some(span) = error.span() {
                    let (line, column) = line_col(text, span.start);
                    out = out.with_position(line, column);
                }
                return Err(early(out));
            }
        };
        if doc.get_ref().is_empty() {
            return Err(early(empty()));
        }
        let plugin = match locate_value(doc.get_ref(), &[Seg::Key("plugin"), Seg::Key("id")]) {
            Some(DeValue::String(id)) => Some(id.to_string()),
            _ => folder_name.map(str::to_owned),
        };
        let cx = Context { path, text, doc: doc.get_ref(), plugin };
        let raw: RawManifest = serde_path_to_error::deserialize(toml::de::Deserializer::from(doc.clone()))
            .map_err(|error| cx.serde_error(&error))?;
        cx.validate(raw, folder_name)
    }

    /// Reads `path` and [parses](Manifest::parse) it.
    ///
    /// A file over [`MAX_MANIFEST_BYTES`] is refused before it is parsed: by its length in the
    /// file's metadata, and by reading at most one byte more than the limit (the file may grow
    /// in between).
    ///
    /// # Errors
    ///
    /// Everything [`Manifest::parse`] returns; [`Code::NotFound`] when the file does not
    /// exist, [`Code::PermissionDenied`] when it cannot be read for lack of permission,
    /// [`Code::InvalidArgument`] when it is not a regular file or too large, and
    /// [`Code::Internal`] for other I/O errors.
    pub fn read(path: &Path, folder_name: Option<&str>) -> Result<Manifest> {
        let context = |error: Error| {
            let error = error.with_file(path);
            match folder_name {
                Some(folder) => error.with_plugin(folder),
                None => error,
            }
        };
        let io_error = |error: std::io::Error| {
            let code = match error.kind() {
                std::io::ErrorKind::NotFound => Code::NotFound,
                std::io::ErrorKind::PermissionDenied => Code::PermissionDenied,
                _ => Code::Internal,
            };
            context(Error::new(code, format!("cannot read the manifest: {error}")).with_source(error))
        };
        let metadata = std::fs::metadata(path).map_err(io_error)?;
        if !metadata.is_file() {
            return Err(context(Error::invalid("the manifest is not a regular file")));
        }
        if metadata.len() > MAX_MANIFEST_BYTES as u64 {
            return Err(context(too_large(metadata.len())));
        }
        let file = std::fs::File::open(path).map_err(io_error)?;
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        file.take(MAX_MANIFEST_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(io_error)?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(context(Error::invalid(format!(
                "the manifest grew while it was read, past the limit of {MAX_MANIFEST_BYTES} bytes (1 MiB)"
            ))));
        }
        Manifest::parse(&bytes, path, folder_name)
    }

    /// The methods `capability` (e.g. `"log.parse@1"`) exports, or `None` if the plugin does
    /// not provide it.
    pub fn methods_of(&self, capability: &str) -> Option<&[String]> {
        self.provides.get(capability).map(Vec::as_slice)
    }

    /// The name of the artifact file beneath the plugin folder: `plugin.entry`, plus the
    /// platform's library suffix for a native plugin (`libfoo` -> `libfoo.so`).
    pub fn artifact_file_name(&self) -> String {
        match self.plugin.runtime {
            RuntimeKind::Native => crate::platform::native_library_file_name(&self.plugin.entry),
            _ => self.plugin.entry.clone(),
        }
    }
}

/// Fuzz entry: parses arbitrary bytes as a manifest. Must never panic.
///
/// It also checks what [`Manifest::parse`] promises: an error is `invalid_argument` or
/// `permission_denied` and names the file, plus a field or a position (except for oversized
/// input and TOML syntax errors toml gives no span for); an accepted manifest serialised back
/// to TOML parses to the same manifest.
///
/// # Panics
///
/// Only when one of those promises is broken, which is a bug for the fuzzer to report.
pub fn fuzz_parse(bytes: &[u8]) {
    let path = Path::new("fuzz/plugin.toml");
    match Manifest::parse(bytes, path, None) {
        Ok(manifest) => {
            let text = toml::to_string(&manifest).expect("a valid manifest serialises to TOML");
            let again = Manifest::parse(text.as_bytes(), path, Some(&manifest.plugin.id))
                .unwrap_or_else(|error| panic!("a serialised manifest is refused: {error}\n{text}"));
            assert_eq!(again, manifest, "the manifest changed in a TOML round trip:\n{text}");
        }
        Err(error) => {
            assert!(
                matches!(error.code(), Code::InvalidArgument | Code::PermissionDenied),
                "unexpected code: {error}"
            );
            assert_eq!(error.file(), Some(path), "the error does not name the file: {error}");
            // Only two errors may lack both: input over the size limit, and the few TOML
            // errors toml reports without a span (its recursion limit on dotted keys).
            let unplaced = bytes.len() > MAX_MANIFEST_BYTES || error.message().starts_with("not valid TOML");
            assert!(
                error.field().is_some() || error.position().is_some() || unplaced,
                "the error names neither a field nor a position: {error}"
            );
        }
    }
}

fn too_large(len: u64) -> Error {
    Error::invalid(format!("the manifest is {len} bytes; the limit is {MAX_MANIFEST_BYTES} bytes (1 MiB)"))
}

fn empty() -> Error {
    Error::invalid(
        "the manifest is empty; it needs at least a [plugin] table with id, version, runtime and entry",
    )
    .with_field("plugin")
}

// === The raw, unvalidated shape ===
//
// Integers are read as `i64` (what TOML has) and enums as strings, so range and spelling
// errors get our messages rather than serde's. Each section's raw struct lives in its module.

/// The whole manifest as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawManifest {
    plugin: Option<RawPlugin>,
    #[serde(default)]
    provides: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    subscribes: RawSubscribes,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    permissions: RawPermissions,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    load: RawLoad,
    #[serde(default)]
    process: RawProcess,
    #[serde(default)]
    wasm: RawWasm,
}

impl Context<'_> {
    /// Validates every section, in the order of the documentation, and assembles the manifest.
    fn validate(&self, raw: RawManifest, folder_name: Option<&str>) -> Result<Manifest> {
        let plugin = self.plugin_section(raw.plugin, folder_name)?;
        self.provides(&raw.provides)?;
        let subscribes = self.subscribes(raw.subscribes)?;
        self.labels(&raw.labels)?;
        let limits = self.limits(raw.limits)?;
        let permissions = self.permissions(raw.permissions)?;
        let restart = self.restart(raw.restart)?;
        let load = self.load(raw.load, &raw.provides)?;
        let health = self.health(raw.health)?;
        let retry = self.retry(raw.retry, &raw.provides)?;
        let process = self.process(raw.process)?;
        let wasm = self.wasm(raw.wasm)?;
        Ok(Manifest {
            plugin,
            provides: raw.provides,
            subscribes,
            labels: raw.labels,
            limits,
            permissions,
            restart,
            health,
            retry,
            load,
            process,
            wasm,
        })
    }
}

#[cfg(test)]
mod tests;
