//! The command line, as clap reads it: [`Cli`] and one argument struct per command. No
//! logic lives here; `--help` is generated from the doc comments below.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// Where a client command finds the daemon when `--addr` is not given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// The heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// What `--help` shows after the commands.
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  done (for `list`: even if some plugins failed to load; they are listed with their error)
  1  what was asked failed: the call returned an error, the inspected plugin did not load,
     or (doctor) a layer of the sandbox is missing
  2  plugbay could not run: bad arguments, or a folder or file it needs is missing or unreadable";

/// plugbay is a plugin host: it loads plugins (a plugin.toml plus an artifact per folder)
/// from a plugins folder and routes calls to the capabilities they provide.
#[derive(Debug, Parser)]
#[command(name = "plugbay", version, verbatim_doc_comment, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// How log lines are written to stderr.
    /// [default: human; for `run`, the config file's `log_format`]
    #[arg(long, value_enum, value_name = "FORMAT", global = true, help_heading = GLOBAL)]
    pub log_format: Option<LogFormat>,

    /// Log more to stderr: -v adds info, -vv debug, -vvv trace. Without it only warnings and
    /// errors are logged. The RUST_LOG environment variable, when set, overrides this.
    #[arg(short, long, action = ArgAction::Count, global = true, help_heading = GLOBAL)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event, for log collectors.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: load a plugins folder and serve the HTTP/JSON and gRPC APIs until
    /// SIGTERM or SIGINT, then finish the calls in flight and stop the plugins.
    ///
    /// Example: plugbay run --plugins target/plugins
    Run(RunArgs),

    /// List every plugin with its state: the running daemon's (see --addr), or, with
    /// --plugins, those of a folder loaded into this process.
    ///
    /// Prints one line per plugin: id, version, runtime, state and capabilities; a plugin
    /// that failed to load is followed by an indented line with the error. With --plugins,
    /// loading runs each native plugin's code inside this process.
    List(ListArgs),

    /// Check one plugin folder: show its manifest, then load the plugin alone and report
    /// whether it starts.
    ///
    /// The plugin is loaded into this process (its initialisers and init run), exactly as
    /// the host would load it.
    Inspect(InspectArgs),

    /// Make one call, printing the response to stdout: through the running daemon (see
    /// --addr), or, with --plugins, after loading that folder into this process.
    ///
    /// Example: plugbay call text.transform@1 upper '"hello"' --plugins target/plugins
    Call(CallArgs),

    /// Ask the daemon to reload a plugin from its folder: the new version starts beside the
    /// old one and takes its calls only once it works (docs/reload.md).
    Reload(PluginArgs),

    /// Ask the daemon to stop a plugin (its calls in flight finish first).
    Stop(PluginArgs),

    /// Ask the daemon to start a stopped or failed plugin.
    Start(PluginArgs),

    /// Print the daemon's events as they happen, one JSON object per line, until
    /// interrupted (lifecycle transitions are on topic plugbay.lifecycle).
    Events(EventsArgs),

    /// List the daemon's crash reports, oldest first: when, which plugin and instance, why
    /// (exit status or signal, last stderr lines), what the supervisor did, and the last
    /// calls before it (method, payload size, duration; never payload bytes).
    Crashes(CrashesArgs),

    /// Show what this machine's kernel offers of the sandbox's layers for process plugins:
    /// the user, mount, PID, network, IPC and UTS namespaces, cgroups (version and
    /// controllers), seccomp and landlock (ABI version); one line each, ok or why not.
    Doctor(DoctorArgs),

    /// Manage signing keys: `plugbay key new NAME` writes NAME.key (the private key, mode
    /// 0600) and NAME.pub (the public key to give to hosts), refusing to replace either.
    #[command(subcommand)]
    Key(KeyCommand),

    /// Sign a plugin folder: write its plugin.sig, covering plugin.toml and every other
    /// file in the folder (path, size, SHA-256) under one ed25519 signature (docs/trust.md).
    ///
    /// Example: plugbay sign target/plugins/c-rot13 --key keys/release.key
    Sign(SignArgs),

    /// Check a plugin folder against its plugin.sig: which key signed it, for which plugin
    /// and version, and every file that was added, removed or changed since. Exit status 0
    /// when it is exactly what was signed, 1 when not.
    Verify(VerifyArgs),

    /// Manage API tokens: `plugbay token new NAME --scope SCOPE...` makes a secret, prints
    /// it once, and prints the `[[api.tokens]]` entry (its SHA-256, never the secret) to
    /// add to plugbay.toml.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// The `plugbay token` commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new API token.
    New(TokenNewArgs),
}

