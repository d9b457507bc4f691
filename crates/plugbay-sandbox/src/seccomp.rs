//! The seccomp-bpf filters (built with `seccompiler`, installed by the child just before
//! `execve`). Three filters, which the kernel all runs, the strictest answer winning:
//!
//! 1. **kill**: the calls that only an attack needs (ptrace, mount, namespaces, bpf, keys,
//!    kexec, kernel modules, perf, userfaultfd, ...) end the whole program with `SIGSYS`,
//!    so the crash report names the cause; the 32-bit `int 0x80` entry and any other
//!    architecture are killed too;
//! 2. **allow**: a default-deny allow-list sized for real programs (Rust with tokio, Python,
//!    C with glibc); any other call fails with `EPERM`. `clone` is allowed without namespace
//!    flags, `ioctl` without `TIOCSTI` / `TIOCLINUX` (typing into a terminal);
//! 3. **clone3** answers `ENOSYS`, so the C library falls back to `clone`, whose flags the
//!    allow filter can read (`clone3` passes them in memory, out of a filter's reach).
//!
//! `socket` is allowed for the local, IPv4, IPv6 and netlink families only.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

/// The calls that kill the program with `SIGSYS`.
pub const KILLED: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("bpf", libc::SYS_bpf),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
];

/// The calls a contained program may make (besides `clone`, `ioctl` and `socket`, allowed
/// with the argument checks above).
const ALLOWED: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_open,
    libc::SYS_close,
    libc::SYS_stat,
    libc::SYS_fstat,
    libc::SYS_lstat,
    libc::SYS_poll,
    libc::SYS_lseek,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_munmap,
    libc::SYS_brk,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_access,
    libc::SYS_pipe,
    libc::SYS_select,
    libc::SYS_sched_yield,
    libc::SYS_mremap,
    libc::SYS_msync,
    libc::SYS_mincore,
    libc::SYS_madvise,
    libc::SYS_shmget,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_pause,
    libc::SYS_nanosleep,
    libc::SYS_getitimer,
    libc::SYS_alarm,
    libc::SYS_setitimer,
    libc::SYS_getpid,
    libc::SYS_sendfile,
    libc::SYS_connect,
    libc::SYS_accept,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_socketpair,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_execve,
    libc::SYS_exit,
    libc::SYS_wait4,
    libc::SYS_kill,
    libc::SYS_uname,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semctl,
    libc::SYS_shmdt,
    libc::SYS_msgget,
    libc::SYS_msgsnd,
    libc::SYS_msgrcv,
    libc::SYS_msgctl,
    libc::SYS_fcntl,
    libc::SYS_flock,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_truncate,
    libc::SYS_ftruncate,
    libc::SYS_getdents,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_rename,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_creat,
    libc::SYS_link,
    libc::SYS_unlink,
    libc::SYS_symlink,
    libc::SYS_readlink,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_chown,
    libc::SYS_fchown,
    libc::SYS_lchown,
    libc::SYS_umask,
    libc::SYS_gettimeofday,
    libc::SYS_getrlimit,
    libc::SYS_getrusage,
    libc::SYS_sysinfo,
    libc::SYS_times,
    libc::SYS_getuid,
    libc::SYS_getgid,
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_geteuid,
    libc::SYS_getegid,
    libc::SYS_setpgid,
    libc::SYS_getppid,
    libc::SYS_getpgrp,
    libc::SYS_setsid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_getgroups,
    libc::SYS_setgroups,
    libc::SYS_setresuid,
    libc::SYS_getresuid,
    libc::SYS_setresgid,
    libc::SYS_getresgid,
    libc::SYS_getpgid,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_getsid,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigsuspend,
    libc::SYS_sigaltstack,
    libc::SYS_utime,
    libc::SYS_personality,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    libc::SYS_sched_setparam,
    libc::SYS_sched_getparam,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_mlock,
    libc::SYS_munlock,
    libc::SYS_mlockall,
    libc::SYS_munlockall,
    libc::SYS_prctl,
    libc::SYS_arch_prctl,
    libc::SYS_setrlimit,
    libc::SYS_sync,
    libc::SYS_gettid,
    libc::SYS_readahead,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_flistxattr,
    libc::SYS_tkill,
    libc::SYS_time,
    libc::SYS_futex,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_getaffinity,
    libc::SYS_epoll_create,
    libc::SYS_getdents64,
    libc::SYS_set_tid_address,
    libc::SYS_restart_syscall,
    libc::SYS_semtimedop,
    libc::SYS_fadvise64,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_exit_group,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_ctl,
    libc::SYS_tgkill,
    libc::SYS_utimes,
    libc::SYS_mbind,
    libc::SYS_set_mempolicy,
    libc::SYS_get_mempolicy,
    libc::SYS_waitid,
    libc::SYS_inotify_init,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
    libc::SYS_openat,
    libc::SYS_mkdirat,
    libc::SYS_fchownat,
    libc::SYS_futimesat,
    libc::SYS_newfstatat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_fchmodat,
    libc::SYS_faccessat,
    libc::SYS_pselect6,
    libc::SYS_ppoll,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_splice,
    libc::SYS_tee,
    libc::SYS_sync_file_range,
    libc::SYS_vmsplice,
    libc::SYS_utimensat,
    libc::SYS_epoll_pwait,
    libc::SYS_signalfd,
    libc::SYS_timerfd_create,
    libc::SYS_eventfd,
    libc::SYS_fallocate,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_accept4,
    libc::SYS_signalfd4,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_inotify_init1,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_recvmmsg,
    libc::SYS_prlimit64,
    libc::SYS_syncfs,
    libc::SYS_sendmmsg,
    libc::SYS_getcpu,
    libc::SYS_sched_setattr,
    libc::SYS_sched_getattr,
    libc::SYS_renameat2,
    libc::SYS_seccomp,
    libc::SYS_getrandom,
    libc::SYS_memfd_create,
    libc::SYS_execveat,
    libc::SYS_membarrier,
    libc::SYS_mlock2,
    libc::SYS_copy_file_range,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_pkey_mprotect,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_statx,
    libc::SYS_rseq,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pidfd_open,
    libc::SYS_close_range,
    libc::SYS_openat2,
    libc::SYS_faccessat2,
    libc::SYS_epoll_pwait2,
    libc::SYS_futex_waitv,
    libc::SYS_fchmodat2,
];

