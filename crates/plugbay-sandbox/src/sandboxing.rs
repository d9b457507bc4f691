//! [`Sandboxing`]: what this host can build (probed once, with this run's cgroup parent
//! made once), and [`Sandboxing::prepare`], which turns a [`Spec`] into everything the
//! spawn needs, so the child only makes system calls.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::path::Path;

use crate::cgroup::CgroupParent;
use crate::contained::Prepared;
use crate::mounts;
use crate::probe::{self, KernelReport, Layer};
use crate::spec::{NOBODY, Spec};
use crate::{fence, seccomp};

/// This host's sandbox: what the kernel offers and the cgroup parent of this run.
#[derive(Debug)]
pub struct Sandboxing {
    report: KernelReport,
    cgroups: Result<CgroupParent, String>,
    landlock_abi: i32,
    uid: u32,
    gid: u32,
}

/// A layer that cannot be built, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerError {
    /// The layer; `None` when the sandbox as a whole cannot be set up.
    pub layer: Option<Layer>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(layer) => write!(f, "the {layer} layer cannot be built: {}", self.message),
            None => write!(f, "the sandbox cannot be built: {}", self.message),
        }
    }
}

impl std::error::Error for LayerError {}

fn layer_error(layer: Layer, message: impl Into<String>) -> LayerError {
    LayerError { layer: Some(layer), message: message.into() }
}

impl Sandboxing {
    /// Probes the kernel and makes this run's cgroup parent (removing those of runs that
    /// are gone). Cheap; meant to run once, when the host starts.
    pub fn new() -> Sandboxing {
        let report = probe::probe();
        let cgroups = if report.check(Layer::Cgroups).available {
            CgroupParent::create(&report.cgroups).map_err(|error| error.to_string())
        } else {
            Err(report.check(Layer::Cgroups).detail.clone())
        };
        let landlock_abi = report
            .check(Layer::Landlock)
            .detail
            .strip_prefix("ABI ")
            .and_then(|abi| abi.parse().ok())
            .unwrap_or(0);
        Sandboxing {
            report,
            cgroups,
            landlock_abi,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }
    }

    /// Whether programs run as `nobody` ([`crate::NOBODY_UID`]) outside their user
    /// namespace: when the host is root.
    pub fn runs_as_nobody(&self) -> bool {
        self.report.root
    }

    /// What the kernel offers.
    pub fn report(&self) -> &KernelReport {
        &self.report
    }

    /// Whether this host can build `layer`, and why not.
    pub fn offers(&self, layer: Layer) -> Result<(), String> {
        let check = self.report.check(layer);
        if !check.available {
            return Err(check.detail.clone());
        }
        match layer {
            Layer::Cgroups => self.cgroups.as_ref().map(|_| ()).map_err(Clone::clone),
            // Namespaces need privilege, which a user namespace gives a host that is not
            // root; seccomp and landlock need none.
            Layer::MountNamespace | Layer::PidNamespace | Layer::NetworkNamespace | Layer::IpcUtsNamespaces
                if !self.report.root =>
            {
                self.offers(Layer::UserNamespace).map_err(|why| {
                    format!("a host that is not root builds namespaces inside a user namespace, and that is unavailable: {why}")
                })
            }
            Layer::UserNamespace if self.report.root => self
                .offers(Layer::MountNamespace)
                .map_err(|why| format!("for a root host it needs the mount namespace: {why}")),
            _ => Ok(()),
        }
    }

