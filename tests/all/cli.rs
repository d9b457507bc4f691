//! The `plugbay` command line, run as a real process.

use std::process::Command;

use plugbay_testkit::{PluginsDir, plugbay_binary};

fn plugbay(args: &[&str], dir: &PluginsDir) -> std::process::Output {
    Command::new(plugbay_binary()).args(args).arg("--plugins").arg(dir.path()).output().expect("plugbay runs")
}

#[test]
fn call_prints_the_response_and_fails_with_code_and_message() {
    let dir = PluginsDir::new();
    dir.add_canary();
    let output = plugbay(&["call", "text.transform@1", "upper", "\"hello\""], &dir);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "\"HELLO\"");

    let output = plugbay(&["call", "text.transform@1", "shout", "\"hello\""], &dir);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("permission_denied") && stderr.contains("shout"), "{stderr}");
}

#[test]
fn list_json_reports_healthy_and_broken_plugins() {
    let dir = PluginsDir::new();
    dir.add_canary();
    dir.write_manifest("broken", "[plugin\n");
    let output = plugbay(&["list", "--json"], &dir);
    assert!(output.status.success(), "{output:?}");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let canary = listed.iter().find(|p| p["id"] == "text-tools").unwrap();
    assert_eq!(canary["state"], "running");
    assert_eq!(canary["runtime"], "native");
    assert_eq!(canary["capabilities"], serde_json::json!(["text.transform@1"]));
    assert!(canary["error"].is_null());
    let broken = listed.iter().find(|p| p["id"] == "broken").unwrap();
    assert_eq!(broken["state"], "failed");
    assert_eq!(broken["error"]["code"], "invalid_argument");
    assert!(broken["error"]["message"].as_str().unwrap().contains("plugin.toml:"));
    for key in ["id", "version", "runtime", "state", "capabilities", "error"] {
        assert!(broken.get(key).is_some(), "{key} is present");
    }
}
