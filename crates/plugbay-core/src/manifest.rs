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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};

use crate::error::{Code, Error, Result};

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

/// The `[subscribes]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Subscribes {
    /// Topic patterns (`events.log`, `events.*`): characters from `a-z`, `0-9`, `.`, `_`,
    /// `*` and `-`, starting with a letter or digit, at most 128. Default: none.
    pub topics: Vec<String>,
}

/// The `[limits]` table. Every limit is optional; an unset one takes the host's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Per-call deadline in milliseconds, 1 to 3 600 000. Default: unset (host default).
    pub timeout_ms: Option<u64>,
    /// Calls in flight at once, 1 to 65 536. Default: unset (host default).
    pub max_concurrency: Option<u32>,
    /// Memory limit in MiB, 1 to 1 048 576. Default: unset (host default).
    pub memory_mb: Option<u64>,
    /// CPU share in percent of one core, 1 to 10 000. Default: unset (host default).
    pub cpu_percent: Option<u32>,
    /// Process/thread count limit, 1 to 1 000 000. Default: unset (host default).
    pub pids: Option<u32>,
}

/// The `[permissions]` table: sandbox grants for wasm and process plugins. Nothing is
/// granted by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Permissions {
    /// Paths, relative to the plugin folder, the plugin may read (no `..`, not absolute).
    /// Default: none.
    pub read: Vec<String>,
    /// Paths, relative to the plugin folder, the plugin may write (no `..`, not absolute).
    /// Default: none.
    pub write: Vec<String>,
    /// Whether the plugin may open network connections. Default: `false`.
    pub network: bool,
    /// Names of host environment variables passed to the plugin (`[A-Za-z_][A-Za-z0-9_]*`).
    /// Default: none.
    pub env: Vec<String>,
}

/// The `[restart]` table: what the host does when the plugin fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restart {
    /// When to restart. Default: [`RestartPolicy::OnFailure`].
    pub policy: RestartPolicy,
    /// Restarts allowed within `window_s` before the plugin is quarantined, 0 to 1000.
    /// Default: 5.
    pub max_restarts: u32,
    /// The window, in seconds, over which restarts are counted, 1 to 86 400. Default: 60.
    pub window_s: u64,
    /// Milliseconds before the first restart, 0 to 600 000; each further restart within
    /// the window waits twice as long (with up to 50% random jitter). Default: 100.
    pub backoff_ms: u64,
    /// The longest wait between restarts, in milliseconds, 0 to 3 600 000. Default: 30 000.
    pub backoff_max_ms: u64,
    /// For plugins that take snapshots of their state: milliseconds between snapshots,
    /// 0 (only on a graceful stop) or 10 to 86 400 000. The host keeps the last snapshot
    /// and restores it into the next instance, after a crash too. Default: 0.
    pub snapshot_interval_ms: u64,
}

impl Default for Restart {
    fn default() -> Restart {
        Restart {
            policy: RestartPolicy::OnFailure,
            max_restarts: 5,
            window_s: 60,
            backoff_ms: 100,
            backoff_max_ms: 30_000,
            snapshot_interval_ms: 0,
        }
    }
}

/// The `[health]` table: how the host checks that a running process plugin still answers.
/// A plugin that fails `failures` checks in a row is killed and restarted under its
/// `[restart]` policy. In-process runtimes (native, wasm) are not checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Milliseconds between checks, 0 (no checks) or 10 to 3 600 000. Default: 5 000.
    pub interval_ms: u64,
    /// Milliseconds one check may take, 1 to 600 000. Default: 1 000.
    pub timeout_ms: u64,
    /// Failed checks in a row that make the plugin unhealthy, 1 to 100. Default: 3.
    pub failures: u32,
}

impl Default for Health {
    fn default() -> Health {
        Health { interval_ms: 5_000, timeout_ms: 1_000, failures: 3 }
    }
}

/// The `[retry]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Methods that are safe to run twice: when the instance serving such a call dies, the
    /// host retries the call once on another running instance. Every name must be a method
    /// in `[provides]`. Default: none (a call is never retried).
    pub idempotent: Vec<String>,
}

