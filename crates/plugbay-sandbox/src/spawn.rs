//! Starting a plugin program without copying the host's address space.
//!
//! `fork` copies the parent's page tables, which in a large host costs milliseconds; the
//! standard library's fast `posix_spawn` path has no way to arm a parent-death signal. So
//! this module does what glibc's `posix_spawn` does, plus that one step: the child is made
//! with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`, shares the host's memory and runs on
//! a stack of its own while the spawning thread is suspended, makes a handful of raw system
//! calls, and `execve`s. A failed step is written back to the shared memory, so the caller
//! learns which step failed and why without a pipe.
//!
//! Everything the child needs (strings, pointer arrays, descriptors) is prepared before the
//! clone: between clone and exec the child may not allocate or take a lock (other host
//! threads keep running and may hold the allocator's locks).
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use crate::contained::{Contained, Prepared};
use crate::image::ProgramImage;

/// A program to start, prepared so the child only has to make system calls.
pub struct Launch {
    pub(crate) program: CString,
    pub(crate) cwd: CString,
    // The strings the pointer arrays point into; kept alive with them.
    _strings: Vec<CString>,
    pub(crate) argv: Vec<*const c_char>,
    pub(crate) envp: Vec<*const c_char>,
    /// The write ends of the program's stdout and stderr pipes. The `Launch` is their only
    /// holder besides the child, so once both are gone the read ends see end-of-file.
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
    /// The verified program to execute by descriptor instead of by path (see
    /// [`Launch::with_image`]).
    pub(crate) image: Option<Arc<ProgramImage>>,
}

/// The read ends of a program's stdout and stderr.
#[derive(Debug)]
pub struct Output {
    /// The read end of its stdout.
    pub stdout: OwnedFd,
    /// The read end of its stderr.
    pub stderr: OwnedFd,
}

// SAFETY: the raw pointers in `argv` / `envp` point into `_strings`, which the `Launch` owns
// and never changes after `new`; moving the `Launch` to another thread moves them together.
unsafe impl Send for Launch {}

/// A started program.
#[derive(Debug)]
pub struct Started {
    /// Its process id (also its process group id).
    pub pid: rustix::process::Pid,
    /// A pidfd for it, obtained atomically with the clone: it can never name another process.
    pub pidfd: OwnedFd,
    /// For a program started in the sandbox: its helper's report, its cgroup, its layers.
    /// The pid and pidfd are then the helper's (the namespace's init, which ends when the
    /// program does).
    pub contained: Option<Contained>,
}

/// The child's set-up steps, named in errors.
const STEPS: [&str; 7] =
    ["setpgid", "prctl(PR_SET_PDEATHSIG)", "parent check", "dup2", "close_range", "chdir", "execve"];

/// What the child reads, and where it writes back a failure.
struct ChildSetup<'a> {
    launch: &'a Launch,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    parent: libc::pid_t,
    /// Index into `STEPS` plus one; 0 while no step failed.
    failed_step: usize,
    failed_errno: c_int,
}

/// The child's stack. It only runs the set-up below, a few frames deep.
const CHILD_STACK: usize = 64 * 1024;