/// Arguments of `plugbay token new`.
#[derive(Debug, Args)]
pub struct TokenNewArgs {
    /// The token's name, shown in logs and refusals.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// What it may do, one or more: `read`, `manage`, `call:<capability>/<method>`
    /// (`call:text.transform@1/*`, `call:plugin:kv-store/get`, `call:*/*`).
    #[arg(long = "scope", value_name = "SCOPE", required = true)]
    pub scopes: Vec<String>,
}

/// The `plugbay key` commands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a new ed25519 key pair: DIR/NAME.key and DIR/NAME.pub.
    New(KeyNewArgs),
}

/// Arguments of `plugbay key new`.
#[derive(Debug, Args)]
pub struct KeyNewArgs {
    /// The key's name: letters, digits, '-', '_' and '.'; it names both files.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Where to write the two files (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: std::path::PathBuf,
}

/// Arguments of `plugbay sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The plugin folder (it holds plugin.toml).
    #[arg(value_name = "DIR")]
    pub dir: std::path::PathBuf,

    /// The private key file (from `plugbay key new`).
    #[arg(long, value_name = "FILE")]
    pub key: std::path::PathBuf,

    /// The signature expires this many days from now. [default: never]
    #[arg(long, value_name = "DAYS")]
    pub expires_in_days: Option<u32>,
}

/// Arguments of `plugbay verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The plugin folder (it holds plugin.toml and plugin.sig).
    #[arg(value_name = "DIR")]
    pub dir: std::path::PathBuf,

    /// Also require the signer to be this public key (a .pub file).
    #[arg(long, value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,

    /// Print one JSON object instead: `valid`, `plugin`, `version`, `key_id`, `key_name`,
    /// `public_key`, `created`, `expires`, `files`, `problems` (each with a `problem` kind,
    /// its fields and a `message`).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `plugbay crashes`.
#[derive(Debug, Args)]
pub struct CrashesArgs {
    /// Only this plugin's crashes.
    #[arg(value_name = "ID")]
    pub id: Option<String>,

    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// Where the daemon is, for the commands that talk to it.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The daemon's HTTP address. The token for mutating requests, when the daemon needs
    /// one, is read from the PLUGBAY_TOKEN environment variable.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_ADDR)]
    pub addr: String,
}

/// Arguments of `plugbay run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A plugbay.toml with the daemon's settings (see plugbay.example.toml). The flags below
    /// override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The plugins folder. [default: ./plugins]
    #[arg(long, value_name = "DIR")]
    pub plugins: Option<PathBuf>,

    /// The HTTP/JSON API's address (port 0 picks a free port). [default: 127.0.0.1:7878]
    #[arg(long, value_name = "IP:PORT")]
    pub http: Option<SocketAddr>,

    /// The gRPC API's address (port 0 picks a free port). [default: 127.0.0.1:7879]
    #[arg(long, value_name = "IP:PORT")]
    pub grpc: Option<SocketAddr>,
}

/// Arguments of `plugbay reload|stop|start`.
#[derive(Debug, Args)]
pub struct PluginArgs {
    /// The plugin id.
    #[arg(value_name = "ID")]
    pub id: String,

    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// Arguments of `plugbay events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events whose topic matches: `kv.changed`, `kv.*`, or `*` for all.
    #[arg(long, value_name = "PATTERN", default_value = "*")]
    pub topic: String,

    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// Arguments of `plugbay list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Load this plugins folder into this process and list it, instead of asking the
    /// daemon: one sub-folder per plugin, each with a plugin.toml.
    #[arg(long, value_name = "DIR")]
    pub plugins: Option<PathBuf>,

