//! Process plugin call cost: a round trip to a Rust process plugin through `Host::invoke`,
//! beside a raw Unix-socket ping-pong between two processes measured in the same run (the
//! physical floor on this machine), and the time from spawning a plugin to its first
//! answered call.
//!
//! Run: `cargo bench --bench process_call` (results: BENCHMARKS.md). Besides criterion's
//! estimates it prints p50/p99 over a fixed number of round trips for each path.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use plugbay_core::{Call, Host, HostConfig, Payload, SandboxMode};
use plugbay_testkit::PluginsDir;

mod common;
use common::{report, time_invokes};

const SIZES: [usize; 2] = [64, 4096];
/// Round trips timed one by one for the percentile summary.
const SAMPLES: usize = 20_000;
/// Set in the child: run as the raw echo peer on this socket path.
const ECHO_PEER: &str = "PLUGBAY_BENCH_ECHO_PEER";

/// The raw peer: echoes fixed-size messages (size first, then payloads) until EOF.
fn echo_peer(path: &str) {
    let mut stream = UnixStream::connect(path).expect("connect to the bench");
    let mut size = [0u8; 8];
    stream.read_exact(&mut size).unwrap();
    let mut buffer = vec![0u8; u64::from_le_bytes(size) as usize];
    while stream.read_exact(&mut buffer).is_ok() {
        if stream.write_all(&buffer).is_err() {
            break;
        }
    }
}

/// A raw ping-pong partner in another process, for one message size.
struct RawPeer {
    stream: UnixStream,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl RawPeer {
    fn start(size: usize) -> RawPeer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .env(ECHO_PEER, &path)
            .spawn()
            .unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(&(size as u64).to_le_bytes()).unwrap();
        RawPeer { stream, child, _dir: dir }
    }

    fn round_trip(&mut self, message: &mut [u8]) {
        self.stream.write_all(message).unwrap();
        self.stream.read_exact(message).unwrap();
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let _ = self.child.wait();
    }
}

/// Whether the benchmark `name` is selected by the filter on the command line, if any
/// (criterion applies it to its own measurements; this skips the percentile loops too).
fn selected(name: &str) -> bool {
    std::env::args().skip(1).find(|arg| !arg.starts_with('-')).is_none_or(|filter| name.contains(&filter))
}

fn round_trips(c: &mut Criterion) {
    for (transport, manifest_extra) in [("framed", ""), ("grpc", "\n[process]\ntransport = \"grpc\"\n")] {
        if selected(&format!("process/{transport}")) {
            round_trips_over(c, transport, manifest_extra);
        }
    }
    if selected("process/raw_unix_ping_pong") {
        raw_ping_pong(c);
    }
}

/// CPU time (user and system, every thread, exited ones included) process `pid` has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    // After the command name: the state is field 3, utime field 14 and stime field 15.
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("a stat line").1.split(' ').collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// Runs `round_trips` (which makes `calls` round trips) and prints the CPU time per round
/// trip of the caller's process and of the peer `peer`, beside the latency percentiles.
fn with_cpu_per_call<T>(name: &str, peer: u32, calls: usize, round_trips: impl FnOnce() -> T) -> T {
    let (caller_before, peer_before) = (cpu_time(std::process::id()), cpu_time(peer));
    let result = round_trips();
    let per_call = |after: Duration, before: Duration| (after - before).as_secs_f64() * 1e6 / calls as f64;
    println!(
        "cpu {name:<48} caller {:>6.1} us/call   peer {:>6.1} us/call",
        per_call(cpu_time(std::process::id()), caller_before),
        per_call(cpu_time(peer), peer_before)
    );
    result
}

/// `SAMPLES` round trips of `call`, each timed.
async fn timed_invokes(host: &Host, call: &Call) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        black_box(host.invoke(call.clone()).await.unwrap());
        samples.push(start.elapsed());
    }
    samples
}

