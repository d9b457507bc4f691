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
#![allow(unsafe_code)]

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
    keep: [RawFd; 6],
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
                helper_main,
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
    let mut bytes = [0u8; std::mem::size_of::<Report>()];
    let read = read_full(&report_read, &mut bytes);
    let report: Report = match read {
        // SAFETY: `Report` is plain data of exactly this size.
        Ok(n) if n == bytes.len() => unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) },
        _ => {
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

/// The helper: on failure, reports the step and exits; on success, becomes the reaper.
extern "C" fn helper_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is this process's copy of the host's `Helper`.
    let helper = unsafe { &*arg.cast::<Helper<'_>>() };
    let failed = run_helper(helper);
    write_report(helper.report, failed);
    // SAFETY: `_exit` ends the helper without running host code.
    unsafe { libc::_exit(127) }
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

fn write_report(fd: RawFd, report: Report) {
    // SAFETY: writes a plain struct to a pipe.
    unsafe {
        libc::write(fd, (&raw const report).cast(), std::mem::size_of::<Report>());
    }
}

/// The helper's steps; returns only on failure (or after the program ended: then the
/// report is already written and it exits).
fn run_helper(helper: &Helper<'_>) -> Report {
    let prepared = helper.prepared;
    // SAFETY: raw system calls on descriptors and strings this process's copy holds.
    unsafe {
        close_all_but(&helper.keep);
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return failure(0);
        }
        let mut byte = 0u8;
        if libc::read(helper.go.0, (&raw mut byte).cast(), 1) != 1 {
            // The host is gone (or failed to set the helper up, and will kill it).
            set_errno(libc::ESRCH);
            return failure(1);
        }
        libc::close(helper.go.0);
        if libc::setsid() < 0 {
            return failure(2);
        }
        if prepared.map_program.is_some() && libc::setgroups(0, std::ptr::null()) != 0 {
            return failure(3);
        }
        if let Some(root) = &prepared.root
            && let Err(entry) = mounts::enter(root)
        {
            return Report { entry: entry as u32, ..failure(BUILD_ROOT) };
        }
        if prepared.clone_flags & libc::CLONE_NEWUTS != 0 && libc::sethostname(c"plugbay".as_ptr(), 7) != 0 {
            return failure(5);
        }
        if prepared.loopback && !loopback_up() {
            return failure(6);
        }
        for &(resource, value) in &prepared.rlimits {
            let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
            if libc::setrlimit(resource as _, &limit) != 0 {
                return failure(7);
            }
        }
        let mut exec = [0; 2];
        let mut mapped = [-1; 2];
        if libc::pipe2(exec.as_mut_ptr(), libc::O_CLOEXEC) != 0
            || (prepared.map_program.is_some() && libc::pipe2(mapped.as_mut_ptr(), libc::O_CLOEXEC) != 0)
        {
            return failure(8);
        }
        let mut program = Program { helper, mapped: mapped[0], exec: exec[1], failed: Report::default() };
        let top = (helper.program_stack as usize + STACK) & !15;
        let flags = libc::CLONE_VM
            | libc::SIGCHLD
            | if prepared.map_program.is_some() { libc::CLONE_NEWUSER } else { 0 };
        let child = libc::clone(
            program_main,
            top as *mut c_void,
            flags,
            (&raw mut program).cast(),
            std::ptr::null_mut::<c_int>(),
        );
        if child < 0 {
            return failure(9);
        }
        libc::close(exec[1]);
        if let Some((uid, gid)) = prepared.map_program {
            libc::close(mapped[0]);
            let written = map_program(child, uid, gid, prepared);
            if !written {
                let report = failure(MAP_CHILD);
                libc::kill(child, libc::SIGKILL);
                return report;
            }
            libc::write(mapped[1], (&raw const byte).cast(), 1);
            libc::close(mapped[1]);
        }
        // End of file: the program exec'd (the pipe is close-on-exec) or died.
        while libc::read(exec[0], (&raw mut byte).cast(), 1) > 0 {}
        libc::close(exec[0]);
        let failed = std::ptr::read_volatile(&raw const program.failed);
        if failed.step != 0 {
            let mut status = 0;
            libc::waitpid(child, &mut status, 0);
            return failed;
        }
        write_report(helper.report, Report::default());
        // The host reads the program's output through pipes the program holds; the
        // helper lets go of its copies.
        libc::close(helper.stdin);
        libc::close(helper.launch.stdout.as_raw_fd());
        libc::close(helper.launch.stderr.as_raw_fd());
        reap_until(child, helper.report)
    }
}

/// The helper's life as init: reaps every child, forwards the host's signals to the
/// program, and when the program ends writes its wait status and exits.
///
/// # Safety
/// Only in the helper, with every signal blocked.
unsafe fn reap_until(program: libc::pid_t, report: RawFd) -> ! {
    // SAFETY: raw signal and wait calls.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        loop {
            let signal = libc::sigwaitinfo(&all, std::ptr::null_mut());
            if signal == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let reaped = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if reaped <= 0 {
                        break;
                    }
                    if reaped == program {
                        libc::write(report, (&raw const status).cast(), 4);
                        libc::_exit(0);
                    }
                }
            } else if signal > 0 {
                libc::kill(program, signal);
            }
        }
    }
}

