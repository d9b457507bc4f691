//! What this kernel offers of the sandbox's layers: one [`Check`] per [`Layer`], each
//! available or with the reason it is not, read from `/proc` and `/sys` (and, for
//! landlock, one syscall that only asks for the ABI version). Nothing is changed.

mod cgroups;
#[cfg(target_os = "linux")]
mod landlock;
mod namespaces;

use std::fmt;

pub use cgroups::{CgroupVersion, Cgroups};

/// One layer of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// A user namespace: the plugin's root is an unprivileged uid outside it.
    UserNamespace,
    /// A mount namespace and a private root: the plugin sees only what is mounted for it.
    MountNamespace,
    /// A PID namespace: the plugin cannot see or signal the host's processes.
    PidNamespace,
    /// A network namespace: only loopback unless `permissions.network`.
    NetworkNamespace,
    /// IPC and UTS namespaces: no shared System V IPC, a hostname of its own.
    IpcUtsNamespaces,
    /// cgroups: CPU quota, memory limit and pids limit, and killing every process at once.
    Cgroups,
    /// seccomp-bpf: an allow-list of system calls.
    Seccomp,
    /// landlock: a second fence around file access.
    Landlock,
}

impl Layer {
    /// Every layer, in the order the sandbox applies them.
    pub const ALL: [Layer; 8] = [
        Layer::UserNamespace,
        Layer::MountNamespace,
        Layer::PidNamespace,
        Layer::NetworkNamespace,
        Layer::IpcUtsNamespaces,
        Layer::Cgroups,
        Layer::Seccomp,
        Layer::Landlock,
    ];

    /// The layer's name as the reports spell it (`user-namespace`, `cgroups`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Layer::UserNamespace => "user-namespace",
            Layer::MountNamespace => "mount-namespace",
            Layer::PidNamespace => "pid-namespace",
            Layer::NetworkNamespace => "network-namespace",
            Layer::IpcUtsNamespaces => "ipc-uts-namespaces",
            Layer::Cgroups => "cgroups",
            Layer::Seccomp => "seccomp",
            Layer::Landlock => "landlock",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this kernel offers one layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// The layer.
    pub layer: Layer,
    /// Whether this kernel offers it. (Whether this host may also use it, such as a
    /// writable cgroup or namespaces for a host that is not root, is checked when the
    /// sandbox is built.)
    pub available: bool,
    /// What was found (`ABI 7`, `v1: cpu, memory, pids, freezer`), or why it is missing,
    /// naming the kernel setting or file that says so.
    pub detail: String,
}

impl Check {
    fn ok(layer: Layer, detail: impl Into<String>) -> Check {
        Check { layer, available: true, detail: detail.into() }
    }

    fn missing(layer: Layer, why: impl Into<String>) -> Check {
        Check { layer, available: false, detail: why.into() }
    }
}

/// What this kernel offers: one check per layer, in [`Layer::ALL`]'s order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelReport {
    /// The kernel's name and release (`Linux 6.18.44`).
    pub kernel: String,
    /// Whether the host runs as root (uid 0), which some layers depend on.
    pub root: bool,
    /// The cgroup hierarchies mounted, and their controllers.
    pub cgroups: Cgroups,
    /// One check per layer.
    pub checks: Vec<Check>,
}

impl KernelReport {
    /// The check of `layer`.
    pub fn check(&self, layer: Layer) -> &Check {
        self.checks.iter().find(|check| check.layer == layer).expect("every layer is checked")
    }

    /// The layers this kernel does not offer.
    pub fn missing(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|check| !check.available)
    }
}

/// Reads what this kernel offers. Cheap (a few small files), but meant to run once, when
/// the host starts.
pub fn probe() -> KernelReport {
    let root = is_root();
    let cgroups = Cgroups::read();
    let mut checks = namespaces::checks(root);
    checks.push(cgroups.check());
    checks.push(seccomp());
    checks.push(landlock());
    KernelReport { kernel: kernel(), root, cgroups, checks }
}

#[cfg(target_os = "linux")]
fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(not(target_os = "linux"))]
fn is_root() -> bool {
    false
}

/// `Linux 6.18.44`, from `/proc/sys/kernel/{ostype,osrelease}`.
fn kernel() -> String {
    let read = |name: &str| read_trimmed(&format!("/proc/sys/kernel/{name}"));
    match (read("ostype"), read("osrelease")) {
        (Some(os), Some(release)) => format!("{os} {release}"),
        _ => std::env::consts::OS.to_owned(),
    }
}

/// seccomp-bpf with the actions the sandbox's filter uses (`errno` for denied calls,
/// `kill_process` for the dangerous ones).
fn seccomp() -> Check {
    let Some(actions) = read_trimmed("/proc/sys/kernel/seccomp/actions_avail") else {
        return Check::missing(
            Layer::Seccomp,
            "the kernel has no seccomp filters (/proc/sys/kernel/seccomp/actions_avail is missing: CONFIG_SECCOMP_FILTER)",
        );
    };
    let offered: Vec<&str> = actions.split_whitespace().collect();
    let lacking: Vec<&str> =
        ["errno", "kill_process"].into_iter().filter(|action| !offered.contains(action)).collect();
    if lacking.is_empty() {
        Check::ok(Layer::Seccomp, format!("filter actions: {}", offered.join(", ")))
    } else {
        Check::missing(
            Layer::Seccomp,
            format!("the kernel's seccomp lacks the action(s) {}", lacking.join(", ")),
        )
    }
}

#[cfg(target_os = "linux")]
fn landlock() -> Check {
    match landlock::abi_version() {
        Ok(abi) => Check::ok(Layer::Landlock, format!("ABI {abi}")),
        Err(why) => Check::missing(Layer::Landlock, why),
    }
}

#[cfg(not(target_os = "linux"))]
fn landlock() -> Check {
    Check::missing(Layer::Landlock, format!("landlock is Linux's; this is {}", std::env::consts::OS))
}

/// A small text file's content without surrounding white space; `None` when unreadable.
fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|text| text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_is_checked_once_in_order() {
        let report = probe();
        let layers: Vec<Layer> = report.checks.iter().map(|check| check.layer).collect();
        assert_eq!(layers, Layer::ALL);
        for check in &report.checks {
            assert!(!check.detail.is_empty(), "{check:?} says what it found");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn each_namespace_is_available_exactly_when_the_kernel_lists_it() {
        let report = probe();
        for (layer, file) in
            [(Layer::MountNamespace, "mnt"), (Layer::PidNamespace, "pid"), (Layer::NetworkNamespace, "net")]
        {
            let listed = std::path::Path::new("/proc/self/ns").join(file).exists();
            assert_eq!(report.check(layer).available, listed, "{:?}", report.check(layer));
        }
    }
}