impl Launch {
    /// Prepares `program` (made absolute, so the working directory change cannot alter
    /// which file runs) with `args`, exactly the environment `env`, in `cwd`, and the pipes
    /// its stdout and stderr will write to. The read ends come back beside the `Launch`, so
    /// the caller can read before the program is started, even on another thread: a start
    /// that fails drops the write ends, and the reader sees end-of-file.
    pub fn new<'a>(
        program: &Path,
        args: impl IntoIterator<Item = &'a OsStr>,
        env: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>,
        cwd: &Path,
    ) -> io::Result<(Launch, Output)> {
        let program = std::path::absolute(program)?;
        let mut strings = vec![c_string(program.as_os_str().as_bytes(), "the program path")?];
        for arg in args {
            strings.push(c_string(arg.as_bytes(), "an argument")?);
        }
        let argc = strings.len();
        for (name, value) in env {
            let mut pair = name.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            strings.push(c_string(&pair, "an environment variable")?);
        }
        let pointers = |range: &[CString]| {
            range.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect::<Vec<_>>()
        };
        let (stdout_read, stdout) = pipe()?;
        let (stderr_read, stderr) = pipe()?;
        let launch = Launch {
            program: c_string(program.as_os_str().as_bytes(), "the program path")?,
            cwd: c_string(cwd.as_os_str().as_bytes(), "the working directory")?,
            argv: pointers(&strings[..argc]),
            envp: pointers(&strings[argc..]),
            _strings: strings,
            stdout,
            stderr,
            image: None,
        };
        Ok((launch, Output { stdout: stdout_read, stderr: stderr_read }))
    }

    /// Executes `image` (the program's verified bytes) instead of opening the program's
    /// path again: `execveat(fd, "", AT_EMPTY_PATH)`. The path stays the program's
    /// `argv[0]`.
    pub fn with_image(mut self, image: Arc<ProgramImage>) -> Launch {
        self.image = Some(image);
        self
    }

    /// The descriptor to execute, `-1` for the path.
    pub(crate) fn image_fd(&self) -> RawFd {
        self.image.as_ref().map_or(-1, |image| image.fd())
    }

    /// Replaces this process with the program: from its image when it has one, else from
    /// its path. Returns only on failure.
    ///
    /// # Safety
    /// Only in a child before exec: it replaces the process.
    pub(crate) unsafe fn exec(&self) {
        let image = self.image_fd();
        // SAFETY: the pointers are the NUL-terminated arrays and strings this `Launch`
        // owns; the image descriptor is open in this process (kept across the set-up).
        unsafe {
            if image >= 0 {
                libc::syscall(
                    libc::SYS_execveat,
                    image,
                    c"".as_ptr(),
                    self.argv.as_ptr(),
                    self.envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
            } else {
                libc::execve(self.program.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
            }
        }
    }

    /// Starts the program: stdin `/dev/null`, stdout and stderr the pipes made by `new`, its
    /// own process group, SIGKILL when the calling thread exits (call it from a thread that
    /// lives as long as the host), signal mask empty and handlers at their defaults (ignored
    /// ones stay ignored, except SIGPIPE). Consumes the `Launch`, so the host's copies of
    /// the pipes' write ends are closed when it returns.
    pub fn start(self) -> io::Result<Started> {
        let devnull = dev_null()?;
        let mut setup = ChildSetup {
            launch: &self,
            stdin: devnull.as_raw_fd(),
            stdout: self.stdout.as_raw_fd(),
            stderr: self.stderr.as_raw_fd(),
            parent: rustix::process::getpid().as_raw_nonzero().get(),
            failed_step: 0,
            failed_errno: 0,
        };
        let mut stack = vec![0u8; CHILD_STACK];
        // The stack grows down on every Linux architecture we build for; keep it aligned.
        let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
        let mut pidfd: c_int = -1;
        let pid = with_signals_blocked(|| {
            // SAFETY: `child_main` only reads `setup` (alive on this frame, and this thread
            // is suspended until the child execs or exits: CLONE_VFORK) and writes its two
            // failure fields; it runs on `stack`, which outlives the clone for the same
            // reason. CLONE_PIDFD stores the pidfd in `pidfd`. Signals are blocked, so no
            // host signal handler can run on the child's stack.
            unsafe {
                libc::clone(
                    child_main,
                    top as *mut c_void,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                    (&raw mut setup).cast::<c_void>(),
                    &raw mut pidfd,
                )
            }
        })?;
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel stored a new descriptor here because CLONE_PIDFD was given and
        // the clone succeeded; nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        // SAFETY: the child has exec'd or exited (CLONE_VFORK), so it no longer writes.
        let (failed_step, failed_errno) = unsafe {
            (std::ptr::read_volatile(&setup.failed_step), std::ptr::read_volatile(&setup.failed_errno))
        };
        drop(stack);
        if failed_step > 0 {
            let _ = rustix::process::waitid(
                rustix::process::WaitId::PidFd(pidfd.as_fd()),
                rustix::process::WaitIdOptions::EXITED,
            );
            let error = io::Error::from_raw_os_error(failed_errno);
            return Err(io::Error::new(error.kind(), format!("{} failed: {error}", STEPS[failed_step - 1])));
        }
        Ok(Started {
            pid: rustix::process::Pid::from_raw(pid).expect("clone returned a positive pid"),
            pidfd,
            contained: None,
        })
    }

    /// Starts the program inside the sandbox `prepared` describes (see
    /// [`crate::Sandboxing::prepare`]); otherwise as [`Launch::start`]. An error names the
    /// layer and the step that failed.
    #[cfg(target_os = "linux")]
    pub fn start_contained(self, prepared: Prepared) -> io::Result<Started> {
        crate::contained::start(self, prepared)
    }
}

/// `/dev/null`, read-only, above the standard descriptors.
pub(crate) fn dev_null() -> io::Result<OwnedFd> {
    let devnull =
        rustix::fs::open("/dev/null", rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC, 0.into())?;
    above_stdio(devnull)
}

fn c_string(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} contains a NUL byte")))
}

