//! The process runtime: real programs (the Rust fixture built with `serve()`, shell
//! scripts that misbehave), real sockets, real signals. A native canary answers throughout.

use std::time::{Duration, Instant};

use plugbay_core::{Call, Code, Host, HostConfig, Payload, State};
use plugbay_testkit::PluginsDir;
use serde_json::json;

use crate::support::{
    assert_canary_answers, assert_error, assert_failed, host_over, host_over_unsandboxed, info, json_call,
    method_metrics,
};
use crate::util::wait_for;

/// How long a test waits for what the host does in the background.
const PATIENCE: Duration = Duration::from_secs(10);

/// A plugins folder with the process fixture (with `extra` manifest lines) and the canary.
/// A host with the canary and the process fixture (`extra` appended to its manifest).
pub(crate) async fn fixture_host(extra: &str) -> (PluginsDir, Host) {
    let dir = PluginsDir::new();
    dir.add_process_fixture(extra);
    dir.add_canary();
    let host = host_over(&dir).await;
    (dir, host)
}

/// [`fixture_host`] with the sandbox off, for tests that use the pid the fixture reports
/// (in the sandbox it is always 2, of the plugin's PID namespace).
pub(crate) async fn fixture_host_unsandboxed(extra: &str) -> (PluginsDir, Host) {
    let dir = PluginsDir::new();
    dir.add_process_fixture(extra);
    dir.add_canary();
    let host = host_over_unsandboxed(&dir).await;
    (dir, host)
}

