//! Call metrics: per plugin and method, counts, errors by [`Code`] and a latency histogram,
//! recorded with relaxed atomics (no lock, no allocation on the call path), and read as a
//! plain [`MetricsSnapshot`] that an exporter (the daemon's `/metrics`) renders.
//!
//! Counts and errors are exact. Latency is timed for every call of a process plugin, but
//! only for one call in [`NATIVE_TIMING_EVERY`] of a native plugin: reading the clock twice
//! costs about 50 ns on this VM, as much as half of a whole native call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::Code;
use crate::lifecycle::State;
use crate::manifest::{Manifest, RuntimeKind};

/// The upper bounds of the latency buckets, in seconds (`+Inf` is implied after the last).
pub const LATENCY_BUCKETS_SECONDS: [f64; 12] =
    [0.000_01, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

/// The same bounds in nanoseconds, for the recording side.
const BUCKET_BOUNDS_NS: [u64; 12] = [
    10_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
    30_000_000_000,
];

/// A native plugin's calls are timed one in this many (the first, then every N-th).
pub const NATIVE_TIMING_EVERY: u64 = 8;

/// The counters of one method of one plugin.
#[derive(Default)]
pub(crate) struct MethodStats {
    calls: AtomicU64,
    errors: [AtomicU64; Code::ALL.len()],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKET_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl MethodStats {
    /// Counts a call in; returns when it started if this call is to be timed (every call
    /// when `every` is 1, else one in `every`).
    pub(crate) fn begin(&self, every: u64) -> Option<Instant> {
        let before = self.calls.fetch_add(1, Ordering::Relaxed);
        before.is_multiple_of(every).then(Instant::now)
    }

    /// Records how the call counted in by [`MethodStats::begin`] ended.
    pub(crate) fn finish(&self, started: Option<Instant>, error: Option<Code>) {
        if let Some(code) = error {
            self.errors[code_index(code)].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(started) = started {
            self.observe(started.elapsed());
        }
    }

    fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_NS.iter().position(|bound| ns <= *bound).unwrap_or(BUCKET_BOUNDS_NS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn snapshot(&self, method: &str) -> MethodMetrics {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .map(|bucket| {
                cumulative += bucket.load(Ordering::Relaxed);
                cumulative
            })
            .collect();
        MethodMetrics {
            method: method.to_owned(),
            calls: self.calls.load(Ordering::Relaxed),
            timed: cumulative,
            errors: Code::ALL
                .into_iter()
                .map(|code| (code, self.errors[code_index(code)].load(Ordering::Relaxed)))
                .filter(|(_, count)| *count > 0)
                .collect(),
            cumulative_buckets: buckets,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// The counters of one plugin: one [`MethodStats`] per whitelisted method, fixed when the
/// plugin's manifest is read, so recording is a short scan and a few atomic adds.
pub(crate) struct PluginStats {
    /// Sorted by name, each once (a manifest lists a handful of methods: a scan of short
    /// strings beats hashing them).
    methods: Vec<(Box<str>, MethodStats)>,
    /// Time one call in this many ([`NATIVE_TIMING_EVERY`] for native plugins, else 1).
    pub(crate) timing_every: u64,
}

impl PluginStats {
    /// Counters for every method the manifest lists under `[provides]`.
    pub(crate) fn for_manifest(manifest: &Manifest) -> PluginStats {
        let methods = method_names(manifest)
            .into_iter()
            .map(|name| (Box::from(name), MethodStats::default()))
            .collect();
        let timing_every = match manifest.plugin.runtime {
            RuntimeKind::Native => NATIVE_TIMING_EVERY,
            _ => 1,
        };
        PluginStats { methods, timing_every }
    }

    /// Whether these counters cover exactly the methods of `manifest`.
    pub(crate) fn matches(&self, manifest: &Manifest) -> bool {
        let names = method_names(manifest);
        names.len() == self.methods.len() && self.methods.iter().all(|(name, _)| names.contains(&**name))
    }

    /// The counters of `method` (`None` for a method the manifest does not list).
    pub(crate) fn method(&self, method: &str) -> Option<&MethodStats> {
        self.method_index(method).map(|index| &self.methods[index].1)
    }

    /// Where `method`'s counters are, for a caller that records many calls of one method
    /// (a `MethodHandle`) and looks them up once.
    pub(crate) fn method_index(&self, method: &str) -> Option<usize> {
        self.methods.iter().position(|(name, _)| **name == *method)
    }

    /// The counters at `index` (from [`PluginStats::method_index`]).
    pub(crate) fn method_at(&self, index: usize) -> &MethodStats {
        &self.methods[index].1
    }

    pub(crate) fn snapshot(&self) -> Vec<MethodMetrics> {
        self.methods.iter().map(|(name, stats)| stats.snapshot(name)).collect()
    }
}

fn method_names(manifest: &Manifest) -> std::collections::BTreeSet<&str> {
    manifest.provides.values().flatten().map(String::as_str).collect()
}

/// Errors of calls that reached no plugin (unknown capability or method), by code.
#[derive(Default)]
pub(crate) struct UnroutedStats {
    errors: [AtomicU64; Code::ALL.len()],
}

impl UnroutedStats {
    pub(crate) fn record(&self, code: Code) {
        self.errors[code_index(code)].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Vec<(Code, u64)> {
        Code::ALL
            .into_iter()
            .map(|code| (code, self.errors[code_index(code)].load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

fn code_index(code: Code) -> usize {
    Code::ALL.iter().position(|known| *known == code).unwrap_or(0)
}

/// The metrics of the whole host at one moment.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// One entry per plugin the host knows.
    pub plugins: Vec<PluginMetrics>,
    /// Errors of calls that reached no plugin, by code (codes with a zero count left out).
    pub unrouted_errors: Vec<(Code, u64)>,
}

impl MetricsSnapshot {
    pub(crate) fn unrouted(stats: &UnroutedStats) -> Vec<(Code, u64)> {
        stats.snapshot()
    }
}

/// The metrics of one plugin.
#[derive(Debug, Clone)]
pub struct PluginMetrics {
    /// The plugin id.
    pub id: String,
    /// Its lifecycle state now.
    pub state: State,
    /// How many instances serve calls now.
    pub instances: usize,
    /// Restarts the supervisor made (after crashes, failed health checks, failed starts)
    /// since the plugin was last loaded or started by hand.
    pub restarts: u64,
    /// In-process calls seen running past their timeout (they cannot be pre-empted).
    pub stuck_calls: u64,
    /// Per method, sorted by name; empty until its manifest was read.
    pub methods: Vec<MethodMetrics>,
}

/// The metrics of one method of one plugin.
#[derive(Debug, Clone)]
pub struct MethodMetrics {
    /// The method name.
    pub method: String,
    /// Calls that reached the plugin (successful or not).
    pub calls: u64,
    /// Calls whose latency is in the histogram (all of a process plugin's; one in
    /// [`NATIVE_TIMING_EVERY`] of a native plugin's).
    pub timed: u64,
    /// Failed calls by code (codes with a zero count left out).
    pub errors: Vec<(Code, u64)>,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS_SECONDS`], then `+Inf` (= timed).
    pub cumulative_buckets: Vec<u64>,
    /// The sum of all latencies, in seconds.
    pub sum_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_the_right_bucket_and_buckets_are_cumulative() {
        let stats = MethodStats::default();
        for (elapsed, error) in [(5_000, None), (3_000_000, Some(Code::NotFound)), (60_000_000_000, None)] {
            assert!(stats.begin(1).is_some(), "every call is timed at 1");
            stats.finish(None, error);
            stats.observe(Duration::from_nanos(elapsed));
        }
        let snapshot = stats.snapshot("m");
        assert_eq!((snapshot.calls, snapshot.timed), (3, 3));
        assert_eq!(snapshot.errors, vec![(Code::NotFound, 1)]);
        assert_eq!(snapshot.cumulative_buckets[0], 1);
        assert_eq!(snapshot.cumulative_buckets[3], 1, "3 ms is above the 1 ms bound");
        assert_eq!(snapshot.cumulative_buckets[4], 2);
        assert_eq!(snapshot.cumulative_buckets[11], 2);
        assert_eq!(snapshot.cumulative_buckets[12], 3, "+Inf counts everything");
    }

    #[test]
    fn one_call_in_n_is_timed_starting_with_the_first() {
        let stats = MethodStats::default();
        let timed: Vec<bool> = (0..17).map(|_| stats.begin(8).is_some()).collect();
        assert_eq!(timed.iter().filter(|timed| **timed).count(), 3);
        assert!(timed[0] && timed[8] && timed[16]);
    }
}
