//! `plugbay inspect`: show one plugin folder's manifest, then load the plugin alone, as the
//! host would, and report whether it starts.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use plugbay_core::manifest::MANIFEST_FILE;
use plugbay_core::runtime::Artifact;
use plugbay_core::runtime::native::{self, NativeInfo};
use plugbay_core::{Code, ErrorInfo, Host, HostConfig, Manifest, RuntimeKind, State, platform, safe_fs};
use serde::Serialize;
use serde_json::Value;

use crate::cli::InspectArgs;
use crate::commands::{Outcome, print_json};

/// Everything `inspect` found out, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    /// The plugin folder (absolute).
    folder: String,
    /// The native ABI version this build of the host speaks.
    host_abi: u32,
    /// The manifest: its path, and its content or why it was refused.
    manifest: ManifestReport,
    /// The artifact the manifest names; null when the manifest was refused.
    artifact: Option<ArtifactReport>,
    /// The result of loading the plugin; null when the manifest was refused.
    load: Option<LoadReport>,
    /// For a native plugin: its table (ABI version, flags, entries, describe), or why it
    /// cannot be read; null for other runtimes or a refused manifest.
    native: Option<NativeReport>,
}

/// The native part of a [`Report`].
#[derive(Debug, Serialize)]
struct NativeReport {
    /// The table, when the library could be opened and checked.
    table: Option<NativeInfo>,
    /// Why it could not, or null.
    error: Option<ErrorInfo>,
}

/// The manifest part of a [`Report`].
#[derive(Debug, Serialize)]
struct ManifestReport {
    /// `<folder>/plugin.toml`.
    path: String,
    /// The manifest as the host reads it (defaults filled in); null when refused.
    content: Option<Manifest>,
    /// Why the manifest was refused, or null.
    error: Option<ErrorInfo>,
}

/// The artifact part of a [`Report`].
#[derive(Debug, Serialize)]
struct ArtifactReport {
    /// The file the host loads (for native plugins: `entry` plus the platform's suffix).
    path: String,
    /// Its size in bytes; null when there is no such file.
    size: Option<u64>,
}

/// The load part of a [`Report`].
#[derive(Debug, Serialize)]
struct LoadReport {
    /// The plugin's state after loading: `running` when it started.
    state: State,
    /// The capabilities it provides; when running, its describe matched them.
    capabilities: Vec<String>,
    /// Why it did not start, or null.
    error: Option<ErrorInfo>,
}

impl Report {
    /// Whether the manifest was accepted and the plugin started.
    fn is_ok(&self) -> bool {
        self.manifest.error.is_none() && self.load.as_ref().is_some_and(|load| load.state == State::Running)
    }
}

/// Runs `plugbay inspect`: [`Outcome::Done`] when the manifest is valid and the plugin
/// starts, [`Outcome::Failed`] otherwise (the report says why).
///
/// # Errors
/// When the path does not exist or is neither a folder nor a plugin.toml, or stdout cannot
/// be written.
pub async fn run(args: &InspectArgs) -> anyhow::Result<Outcome> {
    let folder = plugin_folder(&args.path)?;
    let Some(name) = folder.file_name().and_then(|name| name.to_str()).map(str::to_owned) else {
        bail!("{}: the plugin folder's name is not UTF-8, so it cannot be a plugin id", folder.display());
    };
    let manifest_path = folder.join(MANIFEST_FILE);
    let mut report = Report {
        folder: folder.display().to_string(),
        host_abi: plugbay_abi::ABI_VERSION,
        manifest: ManifestReport { path: manifest_path.display().to_string(), content: None, error: None },
        artifact: None,
        load: None,
        native: None,
    };
    match Manifest::read(&manifest_path, Some(&name)) {
        Err(error) => report.manifest.error = Some(ErrorInfo::from(&error)),
        Ok(manifest) => {
            report.artifact = Some(artifact(&folder, &manifest));
            if manifest.plugin.runtime == RuntimeKind::Native {
                report.native = Some(native_table(&folder, &manifest));
            }
            report.manifest.content = Some(manifest);
            report.load = Some(load_alone(&folder).await?);
        }
    }
    if args.json {
        print_json(&report)?;
    } else {
        write_human(&mut std::io::stdout().lock(), &report)?;
    }
    Ok(if report.is_ok() { Outcome::Done } else { Outcome::Failed })
}

