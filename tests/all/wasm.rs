//! The wasm runtime: real components (WAT guests wrapped by the testkit) through the public
//! `Host` API. Every fault test keeps a canary wasm plugin answering throughout: wrong
//! artifacts (A5), oversized ones (A6), ungranted imports (B6), traps and deep recursion
//! (C3), infinite loops and waits inside host calls (C4), memory bombs (C7); plus host
//! callbacks, instance modes, snapshots, the compiled cache and load/unload cycles.

use std::path::Path;
use std::time::{Duration, Instant};

use plugbay_core::{Call, Code, Host, HostConfig, MethodHandle, Payload, State, Target};
use plugbay_testkit::wasm::{
    GUEST_METHODS, component_importing_sockets, component_of_another_version,
    component_with_a_wrong_state_interface, component_with_many_functions, stateful_component, wasm_manifest,
    write_component, write_guest, write_inline_guest,
};
use plugbay_testkit::{HOST_API_GRANTS, PluginsDir};

use crate::support::{assert_error, assert_failed, info, method_metrics};
use crate::util::{in_own_process, wait_for};

/// The canary: a second wasm plugin serving `echo.test@1`.
const CANARY: &str = "canary";
/// The plugin under test serves `guest.test@1`.
const GUEST: &str = "guest";

fn add_canary(dir: &PluginsDir) {
    write_guest(dir, CANARY, &[("echo.test@1", &["echo"])], "");
}

/// The test guest, which calls and publishes through the host (so it may).
fn add_guest(dir: &PluginsDir, extra: &str) {
    write_guest(dir, GUEST, &[("guest.test@1", GUEST_METHODS)], &format!("{extra}{HOST_API_GRANTS}"));
}

async fn host_over(dir: &PluginsDir) -> Host {
    host_with(HostConfig::with_plugin_dir(dir.path())).await
}

async fn host_with(config: HostConfig) -> Host {
    let host = Host::build(config).expect("host builds");
    let report = host.load_all().await;
    for error in &report.failed {
        eprintln!("not loaded: {error}");
    }
    host
}

fn call(method: &str, bytes: &[u8]) -> Call {
    Call::new("guest.test@1", method, Payload::bytes(bytes.to_vec())).with_timeout(Duration::from_secs(10))
}

async fn assert_canary_answers(host: &Host) {
    let reply = host
        .invoke(Call::new("echo.test@1", "echo", Payload::bytes(&b"canary"[..])))
        .await
        .expect("the canary answers");
    assert_eq!(&reply.bytes[..], b"canary");
}

async fn count(host: &Host) -> u32 {
    let reply = host.invoke(call("count", b"")).await.expect("count answers");
    u32::from_le_bytes(reply.bytes[..].try_into().expect("4 bytes"))
}

#[tokio::test]
async fn wasm_guest_answers_and_calls_back_through_the_host() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    add_guest(&dir, "");
    let host = host_over(&dir).await;
    assert_eq!(info(&host, GUEST).state, State::Running);

    let echo = host.invoke(call("echo", b"ping")).await.unwrap();
    assert_eq!(&echo.bytes[..], b"ping");
    assert_eq!(echo.content_type.as_str(), "application/octet-stream");
    let json = host.invoke(Call::new("guest.test@1", "echo", Payload::json("x").unwrap())).await.unwrap();
    assert_eq!(json.to_json::<String>().unwrap(), "x");

    let logged = host.invoke(call("log", b"hello from wasm")).await.unwrap();
    assert_eq!(&logged.bytes[..], b"hello from wasm");

    let invoked = host.invoke(call("invoke", b"through the host")).await.unwrap();
    assert_eq!(&invoked.bytes[..], b"through the host");

    let mut events = host.subscribe();
    host.invoke(call("publish", b"news")).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.expect("the bus is open");
            if event.topic == "wasm.test" {
                return event;
            }
        }
    })
    .await
    .expect("the event arrives");
    assert_eq!(
        (event.action.as_str(), event.source.as_str(), &event.payload.bytes[..]),
        ("published", GUEST, &b"news"[..])
    );

    let error = host.invoke(call("fail", b"")).await.unwrap_err();
    assert_error(&error, Code::InvalidArgument, &["bad input", "plugin guest", "fail"]);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn c3_traps_fail_the_call_and_the_next_call_works() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    add_guest(&dir, "");
    let host = host_over(&dir).await;
    for (method, code, fragment) in [
        ("trap", Code::Internal, "unreachable"),
        ("divide", Code::Internal, "divide by zero"),
        ("oob", Code::Internal, "out of bounds"),
        ("recurse", Code::ResourceExhausted, "stack overflow"),
    ] {
        let error = host.invoke(call(method, b"")).await.unwrap_err();
        assert_error(&error, code, &[fragment, "plugin guest"]);
        assert_eq!(&host.invoke(call("echo", b"after")).await.unwrap().bytes[..], b"after", "after {method}");
        assert_canary_answers(&host).await;
    }
    assert_eq!(info(&host, GUEST).state, State::Running);
}

