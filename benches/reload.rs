//! Hot reload speed: the time from the last write of a plugin's new artifact to the new
//! version answering (the folder watch's debounce included), and the p99 call latency while
//! reloads happen beside the p99 without one, in the same run.
//!
//! Run: `cargo bench --bench reload` (results: BENCHMARKS.md). The plugin is the C fixture
//! (native), whose echo answers with a tag compiled in, so each answer names its version.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use plugbay_core::platform::native_library_file_name;
use plugbay_core::{Call, Host, HostConfig, Payload};
use plugbay_testkit::{PluginsDir, c_fixture_source, compile_c};

mod common;
use common::report;

/// Reloads timed one by one.
const RELOADS: usize = 30;
/// Callers during the latency comparison.
const CALLERS: usize = 2;

fn library(scratch: &Path, tag: &str) -> Vec<u8> {
    let out = scratch.join(format!("libcfix-{tag}.so"));
    compile_c(&c_fixture_source(), &out, &["-DPLUGIN_ID=\"cfix\"", &format!("-DECHO_TAG=\"{tag}:\"")]);
    std::fs::read(out).unwrap()
}

fn replace(path: &Path, bytes: &[u8]) {
    let temporary = path.with_file_name(".next");
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Writes the other version and waits until it answers; returns the time from the write.
async fn reload_once(host: &Host, path: &Path, bytes: &[u8], expected: &[u8]) -> Duration {
    let echo = Call::new("cfix@1", "echo", Payload::bytes(&b"x"[..]));
    replace(path, bytes);
    let written = Instant::now();
    loop {
        if host.invoke(echo.clone()).await.is_ok_and(|reply| reply.bytes[..] == *expected) {
            return written.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Call latencies at `CALLERS` concurrency for `span` (whatever else happens meanwhile).
async fn latencies(host: &Host, span: Duration) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (host, stop) = (host.clone(), stop.clone());
            tokio::spawn(async move {
                let echo = Call::new("cfix@1", "echo", Payload::bytes(&b"x"[..]));
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    host.invoke(echo.clone()).await.expect("no call fails during a reload");
                    samples.push(started.elapsed());
                    tokio::task::yield_now().await;
                }
                samples
            })
        })
        .collect();
    tokio::time::sleep(span).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = PluginsDir::new();
    let folder = dir.add_c_fixture("cfix", &["-DECHO_TAG=\"a:\""]);
    let scratch = tempfile::tempdir().unwrap();
    let versions = [library(scratch.path(), "a"), library(scratch.path(), "b")];
    let path = folder.join(native_library_file_name("libcfix"));
    let config = HostConfig::with_plugin_dir(dir.path())
        .with_watch(true)
        .with_reload_probation(Duration::from_millis(50));
    let host = runtime.block_on(async {
        let host = Host::build(config).unwrap();
        host.load_all().await;
        host
    });
    let debounce = host.config().watch_debounce;

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("reload");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    let mut round = 0usize;
    group.bench_function("write_to_new_version_serving", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    round += 1;
                    let (bytes, tag) =
                        if round % 2 == 1 { (&versions[1], b"b:x") } else { (&versions[0], b"a:x") };
                    total += reload_once(&host, &path, bytes, tag).await;
                }
                total
            })
        })
    });
    group.finish();

    let samples = runtime.block_on(async {
        let mut samples = Vec::with_capacity(RELOADS);
        for _ in 0..RELOADS {
            round += 1;
            let (bytes, tag) = if round % 2 == 1 { (&versions[1], b"b:x") } else { (&versions[0], b"a:x") };
            samples.push(reload_once(&host, &path, bytes, tag).await);
        }
        samples
    });
    println!("(the folder watch's debounce is {} ms of it)", debounce.as_millis());
    report("reload/native/write_to_new_version_serving", samples);

    let (steady, during) = runtime.block_on(async {
        let steady = latencies(&host, Duration::from_secs(2)).await;
        let swapping = {
            let (path, versions) = (path.clone(), versions.clone());
            tokio::spawn(async move {
                for round in 0..10 {
                    replace(&path, &versions[round % 2]);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let during = latencies(&host, Duration::from_secs(2)).await;
        swapping.await.unwrap();
        (steady, during)
    });
    report("reload/native/call_latency_steady", steady);
    report("reload/native/call_latency_during_reloads", during);
    criterion.final_summary();
}