/// The calls the allow-list leaves out that a plugin may be granted by name
/// (`permissions.syscalls`): rarely needed, or more kernel surface than most programs want.
pub const GRANTABLE: &[(&str, i64)] = &[
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("mknod", libc::SYS_mknod),
    ("mknodat", libc::SYS_mknodat),
    ("setxattr", libc::SYS_setxattr),
    ("lsetxattr", libc::SYS_lsetxattr),
    ("fsetxattr", libc::SYS_fsetxattr),
    ("removexattr", libc::SYS_removexattr),
    ("lremovexattr", libc::SYS_lremovexattr),
    ("fremovexattr", libc::SYS_fremovexattr),
    ("ioprio_get", libc::SYS_ioprio_get),
    ("ioprio_set", libc::SYS_ioprio_set),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("fanotify_mark", libc::SYS_fanotify_mark),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("mq_open", libc::SYS_mq_open),
    ("mq_unlink", libc::SYS_mq_unlink),
    ("mq_timedsend", libc::SYS_mq_timedsend),
    ("mq_timedreceive", libc::SYS_mq_timedreceive),
    ("mq_notify", libc::SYS_mq_notify),
    ("mq_getsetattr", libc::SYS_mq_getsetattr),
    ("kcmp", libc::SYS_kcmp),
    ("migrate_pages", libc::SYS_migrate_pages),
    ("move_pages", libc::SYS_move_pages),
    ("process_madvise", libc::SYS_process_madvise),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("landlock_create_ruleset", libc::SYS_landlock_create_ruleset),
    ("landlock_add_rule", libc::SYS_landlock_add_rule),
    ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
    ("memfd_secret", libc::SYS_memfd_secret),
    ("remap_file_pages", libc::SYS_remap_file_pages),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("vhangup", libc::SYS_vhangup),
    ("syslog", libc::SYS_syslog),
];

/// Checks that a plugin may be granted the system call `name`: `Ok` with its number for
/// one of [`GRANTABLE`] (or one already allowed), else why not.
pub fn grantable(name: &str) -> Result<Option<i64>, String> {
    if let Some((_, number)) = GRANTABLE.iter().find(|(grantable, _)| *grantable == name) {
        return Ok(Some(*number));
    }
    if KILLED.iter().any(|(killed, _)| *killed == name) {
        return Err(format!("{name} cannot be granted: the sandbox kills any program that calls it"));
    }
    if name_of(name).is_some() {
        return Ok(None);
    }
    let names: Vec<&str> = GRANTABLE.iter().map(|(name, _)| *name).collect();
    Err(format!(
        "{name} is not a system call the sandbox can grant; it allows the common ones already, and \
         grants these by name: {}",
        names.join(", ")
    ))
}

