//! [`HostConfig`]: plain data, validated before anything is built.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::trust::TrustConfig;

/// How a [`crate::Host`] is set up. Every field documents its default; `Default` reads no
/// environment. Built with [`HostConfig::with_plugin_dir`] (or `default()`) and the
/// `with_*` setters, so a new setting is never a breaking change:
///
/// ```
/// use std::time::Duration;
/// use plugbay_core::HostConfig;
///
/// let config = HostConfig::with_plugin_dir("plugins")
///     .with_default_timeout(Duration::from_secs(5))
///     .with_watch(true);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostConfig {
    /// Folders scanned by [`crate::Host::load_all`], each holding one sub-folder per plugin.
    /// Default: `["./plugins"]`.
    pub plugin_dirs: Vec<PathBuf>,
    /// Deadline of a call that sets none and whose plugin sets no `limits.timeout_ms`.
    /// Default: 30 s.
    pub default_timeout: Duration,
    /// How long `stop` and `unload` wait for calls in flight. Default: 5 s.
    pub drain_timeout: Duration,
    /// Largest response a plugin may return, in bytes. Default: 16 MiB.
    pub max_payload_bytes: usize,
    /// Largest artifact the host reads, in bytes. Default: 256 MiB.
    pub max_artifact_bytes: u64,
    /// Capacity of the event queues (to subscribers and to plugins). Default: 1024.
    pub event_queue: usize,
    /// How deep plugins may call each other through the host before `resource_exhausted`.
    /// Default: 16.
    pub max_call_depth: u32,
    /// Configuration bytes handed to a plugin's init, by plugin id. Default: none (empty).
    pub plugin_config: BTreeMap<String, Vec<u8>>,
    /// Watch [`HostConfig::plugin_dirs`] from [`crate::Host::load_all`] on: a new plugin
    /// folder is loaded, a removed one unloaded, a changed one reloaded (see
    /// [`crate::Host::reload`]). Default: `false` for the library (each watcher takes an
    /// inotify instance; the daemon turns it on).
    pub watch: bool,
    /// How long a plugin folder must be quiet (no file event) before a change is acted on,
    /// so a half-written artifact is not loaded. Default: 100 ms.
    pub watch_debounce: Duration,
    /// After a reload switches to a new version, how long the old one is kept ready: a new
    /// instance that dies within this time rolls the plugin back to the old version.
    /// Default: 2 s.
    pub reload_probation: Duration,
    /// Where the wasm runtime caches compiled components (created with mode 0700; used only
    /// if the host's user alone can write it), so a second start skips compilation.
    /// Default: `None` (no cache: every load compiles).
    pub wasm_cache_dir: Option<PathBuf>,
    /// Whether the wasm engine pre-reserves pooled slots for instances (memories, tables,
    /// stacks), which makes instantiation cheap (per-call instances above all) at the cost
    /// of a large virtual address space reservation. When off, or when the machine refuses
    /// the reservation, instances are allocated on demand. Default: on.
    pub wasm_pooling: bool,
    /// Where each process plugin program gets its private directory (mode 0700, holding its
    /// socket and the host's callback socket; removed when the program stops). An absolute
    /// path. A memory file system is best (tmpfs: `/run/plugbay`, `$XDG_RUNTIME_DIR`,
    /// `/dev/shm`): on a disk file system, creating the directory and its two sockets
    /// adds about 0.1 ms to each program start (BENCHMARKS.md). Default: `None`, the
    /// system's temporary directory (`$TMPDIR`, else `/tmp`).
    pub process_socket_dir: Option<PathBuf>,
    /// Whether process plugins run inside the sandbox (docs/sandbox.md). Default:
    /// [`SandboxMode::Required`].
    pub sandbox: SandboxMode,
    /// Host paths every sandboxed program sees read-only, beside the system folders
    /// (`/usr`, `/lib*`, `/bin`, `/sbin`): a toolchain installed elsewhere, such as a
    /// Python under `/opt` or `~/.pyenv`. Absolute. Default: none.
    pub sandbox_read: Vec<PathBuf>,
    /// Which signatures the host accepts and what becomes of a plugin without a valid one
    /// (docs/trust.md). Default: no keys, policy [`crate::trust::TrustPolicy::Warn`]: every
    /// plugin loads, an unsigned or badly signed one with a warning.
    pub trust: TrustConfig,
}

/// Whether process plugins run inside the sandbox: namespaces, a private root, cgroups,
/// seccomp, landlock, rlimits, no capabilities (docs/sandbox.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    /// Every layer, or the plugin does not load: the error names the missing layer.
    #[default]
    Required,
    /// The layers this machine can build; the plugin starts with a warning event naming
    /// the ones it could not.
    BestEffort,
    /// No sandbox: the program runs as the host's user with the host's view of the machine
    /// (still with its own process group, death with the host and a cleared environment).
    Off,
}

