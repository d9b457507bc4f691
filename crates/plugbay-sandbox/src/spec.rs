//! What the host asks of one contained program: which layers, what it may see, what it
//! may use. Plain data; [`crate::Sandboxing::prepare`] turns it into what the spawn needs.

use std::path::PathBuf;

use crate::probe::Layer;

/// The sandbox of one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// A short name for the program's cgroup (the plugin id and a counter).
    pub name: String,
    /// The layers to apply. A layer not listed is not applied (the host's policy decides
    /// which, from what the kernel offers).
    pub layers: Vec<Layer>,
    /// The plugin folder: mounted read-only at the same path; the working directory.
    pub folder: PathBuf,
    /// The program's private directory (its sockets): mounted read-write at the same path.
    /// The new root is built in `root` inside it.
    pub private_dir: PathBuf,
    /// Further paths mounted read-only at the same path (`permissions.read`).
    pub read: Vec<PathBuf>,
    /// Further paths mounted read-write at the same path (`permissions.write`).
    pub write: Vec<PathBuf>,
    /// Host paths every program sees read-only beside the system folders (a toolchain
    /// outside `/usr`, such as a Python under `/opt`).
    pub shared: Vec<PathBuf>,
    /// System calls granted beside the allow-list (numbers; see
    /// [`crate::grantable_syscall`]).
    pub syscalls: Vec<i64>,
    /// Whether the program shares the host's network (`permissions.network`); otherwise it
    /// gets a network namespace with only loopback.
    pub network: bool,
    /// What the program may use.
    pub limits: Limits,
}

/// What a contained program may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes (swap off), `None` for none.
    pub memory_bytes: Option<u64>,
    /// CPU quota in percent of one core, `None` for none.
    pub cpu_percent: Option<u32>,
    /// Most processes and threads at once, `None` for none.
    pub pids: Option<u32>,
    /// Size of the private `/tmp` in bytes.
    pub tmp_bytes: u64,
    /// `RLIMIT_NOFILE`: most open descriptors.
    pub open_files: u64,
    /// `RLIMIT_FSIZE`: largest file it may write, in bytes.
    pub file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: None,
            cpu_percent: None,
            pids: None,
            tmp_bytes: 64 << 20,
            open_files: 1024,
            file_bytes: 1 << 30,
        }
    }
}

/// The user and group a contained program runs as, outside its user namespace: the
/// unprivileged `nobody` (65534) when the host is root, the host's own user otherwise.
pub const NOBODY: u32 = 65534;
