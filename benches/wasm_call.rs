//! Wasm call cost: `Host::invoke` of a 64 B and a 4 KiB echo on a WAT guest (the testkit's
//! guest component) in `persistent` and `per-call` instance modes (per-call also without
//! the pooling allocator, `HostConfig::wasm_pooling` off); the same echo on the
//! guest without `invoke` (a component that cannot wait, so served on the caller's thread)
//! through `Host::invoke`, through the synchronous `MethodHandle::call_borrowed`, and through
//! wasmtime used directly (its generated bindings, same component, same export) in the same
//! run; and the time to load a wasm plugin from its folder into a running host with the
//! compiled cache cold (compiles) and warm (loads the cached code), and into a new host
//! (engine start included). `wasm_floor` is the cost of the cheapest component-model calls
//! in wasmtime itself, outside the contract, for comparison.
//!
//! Run: `cargo bench --bench wasm_call` (results: BENCHMARKS.md).
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use plugbay_core::{Call, Host, HostConfig, Payload, Target};
use plugbay_testkit::PluginsDir;
use plugbay_testkit::wasm::{
    component_from_wat, componentize_with, inline_guest_wat, write_guest, write_inline_guest,
};
use wasmtime::component::WasmList;

mod common;
use common::{time_first_loads, time_invokes};

const SIZES: [usize; 2] = [64, 4096];

/// Bindings of the contract for wasmtime used directly (synchronous, as its guide shows).
mod direct {
    wasmtime::component::bindgen!({ path: "wit/plugbay.wit", world: "plugin" });
}

fn calls(c: &mut Criterion) {
    let dir = PluginsDir::new();
    write_guest(&dir, "persistent", &[("persistent@1", &["echo"])], "\n[wasm]\ninstance = \"persistent\"\n");
    write_guest(&dir, "per-call", &[("per-call@1", &["echo"])], "\n[wasm]\ninstance = \"per-call\"\n");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let host = runtime.block_on(async {
        let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
        let report = host.load_all().await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        host
    });
    let unpooled = runtime.block_on(async {
        let config = HostConfig::with_plugin_dir(dir.path()).with_wasm_pooling(false);
        let host = Host::build(config).unwrap();
        let report = host.load_all().await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        host
    });
    let mut group = c.benchmark_group("wasm_echo/per-call-unpooled");
    let call = Call::new("per-call@1", "echo", Payload::bytes(vec![7u8; 64]));
    group.bench_with_input(BenchmarkId::new("host_invoke_await", 64), &call, |b, call| {
        b.iter_custom(|iterations| time_invokes(&runtime, &unpooled, call, iterations))
    });
    group.finish();
    drop(unpooled); // its engine and epoch ticker would share the machine with what follows
    for mode in ["persistent", "per-call"] {
        let mut group = c.benchmark_group(format!("wasm_echo/{mode}"));
        for size in SIZES {
            let call = Call::new(&format!("{mode}@1"), "echo", Payload::bytes(vec![7u8; size]));
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new("host_invoke_await", size), &call, |b, call| {
                b.iter_custom(|iterations| time_invokes(&runtime, &host, call, iterations))
            });
        }
        group.finish();
    }
    inline(c, &runtime);
}

/// The guest that cannot wait, persistent: through the host both ways, and through wasmtime
/// directly (default engine settings, the host API's imports defined as traps: `echo` calls
/// none of them).
fn inline(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let dir = PluginsDir::new();
    write_inline_guest(&dir, "inline", &[("inline@1", &["echo"])], "");
    write_inline_guest(
        &dir,
        "inline-per-call",
        &[("inline-per-call@1", &["echo"])],
        "\n[wasm]\ninstance = \"per-call\"\n",
    );
    let host = runtime.block_on(async {
        let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
        let report = host.load_all().await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        host
    });
    let handle = host.resolve(&Target::parse("inline@1"), "echo").unwrap();

    let engine = wasmtime::Engine::default();
    let component =
        wasmtime::component::Component::new(&engine, component_from_wat(&inline_guest_wat("inline", &[])))
            .unwrap();
    let mut linker = wasmtime::component::Linker::new(&engine);
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let mut store = wasmtime::Store::new(&engine, ());
    let plugin = direct::Plugin::instantiate(&mut store, &component, &linker).unwrap();

    let mut group = c.benchmark_group("wasm_echo/inline-per-call");
    let call = Call::new("inline-per-call@1", "echo", Payload::bytes(vec![7u8; 64]));
    group.bench_with_input(BenchmarkId::new("host_invoke_await", 64), &call, |b, call| {
        b.iter_custom(|iterations| time_invokes(runtime, &host, call, iterations))
    });
    group.finish();

    let mut group = c.benchmark_group("wasm_echo/inline");
    for size in SIZES {
        let bytes = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        let call = Call::new("inline@1", "echo", Payload::bytes(bytes.clone()));
        group.bench_with_input(BenchmarkId::new("host_invoke_await", size), &call, |b, call| {
            b.iter_custom(|iterations| time_invokes(runtime, &host, call, iterations))
        });
        group.bench_with_input(BenchmarkId::new("method_handle_call_borrowed", size), &bytes, |b, bytes| {
            b.iter(|| {
                handle.call_borrowed(bytes, "application/octet-stream", |echoed, _| echoed.len()).unwrap()
            })
        });
        let input = direct::plugbay::plugin::types::Payload {
            content_type: "application/octet-stream".to_owned(),
            bytes: bytes.clone(),
        };
        group.bench_with_input(BenchmarkId::new("wasmtime_direct", size), &input, |b, input| {
            b.iter(|| {
                let guest = plugin.plugbay_plugin_guest();
                black_box(guest.call_call(&mut store, "echo", input).unwrap().unwrap())
            })
        });
    }
    group.finish();
}