#[tokio::test]
async fn c4_infinite_loop_is_interrupted_at_its_deadline() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    add_guest(&dir, "\n[limits]\ntimeout_ms = 300\n");
    let host = host_over(&dir).await;
    assert_eq!(count(&host).await, 1);

    // The caller's deadline.
    let started = Instant::now();
    let error = host
        .invoke(
            Call::new("guest.test@1", "spin", Payload::bytes(&b""[..]))
                .with_timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_error(&error, Code::DeadlineExceeded, &["plugin guest", "spin"]);
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(200 + 150), "overshoot: {elapsed:?}");
    assert_canary_answers(&host).await;
    // The interrupted instance was discarded: the next call gets a fresh one.
    assert_eq!(count(&host).await, 1);

    // No caller deadline: the manifest's limits.timeout_ms.
    let started = Instant::now();
    let error = host.invoke(Call::new("guest.test@1", "spin", Payload::bytes(&b""[..]))).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    assert!(started.elapsed() < Duration::from_millis(300 + 150), "{:?}", started.elapsed());
    assert_eq!(&host.invoke(call("echo", b"alive")).await.unwrap().bytes[..], b"alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c4_guest_waiting_inside_a_host_call_gives_up_at_its_deadline() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    add_guest(&dir, "");
    dir.add_process_fixture("");
    let host = host_over(&dir).await;
    assert_eq!(count(&host).await, 1);

    // `hold` waits inside the host's `invoke` on a process plugin that sleeps 5 s: no wasm
    // runs, so no epoch can interrupt it. The call's deadline goes with the nested call,
    // and the host gives the caller up at it.
    let hold = Call::new("guest.test@1", "hold", Payload::json(&5_000).unwrap())
        .with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let error = host.invoke(hold).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    assert!(error.to_string().contains("plugin guest"), "{error}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(300 + 1_000), "overshoot: {elapsed:?}");
    // The nested call ran under the same deadline and ended with it (had it been merely
    // dropped with the guest's call, it would not have been counted at all). Its end is
    // recorded by the task that ran it, which may finish after the guest's caller got its
    // answer: wait for the record.
    let sleep_errors = async || method_metrics(&host, "fixture", "sleep").errors;
    let errors =
        wait_for(Duration::from_secs(10), "the nested call's end in the metrics", sleep_errors, |errors| {
            !errors.is_empty()
        })
        .await;
    assert_eq!(errors, vec![(Code::DeadlineExceeded, 1)]);

    // Everyone serves on: the guest, the canary, and the plugin it was waiting on.
    assert!(count(&host).await >= 1);
    assert_canary_answers(&host).await;
    let echo = host.invoke(Call::new("fixture@1", "echo", Payload::json(&7).unwrap())).await.unwrap();
    assert_eq!(echo.to_json::<u32>().unwrap(), 7);
}

#[tokio::test]
async fn c7_memory_bomb_is_resource_exhausted() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    add_guest(&dir, "\n[limits]\nmemory_mb = 8\n");
    let host = host_over(&dir).await;
    let error = host.invoke(call("grow", b"")).await.unwrap_err();
    assert_error(&error, Code::ResourceExhausted, &["memory", "8 MiB", "limits.memory_mb", "plugin guest"]);
    assert_eq!(&host.invoke(call("echo", b"after")).await.unwrap().bytes[..], b"after");
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn b6_ungranted_imports_fail_to_load_naming_the_import() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    let provides: &[(&str, &[&str])] = &[("echo.test@1", &["echo"])];
    dir.write_file("sockets", "plugin.wasm", component_importing_sockets("sockets"));
    dir.write_manifest("sockets", wasm_manifest("sockets", "plugin.wasm", provides, ""));
    dir.write_file("version-two", "plugin.wasm", component_of_another_version("version-two"));
    dir.write_manifest("version-two", wasm_manifest("version-two", "plugin.wasm", provides, ""));
    let host = host_over(&dir).await;
    assert_failed(
        &host,
        "sockets",
        Code::PermissionDenied,
        &["wasi:sockets/instance-network", "permissions.network = false"],
    );
    assert_failed(&host, "version-two", Code::FailedPrecondition, &["plugbay:plugin/host@2.0.0"]);
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn a5_wrong_wasm_artifacts_are_refused() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    let component = plugbay_testkit::wasm::component_from_wat(&plugbay_testkit::wasm::guest_wat("x", &[]));
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("empty", Vec::new(), "0 bytes"),
        ("core-module", b"\0asm\x01\0\0\0".to_vec(), "not a valid WebAssembly component"),
        ("truncated", component[..component.len() / 2].to_vec(), "not a valid WebAssembly component"),
        ("text", b"#!/bin/sh\necho not wasm\n".to_vec(), "not a valid WebAssembly component"),
    ];
    for (name, bytes, _) in &cases {
        dir.write_file(name, "plugin.wasm", bytes);
        dir.write_manifest(name, wasm_manifest(name, "plugin.wasm", &[("broken@1", &["go"])], ""));
    }
    let host = host_over(&dir).await;
    for (name, _, fragment) in &cases {
        assert_failed(&host, name, Code::FailedPrecondition, &[fragment, "plugin.wasm"]);
    }
    assert_canary_answers(&host).await;
}

