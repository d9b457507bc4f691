//! Supervision policy: when to restart a failed instance and after how long, when a plugin
//! that keeps failing is quarantined, what a crash report holds, and the coarse clock the
//! call path uses to notice calls that overrun their deadline.
//!
//! The host (`host/supervise.rs`) applies these decisions; this module holds no plugin state of its
//! own beyond the crash log.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::manifest::{Restart, RestartPolicy};

/// The bus topic of supervision alerts (a plugin quarantined). The action is `quarantined`;
/// the payload is a JSON [`Alert`].
pub const ALERT_TOPIC: &str = "plugbay.alert";

/// How many crash reports the host keeps (oldest dropped first).
pub const CRASH_LOG_CAPACITY: usize = 256;

/// How many recent calls a crash report lists per instance.
pub const RECENT_CALLS: usize = 16;

/// Milliseconds on the kernel's coarse monotonic clock (a few nanoseconds to read, a few
/// milliseconds of resolution): cheap enough for every in-process call.
pub(crate) fn coarse_now_ms() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (now.tv_sec as u64) * 1000 + (now.tv_nsec as u64) / 1_000_000
}

/// The coarse clock's resolution in ms (at least 1), read once.
pub(crate) fn coarse_resolution_ms() -> u64 {
    static RESOLUTION: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RESOLUTION.get_or_init(|| {
        let resolution = rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse);
        ((resolution.tv_sec as u64) * 1000 + (resolution.tv_nsec as u64).div_ceil(1_000_000)).max(1)
    })
}

/// Whether `policy` restarts an instance that ended this way.
pub(crate) fn restarts(policy: RestartPolicy, clean_exit: bool) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => !clean_exit,
        RestartPolicy::Always => true,
    }
}

/// The wait before restart number `attempt` (1-based): `backoff_ms` doubled for each
/// earlier restart in the window, capped at `backoff_max_ms`, then shortened by up to half
/// at random (`jitter` in `0.0..1.0`) so instances that failed together do not restart in
/// lockstep.
pub(crate) fn restart_delay(restart: &Restart, attempt: u32, jitter: f64) -> Duration {
    let doubled = restart.backoff_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
    let capped = doubled.min(restart.backoff_max_ms) as f64;
    Duration::from_millis((capped * (1.0 - 0.5 * jitter.clamp(0.0, 1.0))) as u64)
}

/// A random number in `0.0..1.0` for jitter (from the standard library's randomly seeded
/// hasher: no dependency for a number that needs no quality).
pub(crate) fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(coarse_now_ms());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What the supervisor decides after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Restart after `delay`; this is restart number `attempt` within the window.
    Restart {
        /// 1-based.
        attempt: u32,
        /// How long to wait first.
        delay: Duration,
    },
    /// More than `max_restarts` failures within the window: stop trying.
    Quarantine {
        /// Failures counted within the window.
        failures: usize,
    },
}

/// The failures of one plugin within its `[restart] window_s`.
#[derive(Debug, Default)]
pub(crate) struct FailureWindow {
    failures: VecDeque<Instant>,
}

impl FailureWindow {
    /// Records a failure at `now` and decides: restart (with its delay) or quarantine.
    pub(crate) fn record(&mut self, now: Instant, restart: &Restart, jitter: f64) -> Verdict {
        let window = Duration::from_secs(restart.window_s);
        while self.failures.front().is_some_and(|&at| now.duration_since(at) >= window) {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        let failures = self.failures.len();
        if failures > restart.max_restarts as usize {
            return Verdict::Quarantine { failures };
        }
        let attempt = failures as u32;
        Verdict::Restart { attempt, delay: restart_delay(restart, attempt, jitter) }
    }

    /// Forgets every failure (an operator started the plugin, or its artifact changed).
    pub(crate) fn clear(&mut self) {
        self.failures.clear();
    }
}

/// The payload of an [`ALERT_TOPIC`] event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Alert {
    /// The plugin.
    pub plugin: String,
    /// What happened: `quarantined`, or `sandbox_degraded` (a plugin started without some
    /// sandbox layers, in the best-effort mode).
    pub kind: String,
    /// Why, with the last failure's reason (exit status or signal, stderr lines, init error).
    pub reason: String,
}

/// One call an instance served, as remembered for crash reports: never the payload bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CallRecord {
    /// The method.
    pub method: String,
    /// Request payload size in bytes.
    pub payload_bytes: usize,
    /// How long the call took, in microseconds (0 while it runs).
    pub duration_us: u64,
    /// `in flight` while it runs (a call the crash interrupted), then `ok` or the error
    /// code's name.
    pub outcome: String,
    #[serde(skip)]
    seq: u64,
}

/// The last calls of one instance (bounded).
#[derive(Debug, Default)]
pub(crate) struct RecentCalls {
    calls: Mutex<(u64, VecDeque<CallRecord>)>,
}

impl RecentCalls {
    /// Remembers a call as it starts, forgetting the oldest beyond [`RECENT_CALLS`];
    /// returns its number for [`RecentCalls::finish`].
    pub(crate) fn start(&self, method: &str, payload_bytes: usize) -> u64 {
        let mut guard = self.calls.lock();
        let (next, calls) = &mut *guard;
        *next += 1;
        // Once full, the oldest record is reused, strings included: no allocation per call.
        let recycled = if calls.len() == RECENT_CALLS { calls.pop_front() } else { None };
        let mut record = recycled.unwrap_or_default();
        method.clone_into(&mut record.method);
        "in flight".clone_into(&mut record.outcome);
        record.payload_bytes = payload_bytes;
        record.duration_us = 0;
        record.seq = *next;
        calls.push_back(record);
        *next
    }

