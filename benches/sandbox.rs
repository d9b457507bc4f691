//! What the sandbox costs a process plugin: spawn to first answered call, and the call
//! round trip, each with the sandbox `off` and `required` (every layer), interleaved in one
//! run so the machine's drift falls on both.
//!
//! Run: `cargo bench --bench sandbox` (results: BENCHMARKS.md, "Sandbox"). It prints p50 /
//! p99 lines and the ratio of the sandboxed p50 to the unsandboxed one.

use std::hint::black_box;
use std::time::{Duration, Instant};

use plugbay_core::{Call, Host, HostConfig, Payload, SandboxMode};
use plugbay_testkit::PluginsDir;

mod common;
use common::{percentiles, report};

/// Starts measured per mode.
const STARTS: usize = 60;
/// Round trips measured per mode.
const CALLS: usize = 20_000;
/// Interleaving: this many of one mode, then of the other.
const CHUNK: usize = 2_000;
const MODES: [SandboxMode; 2] = [SandboxMode::Off, SandboxMode::Required];

fn main() {
    let dir = PluginsDir::new();
    let folder = dir.add_process_fixture("");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = |mode| HostConfig::with_plugin_dir(dir.path()).with_sandbox(mode);
    let echo = Call::new("fixture@1", "echo", Payload::bytes(vec![7u8; 64]));

    // Spawn to first call: a new host loads the folder and calls once; alternately per mode.
    let mut starts: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    runtime.block_on(async {
        for round in 0..STARTS * 2 {
            let index = round % 2;
            let host = Host::build(config(MODES[index])).unwrap();
            let start = Instant::now();
            host.load_folder(&folder).await.unwrap();
            black_box(host.invoke(echo.clone()).await.unwrap());
            starts[index].push(start.elapsed());
            host.unload("fixture").await.unwrap();
        }
    });
    compare("spawn_to_first_call", starts);

    // The round trip, from a task on the multi-thread runtime (as a server's handler calls).
    let hosts: Vec<Host> = MODES
        .iter()
        .map(|mode| {
            runtime.block_on(async {
                let host = Host::build(config(*mode)).unwrap();
                assert!(host.load_all().await.failed.is_empty());
                host
            })
        })
        .collect();
    let mut calls: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..CALLS / CHUNK {
        for (index, host) in hosts.iter().enumerate() {
            let (host, echo) = (host.clone(), echo.clone());
            let task = runtime.spawn(async move {
                let mut samples = Vec::with_capacity(CHUNK);
                for _ in 0..CHUNK {
                    let start = Instant::now();
                    black_box(host.invoke(echo.clone()).await.unwrap());
                    samples.push(start.elapsed());
                }
                samples
            });
            calls[index].extend(runtime.block_on(task).unwrap());
        }
    }
    compare("round_trip/64", calls);
}

/// Prints each mode's percentiles and the sandboxed p50 over the unsandboxed one.
fn compare(name: &str, [off, sandboxed]: [Vec<Duration>; 2]) {
    let ratio = percentiles(sandboxed.clone()).0.as_secs_f64() / percentiles(off.clone()).0.as_secs_f64();
    report(&format!("sandbox/{name}/off"), off);
    report(&format!("sandbox/{name}/required"), sandboxed);
    println!("ratio sandbox/{name}: required p50 / off p50 = {ratio:.3}");
}
