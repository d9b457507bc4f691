//! Shared helpers for the suite.

use std::time::Duration;

use plugbay_core::metrics::MethodMetrics;
use plugbay_core::{Call, Code, Error, Host, HostConfig, Payload, PluginInfo, SandboxMode, State};
use plugbay_testkit::PluginsDir;

/// A host over `dir`, with everything in it loaded.
pub async fn host_over(dir: &PluginsDir) -> Host {
    let host = Host::build(HostConfig::with_plugin_dir(dir.path())).expect("host builds");
    host.load_all().await;
    host
}

/// A host over `dir` with the sandbox off, everything loaded: for the tests that watch a
/// program's own pid or files it writes in its folder (in the sandbox its pid is 2 of its
/// PID namespace and its folder is read-only; tests/all/sandbox.rs covers the sandbox).
pub async fn host_over_unsandboxed(dir: &PluginsDir) -> Host {
    let config = HostConfig::with_plugin_dir(dir.path()).with_sandbox(SandboxMode::Off);
    let host = Host::build(config).expect("host builds");
    host.load_all().await;
    host
}

/// The canary (text-tools) still answers.
pub async fn assert_canary_answers(host: &Host) {
    let reply = host
        .invoke(Call::new("text.transform@1", "upper", Payload::json("canary").unwrap()))
        .await
        .expect("the canary answers");
    assert_eq!(reply.to_json::<String>().unwrap(), "CANARY");
}

/// The plugin's listing, which must exist.
pub fn info(host: &Host, id: &str) -> PluginInfo {
    host.plugins()
        .into_iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("{id} is listed: {:?}", host.plugins()))
}

/// Asserts the plugin `id` failed with `code` and a message containing every fragment.
pub fn assert_failed(host: &Host, id: &str, code: Code, fragments: &[&str]) {
    let info = info(host, id);
    assert_eq!(info.state, State::Failed, "{info:?}");
    let error = info.error.as_ref().expect("a failed plugin has an error");
    assert_eq!(error.code, code, "{}", error.message);
    assert!(
        error.message.contains(&format!("plugin {id}")),
        "the message names the plugin: {}",
        error.message
    );
    for fragment in fragments {
        assert!(error.message.contains(fragment), "{:?} not in {:?}", fragment, error.message);
    }
}

/// Asserts an error's code and message fragments.
pub fn assert_error(error: &Error, code: Code, fragments: &[&str]) {
    assert_eq!(error.code(), code, "{error}");
    let text = error.to_string();
    for fragment in fragments {
        assert!(text.contains(fragment), "{fragment:?} not in {text:?}");
    }
}

/// A JSON call.
pub fn json_call(target: &str, method: &str, value: serde_json::Value) -> Call {
    Call::new(target, method, Payload::json(&value).unwrap()).with_timeout(Duration::from_secs(10))
}

/// The metrics of `plugin`'s `method` now, which must exist.
pub fn method_metrics(host: &Host, plugin: &str, method: &str) -> MethodMetrics {
    let metrics = host.metrics();
    let plugin_metrics = metrics.plugins.iter().find(|p| p.id == plugin);
    let plugin_metrics = plugin_metrics.unwrap_or_else(|| panic!("{plugin} has metrics: {metrics:?}"));
    let found = plugin_metrics.methods.iter().find(|m| m.method == method);
    found.unwrap_or_else(|| panic!("{plugin} has metrics for {method}: {plugin_metrics:?}")).clone()
}