    /// Records how call `seq` ended (if it is still remembered).
    pub(crate) fn finish(&self, seq: u64, duration_us: u64, outcome: &str) {
        let mut guard = self.calls.lock();
        if let Some(call) = guard.1.iter_mut().rev().find(|call| call.seq == seq) {
            call.duration_us = duration_us;
            outcome.clone_into(&mut call.outcome);
        }
    }

    /// The remembered calls, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<CallRecord> {
        self.calls.lock().1.iter().cloned().collect()
    }
}

/// A record of one crash (an instance that died, failed its health checks, or failed to
/// start under a restart policy).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CrashReport {
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The plugin id.
    pub plugin: String,
    /// Which instance of the plugin (0-based replica number).
    pub instance: usize,
    /// Why: exit status or signal, trap, panic or init error, with the last stderr lines
    /// when the runtime has them.
    pub reason: String,
    /// How the program ended, as data, when a process died (`{"signaled": 9}`); absent
    /// for other failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<crate::runtime::ExitStatus>,
    /// The instance's last calls, oldest first.
    pub last_calls: Vec<CallRecord>,
    /// What the supervisor did: `restart N of M in D ms`, `quarantined after N failures
    /// within W s`, `not restarted (policy never)`, `not restarted: it exited cleanly
    /// (policy on-failure)`.
    pub action: String,
}

/// The host's crash reports, newest last, bounded by [`CRASH_LOG_CAPACITY`].
#[derive(Debug, Default)]
pub(crate) struct CrashLog {
    reports: Mutex<VecDeque<CrashReport>>,
}

impl CrashLog {
    /// Adds a report, dropping the oldest beyond the capacity.
    pub(crate) fn push(&self, report: CrashReport) {
        let mut reports = self.reports.lock();
        if reports.len() == CRASH_LOG_CAPACITY {
            reports.pop_front();
        }
        reports.push_back(report);
    }

    /// The reports for `plugin` (or all), oldest first.
    pub(crate) fn list(&self, plugin: Option<&str>) -> Vec<CrashReport> {
        let reports = self.reports.lock();
        reports.iter().filter(|report| plugin.is_none_or(|id| report.plugin == id)).cloned().collect()
    }
}

/// Milliseconds since the Unix epoch, for reports.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart(max_restarts: u32, backoff_ms: u64, backoff_max_ms: u64) -> Restart {
        Restart { max_restarts, window_s: 60, backoff_ms, backoff_max_ms, ..Restart::default() }
    }

    #[test]
    fn delay_doubles_per_attempt_and_stops_at_the_cap() {
        let restart = restart(10, 100, 1000);
        let delays: Vec<u64> =
            (1..=6).map(|attempt| restart_delay(&restart, attempt, 0.0).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_shortens_by_at_most_half() {
        let restart = restart(10, 100, 1000);
        assert_eq!(restart_delay(&restart, 1, 1.0), Duration::from_millis(50));
        assert_eq!(restart_delay(&restart, 40, 0.5), Duration::from_millis(750));
        for _ in 0..100 {
            let value = jitter();
            assert!((0.0..1.0).contains(&value), "{value}");
        }
    }

    #[test]
    fn more_than_max_restarts_failures_within_the_window_quarantine() {
        let restart = restart(3, 0, 0);
        let mut window = FailureWindow::default();
        let start = Instant::now();
        let verdicts: Vec<Verdict> =
            (0..4).map(|i| window.record(start + Duration::from_secs(i), &restart, 0.0)).collect();
        assert_eq!(verdicts[0], Verdict::Restart { attempt: 1, delay: Duration::ZERO });
        assert_eq!(verdicts[2], Verdict::Restart { attempt: 3, delay: Duration::ZERO });
        assert_eq!(verdicts[3], Verdict::Quarantine { failures: 4 });
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let restart = restart(1, 0, 0);
        let mut window = FailureWindow::default();
        let start = Instant::now();
        assert!(matches!(window.record(start, &restart, 0.0), Verdict::Restart { attempt: 1, .. }));
        let later = start + Duration::from_secs(61);
        assert!(matches!(window.record(later, &restart, 0.0), Verdict::Restart { attempt: 1, .. }));
        assert!(matches!(window.record(later, &restart, 0.0), Verdict::Quarantine { failures: 2 }));
        window.clear();
        assert!(matches!(window.record(later, &restart, 0.0), Verdict::Restart { attempt: 1, .. }));
    }

    #[test]
    fn policies_decide_by_how_the_instance_ended() {
        assert!(!restarts(RestartPolicy::Never, false));
        assert!(restarts(RestartPolicy::OnFailure, false));
        assert!(!restarts(RestartPolicy::OnFailure, true));
        assert!(restarts(RestartPolicy::Always, true));
    }

    #[test]
    fn crash_log_is_bounded_and_filters_by_plugin() {
        let log = CrashLog::default();
        for i in 0..CRASH_LOG_CAPACITY + 5 {
            log.push(CrashReport {
                time_ms: i as u64,
                plugin: if i % 2 == 0 { "a".into() } else { "b".into() },
                instance: 0,
                reason: String::new(),
                exit: None,
                last_calls: Vec::new(),
                action: String::new(),
            });
        }
        assert_eq!(log.list(None).len(), CRASH_LOG_CAPACITY);
        assert_eq!(log.list(None)[0].time_ms, 5);
        assert!(log.list(Some("a")).iter().all(|report| report.plugin == "a"));
    }
}
