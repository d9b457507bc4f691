//! The daemon's settings: `plugbay.toml` (every key documented in `plugbay.example.toml`),
//! overridden by command-line flags, validated as a whole before any socket is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use plugbay_core::HostConfig;
use serde::Deserialize;

use crate::cli::{LogFormat, RunArgs};
use crate::daemon::access::{Access, Scope, Token};
use crate::daemon::trust_section::TrustSection;

/// The environment variable that holds the API token (preferred over the file's `token`).
pub const TOKEN_ENV: &str = "PLUGBAY_TOKEN";

/// `plugbay.toml` as written; every field optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    plugins: Option<PathBuf>,
    log_format: Option<String>,
    #[serde(default)]
    http: Listener,
    #[serde(default)]
    grpc: Listener,
    #[serde(default)]
    api: Api,
    #[serde(default)]
    shutdown: Shutdown,
    #[serde(default)]
    host: Host,
    #[serde(default)]
    wasm: Wasm,
    #[serde(default)]
    process: Process,
    #[serde(default)]
    sandbox: Sandbox,
    #[serde(default)]
    trust: TrustSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listener {
    addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Api {
    token: Option<String>,
    tokens: Option<Vec<TokenSection>>,
    allowed_hosts: Option<Vec<String>>,
    max_body_bytes: Option<u64>,
    header_read_timeout_ms: Option<u64>,
}

/// One `[[api.tokens]]`: a name, the SHA-256 of the secret (`plugbay token new` prints
/// both), and its scopes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSection {
    name: String,
    sha256: String,
    scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Shutdown {
    drain_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Host {
    default_timeout_ms: Option<u64>,
    plugin_drain_timeout_ms: Option<u64>,
    event_queue: Option<u64>,
    watch: Option<bool>,
    watch_debounce_ms: Option<u64>,
    reload_probation_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wasm {
    cache_dir: Option<PathBuf>,
    pooling: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Process {
    socket_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sandbox {
    /// `required` (the default), `best-effort` or `off`.
    mode: Option<plugbay_core::SandboxMode>,
    /// Host paths every sandboxed program sees read-only (made absolute like `socket_dir`).
    read: Option<Vec<PathBuf>>,
}

/// The daemon's settings, complete and checked.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The plugins folder. Default `./plugins`.
    pub plugins: PathBuf,
    /// How log lines are written. Default human.
    pub log_format: LogFormat,
    /// The HTTP/JSON API's address. Default `127.0.0.1:7878`.
    pub http_addr: SocketAddr,
    /// The gRPC API's address. Default `127.0.0.1:7879`.
    pub grpc_addr: SocketAddr,
    /// The API tokens and their scopes (`[[api.tokens]]`, and `api.token` / `PLUGBAY_TOKEN`
    /// with every scope); at least one is required when an address is not loopback.
    pub access: Arc<Access>,
    /// The names the `Host` header and gRPC's `:authority` may carry (DNS-rebinding check),
    /// without ports.
    pub allowed_hosts: Vec<String>,
    /// Largest request body or gRPC message. Default 16 MiB.
    pub max_body_bytes: usize,
    /// How long a client may take to send its request headers. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long calls in flight may run after SIGTERM/SIGINT. Default 10 s.
    pub drain_timeout: Duration,
    /// The host library's settings.
    pub host: HostConfig,
}

/// Largest `max_body_bytes` accepted (1 GiB).
const MAX_BODY_LIMIT: u64 = 1 << 30;
/// Longest timeout accepted in the file (1 day), in milliseconds.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

impl DaemonConfig {
    /// Reads `--config` (if given), applies the flags and the token from [`TOKEN_ENV`], and
    /// validates everything.
    ///
    /// # Errors
    /// Naming the file, the field and what is allowed.
    pub fn load(args: &RunArgs, log_format: Option<LogFormat>) -> anyhow::Result<DaemonConfig> {
        let (file, origin) = match &args.config {
            Some(path) => (read(path)?, path.display().to_string()),
            None => (File::default(), "the defaults".to_owned()),
        };
        let in_file = |field: &str| format!("{origin}: field {field}");
        let log_format = match (log_format, file.log_format.as_deref()) {
            (Some(format), _) => format,
            (None, None | Some("human")) => LogFormat::Human,
            (None, Some("json")) => LogFormat::Json,
            (None, Some(other)) => {
                bail!(
                    "{}: {other:?} is not a log format; allowed: \"human\", \"json\"",
                    in_file("log_format")
                )
            }
        };
        let addr =
            |flag: Option<SocketAddr>, value: Option<&str>, field: &str, default: &str| match (flag, value) {
                (Some(addr), _) => Ok(addr),
                (None, value) => value.unwrap_or(default).parse::<SocketAddr>().with_context(|| {
                    format!(
                        "{}: {:?} is not an address; write IP:PORT, e.g. {default}",
                        in_file(field),
                        value
                    )
                }),
            };
        let http_addr = addr(args.http, file.http.addr.as_deref(), "http.addr", "127.0.0.1:7878")?;
        let grpc_addr = addr(args.grpc, file.grpc.addr.as_deref(), "grpc.addr", "127.0.0.1:7879")?;
        let token = std::env::var(TOKEN_ENV).ok().or(file.api.token).filter(|token| !token.is_empty());
        if let Some(token) = &token
            && (token.len() < 16 || !token.bytes().all(|byte| byte.is_ascii_graphic()))
        {
            bail!(
                "{} (or {TOKEN_ENV}): the token must be at least 16 printable ASCII characters, no spaces",
                in_file("api.token")
            );
        }
        let mut tokens = tokens_of(file.api.tokens.unwrap_or_default(), &in_file)?;
        if let Some(secret) = &token {
            tokens.push(Token::from_secret("api.token", secret, Scope::all()));
        }
        let access = Arc::new(Access::new(tokens));
        let public = [http_addr, grpc_addr].into_iter().find(|addr| !addr.ip().is_loopback());
        if let (Some(public), false) = (public, access.is_guarded()) {
            bail!(
                "refusing to listen on {public}, which is not a loopback address, without an API token: \
                 add [[api.tokens]] (`plugbay token new`) or set {TOKEN_ENV} or api.token in the config \
                 file (every route but /healthz and /readyz then requires `Authorization: Bearer <token>`)"
            );
        }
        let allowed_hosts = match file.api.allowed_hosts {
            Some(hosts) if hosts.is_empty() => {
                bail!("{}: must name at least one host", in_file("api.allowed_hosts"))
            }
            Some(hosts) => hosts,
            None => default_hosts(&[http_addr, grpc_addr]),
        };
        let max_body_bytes =
            within(file.api.max_body_bytes, 16 << 20, 1, MAX_BODY_LIMIT, &in_file("api.max_body_bytes"))?;
        let ms = |value: Option<u64>, default: u64, field: &str| {
            within(value, default, 1, MAX_TIMEOUT_MS, &in_file(field)).map(Duration::from_millis)
        };
        let header_read_timeout = ms(file.api.header_read_timeout_ms, 10_000, "api.header_read_timeout_ms")?;
        let drain_timeout = ms(file.shutdown.drain_timeout_ms, 10_000, "shutdown.drain_timeout_ms")?;
        let plugins = args.plugins.clone().or(file.plugins).unwrap_or_else(|| PathBuf::from("plugins"));
        let defaults = HostConfig::default();
        let host = HostConfig::default()
            .with_plugin_dirs(vec![plugins.clone()])
            .with_default_timeout(ms(
                file.host.default_timeout_ms,
                defaults.default_timeout.as_millis() as u64,
                "host.default_timeout_ms",
            )?)
            .with_drain_timeout(ms(
                file.host.plugin_drain_timeout_ms,
                defaults.drain_timeout.as_millis() as u64,
                "host.plugin_drain_timeout_ms",
            )?)
            .with_event_queue(within(
                file.host.event_queue,
                defaults.event_queue as u64,
                1,
                1 << 20,
                &in_file("host.event_queue"),
            )? as usize)
            .with_max_payload_bytes(max_body_bytes as usize)
            .with_watch(file.host.watch.unwrap_or(true))
            .with_watch_debounce(Duration::from_millis(within(
                file.host.watch_debounce_ms,
                defaults.watch_debounce.as_millis() as u64,
                10,
                60_000,
                &in_file("host.watch_debounce_ms"),
            )?))
            .with_reload_probation(Duration::from_millis(within(
                file.host.reload_probation_ms,
                defaults.reload_probation.as_millis() as u64,
                0,
                3_600_000,
                &in_file("host.reload_probation_ms"),
            )?))
            .with_wasm_cache_dir(file.wasm.cache_dir)
            .with_wasm_pooling(file.wasm.pooling.unwrap_or(defaults.wasm_pooling))
            .with_process_socket_dir(
                file.process
                    .socket_dir
                    .map(|dir| std::path::absolute(&dir).with_context(|| in_file("process.socket_dir")))
                    .transpose()?,
            )
            .with_sandbox(file.sandbox.mode.unwrap_or_default())
            .with_sandbox_read(
                file.sandbox
                    .read
                    .unwrap_or_default()
                    .iter()
                    .map(|path| std::path::absolute(path).with_context(|| in_file("sandbox.read")))
                    .collect::<anyhow::Result<_>>()?,
            )
            .with_trust(file.trust.into_config(&origin)?);
        host.validate().with_context(|| format!("{origin}: the host settings are not valid"))?;
        Ok(DaemonConfig {
            plugins,
            log_format,
            http_addr,
            grpc_addr,
            access,
            allowed_hosts,
            max_body_bytes: max_body_bytes as usize,
            header_read_timeout,
            drain_timeout,
            host,
        })
    }
}

/// The `[[api.tokens]]` entries, checked: names unique, 64 hex digits of SHA-256, at least
/// one scope, each one known.
fn tokens_of(sections: Vec<TokenSection>, in_file: &dyn Fn(&str) -> String) -> anyhow::Result<Vec<Token>> {
    let mut tokens: Vec<Token> = Vec::new();
    for (index, section) in sections.into_iter().enumerate() {
        let field = |name: &str| in_file(&format!("api.tokens[{index}].{name}"));
        if section.name.is_empty() || tokens.iter().any(|token| token.name == section.name) {
            bail!("{}: {:?} is empty or names another token too", field("name"), section.name);
        }
        let hex = section.sha256.to_ascii_lowercase();
        let bytes: Option<Vec<u8>> = (hex.len() == 64)
            .then(|| (0..32).map(|at| u8::from_str_radix(&hex[2 * at..2 * at + 2], 16).ok()).collect())
            .flatten();
        let Some(sha256) = bytes.and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) else {
            bail!(
                "{}: not 64 hex digits; put the SHA-256 of the secret here (`plugbay token new` prints it), never the secret",
                field("sha256")
            );
        };
        if section.scopes.is_empty() {
            bail!("{}: a token needs at least one scope", field("scopes"));
        }
        let scopes = section
            .scopes
            .iter()
            .map(|scope| Scope::parse(scope))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| anyhow::anyhow!("{}: {error}", field("scopes")))?;
        tokens.push(Token { name: section.name, sha256, scopes });
    }
    Ok(tokens)
}

/// Reads and parses the file; the parser's message names the line, column and key.
fn read(path: &Path) -> anyhow::Result<File> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid plugbay config", path.display()))
}

/// `value` (or `default`) when it lies in `min..=max`.
fn within(value: Option<u64>, default: u64, min: u64, max: u64, field: &str) -> anyhow::Result<u64> {
    let value = value.unwrap_or(default);
    if !(min..=max).contains(&value) {
        bail!("{field}: {value} is out of range; allowed: {min} to {max}");
    }
    Ok(value)
}

/// The names a local client uses: `localhost`, the loopback addresses, and the IPs the
/// APIs are bound to (unless unspecified).
fn default_hosts(bound: &[SocketAddr]) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(str::to_owned).into();
    for addr in bound.iter().filter(|addr| !addr.ip().is_unspecified()) {
        let name = match addr {
            SocketAddr::V4(addr) => addr.ip().to_string(),
            SocketAddr::V6(addr) => format!("[{}]", addr.ip()),
        };
        if !hosts.contains(&name) {
            hosts.push(name);
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_field_and_the_range() {
        let error = within(Some(0), 5, 1, 10, "x.y").unwrap_err().to_string();
        assert_eq!(error, "x.y: 0 is out of range; allowed: 1 to 10");
        assert_eq!(within(None, 5, 1, 10, "x.y").unwrap(), 5);
    }

    #[test]
    fn the_example_file_is_valid_and_sets_the_defaults() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugbay.example.toml");
        let args = RunArgs { config: Some(example.into()), plugins: None, http: None, grpc: None };
        let config = DaemonConfig::load(&args, None).unwrap();
        assert_eq!(config.http_addr, "127.0.0.1:7878".parse().unwrap());
        assert_eq!(config.max_body_bytes, 16 << 20);
        assert_eq!(config.drain_timeout, Duration::from_secs(10));
        assert_eq!((config.host.wasm_cache_dir, config.host.wasm_pooling), (None, true));
        assert_eq!(config.host.process_socket_dir, None);
    }

    #[test]
    fn the_process_socket_dir_is_read_and_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plugbay.toml");
        std::fs::write(&file, "[process]\nsocket_dir = \"run/plugbay\"\n").unwrap();
        let args = RunArgs { config: Some(file), plugins: None, http: None, grpc: None };
        let config = DaemonConfig::load(&args, None).unwrap();
        let expected = std::env::current_dir().unwrap().join("run/plugbay");
        assert_eq!(config.host.process_socket_dir, Some(expected));
    }

    #[test]
    fn the_bound_address_is_an_allowed_host() {
        let hosts = default_hosts(&["10.1.2.3:80".parse().unwrap(), "10.1.2.4:81".parse().unwrap()]);
        for name in ["10.1.2.3", "10.1.2.4", "localhost"] {
            assert!(hosts.iter().any(|host| host == name), "{name} in {hosts:?}");
        }
        assert_eq!(default_hosts(&["0.0.0.0:80".parse().unwrap()]).len(), 3);
    }
}