/// The absolute plugin folder for `path`, a folder or the plugin.toml inside one. The
/// path is made absolute without resolving symbolic links, so the folder keeps the name
/// it has in its plugins folder.
fn plugin_folder(path: &Path) -> anyhow::Result<PathBuf> {
    let metadata = std::fs::metadata(path).with_context(|| format!("cannot inspect {}", path.display()))?;
    let absolute = std::path::absolute(path).with_context(|| format!("cannot inspect {}", path.display()))?;
    // Rebuilding from components drops `.` and a trailing `/`.
    let absolute: PathBuf = absolute.components().collect();
    if metadata.is_dir() {
        return Ok(absolute);
    }
    match absolute.parent() {
        Some(folder) if absolute.file_name().is_some_and(|name| name == MANIFEST_FILE) => {
            Ok(folder.to_owned())
        }
        _ => bail!("{} is neither a plugin folder nor a {MANIFEST_FILE}", path.display()),
    }
}

/// The artifact the host will read for `manifest`, and its size if it exists.
fn artifact(folder: &Path, manifest: &Manifest) -> ArtifactReport {
    let file_name = match manifest.plugin.runtime {
        RuntimeKind::Native => platform::native_library_file_name(&manifest.plugin.entry),
        _ => manifest.plugin.entry.clone(),
    };
    let path = folder.join(file_name);
    let size =
        std::fs::metadata(&path).ok().filter(|metadata| metadata.is_file()).map(|metadata| metadata.len());
    ArtifactReport { path: path.display().to_string(), size }
}

/// Reads a native plugin's table the way a load does, without creating an instance.
fn native_table(folder: &Path, manifest: &Manifest) -> NativeReport {
    let file_name = platform::native_library_file_name(&manifest.plugin.entry);
    let path = folder.join(&file_name);
    let result = safe_fs::read_beneath(folder, Path::new(&file_name), 256 << 20, Code::ResourceExhausted)
        .and_then(|bytes| native::inspect(Artifact { manifest, folder, path: &path, bytes }));
    match result {
        Ok(table) => NativeReport { table: Some(table), error: None },
        Err(error) => NativeReport { table: None, error: Some(ErrorInfo::from(&error)) },
    }
}

/// Loads the plugin in `folder` into a host of its own, as `plugbay list` would, and
/// reports its state. The host (and the plugin instance) is dropped on return.
async fn load_alone(folder: &Path) -> anyhow::Result<LoadReport> {
    let plugins_dir = folder.parent().unwrap_or(folder);
    let host = Host::build(HostConfig::with_plugin_dir(plugins_dir))?;
    let result = host.load_folder(folder).await;
    let info = host.plugins().into_iter().find(|info| info.folder == folder);
    Ok(match (info, result) {
        (Some(info), _) => {
            LoadReport { state: info.state, capabilities: info.capabilities, error: info.error }
        }
        // The host records every folder it was asked to load; this is only a fallback.
        (None, result) => LoadReport {
            state: if result.is_ok() { State::Running } else { State::Failed },
            capabilities: Vec::new(),
            error: result.err().map(|error| ErrorInfo::from(&error)),
        },
    })
}

/// Width of the labels in the human report.
const LABEL: usize = 12;