/// Writes the program's user map: the one unprivileged `uid`/`gid` (the helper, root
/// outside, may map any id). The path is `/proc/<pid>/...` of the helper's fresh `/proc`.
///
/// # Safety
/// Only in the helper.
unsafe fn map_program(pid: libc::pid_t, _uid: u32, _gid: u32, prepared: &Prepared) -> bool {
    let mut path = [0u8; 64];
    let mut write_file = |file: &[u8], text: &[u8]| {
        let length = proc_path(&mut path, pid, file);
        // SAFETY: `path` is NUL-terminated at `length`; `text` is a plain byte slice.
        unsafe {
            let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
            let _ = length;
            if fd < 0 {
                return false;
            }
            let written = libc::write(fd, text.as_ptr().cast(), text.len()) == text.len() as isize;
            libc::close(fd);
            written
        }
    };
    write_file(b"setgroups", b"deny")
        && write_file(b"uid_map", prepared.uid_map.as_bytes())
        && write_file(b"gid_map", prepared.gid_map.as_bytes())
}

/// `/proc/<pid>/<file>\0` into `buffer`, without allocating; returns its length.
fn proc_path(buffer: &mut [u8; 64], pid: libc::pid_t, file: &[u8]) -> usize {
    let mut length = 0;
    for &byte in b"/proc/" {
        buffer[length] = byte;
        length += 1;
    }
    let mut digits = [0u8; 12];
    let mut count = 0;
    let mut value = pid.unsigned_abs();
    loop {
        digits[count] = b'0' + (value % 10) as u8;
        count += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    while count > 0 {
        count -= 1;
        buffer[length] = digits[count];
        length += 1;
    }
    buffer[length] = b'/';
    length += 1;
    for &byte in file {
        buffer[length] = byte;
        length += 1;
    }
    buffer[length] = 0;
    length
}

/// Closes every descriptor from 3 up but those in `keep` (ascending; `-1` entries are
/// ignored).
///
/// # Safety
/// Only in the helper, right after the fork.
unsafe fn close_all_but(keep: &[RawFd]) {
    let mut from: u32 = 3;
    for &fd in keep {
        if fd < 0 || (fd as u32) < from {
            continue;
        }
        if fd as u32 > from {
            // SAFETY: closes a range of this process's own descriptors.
            unsafe { libc::syscall(libc::SYS_close_range, from, fd as u32 - 1, 0) };
        }
        from = fd as u32 + 1;
    }
    // SAFETY: as above, up to the last possible descriptor.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0) };
}

/// Brings `lo` up in the helper's network namespace.
fn loopback_up() -> bool {
    // SAFETY: a datagram socket and one ioctl on a zeroed `ifreq` naming `lo`.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return false;
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
            *slot = *byte as libc::c_char;
        }
        request.ifr_ifru.ifru_flags =
            (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as libc::c_short;
        let ok = libc::ioctl(socket, libc::SIOCSIFFLAGS, &request) == 0;
        libc::close(socket);
        ok
    }
}

/// The program, between its clone and `execve`.
extern "C" fn program_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the helper's `Program`, alive on the helper's stack until this
    // process execs or exits (the helper waits for the exec pipe's end of file).
    let program = unsafe { &mut *arg.cast::<Program<'_>>() };
    let step = run_program(program);
    let report = failure(step);
    // SAFETY: the helper reads this only after this process exec'd or exited.
    unsafe { std::ptr::write_volatile(&raw mut program.failed, report) };
    // SAFETY: ends the process without running host code.
    unsafe { libc::_exit(127) }
}

