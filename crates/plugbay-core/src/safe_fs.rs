//! Reading files strictly beneath a folder: no `..`, no absolute paths, and no symbolic
//! link that leads out of it, checked by the kernel where it can (`openat2` with
//! `RESOLVE_BENEATH` on Linux), by canonical paths elsewhere.

use std::io::Read;
use std::path::Path;

use crate::error::{Code, Error, Result};

/// Reads `root/relative`, refusing anything that resolves outside `root`, anything that is
/// not a regular file, and files over `limit` bytes (error code `too_large`).
///
/// # Errors
/// `permission_denied` for an escape, `not_found` for a missing file, `failed_precondition`
/// for a non-regular file, `too_large` for an oversized one; each names the path.
pub fn read_beneath(root: &Path, relative: &Path, limit: u64, too_large: Code) -> Result<Vec<u8>> {
    let (file, length, shown) = open_regular(root, relative, limit, too_large)?;
    let mut bytes = Vec::with_capacity(length as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|error| io_error(error, &shown))?;
    if bytes.len() as u64 > limit {
        return Err(Error::new(too_large, format!("more than the limit of {limit} bytes")).with_file(&shown));
    }
    Ok(bytes)
}

/// Checks, as [`read_beneath`] does, that `root/relative` is a regular file beneath `root`
/// of at most `limit` bytes, without reading it.
///
/// # Errors
/// As [`read_beneath`].
pub fn check_beneath(root: &Path, relative: &Path, limit: u64, too_large: Code) -> Result<()> {
    open_regular(root, relative, limit, too_large).map(drop)
}

/// Opens a regular file beneath `root` no larger than `limit`; returns it, its length and
/// the path to show in errors.
fn open_regular(
    root: &Path,
    relative: &Path,
    limit: u64,
    too_large: Code,
) -> Result<(std::fs::File, u64, std::path::PathBuf)> {
    let shown = root.join(relative);
    let file = open_beneath(root, relative).map_err(|error| error.with_file(&shown))?;
    let metadata = file.metadata().map_err(|error| io_error(error, &shown))?;
    if !metadata.is_file() {
        return Err(Error::precondition("not a regular file").with_file(&shown));
    }
    if metadata.len() > limit {
        return Err(Error::new(
            too_large,
            format!("{} bytes, more than the limit of {limit}", metadata.len()),
        )
        .with_file(&shown));
    }
    Ok((file, metadata.len(), shown))
}

fn io_error(error: std::io::Error, path: &Path) -> Error {
    let code = match error.kind() {
        std::io::ErrorKind::NotFound => Code::NotFound,
        std::io::ErrorKind::PermissionDenied => Code::PermissionDenied,
        _ => Code::FailedPrecondition,
    };
    Error::new(code, format!("cannot read: {error}")).with_file(path)
}

fn escape(root: &Path) -> Error {
    Error::denied(format!(
        "the path resolves outside {} (through `..`, an absolute path or a symbolic link)",
        root.display()
    ))
}

#[cfg(target_os = "linux")]
fn open_beneath(root: &Path, relative: &Path) -> Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, open, openat2};
    use rustix::io::Errno;

    let dir = open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|errno| io_error(errno.into(), root))?;
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    match openat2(&dir, relative, flags, Mode::empty(), ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS) {
        Ok(fd) => Ok(std::fs::File::from(fd)),
        Err(Errno::XDEV) | Err(Errno::LOOP) => Err(escape(root)),
        Err(Errno::NOSYS) | Err(Errno::PERM) => open_checked(root, relative),
        Err(errno) => Err(io_error(errno.into(), &root.join(relative))),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_beneath(root: &Path, relative: &Path) -> Result<std::fs::File> {
    open_checked(root, relative)
}

/// The portable check: canonicalise both paths and compare.
fn open_checked(root: &Path, relative: &Path) -> Result<std::fs::File> {
    if relative.is_absolute() || relative.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(escape(root));
    }
    let root_real = root.canonicalize().map_err(|error| io_error(error, root))?;
    let path = root.join(relative);
    let real = path.canonicalize().map_err(|error| io_error(error, &path))?;
    if !real.starts_with(&root_real) {
        return Err(escape(root));
    }
    std::fs::File::open(&real).map_err(|error| io_error(error, &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("plugin");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("ok.txt"), b"fine").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        assert_eq!(read_beneath(&root, Path::new("ok.txt"), 100, Code::ResourceExhausted).unwrap(), b"fine");

        let too_big = read_beneath(&root, Path::new("ok.txt"), 2, Code::InvalidArgument).unwrap_err();
        assert_eq!(too_big.code(), Code::InvalidArgument);

        for relative in ["../secret", "/etc/passwd"] {
            let error = read_beneath(&root, Path::new(relative), 100, Code::ResourceExhausted).unwrap_err();
            assert_eq!(error.code(), Code::PermissionDenied, "{relative}: {error}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
            let error = read_beneath(&root, Path::new("link"), 100, Code::ResourceExhausted).unwrap_err();
            assert_eq!(error.code(), Code::PermissionDenied, "{error}");
            std::os::unix::fs::symlink("ok.txt", root.join("inner")).unwrap();
            assert_eq!(
                read_beneath(&root, Path::new("inner"), 100, Code::ResourceExhausted).unwrap(),
                b"fine"
            );
        }
        let missing = read_beneath(&root, Path::new("nope"), 100, Code::ResourceExhausted).unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
    }
}
