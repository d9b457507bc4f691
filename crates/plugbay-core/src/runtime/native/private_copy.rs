//! A private, immutable copy of a library's bytes to hand to the dynamic loader.
//!
//! On Linux the copy is a sealed `memfd` opened through `/proc/self/fd`: it lives only in
//! memory, nobody else can write it, and every load gets a new inode, so the loader never
//! returns a library it loaded earlier from the same path. Elsewhere it is a file in a
//! per-process directory only the host's user can enter, removed right after loading.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The copy; dropping it removes it (the loaded mapping stays).
pub(super) struct PrivateCopy {
    path: PathBuf,
    #[cfg(target_os = "linux")]
    _fd: std::os::fd::OwnedFd,
}

impl PrivateCopy {
    /// Writes `bytes` to a new private copy.
    pub(super) fn new(bytes: &[u8]) -> std::io::Result<PrivateCopy> {
        #[cfg(target_os = "linux")]
        {
            Self::memfd(bytes).or_else(|_| Self::temp_file(bytes))
        }
        #[cfg(not(target_os = "linux"))]
        {
            Self::temp_file(bytes)
        }
    }

    /// Where the loader should open it.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(target_os = "linux")]
    fn memfd(bytes: &[u8]) -> std::io::Result<PrivateCopy> {
        use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, memfd_create};
        use std::os::fd::AsRawFd;

        let fd = memfd_create("plugbay-native", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)?;
        let fd = std::os::fd::OwnedFd::from(file);
        fcntl_add_seals(&fd, SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        if !path.exists() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "/proc is not mounted"));
        }
        Ok(PrivateCopy { path, _fd: fd })
    }

    fn temp_file(bytes: &[u8]) -> std::io::Result<PrivateCopy> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("plugbay-{}", std::process::id()));
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        let name = format!(
            "native-{}{}",
            NEXT.fetch_add(1, Ordering::Relaxed),
            crate::platform::NATIVE_LIBRARY_SUFFIX
        );
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o500);
        options.open(&path)?.write_all(bytes)?;
        #[cfg(target_os = "linux")]
        {
            let fd = rustix::fs::open(
                &path,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?;
            Ok(PrivateCopy { path, _fd: fd })
        }
        #[cfg(not(target_os = "linux"))]
        Ok(PrivateCopy { path })
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        if !self.path.starts_with("/proc") {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
