//! One module per command, and what they share: loading a plugins folder, the exit codes,
//! writing JSON to stdout.
//!
//! A command's `run` returns an [`Outcome`] once it has said what happened; an `Err` means
//! it could not run at all (a missing folder, an unreadable file), which `main` prints and
//! turns into [`CANNOT_RUN`].

mod call;
mod doctor;
mod inspect;
mod list;
mod manage;
mod token;
mod trust;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use plugbay_core::{Host, HostConfig, LoadReport, catalog};

use crate::cli::{Command, SandboxArgs};

/// Exit status: what was asked failed (the call returned an error, the plugin did not load).
pub const FAILED: u8 = 1;
/// Exit status: plugbay could not run (bad arguments, a missing or unreadable folder or
/// file). clap uses it for usage errors too.
pub const CANNOT_RUN: u8 = 2;

/// How a command that could run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// What was asked was done: exit status 0.
    Done,
    /// What was asked failed, and the command has said why: exit status [`FAILED`].
    Failed,
}

impl Outcome {
    /// The process exit status.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(FAILED),
        }
    }
}

/// Runs one command.
///
/// # Errors
/// When the command cannot run; see each command.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Run(_) => unreachable!("`plugbay run` is started by main with its configuration"),
        Command::List(args) => list::run(&args).await,
        Command::Inspect(args) => inspect::run(&args).await,
        Command::Call(args) => call::run(&args).await,
        Command::Reload(args) => manage::plugin(&args, "reload").await,
        Command::Stop(args) => manage::plugin(&args, "stop").await,
        Command::Start(args) => manage::plugin(&args, "start").await,
        Command::Events(args) => manage::events(&args).await,
        Command::Crashes(args) => manage::crashes(&args).await,
        Command::Doctor(args) => doctor::run(&args),
        Command::Key(crate::cli::KeyCommand::New(args)) => trust::key_new(&args),
        Command::Sign(args) => trust::sign(&args),
        Command::Verify(args) => trust::verify(&args),
        Command::Token(crate::cli::TokenCommand::New(args)) => token::new(&args),
    }
}

/// Builds a host on the plugins folder `dir` and loads every plugin in it. One plugin that
/// fails does not stop the others: each failure is in the report and in `Host::plugins`.
///
/// # Errors
/// When `dir` cannot be read as a plugins folder (missing, not a folder, unreadable), or
/// the host cannot be built.
async fn load_plugins(dir: &Path, sandbox: &SandboxArgs) -> anyhow::Result<(Host, LoadReport)> {
    // The host would record an unreadable folder as one more failure; for the command line
    // it means there is nothing to work on, so it is checked first.
    catalog::scan(dir)?;
    let host = Host::build(with_sandbox(HostConfig::with_plugin_dir(dir), sandbox)?)?;
    let report = host.load_all().await;
    tracing::info!(
        dir = %dir.display(),
        loaded = report.loaded.len(),
        failed = report.failed.len(),
        "plugins folder loaded"
    );
    Ok((host, report))
}

/// `config` with the sandbox the command line asks for (`--sandbox`, `--sandbox-read`).
fn with_sandbox(config: HostConfig, sandbox: &SandboxArgs) -> anyhow::Result<HostConfig> {
    let read = sandbox.sandbox_read.iter().map(std::path::absolute).collect::<std::io::Result<_>>()?;
    Ok(config.with_sandbox(sandbox.sandbox.into()).with_sandbox_read(read))
}

/// Writes `value` to stdout as pretty-printed JSON and a newline.
///
/// # Errors
/// When stdout cannot be written (a closed pipe).
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&text)?;
    out.flush()?;
    Ok(())
}
