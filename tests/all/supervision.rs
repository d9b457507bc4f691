//! Supervision: restart policies, crash-loop quarantine, health checks, deadlines for every
//! runtime, concurrency limits, idempotent retries, crash reports. Each test keeps the
//! canary (a native plugin) answering throughout. The process plugins here run with the
//! sandbox off: the tests tell replicas and restarts apart by the pid the fixture reports,
//! which in the sandbox is always 2 (tests/all/sandbox.rs covers supervision in it).

use std::time::{Duration, Instant};

use plugbay_core::events::{ALERT_TOPIC, Alert};
use plugbay_core::runtime::ExitStatus;
use plugbay_core::{Call, Code, Host, HostConfig, Payload, State};
use plugbay_testkit::PluginsDir;
use serde_json::json;

use crate::process::{fixture_host_unsandboxed as fixture_host, fixture_pid as pid_of, pid_alive as alive};
use crate::support::{
    assert_canary_answers, assert_error, host_over_unsandboxed as host_over, info, json_call,
};
use crate::util::wait_for;

/// How long a test waits for what the host does in the background.
const PATIENCE: Duration = Duration::from_secs(10);

/// Waits (up to 10 s) until the fixture answers from a process other than `old`; returns
/// the new pid.
pub async fn wait_for_new_pid(host: &Host, old: u32) -> u32 {
    let pid = async || {
        let reply = host.invoke(json_call("fixture@1", "pid", json!(null))).await;
        reply.map(|reply| reply.to_json::<u32>().unwrap())
    };
    let what = format!("the fixture to answer from a process other than {old}");
    wait_for(PATIENCE, &what, pid, |pid| pid.as_ref().is_ok_and(|pid| *pid != old)).await.unwrap()
}

/// Waits (up to 10 s) until `id` is in `state`.
async fn wait_for_state(host: &Host, id: &str, state: State) {
    wait_for(PATIENCE, &format!("{id} to be {state}"), async || info(host, id), |info| info.state == state)
        .await;
}

