//! The Python example process plugin (`examples/plugins/py-wordfreq`): the process
//! protocol is language-neutral. Needs python3 with grpcio, grpcio-tools and
//! grpcio-health-checking (`scripts/test.sh` installs them).

use std::process::Command;
use std::time::{Duration, Instant};

use plugbay_core::{Call, Code, ContentType, Host, HostConfig, Payload, RuntimeKind, State};
use plugbay_testkit::{PYTHON_EXAMPLE, PluginsDir, plugbay_binary, python_sandbox_read, workspace_root};
use serde_json::json;

use crate::support::{assert_error, info, json_call};

const CAPABILITY: &str = "text.stats@1";

/// A plugins folder with the Python example, loaded.
async fn python_host() -> (PluginsDir, Host) {
    let dir = PluginsDir::new();
    dir.add_python_example();
    // The sandbox shows the system's folders; a Python installed elsewhere is added.
    let shown = python_sandbox_read();
    let config = HostConfig::with_plugin_dir(dir.path()).with_sandbox_read(shown.clone());
    let host = Host::build(config).unwrap();
    host.load_all().await;
    let listed = info(&host, "py-wordfreq");
    assert_eq!(listed.state, State::Running, "{:?} (the sandbox also shows {shown:?})", listed.error);
    (dir, host)
}

/// The raw JSON text a method answers for the JSON string `text`.
async fn answer(host: &Host, method: &str, text: &str) -> String {
    let reply = host.invoke(json_call(CAPABILITY, method, json!(text))).await.unwrap();
    String::from_utf8(reply.bytes.to_vec()).unwrap()
}

