//! Supervision speed: the time from a process plugin's SIGKILL to its next answered call
//! (restart with the backoff at its minimum), and how far past the deadline a caller gets
//! `deadline_exceeded` (overshoot) for each runtime that can be pre-empted (process: a
//! sleeping call; wasm: a guest in an endless loop).
//!
//! Run: `cargo bench --bench supervision` (results: BENCHMARKS.md). Prints p50/p99 over
//! [`KILLS`] kills and [`OVERSHOOTS`] deadlines besides criterion's estimate.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::time::{Duration, Instant};

use criterion::Criterion;
use plugbay_core::{Call, Host, HostConfig, Payload};
use plugbay_testkit::PluginsDir;
use plugbay_testkit::wasm::{GUEST_METHODS, write_guest};

mod common;
use common::report;

/// SIGKILLs timed one by one for the percentile summary.
const KILLS: usize = 100;
/// Deadlines timed one by one.
const OVERSHOOTS: usize = 200;
/// The deadline the overshoot calls get.
const DEADLINE: Duration = Duration::from_millis(20);

fn call(method: &str, value: serde_json::Value) -> Call {
    Call::new("fixture@1", method, Payload::json(&value).unwrap())
}

async fn pid(host: &Host) -> Option<u32> {
    host.invoke(call("pid", serde_json::Value::Null)).await.ok().map(|reply| reply.to_json().unwrap())
}

/// Kills the fixture's process and returns the time until a new process answers.
async fn kill_and_wait(host: &Host) -> Duration {
    let old = pid(host).await.expect("the fixture answers");
    let started = Instant::now();
    let target = rustix::process::Pid::from_raw(old as i32).unwrap();
    rustix::process::kill_process(target, rustix::process::Signal::KILL).unwrap();
    loop {
        match pid(host).await {
            Some(new) if new != old => return started.elapsed(),
            _ => tokio::time::sleep(Duration::from_micros(100)).await,
        }
    }
}

fn restart_after_sigkill(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let dir = PluginsDir::new();
    let manifest = "[restart]\nbackoff_ms = 0\nbackoff_max_ms = 0\nmax_restarts = 1000\nwindow_s = 1\n\
                    [health]\ninterval_ms = 0\n";
    dir.add_process_fixture(manifest);
    let host = runtime.block_on(async {
        let host = Host::build(unsandboxed(dir.path())).unwrap();
        host.load_all().await;
        host
    });
    let mut group = c.benchmark_group("supervision");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.bench_function("sigkill_to_next_answer", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    total += kill_and_wait(&host).await;
                }
                total
            })
        })
    });
    group.finish();
    let samples = runtime.block_on(async {
        let mut samples = Vec::with_capacity(KILLS);
        for _ in 0..KILLS {
            samples.push(kill_and_wait(&host).await);
        }
        samples
    });
    report("supervision/process/sigkill_to_next_answer", samples);
}

fn deadline_overshoot(runtime: &tokio::runtime::Runtime) {
    let dir = PluginsDir::new();
    dir.add_process_fixture("");
    let samples = runtime.block_on(async {
        let host = Host::build(unsandboxed(dir.path())).unwrap();
        host.load_all().await;
        let mut samples = Vec::with_capacity(OVERSHOOTS);
        for _ in 0..OVERSHOOTS {
            let started = Instant::now();
            let error = host.invoke(call("sleep", 100.into()).with_timeout(DEADLINE)).await.unwrap_err();
            assert_eq!(error.code(), plugbay_core::Code::DeadlineExceeded, "{error}");
            samples.push(started.elapsed().saturating_sub(DEADLINE));
            // An answer in between, so the calls that ran past their deadline are not "in
            // a row" (that many would get the process killed as hung).
            host.invoke(call("echo", 1.into())).await.unwrap();
        }
        samples
    });
    report("supervision/process/deadline_overshoot", samples);
}

/// A wasm guest spinning in a loop until the epoch ticker interrupts it at its deadline.
fn wasm_deadline_overshoot(runtime: &tokio::runtime::Runtime) {
    let dir = PluginsDir::new();
    write_guest(&dir, "guest", &[("guest.test@1", GUEST_METHODS)], "");
    let samples = runtime.block_on(async {
        let host = Host::build(unsandboxed(dir.path())).unwrap();
        host.load_all().await;
        let mut samples = Vec::with_capacity(OVERSHOOTS);
        for _ in 0..OVERSHOOTS {
            let spin = Call::new("guest.test@1", "spin", Payload::bytes(&b""[..])).with_timeout(DEADLINE);
            let started = Instant::now();
            let error = host.invoke(spin).await.unwrap_err();
            assert_eq!(error.code(), plugbay_core::Code::DeadlineExceeded, "{error}");
            samples.push(started.elapsed().saturating_sub(DEADLINE));
        }
        samples
    });
    report("supervision/wasm/deadline_overshoot", samples);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut criterion = Criterion::default().configure_from_args();
    restart_after_sigkill(&mut criterion, &runtime);
    deadline_overshoot(&runtime);
    wasm_deadline_overshoot(&runtime);
    criterion.final_summary();
}

/// A host with the sandbox off: the kills above aim at the pid the fixture reports, which
/// in the sandbox is 2 of its own PID namespace (benches/sandbox.rs measures the sandbox).
fn unsandboxed(dir: &std::path::Path) -> HostConfig {
    HostConfig::with_plugin_dir(dir).with_sandbox(plugbay_core::SandboxMode::Off)
}
