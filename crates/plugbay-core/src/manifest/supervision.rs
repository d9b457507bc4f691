//! The `[restart]`, `[health]` and `[retry]` tables: what the host does when a plugin fails,
//! how it finds out that a process plugin stopped answering, and which calls it may run again.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::context::{At, Context, Problem, Seg, invalid};
use super::provides::{Provides, is_provided};
use super::range::Allowed;
use super::text::quote;

/// The `[restart]` table: what the host does when the plugin fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restart {
    /// When to restart. Default: [`RestartPolicy::OnFailure`].
    pub policy: RestartPolicy,
    /// Restarts allowed within `window_s` before the plugin is quarantined, 0 to 1000.
    /// Default: 5.
    pub max_restarts: u32,
    /// The window, in seconds, over which restarts are counted, 1 to 86 400. Default: 60.
    pub window_s: u64,
    /// Milliseconds before the first restart, 0 to 600 000; each further restart within
    /// the window waits twice as long (with up to 50% random jitter). Default: 100.
    pub backoff_ms: u64,
    /// The longest wait between restarts, in milliseconds, 0 to 3 600 000. Default: 30 000.
    pub backoff_max_ms: u64,
    /// For plugins that take snapshots of their state: milliseconds between snapshots,
    /// 0 (only on a graceful stop) or 10 to 86 400 000. The host keeps the last snapshot
    /// and restores it into the next instance, after a crash too. Default: 0.
    pub snapshot_interval_ms: u64,
}

impl Default for Restart {
    fn default() -> Restart {
        Restart {
            policy: RestartPolicy::OnFailure,
            max_restarts: 5,
            window_s: 60,
            backoff_ms: 100,
            backoff_max_ms: 30_000,
            snapshot_interval_ms: 0,
        }
    }
}

/// When the host restarts a plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never; a failed plugin stays failed.
    Never,
    /// After a failure (crash, failed init), not after a clean stop. The default.
    #[default]
    OnFailure,
    /// Whenever the plugin stops, unless the host stopped it.
    Always,
}

impl RestartPolicy {
    /// The manifest spelling: `never`, `on-failure` or `always`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[health]` table: how the host checks that a running process plugin still answers.
/// A plugin that fails `failures` checks in a row is killed and restarted under its
/// `[restart]` policy. In-process runtimes (native, wasm) are not checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Milliseconds between checks, 0 (no checks) or 10 to 3 600 000. Default: 5 000.
    pub interval_ms: u64,
    /// Milliseconds one check may take, 1 to 600 000. Default: 1 000.
    pub timeout_ms: u64,
    /// Failed checks in a row that make the plugin unhealthy, 1 to 100. Default: 3.
    pub failures: u32,
}

impl Default for Health {
    fn default() -> Health {
        Health { interval_ms: 5_000, timeout_ms: 1_000, failures: 3 }
    }
}

/// The `[retry]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Methods that are safe to run twice: when the instance serving such a call dies, the
    /// host retries the call once on another running instance. Every name must be a method
    /// in `[provides]`. Default: none (a call is never retried).
    pub idempotent: Vec<String>,
}

/// `[restart]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawRestart {
    policy: Option<String>,
    max_restarts: Option<i64>,
    window_s: Option<i64>,
    backoff_ms: Option<i64>,
    backoff_max_ms: Option<i64>,
    snapshot_interval_ms: Option<i64>,
}

/// `[health]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawHealth {
    interval_ms: Option<i64>,
    timeout_ms: Option<i64>,
    failures: Option<i64>,
}

/// `[retry]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawRetry {
    idempotent: Vec<String>,
}

const MAX_RESTARTS: Allowed<u32> = Allowed::new(0, 1000);
const WINDOW_S: Allowed<u64> = Allowed::new(1, 86_400);
const BACKOFF_MS: Allowed<u64> = Allowed::new(0, 600_000);
const BACKOFF_MAX_MS: Allowed<u64> = Allowed::new(0, 3_600_000);
const SNAPSHOT_INTERVAL_MS: Allowed<u64> = Allowed::zero_or("only on stop", 10, 86_400_000);
const INTERVAL_MS: Allowed<u64> = Allowed::zero_or("no checks", 10, 3_600_000);
const HEALTH_TIMEOUT_MS: Allowed<u64> = Allowed::new(1, 600_000);
const FAILURES: Allowed<u32> = Allowed::new(1, 100);

impl Context<'_> {
    /// Validates `[restart]`: a known policy, every number in its range.
    pub(super) fn restart(&self, raw: RawRestart) -> Result<Restart> {
        let field = |name: &'static str| [Seg::Key("restart"), Seg::Key(name)];
        let defaults = Restart::default();
        let policy = match &raw.policy {
            None => defaults.policy,
            Some(policy) => self.check(&field("policy"), At::Value, parse_policy(policy))?,
        };
        Ok(Restart {
            policy,
            max_restarts: self
                .number(&field("max_restarts"), raw.max_restarts, MAX_RESTARTS)?
                .unwrap_or(defaults.max_restarts),
            window_s: self.number(&field("window_s"), raw.window_s, WINDOW_S)?.unwrap_or(defaults.window_s),
            backoff_ms: self
                .number(&field("backoff_ms"), raw.backoff_ms, BACKOFF_MS)?
                .unwrap_or(defaults.backoff_ms),
            backoff_max_ms: self
                .number(&field("backoff_max_ms"), raw.backoff_max_ms, BACKOFF_MAX_MS)?
                .unwrap_or(defaults.backoff_max_ms),
            snapshot_interval_ms: self
                .number(&field("snapshot_interval_ms"), raw.snapshot_interval_ms, SNAPSHOT_INTERVAL_MS)?
                .unwrap_or(defaults.snapshot_interval_ms),
        })
    }

    /// Validates `[health]`: every number in its range.
    pub(super) fn health(&self, raw: RawHealth) -> Result<Health> {
        let field = |name: &'static str| [Seg::Key("health"), Seg::Key(name)];
        let defaults = Health::default();
        Ok(Health {
            interval_ms: self
                .number(&field("interval_ms"), raw.interval_ms, INTERVAL_MS)?
                .unwrap_or(defaults.interval_ms),
            timeout_ms: self
                .number(&field("timeout_ms"), raw.timeout_ms, HEALTH_TIMEOUT_MS)?
                .unwrap_or(defaults.timeout_ms),
            failures: self.number(&field("failures"), raw.failures, FAILURES)?.unwrap_or(defaults.failures),
        })
    }

    /// Validates `[retry]`: every idempotent method listed in `[provides]`.
    pub(super) fn retry(&self, raw: RawRetry, provides: &Provides) -> Result<Retry> {
        for (index, method) in raw.idempotent.iter().enumerate() {
            if !is_provided(provides, method) {
                return Err(self.error(
                    &[Seg::Key("retry"), Seg::Key("idempotent"), Seg::Index(index)],
                    At::Value,
                    invalid(format!("method {} is not listed in [provides]", quote(method))),
                ));
            }
        }
        Ok(Retry { idempotent: raw.idempotent })
    }
}

fn parse_policy(policy: &str) -> Result<RestartPolicy, Problem> {
    [RestartPolicy::Never, RestartPolicy::OnFailure, RestartPolicy::Always]
        .into_iter()
        .find(|known| known.as_str() == policy)
        .ok_or_else(|| {
            invalid(format!(
                "restart policy {} is not known; use \"never\", \"on-failure\" or \"always\"",
                quote(policy)
            ))
        })
}
