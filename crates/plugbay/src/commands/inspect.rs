//! `plugbay inspect`: show one plugin folder's manifest, then load the plugin alone, as the
//! host would, and report whether it starts.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use plugbay_core::manifest::MANIFEST_FILE;
use plugbay_core::{Host, HostConfig, Inspection, State};
use serde_json::Value;

use crate::cli::InspectArgs;
use crate::commands::{Outcome, print_json};

/// Runs `plugbay inspect`: [`Outcome::Done`] when the manifest is valid and the plugin
/// starts, [`Outcome::Failed`] otherwise (the report says why).
///
/// # Errors
/// When the path does not exist or is neither a folder nor a plugin.toml, or stdout cannot
/// be written.
pub async fn run(args: &InspectArgs) -> anyhow::Result<Outcome> {
    let folder = plugin_folder(&args.path)?;
    if folder.file_name().and_then(|name| name.to_str()).is_none() {
        bail!("{}: the plugin folder's name is not UTF-8, so it cannot be a plugin id", folder.display());
    }
    let plugins_dir = folder.parent().unwrap_or(&folder);
    let config = crate::commands::with_sandbox(HostConfig::with_plugin_dir(plugins_dir), &args.sandbox)?;
    let report = Host::inspect(config, &folder).await?;
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

/// Width of the labels in the human report.
const LABEL: usize = 12;

/// Writes the report for people: the manifest in TOML's shape, then artifact, ABI and load.
fn write_human(out: &mut impl Write, report: &Inspection) -> anyhow::Result<()> {
    writeln!(out, "{:<LABEL$}{}", "folder", report.folder.display())?;
    let manifest = &report.manifest;
    match (&manifest.content, &manifest.error) {
        (Some(content), _) => {
            writeln!(
                out,
                "{:<LABEL$}{} (valid; as read, defaults filled in)",
                "manifest",
                manifest.path.display()
            )?;
            write_tables(out, &serde_json::to_value(content)?)?;
        }
        (None, error) => {
            writeln!(out, "{:<LABEL$}{} (refused)", "manifest", manifest.path.display())?;
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
        writeln!(out, "{:<LABEL$}{} ({size})", "artifact", artifact.path.display())?;
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
    let load = &report.load;
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
