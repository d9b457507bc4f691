//! Everything that differs between operating systems about plugin artifacts, in one place.

/// The file name of a native library for a manifest `entry`, on this platform.
///
/// `entry` is written without a suffix; the host adds `.so` (Linux and other Unixes),
/// `.dylib` (macOS) or `.dll` (Windows). An entry that already ends in this platform's
/// suffix is kept as it is. No `lib` prefix is added: write `entry = "libtext_tools"` for
/// the file cargo builds on Unix.
pub fn native_library_file_name(entry: &str) -> String {
    if entry.ends_with(NATIVE_LIBRARY_SUFFIX) {
        entry.to_owned()
    } else {
        format!("{entry}{NATIVE_LIBRARY_SUFFIX}")
    }
}

/// The file name cargo (or a C compiler following the platform's convention) gives the
/// dynamic library of a crate or library called `name`: `libname.so`, `libname.dylib`,
/// `name.dll`.
pub fn cargo_cdylib_file_name(name: &str) -> String {
    let name = name.replace('-', "_");
    format!("{NATIVE_LIBRARY_PREFIX}{name}{NATIVE_LIBRARY_SUFFIX}")
}

/// The `entry` (no suffix) that names a library built as [`cargo_cdylib_file_name`].
pub fn cargo_cdylib_entry(name: &str) -> String {
    let name = name.replace('-', "_");
    format!("{NATIVE_LIBRARY_PREFIX}{name}")
}

/// The prefix the platform's linkers give dynamic libraries.
#[cfg(not(windows))]
pub const NATIVE_LIBRARY_PREFIX: &str = "lib";
/// The prefix the platform's linkers give dynamic libraries.
#[cfg(windows)]
pub const NATIVE_LIBRARY_PREFIX: &str = "";

/// The suffix of dynamic libraries on this platform.
#[cfg(all(unix, not(target_os = "macos")))]
pub const NATIVE_LIBRARY_SUFFIX: &str = ".so";
/// The suffix of dynamic libraries on this platform.
#[cfg(target_os = "macos")]
pub const NATIVE_LIBRARY_SUFFIX: &str = ".dylib";
/// The suffix of dynamic libraries on this platform.
#[cfg(windows)]
pub const NATIVE_LIBRARY_SUFFIX: &str = ".dll";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn linux_names() {
        assert_eq!(native_library_file_name("libtext_tools"), "libtext_tools.so");
        assert_eq!(native_library_file_name("libtext_tools.so"), "libtext_tools.so");
        assert_eq!(cargo_cdylib_file_name("text-tools"), "libtext_tools.so");
        assert_eq!(cargo_cdylib_entry("text-tools"), "libtext_tools");
    }
}
