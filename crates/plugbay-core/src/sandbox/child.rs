//! Watching a plugin child process exit, and reaping it.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// How a reaped process ended.
pub type ExitStatus = rustix::process::WaitIdStatus;

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
pub fn reap(pidfd: &OwnedFd, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    let mut poll = [rustix::event::PollFd::new(pidfd, rustix::event::PollFlags::IN)];
    let timeout = rustix::event::Timespec::try_from(limit)
        .unwrap_or(rustix::event::Timespec { tv_sec: i64::MAX, tv_nsec: 0 });
    rustix::event::poll(&mut poll, Some(&timeout))?;
    Ok(rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
    )?)
}

/// What [`describe`] says of a process that exited with status 0.
pub const CLEAN_EXIT: &str = "exited with exit status: 0";

/// Describes how a process ended, in words (`exited with exit status: 1`, `was killed by
/// signal 11 (SIGSEGV)`).
pub fn describe(status: &ExitStatus) -> String {
    match (status.terminating_signal(), status.exit_status()) {
        (Some(signal), _) => format!("was killed by signal {signal} ({})", signal_name(signal)),
        (None, Some(0)) => CLEAN_EXIT.to_owned(),
        (None, Some(code)) => format!("exited with exit status: {code}"),
        (None, None) => "ended".into(),
    }
}

/// The usual name of a signal number.
fn signal_name(signal: i32) -> &'static str {
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
