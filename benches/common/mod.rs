//! Helpers shared by the benchmarks: percentiles over individually timed samples.

use std::time::Duration;

/// The p50 and p99 of `samples`.
pub fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

/// Prints one `percentiles` line (BENCHMARKS.md quotes them).
pub fn report(name: &str, samples: Vec<Duration>) {
    let (p50, p99) = percentiles(samples);
    println!(
        "percentiles {name:<40} p50 {:>8.1} us   p99 {:>8.1} us",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}