    #[command(flatten)]
    pub sandbox: SandboxArgs,

    #[command(flatten)]
    pub daemon: DaemonArgs,

    /// Print a JSON array instead: one object per plugin with `id`, `folder`, `version`,
    /// `runtime`, `state`, `capabilities` and `error` (null, or `{code, message}`).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `plugbay inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The plugin folder, or the plugin.toml inside it. The folder's name must equal the
    /// plugin id, as in a plugins folder.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Print one JSON object instead: `folder`, `host_abi`, `manifest` (`path`, `content`,
    /// `error`), `artifact` (`path`, `size`), `native` (`table`, `error`) and `load`
    /// (`state`, `capabilities`, `error`).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Arguments of `plugbay doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON object instead: `kernel`, `root`, `cgroups` (`v1`, `v2`, `usable`) and
    /// `checks` (`layer`, `available`, `detail`).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `plugbay call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The capability to call, e.g. `text.transform@1`; any plugin that provides it may
    /// answer. `plugin:<id>` addresses one plugin instead.
    #[arg(value_name = "CAPABILITY")]
    pub capability: String,

    /// The method, e.g. `upper`. It must be listed for the capability in the plugin's
    /// plugin.toml.
    #[arg(value_name = "METHOD")]
    pub method: String,

    /// The request. Sent as application/json if it parses as JSON (note the quotes in
    /// '"hello"'), otherwise as text/plain; charset=utf-8. Empty when neither it nor --file
    /// is given.
    #[arg(value_name = "PAYLOAD", conflicts_with = "file")]
    pub payload: Option<String>,

    /// Send the bytes of this file as the request instead (`-` reads stdin), as
    /// application/octet-stream.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// The request's content type, instead of the one guessed from PAYLOAD or --file.
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,

    /// Load this plugins folder into this process and call it there, instead of through
    /// the daemon: one sub-folder per plugin. Plugins that fail to load are reported on
    /// stderr; the call goes ahead without them.
    #[arg(long, value_name = "DIR")]
    pub plugins: Option<PathBuf>,

    #[command(flatten)]
    pub sandbox: SandboxArgs,

    #[command(flatten)]
    pub daemon: DaemonArgs,

    /// Send the call to this plugin (by id) rather than to any provider of CAPABILITY. It
    /// must provide CAPABILITY.
    #[arg(long, value_name = "ID")]
    pub plugin: Option<String>,

    /// Give up after this many milliseconds. Default: the plugin's `limits.timeout_ms`,
    /// else 30000 (30 s). A native call cannot be interrupted once it runs; the deadline is checked
    /// before it starts.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: Option<u64>,

    /// Print a JSON object instead of the raw response: `plugin` (who answered),
    /// `content_type`, `encoding` (`json`, `utf-8` or `hex`) and `payload`; on failure
    /// `{"error": {"code", "message"}}`.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}

/// The sandbox of process plugins loaded into this process (`--plugins`; the daemon reads
/// its `[sandbox]` section instead).
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Whether process plugins run inside the sandbox (docs/sandbox.md).
    #[arg(long, value_enum, value_name = "MODE", default_value = "required")]
    pub sandbox: SandboxModeArg,

    /// A host path every sandboxed program sees read-only (a toolchain outside /usr, such
    /// as a Python under /opt). Repeatable.
    #[arg(long, value_name = "PATH")]
    pub sandbox_read: Vec<PathBuf>,
}

/// `--sandbox`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxModeArg {
    /// Every layer, or the plugin does not load.
    Required,
    /// The layers this machine can build, with a warning naming the others.
    BestEffort,
    /// No sandbox.
    Off,
}

impl From<SandboxModeArg> for plugbay_core::SandboxMode {
    fn from(mode: SandboxModeArg) -> plugbay_core::SandboxMode {
        match mode {
            SandboxModeArg::Required => plugbay_core::SandboxMode::Required,
            SandboxModeArg::BestEffort => plugbay_core::SandboxMode::BestEffort,
            SandboxModeArg::Off => plugbay_core::SandboxMode::Off,
        }
    }
}