impl SandboxMode {
    /// The mode as `plugbay.toml` spells it (`required`, `best-effort`, `off`).
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Required => "required",
            SandboxMode::BestEffort => "best-effort",
            SandboxMode::Off => "off",
        }
    }
}

impl Default for HostConfig {
    fn default() -> HostConfig {
        HostConfig {
            plugin_dirs: vec![PathBuf::from("./plugins")],
            default_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            max_payload_bytes: 16 << 20,
            max_artifact_bytes: 256 << 20,
            event_queue: 1024,
            max_call_depth: 16,
            plugin_config: BTreeMap::new(),
            watch: false,
            watch_debounce: Duration::from_millis(100),
            reload_probation: Duration::from_secs(2),
            wasm_cache_dir: None,
            wasm_pooling: true,
            process_socket_dir: None,
            sandbox: SandboxMode::Required,
            sandbox_read: Vec::new(),
            trust: TrustConfig::default(),
        }
    }
}

/// The most bytes of a Unix socket path (`sun_path` holds 108, with the final NUL).
pub(crate) const MAX_SOCKET_PATH: usize = 107;
/// How many bytes of a plugin id name its private directory.
pub(crate) const SOCKET_DIR_ID_BYTES: usize = 20;
/// Longest [`HostConfig::process_socket_dir`]: what is left of a socket path once the
/// private directory and the socket are named in it (`/plugbay-<id>-XXXXXX/plugin.sock`).
const MAX_SOCKET_DIR_BYTES: usize =
    MAX_SOCKET_PATH - "/plugbay-".len() - SOCKET_DIR_ID_BYTES - "-XXXXXX".len() - "/plugin.sock".len();

impl HostConfig {
    /// A default configuration reading plugins from one folder.
    pub fn with_plugin_dir(dir: impl Into<PathBuf>) -> HostConfig {
        HostConfig { plugin_dirs: vec![dir.into()], ..HostConfig::default() }
    }

    /// Sets the folders [`crate::Host::load_all`] scans (see [`HostConfig::plugin_dirs`]).
    pub fn with_plugin_dirs(mut self, plugin_dirs: Vec<PathBuf>) -> HostConfig {
        self.plugin_dirs = plugin_dirs;
        self
    }

    /// Sets the deadline of a call that sets none (see [`HostConfig::default_timeout`]).
    pub fn with_default_timeout(mut self, default_timeout: Duration) -> HostConfig {
        self.default_timeout = default_timeout;
        self
    }

    /// Sets how long `stop` and `unload` wait for calls in flight (see [`HostConfig::drain_timeout`]).
    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> HostConfig {
        self.drain_timeout = drain_timeout;
        self
    }

    /// Sets the largest response a plugin may return (see [`HostConfig::max_payload_bytes`]).
    pub fn with_max_payload_bytes(mut self, max_payload_bytes: usize) -> HostConfig {
        self.max_payload_bytes = max_payload_bytes;
        self
    }

    /// Sets the largest artifact the host reads (see [`HostConfig::max_artifact_bytes`]).
    pub fn with_max_artifact_bytes(mut self, max_artifact_bytes: u64) -> HostConfig {
        self.max_artifact_bytes = max_artifact_bytes;
        self
    }

    /// Sets the capacity of the event queues (see [`HostConfig::event_queue`]).
    pub fn with_event_queue(mut self, event_queue: usize) -> HostConfig {
        self.event_queue = event_queue;
        self
    }

    /// Sets how deep plugins may call each other through the host (see [`HostConfig::max_call_depth`]).
    pub fn with_max_call_depth(mut self, max_call_depth: u32) -> HostConfig {
        self.max_call_depth = max_call_depth;
        self
    }

    /// Sets the configuration bytes handed to each plugin's init, by id (see [`HostConfig::plugin_config`]).
    pub fn with_plugin_config(mut self, plugin_config: BTreeMap<String, Vec<u8>>) -> HostConfig {
        self.plugin_config = plugin_config;
        self
    }

    /// Sets whether `load_all` watches the plugins folders (see [`HostConfig::watch`]).
    pub fn with_watch(mut self, watch: bool) -> HostConfig {
        self.watch = watch;
        self
    }

    /// Sets how long a changed folder must be quiet before it is acted on (see [`HostConfig::watch_debounce`]).
    pub fn with_watch_debounce(mut self, watch_debounce: Duration) -> HostConfig {
        self.watch_debounce = watch_debounce;
        self
    }