/// The program's steps; returns the index of the one that failed.
fn run_program(program: &Program<'_>) -> u32 {
    let helper = program.helper;
    let prepared = helper.prepared;
    let launch = helper.launch;
    // SAFETY: raw system calls on data the helper's copy holds.
    unsafe {
        if program.mapped >= 0 {
            let mut byte = 0u8;
            if libc::read(program.mapped, (&raw mut byte).cast(), 1) != 1 {
                return 11;
            }
            libc::close(program.mapped);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return 12;
        }
        if libc::setsid() < 0 {
            return 13;
        }
        for (from, to) in [(helper.stdin, 0), (launch.stdout.as_raw_fd(), 1), (launch.stderr.as_raw_fd(), 2)]
        {
            if libc::dup2(from, to) < 0 {
                return 14;
            }
        }
        for capability in 0..64 {
            // EINVAL: no such capability; EPERM: a host that is not root and made no user
            // namespace has none to drop (and NO_NEW_PRIVS keeps it from gaining any).
            if libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) != 0
                && errno() != libc::EINVAL
                && errno() != libc::EPERM
            {
                return 15;
            }
        }
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        let (uid, gid) = prepared.ids;
        if libc::setresgid(gid, gid, gid) != 0 {
            return 16;
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return 17;
        }
        if !drop_all_capabilities() {
            return 15;
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return 18;
        }
        if let Some(fence) = &prepared.fence {
            let ruleset = fence.ruleset.as_raw_fd();
            for (path, all) in &prepared.fence_paths {
                let mask = if *all { fence.all_mask } else { fence.read_mask };
                if !add_fence_rule(ruleset, path, mask) {
                    return 19;
                }
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) != 0 {
                return 19;
            }
        }
        // Everything above 2 closes at exec, the exec pipe included (so the helper sees
        // end of file only then).
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
            return 20;
        }
        let _ = program.exec;
        if libc::chdir(launch.cwd.as_ptr()) != 0 {
            return 21;
        }
        spawn::reset_signal_handlers();
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for (index, filter) in prepared.filters.iter().enumerate() {
            // The allow-list (the second filter) logs what it denies to the kernel's log
            // (`dmesg`: `type=1326 ... syscall=<n>`), so a denied call can be named.
            let flags = if index == 1 { libc::SECCOMP_FILTER_FLAG_LOG } else { 0 };
            let filter = filter as *const libc::sock_fprog;
            if libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, filter) != 0 {
                return 22;
            }
        }
        libc::execve(launch.program.as_ptr(), launch.argv.as_ptr(), launch.envp.as_ptr());
        23
    }
}

/// Adds a landlock rule for `path` (opened here, inside the sandbox) with `mask`.
///
/// # Safety
/// Only in the program before exec.
unsafe fn add_fence_rule(ruleset: RawFd, path: &CString, mask: u64) -> bool {
    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }
    // SAFETY: an O_PATH open and the landlock_add_rule call on a packed attribute struct.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let rule = PathBeneath { allowed_access: mask, parent_fd: fd };
        let added = libc::syscall(libc::SYS_landlock_add_rule, ruleset, 1, &raw const rule, 0) == 0;
        libc::close(fd);
        added
    }
}

/// Empties the effective, permitted and inheritable capability sets.
fn drop_all_capabilities() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header { version: VERSION_3, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset with a version-3 header and its two data words.
    unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths_are_written_without_allocating() {
        let mut buffer = [0u8; 64];
        let length = proc_path(&mut buffer, 4096, b"uid_map");
        assert_eq!(&buffer[..length], b"/proc/4096/uid_map");
        assert_eq!(buffer[length], 0);
        let length = proc_path(&mut buffer, 2, b"gid_map");
        assert_eq!(&buffer[..length], b"/proc/2/gid_map");
    }

    #[test]
    fn every_step_has_a_name() {
        assert_eq!(STEPS[BUILD_ROOT as usize].1, Some(Layer::MountNamespace));
        assert_eq!(STEPS[MAP_CHILD as usize].1, Some(Layer::UserNamespace));
        assert_eq!(STEPS.last().unwrap().0, "execve");
    }
}
