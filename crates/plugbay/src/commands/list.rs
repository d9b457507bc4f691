//! `plugbay list`: every plugin with its state, from the daemon or a folder loaded here.

use std::io::Write;

use anyhow::Context as _;
use hyper::Method;
use plugbay_core::trust::SignatureInfo;
use plugbay_core::{ErrorInfo, PluginInfo, SandboxReport, State};
use serde::Serialize;

use crate::cli::ListArgs;
use crate::client::Daemon;
use crate::commands::{Outcome, load_plugins, print_json};

/// One plugin as `--json` prints it. The command line's own shape, so it stays put when
/// the library's `PluginInfo` grows.
#[derive(Debug, Serialize)]
struct Row<'a> {
    /// The plugin id (the folder name when the manifest could not be read).
    id: &'a str,
    /// From the manifest; null when it could not be read.
    version: Option<&'a str>,
    /// From the manifest; null when it could not be read.
    runtime: Option<&'static str>,
    /// Where the plugin is in its lifecycle.
    state: State,
    /// The capabilities it provides (from the manifest).
    capabilities: &'a [String],
    /// Why it is not running: `{code, message}`, or null.
    error: Option<&'a ErrorInfo>,
    /// The plugin folder.
    folder: String,
    /// A process plugin's sandbox: `{mode, layers, missing}`; null for the other runtimes
    /// and while no instance runs.
    sandbox: Option<&'a SandboxReport>,
    /// The process ids of its running instances as the host sees them (process plugins).
    pids: &'a [u32],
    /// Its signature as the host judged it at load: `{state, signer, key_id, reason,
    /// file}`; null while it is not loaded.
    signature: Option<&'a SignatureInfo>,
}

impl<'a> From<&'a PluginInfo> for Row<'a> {
    fn from(info: &'a PluginInfo) -> Row<'a> {
        Row {
            id: &info.id,
            version: info.version.as_deref(),
            runtime: info.runtime.map(|runtime| runtime.as_str()),
            state: info.state,
            capabilities: &info.capabilities,
            error: info.error.as_ref(),
            folder: info.folder.display().to_string(),
            sandbox: info.sandbox.as_ref(),
            pids: &info.pids,
            signature: info.signature.as_ref(),
        }
    }
}

/// Runs `plugbay list`. Plugins that fail to load are listed with their error and do not
/// make the command fail.
///
/// # Errors
/// When the plugins folder cannot be read, or stdout cannot be written.
pub async fn run(args: &ListArgs) -> anyhow::Result<Outcome> {
    let (plugins, source) = match &args.plugins {
        Some(dir) => (load_plugins(dir, &args.sandbox).await?.0.plugins(), dir.display().to_string()),
        None => {
            let daemon = Daemon::new(&args.daemon.addr);
            match daemon.exchange(Method::GET, "/v1/plugins", None, &[]).await? {
                Ok((_, body)) => (
                    serde_json::from_slice(&body)
                        .context("the daemon's plugin list is not what plugbay expects")?,
                    format!("the daemon at {}", args.daemon.addr),
                ),
                Err(error) => {
                    eprintln!("error: {}", error.message);
                    return Ok(Outcome::Failed);
                }
            }
        }
    };
    let plugins: Vec<PluginInfo> = plugins;
    let rows: Vec<Row<'_>> = plugins.iter().map(Row::from).collect();
    if args.json {
        print_json(&rows)?;
    } else if rows.is_empty() {
        eprintln!("no plugins in {source}");
    } else {
        write_table(&mut std::io::stdout().lock(), &rows)?;
    }
    Ok(Outcome::Done)
}

/// Writes the rows as aligned columns under a header; a failed plugin's error follows on
/// an indented line.
fn write_table(out: &mut impl Write, rows: &[Row<'_>]) -> std::io::Result<()> {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|row| {
            let capabilities =
                if row.capabilities.is_empty() { "-".to_owned() } else { row.capabilities.join(",") };
            [
                row.id.to_owned(),
                row.version.unwrap_or("-").to_owned(),
                row.runtime.unwrap_or("-").to_owned(),
                row.state.to_string(),
                capabilities,
            ]
        })
        .collect();
    let header = ["ID", "VERSION", "RUNTIME", "STATE", "CAPABILITIES"].map(str::to_owned);
    let mut widths = header.clone().map(|title| title.len());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let write_line = |out: &mut dyn Write, line: &[String; 5]| -> std::io::Result<()> {
        let [id, version, runtime, state, capabilities] = line;
        writeln!(
            out,
            "{id:<w0$}  {version:<w1$}  {runtime:<w2$}  {state:<w3$}  {capabilities}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        )
    };
    write_line(out, &header)?;
    for (row, line) in rows.iter().zip(&cells) {
        write_line(out, line)?;
        if let Some(error) = row.error {
            writeln!(out, "    error: {}", error.message)?;
        }
        if let Some(signature) = row.signature {
            writeln!(out, "    signature: {}", signature.summary())?;
        }
        if let Some(sandbox) = row.sandbox {
            if sandbox.layers.is_empty() {
                writeln!(out, "    sandbox: {}, no layer", sandbox.mode.as_str())?;
            } else {
                writeln!(out, "    sandbox: {}", sandbox.layers.join(", "))?;
            }
            for missing in &sandbox.missing {
                writeln!(out, "    sandbox without {missing}")?;
            }
        }
    }
    out.flush()
}
