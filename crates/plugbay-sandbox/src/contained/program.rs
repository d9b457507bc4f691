//! The program, between its clone from the helper and its `execve`: it waits for its user
//! map, drops every capability, sets `NO_NEW_PRIVS`, fences itself with landlock, installs
//! the seccomp filters and execs. Raw system calls only, on the helper's memory.
#![allow(unsafe_code)]

use std::ffi::{CString, c_int, c_void};
use std::os::fd::{AsRawFd, RawFd};

use super::{Program, errno, failure};
use crate::spawn;

/// The program, between its clone and `execve`.
pub(super) extern "C" fn program_main(arg: *mut c_void) -> c_int {
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
        // Raw system calls, not the C library's wrappers: those would first signal every
        // other thread of the host (whose thread list this copy still holds) and wait for
        // them forever.
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
            return 16;
        }
        if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
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
        launch.exec();
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
