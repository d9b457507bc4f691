//! Native call cost: `Host::invoke` against a direct call of the same plugin function
//! through the loaded function pointer, in the same run; plus the synchronous fast paths and
//! the time to load a native plugin from its folder.
//!
//! Run: `cargo bench --bench native_call` (results and reference figures: BENCHMARKS.md).
#![allow(unsafe_code)] // the "direct" baseline calls the plugin's table by hand
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::ffi::c_void;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use plugbay_abi::{self as abi, CallV1, HostApiV1, Output, PluginV1, Str};
use plugbay_core::{Call, Host, HostConfig, Payload, Target};
use plugbay_testkit::PluginsDir;

mod common;
use common::{time_first_loads, time_invokes};

const SIZES: [usize; 2] = [64, 4096];

/// The plugin's table and an instance, made by hand: the "no host" baseline.
struct Direct {
    _library: libloading::Library,
    table: &'static PluginV1,
    instance: *mut c_void,
    _host: Box<HostApiV1>,
}

unsafe extern "C" fn no_log(_: *mut c_void, _: i32, _: Str) {}
unsafe extern "C" fn no_publish(
    _: *mut c_void,
    _: Str,
    _: Str,
    _: Str,
    _: Str,
    _: *mut Output,
) -> abi::Status {
    abi::STATUS_OK
}
unsafe extern "C" fn no_invoke(
    _: *mut c_void,
    _: Str,
    _: Str,
    _: Str,
    _: Str,
    _: *mut Output,
) -> abi::Status {
    abi::STATUS_UNAVAILABLE
}
unsafe extern "C" fn no_free(_: *mut c_void, _: abi::Buf) {}

impl Direct {
    fn open(path: &std::path::Path) -> Direct {
        // SAFETY: a test plugin built by the testkit; the table is checked by the host in
        // the other half of this benchmark and trusted here.
        unsafe {
            let library = libloading::Library::new(path).unwrap();
            let entry: abi::EntryFn = *library.get::<abi::EntryFn>(abi::ENTRY_SYMBOL).unwrap();
            let table = &*entry();
            let host = Box::new(HostApiV1 {
                abi_version: abi::ABI_VERSION,
                struct_size: size_of::<HostApiV1>() as u32,
                host_ctx: std::ptr::null_mut(),
                log: no_log,
                publish: no_publish,
                invoke: no_invoke,
                free_buf: no_free,
            });
            let mut instance = std::ptr::null_mut();
            let mut out = Output::EMPTY;
            let status = (table.init.unwrap())(&*host, Str::EMPTY, &mut instance, &mut out);
            assert_eq!(status, abi::STATUS_OK);
            Direct { _library: library, table, instance, _host: host }
        }
    }

    /// One echo call, response read and freed: what the host does, minus the host.
    fn echo(&self, payload: &[u8]) -> usize {
        let call = CallV1 {
            struct_size: size_of::<CallV1>() as u32,
            reserved: 0,
            method: Str::from_bytes(b"echo"),
            payload: Str::from_bytes(payload),
            content_type: Str::from_bytes(b"application/octet-stream"),
        };
        let mut out = Output::EMPTY;
        // SAFETY: a live instance of a checked plugin; `call` outlives the call.
        unsafe {
            let status = (self.table.call.unwrap())(self.instance, &call, &mut out);
            assert_eq!(status, abi::STATUS_OK);
            let len = std::slice::from_raw_parts(out.payload.ptr, out.payload.len).len();
            (self.table.free_buf.unwrap())(self.instance, out.payload);
            len
        }
    }
}

fn calls(c: &mut Criterion) {
    let dir = PluginsDir::new();
    dir.add_fixture();
    dir.add_c_fixture("cfix", &[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let host = runtime.block_on(async {
        let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
        let report = host.load_all().await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        host
    });

    for (plugin, capability, library) in [
        ("rust", "fixture@1", dir.path().join("fixture/libnative_fixture.so")),
        ("c", "cfix@1", dir.path().join("cfix/libcfix.so")),
    ] {
        let direct = Direct::open(&library);
        let mut group = c.benchmark_group(format!("echo/{plugin}"));
        for size in SIZES {
            let bytes = vec![7u8; size];
            let payload = Payload::bytes(bytes.clone());
            let call = Call::new(capability, "echo", payload.clone());
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new("direct_fn_pointer", size), &bytes, |b, bytes| {
                b.iter(|| direct.echo(black_box(bytes)))
            });
            group.bench_with_input(BenchmarkId::new("host_invoke_await", size), &call, |b, call| {
                b.iter_custom(|iterations| time_invokes(&runtime, &host, call, iterations))
            });
            group.bench_with_input(BenchmarkId::new("host_invoke_sync", size), &call, |b, call| {
                b.iter(|| black_box(host.invoke_sync(call).unwrap()))
            });
            let handle = host.resolve(&Target::Capability(capability.into()), "echo").unwrap();
            group.bench_with_input(BenchmarkId::new("method_handle_borrowed", size), &bytes, |b, bytes| {
                b.iter(|| {
                    handle
                        .call_borrowed(black_box(bytes), "application/octet-stream", |out, _| out.len())
                        .unwrap()
                })
            });
        }
        group.finish();
    }
}

fn load(c: &mut Criterion) {
    let dir = PluginsDir::new();
    let folder = dir.add_c_fixture("cfix", &[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("load");
    group.measurement_time(Duration::from_secs(5));
    let config = HostConfig::with_plugin_dir(dir.path());
    group.bench_function("native_plugin_from_folder", |b| {
        b.iter_custom(|iterations| time_first_loads(&runtime, &config, &folder, iterations))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = calls, load
}
criterion_main!(benches);
