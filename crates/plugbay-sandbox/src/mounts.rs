//! The private root: a tmpfs holding only what the program may see, entered with
//! `pivot_root`. The host plans it (paths, flags, the order of the steps); the sandbox's
//! helper process carries the plan out with raw system calls.
#![allow(unsafe_code)]

use std::ffi::{CString, c_ulong};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::spec::Spec;

/// The system folders shown read-only (or re-made as the same symbolic link).
const SYSTEM: [&str; 7] = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];
/// Files of `/etc` every program may need (the dynamic loader's cache).
const ETC_ALWAYS: [&str; 1] = ["/etc/ld.so.cache"];
/// Files of `/etc` a program granted the network needs (names, certificates).
const ETC_NETWORK: [&str; 6] =
    ["/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl", "/etc/ca-certificates", "/etc/pki"];

/// The host paths the root shows read-only for `spec` that are real files or folders
/// (not symbolic links, which are re-made instead): what the landlock fence must let the
/// program read.
pub(crate) fn shown_system_paths(network: bool) -> Vec<&'static Path> {
    let etc = ETC_ALWAYS.iter().chain(if network { &ETC_NETWORK[..] } else { &[] });
    SYSTEM
        .iter()
        .chain(etc)
        .map(Path::new)
        .filter(|path| {
            std::fs::symlink_metadata(path).is_ok_and(|metadata| !metadata.file_type().is_symlink())
        })
        .collect()
}
/// The devices of the minimal `/dev`.
pub(crate) const DEVICES: [&str; 5] = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

/// One step of building the root.
#[derive(Debug)]
pub(crate) enum Entry {
    /// `mkdir` (an existing one is fine).
    Dir(CString),
    /// An empty file, to bind a file over.
    File(CString),
    /// A symbolic link `link` -> `target`.
    Symlink { target: CString, link: CString },
    /// A bind mount, then (`remount` not 0) a remount with those flags.
    Bind { source: CString, target: CString, remount: c_ulong, recursive: bool },
    /// A tmpfs with `options`.
    Tmpfs { target: CString, options: CString },
    /// A fresh `proc` for the new PID namespace.
    Proc(CString),
}

/// The whole root, planned.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Where the tmpfs is mounted before `pivot_root` (inside the private directory).
    pub(crate) root: CString,
    pub(crate) entries: Vec<Entry>,
    /// What each entry is, for an error naming the one that failed.
    pub(crate) described: Vec<String>,
}

impl Plan {
    /// Plans the root for `spec`; `root` is an empty directory the helper can reach.
    pub(crate) fn new(spec: &Spec, root: &Path) -> io::Result<Plan> {
        let mut plan = Plan { root: c_path(root)?, entries: Vec::new(), described: Vec::new() };
        for system in SYSTEM {
            plan.show(root, Path::new(system), true)?;
        }
        plan.dir(root, Path::new("/etc"))?;
        for file in ETC_ALWAYS.iter().chain(if spec.network { &ETC_NETWORK[..] } else { &[] }) {
            plan.show(root, Path::new(file), true)?;
        }
        plan.tmpfs(root, Path::new("/tmp"), &format!("mode=1777,size={}", spec.limits.tmp_bytes))?;
        plan.tmpfs(root, Path::new("/dev"), "mode=0755,size=64k")?;
        for device in DEVICES {
            let target = root.join(&device[1..]);
            plan.push(Entry::File(c_path(&target)?), format!("create {device}"));
            plan.push(
                Entry::Bind {
                    source: c_path(Path::new(device))?,
                    target: c_path(&target)?,
                    remount: 0,
                    recursive: false,
                },
                format!("bind {device}"),
            );
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let link = root.join("dev").join(link);
            plan.push(
                Entry::Symlink { target: c_path(Path::new(target))?, link: c_path(&link)? },
                format!("link {}", link.display()),
            );
        }
        plan.tmpfs(root, Path::new("/dev/shm"), &format!("mode=1777,size={}", spec.limits.tmp_bytes))?;
        plan.dir(root, Path::new("/proc"))?;
        plan.push(Entry::Proc(c_path(&root.join("proc"))?), "mount /proc".to_owned());
        // The program's own paths, parents before children, so a write grant inside the
        // read-only plugin folder is mounted over it.
        let mut own: Vec<(&Path, bool, bool)> =
            vec![(&spec.folder, true, true), (&spec.private_dir, false, false)];
        own.extend(spec.shared.iter().map(|path| (path.as_path(), true, true)));
        own.extend(spec.read.iter().map(|path| (path.as_path(), true, true)));
        own.extend(spec.write.iter().map(|path| (path.as_path(), false, true)));
        own.sort_by_key(|(path, _, _)| path.components().count());
        for (path, read_only, recursive) in own {
            plan.bind(root, path, read_only, recursive)?;
        }
        Ok(plan)
    }

    fn push(&mut self, entry: Entry, described: String) {
        self.entries.push(entry);
        self.described.push(described);
    }

    /// `path` (absolute) and its parents, inside the root.
    fn dir(&mut self, root: &Path, path: &Path) -> io::Result<()> {
        let mut inside = root.to_path_buf();
        for part in path.strip_prefix("/").unwrap_or(path).components() {
            inside.push(part);
            let entry = Entry::Dir(c_path(&inside)?);
            self.push(entry, format!("create {}", inside.strip_prefix(root).unwrap_or(&inside).display()));
        }
        Ok(())
    }

    fn tmpfs(&mut self, root: &Path, path: &Path, options: &str) -> io::Result<()> {
        self.dir(root, path)?;
        let target = c_path(&root.join(path.strip_prefix("/").unwrap_or(path)))?;
        let options = CString::new(options).map_err(io::Error::other)?;
        self.push(Entry::Tmpfs { target, options }, format!("mount a tmpfs on {}", path.display()));
        Ok(())
    }

