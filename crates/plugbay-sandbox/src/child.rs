//! Watching a plugin child process exit, and reaping it.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// What `waitid` reports of a reaped process.
pub type WaitStatus = rustix::process::WaitIdStatus;

/// How a process ended, as data: the host decides on it (a clean exit is `Exited(0)`) and
/// renders it for people with `Display` (`exited with exit status: 1`, `was killed by
/// signal 9 (SIGKILL)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this status.
    Exited(i32),
    /// It was killed by this signal number.
    Signaled(i32),
    /// The sandbox's memory limit of this many MiB killed it (with SIGKILL).
    MemoryLimit(u64),
    /// The sandbox's seccomp filter killed it (with SIGSYS) for this system call number.
    ForbiddenSyscall(i64),
    /// It ended, but how is not known (it could not be reaped, or the host lost sight of
    /// it).
    Unknown,
}

impl ExitStatus {
    /// The status `waitid` reported.
    pub fn from_wait(status: &WaitStatus) -> ExitStatus {
        match (status.terminating_signal(), status.exit_status()) {
            (Some(signal), _) => ExitStatus::Signaled(signal),
            (None, Some(code)) => ExitStatus::Exited(code),
            (None, None) => ExitStatus::Unknown,
        }
    }

    /// A raw wait status (`waitpid`'s), as the sandbox's helper reports the program's.
    pub fn from_raw(status: i32) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled(libc::WTERMSIG(status))
        } else if libc::WIFEXITED(status) {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        } else {
            ExitStatus::Unknown
        }
    }

    /// Whether the process exited with status 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The signal that killed it, if one did.
    pub fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Signaled(signal) => Some(signal),
            ExitStatus::MemoryLimit(_) => Some(libc::SIGKILL),
            ExitStatus::ForbiddenSyscall(_) => Some(libc::SIGSYS),
            _ => None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitStatus::Exited(code) => write!(f, "exited with exit status: {code}"),
            ExitStatus::Signaled(libc::SIGSYS) => write!(
                f,
                "was killed by signal {} (SIGSYS): it made a system call the sandbox forbids \
                 (docs/sandbox.md names them)",
                libc::SIGSYS
            ),
            ExitStatus::Signaled(signal) => {
                write!(f, "was killed by signal {signal} ({})", signal_name(signal))
            }
            ExitStatus::MemoryLimit(mib) => write!(f, "was killed: memory limit {mib} MiB reached"),
            ExitStatus::ForbiddenSyscall(number) => {
                let name = crate::syscall_name(number).unwrap_or("a system call");
                write!(
                    f,
                    "was killed by signal {} (SIGSYS): the sandbox forbids the system call {name} ({number}) \
                     (docs/sandbox.md)",
                    libc::SIGSYS
                )
            }
            ExitStatus::Unknown => f.write_str("ended (how is not known)"),
        }
    }
}

/// Waits until the process behind `pidfd` has exited, without reaping it (its pid, and so
/// its process group id, stay reserved until it is reaped).
#[cfg(target_os = "linux")]
pub async fn exited(pidfd: OwnedFd) {
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;
    // SAFETY: the `OwnedFd` moves into the `AsyncFd`, so the descriptor stays open and
    // refers to the same pidfd until the `AsyncFd` is dropped; nothing else can close it.
    let Ok(fd) = (unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }) else { return };
    let _ = fd.readable().await;
}

/// Reaps the process behind `pidfd`, waiting at most `limit` for it to exit. `None` if it
/// is still running after that (or was reaped already).
pub fn reap(pidfd: &OwnedFd, limit: Duration) -> std::io::Result<Option<WaitStatus>> {
    let mut poll = [rustix::event::PollFd::new(pidfd, rustix::event::PollFlags::IN)];
    let timeout = rustix::event::Timespec::try_from(limit)
        .unwrap_or(rustix::event::Timespec { tv_sec: i64::MAX, tv_nsec: 0 });
    rustix::event::poll(&mut poll, Some(&timeout))?;
    Ok(rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
    )?)
}

/// The usual name of a signal number (`SIGKILL`; `a signal` for one without a usual name).
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_as_before_and_only_exit_zero_is_success() {
        assert_eq!(ExitStatus::Exited(0).to_string(), "exited with exit status: 0");
        assert_eq!(ExitStatus::Exited(7).to_string(), "exited with exit status: 7");
        assert_eq!(ExitStatus::Signaled(9).to_string(), "was killed by signal 9 (SIGKILL)");
        assert_eq!(ExitStatus::Signaled(64).to_string(), "was killed by signal 64 (a signal)");
        assert!(ExitStatus::Exited(0).success());
        for other in [ExitStatus::Exited(1), ExitStatus::Signaled(15), ExitStatus::Unknown] {
            assert!(!other.success(), "{other}");
        }
        assert_eq!(serde_json::to_string(&ExitStatus::Signaled(9)).unwrap(), r#"{"signaled":9}"#);
    }

    #[test]
    fn a_reaped_child_reports_its_signal_as_data() {
        let child = std::process::Command::new("sh").args(["-c", "kill -9 $$"]).spawn().unwrap();
        let pid = rustix::process::Pid::from_child(&child);
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        let status = reap(&pidfd, Duration::from_secs(10)).unwrap().expect("it exits");
        assert_eq!(ExitStatus::from_wait(&status), ExitStatus::Signaled(9));
        drop(child);
    }
}
