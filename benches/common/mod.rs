//! Helpers shared by the benchmarks: percentiles over individually timed samples, and the
//! timing loops of criterion's `iter_custom` that several benchmarks run. Each benchmark
//! uses some of them.
#![allow(dead_code)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use plugbay_core::{Call, Host, HostConfig};

/// The time `iterations` calls of `call` through `Host::invoke().await` take, one after
/// the other.
pub fn time_invokes(
    runtime: &tokio::runtime::Runtime,
    host: &Host,
    call: &Call,
    iterations: u64,
) -> Duration {
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iterations {
            black_box(host.invoke(call.clone()).await.unwrap());
        }
        start.elapsed()
    })
}

/// The time `iterations` loads of the plugin `folder` take, each into a new host built from
/// `config` (only the load is timed).
pub fn time_first_loads(
    runtime: &tokio::runtime::Runtime,
    config: &HostConfig,
    folder: &Path,
    iterations: u64,
) -> Duration {
    runtime.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iterations {
            let host = Host::build(config.clone()).unwrap();
            let start = Instant::now();
            host.load_folder(folder).await.unwrap();
            total += start.elapsed();
        }
        total
    })
}

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
