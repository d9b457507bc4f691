//! The `[permissions]` table: sandbox grants for wasm and process plugins.

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::context::{At, Context, Problem, Seg, invalid};
use super::text::{MAX_NAME_CHARS, check_relative_path, matches, quote};

/// The `[permissions]` table: sandbox grants for wasm and process plugins. Nothing is
/// granted by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Permissions {
    /// Paths, relative to the plugin folder, the plugin may read (no `..`, not absolute).
    /// Default: none.
    pub read: Vec<String>,
    /// Paths, relative to the plugin folder, the plugin may write (no `..`, not absolute).
    /// Default: none.
    pub write: Vec<String>,
    /// Whether the plugin may open network connections. Default: `false`.
    pub network: bool,
    /// Names of host environment variables passed to the plugin (`[A-Za-z_][A-Za-z0-9_]*`).
    /// Default: none.
    pub env: Vec<String>,
    /// System calls a process plugin's sandbox allows beside its allow-list, by name
    /// (`io_uring_setup`, ...; docs/sandbox.md lists those that may be granted). Default:
    /// none.
    pub syscalls: Vec<String>,
}

/// `[permissions]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawPermissions {
    read: Vec<String>,
    write: Vec<String>,
    network: bool,
    env: Vec<String>,
    syscalls: Vec<String>,
}

/// The longest permission path, in characters.
const MAX_PERMISSION_PATH_CHARS: usize = 4096;

impl Context<'_> {
    /// Validates `[permissions]`: paths that stay inside the plugin folder, well-formed
    /// environment variable names.
    pub(super) fn permissions(&self, raw: RawPermissions) -> Result<Permissions> {
        use Seg::{Index, Key};

        for (name, paths) in [("read", &raw.read), ("write", &raw.write)] {
            for (index, path) in paths.iter().enumerate() {
                self.check(
                    &[Key("permissions"), Key(name), Index(index)],
                    At::Value,
                    check_relative_path(path, MAX_PERMISSION_PATH_CHARS),
                )?;
            }
        }
        for (index, name) in raw.env.iter().enumerate() {
            self.check(&[Key("permissions"), Key("env"), Index(index)], At::Value, check_env(name))?;
        }
        for (index, name) in raw.syscalls.iter().enumerate() {
            self.check(&[Key("permissions"), Key("syscalls"), Index(index)], At::Value, check_syscall(name))?;
        }
        Ok(Permissions {
            read: raw.read,
            write: raw.write,
            network: raw.network,
            env: raw.env,
            syscalls: raw.syscalls,
        })
    }
}

#[cfg(target_os = "linux")]
fn check_syscall(name: &str) -> Result<(), Problem> {
    plugbay_sandbox::grantable_syscall(name).map(|_| ()).map_err(invalid)
}

#[cfg(not(target_os = "linux"))]
fn check_syscall(_name: &str) -> Result<(), Problem> {
    Ok(())
}

fn check_env(name: &str) -> Result<(), Problem> {
    let first = |c: char| c.is_ascii_alphabetic() || c == '_';
    if name.len() <= MAX_NAME_CHARS && matches(name, first, |c| first(c) || c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(invalid(format!(
            "environment variable name {} is not allowed; use A-Z, a-z, 0-9 and '_', not \
             starting with a digit, at most {MAX_NAME_CHARS} characters (e.g. \"TZ\")",
            quote(name)
        )))
    }
}