    /// Sets how long a reload keeps the old version ready (see [`HostConfig::reload_probation`]).
    pub fn with_reload_probation(mut self, reload_probation: Duration) -> HostConfig {
        self.reload_probation = reload_probation;
        self
    }

    /// Sets where compiled components are cached (see [`HostConfig::wasm_cache_dir`]).
    pub fn with_wasm_cache_dir(mut self, wasm_cache_dir: Option<PathBuf>) -> HostConfig {
        self.wasm_cache_dir = wasm_cache_dir;
        self
    }

    /// Sets whether the wasm engine pools instance slots (see [`HostConfig::wasm_pooling`]).
    pub fn with_wasm_pooling(mut self, wasm_pooling: bool) -> HostConfig {
        self.wasm_pooling = wasm_pooling;
        self
    }

    /// Sets where process plugins get their private directories (see [`HostConfig::process_socket_dir`]).
    pub fn with_process_socket_dir(mut self, process_socket_dir: Option<PathBuf>) -> HostConfig {
        self.process_socket_dir = process_socket_dir;
        self
    }

    /// Sets whether process plugins run inside the sandbox (see [`HostConfig::sandbox`]).
    pub fn with_sandbox(mut self, sandbox: SandboxMode) -> HostConfig {
        self.sandbox = sandbox;
        self
    }

    /// Sets the host paths every sandboxed program sees read-only (see
    /// [`HostConfig::sandbox_read`]).
    pub fn with_sandbox_read(mut self, sandbox_read: Vec<PathBuf>) -> HostConfig {
        self.sandbox_read = sandbox_read;
        self
    }

    /// Sets the trust store and policy (see [`HostConfig::trust`]).
    pub fn with_trust(mut self, trust: TrustConfig) -> HostConfig {
        self.trust = trust;
        self
    }

    /// Checks every field; has no side effects.
    ///
    /// # Errors
    /// `invalid_argument` naming the field and what is allowed.
    pub fn validate(&self) -> Result<()> {
        let positive = |field: &str, ok: bool, allowed: &str| {
            if ok { Ok(()) } else { Err(Error::invalid(format!("must be {allowed}")).with_field(field)) }
        };
        positive("default_timeout", !self.default_timeout.is_zero(), "greater than zero")?;
        positive("max_payload_bytes", self.max_payload_bytes > 0, "greater than zero")?;
        positive("max_artifact_bytes", self.max_artifact_bytes > 0, "greater than zero")?;
        positive("event_queue", (1..=1 << 20).contains(&self.event_queue), "between 1 and 1048576")?;
        positive("max_call_depth", (1..=1024).contains(&self.max_call_depth), "between 1 and 1024")?;
        let debounce = self.watch_debounce;
        let debounce_ok = (Duration::from_millis(10)..=Duration::from_secs(60)).contains(&debounce);
        positive("watch_debounce", debounce_ok, "between 10 ms and 60 s")?;
        positive("reload_probation", self.reload_probation <= Duration::from_secs(3600), "at most 1 hour")?;
        if let Some(dir) = &self.process_socket_dir {
            // Room for `/plugbay-<id>-XXXXXX/plugin.sock` within a socket path's 107 bytes.
            let fits = dir.as_os_str().len() <= MAX_SOCKET_DIR_BYTES;
            positive("process_socket_dir", dir.is_absolute(), "an absolute path")?;
            positive(
                "process_socket_dir",
                fits,
                &format!(
                    "at most {MAX_SOCKET_DIR_BYTES} bytes long (the sockets in it must fit a Unix socket path)"
                ),
            )?;
        }
        for path in &self.sandbox_read {
            positive(
                "sandbox_read",
                path.is_absolute(),
                &format!("absolute paths ({} is not)", path.display()),
            )?;
        }
        self.trust.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_zero_timeouts_are_not() {
        HostConfig::default().validate().unwrap();
        let error =
            HostConfig { default_timeout: Duration::ZERO, ..HostConfig::default() }.validate().unwrap_err();
        assert_eq!(error.field(), Some("default_timeout"));
    }

    #[test]
    fn process_socket_dir_must_be_absolute_and_short() {
        let with = |dir: &str| HostConfig { process_socket_dir: Some(dir.into()), ..HostConfig::default() };
        with("/dev/shm").validate().unwrap();
        let relative = with("run/plugbay").validate().unwrap_err();
        assert_eq!(relative.field(), Some("process_socket_dir"));
        assert!(relative.message().contains("absolute"), "{relative}");
        let long = with(&format!("/{}", "d".repeat(70))).validate().unwrap_err();
        assert!(long.message().contains("at most 59 bytes"), "{long}");
    }
}