/// The number of an allowed call named in [`ALLOWED_NAMES`].
fn name_of(name: &str) -> Option<i64> {
    ALLOWED_NAMES.iter().find(|(allowed, _)| *allowed == name).map(|(_, number)| *number)
}

/// The names of a few allowed calls a manifest might grant needlessly (accepted, and
/// nothing changes).
const ALLOWED_NAMES: &[(&str, i64)] = &[
    ("clone", libc::SYS_clone),
    ("ioctl", libc::SYS_ioctl),
    ("execve", libc::SYS_execve),
    ("socket", libc::SYS_socket),
    ("connect", libc::SYS_connect),
    ("memfd_create", libc::SYS_memfd_create),
    ("getrandom", libc::SYS_getrandom),
    ("statx", libc::SYS_statx),
    ("epoll_pwait2", libc::SYS_epoll_pwait2),
    ("futex_waitv", libc::SYS_futex_waitv),
];

/// The name of system call `number`, for a report (the killed, allowed-by-grant and a few
/// common ones); `None` when not known.
pub fn name(number: i64) -> Option<&'static str> {
    KILLED
        .iter()
        .chain(GRANTABLE)
        .chain(ALLOWED_NAMES)
        .find(|(_, known)| *known == number)
        .map(|(name, _)| *name)
}

/// The socket families a program may open: local, IPv4, IPv6 and netlink (which the C
/// library's name lookups use); not `AF_VSOCK`, `AF_PACKET` and the like.
const SOCKET_FAMILIES: [i32; 4] = [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK];

/// Namespace flags `clone` may not carry.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u64;

/// The three filters, in the order they are installed; `granted` are the plugin's extra
/// system calls (from [`GRANTABLE`]).
pub(crate) fn filters(granted: &[i64]) -> Result<Vec<BpfProgram>, String> {
    let arch = TargetArch::x86_64;
    let unconditional = |calls: &mut dyn Iterator<Item = i64>| -> BTreeMap<i64, Vec<SeccompRule>> {
        calls.map(|call| (call, Vec::new())).collect()
    };
    let rule = |conditions: Vec<SeccompCondition>| SeccompRule::new(conditions).map_err(|e| e.to_string());
    let condition = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(|e| e.to_string())
    };
    // `ioctl`'s command and `socket`'s domain are ints: the kernel reads their low 32 bits,
    // so the filter compares those (a set high bit must not slip past).
    let int_condition = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
    };
    let kill = SeccompFilter::new(
        unconditional(&mut KILLED.iter().map(|(_, call)| *call)),
        SeccompAction::Allow,
        SeccompAction::KillProcess,
        arch,
    )
    .map_err(|e| e.to_string())?;
    let mut allowed = unconditional(&mut ALLOWED.iter().chain(granted).copied());
    allowed.insert(
        libc::SYS_clone,
        vec![rule(vec![condition(0, SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS), 0)?])?],
    );
    allowed.insert(
        libc::SYS_ioctl,
        vec![rule(
            vec![
                int_condition(1, SeccompCmpOp::Ne, libc::TIOCSTI),
                int_condition(1, SeccompCmpOp::Ne, libc::TIOCLINUX),
            ]
            .into_iter()
            .collect::<Result<_, _>>()?,
        )?],
    );
    let families =
        SOCKET_FAMILIES.iter().map(|family| rule(vec![int_condition(0, SeccompCmpOp::Eq, *family as u64)?]));
    allowed.insert(libc::SYS_socket, families.collect::<Result<_, _>>()?);
    let allow =
        SeccompFilter::new(allowed, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
            .map_err(|e| e.to_string())?;
    let clone3 = SeccompFilter::new(
        unconditional(&mut std::iter::once(libc::SYS_clone3)),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    [kill, allow, clone3]
        .into_iter()
        .map(|filter| BpfProgram::try_from(filter).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_and_no_call_is_both_killed_and_allowed() {
        let filters = filters(&[]).unwrap();
        assert_eq!(filters.len(), 3);
        for (name, call) in KILLED {
            assert!(!ALLOWED.contains(call), "{name} is both killed and allowed");
            assert!(grantable(name).is_err(), "{name} cannot be granted");
        }
        for (name, call) in GRANTABLE {
            assert!(!ALLOWED.contains(call), "{name} is allowed already");
            assert_eq!(grantable(name), Ok(Some(*call)));
        }
        assert_eq!(grantable("clone"), Ok(None), "allowed already: accepted");
        assert!(grantable("no_such_call").unwrap_err().contains("io_uring_setup"));
        assert_eq!(name(libc::SYS_ptrace), Some("ptrace"));
    }
}