/// Writes the report for people: the manifest in TOML's shape, then artifact, ABI and load.
fn write_human(out: &mut impl Write, report: &Report) -> anyhow::Result<()> {
    writeln!(out, "{:<LABEL$}{}", "folder", report.folder)?;
    let manifest = &report.manifest;
    match (&manifest.content, &manifest.error) {
        (Some(content), _) => {
            writeln!(out, "{:<LABEL$}{} (valid; as read, defaults filled in)", "manifest", manifest.path)?;
            write_tables(out, &serde_json::to_value(content)?)?;
        }
        (None, error) => {
            writeln!(out, "{:<LABEL$}{} (refused)", "manifest", manifest.path)?;
            if let Some(error) = error {
                writeln!(out, "    error: {}", error.message)?;
            }
        }
    }
    if let Some(artifact) = &report.artifact {
        let size = match artifact.size {
            Some(size) => format!("{size} bytes"),
            None => "missing".to_owned(),
        };
        writeln!(out, "{:<LABEL$}{} ({size})", "artifact", artifact.path)?;
    }
    if let Some(content) = &manifest.content {
        let abi = content.plugin.abi;
        writeln!(out, "{:<LABEL$}plugin.toml says {abi}; this host speaks {}", "abi", report.host_abi)?;
    }
    if let Some(native) = &report.native {
        match (&native.table, &native.error) {
            (Some(table), _) => {
                writeln!(
                    out,
                    "{:<LABEL$}plugbay_plugin_v1 -> ABI {}, {} bytes, flags {:#x} (thread-safe: {}, unloadable: {})",
                    "table",
                    table.abi_version,
                    table.struct_size,
                    table.flags,
                    table.thread_safe,
                    table.unloadable
                )?;
                writeln!(out, "{:<LABEL$}{}", "functions", table.functions.join(", "))?;
                writeln!(out, "{:<LABEL$}{}", "describe", serde_json::to_string(&table.description)?)?;
            }
            (None, error) => {
                writeln!(out, "{:<LABEL$}unreadable", "table")?;
                if let Some(error) = error {
                    writeln!(out, "    error: {}", error.message)?;
                }
            }
        }
    }
    if let Some(load) = &report.load {
        writeln!(out, "{:<LABEL$}{}", "load", load.state)?;
        if let Some(error) = &load.error {
            writeln!(out, "    error: {}", error.message)?;
        }
        if load.state == State::Running {
            writeln!(
                out,
                "{:<LABEL$}{} (its describe matches plugin.toml)",
                "provides",
                load.capabilities.join(",")
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The order tables and keys are shown in; any others follow in alphabetical order, so a
/// field added to the manifest shows up without a change here.
const ORDER: &[&str] = &[
    "plugin",
    "id",
    "version",
    "runtime",
    "entry",
    "abi",
    "provides",
    "subscribes",
    "labels",
    "limits",
    "permissions",
    "restart",
    "load",
];

/// Writes a manifest (as a JSON value) in TOML's shape, indented: one `[table]` per field of
/// the manifest, `key = value` lines, unset (null) values and empty tables left out.
fn write_tables(out: &mut impl Write, manifest: &Value) -> std::io::Result<()> {
    let Value::Object(tables) = manifest else {
        return writeln!(out, "  {manifest}");
    };
    for (name, table) in ordered(tables) {
        let entries: Vec<(&String, &Value)> = match table {
            Value::Object(fields) => {
                ordered(fields).into_iter().filter(|(_, value)| !value.is_null()).collect()
            }
            Value::Null => continue,
            other => {
                writeln!(out, "  {} = {}", toml_key(name), toml_value(other))?;
                continue;
            }
        };
        if entries.is_empty() {
            continue;
        }
        writeln!(out, "  [{}]", toml_key(name))?;
        for (key, value) in entries {
            writeln!(out, "  {} = {}", toml_key(key), toml_value(value))?;
        }
    }
    Ok(())
}

/// The entries of `map` in [`ORDER`], then the rest alphabetically.
fn ordered(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let rank = |key: &str| ORDER.iter().position(|known| *known == key).unwrap_or(ORDER.len());
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    entries
}

/// A TOML key: bare when it can be, quoted otherwise (`"text.transform@1"`).
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { key.to_owned() } else { Value::from(key).to_string() }
}

/// A TOML value. JSON's strings, numbers, booleans and arrays are TOML as they are;
/// objects become inline tables.
fn toml_value(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = ordered(fields)
                .into_iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| format!("{} = {}", toml_key(key), toml_value(value)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_shown_in_toml_shape() {
        let manifest = serde_json::json!({
            "provides": {"text.transform@1": ["upper", "lower"]},
            "plugin": {"version": "0.1.0", "id": "text-tools", "abi": 1},
            "limits": {"timeout_ms": null},
            "labels": {"lang": "rust"},
        });
        let mut out = Vec::new();
        write_tables(&mut out, &manifest).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  [plugin]\n  id = \"text-tools\"\n  version = \"0.1.0\"\n  abi = 1\n  [provides]\n  \
             \"text.transform@1\" = [\"upper\", \"lower\"]\n  [labels]\n  lang = \"rust\"\n"
        );
    }
}