/// Waits (up to 10 s) until `id` has at least `count` crash reports; returns them all.
pub async fn wait_for_crashes(host: &Host, id: &str, count: usize) -> Vec<plugbay_core::events::CrashReport> {
    let what = format!("{count} crash reports of {id}");
    wait_for(PATIENCE, &what, async || host.crashes(Some(id)), |crashes| crashes.len() >= count).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_policy_never_leaves_a_crashed_plugin_failed() {
    let (_dir, host) = fixture_host("[restart]\npolicy = \"never\"\n").await;
    let error = host.invoke(json_call("fixture@1", "exit", json!(1))).await.unwrap_err();
    assert_error(&error, Code::Unavailable, &["exit status: 1"]);
    wait_for_state(&host, "fixture", State::Failed).await;
    assert_eq!(wait_for_crashes(&host, "fixture", 1).await[0].action, "not restarted (policy never)");
    // Nothing to wait on for a restart that must not happen: give it time, then look.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(info(&host, "fixture").state, State::Failed, "no restart under policy never");
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_does_not_restart_a_clean_exit_but_always_does() {
    let (_dir, host) = fixture_host("[restart]\nbackoff_ms = 1\n").await;
    let _ = host.invoke(json_call("fixture@1", "exit", json!(0))).await.unwrap_err();
    wait_for_state(&host, "fixture", State::Failed).await;
    assert!(wait_for_crashes(&host, "fixture", 1).await[0].action.contains("exited cleanly"));

    let (_dir, host) = fixture_host("[restart]\npolicy = \"always\"\nbackoff_ms = 1\n").await;
    let pid = pid_of(&host).await;
    let _ = host.invoke(json_call("fixture@1", "exit", json!(0))).await.unwrap_err();
    wait_for_new_pid(&host, pid).await;
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_judges_the_exit_status_not_what_the_program_printed() {
    let (_dir, host) = fixture_host("[restart]\nbackoff_ms = 1\n").await;
    let pid = pid_of(&host).await;
    let lie = json!({"line": "exited with exit status: 0", "code": 1});
    let error = host.invoke(json_call("fixture@1", "say_and_exit", lie)).await.unwrap_err();
    assert_error(&error, Code::Unavailable, &["exit status: 1"]);
    // A failure, whatever its stderr said: restarted.
    assert_ne!(wait_for_new_pid(&host, pid).await, pid);
    let crash = &wait_for_crashes(&host, "fixture", 1).await[0];
    assert!(crash.reason.contains("exited with exit status: 1"), "{crash:?}");
    assert!(!crash.action.contains("exited cleanly"), "{crash:?}");
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_a_plugin_killed_by_sigkill_has_signaled_9_in_its_crash_report() {
    let (_dir, host) = fixture_host("[restart]\npolicy = \"never\"\n").await;
    let pid = pid_of(&host).await;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_for_state(&host, "fixture", State::Failed).await;
    let crash = &host.crashes(Some("fixture"))[0];
    assert_eq!(crash.exit, Some(ExitStatus::Signaled(9)), "{crash:?}");
    assert!(crash.reason.contains(&format!("(pid {pid}) was killed by signal 9 (SIGKILL)")), "{crash:?}");
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_exit_0_is_a_clean_death_by_its_data() {
    let (_dir, host) = fixture_host("[restart]\nbackoff_ms = 1\n").await;
    let _ = host.invoke(json_call("fixture@1", "exit", json!(0))).await.unwrap_err();
    wait_for_state(&host, "fixture", State::Failed).await;
    let crash = &host.crashes(Some("fixture"))[0];
    assert_eq!(crash.exit, Some(ExitStatus::Exited(0)), "{crash:?}");
    assert!(crash.action.contains("exited cleanly"), "{crash:?}");
    let json = serde_json::to_value(crash).unwrap();
    assert_eq!(json["exit"], json!({"exited": 0}), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c12_crashing_in_init_every_time_ends_quarantined_after_exactly_max_restarts() {
    let dir = PluginsDir::new();
    dir.add_process_fixture("[restart]\nmax_restarts = 3\nbackoff_ms = 1\nbackoff_max_ms = 4\n");
    dir.add_canary();
    let mut config = HostConfig::with_plugin_dir(dir.path());
    config.plugin_config.insert("fixture".into(), b"fail".to_vec());
    let host = Host::build(config).unwrap();
    let mut events = host.subscribe();
    host.load_all().await;
    wait_for_state(&host, "fixture", State::Quarantined).await;
    let listed = info(&host, "fixture");
    assert_eq!(listed.restarts, 3, "{listed:?}");
    let error = listed.error.expect("the reason stays visible");
    assert!(error.message.contains("init refused: config says fail"), "{}", error.message);
    let crashes = wait_for_crashes(&host, "fixture", 4).await;
    assert_eq!(crashes.len(), 4, "the first start and 3 restarts: {crashes:?}");
    assert!(crashes[3].action.starts_with("quarantined after 4 failures"), "{crashes:?}");
    // An alert event says why.
    let alert = tokio::time::timeout(PATIENCE, async {
        loop {
            let event = events.recv().await.unwrap();
            // (The unsigned plugins' `signature_warning` alerts come first.)
            if event.topic == ALERT_TOPIC && event.action == "quarantined" {
                break event.payload.to_json::<Alert>().unwrap();
            }
        }
    })
    .await
    .expect("the quarantine alert arrives");
    assert_eq!((alert.plugin.as_str(), alert.kind.as_str()), ("fixture", "quarantined"));
    assert!(alert.reason.contains("init refused"), "{alert:?}");
    // No more attempts...
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(host.crashes(Some("fixture")).len(), 4);
    assert_canary_answers(&host).await;
    // ...until an operator starts it: the quarantine is lifted and the count starts over.
    let _ = host.start("fixture").await;
    assert_ne!(info(&host, "fixture").state, State::Quarantined);
    wait_for_state(&host, "fixture", State::Quarantined).await;
    assert_eq!(wait_for_crashes(&host, "fixture", 8).await.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c6_hanging_at_start_counts_toward_max_restarts() {
    let dir = PluginsDir::new();
    dir.add_canary();
    dir.add_script_plugin(
        "bad",
        "echo $$ >> pids; exec sleep 3600",
        "\n[process]\nstart_timeout_ms = 200\n[restart]\nmax_restarts = 1\nbackoff_ms = 1\n",
    );
    let host = host_over(&dir).await;
    wait_for_state(&host, "bad", State::Quarantined).await;
    let crashes = wait_for_crashes(&host, "bad", 2).await;
    assert_eq!(crashes.len(), 2, "{crashes:?}");
    assert!(
        crashes.iter().all(|c| c.reason.contains("no handshake within the start timeout")),
        "{crashes:?}"
    );
    let pids = std::fs::read_to_string(dir.path().join("bad/pids")).unwrap();
    assert_eq!(pids.lines().count(), 2, "started twice: {pids}");
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c5_stopped_plugin_fails_its_health_checks_and_is_replaced() {
    let (_dir, host) = fixture_host(
        "[health]\ninterval_ms = 50\ntimeout_ms = 100\nfailures = 2\n[restart]\nbackoff_ms = 1\n",
    )
    .await;
    let pid = pid_of(&host).await;
    let stopped = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(stopped, rustix::process::Signal::STOP).unwrap();
    let stat = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let stopped_state = |stat: &String| stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('T'));
    wait_for(PATIENCE, &format!("process {pid} to stop"), async || stat(), stopped_state).await;
    // A call meanwhile ends at its deadline, promptly.
    let started = Instant::now();
    let call = json_call("fixture@1", "echo", json!(1)).with_timeout(Duration::from_millis(100));
    assert_eq!(host.invoke(call).await.unwrap_err().code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
    assert_canary_answers(&host).await;
    let restarted = wait_for_new_pid(&host, pid).await;
    assert_ne!(restarted, pid);
    let crashes = wait_for_crashes(&host, "fixture", 1).await;
    assert!(crashes[0].reason.contains("failed 2 health checks in a row"), "{crashes:?}");
    // SIGCONT went before SIGKILL: the stopped process is gone, not left stopped.
    assert!(!alive(pid), "the stopped process was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c5_process_call_past_its_deadline_is_cancelled_promptly_and_the_plugin_serves_on() {
    let (_dir, host) = fixture_host("[limits]\ntimeout_ms = 200\n").await;
    // The plugin's timeout applies when the caller sets no deadline...
    let started = Instant::now();
    let error = host.invoke(json_call("fixture@1", "sleep", json!(5_000))).await.unwrap_err();
    assert_error(&error, Code::DeadlineExceeded, &["200 ms"]);
    assert!(started.elapsed() < Duration::from_millis(1_500), "{:?}", started.elapsed());
    // ...and the caller's when it is sooner.
    let started = Instant::now();
    let call = json_call("fixture@1", "sleep", json!(5_000)).with_timeout(Duration::from_millis(50));
    assert_eq!(host.invoke(call).await.unwrap_err().code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_millis(1_000), "{:?}", started.elapsed());
    assert!(host.invoke(json_call("fixture@1", "echo", json!(1))).await.is_ok());
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn native_call_past_its_deadline_is_reported_and_its_instance_skipped_while_stuck() {
    let dir = PluginsDir::new();
    dir.add_fixture_with("[limits]\ntimeout_ms = 100\n");
    dir.add_canary();
    let host = host_over(&dir).await;
    let slow = {
        let host = host.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = host.invoke(json_call("fixture@1", "sleep", json!(600))).await;
            (result, started.elapsed())
        })
    };
    // While the call runs past the timeout, the instance takes no new calls.
    let echo = async || host.invoke(json_call("fixture@1", "echo", json!(1))).await;
    let refused =
        wait_for(Duration::from_millis(500), "the instance marked stuck", echo, Result::is_err).await;
    assert_error(&refused.unwrap_err(), Code::Unavailable, &["past its timeout"]);
    assert_eq!(info(&host, "fixture").stuck_calls, 1);
    assert_canary_answers(&host).await;
    // The caller waited for the plugin (it cannot be pre-empted), then got deadline_exceeded.
    let (result, took) = slow.await.unwrap();
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert_error(&result.unwrap_err(), Code::DeadlineExceeded, &["cannot be pre-empted", "100 ms"]);
    // Once it returned, the instance serves again (as soon as the watch saw it return).
    let echo = async || host.invoke(json_call("fixture@1", "echo", json!(1))).await;
    wait_for(PATIENCE, "the instance to serve again", echo, Result::is_ok).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c11_max_concurrency_queues_as_many_and_refuses_the_rest_at_once() {
    let (_dir, host) = fixture_host("[limits]\nmax_concurrency = 2\n").await;
    // Four calls in: two running, two queued. A call can also be turned away while one of
    // the probes below holds a queue place for its 20 ms; then it tries again.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let host = host.clone();
        slow.push(tokio::spawn(async move {
            loop {
                match host.invoke(json_call("fixture@1", "sleep", json!(1_000))).await {
                    Err(error) if error.code() == Code::ResourceExhausted => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    result => break result,
                }
            }
        }));
    }
    // Once the four are in, a fifth call is refused at once; until then it waits in the
    // queue and gives up at its short deadline, and the next one tries.
    let fifth = async || {
        let started = Instant::now();
        let call = json_call("fixture@1", "echo", json!(1)).with_timeout(Duration::from_millis(20));
        (host.invoke(call).await, started.elapsed())
    };
    let refused = |(result, _): &(Result<Payload, plugbay_core::Error>, Duration)| {
        result.as_ref().is_err_and(|error| error.code() == Code::ResourceExhausted)
    };
    let (error, took) = wait_for(PATIENCE, "a fifth call refused", fifth, refused).await;
    assert_error(&error.unwrap_err(), Code::ResourceExhausted, &["max_concurrency = 2"]);
    assert!(took < Duration::from_millis(50), "refused at once: {took:?}");
    for call in slow {
        assert!(call.await.unwrap().is_ok(), "the running and the queued calls complete");
    }
    // Permits came back (also from calls that ended at their deadline).
    let call = json_call("fixture@1", "sleep", json!(1_000)).with_timeout(Duration::from_millis(50));
    assert!(host.invoke(call).await.is_err());
    assert!(host.invoke(json_call("fixture@1", "echo", json!(1))).await.is_ok());
    assert_canary_answers(&host).await;
}

/// Calls `exit_if` (which kills replica `victim`) until one call lands on the victim;
/// returns that call's result.
async fn call_until_victim_dies(host: &Host, victim: u32) -> Result<Payload, plugbay_core::Error> {
    for _ in 0..4 {
        let result = host.invoke(json_call("fixture@1", "exit_if", json!(victim))).await;
        if result.is_err() || !alive(victim) {
            return result;
        }
        result.expect("the other replica answers");
    }
    panic!("the victim replica never got a call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_method_is_retried_once_on_another_replica() {
    let (_dir, host) = fixture_host(
        "[process]\nreplicas = 2\n[retry]\nidempotent = [\"exit_if\"]\n[restart]\nbackoff_ms = 5000\n",
    )
    .await;
    let victim = pid_of(&host).await;
    let answer = call_until_victim_dies(&host, victim).await.expect("retried on the other replica");
    let survivor: u32 = answer.to_json().unwrap();
    assert_ne!(survivor, victim);
    assert_eq!(info(&host, "fixture").state, State::Running, "one replica still serves");
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_method_is_never_retried() {
    let (_dir, host) = fixture_host("[process]\nreplicas = 2\n[restart]\nbackoff_ms = 5000\n").await;
    let victim = pid_of(&host).await;
    let error = call_until_victim_dies(&host, victim).await.unwrap_err();
    assert_error(&error, Code::Unavailable, &["exit status: 3"]);
    // The other replica keeps serving while the dead one waits for its restart.
    assert!(host.invoke(json_call("fixture@1", "echo", json!(1))).await.is_ok());
    assert_eq!(info(&host, "fixture").instances, 1);
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_is_replaced_while_the_others_serve() {
    let (_dir, host) = fixture_host("[process]\nreplicas = 2\n[restart]\nbackoff_ms = 1\n").await;
    let victim = pid_of(&host).await;
    let _ = call_until_victim_dies(&host, victim).await;
    let replaced = |listed: &plugbay_core::PluginInfo| listed.instances == 2 && listed.restarts >= 1;
    let listed =
        wait_for(PATIENCE, "the dead replica replaced", async || info(&host, "fixture"), replaced).await;
    assert_eq!((listed.state, listed.restarts), (State::Running, 1), "{listed:?}");
    let crash = &wait_for_crashes(&host, "fixture", 1).await[0];
    assert!(crash.action.starts_with("restart 1 of 5"), "{crash:?}");
    let pids: std::collections::BTreeSet<u32> = futures_pids(&host).await;
    assert!(!pids.contains(&victim) && pids.len() == 2, "{pids:?}");
}

async fn futures_pids(host: &Host) -> std::collections::BTreeSet<u32> {
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..6 {
        pids.insert(pid_of(host).await);
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_bytes_never_reach_crash_reports() {
    let (_dir, host) = fixture_host("[restart]\nbackoff_ms = 1\n").await;
    let secret = Call::new("fixture@1", "echo", Payload::bytes(&b"top secret"[..]));
    host.invoke(secret).await.unwrap();
    let _ = host.invoke(json_call("fixture@1", "exit", json!(2))).await;
    let crashes = wait_for_crashes(&host, "fixture", 1).await;
    let report = serde_json::to_string(&crashes).unwrap();
    assert!(report.contains("\"payload_bytes\":10") && !report.contains("top secret"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_store_comes_back_with_its_data_after_sigkill() {
    let dir = PluginsDir::new();
    dir.add_kv_store_process("");
    dir.add_canary();
    // The example's own manifest takes a snapshot every second; wait that out once.
    let host = host_over(&dir).await;
    let kv = |method: &str, body: serde_json::Value| Call::new("kv@1", method, Payload::json(&body).unwrap());
    host.invoke(kv("put", json!({"key": "answer", "value": 42}))).await.unwrap();
    host.invoke(kv("put", json!({"key": "colour", "value": "teal"}))).await.unwrap();
    let pid: u32 = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                cmd.contains("kv-store-process") && cmd.contains(dir.path().to_str().unwrap())
            })
        })
        .expect("the kv-store process runs");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let target = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(target, rustix::process::Signal::KILL).unwrap();
    // The restarted process answers with the data of the last snapshot.
    let get = async || host.invoke(kv("get", json!({"key": "answer"}))).await;
    let reply = wait_for(PATIENCE, "the restarted kv-store to answer", get, Result::is_ok).await;
    let value = reply.unwrap().to_json::<serde_json::Value>().unwrap();
    assert_eq!(value["value"], 42, "{value}");
    assert!(!alive(pid));
    assert_eq!(info(&host, "kv-store").restarts, 1);
    let keys = host.invoke(kv("list", json!({}))).await.unwrap().to_json::<serde_json::Value>().unwrap();
    assert_eq!(keys["keys"], json!(["answer", "colour"]));
    assert_canary_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_stop_and_start_through_the_snapshot_taken_on_stop() {
    let dir = PluginsDir::new();
    dir.add_rust("kv-store", "kv-store", None);
    let host = host_over(&dir).await;
    let kv = |method: &str, body: serde_json::Value| Call::new("kv@1", method, Payload::json(&body).unwrap());
    host.invoke(kv("put", json!({"key": "k", "value": "native"}))).await.unwrap();
    host.stop("kv-store").await.unwrap();
    host.start("kv-store").await.unwrap();
    let reply = host.invoke(kv("get", json!({"key": "k"}))).await.unwrap();
    assert_eq!(reply.to_json::<serde_json::Value>().unwrap()["value"], "native");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c5_calls_timing_out_in_a_row_get_the_process_killed_and_restarted() {
    let (_dir, host) =
        fixture_host("[limits]\ntimeout_ms = 100\n[health]\nfailures = 3\n[restart]\nbackoff_ms = 1\n").await;
    let pid = pid_of(&host).await;
    for _ in 0..3 {
        let error = host.invoke(json_call("fixture@1", "sleep", json!(10_000))).await.unwrap_err();
        assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    }
    let restarted = wait_for_new_pid(&host, pid).await;
    assert_ne!(restarted, pid);
    let crash = &wait_for_crashes(&host, "fixture", 1).await[0];
    assert!(crash.reason.starts_with("3 calls in a row ran past their deadline"), "{crash:?}");
    assert!(crash.reason.contains("SIGKILL"), "{crash:?}");
    assert_canary_answers(&host).await;
}
