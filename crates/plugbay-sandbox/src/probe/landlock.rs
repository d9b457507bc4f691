//! The landlock ABI version, asked of the kernel with the one call that changes nothing:
//! `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`.
#![allow(unsafe_code)] // one raw syscall; see the SAFETY note

/// `LANDLOCK_CREATE_RULESET_VERSION` (linux/landlock.h).
const CREATE_RULESET_VERSION: libc::c_ulong = 1;

/// The highest landlock ABI this kernel speaks, or why it speaks none.
pub(super) fn abi_version() -> Result<i64, String> {
    // SAFETY: with a NULL attribute pointer, size 0 and the VERSION flag the kernel only
    // returns its ABI version (or an error); no memory is read or written and no file
    // descriptor is created.
    let answer = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if answer >= 1 {
        return Ok(answer);
    }
    Err(match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no landlock (CONFIG_SECURITY_LANDLOCK)".to_owned(),
        Some(libc::EOPNOTSUPP) => {
            "landlock is built in but not enabled (add it to the lsm= boot parameter)".to_owned()
        }
        other => format!("landlock_create_ruleset answered {answer} (errno {other:?})"),
    })
}
