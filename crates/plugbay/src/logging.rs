//! Log lines to stderr through `tracing-subscriber`: the level from `-v` (or `RUST_LOG`),
//! the format from `--log-format`.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::cli::LogFormat;

/// Installs the global subscriber: warnings and errors by default, info with `-v`, debug
/// with `-vv`, trace with `-vvv`; `RUST_LOG`, when set, replaces all of that.
///
/// # Errors
/// When `RUST_LOG` is set but is not a valid filter, or a subscriber is already installed.
pub fn init(format: LogFormat, verbose: u8) -> anyhow::Result<()> {
    let from_env = std::env::var_os(EnvFilter::DEFAULT_ENV).is_some();
    let levels = if from_env {
        EnvFilter::try_from_default_env()
            .with_context(|| format!("{} is not a valid log filter", EnvFilter::DEFAULT_ENV))?
    } else {
        EnvFilter::new(match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        })
    };
    // Every command reports the plugins that failed to load itself (in its listing, or as a
    // `warning:` line), so at the default level the host's own warning about each is left
    // out rather than said twice. `-v` or RUST_LOG shows it again.
    let quiet = !from_env && verbose == 0;
    let not_reported_twice = filter_fn(move |metadata| !(quiet && is_load_failure(metadata)));
    let stderr = std::io::stderr;
    let layer = match format {
        LogFormat::Human => {
            fmt::layer().with_writer(stderr).with_ansi(std::io::stderr().is_terminal()).without_time().boxed()
        }
        LogFormat::Json => fmt::layer().json().with_writer(stderr).boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(levels.and(not_reported_twice)))
        .try_init()
        .context("cannot set up logging")
}

/// Whether an event is the host's warning that a plugin failed (it names the `folder`).
fn is_load_failure(metadata: &Metadata<'_>) -> bool {
    metadata.is_event()
        && *metadata.level() == Level::WARN
        && metadata.target() == plugbay_core::events::LOAD_FAILURE_LOG_TARGET
        && metadata.fields().field("folder").is_some()
}