    /// Prepares a program's sandbox: the cgroup (limits written), the mount plan, the
    /// landlock ruleset and the seccomp filters. The first layer that cannot be built is
    /// the error.
    pub fn prepare(&self, spec: &Spec) -> Result<Prepared, LayerError> {
        let has = |layer: Layer| spec.layers.contains(&layer);
        for &layer in &spec.layers {
            self.offers(layer).map_err(|why| layer_error(layer, why))?;
        }
        let root = self.report.root;
        let user_namespace = has(Layer::UserNamespace);
        let mut clone_flags = 0;
        let mut layers = Vec::new();
        for (layer, flags) in [
            (Layer::MountNamespace, libc::CLONE_NEWNS),
            (Layer::PidNamespace, libc::CLONE_NEWPID),
            (Layer::IpcUtsNamespaces, libc::CLONE_NEWIPC | libc::CLONE_NEWUTS),
            (Layer::NetworkNamespace, libc::CLONE_NEWNET),
        ] {
            if has(layer) && !(layer == Layer::NetworkNamespace && spec.network) {
                clone_flags |= flags;
                layers.push(layer);
            }
        }
        if clone_flags != 0 && !root && !user_namespace {
            return Err(layer_error(
                Layer::UserNamespace,
                "a host that is not root needs it to make any other namespace",
            ));
        }
        if root && user_namespace && !has(Layer::MountNamespace) {
            // The helper writes the program's map into its own fresh /proc.
            return Err(layer_error(
                Layer::UserNamespace,
                "for a root host it needs the mount namespace layer too",
            ));
        }
        if user_namespace {
            layers.insert(0, Layer::UserNamespace);
            if !root {
                clone_flags |= libc::CLONE_NEWUSER;
            }
        }
        let ids = if root { (NOBODY, NOBODY) } else { (self.uid, self.gid) };
        let map_program = (root && user_namespace).then_some(ids);
        let map_helper = (!root && user_namespace).then_some(ids);
        if root {
            give_private_dir(&spec.private_dir, ids).map_err(|error| LayerError {
                layer: None,
                message: format!("cannot hand {} to uid {}: {error}", spec.private_dir.display(), ids.0),
            })?;
        }
        let mount_root = if has(Layer::MountNamespace) {
            let dir = mounts::root_dir(&spec.private_dir);
            std::fs::create_dir_all(&dir)
                .and_then(|()| mounts::Plan::new(spec, &dir))
                .map(Some)
                .map_err(|error| layer_error(Layer::MountNamespace, error.to_string()))?
        } else {
            None
        };
        let fence = if has(Layer::Landlock) {
            let mut read = mounts::shown_system_paths(spec.network);
            read.push(&spec.folder);
            read.extend(spec.shared.iter().map(|path| path.as_path()));
            read.extend(spec.read.iter().map(|path| path.as_path()));
            let mut write: Vec<&Path> = spec.write.iter().map(|path| path.as_path()).collect();
            write.push(&spec.private_dir);
            let devices = mounts::DEVICES.iter().map(std::path::PathBuf::from).collect();
            let grants = fence::Grants { read, write, devices };
            let built =
                fence::build(&grants, self.landlock_abi).map_err(|why| layer_error(Layer::Landlock, why))?;
            layers.push(Layer::Landlock);
            Some(built)
        } else {
            None
        };
        // The fence's rules for the file systems made inside the sandbox (only there:
        // without a private root they would be the host's).
        let fence_paths = if mount_root.is_some() {
            vec![
                (CString::from(c"/tmp"), true),
                (CString::from(c"/dev/shm"), true),
                (CString::from(c"/proc"), false),
            ]
        } else {
            Vec::new()
        };
        let (filters, filter_code) = if has(Layer::Seccomp) {
            let programs =
                seccomp::filters(&spec.syscalls).map_err(|why| layer_error(Layer::Seccomp, why))?;
            let code: Vec<Vec<libc::sock_filter>> = programs
                .into_iter()
                .map(|program| {
                    program
                        .into_iter()
                        .map(|op| libc::sock_filter { code: op.code, jt: op.jt, jf: op.jf, k: op.k })
                        .collect()
                })
                .collect();
            let filters = code
                .iter()
                .map(|code| libc::sock_fprog { len: code.len() as u16, filter: code.as_ptr().cast_mut() })
                .collect();
            layers.push(Layer::Seccomp);
            (filters, code)
        } else {
            (Vec::new(), Vec::new())
        };
        let cgroup = if has(Layer::Cgroups) {
            let parent = self.cgroups.as_ref().map_err(|why| layer_error(Layer::Cgroups, why.clone()))?;
            let leaf = parent
                .leaf(&spec.name, &spec.limits)
                .map_err(|error| layer_error(Layer::Cgroups, error.to_string()))?;
            layers.push(Layer::Cgroups);
            Some(leaf)
        } else {
            None
        };
        let open_files = spec.limits.open_files.min(open_files_hard_limit());
        let rlimits = vec![
            (libc::RLIMIT_CORE, 0),
            (libc::RLIMIT_NOFILE, open_files),
            (libc::RLIMIT_FSIZE, spec.limits.file_bytes),
        ];
        let map_line = format!("{} {} 1\n", ids.0, ids.0);
        let gid_line = format!("{} {} 1\n", ids.1, ids.1);
        layers.sort_by_key(|layer| Layer::ALL.iter().position(|l| l == layer));
        Ok(Prepared {
            clone_flags,
            map_helper,
            map_program,
            ids,
            loopback: clone_flags & libc::CLONE_NEWNET != 0,
            root: mount_root,
            rlimits,
            fence,
            fence_paths,
            filters,
            _filter_code: filter_code,
            cgroup,
            layers,
            uid_map: CString::new(map_line).expect("digits"),
            gid_map: CString::new(gid_line).expect("digits"),
        })
    }

    /// The cgroup version in use, if the layer is available.
    pub fn cgroup_version(&self) -> Option<probe::CgroupVersion> {
        self.cgroups.as_ref().ok().map(CgroupParent::version)
    }
}

impl Default for Sandboxing {
    fn default() -> Sandboxing {
        Sandboxing::new()
    }
}

/// Hands the private directory and what is in it (the host's socket) to `ids`, so the
/// program can make its socket there and reach the host's.
fn give_private_dir(dir: &Path, ids: (u32, u32)) -> io::Result<()> {
    let owner = |path: &Path| {
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw(ids.0)),
            Some(rustix::fs::Gid::from_raw(ids.1)),
        )
    };
    owner(dir)?;
    for entry in std::fs::read_dir(dir)? {
        owner(&entry?.path())?;
    }
    Ok(())
}

/// The host's hard limit on open descriptors (a program cannot be given more).
fn open_files_hard_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.unwrap_or(u64::MAX)
}
