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

#[test]
fn inspect_shows_the_manifest_and_the_native_table() {
    let dir = PluginsDir::new();
    let good = dir.add_c_fixture("cfix", &["-DOPEN_LOG"]);
    let bad = dir.add_c_fixture("future", &["-DTABLE_ABI=2"]);
    let broken = dir.write_manifest("broken", "[plugin]\nid = \"broken\"\n");
    let open_log = dir.path().join("opens.log");
    let inspect = |folder: &std::path::Path| {
        Command::new(plugbay_binary())
            .arg("inspect")
            .arg(folder)
            .arg("--json")
            .env("PLUGBAY_FIXTURE_OPEN_LOG", &open_log)
            .output()
            .expect("plugbay runs")
    };
    let output = inspect(&good);
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let opens = std::fs::read_to_string(&open_log).unwrap();
    assert_eq!(opens.lines().count(), 1, "inspect opens the library once, as a load does");
    assert_eq!(report["manifest"]["content"]["plugin"]["id"], "cfix");
    assert!(report["artifact"]["path"].as_str().unwrap().ends_with("libcfix.so"), "{report}");
    assert!(report["artifact"]["size"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["native"]["table"]["abi_version"], 1);
    assert_eq!(report["native"]["table"]["thread_safe"], true);
    assert_eq!(
        report["native"]["table"]["description"]["provides"]["cfix@1"],
        serde_json::json!(["echo", "count"])
    );
    assert_eq!(report["load"]["state"], "running");

    let output = inspect(&bad);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let error = report["native"]["error"]["message"].as_str().unwrap();
    assert!(error.contains("built for ABI 2, this host speaks 1"), "{error}");
    assert_eq!(report["load"]["state"], "failed");

    let output = inspect(&broken);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["manifest"]["error"]["code"], "invalid_argument", "{report}");
    let error = report["manifest"]["error"]["message"].as_str().unwrap();
    assert!(error.contains("plugin.toml") && error.contains("version"), "{error}");
    assert!(report["manifest"]["content"].is_null() && report["artifact"].is_null(), "{report}");
    assert_eq!(report["load"]["state"], "failed");
}

#[test]
fn doctor_reports_every_sandbox_layer_as_the_kernel_shows_it() {
    let output = Command::new(plugbay_binary()).args(["doctor", "--json"]).output().expect("plugbay runs");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let layers: Vec<&str> = checks.iter().map(|check| check["layer"].as_str().unwrap()).collect();
    let expected = [
        "user-namespace",
        "mount-namespace",
        "pid-namespace",
        "network-namespace",
        "ipc-uts-namespaces",
        "cgroups",
        "seccomp",
        "landlock",
    ];
    assert_eq!(layers, expected);
    let all_available = checks.iter().all(|check| check["available"] == true);
    assert_eq!(output.status.code(), Some(if all_available { 0 } else { 1 }), "{report}");
    // What it says of the kernel holds when read back here.
    let available = |layer: &str| checks.iter().find(|c| c["layer"] == layer).unwrap()["available"] == true;
    assert_eq!(available("pid-namespace"), std::path::Path::new("/proc/self/ns/pid").exists());
    match report["cgroups"]["usable"].as_str() {
        Some("v1") => {
            let memory = report["cgroups"]["v1"]
                .as_array()
                .unwrap()
                .iter()
                .find(|mount| mount["controllers"].as_array().unwrap().iter().any(|c| c == "memory"))
                .unwrap();
            let mount = std::path::Path::new(memory["mount"].as_str().unwrap());
            assert!(mount.join("memory.limit_in_bytes").exists(), "{}", mount.display());
        }
        Some("v2") => {
            let mount = std::path::Path::new(report["cgroups"]["v2"]["mount"].as_str().unwrap());
            let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap();
            assert!(controllers.contains("memory") && controllers.contains("pids"), "{controllers}");
        }
        _ => assert!(!available("cgroups")),
    }
    let landlock = checks.iter().find(|c| c["layer"] == "landlock").unwrap();
    if landlock["available"] == true {
        let abi: u32 = landlock["detail"].as_str().unwrap().trim_start_matches("ABI ").parse().unwrap();
        assert!(abi >= 1);
    }
    // The human form: the kernel, then one line per layer.
    let output = Command::new(plugbay_binary()).arg("doctor").output().expect("plugbay runs");
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + expected.len(), "{text}");
    assert!(lines[0].starts_with("kernel"), "{text}");
    for (line, layer) in lines[1..].iter().zip(expected) {
        assert!(line.starts_with(layer) && (line.contains(" ok: ") || line.contains(" missing: ")), "{line}");
    }
}
