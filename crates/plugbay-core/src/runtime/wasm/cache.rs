//! The compiled-component cache on disk, so a second start skips compilation.
//!
//! # Trust
//! Loading compiled code is a trust boundary (`Component::deserialize` runs whatever
//! machine code the file holds), so:
//! - the cache directory is created by the host with mode 0700, and is used only if it is a
//!   directory owned by the host's user that nobody else can write (otherwise the cache is
//!   off, with a warning);
//! - entries are written only by the host, atomically (a private temporary file renamed
//!   into place), named by the BLAKE3 hash of the artifact and a hash of the engine's
//!   settings (wasmtime's compatibility hash: version, target, every setting that changes
//!   code);
//! - each file starts with the BLAKE3 hash of the rest, checked before deserializing, so a
//!   truncated or corrupted entry is detected, removed and rebuilt.
//!
//! BLAKE3 rather than SHA-256: both are cryptographic hashes, and BLAKE3 checks a typical
//! entry (tens of KiB) in a fraction of the time, which is most of what a cached load
//! costs after deserialization.
#![allow(unsafe_code)] // Component::deserialize, see `load` and the module docs

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A usable cache directory.
pub(crate) struct Cache {
    dir: PathBuf,
    /// The hash of the engine's settings in entry names, computed once (one engine per
    /// cache).
    settings: std::sync::OnceLock<u64>,
}

/// The outcome of a lookup.
pub(crate) enum Lookup {
    /// A valid entry: compilation skipped.
    Hit(Component),
    /// No entry (or a rejected one, removed): compile, then [`Cache::store`].
    Miss(PathBuf),
}

impl Cache {
    /// Opens (creating it with mode 0700 if needed) the cache directory. `None`, after a
    /// warning, when it cannot be created or someone other than the host could write it.
    pub(crate) fn open(dir: &Path) -> Option<Cache> {
        let created = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
        if let Err(error) = created {
            tracing::warn!(dir = %dir.display(), "wasm cache off: cannot create the directory: {error}");
            return None;
        }
        match std::fs::symlink_metadata(dir) {
            Ok(meta)
                if meta.is_dir()
                    && meta.uid() == rustix::process::geteuid().as_raw()
                    && meta.permissions().mode() & 0o077 == 0 =>
            {
                Some(Cache { dir: dir.to_owned(), settings: std::sync::OnceLock::new() })
            }
            Ok(meta) => {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o7777),
                    "wasm cache off: the directory must be the host user's own with mode 0700"
                );
                None
            }
            Err(error) => {
                tracing::warn!(dir = %dir.display(), "wasm cache off: {error}");
                None
            }
        }
    }

    /// The entry for `artifact` compiled by `engine`, if a valid one exists.
    pub(crate) fn load(&self, engine: &Engine, artifact: &[u8]) -> Lookup {
        let settings = *self.settings.get_or_init(|| settings_hash(engine));
        let path = self.dir.join(entry_name(settings, artifact));
        let Ok(file) = std::fs::read(&path) else { return Lookup::Miss(path) };
        let valid = file.len() > DIGEST_BYTES && blake3::hash(&file[DIGEST_BYTES..]) == file[..DIGEST_BYTES];
        if !valid {
            tracing::warn!(entry = %path.display(), "wasm cache: corrupted entry (digest mismatch) removed; recompiling");
            let _ = std::fs::remove_file(&path);
            return Lookup::Miss(path);
        }
        // SAFETY: the bytes were written by this host (`store`) into a directory only the
        // host's user can write (checked in `open`), and their BLAKE3 digest was checked just
        // above, so they are exactly what `Component::serialize` produced for this artifact
        // with an engine of the same settings (the name carries both hashes); wasmtime
        // checks its own version and settings header again while deserializing.
        match unsafe { Component::deserialize(engine, &file[DIGEST_BYTES..]) } {
            Ok(component) => Lookup::Hit(component),
            Err(error) => {
                tracing::warn!(entry = %path.display(), "wasm cache: entry refused ({error}); recompiling");
                let _ = std::fs::remove_file(&path);
                Lookup::Miss(path)
            }
        }
    }

    /// Writes `component` to `path` atomically; a failure only costs the next start a
    /// compilation.
    pub(crate) fn store(&self, path: &Path, component: &Component) {
        let written = component.serialize().map_err(|error| error.to_string()).and_then(|bytes| {
            let mut file = tempfile::NamedTempFile::new_in(&self.dir).map_err(|error| error.to_string())?;
            file.write_all(blake3::hash(&bytes).as_bytes()).map_err(|error| error.to_string())?;
            file.write_all(&bytes).map_err(|error| error.to_string())?;
            file.as_file().sync_all().map_err(|error| error.to_string())?;
            file.persist(path).map_err(|error| error.to_string()).map(drop)
        });
        if let Err(error) = written {
            tracing::warn!(entry = %path.display(), "wasm cache: cannot write the entry: {error}");
        }
    }
}

/// The length of the digest at the start of each entry (a BLAKE3 hash).
const DIGEST_BYTES: usize = blake3::OUT_LEN;

/// A hash of everything in `engine`'s settings that changes compiled code.
fn settings_hash(engine: &Engine) -> u64 {
    let mut settings = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    settings.finish()
}

/// `<BLAKE3 of the artifact>-<engine settings hash>.cwasm`.
fn entry_name(settings: u64, artifact: &[u8]) -> String {
    format!("{}-{settings:016x}.cwasm", blake3::hash(artifact).to_hex())
}
