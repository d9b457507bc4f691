//! `[permissions] invoke` and `publish`: what a plugin may call and publish through the
//! host API, for the three runtimes. Nothing is granted by default; a call or topic outside
//! the grants is `permission_denied` naming the calling plugin, and never reaches the bus
//! or the callee.

use std::time::Duration;

use plugbay_core::{Call, Code, Error, Host, HostConfig, Payload, SandboxMode};
use plugbay_testkit::wasm::{GUEST_METHODS, write_guest};
use plugbay_testkit::{FIXTURE_METHODS, PluginsDir, native_manifest, process_manifest};
use serde_json::json;

use crate::support::{info, json_call, method_metrics};

/// What the fixtures below may do.
const GRANTS: &str =
    "\n[permissions]\ninvoke = [\"text.transform@1/upper\"]\npublish = [\"fixture.allowed.*\"]\n";

async fn host_over(dir: &PluginsDir) -> Host {
    let host = Host::build(HostConfig::with_plugin_dir(dir.path()).with_sandbox(SandboxMode::Off)).unwrap();
    let report = host.load_all().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    host
}

fn assert_denied(error: &Error, plugin: &str, fragments: &[&str]) {
    assert_eq!(error.code(), Code::PermissionDenied, "{error}");
    let text = error.to_string();
    assert!(text.contains(&format!("plugin {plugin}")), "the caller is named: {text}");
    for fragment in fragments {
        assert!(text.contains(fragment), "{fragment:?} not in {text}");
    }
}

/// The Rust fixture (native or process, the same code) against the grants above.
async fn check_fixture(host: &Host) {
    let invoke = |method: &str| {
        json_call(
            "fixture@1",
            "invoke",
            json!({"target": "text.transform@1", "method": method, "payload": "Abc"}),
        )
    };
    let upper = host.invoke(invoke("upper")).await.expect("the granted method");
    assert_eq!(upper.to_json::<String>().unwrap(), "ABC");
    let error = host.invoke(invoke("lower")).await.unwrap_err();
    assert_denied(&error, "fixture", &["may not call text.transform@1/lower", "text.transform@1/upper"]);
    assert_eq!(method_metrics(host, "text-tools", "lower").calls, 0, "the refused call never reached it");

    let mut events = host.subscribe();
    host.invoke(json_call("fixture@1", "publish", json!("fixture.allowed.one")))
        .await
        .expect("a granted topic");
    let error = host.invoke(json_call("fixture@1", "publish", json!("fixture.other"))).await.unwrap_err();
    assert_denied(&error, "fixture", &["may not publish on fixture.other", "fixture.allowed.*"]);
    let mut topics = Vec::new();
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        if event.source == "fixture" {
            topics.push(event.topic);
        }
    }
    assert_eq!(topics, ["fixture.allowed.one"], "only the granted topic reached the bus");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_plugin_calls_and_publishes_only_what_its_manifest_grants() {
    let dir = PluginsDir::new();
    dir.add_canary();
    let entry = plugbay_core::platform::cargo_cdylib_entry("native-fixture");
    let manifest = native_manifest("fixture", &entry, &[("fixture@1", FIXTURE_METHODS)]) + GRANTS;
    dir.add_rust("native-fixture", "fixture", Some(&manifest));
    check_fixture(&host_over(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_plugin_calls_and_publishes_only_what_its_manifest_grants() {
    let dir = PluginsDir::new();
    dir.add_canary();
    let manifest = process_manifest("fixture", "process-fixture", &[("fixture@1", FIXTURE_METHODS)], GRANTS);
    let folder = dir.write_manifest("fixture", manifest);
    std::fs::copy(plugbay_testkit::process_fixture(), folder.join("process-fixture")).unwrap();
    check_fixture(&host_over(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_plugin_calls_and_publishes_only_what_its_manifest_grants() {
    let dir = PluginsDir::new();
    write_guest(&dir, "canary", &[("echo.test@1", &["echo"])], "");
    // `bare` is granted nothing; `granted` exactly the call and topic its methods use.
    write_guest(&dir, "bare", &[("bare.test@1", GUEST_METHODS)], "");
    let grants = "\n[permissions]\ninvoke = [\"echo.test@1/echo\"]\npublish = [\"wasm.test\"]\n";
    write_guest(&dir, "granted", &[("granted.test@1", GUEST_METHODS)], grants);
    let host = host_over(&dir).await;
    let call = |target: &str, method: &str| Call::new(target, method, Payload::bytes(&b"hi"[..]));

    let reply = host.invoke(call("granted.test@1", "invoke")).await.expect("a granted call");
    assert_eq!(&reply.bytes[..], b"hi");
    host.invoke(call("granted.test@1", "publish")).await.expect("a granted topic");
    let error = host.invoke(call("bare.test@1", "invoke")).await.unwrap_err();
    assert_denied(&error, "bare", &["may not call echo.test@1/echo", "it lists: nothing"]);
    let error = host.invoke(call("bare.test@1", "publish")).await.unwrap_err();
    assert_denied(&error, "bare", &["may not publish on wasm.test"]);
    assert_eq!(method_metrics(&host, "canary", "echo").calls, 1, "only the granted call reached the canary");
    assert_eq!(info(&host, "bare").state, plugbay_core::State::Running, "a refusal is not a fault");
}
