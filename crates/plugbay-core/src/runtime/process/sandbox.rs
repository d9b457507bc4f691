//! The sandbox of a process plugin as the host's [`SandboxMode`] decides it: which layers
//! to ask for, what to do when one cannot be built, and the plugin's grants and limits
//! from its manifest (docs/sandbox.md).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use plugbay_sandbox::{Layer, Limits, Prepared, Sandboxing, Spec};

use crate::config::SandboxMode;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::runtime::SandboxReport;

/// The settings that choose the mode, named in errors.
const MODE_SETTINGS: &str = "HostConfig::sandbox, [sandbox] mode in plugbay.toml, --sandbox";

/// What this machine offers, probed once per process (the first host that needs it), with
/// this run's cgroup parent.
pub(crate) fn sandboxing() -> &'static Sandboxing {
    static SANDBOXING: OnceLock<Sandboxing> = OnceLock::new();
    SANDBOXING.get_or_init(Sandboxing::new)
}

/// A prepared sandbox and what it reports.
pub(crate) struct Planned {
    pub(crate) prepared: Prepared,
    pub(crate) report: SandboxReport,
}

/// Prepares the sandbox of one program of `manifest` (folder `folder`, private directory
/// `private_dir`) under `mode`; `None` when the mode is off.
pub(crate) fn plan(
    mode: SandboxMode,
    shared: &[PathBuf],
    manifest: &Manifest,
    folder: &Path,
    private_dir: &Path,
) -> Result<Option<Planned>> {
    if mode == SandboxMode::Off {
        return Ok(None);
    }
    let sandboxing = sandboxing();
    let network = manifest.permissions.network;
    let mut layers: Vec<Layer> =
        Layer::ALL.into_iter().filter(|layer| !(network && *layer == Layer::NetworkNamespace)).collect();
    let mut missing = Vec::new();
    for layer in layers.clone() {
        if let Err(why) = sandboxing.offers(layer) {
            if mode == SandboxMode::Required {
                return Err(unavailable(layer, &why));
            }
            missing.push(format!("{layer}: {why}"));
            layers.retain(|kept| *kept != layer);
        }
    }
    for path in shared {
        if !path.exists() {
            return Err(Error::precondition(format!(
                "{} is to be shown to every sandboxed program (HostConfig::sandbox_read, [sandbox] read, \
                 --sandbox-read) but does not exist",
                path.display()
            )));
        }
    }
    let write = grants(&manifest.permissions.write, folder, "permissions.write")?;
    if sandboxing.runs_as_nobody() {
        check_writable(&write, plugbay_sandbox::NOBODY_UID, "permissions.write")?;
    }
    let spec = Spec {
        name: cgroup_name(&manifest.plugin.id),
        layers,
        folder: folder.to_path_buf(),
        private_dir: private_dir.to_path_buf(),
        read: grants(&manifest.permissions.read, folder, "permissions.read")?,
        write,
        shared: shared.to_vec(),
        syscalls: manifest
            .permissions
            .syscalls
            .iter()
            .filter_map(|name| plugbay_sandbox::grantable_syscall(name).ok().flatten())
            .collect(),
        network,
        limits: Limits {
            memory_bytes: manifest.limits.memory_mb.map(|mb| mb << 20),
            cpu_percent: manifest.limits.cpu_percent,
            pids: manifest.limits.pids,
            ..Limits::default()
        },
    };
    let mut spec = spec;
    loop {
        match sandboxing.prepare(&spec) {
            Ok(prepared) => {
                let layers = prepared.layers().iter().map(|layer| layer.name().to_owned()).collect();
                let report = SandboxReport { mode, layers, missing };
                return Ok(Some(Planned { prepared, report }));
            }
            Err(error) => match error.layer {
                Some(layer) if mode == SandboxMode::BestEffort => {
                    missing.push(format!("{layer}: {}", error.message));
                    spec.layers.retain(|kept| *kept != layer);
                }
                Some(layer) => return Err(unavailable(layer, &error.message)),
                None => return Err(Error::precondition(error.to_string())),
            },
        }
    }
}

/// The error of a required layer this host cannot build.
fn unavailable(layer: Layer, why: &str) -> Error {
    Error::precondition(format!(
        "the sandbox's {layer} layer cannot be built: {why}. The host's sandbox is required; set it to \
         best-effort to start plugins with the layers that work, or off ({MODE_SETTINGS})"
    ))
}

/// A cgroup name unique in this process: the plugin id and a counter.
fn cgroup_name(plugin: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{plugin}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The manifest's grants (relative to the plugin folder) as absolute, existing paths
/// inside the folder: a symbolic link out of it is refused, as the manifest's `..` is.
fn grants(paths: &[String], folder: &Path, field: &str) -> Result<Vec<PathBuf>> {
    let root = folder.canonicalize().map_err(|error| {
        Error::precondition(format!("cannot resolve the plugin folder {}: {error}", folder.display()))
    })?;
    paths
        .iter()
        .enumerate()
        .map(|(index, path)| {
            let field = format!("{field}[{index}]");
            let joined = folder.join(path);
            let resolved = joined.canonicalize().map_err(|error| {
                Error::precondition(format!(
                    "{path} ({}) cannot be shown to the sandbox: {error}",
                    joined.display()
                ))
                .with_field(field.clone())
            })?;
            if !resolved.starts_with(&root) {
                return Err(Error::denied(format!(
                    "{path} leads out of the plugin folder (to {}); grants stay inside it",
                    resolved.display()
                ))
                .with_field(field));
            }
            Ok(resolved)
        })
        .collect()
}

/// Checks that the program, running as `uid` outside its user namespace, can write each
/// write grant (a root host runs it as `nobody`, which a root-owned folder refuses).
fn check_writable(grants: &[PathBuf], uid: u32, field: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for (index, path) in grants.iter().enumerate() {
        let Ok(metadata) = std::fs::metadata(path) else { continue };
        let mode = metadata.mode();
        // The sandbox's gid is the same number (nobody's group, nogroup, is 65534).
        let writable = if metadata.uid() == uid {
            mode & 0o200 != 0
        } else if metadata.gid() == uid {
            mode & 0o020 != 0
        } else {
            mode & 0o002 != 0
        };
        if !writable {
            return Err(Error::precondition(format!(
                "{} is not writable by the sandbox's uid {uid} (owner uid {}, mode {:o}): give it to that \
                 user (chown {uid} {}) or make it writable for it",
                path.display(),
                metadata.uid(),
                mode & 0o7777,
                path.display()
            ))
            .with_field(format!("{field}[{index}]")));
        }
    }
    Ok(())
}