#[tokio::test]
async fn a6_oversized_artifact_is_refused_before_compiling() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    let mut big = b"\0asm\x0d\0\x01\0".to_vec();
    big.resize(100 << 20, 0);
    dir.write_file("huge", "plugin.wasm", &big);
    dir.write_manifest("huge", wasm_manifest("huge", "plugin.wasm", &[("huge@1", &["go"])], ""));
    let started = Instant::now();
    let host = host_over(&dir).await;
    assert_failed(&host, "huge", Code::ResourceExhausted, &["104857600 bytes", "64 MiB"]);
    assert!(started.elapsed() < Duration::from_secs(5), "refused before compiling: {:?}", started.elapsed());
    assert_canary_answers(&host).await;
}

/// On tokio's current-thread runtime (a `#[tokio::test]`): if compiling ran on the async
/// thread, nothing else could run until it ended.
#[tokio::test]
async fn a6_compile_bomb_compiles_off_the_async_threads() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    let host = host_over(&dir).await;
    let provides: &[(&str, &[&str])] = &[("bomb.test@1", &["echo"])];
    let bomb = component_with_many_functions("bomb", provides, 100_000);
    write_component(&dir, "bomb", bomb, provides, "");

    let folder = dir.path().join("bomb");
    let load = host.load_folder(&folder);
    tokio::pin!(load);
    let mut answered_while_compiling = 0;
    loop {
        tokio::select! {
            biased;
            loaded = &mut load => {
                loaded.expect("the bomb loads in the end");
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(5)) => {
                assert_canary_answers(&host).await;
                answered_while_compiling += 1;
            }
        }
    }
    assert!(
        answered_while_compiling >= 5,
        "the canary answered {answered_while_compiling} times during the compile"
    );
    let reply = host.invoke(Call::new("bomb.test@1", "echo", Payload::bytes(&b"boom"[..]))).await.unwrap();
    assert_eq!(&reply.bytes[..], b"boom");
}

