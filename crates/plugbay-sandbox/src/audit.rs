//! The kernel's record of a seccomp kill: `audit: type=1326 ... pid=<pid> ... syscall=<n>`,
//! read from `/dev/kmsg` (the kernel's log; root, or `kernel.dmesg_restrict = 0`), so a
//! crash report can name the call the sandbox forbade.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// The system call the seccomp filter killed process `pid` (as the host sees it) for,
/// from the newest matching kernel log record; `None` when the log cannot be read or holds
/// none.
pub(crate) fn killed_syscall(pid: u32) -> Option<i64> {
    let mut log =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg").ok()?;
    let pid = format!(" pid={pid} ");
    let mut record = vec![0u8; 8192];
    let mut found = None;
    // One record per read, oldest first, until nothing is left (EAGAIN).
    for _ in 0..100_000 {
        let Ok(length) = log.read(&mut record) else { break };
        if length == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&record[..length]);
        if text.contains("type=1326") && text.contains(&pid) {
            found = syscall_of(&text).or(found);
        }
    }
    found
}

/// The `syscall=` field of a seccomp audit record.
fn syscall_of(record: &str) -> Option<i64> {
    record.split_whitespace().find_map(|field| field.strip_prefix("syscall=")?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syscall_is_read_from_an_audit_record() {
        let record = "6,1180,61746920338,-;audit: type=1326 audit(1796358220.788:25): auid=4294967295 \
                      uid=65534 gid=65534 ses=4294967295 pid=711 comm=\"probe\" sig=31 arch=c000003e \
                      syscall=101 compat=0 ip=0x55b6e1f2062b code=0x80000000";
        assert_eq!(syscall_of(record), Some(101));
        assert_eq!(syscall_of("audit: type=1326 pid=7"), None);
    }
}
