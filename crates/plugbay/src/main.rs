//! `plugbay`, the command line of the plugbay plugin host: parse the arguments, set up
//! logging, run the command on a tokio runtime, print the error chain, exit with a code
//! (0 done, 1 what was asked failed, 2 plugbay could not run; see `plugbay --help`).
#![forbid(unsafe_code)]

mod cli;
mod client;
mod commands;
mod daemon;
mod logging;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use crate::cli::{Cli, Command, LogFormat};
use crate::commands::Outcome;
use crate::daemon::config::DaemonConfig;

fn main() -> ExitCode {
    // Usage errors exit here with status 2; --help and --version with 0.
    let cli = Cli::parse();
    match run(cli) {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => report(&error),
    }
}

/// Sets up logging and the runtime, then runs the command.
/// `plugbay run` reads and checks its configuration first (before logging is set up or a
/// socket bound) and logs at info level by default.
fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let daemon = match &cli.command {
        Command::Run(args) => Some(DaemonConfig::load(args, cli.log_format)?),
        _ => None,
    };
    let format =
        daemon.as_ref().map_or(cli.log_format.unwrap_or(LogFormat::Human), |config| config.log_format);
    let verbose = if daemon.is_some() { cli.verbose.max(1) } else { cli.verbose };
    logging::init(format, verbose)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("plugbay")
        .build()
        .context("cannot start the tokio runtime")?;
    match daemon {
        Some(config) => runtime.block_on(daemon::run(config)),
        None => runtime.block_on(commands::run(cli.command)),
    }
}

/// Prints why the command could not run, cause by cause, and returns exit status 2. A
/// closed stdout (`plugbay list | head -1`) is not an error: nothing is printed, status 0.
fn report(error: &anyhow::Error) -> ExitCode {
    let broken_pipe = error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    let mut shown = error.to_string();
    eprintln!("error: {shown}");
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        // plugbay's errors already quote their cause in their message; say it once.
        if !shown.contains(&cause) {
            eprintln!("  caused by: {cause}");
        }
        shown = cause;
    }
    ExitCode::from(commands::CANNOT_RUN)
}
