//! The `[limits]` table: resource limits, each unset one taking the host's default.

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::context::{Context, Seg};
use super::range::Allowed;

/// The `[limits]` table. Every limit is optional; an unset one takes the host's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Per-call deadline in milliseconds, 1 to 3 600 000. Default: unset (host default).
    pub timeout_ms: Option<u64>,
    /// Calls in flight at once, 1 to 65 536. Default: unset (host default).
    pub max_concurrency: Option<u32>,
    /// Memory limit in MiB, 1 to 1 048 576, enforced for process plugins by the sandbox's
    /// cgroup (swap off; docs/sandbox.md). Default: unset (no limit).
    pub memory_mb: Option<u64>,
    /// CPU share in percent of one core, 1 to 10 000, enforced for process plugins by the
    /// sandbox's cgroup as a quota. Default: unset (no limit).
    pub cpu_percent: Option<u32>,
    /// Processes and threads at once, 1 to 1 000 000, enforced for process plugins by the
    /// sandbox's cgroup. Default: unset (no limit).
    pub pids: Option<u32>,
}

/// `[limits]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawLimits {
    timeout_ms: Option<i64>,
    max_concurrency: Option<i64>,
    memory_mb: Option<i64>,
    cpu_percent: Option<i64>,
    pids: Option<i64>,
}

const TIMEOUT_MS: Allowed<u64> = Allowed::new(1, 3_600_000);
const MAX_CONCURRENCY: Allowed<u32> = Allowed::new(1, 65_536);
const MEMORY_MB: Allowed<u64> = Allowed::new(1, 1_048_576);
const CPU_PERCENT: Allowed<u32> = Allowed::new(1, 10_000);
const PIDS: Allowed<u32> = Allowed::new(1, 1_000_000);

impl Context<'_> {
    /// Validates `[limits]`: every limit that is set in its range.
    pub(super) fn limits(&self, raw: RawLimits) -> Result<Limits> {
        let field = |name: &'static str| [Seg::Key("limits"), Seg::Key(name)];
        Ok(Limits {
            timeout_ms: self.number(&field("timeout_ms"), raw.timeout_ms, TIMEOUT_MS)?,
            max_concurrency: self.number(&field("max_concurrency"), raw.max_concurrency, MAX_CONCURRENCY)?,
            memory_mb: self.number(&field("memory_mb"), raw.memory_mb, MEMORY_MB)?,
            cpu_percent: self.number(&field("cpu_percent"), raw.cpu_percent, CPU_PERCENT)?,
            pids: self.number(&field("pids"), raw.pids, PIDS)?,
        })
    }
}
