//! The helper, PID 1 of the sandbox: it builds the namespaces' inside (the private root,
//! loopback, the hostname, the rlimits), starts the program, maps its user namespace when
//! the host is root, then lives as the namespace's init. Raw system calls only, on the
//! helper's own copy of the host's memory.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::os::fd::{AsRawFd, RawFd};

use super::program::program_main;
use super::{
    BUILD_ROOT, Helper, MAP_CHILD, Prepared, Program, Report, STACK, failure, progress, set_errno,
    write_report,
};
use crate::mounts;

/// The helper: on failure, reports the step and exits; on success, becomes the reaper.
pub(super) extern "C" fn helper_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is this process's copy of the host's `Helper`.
    let helper = unsafe { &*arg.cast::<Helper<'_>>() };
    let failed = run_helper(helper);
    write_report(helper.report, failed);
    // SAFETY: `_exit` ends the helper without running host code.
    unsafe { libc::_exit(127) }
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
        // The raw call: the C library's `setgroups` would wait for the host's other threads
        // (which this forked copy no longer has) to change theirs too.
        if prepared.map_program.is_some()
            && libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
        {
            return failure(3);
        }
        progress(helper.report, BUILD_ROOT);
        if let Some(root) = &prepared.root
            && let Err(entry) = mounts::enter(root)
        {
            return Report { entry: entry as u32, ..failure(BUILD_ROOT) };
        }
        if prepared.clone_flags & libc::CLONE_NEWUTS != 0 && libc::sethostname(c"plugbay".as_ptr(), 7) != 0 {
            return failure(5);
        }
        progress(helper.report, 6);
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
        progress(helper.report, 9);
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
        // Until the program's own steps are done; what it was at is not known here.
        progress(helper.report, 12);
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
}