#[tokio::test]
async fn wasm_persistent_instances_keep_state_and_per_call_ones_do_not() {
    let dir = PluginsDir::new();
    add_guest(&dir, "\n[wasm]\ninstance = \"persistent\"\n");
    let host = host_over(&dir).await;
    assert_eq!((count(&host).await, count(&host).await, count(&host).await), (1, 2, 3));

    let dir = PluginsDir::new();
    add_guest(&dir, "\n[wasm]\ninstance = \"per-call\"\n");
    let host = host_over(&dir).await;
    assert_eq!((count(&host).await, count(&host).await, count(&host).await), (1, 1, 1));
    // A trap in per-call mode costs nothing but that call.
    assert_eq!(host.invoke(call("trap", b"")).await.unwrap_err().code(), Code::Internal);
    assert_eq!(&host.invoke(call("echo", b"fresh")).await.unwrap().bytes[..], b"fresh");
}

#[tokio::test]
async fn wasm_without_the_pooling_allocator_serves_both_modes() {
    for (mode, counts) in [("persistent", (1, 2)), ("per-call", (1, 1))] {
        let dir = PluginsDir::new();
        add_guest(&dir, &format!("\n[wasm]\ninstance = \"{mode}\"\n"));
        let host = host_with(HostConfig::with_plugin_dir(dir.path()).with_wasm_pooling(false)).await;
        assert_eq!((count(&host).await, count(&host).await), counts, "{mode}");
        let error = host.invoke(call("grow", b"")).await.unwrap_err();
        assert_eq!(error.code(), Code::ResourceExhausted, "{mode}: {error}");
        assert_eq!(&host.invoke(call("echo", b"on demand")).await.unwrap().bytes[..], b"on demand");
    }
}

/// A synchronous handle on the guest's `method`.
fn handle(host: &Host, method: &str) -> MethodHandle {
    host.resolve(&Target::parse("guest.test@1"), method).expect("the guest serves it")
}

/// The guest's counter, through the synchronous path.
fn count_now(host: &Host) -> u32 {
    let counter = handle(host, "count").call_borrowed(b"", "application/octet-stream", |bytes, _| {
        u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    });
    counter.expect("count answers")
}