/// Loading a wasm plugin into a running host (its engine already started by an earlier
/// load): compiling it (no cache) and from the compiled cache. Each iteration unloads the
/// plugin and loads it again; only the load is timed. Then the first wasm load of a new host,
/// from the cache, which also starts the engine (pooling allocator, epoch ticker).
fn load(c: &mut Criterion) {
    let dir = PluginsDir::new();
    let folder = write_guest(&dir, "guest", &[("guest@1", &["echo"])], "");
    let cache = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("wasm_load");
    group.measurement_time(Duration::from_secs(5));
    for (name, cache_dir) in [("compile_no_cache", None), ("from_cache", Some(cache.path().join("cache")))] {
        let config = HostConfig::with_plugin_dir(dir.path()).with_wasm_cache_dir(cache_dir);
        let host = Host::build(config).unwrap();
        runtime.block_on(host.load_folder(&folder)).unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        host.unload("guest").await.unwrap();
                        let start = Instant::now();
                        host.load_folder(&folder).await.unwrap();
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
    }
    let config =
        HostConfig::with_plugin_dir(dir.path()).with_wasm_cache_dir(Some(cache.path().join("cache")));
    group.bench_function("new_host_from_cache", |b| {
        b.iter_custom(|iterations| time_first_loads(&runtime, &config, &folder, iterations))
    });
    group.finish();
}

/// The floor of a component-model call in wasmtime 48, on a minimal component outside the
/// plugbay contract: an export `func(x: u32) -> u32` (nothing to copy), and the leanest
/// echo the component model allows, `func(method: u32, input: list<u8>) -> list<u8>` (one
/// `cabi_realloc` for the input, the output lent from guest memory). The contract's
/// `call(method: string, input: payload) -> result<payload, failure>` is measured above.
fn floor(c: &mut Criterion) {
    const WIT: &str = "package bench:floor;\nworld floor {\n  export identity: func(x: u32) -> u32;\n  \
                       export echo: func(method: u32, input: list<u8>) -> list<u8>;\n}\n";
    const WAT: &str = r#"(module
      (memory (export "memory") 1)
      (global $heap (mut i32) (i32.const 4096))
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
        (local $block i32)
        (local.set $block (global.get $heap))
        (global.set $heap (i32.add (global.get $heap) (local.get 3)))
        (local.get $block))
      (func (export "identity") (param i32) (result i32) (local.get 0))
      (func (export "echo") (param $method i32) (param $input i32) (param $length i32) (result i32)
        (i32.store (i32.const 32) (local.get $input))
        (i32.store (i32.const 36) (local.get $length))
        (i32.const 32))
      (func (export "cabi_post_echo") (param i32) (global.set $heap (i32.const 4096))))"#;
    let core = wat::parse_str(WAT).unwrap();
    let engine = wasmtime::Engine::default();
    let component =
        wasmtime::component::Component::new(&engine, componentize_with(&core, &[WIT], "floor")).unwrap();
    let linker = wasmtime::component::Linker::<()>::new(&engine);
    let mut store = wasmtime::Store::new(&engine, ());
    let instance = linker.instantiate(&mut store, &component).unwrap();
    let identity = instance.get_typed_func::<(u32,), (u32,)>(&mut store, "identity").unwrap();
    let echo = instance.get_typed_func::<(u32, &[u8]), (WasmList<u8>,)>(&mut store, "echo").unwrap();
    let mut group = c.benchmark_group("wasm_floor");
    group.bench_function("wasmtime_direct_u32_identity", |b| {
        b.iter(|| identity.call(&mut store, (black_box(5),)).unwrap())
    });
    let input = vec![7u8; 64];
    group.bench_function("wasmtime_direct_lean_echo/64", |b| {
        b.iter(|| {
            let (echoed,) = echo.call(&mut store, (1, &input)).unwrap();
            black_box(echoed.as_le_slice(&store).len())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = calls, floor, load
}
criterion_main!(benches);
