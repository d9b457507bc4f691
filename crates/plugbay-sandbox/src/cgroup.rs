//! cgroups, v2 and v1: one parent per host run (`<hierarchy>/plugbay/<pid>-<start time>-<n>`,
//! made once when the host starts, after removing the parents of runs that are gone), and
//! one leaf per program holding its limits. Everything here is plain file writes.

use std::io;
use std::path::{Path, PathBuf};

use crate::probe::{CgroupVersion, Cgroups};
use crate::spec::Limits;

/// The controllers whose hierarchies a v1 leaf spans.
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "freezer"];
/// The CPU period the quota is a share of, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// This host run's parent cgroup, in each hierarchy it uses.
#[derive(Debug)]
pub(crate) struct CgroupParent {
    version: CgroupVersion,
    /// One directory per hierarchy (v2: one), with the controller it is used for (v1).
    dirs: Vec<(&'static str, PathBuf)>,
}

/// One program's cgroup. Dropped, it kills what is left in it and removes it.
#[derive(Debug)]
pub struct Cgroup {
    version: CgroupVersion,
    dirs: Vec<(&'static str, PathBuf)>,
    memory_bytes: Option<u64>,
}

impl CgroupParent {
    /// Makes this run's parent, after removing parents left by runs that are gone.
    pub(crate) fn create(cgroups: &Cgroups) -> io::Result<CgroupParent> {
        let version = cgroups.usable.ok_or_else(|| io::Error::other("no usable cgroup hierarchy"))?;
        let hierarchies: Vec<(&'static str, PathBuf)> = match version {
            CgroupVersion::V2 => {
                vec![("", cgroups.v2.as_ref().expect("usable v2 is mounted").mount.clone())]
            }
            CgroupVersion::V1 => V1_CONTROLLERS
                .iter()
                .filter_map(|controller| {
                    let mount = cgroups.v1.iter().find(|m| m.controllers.iter().any(|c| c == controller))?;
                    Some((*controller, mount.mount.clone()))
                })
                .collect(),
        };
        // Unique per parent: two in one process (two hosts) must not share one.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let run = format!("{pid}-{}-{made}", start_time(pid).unwrap_or(0));
        let mut dirs = Vec::new();
        for (controller, mount) in hierarchies {
            let base = mount.join("plugbay");
            make_dir(&base)?;
            sweep_stale(&base);
            let dir = base.join(&run);
            make_dir(&dir)?;
            if version == CgroupVersion::V2 {
                // Each level offers the controllers to the next, down to the leaves.
                for level in [&mount, &base, &dir] {
                    enable_controllers(level);
                }
            }
            dirs.push((controller, dir));
        }
        Ok(CgroupParent { version, dirs })
    }

    /// The cgroup version in use.
    pub(crate) fn version(&self) -> CgroupVersion {
        self.version
    }

    /// A new leaf named `name` with `limits` written.
    pub(crate) fn leaf(&self, name: &str, limits: &Limits) -> io::Result<Cgroup> {
        let mut dirs = Vec::new();
        for (controller, parent) in &self.dirs {
            let dir = parent.join(name);
            if dir.exists() {
                remove_tree(&dir);
            }
            make_dir(&dir)?;
            dirs.push((*controller, dir));
        }
        let cgroup = Cgroup { version: self.version, dirs, memory_bytes: limits.memory_bytes };
        cgroup.write_limits(limits)?;
        Ok(cgroup)
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for (_, dir) in &self.dirs {
            remove_tree(dir);
        }
    }
}

impl Cgroup {
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(name, _)| self.version == CgroupVersion::V2 || *name == controller)
            .map(|(_, dir)| dir.as_path())
    }