fn pid_alive(pid: u32) -> bool {
    // A zombie is dead for our purpose: read its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The pid of the plugin's instance as the host sees it (its sandbox's init).
fn recorded_pid(host: &Host) -> u32 {
    let pids = info(host, "py-wordfreq").pids;
    assert_eq!(pids.len(), 1, "one instance: {pids:?}");
    pids[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_loads_and_counts_words_and_characters() {
    let (_dir, host) = python_host().await;
    let listed = info(&host, "py-wordfreq");
    assert_eq!(listed.runtime, Some(RuntimeKind::Process));
    assert!(pid_alive(recorded_pid(&host)));
    let sandbox = listed.sandbox.expect("a process plugin reports its sandbox");
    assert_eq!(sandbox.layers.len(), 8, "every layer, network namespace included: {sandbox:?}");

    // Lowercased; by count descending, then by word; the object keeps that order.
    let counts = answer(&host, "word-frequencies", "The cat and the hat. THE END, and the cat's hat!").await;
    assert_eq!(counts, r#"{"the":4,"and":2,"hat":2,"cat":1,"cat's":1,"end":1}"#);
    // At most ten words: of twelve words seen once, the ten first in order.
    let twelve = "lima kilo juliett india hotel golf foxtrot echo delta charlie bravo alpha";
    let top = answer(&host, "word-frequencies", twelve).await;
    let top: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&top).unwrap();
    let words: Vec<&str> = top.keys().map(String::as_str).collect();
    assert_eq!(
        words,
        ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett"]
    );
    assert_eq!(answer(&host, "word-frequencies", "").await, "{}");

    // Characters are Unicode code points.
    assert_eq!(answer(&host, "char-count", "héllo wörld").await, r#"{"chars":11}"#);
    // The plugin reads the bytes as JSON whatever their type, and says its answer is JSON.
    let untyped = Call::new(CAPABILITY, "char-count", Payload::bytes(&b"\"abc\""[..]));
    let reply = host.invoke(untyped).await.unwrap();
    assert_eq!(reply.content_type, ContentType::JSON);
    assert_eq!(reply.to_json::<serde_json::Value>().unwrap(), json!({"chars": 3}));

    // Concurrent calls on one connection.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16usize {
        let host = host.clone();
        let text = "x".repeat(i);
        tasks.spawn(async move { (i, host.invoke(json_call(CAPABILITY, "char-count", json!(text))).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, reply) = joined.unwrap();
        assert_eq!(reply.unwrap().to_json::<serde_json::Value>().unwrap(), json!({"chars": i}));
    }

    // Requests over gRPC's default 4 MiB limit reach the plugin (protocol section 3).
    let big = "a".repeat(6 << 20);
    assert_eq!(answer(&host, "char-count", &big).await, format!(r#"{{"chars":{}}}"#, 6 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_outside_provides_are_refused_by_the_host() {
    let (_dir, host) = python_host().await;
    let error = host.invoke(json_call(CAPABILITY, "line-count", json!("a\nb"))).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error}");
    assert!(host.invoke(json_call(CAPABILITY, "char-count", json!("ok"))).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_argument_from_the_plugin() {
    let (_dir, host) = python_host().await;
    let not_json = Call::new(CAPABILITY, "word-frequencies", Payload::bytes(&b"{not json"[..]));
    let error = host.invoke(not_json).await.unwrap_err();
    assert_error(&error, Code::InvalidArgument, &["the request is not JSON"]);
    let not_utf8 = Call::new(CAPABILITY, "char-count", Payload::bytes(&b"\"\xff\xfe\""[..]));
    let error = host.invoke(not_utf8).await.unwrap_err();
    assert_error(&error, Code::InvalidArgument, &["not JSON"]);
    let error = host.invoke(json_call(CAPABILITY, "char-count", json!({"text": "x"}))).await.unwrap_err();
    assert_error(&error, Code::InvalidArgument, &["must be a JSON string, not dict"]);
    // The refusals did not hurt the plugin.
    assert_eq!(answer(&host, "char-count", "still here").await, r#"{"chars":10}"#);
    assert_eq!(info(&host, "py-wordfreq").state, State::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_makes_the_python_process_exit_and_start_runs_a_new_one() {
    let (_dir, host) = python_host().await;
    let pid = recorded_pid(&host);
    assert!(pid_alive(pid));
    let started = Instant::now();
    host.stop("py-wordfreq").await.unwrap();
    assert!(!pid_alive(pid), "the python process exited on shutdown");
    assert!(started.elapsed() < Duration::from_secs(5), "it answered Shutdown: {:?}", started.elapsed());
    assert_eq!(info(&host, "py-wordfreq").state, State::Stopped);

    host.start("py-wordfreq").await.unwrap();
    let new_pid = recorded_pid(&host);
    assert_ne!(pid, new_pid);
    assert_eq!(answer(&host, "char-count", "again").await, r#"{"chars":5}"#);
    host.unload("py-wordfreq").await.unwrap();
    assert!(!pid_alive(new_pid));
}

/// The plugin's `HostService.Log` line from `Init` reaches the host's log at info level,
/// tagged with the plugin id, and the call after it works (through the CLI, whose log goes
/// to stderr, here as JSON lines).
#[test]
fn init_log_line_reaches_the_host_log() {
    let dir = PluginsDir::new();
    dir.add_python_example();
    let output = Command::new(plugbay_binary())
        .args([
            "-v",
            "--log-format",
            "json",
            "call",
            CAPABILITY,
            "word-frequencies",
            "\"to be or not to be\"",
        ])
        .arg("--plugins")
        .arg(dir.path())
        .args(
            python_sandbox_read()
                .iter()
                .flat_map(|path| [std::ffi::OsStr::new("--sandbox-read"), path.as_os_str()]),
        )
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let reply: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(reply, json!({"be": 2, "to": 2, "not": 1, "or": 1}));
    let logged: Vec<serde_json::Value> =
        stderr.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let line = logged
        .iter()
        .find(|line| {
            line["fields"]["message"].as_str().is_some_and(|m| m.contains("py-wordfreq 0.1.0 ready"))
        })
        .unwrap_or_else(|| panic!("the Init log line is in the host's log: {stderr}"));
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["fields"]["plugin"], "py-wordfreq", "{line}");
    // Through HostService.Log, not the stderr fallback the plugin uses when Log fails.
    assert!(line["fields"].get("stream").is_none(), "{line}");
}

#[test]
fn python_program_started_by_hand_explains_itself() {
    let program = workspace_root().join(PYTHON_EXAMPLE).join("plugin.py");
    let scratch = tempfile::tempdir().unwrap();
    // Run as the host would (through its `#!/usr/bin/env python3` line), without the cookie.
    let output = Command::new(&program)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(scratch.path())
        .output()
        .unwrap_or_else(|error| panic!("{} runs (is it executable?): {error}", program.display()));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plugbay plugin") && stderr.contains("not meant to be run by hand"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout, where the host expects the handshake");
    assert!(!scratch.path().join("pid").exists(), "no pid file before the cookie check passes");
}
