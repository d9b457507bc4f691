//! Starting a program inside the sandbox.
//!
//! The host's spawner thread forks a **helper** straight into new mount, PID, IPC, UTS and
//! (unless the network is granted) network namespaces, and, when the host is not root, a
//! user namespace whose map the host writes. The host puts the helper in the program's
//! cgroup, then lets it go. The helper is PID 1 of the new PID namespace: it builds the
//! private root and enters it, brings loopback up, sets the rlimits, and starts the
//! **program** as its child (a user namespace of its own when the host is root, mapped by
//! the helper to the unprivileged `nobody`); the program drops every capability, sets
//! `NO_NEW_PRIVS`, fences itself with landlock, installs the seccomp filters and `execve`s.
//! The helper then stays as the namespace's init: it reaps every orphan, forwards the
//! host's signals to the program, and when the program ends reports how and exits, which
//! kills whatever the program left in the namespace.
//!
//! The helper is a fork (its own copy of the host's memory), so it may outlive the spawn;
//! between the fork and the program's `execve` only raw system calls run, on data
//! prepared before the fork (the copied allocator may hold a lock another host thread had).
//! Not even the C library's id-changing wrappers (`setgroups`, `setresuid`, ...): they
//! synchronise with every thread the copied thread list names, and would wait forever.
#![allow(unsafe_code)]

mod helper;
mod program;

use std::ffi::{CString, c_int, c_void};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::cgroup::Cgroup;
use crate::fence::Fence;
use crate::mounts;
use crate::probe::Layer;
use crate::spawn::{self, Launch, Started};

/// The steps of the helper and the program, named in errors with the layer they build.
const STEPS: [(&str, Option<Layer>); 24] = [
    ("the helper's parent-death signal", None),
    ("waiting for the host", None),
    ("setsid", None),
    ("setgroups", Some(Layer::UserNamespace)),
    ("building the private root", Some(Layer::MountNamespace)),
    ("sethostname", Some(Layer::IpcUtsNamespaces)),
    ("bringing loopback up", Some(Layer::NetworkNamespace)),
    ("setrlimit", None),
    ("a pipe to the program", None),
    ("starting the program (clone)", None),
    ("writing the program's user map", Some(Layer::UserNamespace)),
    ("waiting for the user map", Some(Layer::UserNamespace)),
    ("the program's parent-death signal", None),
    ("setsid", None),
    ("dup2", None),
    ("dropping capabilities", None),
    ("setresgid", Some(Layer::UserNamespace)),
    ("setresuid", Some(Layer::UserNamespace)),
    ("PR_SET_NO_NEW_PRIVS", None),
    ("landlock", Some(Layer::Landlock)),
    ("close_range", None),
    ("chdir", None),
    ("seccomp", Some(Layer::Seccomp)),
    ("execve", None),
];
const MAP_CHILD: u32 = 10;
const BUILD_ROOT: u32 = 4;

/// Everything the helper and the program need, prepared before the fork.
pub struct Prepared {
    /// Namespaces the helper is cloned into (`CLONE_NEW*`).
    pub(crate) clone_flags: c_int,
    /// The host writes the helper's user map (a host that is not root).
    pub(crate) map_helper: Option<(u32, u32)>,
    /// The helper makes the program a user namespace mapped to this uid and gid (a root
    /// host).
    pub(crate) map_program: Option<(u32, u32)>,
    /// Who the program runs as, inside its user namespace.
    pub(crate) ids: (u32, u32),
    pub(crate) root: Option<mounts::Plan>,
    pub(crate) loopback: bool,
    pub(crate) rlimits: Vec<(u32, u64)>,
    pub(crate) fence: Option<Fence>,
    /// The in-sandbox paths the program's fence adds, and whether with every right
    /// (`/tmp`) or reading only (`/proc`).
    pub(crate) fence_paths: Vec<(CString, bool)>,
    pub(crate) filters: Vec<libc::sock_fprog>,
    /// Keeps the filters' instructions alive behind `filters`.
    pub(crate) _filter_code: Vec<Vec<libc::sock_filter>>,
    pub(crate) cgroup: Option<Cgroup>,
    /// The layers in place once the program runs.
    pub(crate) layers: Vec<Layer>,
    pub(crate) uid_map: CString,
    pub(crate) gid_map: CString,
}