    fn write_limits(&self, limits: &Limits) -> io::Result<()> {
        match self.version {
            CgroupVersion::V2 => {
                let dir = self.dir("").expect("a v2 leaf has its directory");
                if let Some(bytes) = limits.memory_bytes {
                    write(dir, "memory.max", &bytes.to_string())?;
                    write(dir, "memory.swap.max", "0").or_else(absent_is_fine)?;
                }
                if let Some(percent) = limits.cpu_percent {
                    write(dir, "cpu.max", &format!("{} {CPU_PERIOD_US}", quota(percent)))?;
                }
                if let Some(pids) = limits.pids {
                    write(dir, "pids.max", &pids.to_string())?;
                }
            }
            CgroupVersion::V1 => {
                if let (Some(bytes), Some(dir)) = (limits.memory_bytes, self.dir("memory")) {
                    write(dir, "memory.limit_in_bytes", &bytes.to_string())?;
                    // Swap off: memory plus swap may not exceed memory (where swap is
                    // accounted), and the kernel prefers not to swap this group at all.
                    write(dir, "memory.memsw.limit_in_bytes", &bytes.to_string()).or_else(absent_is_fine)?;
                    write(dir, "memory.swappiness", "0").or_else(absent_is_fine)?;
                }
                if let (Some(percent), Some(dir)) = (limits.cpu_percent, self.dir("cpu")) {
                    write(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                    write(dir, "cpu.cfs_quota_us", &quota(percent).to_string())?;
                }
                if let (Some(pids), Some(dir)) = (limits.pids, self.dir("pids")) {
                    write(dir, "pids.max", &pids.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Moves process `pid` (and so everything it starts) into this cgroup.
    pub(crate) fn add(&self, pid: i32) -> io::Result<()> {
        for (_, dir) in &self.dirs {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Whether the memory limit killed a process of this cgroup.
    pub fn memory_limit_hit(&self) -> bool {
        let count = match self.version {
            CgroupVersion::V2 => {
                self.dir("").and_then(|dir| read_counter(&dir.join("memory.events"), "oom_kill"))
            }
            CgroupVersion::V1 => {
                self.dir("memory").and_then(|dir| read_counter(&dir.join("memory.oom_control"), "oom_kill"))
            }
        };
        count.is_some_and(|count| count > 0)
    }

    /// The memory limit, in bytes.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory_bytes
    }

    /// The directories of this cgroup (one per hierarchy), for reports and tests.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(_, dir)| dir.as_path())
    }

    /// Kills every process left in the cgroup: `cgroup.kill` on v2; on v1 the group is
    /// frozen first, so nothing forks while it is being killed.
    pub fn kill_all(&self) {
        kill_tree(self.version, &self.dirs);
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        for (_, dir) in &self.dirs {
            remove_tree(dir);
        }
    }
}

fn kill_tree(version: CgroupVersion, dirs: &[(&'static str, PathBuf)]) {
    match version {
        CgroupVersion::V2 => {
            for (_, dir) in dirs {
                let _ = write(dir, "cgroup.kill", "1");
            }
        }
        CgroupVersion::V1 => {
            let freezer = dirs.iter().find(|(name, _)| *name == "freezer").map(|(_, dir)| dir);
            if let Some(freezer) = freezer {
                let _ = write(freezer, "freezer.state", "FROZEN");
            }
            for (_, dir) in dirs {
                for pid in procs(dir) {
                    let _ = kill(pid);
                }
            }
            if let Some(freezer) = freezer {
                let _ = write(freezer, "freezer.state", "THAWED");
            }
        }
    }
}

fn kill(pid: i32) -> io::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or_else(|| io::Error::other("pid 0"))?;
    Ok(rustix::process::kill_process(pid, rustix::process::Signal::KILL)?)
}

/// The pids in a cgroup directory's `cgroup.procs`.
fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// The CPU quota in microseconds per period for `percent` of one core (at least 1 ms).
fn quota(percent: u32) -> u64 {
    (u64::from(percent) * CPU_PERIOD_US / 100).max(1000)
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::write(dir.join(file), value).map_err(|error| {
        io::Error::new(error.kind(), format!("cannot write {value} to {}: {error}", dir.join(file).display()))
    })
}

/// A missing control file (swap not accounted, a kernel without it) is not an error.
fn absent_is_fine(error: io::Error) -> io::Result<()> {
    if error.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(error) }
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => {
            Err(io::Error::new(error.kind(), format!("cannot create the cgroup {}: {error}", dir.display())))
        }
    }
}

/// Offers the v2 controllers the limits need to the children of `dir` (each ignored where
/// `dir` itself lacks it: a limit needing it then fails with the file it could not write).
fn enable_controllers(dir: &Path) {
    for controller in ["+cpu", "+memory", "+pids"] {
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), controller);
    }
}

/// Kills the processes of a cgroup tree and removes it, leaves first.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    for _ in 0..50 {
        for pid in procs(dir) {
            let _ = kill(pid);
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
        }
    }
}

/// Removes the parents under `base` whose host run is gone (its pid is free, or taken by
/// a process that started at another time).
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let mut parts = name.to_str().unwrap_or_default().split('-');
        let (Some(pid), Some(start)) = (parts.next(), parts.next()) else { continue };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else { continue };
        if start_time(pid) != Some(start) {
            remove_tree(&entry.path());
        }
    }
}

