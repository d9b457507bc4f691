//! The list of files a signature covers: every regular file beneath a plugin folder but
//! `plugin.sig`, as a `/`-separated relative path, its size and its SHA-256, sorted by path.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::trust::signature::SIGNATURE_FILE;

/// One file of a plugin folder as a signature covers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileDigest {
    /// The path below the plugin folder, `/`-separated (`plugin.toml`, `gen/stubs.py`).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, 64 lowercase hex digits.
    pub sha256: String,
}

impl FileDigest {
    /// The digest of `bytes`, read from `path` below the folder.
    pub fn of(path: &str, bytes: &[u8]) -> FileDigest {
        FileDigest { path: path.to_owned(), size: bytes.len() as u64, sha256: sha256_hex(bytes) }
    }
}

/// What a folder holds that a signature cannot cover: a symbolic link, a device, a path
/// that is not UTF-8 or holds a control character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Uncoverable {
    /// The path below the folder, as well as it can be shown.
    pub path: String,
    /// Why it cannot be covered.
    pub reason: &'static str,
}

/// Every file beneath `folder` but its `plugin.sig`, sorted by path, and what could not be
/// covered. A file in `pinned` is taken as given (its bytes were read by the caller) and
/// not read again, whether or not it is still there.
///
/// # Errors
/// When the folder or a file in it cannot be read (`failed_precondition`, naming it).
pub(crate) fn digest_folder(
    folder: &Path,
    pinned: Vec<FileDigest>,
) -> Result<(Vec<FileDigest>, Vec<Uncoverable>)> {
    let mut files = Vec::new();
    let mut uncoverable = Vec::new();
    walk(folder, "", &pinned, &mut files, &mut uncoverable)?;
    files.extend(pinned);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    uncoverable.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((files, uncoverable))
}

fn walk(
    dir: &Path,
    prefix: &str,
    pinned: &[FileDigest],
    files: &mut Vec<FileDigest>,
    uncoverable: &mut Vec<Uncoverable>,
) -> Result<()> {
    let unreadable = |error: std::io::Error| {
        Error::new(crate::Code::FailedPrecondition, format!("cannot read the folder: {error}")).with_file(dir)
    };
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|name| !name.chars().any(char::is_control)) else {
            let shown = format!("{prefix}{}", name.to_string_lossy().escape_debug());
            uncoverable.push(Uncoverable {
                path: shown,
                reason: "its name is not UTF-8 text without control characters",
            });
            continue;
        };
        let path = format!("{prefix}{name}");
        if path == SIGNATURE_FILE {
            continue;
        }
        let kind = entry.file_type().map_err(unreadable)?;
        if kind.is_dir() {
            walk(&entry.path(), &format!("{path}/"), pinned, files, uncoverable)?;
        } else if kind.is_file() {
            if !pinned.iter().any(|file| file.path == path) {
                files.push(digest_file(&entry.path(), path)?);
            }
        } else {
            let reason = if kind.is_symlink() { "it is a symbolic link" } else { "it is not a regular file" };
            uncoverable.push(Uncoverable { path, reason });
        }
    }
    Ok(())
}

/// The digest of one file, read in full.
fn digest_file(file: &Path, path: String) -> Result<FileDigest> {
    let bytes = std::fs::read(file).map_err(|error| {
        Error::new(crate::Code::FailedPrecondition, format!("cannot read the file: {error}")).with_file(file)
    })?;
    Ok(FileDigest { path, size: bytes.len() as u64, sha256: sha256_hex(&bytes) })
}

/// SHA-256 of `bytes` as 64 lowercase hex digits.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The bytes of lowercase or uppercase hex text; `None` if it is not `N` bytes of hex.
pub(crate) fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_listed_sorted_with_its_size_and_sha256_but_the_signature() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plugin.toml"), "x").unwrap();
        std::fs::write(dir.path().join(SIGNATURE_FILE), "ignored").unwrap();
        std::fs::create_dir(dir.path().join("gen")).unwrap();
        std::fs::write(dir.path().join("gen/b.py"), "").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let (files, uncoverable) = digest_folder(dir.path(), Vec::new()).unwrap();
        let paths: Vec<&str> = files.iter().map(|file| file.path.as_str()).collect();
        assert_eq!(paths, ["gen/b.py", "plugin.toml"]);
        assert_eq!(files[1].size, 1);
        // sha256("x") and sha256("").
        assert_eq!(files[1].sha256, "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881");
        assert_eq!(files[0].sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(uncoverable, [Uncoverable { path: "link".into(), reason: "it is a symbolic link" }]);
    }

    #[test]
    fn hex_round_trips_and_refuses_the_wrong_length() {
        assert_eq!(from_hex::<2>(&hex(&[0xab, 0x01])), Some([0xab, 0x01]));
        assert_eq!(from_hex::<2>("abc"), None);
        assert_eq!(from_hex::<1>("zz"), None);
    }
}