/// Whether process `pid` is alive (a zombie is not).
pub(crate) fn pid_alive(pid: u32) -> bool {
    // A zombie is dead for our purpose: read its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The pid of the fixture process that answers the next call.
pub(crate) async fn fixture_pid(host: &Host) -> u32 {
    host.invoke(json_call("fixture@1", "pid", json!(null))).await.unwrap().to_json().unwrap()
}

/// Has the fixture call the native canary through the host (`invoke`), and checks the answer.
async fn assert_fixture_invokes_the_canary(host: &Host) {
    let reply = host
        .invoke(json_call(
            "fixture@1",
            "invoke",
            json!({"target": "text.transform@1", "method": "upper", "payload": "abc"}),
        ))
        .await
        .unwrap();
    assert_eq!(reply.to_json::<String>().unwrap(), "ABC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_plugin_serves_calls_events_and_host_callbacks() {
    let (_dir, host) = fixture_host("").await;
    assert_eq!(info(&host, "fixture").state, State::Running, "{:?}", info(&host, "fixture"));
    assert_eq!(info(&host, "fixture").runtime, Some(plugbay_core::RuntimeKind::Process));
    let echo =
        host.invoke(Call::new("fixture@1", "echo", Payload::bytes(&b"over the socket"[..]))).await.unwrap();
    assert_eq!(&echo.bytes[..], b"over the socket");

    // Host callbacks: the process plugin calls the native canary through the host.
    assert_fixture_invokes_the_canary(&host).await;

    // Concurrent calls on one connection.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32usize {
        let host = host.clone();
        tasks.spawn(async move { (i, host.invoke(json_call("fixture@1", "echo", json!(i))).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, reply) = joined.unwrap();
        assert_eq!(reply.unwrap().to_json::<usize>().unwrap(), i);
    }

    // The whitelist applies as for native plugins.
    let error = host.invoke(Call::new("fixture@1", "rm", Payload::default())).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);

    // Plugin errors keep their code; panics become internal.
    let error = host.invoke(Call::new("fixture@1", "panic", Payload::default())).await.unwrap_err();
    assert_error(&error, Code::Internal, &["plugin fixture", "panicked"]);
    assert!(host.invoke(json_call("fixture@1", "echo", json!(1))).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_calls() {
    let (_dir, host) = fixture_host_unsandboxed("\n[process]\nreplicas = 3\n").await;
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..6 {
        pids.insert(fixture_pid(&host).await);
    }
    assert_eq!(pids.len(), 3, "three processes served: {pids:?}");
    host.stop("fixture").await.unwrap();
    for pid in pids {
        assert!(!pid_alive(pid), "replica {pid} stopped with the plugin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_shuts_the_program_down_and_is_safe_twice() {
    let (_dir, host) = fixture_host_unsandboxed("").await;
    let pid = fixture_pid(&host).await;
    assert!(pid_alive(pid));
    host.stop("fixture").await.unwrap();
    assert!(!pid_alive(pid), "the program exited on shutdown");
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    let what = format!("no zombie: {} gone, the program reaped", proc.display());
    wait_for(PATIENCE, &what, async || proc.exists(), |exists| !exists).await;
    assert!(host.stop("fixture").await.is_err(), "a second stop is a clear error, not a hang");
    host.start("fixture").await.unwrap();
    let new_pid = fixture_pid(&host).await;
    assert_ne!(pid, new_pid);
    host.unload("fixture").await.unwrap();
    assert!(!pid_alive(new_pid));
}

async fn crash_mid_call(method: &str, payload: serde_json::Value, fragment: &str) {
    let (_dir, host) = fixture_host_unsandboxed("[restart]\nbackoff_ms = 10\n").await;
    let pid = fixture_pid(&host).await;
    let started = Instant::now();
    let error = host.invoke(json_call("fixture@1", method, payload)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "the failure is immediate, not a timeout");
    assert_error(&error, Code::Unavailable, &["plugin fixture", fragment]);
    assert_canary_answers(&host).await;
    // The default policy (on-failure) restarts it: a new process answers.
    let restarted = crate::supervision::wait_for_new_pid(&host, pid).await;
    assert!(!pid_alive(pid));
    assert_ne!(restarted, pid);
    assert_eq!(info(&host, "fixture").restarts, 1);
    // The crash report says why and lists the fatal call (its size, never its bytes).
    let crashes = crate::supervision::wait_for_crashes(&host, "fixture", 1).await;
    assert_eq!(crashes.len(), 1, "{crashes:?}");
    assert!(crashes[0].reason.contains(fragment), "{crashes:?}");
    let fatal =
        crashes[0].last_calls.iter().find(|call| call.method == method).expect("the fatal call is listed");
    assert!(["in flight", "unavailable"].contains(&fatal.outcome.as_str()), "{crashes:?}");
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_segfault_mid_call_is_unavailable_at_once() {
    crash_mid_call("segfault", json!(null), "SIGSEGV").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_abort_mid_call_is_unavailable_at_once() {
    crash_mid_call("abort", json!(null), "SIGABRT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_exit_mid_call_is_unavailable_at_once() {
    crash_mid_call("exit", json!(1), "exit status: 1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_sigkill_mid_call_is_unavailable_at_once() {
    let (_dir, host) = fixture_host_unsandboxed("").await;
    let pid = fixture_pid(&host).await;
    let slow = {
        let host = host.clone();
        tokio::spawn(async move { host.invoke(json_call("fixture@1", "sleep", json!(10_000))).await })
    };
    let started = async || method_metrics(&host, "fixture", "sleep").calls;
    wait_for(PATIENCE, "the sleep call to reach the plugin", started, |calls| *calls == 1).await;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let error =
        tokio::time::timeout(Duration::from_secs(5), slow).await.expect("no hang").unwrap().unwrap_err();
    assert_error(&error, Code::Unavailable, &["SIGKILL"]);
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_reach_the_plugin_and_the_caller_gets_deadline_exceeded() {
    let (_dir, host) = fixture_host("").await;
    let started = Instant::now();
    let call = Call::new("fixture@1", "sleep", Payload::json(&2_000).unwrap())
        .with_timeout(Duration::from_millis(200));
    let error = host.invoke(call).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    assert!(started.elapsed() < Duration::from_millis(1_500), "{:?}", started.elapsed());
    assert!(host.invoke(json_call("fixture@1", "echo", json!(1))).await.is_ok(), "the plugin still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b7_oversized_response_is_resource_exhausted() {
    let dir = PluginsDir::new();
    dir.add_process_fixture("");
    let config = HostConfig::with_plugin_dir(dir.path()).with_max_payload_bytes(1 << 20);
    let host = Host::build(config).unwrap();
    host.load_all().await;
    let error = host.invoke(json_call("fixture@1", "big", json!(2 << 20))).await.unwrap_err();
    assert_error(&error, Code::ResourceExhausted, &["max_payload_bytes"]);
    assert!(host.invoke(json_call("fixture@1", "big", json!(1000))).await.is_ok());
}

// ---- handshake faults (B3, B4, C6) ----

/// A host with the canary and a script plugin `bad` that is not restarted (unless `extra`
/// has a `[restart]` table), so a failed start stays `failed`.
async fn script_host(script: &str, extra: &str) -> (PluginsDir, Host) {
    let dir = script_dir(script, extra);
    let host = host_over(&dir).await;
    (dir, host)
}

/// The canary and a script plugin `bad` (restart policy `never` unless `extra` sets one).
fn script_dir(script: &str, extra: &str) -> PluginsDir {
    let dir = PluginsDir::new();
    dir.add_canary();
    let no_restart = if extra.contains("[restart]") { "" } else { "\n[restart]\npolicy = \"never\"\n" };
    dir.add_script_plugin("bad", script, &format!("{extra}{no_restart}"));
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_exit_before_the_handshake_reports_status_and_stderr() {
    let (_dir, host) = script_host("echo 'config file missing' >&2; exit 3", "").await;
    assert_failed(
        &host,
        "bad",
        Code::Unavailable,
        &["ended before its handshake", "exit status: 3", "config file missing"],
    );
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_garbage_before_the_handshake_is_quoted() {
    let (_dir, host) = script_host("echo 'Starting server on port 8080...'; sleep 30", "").await;
    assert_failed(
        &host,
        "bad",
        Code::FailedPrecondition,
        &["expected the handshake line", "Starting server on port 8080"],
    );
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_no_common_protocol_version_names_both() {
    let (_dir, host) = script_host("echo \"plugbay|7|unix|$PLUGBAY_SOCKET|grpc\"; sleep 30", "").await;
    assert_failed(&host, "bad", Code::FailedPrecondition, &["chose 7", "offers 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_endless_line_is_bounded() {
    let (_dir, host) = script_host("head -c 1000000000 /dev/zero | tr '\\0' x; sleep 30", "").await;
    assert_failed(&host, "bad", Code::FailedPrecondition, &["longer than 4096 bytes", "xxxx"]);
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b4_handshake_naming_another_socket_is_refused() {
    let (_dir, host) = script_host("echo 'plugbay|1|unix|/run/docker.sock|grpc'; sleep 30", "").await;
    assert_failed(&host, "bad", Code::PermissionDenied, &["/run/docker.sock", "assigned"]);
    let (_dir, host) = script_host("echo 'plugbay|1|tcp|127.0.0.1:2375|grpc'; sleep 30", "").await;
    assert_failed(&host, "bad", Code::PermissionDenied, &["network \"tcp\""]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b5_listening_without_serving_health_fails_at_the_start_timeout() {
    // Claims the handshake, creates the socket file, but serves nothing.
    let script = "python3 -c 'import socket,os,time; s=socket.socket(socket.AF_UNIX); s.bind(os.environ[\"PLUGBAY_SOCKET\"]); s.listen(); print(\"plugbay|1|unix|\"+os.environ[\"PLUGBAY_SOCKET\"]+\"|grpc\", flush=True); time.sleep(30)'";
    let started = Instant::now();
    let (_dir, host) = script_host(script, "\n[process]\nstart_timeout_ms = 1000\n").await;
    assert_failed(&host, "bad", Code::Unavailable, &["SERVING", "1000 ms"]);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c6_hanging_before_the_handshake_is_killed_at_the_start_timeout() {
    let started = Instant::now();
    let dir = script_dir("echo $$ > pid; exec sleep 3600", "\n[process]\nstart_timeout_ms = 500\n");
    let host = host_over_unsandboxed(&dir).await;
    assert_failed(
        &host,
        "bad",
        Code::Unavailable,
        &["no handshake within the start timeout of 500 ms", "killed"],
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid: u32 = std::fs::read_to_string(dir.path().join("bad/pid")).unwrap().trim().parse().unwrap();
    assert!(!pid_alive(pid), "the program was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_that_is_not_executable_is_refused_with_errno() {
    let dir = PluginsDir::new();
    let folder = dir.add_script_plugin("bad", "exit 0", "");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(folder.join("plugin.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let host = host_over(&dir).await;
    assert_failed(&host, "bad", Code::FailedPrecondition, &["cannot start", "Permission denied"]);
}

#[test]
fn sdk_program_started_by_hand_explains_itself() {
    let output = std::process::Command::new(plugbay_testkit::process_fixture()).env_clear().output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not meant to be run by hand") && stderr.contains("plugin.toml"), "{stderr}");
}

// ---- hygiene (C10, C13, F6) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_is_cleared_but_for_allowed_names_and_stdin_is_null() {
    let script = "env > env.txt; ls -l /proc/self/fd/0 > stdin.txt; echo \"plugbay|1|unix|/nope|grpc\"";
    let dir = PluginsDir::new();
    dir.add_script_plugin("bad", script, "\n[permissions]\nenv = [\"HOME\"]\n");
    let host = host_over_unsandboxed(&dir).await;
    assert_eq!(info(&host, "bad").state, State::Failed);
    let env = std::fs::read_to_string(dir.path().join("bad/env.txt")).unwrap();
    let names: Vec<&str> = env.lines().filter_map(|line| line.split('=').next()).collect();
    for name in &names {
        assert!(
            name.starts_with("PLUGBAY_") || ["HOME", "PWD", "SHLVL", "_", "OLDPWD"].contains(name),
            "unexpected variable {name} in {names:?}"
        );
    }
    assert!(names.contains(&"PLUGBAY_PLUGIN_COOKIE") && names.contains(&"PLUGBAY_SOCKET"));
    assert!(env.lines().any(|line| line == "PLUGBAY_TRANSPORTS=framed,grpc"), "{env}");
    assert!(env.lines().any(|line| line == "PLUGBAY_FRAMED_FEATURES=host-calls"), "{env}");
    assert!(!names.contains(&"PATH"), "PATH is not passed unless allowed");
    let stdin = std::fs::read_to_string(dir.path().join("bad/stdin.txt")).unwrap();
    assert!(stdin.contains("/dev/null"), "{stdin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_output_flood_never_blocks_the_plugin() {
    let dir = PluginsDir::new();
    // A wrapper that floods stderr with binary, a 1 MiB line and escapes, then runs the fixture.
    dir.add_wrapped_process_fixture(
        "",
        "(head -c 20000000 /dev/urandom; head -c 1048576 /dev/zero | tr '\\0' x; printf '\\033[2J\\033[31mred') >&2\nexec ./process-fixture",
    );
    let host = host_over(&dir).await;
    assert_eq!(info(&host, "fixture").state, State::Running, "{:?}", info(&host, "fixture").error);
    assert!(host.invoke(json_call("fixture@1", "echo", json!(1))).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_line_ending_in_crlf_is_accepted() {
    let dir = PluginsDir::new();
    // Every line the fixture writes to stdout, its handshake first, ends in "\r\n".
    dir.add_wrapped_process_fixture("", "./process-fixture | sed -u 's/$/\\r/'");
    let host = host_over(&dir).await;
    assert_eq!(info(&host, "fixture").state, State::Running, "{:?}", info(&host, "fixture").error);
    assert!(host.invoke(json_call("fixture@1", "echo", json!(1))).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c13_program_ignoring_sigterm_is_killed_after_the_grace_period() {
    let dir = PluginsDir::new();
    // The wrapper ignores TERM and keeps running after the fixture exits.
    let folder = dir.add_wrapped_process_fixture(
        "\n[process]\nshutdown_grace_ms = 300\n",
        "trap '' TERM\n./process-fixture\necho $$ > stubborn.pid\nsleep 3600",
    );
    let host = host_over_unsandboxed(&dir).await;
    assert_eq!(info(&host, "fixture").state, State::Running, "{:?}", info(&host, "fixture").error);
    let started = Instant::now();
    host.stop("fixture").await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5), "{elapsed:?}");
    let pid: u32 = std::fs::read_to_string(folder.join("stubborn.pid")).unwrap().trim().parse().unwrap();
    assert!(!pid_alive(pid), "killed after the grace period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_directory_and_sockets_are_removed_when_the_plugin_stops() {
    let dir = PluginsDir::new();
    let folder =
        dir.add_wrapped_process_fixture("", "echo \"$PLUGBAY_SOCKET\" > socket.path\nexec ./process-fixture");
    let host = host_over_unsandboxed(&dir).await;
    let socket =
        std::path::PathBuf::from(std::fs::read_to_string(folder.join("socket.path")).unwrap().trim());
    let private = socket.parent().unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o700);
    assert!(socket.exists() && private.join("host.sock").exists());
    host.stop("fixture").await.unwrap();
    let what = format!("{} removed", private.display());
    wait_for(PATIENCE, &what, async || private.exists(), |exists| !exists).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_directory_is_made_in_the_configured_socket_dir() {
    let dir = PluginsDir::new();
    let folder =
        dir.add_wrapped_process_fixture("", "echo \"$PLUGBAY_SOCKET\" > socket.path\nexec ./process-fixture");
    let sockets = tempfile::tempdir().unwrap();
    let config =
        HostConfig::with_plugin_dir(dir.path()).with_process_socket_dir(Some(sockets.path().to_path_buf()));
    // The program writes where its socket is into its folder, read-only in the sandbox.
    let config = config.with_sandbox(plugbay_core::SandboxMode::Off);
    let host = Host::build(config).unwrap();
    host.load_all().await;
    assert!(host.invoke(json_call("fixture@1", "echo", json!("hi"))).await.is_ok());
    let socket =
        std::path::PathBuf::from(std::fs::read_to_string(folder.join("socket.path")).unwrap().trim());
    let private = socket.parent().unwrap();
    assert_eq!(private.parent(), Some(sockets.path()), "{} is in the configured directory", socket.display());
    assert!(private.file_name().unwrap().to_string_lossy().starts_with("plugbay-fixture-"));
    host.unload("fixture").await.unwrap();
    let left =
        async || std::fs::read_dir(sockets.path()).unwrap().flatten().map(|e| e.path()).collect::<Vec<_>>();
    wait_for(PATIENCE, "the private directory removed", left, Vec::is_empty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_plugin_speaks_grpc_when_the_manifest_offers_only_grpc() {
    // The same fixture, offered gRPC only: calls, host callbacks, errors and a crash
    // mid-call behave as over the framed transport.
    let (_dir, host) = fixture_host("\n[process]\ntransport = \"grpc\"\n").await;
    let echo = host.invoke(Call::new("fixture@1", "echo", Payload::bytes(&b"over grpc"[..]))).await.unwrap();
    assert_eq!(&echo.bytes[..], b"over grpc");
    let reply = host
        .invoke(json_call(
            "fixture@1",
            "invoke",
            json!({"target": "text.transform@1", "method": "lower", "payload": "ABC"}),
        ))
        .await
        .unwrap();
    assert_eq!(reply.to_json::<String>().unwrap(), "abc");
    let error = host.invoke(Call::new("fixture@1", "panic", Payload::default())).await.unwrap_err();
    assert_error(&error, Code::Internal, &["panicked"]);
    let call = Call::new("fixture@1", "sleep", Payload::json(&2_000).unwrap())
        .with_timeout(Duration::from_millis(200));
    assert_eq!(host.invoke(call).await.unwrap_err().code(), Code::DeadlineExceeded);
    let error = host.invoke(json_call("fixture@1", "segfault", json!(null))).await.unwrap_err();
    assert_error(&error, Code::Unavailable, &["SIGSEGV"]);
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_offer_follows_the_manifest() {
    let dir = PluginsDir::new();
    dir.add_script_plugin(
        "bad",
        "echo \"$PLUGBAY_TRANSPORTS|${PLUGBAY_FRAMED_FEATURES-unset}\" > transports.txt",
        "\n[process]\ntransport = \"grpc\"\n",
    );
    let _host = host_over_unsandboxed(&dir).await;
    let offered = std::fs::read_to_string(dir.path().join("bad/transports.txt")).unwrap();
    assert_eq!(offered.trim(), "grpc|unset", "no framed features without framed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b5_framed_program_that_never_answers_describe_fails_at_the_start_timeout() {
    // Claims the framed transport, accepts the connection, and never replies.
    let script = "python3 -c 'import socket,os,time; s=socket.socket(socket.AF_UNIX); s.bind(os.environ[\"PLUGBAY_SOCKET\"]); s.listen(); print(\"plugbay|1|unix|\"+os.environ[\"PLUGBAY_SOCKET\"]+\"|framed\", flush=True); c=s.accept(); time.sleep(30)'";
    let started = Instant::now();
    let (_dir, host) =
        script_host(script, "\n[process]\nstart_timeout_ms = 1000\n\n[permissions]\nenv = [\"PATH\"]\n")
            .await;
    assert_failed(&host, "bad", Code::Unavailable, &["describe did not answer within 1000 ms"]);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_canary_answers(&host).await;
}

/// A request that has the fixture call itself `levels` times through the host, the last
/// time to `echo` "bottom": that echo runs `levels` deep.
fn self_calls(levels: usize) -> serde_json::Value {
    let mut request = json!({"target": "fixture@1", "method": "echo", "payload": "bottom"});
    for _ in 1..levels {
        request = json!({"target": "fixture@1", "method": "invoke", "payload": request});
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_loops_through_the_host_are_bounded_by_max_call_depth_for_process_plugins() {
    let (_dir, host) = fixture_host("").await;
    // The default max_call_depth is 16: a chain 16 deep runs, one 17 deep is refused there.
    let reply = host.invoke(json_call("fixture@1", "invoke", self_calls(16))).await.unwrap();
    assert_eq!(reply.to_json::<String>().unwrap(), "bottom");
    let error = host.invoke(json_call("fixture@1", "invoke", self_calls(17))).await.unwrap_err();
    assert_error(&error, Code::ResourceExhausted, &["17 deep", "max_call_depth = 16", "a call loop?"]);
    assert!(host.invoke(json_call("fixture@1", "echo", json!(1))).await.is_ok(), "the plugin still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_a_plugin_started_die_with_it() {
    let dir = PluginsDir::new();
    // The wrapper leaves a helper running in the plugin's process group, then becomes the plugin.
    let folder =
        dir.add_wrapped_process_fixture("", "sleep 3600 &\necho $! > helper.pid\nexec ./process-fixture");
    let host = host_over_unsandboxed(&dir).await;
    assert_eq!(info(&host, "fixture").state, State::Running, "{:?}", info(&host, "fixture").error);
    let helper: u32 = std::fs::read_to_string(folder.join("helper.pid")).unwrap().trim().parse().unwrap();
    assert!(pid_alive(helper));
    host.stop("fixture").await.unwrap();
    let what = format!("the helper {helper} the plugin started to be killed with it");
    wait_for(PATIENCE, &what, async || pid_alive(helper), |alive| !alive).await;
}

/// A wrapper that deletes the host's callback socket, then runs the fixture: whatever of
/// the host API still works went over the plugin's own (framed) connection.
const WITHOUT_CALLBACK_SOCKET: &str = "/bin/rm -f \"$PLUGBAY_HOST_SOCKET\"\nexec ./process-fixture";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_plugin_calls_the_host_on_its_own_connection() {
    let dir = PluginsDir::new();
    dir.add_wrapped_process_fixture("", WITHOUT_CALLBACK_SOCKET);
    dir.add_canary();
    let host = host_over(&dir).await;
    assert_eq!(info(&host, "fixture").state, State::Running, "{:?}", info(&host, "fixture").error);
    assert_fixture_invokes_the_canary(&host).await;
    // The host's errors come back with their code.
    let error = host
        .invoke(json_call("fixture@1", "invoke", json!({"target": "nothing@1", "method": "x", "payload": 1})))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error}");
    let mut events = host.subscribe();
    host.invoke(json_call("fixture@1", "publish", json!("fixture.framed"))).await.unwrap();
    let event = loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
        if event.topic == "fixture.framed" {
            break event;
        }
    };
    assert_eq!(event.source, "fixture");
    let error = host.invoke(json_call("fixture@1", "publish", json!("Bad Topic"))).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error}");
    assert_canary_answers(&host).await;
}

#[test]
fn framed_plugin_log_lines_reach_the_host_tagged_with_its_id() {
    // The fixture logs "fixture initialised" in its init; over the framed connection the
    // line goes out ahead of Init's reply, so it is logged before the call even starts.
    let dir = PluginsDir::new();
    dir.add_wrapped_process_fixture("", WITHOUT_CALLBACK_SOCKET);
    let output = std::process::Command::new(plugbay_testkit::plugbay_binary())
        .args(["call", "fixture@1", "echo", "\"x\"", "--plugins"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().find(|line| line.contains("fixture initialised"));
    assert!(line.is_some_and(|line| line.contains("plugin=\"fixture\"")), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_plugin_uses_the_callback_socket_when_the_host_does_not_offer_host_calls() {
    // What the SDK does with a host that predates host calls on the framed connection.
    let dir = PluginsDir::new();
    dir.add_wrapped_process_fixture("", "unset PLUGBAY_FRAMED_FEATURES\nexec ./process-fixture");
    dir.add_canary();
    let host = host_over(&dir).await;
    assert_fixture_invokes_the_canary(&host).await;
    assert!(
        host.invoke(json_call("fixture@1", "publish", json!("fixture.old")))
            .await
            .unwrap()
            .to_json::<bool>()
            .unwrap()
    );
}