/// A process's start time (field 22 of `/proc/<pid>/stat`), `None` if there is none.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The value of `name` in a flat-keyed file such as `memory.events`.
fn read_counter(file: &Path, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_shares_of_the_period() {
        assert_eq!(quota(50), 50_000);
        assert_eq!(quota(200), 200_000);
        assert_eq!(quota(0), 1000, "at least a millisecond");
    }

    #[test]
    fn this_process_has_a_start_time_and_a_free_pid_has_none() {
        assert!(start_time(std::process::id()).is_some());
        assert_eq!(start_time(u32::MAX - 1), None);
    }

    /// This machine's unified hierarchy, forced into use, when the test runs as root; the
    /// sandbox picks it by itself where it offers cpu, memory and pids.
    fn unified() -> Option<Cgroups> {
        let mut cgroups = Cgroups::read();
        if !rustix::process::geteuid().is_root() || cgroups.v2.is_none() {
            eprintln!("skipped: needs root and a mounted cgroup v2 hierarchy");
            return None;
        }
        cgroups.usable = Some(CgroupVersion::V2);
        Some(cgroups)
    }

    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z')))
    }

    /// The v2 path of containment on a real kernel: the parent and leaf are made in the
    /// unified hierarchy, a program and the processes it starts (one in a session of its
    /// own) land in the leaf, `cgroup.kill` ends them all, and dropping removes both.
    #[test]
    fn v2_holds_every_process_a_program_starts_and_kills_them_all() {
        use std::io::Write;
        let Some(cgroups) = unified() else { return };
        let parent = CgroupParent::create(&cgroups).unwrap();
        let limits = Limits { memory_bytes: None, cpu_percent: None, pids: None, ..Limits::default() };
        let leaf = parent.leaf("contained", &limits).unwrap();
        let dir = leaf.paths().next().unwrap().to_path_buf();
        assert!(dir.starts_with(&cgroups.v2.as_ref().unwrap().mount), "{}", dir.display());

        // The shell waits for a line, so it is in the leaf before it starts anything.
        let mut program = std::process::Command::new("sh")
            .args(["-c", "read go; sleep 60 & setsid sleep 60 & wait"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        leaf.add(program.id() as i32).unwrap();
        program.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let members = loop {
            let members = procs(&dir);
            if members.len() == 3 || std::time::Instant::now() > deadline {
                break members;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(members.len(), 3, "the shell and its two sleeps: {members:?}");
        let relative = dir.strip_prefix(&cgroups.v2.as_ref().unwrap().mount).unwrap();
        for pid in &members {
            let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            assert!(own.lines().any(|line| line == format!("0::/{}", relative.display())), "{pid}: {own}");
        }

        leaf.kill_all();
        program.wait().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while members.iter().any(|pid| alive(*pid)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!members.iter().any(|pid| alive(*pid)), "cgroup.kill ended them all: {members:?}");
        assert!(procs(&dir).is_empty());

        let run = dir.parent().unwrap().to_path_buf();
        drop(leaf);
        assert!(!dir.exists(), "the leaf is removed");
        drop(parent);
        assert!(!run.exists(), "the run's parent is removed");
    }

    /// On a v2 hierarchy that lacks a limit's controller (this machine's, whose controllers
    /// are bound to v1), the leaf fails naming the file it could not write.
    #[test]
    fn v2_limits_without_their_controller_fail_naming_the_file() {
        let Some(cgroups) = unified() else { return };
        let parent = CgroupParent::create(&cgroups).unwrap();
        let offers_memory = cgroups.v2.as_ref().unwrap().controllers.iter().any(|c| c == "memory");
        let limits =
            Limits { memory_bytes: Some(64 << 20), cpu_percent: None, pids: None, ..Limits::default() };
        match parent.leaf("limited", &limits) {
            Ok(leaf) => {
                assert!(offers_memory, "memory.max was written without the controller");
                let dir = leaf.paths().next().unwrap().to_path_buf();
                assert_eq!(std::fs::read_to_string(dir.join("memory.max")).unwrap().trim(), "67108864");
            }
            Err(error) => {
                assert!(!offers_memory, "{error}");
                assert!(error.to_string().contains("memory.max"), "{error}");
            }
        }
    }
}
