//! [`Host::inspect`]: load one plugin folder alone, exactly as a load does, and report what
//! each step found (manifest, artifact, native table, start), for `plugbay inspect`.

use std::path::{Path, PathBuf};

use super::Host;
use super::info::ErrorInfo;
use crate::config::HostConfig;
use crate::error::Result;
use crate::lifecycle::State;
use crate::manifest::{MANIFEST_FILE, Manifest, RuntimeKind};
use crate::runtime::native::NativeInfo;

/// What [`Host::inspect`] found out about one plugin folder.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Inspection {
    /// The plugin folder, as given.
    pub folder: PathBuf,
    /// The native ABI version this build of the host speaks.
    pub host_abi: u32,
    /// The manifest: its path, and its content or why it was refused.
    pub manifest: ManifestInspection,
    /// The artifact the manifest names; `None` when the manifest was refused.
    pub artifact: Option<ArtifactInspection>,
    /// For a native plugin: its table, or why it could not be read; `None` for the other
    /// runtimes and for a refused manifest.
    pub native: Option<NativeInspection>,
    /// How the load ended.
    pub load: LoadInspection,
}

/// The manifest part of an [`Inspection`].
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ManifestInspection {
    /// `<folder>/plugin.toml`.
    pub path: PathBuf,
    /// The manifest as the host read it (defaults filled in); `None` when refused.
    pub content: Option<Manifest>,
    /// Why the manifest was refused.
    pub error: Option<ErrorInfo>,
}

/// The artifact part of an [`Inspection`].
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ArtifactInspection {
    /// The file the host loads ([`Manifest::artifact_file_name`] beneath the folder).
    pub path: PathBuf,
    /// Its size in bytes; `None` when there is no such regular file.
    pub size: Option<u64>,
}

/// The native part of an [`Inspection`].
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct NativeInspection {
    /// The checked table, when the library was opened and accepted.
    pub table: Option<NativeInfo>,
    /// Why it was not: the load's error.
    pub error: Option<ErrorInfo>,
}

/// The load part of an [`Inspection`].
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct LoadInspection {
    /// The plugin's state after the load: `running` when it started.
    pub state: State,
    /// The capabilities it provides; when running, its describe matched them.
    pub capabilities: Vec<String>,
    /// Why it did not start.
    pub error: Option<ErrorInfo>,
}

impl Inspection {
    /// Whether the manifest was accepted and the plugin started.
    pub fn is_ok(&self) -> bool {
        self.manifest.error.is_none() && self.load.state == State::Running
    }
}

impl Host {
    /// Loads the plugin in `folder` into a host of its own built from `config` (so its
    /// plugin configuration, limits and socket settings apply), reports what each step
    /// found, and stops it again. The library, program or component is loaded once, by the
    /// same code as any load, so what the report says is what a load would do.
    ///
    /// # Errors
    /// Only when the host cannot be built from `config`; everything about the plugin,
    /// including its failure to load, is in the [`Inspection`].
    pub async fn inspect(config: HostConfig, folder: &Path) -> Result<Inspection> {
        let host = Host::build(config)?;
        let (entry, result) = host.load_folder_entry(folder).await;
        let info = entry.info();
        let (manifest, loaded) = {
            let status = entry.status.lock();
            (status.manifest.clone(), status.loaded.clone())
        };
        let load_error = result.as_ref().err().map(ErrorInfo::from);
        let load = LoadInspection { state: info.state, capabilities: info.capabilities, error: info.error };
        let artifact = manifest.as_deref().map(|manifest| {
            let path = folder.join(manifest.artifact_file_name());
            let size = std::fs::metadata(&path).ok().filter(|meta| meta.is_file()).map(|meta| meta.len());
            ArtifactInspection { path, size }
        });
        let native = manifest
            .as_deref()
            .filter(|manifest| manifest.plugin.runtime == RuntimeKind::Native)
            .map(|_| match loaded.and_then(|loaded| loaded.native_info()) {
                Some(table) => NativeInspection { table: Some(table), error: None },
                None => NativeInspection { table: None, error: load_error.clone() },
            });
        let manifest = ManifestInspection {
            path: folder.join(MANIFEST_FILE),
            error: if manifest.is_none() { load_error } else { None },
            content: manifest.as_deref().cloned(),
        };
        host.stop_all().await;
        Ok(Inspection {
            folder: folder.to_owned(),
            host_abi: plugbay_abi::ABI_VERSION,
            manifest,
            artifact,
            native,
            load,
        })
    }
}
