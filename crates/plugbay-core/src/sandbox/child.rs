//! A plugin child process: what runs in it between `fork` and `exec`, and watching it exit.
#![allow(unsafe_code)]

use std::process::Command;

/// Makes `command`'s child die with the host: it gets SIGKILL when the thread that spawned
/// it exits (so spawn from a thread that lives as long as the host), and exits at once if
/// the host already died before the signal was armed.
pub fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = rustix::process::getpid();
        // SAFETY: the hook runs in the forked child before exec and only makes two raw
        // system calls (prctl, getppid) and `_exit`, all async-signal-safe; it allocates
        // nothing and takes no lock.
        unsafe {
            command.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
                if rustix::process::getppid() != Some(parent) {
                    // The host died between fork and prctl: the signal will never come.
                    // Failing here makes the child exit before exec.
                    // (No allocation between fork and exec: an errno-only error.)
                    return Err(std::io::Error::from_raw_os_error(rustix::io::Errno::SRCH.raw_os_error()));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Waits until the process behind `pidfd` has exited, without reaping it (its pid, and so
/// its process group id, stay reserved until it is reaped).
#[cfg(target_os = "linux")]
pub async fn exited(pidfd: std::os::fd::OwnedFd) {
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;
    // SAFETY: the `OwnedFd` moves into the `AsyncFd`, so the descriptor stays open and
    // refers to the same pidfd until the `AsyncFd` is dropped; nothing else can close it.
    let Ok(fd) = (unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }) else { return };
    let _ = fd.readable().await;
}