impl Prepared {
    /// The layers the program will run inside.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The uid the program runs as, outside its user namespace (what owns the files it
    /// makes).
    pub fn uid(&self) -> u32 {
        self.ids.0
    }
}

// SAFETY: the raw pointers in `filters` point into `_filter_code`, owned alongside and
// never changed after `prepare`.
unsafe impl Send for Prepared {}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("layers", &self.layers).finish_non_exhaustive()
    }
}

/// What the helper writes back: the step that failed (0: none; else index + 1), the entry
/// of the root that failed, and errno; then, once the program ends, its wait status.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Report {
    step: u32,
    entry: u32,
    errno: i32,
}

/// What the helper reads, on its own copy of memory.
struct Helper<'a> {
    launch: &'a Launch,
    prepared: &'a Prepared,
    stdin: RawFd,
    go: (RawFd, RawFd),
    report: RawFd,
    program_stack: *mut u8,
    /// The descriptors the helper keeps, ascending; it closes every other one it inherited
    /// (the fork copied all of the host's: other plugins' sockets and pipes, files being
    /// written, which would stay open for the helper's whole life).
    keep: [RawFd; 7],
}

/// What the program reads and writes back, on the helper's memory (`CLONE_VM`).
struct Program<'a> {
    helper: &'a Helper<'a>,
    /// The read end of the helper's "user map written" pipe (`-1`: none).
    mapped: RawFd,
    /// The write end of a close-on-exec pipe the helper waits on.
    exec: RawFd,
    failed: Report,
}

/// A contained program the host started: beside the bare [`Started`], how the program
/// ends is read from the helper, and its cgroup.
#[derive(Debug)]
pub struct Contained {
    /// The read end of the helper's report pipe, which carries the program's wait status.
    pub(crate) report: OwnedFd,
    /// The program's cgroup, if the layer is in place.
    pub cgroup: Option<Cgroup>,
    /// The layers in place.
    pub layers: Vec<Layer>,
    /// The program's pid as the host sees it (the helper's only child), if it was read.
    pub program_pid: Option<u32>,
}

impl Contained {
    /// How the program ended, once the helper has exited: its own status as the helper
    /// reported it, or the memory limit when that killed it. `None` if the helper died
    /// first (then the whole namespace did).
    pub fn program_exit(&self) -> Option<crate::child::ExitStatus> {
        let status = crate::child::ExitStatus::from_raw(self.program_status()?);
        match (&self.cgroup, status) {
            (Some(cgroup), crate::child::ExitStatus::Signaled(libc::SIGKILL))
                if cgroup.memory_limit_hit() =>
            {
                Some(crate::child::ExitStatus::MemoryLimit(cgroup.memory_bytes().unwrap_or(0) >> 20))
            }
            (_, crate::child::ExitStatus::Signaled(libc::SIGSYS)) => {
                let syscall = self.program_pid.and_then(crate::audit::killed_syscall);
                Some(syscall.map_or(status, crate::child::ExitStatus::ForbiddenSyscall))
            }
            _ => Some(status),
        }
    }

    /// The program's wait status, once the helper has reported it (after the helper
    /// exited). `None` if the helper died first (then the whole namespace did).
    pub fn program_status(&self) -> Option<i32> {
        let mut status = [0u8; 4];
        match rustix::io::read(&self.report, &mut status) {
            Ok(4) => Some(i32::from_ne_bytes(status)),
            _ => None,
        }
    }
}

/// The helper's and the program's stacks.
const STACK: usize = 128 * 1024;