fn round_trips_over(c: &mut Criterion, transport: &str, manifest_extra: &str) {
    let dir = PluginsDir::new();
    dir.add_process_fixture(manifest_extra);
    for flavor in ["current_thread", "multi_thread"] {
        let runtime = match flavor {
            "current_thread" => tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
            _ => tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap(),
        };
        let host = runtime.block_on(async {
            // Unsandboxed, as before the sandbox existed (the fixture's pid, read below,
            // is then the host's view of it); benches/sandbox.rs compares the two.
            let config = HostConfig::with_plugin_dir(dir.path()).with_sandbox(SandboxMode::Off);
            let host = Host::build(config).unwrap();
            let report = host.load_all().await;
            assert!(report.failed.is_empty(), "{:?}", report.failed);
            host
        });
        let pid_call = Call::new("fixture@1", "pid", Payload::json(&()).unwrap());
        let plugin: u32 = runtime.block_on(host.invoke(pid_call)).unwrap().to_json().unwrap();
        let mut group = c.benchmark_group(format!("process/{transport}/{flavor}"));
        for size in SIZES {
            let call = Call::new("fixture@1", "echo", Payload::bytes(vec![7u8; size]));
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new("host_invoke", size), &call, |b, call| {
                b.iter_custom(|iterations| time_invokes(&runtime, &host, call, iterations))
            });
            // From `block_on` on the bench's own thread: on a multi-thread runtime that thread
            // is not one of its workers, so every reply crosses threads to reach it.
            let name = format!("process/{transport}/{flavor}/host_invoke/{size}");
            let samples =
                with_cpu_per_call(&name, plugin, SAMPLES, || runtime.block_on(timed_invokes(&host, &call)));
            report(&name, samples);
            if flavor == "multi_thread" {
                // From a task on the runtime, as a server's request handler calls.
                let name = format!("process/{transport}/{flavor}_task/host_invoke/{size}");
                let (host, call) = (host.clone(), call.clone());
                let samples = with_cpu_per_call(&name, plugin, SAMPLES, || {
                    let task = runtime.spawn(async move { timed_invokes(&host, &call).await });
                    runtime.block_on(task).unwrap()
                });
                report(&name, samples);
            }
        }
        group.finish();
        runtime.block_on(host.unload("fixture")).unwrap();
    }
}

fn raw_ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("process/raw_unix_ping_pong");
    for size in SIZES {
        let mut peer = RawPeer::start(size);
        let mut message = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| b.iter(|| peer.round_trip(&mut message)));
        let name = format!("process/raw_unix_ping_pong/{size}");
        let samples = with_cpu_per_call(&name, peer.child.id(), SAMPLES, || {
            (0..SAMPLES)
                .map(|_| {
                    let start = Instant::now();
                    peer.round_trip(&mut message);
                    start.elapsed()
                })
                .collect()
        });
        report(&name, samples);
    }
    group.finish();
}

/// Spawn to first answered call, with the plugins' private directories (and sockets) in the
/// default temporary directory (`/tmp`, a disk file system on the benchmark machine), and,
/// when the machine has one, on a memory file system (`/dev/shm`); then again with the
/// default directory, each start after 20 ms of idleness (an idle vCPU of this VM wakes
/// slower, and a real start rarely follows another).
fn spawn_to_first_call(c: &mut Criterion) {
    let tmpfs = std::path::Path::new("/dev/shm");
    spawn_to_first_call_with(c, "spawn_to_first_call", None, Duration::ZERO);
    if tmpfs.is_dir() {
        spawn_to_first_call_with(c, "spawn_to_first_call/sockets_in_dev_shm", Some(tmpfs), Duration::ZERO);
    }
    let idle = Duration::from_millis(20);
    spawn_to_first_call_with(c, "spawn_to_first_call/after_20ms_idle", None, idle);
}

fn spawn_to_first_call_with(
    c: &mut Criterion,
    name: &str,
    socket_dir: Option<&std::path::Path>,
    idle: Duration,
) {
    let dir = PluginsDir::new();
    let folder = dir.add_process_fixture("");
    let config = HostConfig::with_plugin_dir(dir.path())
        .with_process_socket_dir(socket_dir.map(std::path::Path::to_path_buf))
        .with_sandbox(SandboxMode::Off);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let call = Call::new("fixture@1", "echo", Payload::bytes(&b"first"[..]));
    let mut group = c.benchmark_group("process");
    group.sample_size(20).measurement_time(Duration::from_secs(8));
    group.bench_function(name, |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let host = Host::build(config.clone()).unwrap();
                    let start = Instant::now();
                    host.load_folder(&folder).await.unwrap();
                    black_box(host.invoke(call.clone()).await.unwrap());
                    total += start.elapsed();
                    host.unload("fixture").await.unwrap();
                    tokio::time::sleep(idle).await;
                }
                total
            })
        })
    });
    group.finish();
    // Where the time goes: loading (spawn, handshake, health, describe, init) vs the call;
    // and unloading (Shutdown, the program's exit, its directory removed).
    let (mut load, mut first, mut unload) = (Vec::new(), Vec::new(), Vec::new());
    runtime.block_on(async {
        for _ in 0..20 {
            let host = Host::build(config.clone()).unwrap();
            let start = Instant::now();
            host.load_folder(&folder).await.unwrap();
            load.push(start.elapsed());
            let start = Instant::now();
            black_box(host.invoke(call.clone()).await.unwrap());
            first.push(start.elapsed());
            let start = Instant::now();
            host.unload("fixture").await.unwrap();
            unload.push(start.elapsed());
            tokio::time::sleep(idle).await;
        }
    });
    report(&format!("process/{name}: load"), load);
    report(&format!("process/{name}: first call"), first);
    report(&format!("process/{name}: unload"), unload);
}

fn main() {
    if let Ok(path) = std::env::var(ECHO_PEER) {
        echo_peer(&path);
        return;
    }
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    round_trips(&mut criterion);
    if selected("process/spawn_to_first_call") {
        spawn_to_first_call(&mut criterion);
    }
    criterion.final_summary();
}
