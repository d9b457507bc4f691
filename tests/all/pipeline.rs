//! The one call pipeline and the one owner of the lifecycle (issue 15): every entry point
//! (`invoke`, `invoke_sync`, a `MethodHandle`, a plugin's call through the host) applies the
//! same rules, and lifecycle operations on a stopped plugin do what the docs promise.

use std::time::Duration;

use plugbay_core::{Call, Code, Host, HostConfig, Payload, State, Target};
use plugbay_testkit::wasm::{GUEST_METHODS, component_from_wat, guest_wat, write_component};
use plugbay_testkit::{FIXTURE_METHODS, HOST_API_GRANTS, PluginsDir, process_fixture, process_manifest};
use serde_json::json;

use crate::support::{assert_error, host_over, info, json_call};
use crate::util::wait_for;

/// The calls counted for `method` of `plugin`.
fn calls_of(host: &Host, plugin: &str, method: &str) -> u64 {
    let metrics = host.metrics();
    let plugin = metrics.plugins.iter().find(|p| p.id == plugin).expect("the plugin's metrics");
    plugin.methods.iter().find(|m| m.method == method).map_or(0, |m| m.calls)
}

#[tokio::test]
async fn every_entry_point_counts_its_calls() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let host = host_over(&dir).await;
    let echo = || Call::new("fixture@1", "echo", Payload::json(&1).unwrap());
    host.invoke(echo()).await.unwrap();
    for _ in 0..3 {
        host.invoke_sync(&echo()).unwrap();
    }
    let handle = host.resolve(&Target::parse("fixture@1"), "echo").unwrap();
    for _ in 0..4 {
        handle.call(&Payload::json(&2).unwrap()).unwrap();
    }
    handle.call_borrowed(b"3", "application/json", |bytes, _| bytes.to_vec()).unwrap();
    // 1 invoke + 3 invoke_sync + 5 handle calls: each one counted once.
    assert_eq!(calls_of(&host, "fixture", "echo"), 9);
    // A refused call is counted with its code on the synchronous paths too.
    let error = host.invoke_sync(&json_call("fixture@1", "big", json!("not a size"))).unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error}");
    let metrics = host.metrics();
    let fixture = metrics.plugins.iter().find(|p| p.id == "fixture").unwrap();
    let big = fixture.methods.iter().find(|m| m.method == "big").unwrap();
    assert_eq!((big.calls, big.errors.clone()), (1, vec![(Code::InvalidArgument, 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_handle_honours_max_concurrency() {
    let dir = PluginsDir::new();
    dir.add_fixture_with("[limits]\nmax_concurrency = 1\n");
    let host = host_over(&dir).await;
    let handle = host.resolve(&Target::parse("fixture@1"), "sleep").unwrap();
    let sleep = Payload::json(&300).unwrap();
    let results: Vec<_> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..3).map(|_| scope.spawn(|| handle.call(&sleep))).collect();
        calls.into_iter().map(|call| call.join().unwrap()).collect()
    });
    let refused: Vec<_> = results.iter().filter_map(|result| result.as_ref().err()).collect();
    assert_eq!(results.len() - refused.len(), 1, "one call runs at a time: {results:?}");
    for error in refused {
        assert_error(error, Code::ResourceExhausted, &["max_concurrency", "plugin fixture"]);
    }
}

#[tokio::test]
async fn a_loop_between_wasm_plugins_is_bounded_by_max_call_depth() {
    let dir = PluginsDir::new();
    // Twenty guests serve `echo.test@1` `into` with their `invoke` method (methods are
    // told apart by their first letter), which calls `echo.test@1` `into` through the host
    // again: a loop that round-robin routing takes through a different guest at each hop
    // (a wasm instance serves one call at a time, so a guest already in the chain would
    // only wait for itself). The loop starts in `looper-0`, which serves `guest.test@1`.
    for index in 0..=20 {
        let id = format!("looper-{index}");
        let provides: &[(&str, &[&str])] = match index {
            0 => &[("guest.test@1", GUEST_METHODS)],
            _ => &[("echo.test@1", &["into"])],
        };
        let wat = guest_wat(&id, provides)
            .replace(r#"(data (i32.const 2064) "echo")"#, r#"(data (i32.const 2064) "into")"#);
        write_component(&dir, &id, component_from_wat(&wat), provides, HOST_API_GRANTS);
    }
    let host = host_over(&dir).await;
    let running = host.plugins().iter().filter(|plugin| plugin.state == State::Running).count();
    assert_eq!(running, 21, "{:?}", host.plugins());
    let call = Call::new("guest.test@1", "invoke", Payload::bytes(&b"round"[..]))
        .with_timeout(Duration::from_secs(20));
    let error = host.invoke(call).await.unwrap_err();
    assert_error(&error, Code::ResourceExhausted, &["17 deep", "max_call_depth = 16", "plugin looper"]);
    // Sixteen hops ran, the seventeenth was refused before it reached a guest.
    let hops: u64 = (1..=20).map(|index| calls_of(&host, &format!("looper-{index}"), "into")).sum();
    assert_eq!(hops, 17);
}

#[tokio::test]
async fn the_native_call_depth_is_the_same_rule() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let config = HostConfig::with_plugin_dir(dir.path()).with_max_call_depth(3);
    let host = Host::build(config).unwrap();
    host.load_all().await;
    // `levels` invokes around an echo at the bottom, which runs `levels + 1` deep.
    let nest = |levels: usize| {
        let mut request = json!({"target": "fixture@1", "method": "echo", "payload": "bottom"});
        for _ in 0..levels {
            request = json!({"target": "fixture@1", "method": "invoke", "payload": request});
        }
        request
    };
    // Three plugin-to-plugin hops are allowed: the outer call plus three nested ones.
    let reply = host.invoke(json_call("fixture@1", "invoke", nest(2))).await.unwrap();
    assert_eq!(reply.to_json::<String>().unwrap(), "bottom");
    let error = host.invoke(json_call("fixture@1", "invoke", nest(3))).await.unwrap_err();
    assert_error(&error, Code::ResourceExhausted, &["4 deep", "max_call_depth = 3"]);
    // The same from the synchronous face.
    let error = host.invoke_sync(&json_call("fixture@1", "invoke", nest(3))).unwrap_err();
    assert_error(&error, Code::ResourceExhausted, &["max_call_depth = 3"]);
}

#[tokio::test]
async fn a_stopped_plugin_is_loaded_afresh_by_reload_and_by_name() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let host = host_over(&dir).await;
    for (how, again) in [("reload", true), ("load_by_name", false)] {
        host.stop("fixture").await.unwrap();
        assert_eq!(info(&host, "fixture").state, State::Stopped);
        let result = match again {
            true => host.reload("fixture").await,
            false => host.load_by_name("fixture").await.map(drop),
        };
        result.unwrap_or_else(|error| panic!("{how} of a stopped plugin: {error}"));
        assert_eq!(info(&host, "fixture").state, State::Running, "{how}");
        let reply = host.invoke(json_call("fixture@1", "echo", json!(how))).await.unwrap();
        assert_eq!(reply.to_json::<String>().unwrap(), how);
    }
}