/// Starts `launch` inside the sandbox `prepared` describes. Call on the spawner thread.
pub(crate) fn start(launch: Launch, mut prepared: Prepared) -> io::Result<Started> {
    let devnull = spawn::dev_null()?;
    let (go_read, go_write) = spawn::pipe()?;
    let (report_read, report_write) = spawn::pipe()?;
    let mut program_stack = vec![0u8; STACK];
    let helper = Helper {
        launch: &launch,
        prepared: &prepared,
        stdin: devnull.as_raw_fd(),
        go: (go_read.as_raw_fd(), go_write.as_raw_fd()),
        report: report_write.as_raw_fd(),
        program_stack: program_stack.as_mut_ptr(),
        keep: {
            let ruleset = prepared.fence.as_ref().map_or(-1, |fence| fence.ruleset.as_raw_fd());
            let mut keep = [
                go_read.as_raw_fd(),
                report_write.as_raw_fd(),
                devnull.as_raw_fd(),
                launch.stdout.as_raw_fd(),
                launch.stderr.as_raw_fd(),
                ruleset,
                launch.image_fd(),
            ];
            keep.sort_unstable();
            keep
        },
    };
    let mut stack = vec![0u8; STACK];
    let top = (stack.as_mut_ptr() as usize + STACK) & !15;
    let mut pidfd: c_int = -1;
    let pid = spawn::with_signals_blocked(|| {
        // SAFETY: without CLONE_VM the helper runs on its own copy of this memory (the
        // stack, `helper` and everything it points to are copied with it); it only makes
        // raw system calls on that copy. Signals are blocked, so no host handler runs.
        unsafe {
            libc::clone(
                helper::helper_main,
                top as *mut c_void,
                prepared.clone_flags | libc::CLONE_PIDFD | libc::SIGCHLD,
                (&raw const helper).cast_mut().cast::<c_void>(),
                &raw mut pidfd,
            )
        }
    })?;
    drop((stack, program_stack, go_read, report_write, devnull));
    // SAFETY: the clone succeeded with CLONE_PIDFD, so the kernel stored a new descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let started = Started {
        pid: rustix::process::Pid::from_raw(pid).expect("clone returned a pid"),
        pidfd,
        contained: None,
    };
    let fail = |started: Started, error: io::Error| {
        let _ = rustix::process::pidfd_send_signal(&started.pidfd, rustix::process::Signal::KILL);
        let _ = crate::child::reap(&started.pidfd, std::time::Duration::from_secs(1));
        Err(error)
    };
    if let Some((uid, gid)) = prepared.map_helper
        && let Err(error) = write_user_map(pid, uid, gid)
    {
        return fail(started, error);
    }
    if let Some(cgroup) = &prepared.cgroup
        && let Err(error) = cgroup.add(pid)
    {
        return fail(started, io::Error::new(error.kind(), format!("cgroups: {error}")));
    }
    if let Err(error) = rustix::io::write(&go_write, &[1]) {
        return fail(started, io::Error::other(format!("cannot release the sandbox helper: {error}")));
    }
    drop(go_write);
    let report = match final_report(&report_read, std::time::Instant::now() + HELPER_PATIENCE) {
        Ok(report) => report,
        Err(Some(step)) => {
            let (name, layer) = STEPS[step as usize];
            let layer = layer.map(|layer| format!(", the {layer} layer")).unwrap_or_default();
            let error = io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the sandbox's helper did not start the program within {} s; it was at: {name}{layer}",
                    HELPER_PATIENCE.as_secs()
                ),
            );
            return fail(started, error);
        }
        Err(None) => {
            let status = crate::child::reap(&started.pidfd, std::time::Duration::from_secs(1)).ok().flatten();
            let how = status.map(|s| crate::child::ExitStatus::from_wait(&s).to_string()).unwrap_or_default();
            return fail(
                started,
                io::Error::other(format!("the sandbox helper ended before the program started ({how})")),
            );
        }
    };
    if report.step != 0 {
        let error = io::Error::from_raw_os_error(report.errno);
        let (step, layer) = STEPS[(report.step - 1) as usize];
        let entry = match (report.step - 1, &prepared.root) {
            (BUILD_ROOT, Some(root)) => root
                .described
                .get(report.entry as usize)
                .map(|what| format!(" ({what})"))
                .unwrap_or(" (pivot_root)".into()),
            _ => String::new(),
        };
        let layer = layer.map(|layer| format!("the {layer} layer: ")).unwrap_or_default();
        return fail(started, io::Error::new(error.kind(), format!("{layer}{step}{entry} failed: {error}")));
    }
    let contained = Contained {
        report: report_read,
        cgroup: prepared.cgroup.take(),
        layers: prepared.layers.clone(),
        program_pid: program_pid(pid),
    };
    Ok(Started { contained: Some(contained), ..started })
}