/// When the host restarts a plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never; a failed plugin stays failed.
    Never,
    /// After a failure (crash, failed init), not after a clean stop. The default.
    #[default]
    OnFailure,
    /// Whenever the plugin stops, unless the host stopped it.
    Always,
}

impl RestartPolicy {
    /// The manifest spelling: `never`, `on-failure` or `always`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[process]` table: how the process runtime runs the plugin's program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessSettings {
    /// How many processes (instances) to run; calls are spread across them. 1 to 64.
    /// Default: 1.
    pub replicas: u32,
    /// Milliseconds from spawning the program to its init returning, 1 to 600 000.
    /// Default: 10 000.
    pub start_timeout_ms: u64,
    /// Milliseconds the program has to exit after shutdown before its process group is
    /// killed, 0 to 600 000. Default: 5 000.
    pub shutdown_grace_ms: u64,
    /// Arguments passed to the program (each at most 4096 bytes, no NUL). Default: none.
    pub args: Vec<String>,
    /// Which transports the host offers the program. Default: [`ProcessTransport::Auto`].
    pub transport: ProcessTransport,
}

/// The transports a process plugin may be offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessTransport {
    /// gRPC, and the lean framed transport for programs that speak it (the Rust SDK).
    #[default]
    Auto,
    /// gRPC only.
    Grpc,
}

impl Default for ProcessSettings {
    fn default() -> ProcessSettings {
        ProcessSettings {
            replicas: 1,
            start_timeout_ms: 10_000,
            shutdown_grace_ms: 5_000,
            args: Vec::new(),
            transport: ProcessTransport::Auto,
        }
    }
}

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