#[tokio::test]
async fn wasm_guest_that_cannot_wait_is_served_on_the_callers_thread() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    write_inline_guest(&dir, GUEST, &[("guest.test@1", GUEST_METHODS)], "\n[limits]\ntimeout_ms = 300\n");
    let host = host_over(&dir).await;

    // The response is lent from the guest's memory, content type included.
    let echo = handle(&host, "echo");
    let lent = echo.call_borrowed(b"ping", "text/plain", |bytes, content_type| {
        (bytes.to_vec(), content_type.to_owned())
    });
    assert_eq!(lent.unwrap(), (b"ping".to_vec(), "text/plain".to_owned()));
    assert_eq!(&echo.call(&Payload::bytes(&b"copied"[..])).unwrap().bytes[..], b"copied");
    assert_eq!(
        &handle(&host, "log").call(&Payload::bytes(&b"logged inline"[..])).unwrap().bytes[..],
        b"logged inline"
    );

    // One instance behind both paths: its state is shared.
    assert_eq!((count_now(&host), count(&host).await, count_now(&host)), (1, 2, 3));

    // Faults on the synchronous path fail that call only; the next one gets a fresh instance.
    for (method, code, fragment) in [
        ("trap", Code::Internal, "unreachable"),
        ("recurse", Code::ResourceExhausted, "stack overflow"),
        ("fail", Code::InvalidArgument, "bad input"),
        ("spin", Code::DeadlineExceeded, "deadline"),
    ] {
        let error =
            handle(&host, method).call_borrowed(b"", "application/octet-stream", |_, _| ()).unwrap_err();
        assert_error(&error, code, &[fragment, "plugin guest", method]);
        assert_eq!(&echo.call(&Payload::bytes(&b"after"[..])).unwrap().bytes[..], b"after", "after {method}");
        assert_canary_answers(&host).await;
    }
    assert_eq!(count_now(&host), 1, "the spin left a fresh instance");

    // `invoke_sync` serves it too, and interrupts it at the caller's deadline (20 ms), not
    // at the manifest's timeout (300 ms).
    let echoed = host.invoke_sync(&call("echo", b"sync")).unwrap();
    assert_eq!(&echoed.bytes[..], b"sync");
    let started = Instant::now();
    let spin =
        Call::new("guest.test@1", "spin", Payload::bytes(&b""[..])).with_timeout(Duration::from_millis(20));
    assert_eq!(host.invoke_sync(&spin).unwrap_err().code(), Code::DeadlineExceeded);
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "the caller's deadline applied: {:?}",
        started.elapsed()
    );

    // A thread with too small a stack for the guest runs it on a fiber's stack instead, so
    // deep recursion there is still a clean error.
    let on_small_stack = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn({
            let (echo, recurse) = (echo.clone(), handle(&host, "recurse"));
            move || {
                let echoed = echo.call_borrowed(b"small", "text/plain", |bytes, _| bytes.to_vec()).unwrap();
                let error = recurse.call_borrowed(b"", "text/plain", |_, _| ()).unwrap_err();
                // The trapped instance is replaced here too: created and initialised on a fiber.
                let again = echo.call_borrowed(b"again", "text/plain", |bytes, _| bytes.to_vec()).unwrap();
                (echoed, error.code(), again)
            }
        })
        .unwrap()
        .join()
        .expect("the small-stack thread ends");
    assert_eq!(on_small_stack, (b"small".to_vec(), Code::ResourceExhausted, b"again".to_vec()));
    assert_eq!(info(&host, GUEST).state, State::Running);
}

#[tokio::test]
async fn wasm_guest_that_can_wait_refuses_the_synchronous_path_clearly() {
    // The guest imports the host's `invoke`: a call may wait, so it is served asynchronously.
    let dir = PluginsDir::new();
    add_guest(&dir, "");
    let host = host_over(&dir).await;
    let error = handle(&host, "echo").call(&Payload::bytes(&b"x"[..])).unwrap_err();
    assert_error(&error, Code::FailedPrecondition, &["asynchronously", "Host::invoke", "plugin guest"]);
    assert_eq!(&host.invoke(call("echo", b"async")).await.unwrap().bytes[..], b"async");
}

#[tokio::test]
async fn wasm_per_call_instances_of_a_guest_that_cannot_wait_are_served_on_the_callers_thread() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    let per_call = "\n[wasm]\ninstance = \"per-call\"\n[limits]\ntimeout_ms = 300\n";
    write_inline_guest(&dir, GUEST, &[("guest.test@1", GUEST_METHODS)], per_call);
    let host = host_over(&dir).await;
    // Each call gets a fresh instance, on both paths: the counter never passes 1.
    assert_eq!((count_now(&host), count(&host).await, count_now(&host)), (1, 1, 1));
    let echo = handle(&host, "echo");
    let lent = echo.call_borrowed(b"fresh", "text/plain", |bytes, content_type| {
        (bytes.to_vec(), content_type.to_owned())
    });
    assert_eq!(lent.unwrap(), (b"fresh".to_vec(), "text/plain".to_owned()));
    for (method, code) in
        [("trap", Code::Internal), ("recurse", Code::ResourceExhausted), ("spin", Code::DeadlineExceeded)]
    {
        let error = handle(&host, method).call(&Payload::bytes(&b""[..])).unwrap_err();
        assert_eq!(error.code(), code, "{method}: {error}");
        assert_eq!(&echo.call(&Payload::bytes(&b"after"[..])).unwrap().bytes[..], b"after", "after {method}");
        assert_canary_answers(&host).await;
    }
}

