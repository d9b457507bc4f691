//! The `[process]` table: how the process runtime runs the plugin's program.

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::context::{At, Context, Seg, invalid};
use super::range::Allowed;
use super::text::quote;

/// The `[process]` table: how the process runtime runs the plugin's program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessSettings {
    /// How many processes (instances) to run; calls are spread across them. 1 to 64.
    /// Default: 1.
    pub replicas: u32,
    /// Milliseconds from spawning the program to its init returning, 1 to 600 000.
    /// Default: 10 000.
    pub start_timeout_ms: u64,
    /// Milliseconds the program has to exit after shutdown before its process group is
    /// killed, 0 to 600 000. Default: 5 000.
    pub shutdown_grace_ms: u64,
    /// Arguments passed to the program (each at most 4096 bytes, no NUL). Default: none.
    pub args: Vec<String>,
    /// Which transports the host offers the program. Default: [`ProcessTransport::Auto`].
    pub transport: ProcessTransport,
}

/// The transports a process plugin may be offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessTransport {
    /// gRPC, and the lean framed transport for programs that speak it (the Rust SDK).
    #[default]
    Auto,
    /// gRPC only.
    Grpc,
}

impl Default for ProcessSettings {
    fn default() -> ProcessSettings {
        ProcessSettings {
            replicas: 1,
            start_timeout_ms: 10_000,
            shutdown_grace_ms: 5_000,
            args: Vec::new(),
            transport: ProcessTransport::Auto,
        }
    }
}

/// `[process]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawProcess {
    replicas: Option<i64>,
    start_timeout_ms: Option<i64>,
    shutdown_grace_ms: Option<i64>,
    #[serde(default)]
    args: Vec<String>,
    transport: Option<String>,
}

const REPLICAS: Allowed<u32> = Allowed::new(1, 64);
const START_TIMEOUT_MS: Allowed<u64> = Allowed::new(1, 600_000);
const SHUTDOWN_GRACE_MS: Allowed<u64> = Allowed::new(0, 600_000);
/// The longest argument, in bytes.
const MAX_ARG_BYTES: usize = 4096;

impl Context<'_> {
    /// Validates `[process]`: every number in its range, a known transport, arguments the
    /// program can be given.
    pub(super) fn process(&self, raw: RawProcess) -> Result<ProcessSettings> {
        let field = |name: &'static str| [Seg::Key("process"), Seg::Key(name)];
        let defaults = ProcessSettings::default();
        let replicas = self.number(&field("replicas"), raw.replicas, REPLICAS)?.unwrap_or(defaults.replicas);
        let start_timeout_ms = self
            .number(&field("start_timeout_ms"), raw.start_timeout_ms, START_TIMEOUT_MS)?
            .unwrap_or(defaults.start_timeout_ms);
        let shutdown_grace_ms = self
            .number(&field("shutdown_grace_ms"), raw.shutdown_grace_ms, SHUTDOWN_GRACE_MS)?
            .unwrap_or(defaults.shutdown_grace_ms);
        let transport = match raw.transport.as_deref() {
            None | Some("auto") => ProcessTransport::Auto,
            Some("grpc") => ProcessTransport::Grpc,
            Some(other) => {
                return Err(self.error(
                    &field("transport"),
                    At::Value,
                    invalid(format!("transport {} is not one of: auto, grpc", quote(other))),
                ));
            }
        };
        for (index, arg) in raw.args.iter().enumerate() {
            if arg.len() > MAX_ARG_BYTES || arg.contains('\0') {
                return Err(self.error(
                    &[Seg::Key("process"), Seg::Key("args"), Seg::Index(index)],
                    At::Value,
                    invalid(format!("each argument must be at most {MAX_ARG_BYTES} characters without NUL")),
                ));
            }
        }
        Ok(ProcessSettings { replicas, start_timeout_ms, shutdown_grace_ms, args: raw.args, transport })
    }
}