/// The helper's only child, the program, as the host sees it.
fn program_pid(helper: i32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{helper}/task/{helper}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// How long the helper may take to start the program before the host gives up on it (the
/// spawner thread, which starts every program, is never held longer).
const HELPER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads the helper's reports until its final one (progress records, `errno` -1, say which
/// step it is at). `Err(Some(step))`: none came by `deadline`, the helper was last at
/// `step`; `Err(None)`: the helper ended without one.
fn final_report(report: &OwnedFd, deadline: std::time::Instant) -> Result<Report, Option<u32>> {
    let mut at = 1; // waiting for the host: the helper's first step once released
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = rustix::event::Timespec::try_from(left)
            .unwrap_or(rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 });
        let mut poll = [rustix::event::PollFd::new(report, rustix::event::PollFlags::IN)];
        match rustix::event::poll(&mut poll, Some(&timeout)) {
            Ok(0) => return Err(Some(at)),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return Err(None),
        }
        let mut bytes = [0u8; std::mem::size_of::<Report>()];
        match read_full(report, &mut bytes) {
            Ok(n) if n == bytes.len() => {
                // SAFETY: `Report` is plain data of exactly this size.
                let record: Report = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
                if record.errno != PROGRESS {
                    return Ok(record);
                }
                at = record.step;
            }
            _ => return Err(None),
        }
    }
}

fn read_full(fd: &OwnedFd, buffer: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buffer.len() {
        match rustix::io::read(fd.as_fd(), &mut buffer[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(done)
}

/// Maps `uid`/`gid` to themselves in the user namespace of `pid` (the one id a process
/// that is not root may map).
fn write_user_map(pid: i32, uid: u32, gid: u32) -> io::Result<()> {
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/{pid}/{file}"), text).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("the user-namespace layer: writing /proc/{pid}/{file}: {error}"),
            )
        })
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{uid} {uid} 1\n"))?;
    write("gid_map", format!("{gid} {gid} 1\n"))
}

fn errno() -> i32 {
    // SAFETY: reading this thread's errno.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: i32) {
    // SAFETY: writing this thread's errno.
    unsafe { *libc::__errno_location() = value }
}

fn failure(step: u32) -> Report {
    Report { step: step + 1, entry: 0, errno: errno() }
}

/// The `errno` of a progress record: the helper is now at step `step` (an index in
/// `STEPS`).
const PROGRESS: i32 = -1;

/// Tells the host which step the helper is at, so a helper that hangs is named by it.
fn progress(fd: RawFd, step: u32) {
    write_report(fd, Report { step, entry: 0, errno: PROGRESS });
}

fn write_report(fd: RawFd, report: Report) {
    // SAFETY: writes a plain struct to a pipe.
    unsafe {
        libc::write(fd, (&raw const report).cast(), std::mem::size_of::<Report>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_has_a_name() {
        assert_eq!(STEPS[BUILD_ROOT as usize].1, Some(Layer::MountNamespace));
        assert_eq!(STEPS[MAP_CHILD as usize].1, Some(Layer::UserNamespace));
        assert_eq!(STEPS.last().unwrap().0, "execve");
    }
}
