//! Call metrics: per plugin and method, counts, errors by [`Code`] and a latency histogram,
//! recorded with relaxed atomics (no lock, no allocation on the call path), and read as a
//! plain [`MetricsSnapshot`] that an exporter (the daemon's `/metrics`) renders.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Code;
use crate::lifecycle::State;
use crate::manifest::Manifest;

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
    fn record(&self, elapsed: Duration, error: Option<Code>) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(code) = error {
            self.errors[code_index(code)].fetch_add(1, Ordering::Relaxed);
        }
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
/// plugin's manifest is read, so recording is a lookup and a few atomic adds.
pub(crate) struct PluginStats {
    methods: HashMap<Box<str>, MethodStats>,
}

impl PluginStats {
    /// Counters for every method the manifest lists under `[provides]`.
    pub(crate) fn for_manifest(manifest: &Manifest) -> PluginStats {
        let methods = manifest
            .provides
            .values()
            .flatten()
            .map(|method| (Box::from(method.as_str()), MethodStats::default()));
        PluginStats { methods: methods.collect() }
    }

    /// Whether these counters cover exactly the methods of `manifest`.
    pub(crate) fn matches(&self, manifest: &Manifest) -> bool {
        let listed: std::collections::BTreeSet<&str> =
            manifest.provides.values().flatten().map(String::as_str).collect();
        listed.len() == self.methods.len() && listed.iter().all(|method| self.methods.contains_key(*method))
    }

    /// Records one call of `method` (ignored for a method the manifest does not list).
    pub(crate) fn record(&self, method: &str, elapsed: Duration, error: Option<Code>) {
        if let Some(stats) = self.methods.get(method) {
            stats.record(elapsed, error);
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<MethodMetrics> {
        let mut methods: Vec<_> = self.methods.iter().map(|(name, stats)| stats.snapshot(name)).collect();
        methods.sort_by(|a, b| a.method.cmp(&b.method));
        methods
    }
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
    /// How many times it was started again after its first start (by `start` or `reload`).
    pub restarts: u64,
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
    /// Failed calls by code (codes with a zero count left out).
    pub errors: Vec<(Code, u64)>,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS_SECONDS`], then `+Inf` (= calls).
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
        stats.record(Duration::from_micros(5), None);
        stats.record(Duration::from_millis(3), Some(Code::NotFound));
        stats.record(Duration::from_secs(60), None);
        let snapshot = stats.snapshot("m");
        assert_eq!(snapshot.calls, 3);
        assert_eq!(snapshot.errors, vec![(Code::NotFound, 1)]);
        assert_eq!(snapshot.cumulative_buckets[0], 1);
        assert_eq!(snapshot.cumulative_buckets[3], 1, "3 ms is above the 1 ms bound");
        assert_eq!(snapshot.cumulative_buckets[4], 2);
        assert_eq!(snapshot.cumulative_buckets[11], 2);
        assert_eq!(snapshot.cumulative_buckets[12], 3, "+Inf counts everything");
    }
}