/// A close-on-exec pipe whose ends are not 0, 1 or 2 (a host started with closed standard
/// descriptors would otherwise get them, and the child's `dup2`s would clash).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((above_stdio(read)?, above_stdio(write)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
}

/// Runs `clone` with every signal blocked in the calling thread, then restores its mask.
pub(crate) fn with_signals_blocked(clone: impl FnOnce() -> c_int) -> io::Result<c_int> {
    // SAFETY: plain libc calls on local, initialised signal sets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let error = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
        if error != 0 {
            return Err(io::Error::from_raw_os_error(error));
        }
        let pid = clone();
        let saved = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        if pid < 0 {
            return Err(saved);
        }
        Ok(pid)
    }
}

/// The child, between clone and exec. Only raw system calls: no allocation, no lock, no
/// panic. On a failure it records the step and errno in the shared `ChildSetup` and exits.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildSetup` the parent passed, alive and not touched by the
    // parent while it is suspended.
    let setup = unsafe { &mut *arg.cast::<ChildSetup<'_>>() };
    let step = run_child_steps(setup);
    // SAFETY: errno is readable in the child (it shares the suspended thread's TLS).
    setup.failed_errno = unsafe { *libc::__errno_location() };
    setup.failed_step = step + 1;
    // SAFETY: `_exit` ends the child without running any host code (no atexit handlers).
    unsafe { libc::_exit(127) }
}

/// Runs the set-up steps; returns the index (in `STEPS`) of the one that failed, or does
/// not return at all when `execve` succeeds.
fn run_child_steps(setup: &ChildSetup<'_>) -> usize {
    // SAFETY: every call below is a thin async-signal-safe system call wrapper on
    // descriptors and strings the parent prepared and keeps alive.
    unsafe {
        reset_signal_handlers();
        if libc::setpgid(0, 0) != 0 {
            return 0;
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return 1;
        }
        if libc::getppid() != setup.parent {
            // The host died before the signal was armed: it will never come.
            *libc::__errno_location() = libc::ESRCH;
            return 2;
        }
        for (from, to) in [(setup.stdin, 0), (setup.stdout, 1), (setup.stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                return 3;
            }
        }
        // Only 0, 1 and 2 survive the exec, even a descriptor the host (or a library in
        // it) opened without close-on-exec.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
            return 4;
        }
        if libc::chdir(setup.launch.cwd.as_ptr()) != 0 {
            return 5;
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        setup.launch.exec();
        6
    }
}

/// Puts every caught signal back to its default action, so no host handler can run in the
/// child between unblocking signals and exec; SIGPIPE goes back to its default too (Rust
/// programs ignore it, children should not inherit that).
///
/// # Safety
/// Only call in the child before exec (it changes the process's signal dispositions).
pub(crate) unsafe fn reset_signal_handlers() {
    // SAFETY: `sigaction` on a zeroed struct (SIG_DFL, empty mask) for each signal number;
    // invalid numbers fail harmlessly.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..65 {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            let caught = current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
            if caught || signal == libc::SIGPIPE {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
    }
}
