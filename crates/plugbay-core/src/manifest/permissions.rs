//! The `[permissions]` table: sandbox grants for wasm and process plugins, and what any
//! plugin may call and publish through the host API.

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::context::{At, Context, Problem, Seg, invalid};
use super::provides::{check_capability, check_method, check_topic};
use super::text::{MAX_NAME_CHARS, check_relative_path, matches, quote};
use crate::call::Target;

/// The `[permissions]` table: sandbox grants for wasm and process plugins, and the host
/// API calls and topics of every plugin. Nothing is granted by default.
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
    /// What the plugin may call through the host API (all three runtimes): a capability
    /// (`kv@1`) or `plugin:<id>` for any of its methods, `<target>/<method>` for one
    /// (`text.transform@1/upper`), or `*` for anything. Default: nothing.
    pub invoke: Vec<String>,
    /// Topics the plugin may publish: a topic, `prefix.*` for every topic below it, or `*`.
    /// Default: none.
    pub publish: Vec<String>,
}

impl Permissions {
    /// Whether `[permissions] invoke` lets the plugin call `method` of `target`.
    pub fn may_invoke(&self, target: &Target, method: &str) -> bool {
        self.invoke.iter().any(|grant| {
            if grant == "*" {
                return true;
            }
            let (granted, granted_method) = grant.rsplit_once('/').unwrap_or((grant, "*"));
            let target_matches = match target {
                Target::Capability(capability) => granted == capability,
                Target::Plugin(id) => granted.strip_prefix("plugin:") == Some(id.as_str()),
            };
            target_matches && (granted_method == "*" || granted_method == method)
        })
    }

    /// Whether `[permissions] publish` lets the plugin publish on `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|pattern| crate::bus::topic_matches(pattern, topic))
    }
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
    invoke: Vec<String>,
    publish: Vec<String>,
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
        for (index, grant) in raw.invoke.iter().enumerate() {
            self.check(&[Key("permissions"), Key("invoke"), Index(index)], At::Value, check_invoke(grant))?;
        }
        for (index, topic) in raw.publish.iter().enumerate() {
            let checked = if topic == "*" { Ok(()) } else { check_topic(topic) };
            self.check(&[Key("permissions"), Key("publish"), Index(index)], At::Value, checked)?;
        }
        Ok(Permissions {
            read: raw.read,
            write: raw.write,
            network: raw.network,
            env: raw.env,
            syscalls: raw.syscalls,
            invoke: raw.invoke,
            publish: raw.publish,
        })
    }
}

/// `*`, a target (`kv@1`, `plugin:kv-store`), or a target and a method (`kv@1/get`).
fn check_invoke(grant: &str) -> Result<(), Problem> {
    if grant == "*" {
        return Ok(());
    }
    let (target, method) = match grant.rsplit_once('/') {
        Some((target, method)) => (target, Some(method)),
        None => (grant, None),
    };
    match target.strip_prefix("plugin:") {
        Some(id) => super::plugin::check_id(id)?,
        None => check_capability(target)?,
    }
    match method {
        Some("*") | None => Ok(()),
        Some(method) => check_method(method),
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