fn serialize_display<T: fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_str(value)
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
// errors get our messages rather than serde's.

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawPlugin {
    id: Option<String>,
    version: Option<String>,
    runtime: Option<String>,
    entry: Option<String>,
    abi: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawSubscribes {
    topics: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawLimits {
    timeout_ms: Option<i64>,
    max_concurrency: Option<i64>,
    memory_mb: Option<i64>,
    cpu_percent: Option<i64>,
    pids: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawPermissions {
    read: Vec<String>,
    write: Vec<String>,
    network: bool,
    env: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawRestart {
    policy: Option<String>,
    max_restarts: Option<i64>,
    window_s: Option<i64>,
    backoff_ms: Option<i64>,
    backoff_max_ms: Option<i64>,
    snapshot_interval_ms: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawHealth {
    interval_ms: Option<i64>,
    timeout_ms: Option<i64>,
    failures: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawRetry {
    idempotent: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
struct RawLoad {
    lazy: bool,
    idle_timeout_ms: Option<i64>,
    smoke_method: Option<String>,
    smoke_payload: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawProcess {
    replicas: Option<i64>,
    start_timeout_ms: Option<i64>,
    shutdown_grace_ms: Option<i64>,
    #[serde(default)]
    args: Vec<String>,
    transport: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawWasm {
    instance: Option<String>,
}

// === Errors located in the document ===

/// One step of a field path: a table key or an array index.
#[derive(Debug, Clone, Copy)]
enum Seg<'s> {
    Key(&'s str),
    Index(usize),
}

/// Which span of a located field an error points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The key (for a bad key, e.g. a capability name).
    Key,
    /// The value.
    Value,
}

/// A problem with one value: its code (InvalidArgument unless it escapes the folder) and a
/// message that says what is allowed.
type Problem = (Code, String);

fn invalid(message: impl Into<String>) -> Problem {
    (Code::InvalidArgument, message.into())
}

struct Context<'a> {
    path: &'a Path,
    text: &'a str,
    doc: &'a DeTable<'a>,
    plugin: Option<String>,
}

impl Context<'_> {
    /// An error about `field`, at the span of its key or value, or failing that at the nearest
    /// enclosing table found in the document.
    fn error(&self, field: &[Seg<'_>], at: At, (code, message): Problem) -> Error {
        let span = (0..=field.len()).rev().find_map(|len| {
            let (key, value) = locate(self.doc, &field[..len])?;
            Some(if at == At::Key && len == field.len() { key } else { value })
        });
        self.located(field, span, code, message)
    }

    fn located(&self, field: &[Seg<'_>], span: Option<Range<usize>>, code: Code, message: String) -> Error {
        let mut error = Error::new(code, message).with_file(self.path);
        if !field.is_empty() {
            error = error.with_field(field_name(field));
        }
        if let Some(span) = span {
            let (line, column) = line_col(self.text, span.start);
            error = error.with_position(line, column);
        }
        match &self.plugin {
            Some(plugin) => error.with_plugin(plugin.as_str()),
            None => error,
        }
    }

    /// Turns a serde error (unknown key, wrong type) into ours, with the full field path.
    fn serde_error(&self, error: &serde_path_to_error::Error<toml::de::Error>) -> Error {
        let mut field: Vec<Seg<'_>> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.as_str())),
                serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.as_str())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let inner = error.inner();
        let span = inner.span();
        // For an unknown key the path ends at its table; add the key, found by its span (or,
        // failing that, by the name in serde's message).
        let mut unknown_key = None;
        if let Some(rest) = inner.message().strip_prefix("unknown field `") {
            let from_span = span.as_ref().and_then(|span| {
                let table = match locate_value_of(self.doc, &field)? {
                    Holder::Root(table) | Holder::Value(DeValue::Table(table)) => table,
                    Holder::Value(_) => return None,
                };
                table.iter().find(|(key, _)| key.span() == *span).map(|(key, _)| key.get_ref().to_string())
            });
            unknown_key = from_span.or_else(|| rest.split_once('`').map(|(name, _)| name.to_owned()));
        }
        if let Some(key) = &unknown_key
            && !matches!(field.last(), Some(Seg::Key(last)) if last == key)
        {
            field.push(Seg::Key(key.as_str()));
        }
        let span = span.or_else(|| locate(self.doc, &field).map(|(_, value)| value));
        self.located(&field, span, Code::InvalidArgument, humanize(inner.message()))
    }

    fn check<T>(&self, field: &[Seg<'_>], at: At, result: Result<T, Problem>) -> Result<T> {
        result.map_err(|problem| self.error(field, at, problem))
    }

    fn validate(&self, raw: RawManifest, folder_name: Option<&str>) -> Result<Manifest> {
        use Seg::{Index, Key};

        let Some(plugin) = raw.plugin else {
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
        let abi = match plugin.abi {
            None => 1,
            Some(abi) => self.check(&[Key("plugin"), Key("abi")], At::Value, in_range(abi, 1, u32::MAX))?,
        };

        for (capability, methods) in &raw.provides {
            let field = [Key("provides"), Key(capability)];
            self.check(&field, At::Key, check_capability(capability))?;
            if methods.is_empty() {
                return Err(self.error(
                    &field,
                    At::Value,
                    invalid(format!("capability {} lists no methods; {METHOD_RULE}", quote(capability))),
                ));
            }
            let mut seen = BTreeSet::new();
            for (index, method) in methods.iter().enumerate() {
                let field = [Key("provides"), Key(capability), Index(index)];
                self.check(&field, At::Value, check_method(method))?;
                if !seen.insert(method.as_str()) {
                    return Err(self.error(
                        &field,
                        At::Value,
                        invalid(format!(
                            "method {} is listed twice for capability {}; list each method once",
                            quote(method),
                            quote(capability)
                        )),
                    ));
                }
            }
        }

        for (index, topic) in raw.subscribes.topics.iter().enumerate() {
            self.check(&[Key("subscribes"), Key("topics"), Index(index)], At::Value, check_topic(topic))?;
        }

        for (key, value) in &raw.labels {
            let field = [Key("labels"), Key(key)];
            self.check(&field, At::Key, check_label_key(key))?;
            self.check(&field, At::Value, check_label_value(value))?;
        }

        let limit = |name: &'static str, value: Option<i64>, max: u32| -> Result<Option<u32>> {
            value
                .map(|value| self.check(&[Key("limits"), Key(name)], At::Value, in_range(value, 1, max)))
                .transpose()
        };
        let limits = Limits {
            timeout_ms: limit("timeout_ms", raw.limits.timeout_ms, 3_600_000)?.map(u64::from),
            max_concurrency: limit("max_concurrency", raw.limits.max_concurrency, 65_536)?,
            memory_mb: limit("memory_mb", raw.limits.memory_mb, 1_048_576)?.map(u64::from),
            cpu_percent: limit("cpu_percent", raw.limits.cpu_percent, 10_000)?,
            pids: limit("pids", raw.limits.pids, 1_000_000)?,
        };

        for (name, paths) in [("read", &raw.permissions.read), ("write", &raw.permissions.write)] {
            for (index, path) in paths.iter().enumerate() {
                self.check(
                    &[Key("permissions"), Key(name), Index(index)],
                    At::Value,
                    check_relative_path(path, MAX_PERMISSION_PATH_CHARS),
                )?;
            }
        }
        for (index, name) in raw.permissions.env.iter().enumerate() {
            self.check(&[Key("permissions"), Key("env"), Index(index)], At::Value, check_env(name))?;
        }

        let defaults = Restart::default();
        let policy = match &raw.restart.policy {
            None => defaults.policy,
            Some(policy) => self.check(&[Key("restart"), Key("policy")], At::Value, parse_policy(policy))?,
        };
        let max_restarts = match raw.restart.max_restarts {
            None => defaults.max_restarts,
            Some(value) => {
                self.check(&[Key("restart"), Key("max_restarts")], At::Value, in_range(value, 0, 1000))?
            }
        };
        let window_s = match raw.restart.window_s {
            None => defaults.window_s,
            Some(value) => u64::from(self.check(
                &[Key("restart"), Key("window_s")],
                At::Value,
                in_range(value, 1, 86_400),
            )?),
        };

        let number = |table: &'static str,
                      name: &'static str,
                      value: Option<i64>,
                      min: u32,
                      max: u32,
                      default: u64| {
            match value {
                None => Ok(default),
                Some(value) => {
                    self.check(&[Key(table), Key(name)], At::Value, in_range(value, min, max)).map(u64::from)
                }
            }
        };
        let backoff_ms =
            number("restart", "backoff_ms", raw.restart.backoff_ms, 0, 600_000, defaults.backoff_ms)?;
        let backoff_max_ms = number(
            "restart",
            "backoff_max_ms",
            raw.restart.backoff_max_ms,
            0,
            3_600_000,
            defaults.backoff_max_ms,
        )?;
        let snapshot_interval_ms =
            number("restart", "snapshot_interval_ms", raw.restart.snapshot_interval_ms, 0, 86_400_000, 0)?;
        if (1..10).contains(&snapshot_interval_ms) {
            return Err(self.error(
                &[Key("restart"), Key("snapshot_interval_ms")],
                At::Value,
                invalid(format!(
                    "{snapshot_interval_ms} is too short; use 0 (only on stop) or 10 to 86400000"
                )),
            ));
        }
        let idle_timeout_ms = number("load", "idle_timeout_ms", raw.load.idle_timeout_ms, 0, 86_400_000, 0)?;
        if (1..100).contains(&idle_timeout_ms) {
            return Err(self.error(
                &[Key("load"), Key("idle_timeout_ms")],
                At::Value,
                invalid(format!("{idle_timeout_ms} is too short; use 0 (never) or 100 to 86400000")),
            ));
        }
        if let Some(method) = &raw.load.smoke_method
            && !raw.provides.values().any(|methods| methods.contains(method))
        {
            return Err(self.error(
                &[Key("load"), Key("smoke_method")],
                At::Value,
                invalid(format!("method {} is not listed in [provides]", quote(method))),
            ));
        }
        let health_defaults = Health::default();
        let interval_ms = number(
            "health",
            "interval_ms",
            raw.health.interval_ms,
            0,
            3_600_000,
            health_defaults.interval_ms,
        )?;
        if (1..10).contains(&interval_ms) {
            return Err(self.error(
                &[Key("health"), Key("interval_ms")],
                At::Value,
                invalid(format!("{interval_ms} is too short; use 0 (no checks) or 10 to 3600000")),
            ));
        }
        let health = Health {
            interval_ms,
            timeout_ms: number(
                "health",
                "timeout_ms",
                raw.health.timeout_ms,
                1,
                600_000,
                health_defaults.timeout_ms,
            )?,
            failures: number(
                "health",
                "failures",
                raw.health.failures,
                1,
                100,
                u64::from(health_defaults.failures),
            )? as u32,
        };
        for (index, method) in raw.retry.idempotent.iter().enumerate() {
            if !raw.provides.values().any(|methods| methods.contains(method)) {
                return Err(self.error(
                    &[Key("retry"), Key("idempotent"), Index(index)],
                    At::Value,
                    invalid(format!("method {} is not listed in [provides]", quote(method))),
                ));
            }
        }

        let process_defaults = ProcessSettings::default();
        let setting =
            |name: &'static str, value: Option<i64>, min: u32, max: u32, default: u64| -> Result<u64> {
                match value {
                    None => Ok(default),
                    Some(value) => self
                        .check(&[Key("process"), Key(name)], At::Value, in_range(value, min, max))
                        .map(u64::from),
                }
            };
        let process = ProcessSettings {
            replicas: setting("replicas", raw.process.replicas, 1, 64, u64::from(process_defaults.replicas))?
                as u32,
            start_timeout_ms: setting(
                "start_timeout_ms",
                raw.process.start_timeout_ms,
                1,
                600_000,
                process_defaults.start_timeout_ms,
            )?,
            shutdown_grace_ms: setting(
                "shutdown_grace_ms",
                raw.process.shutdown_grace_ms,
                0,
                600_000,
                process_defaults.shutdown_grace_ms,
            )?,
            args: raw.process.args,
            transport: match raw.process.transport.as_deref() {
                None | Some("auto") => ProcessTransport::Auto,
                Some("grpc") => ProcessTransport::Grpc,
                Some(other) => {
                    return Err(self.error(
                        &[Key("process"), Key("transport")],
                        At::Value,
                        invalid(format!("transport {} is not one of: auto, grpc", quote(other))),
                    ));
                }
            },
        };
        for (index, arg) in process.args.iter().enumerate() {
            let ok = arg.len() <= 4096 && !arg.contains('\0');
            if !ok {
                return Err(self.error(
                    &[Key("process"), Key("args"), Index(index)],
                    At::Value,
                    invalid("each argument must be at most 4096 characters without NUL".to_owned()),
                ));
            }
        }

        let wasm = WasmSettings {
            instance: match raw.wasm.instance.as_deref() {
                None | Some("persistent") => WasmInstanceMode::Persistent,
                Some("per-call") => WasmInstanceMode::PerCall,
                Some(other) => {
                    return Err(self.error(
                        &[Key("wasm"), Key("instance")],
                        At::Value,
                        invalid(format!("instance {} is not one of: persistent, per-call", quote(other))),
                    ));
                }
            },
        };

        Ok(Manifest {
            plugin: PluginSection { id, version, runtime, entry, abi },
            provides: raw.provides,
            subscribes: Subscribes { topics: raw.subscribes.topics },
            labels: raw.labels,
            limits,
            permissions: Permissions {
                read: raw.permissions.read,
                write: raw.permissions.write,
                network: raw.permissions.network,
                env: raw.permissions.env,
            },
            restart: Restart {
                policy,
                max_restarts,
                window_s,
                backoff_ms,
                backoff_max_ms,
                snapshot_interval_ms,
            },
            health,
            retry: Retry { idempotent: raw.retry.idempotent },
            load: Load {
                lazy: raw.load.lazy,
                idle_timeout_ms,
                smoke_method: raw.load.smoke_method,
                smoke_payload: raw.load.smoke_payload,
            },
            process,
            wasm,
        })
    }
}

/// serde's wording for the raw types, in TOML's words.
fn humanize(message: &str) -> String {
    message
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
}

/// The dotted field name: `plugin.id`, `provides."log.parse@1"[0]`.
fn field_name(field: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in field {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare =
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Seg::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// What a path leads to: the document itself, or a value in it.
enum Holder<'d, 'i> {
    Root(&'d DeTable<'i>),
    Value(&'d DeValue<'i>),
}

/// The spans of the key and the value at `field`.
fn locate(doc: &DeTable<'_>, field: &[Seg<'_>]) -> Option<(Range<usize>, Range<usize>)> {
    let mut spans = None;
    let mut holder = Holder::Root(doc);
    for seg in field {
        let (key_span, value) = step(holder, *seg)?;
        spans = Some((key_span, value.span()));
        holder = Holder::Value(value.get_ref());
    }
    spans
}

fn locate_value<'d, 'i>(doc: &'d DeTable<'i>, field: &[Seg<'_>]) -> Option<&'d DeValue<'i>> {
    match locate_value_of(doc, field)? {
        Holder::Value(value) => Some(value),
        Holder::Root(_) => None,
    }
}

fn locate_value_of<'d, 'i>(doc: &'d DeTable<'i>, field: &[Seg<'_>]) -> Option<Holder<'d, 'i>> {
    let mut holder = Holder::Root(doc);
    for seg in field {
        holder = Holder::Value(step(holder, *seg)?.1.get_ref());
    }
    Some(holder)
}

fn step<'d, 'i>(
    holder: Holder<'d, 'i>,
    seg: Seg<'_>,
) -> Option<(Range<usize>, &'d toml::Spanned<DeValue<'i>>)> {
    let table = match (holder, seg) {
        (Holder::Root(table), Seg::Key(_)) | (Holder::Value(DeValue::Table(table)), Seg::Key(_)) => table,
        (Holder::Value(DeValue::Array(array)), Seg::Index(index)) => {
            let value = array.get(index)?;
            return Some((value.span(), value));
        }
        _ => return None,
    };
    let Seg::Key(name) = seg else { return None };
    table.iter().find(|(key, _)| key.get_ref() == name).map(|(key, value)| (key.span(), value))
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// `value` in quotes, shortened to 64 characters, with control characters escaped.
fn quote(value: &str) -> String {
    const SHOWN: usize = 64;
    if value.chars().count() > SHOWN {
        let shown: String = value.chars().take(SHOWN).collect();
        format!("{shown:?}... ({} characters)", value.chars().count())
    } else {
        format!("{value:?}")
    }
}

// === The rules ===

const ID_RULE: &str = "a plugin id is 1 to 64 characters from a-z, 0-9 and '-', not starting or \
                       ending with '-' (e.g. \"log-processor\")";
const VERSION_RULE: &str = "a version is a semver version such as \"1.2.0\"";
const RUNTIME_RULE: &str = "the runtime is one of \"native\", \"wasm\" or \"process\"";
const ENTRY_RULE: &str = "the entry is the artifact's path relative to the plugin folder \
                          (e.g. \"liblog_processor\")";
const METHOD_RULE: &str = "a capability maps to a non-empty array of method names \
                           (e.g. [\"parse\", \"parse_batch\"])";
const MAX_ENTRY_CHARS: usize = 255;
const MAX_PERMISSION_PATH_CHARS: usize = 4096;
const MAX_NAME_CHARS: usize = 128;

/// Whether `value` is a non-empty run of `rest` characters starting with a `first` one.
fn matches(value: &str, first: impl Fn(char) -> bool, rest: impl Fn(char) -> bool) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(first) && chars.all(rest)
}

fn lower_or_digit(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Checks that `id` is a valid plugin id (the rule `plugin.id` follows), e.g. for an id
/// that arrives over an API before any folder is looked at.
///
/// # Errors
/// `invalid_argument` saying what is allowed.
pub fn validate_id(id: &str) -> Result<()> {
    check_id(id).map_err(|(code, message)| Error::new(code, message))
}

fn check_id(id: &str) -> Result<(), Problem> {
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

fn parse_policy(policy: &str) -> Result<RestartPolicy, Problem> {
    [RestartPolicy::Never, RestartPolicy::OnFailure, RestartPolicy::Always]
        .into_iter()
        .find(|known| known.as_str() == policy)
        .ok_or_else(|| {
            invalid(format!(
                "restart policy {} is not known; use \"never\", \"on-failure\" or \"always\"",
                quote(policy)
            ))
        })
}

/// A path relative to the plugin folder that stays inside it. Escaping (absolute, drive,
/// `..`) is [`Code::PermissionDenied`]; other problems are [`Code::InvalidArgument`].
fn check_relative_path(path: &str, max_chars: usize) -> Result<(), Problem> {
    const RULE: &str = "use a path relative to the plugin folder, with '/' between parts and no '..' \
                        (e.g. \"bin/plugin\")";
    if path.is_empty() {
        return Err(invalid(format!("the path is empty; {RULE}")));
    }
    if path.contains('\0') {
        return Err(invalid(format!("path {} contains a NUL character; {RULE}", quote(path))));
    }
    let bytes = path.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if path.starts_with('/') || path.starts_with('\\') || drive {
        return Err((
            Code::PermissionDenied,
            format!("path {} is absolute and escapes the plugin folder; {RULE}", quote(path)),
        ));
    }
    if path.split(['/', '\\']).any(|part| part == "..") {
        return Err((
            Code::PermissionDenied,
            format!("path {} uses '..' and may escape the plugin folder; {RULE}", quote(path)),
        ));
    }
    if path.contains('\\') {
        return Err(invalid(format!("path {} contains a backslash; {RULE}", quote(path))));
    }
    let chars = path.chars().count();
    if chars > max_chars {
        return Err(invalid(format!("the path is {chars} characters; the limit is {max_chars}")));
    }
    if path.chars().any(char::is_control) {
        return Err(invalid(format!("path {} contains a control character; {RULE}", quote(path))));
    }
    Ok(())
}

fn check_capability(capability: &str) -> Result<(), Problem> {
    let ok = capability.len() <= MAX_NAME_CHARS
        && capability.split_once('@').is_some_and(|(name, major)| {
            matches(name, lower_or_digit, |c| lower_or_digit(c) || matches!(c, '.' | '_' | '-'))
                && matches(major, |c| c.is_ascii_digit(), |c| c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "capability {} is not allowed; a capability is \"name@major\": a name from a-z, 0-9, \
             '.', '_' and '-' starting with a letter or digit, '@', and a major version number, \
             at most {MAX_NAME_CHARS} characters (e.g. \"log.parse@1\")",
            quote(capability)
        )))
    }
}

fn check_method(method: &str) -> Result<(), Problem> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if method.len() <= MAX_NAME_CHARS && matches(method, word, |c| word(c) || matches!(c, '.' | '-')) {
        Ok(())
    } else {
        Err(invalid(format!(
            "method {} is not allowed; a method name is 1 to {MAX_NAME_CHARS} characters from \
             A-Z, a-z, 0-9, '_', '.' and '-', starting with a letter, digit or '_' (e.g. \"parse_batch\")",
            quote(method)
        )))
    }
}

fn check_topic(topic: &str) -> Result<(), Problem> {
    let ok = topic.len() <= MAX_NAME_CHARS
        && matches(topic, lower_or_digit, |c| lower_or_digit(c) || matches!(c, '.' | '_' | '*' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "topic {} is not allowed; a topic is 1 to {MAX_NAME_CHARS} characters from a-z, 0-9, \
             '.', '_', '*' and '-', starting with a letter or digit (e.g. \"events.log\")",
            quote(topic)
        )))
    }
}

fn check_label_key(key: &str) -> Result<(), Problem> {
    let ok = key.len() <= 63
        && matches(key, lower_or_digit, |c| lower_or_digit(c) || matches!(c, '.' | '_' | '/' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "label key {} is not allowed; a label key is 1 to 63 characters from a-z, 0-9, '.', \
             '_', '/' and '-', starting with a letter or digit (e.g. \"region\")",
            quote(key)
        )))
    }
}

fn check_label_value(value: &str) -> Result<(), Problem> {
    let chars = value.chars().count();
    if chars > 256 {
        return Err(invalid(format!("the label value is {chars} characters; the limit is 256")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "label value {} contains a control character; label values are printable text",
            quote(value)
        )));
    }
    Ok(())
}

fn check_env(name: &str) -> Result<(), Problem> {
    let first = |c: char| c.is_ascii_alphabetic() || c == '_';
    if name.len() <= MAX_NAME_CHARS && matches(name, first, |c| first(c) || c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(invalid(format!(
            "environment variable name {} is not allowed; use A-Z, a-z, 0-9 and '_', not \
             starting with a digit, at most {MAX_NAME_CHARS} characters (e.g. \"TZ\")",
            quote(name)
        )))
    }
}

/// `value` as a `u32` if it is in `min..=max`.
fn in_range(value: i64, min: u32, max: u32) -> Result<u32, Problem> {
    u32::try_from(value)
        .ok()
        .filter(|value| (min..=max).contains(value))
        .ok_or_else(|| invalid(format!("{value} is out of range; allowed: {min} to {max}")))
}

#[cfg(test)]
mod tests;
