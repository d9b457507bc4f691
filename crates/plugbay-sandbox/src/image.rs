//! A program's verified bytes as a sealed in-memory file, executed by descriptor.
//!
//! The host reads a program once, judges those bytes (its signature, docs/trust.md), and
//! starts every instance from this copy with `execveat(fd, "", AT_EMPTY_PATH)`, as runc
//! does since CVE-2019-5736: the file in the plugin folder is never opened again, so a
//! program swapped in after the check never runs. The copy is a `memfd` sealed against
//! writes, growth and shrinking; nobody, the host included, can change it.

use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, memfd_create};

/// `MFD_EXEC` (Linux 6.3): the memfd may be executed even where `vm.memfd_noexec` makes
/// memfds non-executable by default. Older kernels refuse the flag and are asked without.
const MFD_EXEC: u32 = 0x0010;

/// A sealed, executable copy of a program's bytes.
#[derive(Debug)]
pub struct ProgramImage {
    fd: OwnedFd,
    len: usize,
}

impl ProgramImage {
    /// Copies `bytes` into a new sealed memfd named `plugbay:<name>` (the name shows in
    /// `/proc/<pid>/exe` of the programs started from it).
    ///
    /// # Errors
    /// When the kernel refuses the memfd, the write or the seals.
    pub fn seal(name: &str, bytes: &[u8]) -> io::Result<ProgramImage> {
        let name = format!("plugbay:{name}");
        let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        let fd = memfd_create(&name, flags | MemfdFlags::from_bits_retain(MFD_EXEC))
            .or_else(|_| memfd_create(&name, flags))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)?;
        let fd = OwnedFd::from(file);
        fcntl_add_seals(&fd, SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL)?;
        Ok(ProgramImage { fd, len: bytes.len() })
    }

    /// Whether `bytes` are an ELF executable, the kind of program that can run from an
    /// image (a `#!` script cannot: its interpreter would be handed a `/dev/fd` path that
    /// is closed at exec).
    pub fn is_elf(bytes: &[u8]) -> bool {
        bytes.starts_with(b"\x7fELF")
    }

    /// The descriptor programs are executed from.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_cannot_be_written_or_resized_once_sealed() {
        let image = ProgramImage::seal("test", b"\x7fELF and the rest").unwrap();
        assert_eq!(image.len(), 17);
        let mut file = std::fs::File::from(image.fd.try_clone().unwrap());
        let error = file.write_all(b"evil").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EPERM), "{error}");
        assert!(file.set_len(1).is_err());
        assert!(ProgramImage::is_elf(b"\x7fELF\x02") && !ProgramImage::is_elf(b"#!/bin/sh\n"));
    }
}