/// The cache entries (`*.cwasm`) in `dir`.
fn add_stateful_guest(dir: &PluginsDir, extra: &str) {
    let provides: &[(&str, &[&str])] = &[("guest.test@1", GUEST_METHODS)];
    write_component(dir, GUEST, stateful_component(GUEST, provides), provides, extra);
}

#[tokio::test]
async fn wasm_state_survives_stop_and_start_through_the_snapshot_taken_on_stop() {
    let dir = PluginsDir::new();
    add_stateful_guest(&dir, "");
    let host = host_over(&dir).await;
    assert_eq!((count(&host).await, count(&host).await, count(&host).await), (1, 2, 3));
    host.stop(GUEST).await.unwrap();
    host.start(GUEST).await.unwrap();
    assert_eq!(count(&host).await, 4, "restored from the snapshot taken on stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_snapshot_the_plugin_cannot_restore_after_a_trap_is_dropped() {
    let dir = PluginsDir::new();
    add_stateful_guest(&dir, "\n[restart]\nsnapshot_interval_ms = 10\n");
    let host = host_over(&dir).await;
    // The guest refuses to restore a counter of 2 (see `stateful_guest_wat`).
    assert_eq!((count(&host).await, count(&host).await), (1, 2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(host.invoke(call("trap", b"")).await.unwrap_err().code(), Code::Internal);
    // The fresh instance could not take the snapshot: it starts empty, and so does not
    // fail every call from now on.
    assert_eq!((count(&host).await, count(&host).await), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_state_survives_a_trap_through_the_last_periodic_snapshot() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    add_stateful_guest(&dir, "\n[restart]\nsnapshot_interval_ms = 10\n");
    let host = host_over(&dir).await;
    assert_eq!((count(&host).await, count(&host).await, count(&host).await), (1, 2, 3));
    // Fifty snapshot intervals: the last snapshot holds 3.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let error = host.invoke(call("trap", b"")).await.unwrap_err();
    assert_error(&error, Code::Internal, &["plugin guest", "trap"]);
    assert_eq!(count(&host).await, 4, "the fresh instance was restored from the last snapshot");
    assert_canary_answers(&host).await;

    // Per-call instances keep no state, so nothing is snapshotted or restored.
    let dir = PluginsDir::new();
    add_stateful_guest(&dir, "\n[wasm]\ninstance = \"per-call\"\n[restart]\nsnapshot_interval_ms = 10\n");
    let host = host_over(&dir).await;
    assert_eq!((count(&host).await, count(&host).await), (1, 1));
    host.stop(GUEST).await.unwrap();
    host.start(GUEST).await.unwrap();
    assert_eq!(count(&host).await, 1);
}

#[tokio::test]
async fn wasm_state_interface_with_wrong_types_is_refused_at_load() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    let provides: &[(&str, &[&str])] = &[("guest.test@1", GUEST_METHODS)];
    write_component(&dir, GUEST, component_with_a_wrong_state_interface(GUEST, provides), provides, "");
    let host = host_over(&dir).await;
    assert_failed(
        &host,
        GUEST,
        Code::FailedPrecondition,
        &["plugbay:plugin/state@1.0.0#snapshot does not match wit/plugbay.wit"],
    );
    assert_canary_answers(&host).await;
}

fn cache_entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    entries.sort();
    entries
}

#[tokio::test]
async fn wasm_compiled_cache_is_used_and_a_corrupted_entry_rebuilt() {
    use std::os::unix::fs::PermissionsExt;

    let dir = PluginsDir::new();
    add_guest(&dir, "");
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("wasm-cache");
    let config = HostConfig::with_plugin_dir(dir.path()).with_wasm_cache_dir(Some(cache_dir.clone()));

    let host = host_with(config.clone()).await;
    assert_eq!(&host.invoke(call("echo", b"one")).await.unwrap().bytes[..], b"one");
    let mode = std::fs::metadata(&cache_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the cache directory is the host's alone");
    let entries = cache_entries(&cache_dir);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let written = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    drop(host);

    // A second host loads from the cache: the entry is read, not rewritten.
    let host = host_with(config.clone()).await;
    assert_eq!(&host.invoke(call("echo", b"two")).await.unwrap().bytes[..], b"two");
    assert_eq!(cache_entries(&cache_dir), entries);
    assert_eq!(std::fs::metadata(&entries[0]).unwrap().modified().unwrap(), written, "cache hit");
    drop(host);

    // A corrupted entry is detected (digest), removed and rebuilt.
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entries[0], &bytes).unwrap();
    let host = host_with(config).await;
    assert_eq!(&host.invoke(call("echo", b"three")).await.unwrap().bytes[..], b"three");
    let rebuilt = std::fs::read(&entries[0]).unwrap();
    assert_ne!(rebuilt, bytes, "the corrupted entry was replaced");
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * rustix::param::page_size() as u64
}

/// Measures this process's open files and memory, so it runs in a process of its own
/// (under `cargo test` other tests share the process and its memory).
#[test]
fn wasm_load_unload_cycles_return_fds_and_memory() {
    if !in_own_process("wasm::wasm_load_unload_cycles_return_fds_and_memory", &[]) {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(load_unload_cycles());
}

async fn load_unload_cycles() {
    let dir = PluginsDir::new();
    add_guest(&dir, "");
    let cache = tempfile::tempdir().unwrap();
    let host = Host::build(
        HostConfig::with_plugin_dir(dir.path()).with_wasm_cache_dir(Some(cache.path().join("cache"))),
    )
    .unwrap();
    let folder = dir.path().join(GUEST);
    let cycle = async || {
        host.load_folder(&folder).await.expect("loads");
        assert_eq!(&host.invoke(call("echo", b"x")).await.unwrap().bytes[..], b"x");
        host.unload(GUEST).await.expect("unloads");
    };
    for _ in 0..20 {
        cycle().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (fds, rss) = (open_fds(), rss_bytes());
    for _ in 0..200 {
        cycle().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (fds_after, rss_after) = (open_fds(), rss_bytes());
    assert!(fds_after <= fds + 2, "fds {fds} -> {fds_after}");
    let grown = rss_after.saturating_sub(rss);
    assert!(grown < 16 << 20, "RSS grew {} KiB over 200 cycles ({rss} -> {rss_after})", grown >> 10);
}

#[tokio::test]
async fn c_text_tools_wasm_serves_text_transform_beside_the_native_one() {
    let dir = PluginsDir::new();
    dir.add_canary();
    let manifest =
        std::fs::read(plugbay_testkit::workspace_root().join("examples/plugins/text-tools-wasm/plugin.toml"))
            .unwrap();
    dir.write_manifest("text-tools-wasm", manifest);
    dir.write_file("text-tools-wasm", "plugin.wasm", plugbay_testkit::wasm::text_tools_wasm());
    let host = host_over(&dir).await;
    assert_eq!(info(&host, "text-tools-wasm").state, State::Running);
    assert_eq!(info(&host, "text-tools").state, State::Running);
    for (method, payload) in [
        ("upper", Payload::json("Hello, \"wasm\"\n").unwrap()),
        ("lower", Payload::json("MiXeD \\ CaSe").unwrap()),
        ("reverse", Payload::json("abc ü 😀").unwrap()),
        ("word-count", Payload::json("two words\nand three\n").unwrap()),
        ("upper", Payload::with_type(&b"plain text"[..], plugbay_core::ContentType::TEXT)),
    ] {
        let answer = async |plugin: &str| {
            let call = Call::new(&format!("plugin:{plugin}"), method, payload.clone());
            host.invoke(call).await.unwrap_or_else(|error| panic!("{plugin} {method}: {error}"))
        };
        let (native, wasm) = (answer("text-tools").await, answer("text-tools-wasm").await);
        assert_eq!(wasm.content_type.as_str(), native.content_type.as_str(), "{method}");
        if native.content_type.as_str() == "application/json" {
            assert_eq!(
                wasm.to_json::<serde_json::Value>().unwrap(),
                native.to_json::<serde_json::Value>().unwrap(),
                "{method}"
            );
        } else {
            assert_eq!(wasm.bytes, native.bytes, "{method}");
        }
    }
    let error = host
        .invoke(Call::new("plugin:text-tools-wasm", "upper", Payload::json(&42).unwrap()))
        .await
        .unwrap_err();
    assert_error(&error, Code::InvalidArgument, &["expects a JSON string"]);
}

fn probe_call(method: &str, argument: &str) -> Call {
    Call::new(
        "probe@1",
        method,
        Payload::with_type(argument.as_bytes().to_vec(), plugbay_core::ContentType::TEXT),
    )
    .with_timeout(Duration::from_secs(10))
}

/// The guest reads the host's environment, so the variables it looks for are set in the
/// environment of a process of its own (setting them here, while other tests' threads read
/// the environment, would be undefined behaviour).
#[test]
fn d8_guest_reaches_only_what_its_manifest_grants() {
    let env = [("PLUGBAY_PROBE_GRANTED", "yes"), ("PLUGBAY_PROBE_HIDDEN", "no")];
    if !in_own_process("wasm::d8_guest_reaches_only_what_its_manifest_grants", &env) {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(guest_reaches_only_what_its_manifest_grants());
}

async fn guest_reaches_only_what_its_manifest_grants() {
    let dir = PluginsDir::new();
    add_canary(&dir);
    let folder = dir.write_manifest(
        "probe",
        wasm_manifest(
            "probe",
            "plugin.wasm",
            &[("probe@1", &["read", "write", "env", "print"])],
            "\n[permissions]\nread = [\"data\"]\nwrite = [\"out\"]\nenv = [\"PLUGBAY_PROBE_GRANTED\"]\n",
        ),
    );
    dir.write_file("probe", "plugin.wasm", plugbay_testkit::wasm::probe("probe"));
    std::fs::create_dir_all(folder.join("data")).unwrap();
    std::fs::create_dir_all(folder.join("out")).unwrap();
    std::fs::write(folder.join("data/hello.txt"), "hello").unwrap();
    std::fs::write(folder.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(folder.join("secret.txt"), folder.join("data/link-out")).unwrap();
    let host = host_over(&dir).await;
    assert_eq!(info(&host, "probe").state, State::Running, "{:?}", info(&host, "probe").error);

    let read = host.invoke(probe_call("read", "data/hello.txt")).await.unwrap();
    assert_eq!(&read.bytes[..], b"hello");
    for outside in ["secret.txt", "data/../secret.txt", "../probe/secret.txt", "/etc/passwd", "data/link-out"]
    {
        let error = host.invoke(probe_call("read", outside)).await.unwrap_err();
        assert_error(&error, Code::PermissionDenied, &[outside]);
    }
    // Read-only where only read is granted; writable where write is.
    assert_eq!(
        host.invoke(probe_call("write", "data/new.txt\nx")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(!folder.join("data/new.txt").exists());
    assert_eq!(&host.invoke(probe_call("write", "out/new.txt\nwritten")).await.unwrap().bytes[..], b"ok");
    assert_eq!(std::fs::read_to_string(folder.join("out/new.txt")).unwrap(), "written");

    assert_eq!(&host.invoke(probe_call("env", "PLUGBAY_PROBE_GRANTED")).await.unwrap().bytes[..], b"yes");
    let hidden = host.invoke(probe_call("env", "PLUGBAY_PROBE_HIDDEN")).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden}");
    // Output goes to the host's log; the call itself succeeds.
    assert_eq!(&host.invoke(probe_call("print", "to the log")).await.unwrap().bytes[..], b"ok");
    assert_canary_answers(&host).await;
}