#[tokio::test]
async fn a_watched_change_to_a_stopped_plugin_loads_it_afresh() {
    let dir = PluginsDir::new();
    let folder = dir.add_fixture();
    let config = HostConfig::with_plugin_dir(dir.path())
        .with_watch(true)
        .with_watch_debounce(Duration::from_millis(50));
    let host = Host::build(config).unwrap();
    host.load_all().await;
    host.stop("fixture").await.unwrap();
    let manifest = folder.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{text}\n# changed\n")).unwrap();
    let sample = async || info(&host, "fixture").state;
    wait_for(Duration::from_secs(10), "the changed stopped plugin to run again", sample, |state| {
        *state == State::Running
    })
    .await;
}

#[tokio::test]
async fn a_load_refused_because_the_plugin_runs_keeps_its_restart_count() {
    let dir = PluginsDir::new();
    dir.add_process_fixture("[restart]\npolicy = \"always\"\nbackoff_ms = 10\n");
    let host = host_over(&dir).await;
    let _ = host.invoke(json_call("fixture@1", "exit", json!(1))).await;
    let sample = async || info(&host, "fixture");
    wait_for(Duration::from_secs(10), "the supervisor to restart the program", sample, |listed| {
        listed.restarts == 1 && listed.state == State::Running && listed.instances == 1
    })
    .await;
    let error = host.load_by_name("fixture").await.unwrap_err();
    assert_error(&error, Code::FailedPrecondition, &["already running"]);
    assert_eq!(info(&host, "fixture").restarts, 1, "a refused load changes nothing");
}

#[tokio::test]
async fn a_process_plugin_whose_program_is_in_a_subfolder_runs_in_its_plugin_folder() {
    let dir = PluginsDir::new();
    let manifest = process_manifest("fixture", "bin/process-fixture", &[("fixture@1", FIXTURE_METHODS)], "");
    let folder = dir.write_manifest("fixture", manifest);
    std::fs::create_dir(folder.join("bin")).unwrap();
    std::fs::copy(process_fixture(), folder.join("bin/process-fixture")).unwrap();
    // The fixture reads `tag` from its working directory at init.
    std::fs::write(folder.join("tag"), "in the plugin folder").unwrap();
    std::fs::write(folder.join("bin/tag"), "in bin").unwrap();
    let host = host_over(&dir).await;
    let reply = host.invoke(json_call("fixture@1", "tag", json!(null))).await.unwrap();
    assert_eq!(reply.to_json::<String>().unwrap(), "in the plugin folder");
}

#[tokio::test(start_paused = true)]
async fn idle_unload_keeps_time_on_tokios_clock() {
    let dir = PluginsDir::new();
    dir.add_fixture_with("[load]\nlazy = true\nidle_timeout_ms = 60000\n");
    let host = host_over(&dir).await;
    assert_eq!(info(&host, "fixture").state, State::Discovered);
    host.invoke(json_call("fixture@1", "echo", json!(1))).await.unwrap();
    assert_eq!(info(&host, "fixture").state, State::Running);
    // Half the idle time later a call keeps it loaded; a whole idle time after that call,
    // with no call in between, it is unloaded. The clock is paused: only tokio's time moves.
    tokio::time::sleep(Duration::from_secs(30)).await;
    host.invoke(json_call("fixture@1", "echo", json!(2))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(info(&host, "fixture").state, State::Running, "50 s after its last call");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(info(&host, "fixture").state, State::Unloaded, "80 s after its last call");
}