    /// Shows a system path if the host has it: a symbolic link is re-made, a folder or
    /// file bound read-only.
    fn show(&mut self, root: &Path, path: &Path, read_only: bool) -> io::Result<()> {
        let Ok(metadata) = std::fs::symlink_metadata(path) else { return Ok(()) };
        if metadata.file_type().is_symlink() {
            let target = std::fs::read_link(path)?;
            let link = root.join(path.strip_prefix("/").unwrap_or(path));
            self.push(
                Entry::Symlink { target: c_path(&target)?, link: c_path(&link)? },
                format!("link {}", path.display()),
            );
            return Ok(());
        }
        self.bind(root, path, read_only, true)
    }

    /// Binds `path` at the same place inside the root.
    fn bind(&mut self, root: &Path, path: &Path, read_only: bool, recursive: bool) -> io::Result<()> {
        let metadata = std::fs::metadata(path).map_err(|error| {
            io::Error::new(error.kind(), format!("cannot show {} to the sandbox: {error}", path.display()))
        })?;
        let target = root.join(path.strip_prefix("/").unwrap_or(path));
        if metadata.is_dir() {
            self.dir(root, path)?;
        } else {
            if let Some(parent) = path.parent() {
                self.dir(root, parent)?;
            }
            self.push(Entry::File(c_path(&target)?), format!("create {}", path.display()));
        }
        let mut remount = libc::MS_NOSUID | libc::MS_NODEV | locked_flags(path);
        if read_only {
            remount |= libc::MS_RDONLY;
        }
        let entry = Entry::Bind { source: c_path(path)?, target: c_path(&target)?, remount, recursive };
        let how = if read_only { "read-only" } else { "read-write" };
        self.push(entry, format!("bind {} {how}", path.display()));
        Ok(())
    }
}

/// The flags of the mount holding `path` that a remount must keep (a user namespace may
/// not clear them).
fn locked_flags(path: &Path) -> c_ulong {
    let Ok(stat) = rustix::fs::statvfs(path) else { return 0 };
    let flags = stat.f_flag;
    let mut locked = 0;
    for (statvfs, mount) in [
        (rustix::fs::StatVfsMountFlags::NOEXEC, libc::MS_NOEXEC),
        (rustix::fs::StatVfsMountFlags::NOATIME, libc::MS_NOATIME),
        (rustix::fs::StatVfsMountFlags::NODIRATIME, libc::MS_NODIRATIME),
        (rustix::fs::StatVfsMountFlags::RELATIME, libc::MS_RELATIME),
        (rustix::fs::StatVfsMountFlags::RDONLY, libc::MS_RDONLY),
    ] {
        if flags.contains(statvfs) {
            locked |= mount;
        }
    }
    locked
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{} contains a NUL byte", path.display()))
    })
}

/// The directory the root is built in, inside the private directory.
pub(crate) fn root_dir(private_dir: &Path) -> PathBuf {
    private_dir.join("root")
}

/// Builds the root from `plan` and enters it. Raw system calls only (the helper may not
/// allocate). On failure returns the index of the entry that failed (`entries.len()` for
/// the pivot itself); errno says why.
///
/// # Safety
/// Only call in the sandbox's helper, inside its own mount namespace.
pub(crate) unsafe fn enter(plan: &Plan) -> Result<(), usize> {
    // SAFETY: plain system calls on NUL-terminated strings the plan owns.
    unsafe {
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(plan.entries.len());
        }
        let root = plan.root.as_ptr();
        if libc::mount(
            c"plugbay".as_ptr(),
            root,
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755,size=1m".as_ptr().cast(),
        ) != 0
        {
            return Err(plan.entries.len());
        }
        for (index, entry) in plan.entries.iter().enumerate() {
            let ok = match entry {
                Entry::Dir(path) => {
                    libc::mkdir(path.as_ptr(), 0o755) == 0 || *libc::__errno_location() == libc::EEXIST
                }
                Entry::File(path) => {
                    let fd =
                        libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
                    fd >= 0 && libc::close(fd) == 0 || *libc::__errno_location() == libc::EEXIST
                }
                Entry::Symlink { target, link } => libc::symlink(target.as_ptr(), link.as_ptr()) == 0,
                Entry::Bind { source, target, remount, recursive } => {
                    let flags = libc::MS_BIND | if *recursive { libc::MS_REC } else { 0 };
                    libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), flags, std::ptr::null())
                        == 0
                        && (*remount == 0
                            || libc::mount(
                                std::ptr::null(),
                                target.as_ptr(),
                                std::ptr::null(),
                                libc::MS_REMOUNT | libc::MS_BIND | remount,
                                std::ptr::null(),
                            ) == 0)
                }
                Entry::Tmpfs { target, options } => {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        target.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        options.as_ptr().cast(),
                    ) == 0
                }
                Entry::Proc(target) => {
                    libc::mount(
                        c"proc".as_ptr(),
                        target.as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ) == 0
                }
            };
            if !ok {
                return Err(index);
            }
        }
        // pivot_root(".", "."): the old root ends up on top of the new one, and is then
        // detached, so nothing of the host stays reachable.
        let pivoted = libc::chdir(root) == 0
            && libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0
            && libc::umount2(c".".as_ptr(), libc::MNT_DETACH) == 0
            && libc::chdir(c"/".as_ptr()) == 0
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                std::ptr::null(),
            ) == 0;
        if !pivoted {
            return Err(plan.entries.len());
        }
    }
    Ok(())
}
