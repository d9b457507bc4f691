//! Hot reload and lazy loading: plugins replaced under load through the folder watcher,
//! rollback for every way a new version can fail, lazy plugins loaded once by their first
//! calls, folders removed during calls.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plugbay_core::events::{LIFECYCLE_TOPIC, RELOAD_TOPIC, ReloadEvent};
use plugbay_core::platform::native_library_file_name as platform_library;
use plugbay_core::{Call, Code, Event, Host, HostConfig, Payload, PluginInfo, State};
use plugbay_testkit::{PluginsDir, c_fixture_source, compile_c};
use serde_json::json;

use tokio::sync::broadcast::Receiver;

use crate::support::{assert_canary_answers, info, json_call};
use crate::util::wait_for;

/// How long a test waits for what the host does in the background.
const PATIENCE: Duration = Duration::from_secs(10);

/// Callers at once in the reload-under-load tests.
const CONCURRENCY: usize = 32;
/// File replacements in the reload-under-load tests.
const REPLACEMENTS: usize = 20;

/// A host over `dir` that watches it, with a short debounce and probation.
async fn watching_host(dir: &PluginsDir, probation: Duration) -> Host {
    let config = HostConfig::with_plugin_dir(dir.path())
        .with_watch(true)
        .with_watch_debounce(Duration::from_millis(50))
        .with_reload_probation(probation);
    let host = Host::build(config).unwrap();
    let report = host.load_all().await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    host
}

/// Writes `bytes` over `path` the way an installer does: a hidden file beside it, renamed
/// over it.
fn replace_atomically(path: &Path, bytes: &[u8]) {
    let name = path.file_name().unwrap().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.new"));
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Writes `bytes` over `path` in place, 4 KiB at a time with a pause after each chunk (a
/// slow copy or an editor saving in place).
async fn write_in_chunks(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    for chunk in bytes.chunks(4096) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Calls `call` at `CONCURRENCY` until stopped; every answer must pass `check`. Returns
/// (answers, failures) when stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    fn start(host: &Host, call: Call, check: fn(&Payload) -> bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..CONCURRENCY)
            .map(|_| {
                let (host, call, stop) = (host.clone(), call.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut answers, mut failures) = (0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        match host.invoke(call.clone()).await {
                            Ok(reply) if check(&reply) => answers += 1,
                            Ok(reply) => failures.push(format!("unexpected answer {:?}", reply.bytes)),
                            Err(error) => failures.push(error.to_string()),
                        }
                        tokio::task::yield_now().await;
                    }
                    (answers, failures)
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the callers and checks that none failed and at least `min_answers` came.
    async fn finish_without_failures(self, min_answers: usize) {
        let (answers, failures) = self.finish().await;
        let examples = &failures[..failures.len().min(5)];
        assert!(failures.is_empty(), "{} failed calls, e.g. {examples:?}", failures.len());
        assert!(answers >= min_answers, "only {answers} answers");
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut answers, mut failures) = (0, Vec::new());
        for task in self.tasks {
            let (a, f) = task.await.unwrap();
            answers += a;
            failures.extend(f);
        }
        (answers, failures)
    }
}

/// Waits (up to 10 s) until `probe` answers `expected`.
async fn wait_for_answer(host: &Host, probe: &Call, expected: &[u8]) {
    let what = format!("{} to answer {:?}", probe.method, String::from_utf8_lossy(expected));
    let answer = async || host.invoke(probe.clone()).await.map(|reply| reply.bytes);
    wait_for(PATIENCE, &what, answer, |answer| answer.as_ref().is_ok_and(|bytes| bytes[..] == *expected))
        .await
        .unwrap();
}

/// The C fixture built with echo tag `tag`, as bytes.
fn c_fixture_with_tag(scratch: &Path, tag: &str) -> Vec<u8> {
    let out = scratch.join(format!("libcfix-{tag}.so"));
    compile_c(&c_fixture_source(), &out, &["-DPLUGIN_ID=\"cfix\"", &format!("-DECHO_TAG=\"{tag}:\"")]);
    std::fs::read(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_f3_native_reload_under_load_loses_no_call() {
    let dir = PluginsDir::new();
    let folder = dir.add_c_fixture("cfix", &["-DECHO_TAG=\"a:\""]);
    let scratch = tempfile::tempdir().unwrap();
    let versions = [c_fixture_with_tag(scratch.path(), "a"), c_fixture_with_tag(scratch.path(), "b")];
    let host = watching_host(&dir, Duration::from_millis(100)).await;
    let library = folder.join(platform_library("libcfix"));
    let echo = Call::new("cfix@1", "echo", Payload::bytes(&b"x"[..]));
    let load = Load::start(&host, echo.clone(), |reply| matches!(&reply.bytes[..], b"a:x" | b"b:x"));
    let mut events = host.subscribe();
    for round in 0..REPLACEMENTS {
        let (bytes, expected) = if round % 2 == 0 { (&versions[1], b"b:x") } else { (&versions[0], b"a:x") };
        if round % 4 < 2 {
            replace_atomically(&library, bytes);
        } else {
            write_in_chunks(&library, bytes).await;
        }
        wait_for_answer(&host, &echo, expected).await;
    }
    load.finish_without_failures(1000).await;
    // The last switch's event may come after its version first answered: wait for it.
    let mut switched = 0;
    let all_switched = tokio::time::timeout(PATIENCE, async {
        while switched < REPLACEMENTS {
            let event = events.recv().await.expect("the bus is open");
            switched += usize::from(event.topic == RELOAD_TOPIC && event.action == "switched");
        }
    });
    assert!(all_switched.await.is_ok(), "{switched} reloads for {REPLACEMENTS} replacements");
    assert_eq!(info(&host, "cfix").state, State::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_process_reload_under_load_loses_no_call() {
    let dir = PluginsDir::new();
    let folder = dir.add_process_fixture("[health]\ninterval_ms = 0\n");
    std::fs::write(folder.join("tag"), "a").unwrap();
    let host = watching_host(&dir, Duration::from_millis(100)).await;
    let program = std::fs::read(folder.join("process-fixture")).unwrap();
    let tag = json_call("fixture@1", "tag", json!(null));
    let load = Load::start(&host, tag.clone(), |reply| matches!(&reply.bytes[..], b"\"a\"" | b"\"b\""));
    for round in 0..REPLACEMENTS {
        let next = if round % 2 == 0 { "b" } else { "a" };
        // A running program cannot be written in place (ETXTBSY): it is replaced by a
        // rename, and so is the data file it reads at init (the host checks artifacts, not
        // a plugin's own data files, so those must be replaced whole).
        replace_atomically(&folder.join("process-fixture"), &program);
        plugbay_testkit::set_executable(&folder.join("process-fixture"));
        replace_atomically(&folder.join("tag"), next.as_bytes());
        if round % 4 >= 2 {
            // A slow in-place write of another file in the folder at the same time.
            write_in_chunks(&folder.join("notes.bin"), &vec![b'n'; 64 << 10]).await;
        }
        wait_for_answer(&host, &tag, format!("\"{next}\"").as_bytes()).await;
    }
    load.finish_without_failures(100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_wasm_reload_under_load_loses_no_call() {
    use plugbay_testkit::wasm::{component_from_wat, guest_wat, write_guest};
    let dir = PluginsDir::new();
    let provides: &[(&str, &[&str])] = &[("counter.test@1", &["count"])];
    let folder = write_guest(&dir, "counter", provides, "");
    // Two versions of the test guest: the second counts from 2^30, so the top byte of a
    // count (4 bytes, little endian) says which version answered.
    let wat = guest_wat("counter", provides);
    let second = wat.replace(
        "(global $counter (mut i32) (i32.const 0))",
        "(global $counter (mut i32) (i32.const 1073741824))",
    );
    assert_ne!(wat, second);
    let versions = [component_from_wat(&wat), component_from_wat(&second)];
    let host = watching_host(&dir, Duration::from_millis(100)).await;
    let count = Call::new("counter.test@1", "count", Payload::bytes(&b""[..]));
    let load = Load::start(&host, count.clone(), |reply| reply.bytes.len() == 4);
    let artifact = folder.join("plugin.wasm");
    for round in 0..REPLACEMENTS {
        let next = (round + 1) % 2;
        if round % 4 < 2 {
            replace_atomically(&artifact, &versions[next]);
        } else {
            write_in_chunks(&artifact, &versions[next]).await;
        }
        let answer = async || host.invoke(count.clone()).await.unwrap().bytes;
        let from_next = |bytes: &bytes::Bytes| (bytes[3] >= 0x40) == (next == 1);
        wait_for(PATIENCE, &format!("version {next} to answer"), answer, from_next).await;
    }
    load.finish_without_failures(1000).await;
}

/// The first reload event with `action` that `events` (subscribed before the change that
/// causes it) receives within 10 s.
async fn reload_event(mut events: Receiver<Event>, action: &str) -> ReloadEvent {
    let event = tokio::time::timeout(PATIENCE, async {
        loop {
            let event = events.recv().await.expect("the bus is open");
            if event.topic == RELOAD_TOPIC && event.action == action {
                return event;
            }
        }
    });
    let event = event.await.unwrap_or_else(|_| panic!("no reload event {action:?} within {PATIENCE:?}"));
    event.payload.to_json().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_broken_manifest_or_artifact_is_rolled_back_and_the_old_version_serves() {
    let dir = PluginsDir::new();
    let folder = dir.add_c_fixture("cfix", &["-DECHO_TAG=\"a:\""]);
    dir.add_canary();
    let host = watching_host(&dir, Duration::from_millis(100)).await;
    let echo = Call::new("cfix@1", "echo", Payload::bytes(&b"x"[..]));
    let manifest = std::fs::read(folder.join("plugin.toml")).unwrap();
    let library = folder.join(platform_library("libcfix"));
    let good = std::fs::read(&library).unwrap();

    let failed = tokio::spawn(reload_event(host.subscribe(), "failed"));
    replace_atomically(&folder.join("plugin.toml"), b"[plugin\nid = ");
    let event = failed.await.unwrap();
    assert!(event.reason.contains("plugin.toml"), "{event:?}");
    assert_eq!(&host.invoke(echo.clone()).await.unwrap().bytes[..], b"a:x", "the old version serves");
    let listed = info(&host, "cfix");
    assert_eq!(listed.state, State::Running);
    assert!(listed.reload_error.unwrap().message.contains("plugin.toml"));

    replace_atomically(&folder.join("plugin.toml"), &manifest);
    let failed = tokio::spawn(reload_event(host.subscribe(), "failed"));
    replace_atomically(&library, &good[..good.len() / 3]);
    let event = failed.await.unwrap();
    assert!(event.reason.contains("not a loadable native library"), "{event:?}");
    assert_eq!(&host.invoke(echo.clone()).await.unwrap().bytes[..], b"a:x");
    assert_canary_answers(&host).await;

    // A good version after the broken ones is taken, and clears the error.
    let scratch = tempfile::tempdir().unwrap();
    replace_atomically(&library, &c_fixture_with_tag(scratch.path(), "c"));
    wait_for_answer(&host, &echo, b"c:x").await;
    assert_eq!(info(&host, "cfix").reload_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_new_version_failing_init_or_its_smoke_call_never_takes_a_call() {
    let dir = PluginsDir::new();
    let folder = dir.add_process_fixture("[health]\ninterval_ms = 0\n");
    std::fs::write(folder.join("tag"), "a").unwrap();
    let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
    host.load_all().await;
    let tag = json_call("fixture@1", "tag", json!(null));

    std::fs::write(folder.join("tag"), "fail-init").unwrap();
    let error = host.reload("fixture").await.unwrap_err();
    assert!(error.message().contains("init refused: tag says fail-init"), "{error}");
    assert_eq!(&host.invoke(tag.clone()).await.unwrap().bytes[..], b"\"a\"");
    assert!(info(&host, "fixture").reload_error.is_some());

    // A smoke call that fails (here: it kills the new process) refuses the new version.
    let manifest = std::fs::read_to_string(folder.join("plugin.toml")).unwrap();
    std::fs::write(folder.join("tag"), "b").unwrap();
    std::fs::write(
        folder.join("plugin.toml"),
        format!("{manifest}\n[load]\nsmoke_method = \"exit\"\nsmoke_payload = \"5\"\n"),
    )
    .unwrap();
    let error = host.reload("fixture").await.unwrap_err();
    assert_eq!(error.field(), Some("load.smoke_method"), "{error}");
    assert_eq!(&host.invoke(tag.clone()).await.unwrap().bytes[..], b"\"a\"");

    // With a smoke call that passes, the new version takes over.
    std::fs::write(folder.join("plugin.toml"), format!("{manifest}\n[load]\nsmoke_method = \"tag\"\n"))
        .unwrap();
    host.reload("fixture").await.unwrap();
    assert_eq!(&host.invoke(tag).await.unwrap().bytes[..], b"\"b\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_new_version_whose_health_never_serves_is_refused() {
    let dir = PluginsDir::new();
    let folder = dir.add_process_fixture("[health]\ninterval_ms = 0\n");
    std::fs::write(folder.join("tag"), "a").unwrap();
    let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
    host.load_all().await;
    // The new version: a program that claims the handshake but never serves health.
    let silent = "#!/bin/sh\nexec python3 -c 'import socket,os,time; s=socket.socket(socket.AF_UNIX); \
                  s.bind(os.environ[\"PLUGBAY_SOCKET\"]); s.listen(); \
                  print(\"plugbay|1|unix|\"+os.environ[\"PLUGBAY_SOCKET\"]+\"|grpc\", flush=True); time.sleep(30)'\n";
    std::fs::write(folder.join("silent.sh"), silent).unwrap();
    plugbay_testkit::set_executable(&folder.join("silent.sh"));
    let manifest = std::fs::read_to_string(folder.join("plugin.toml")).unwrap();
    let changed = manifest.replace("entry = \"process-fixture\"", "entry = \"silent.sh\"")
        + "\n[process]\nstart_timeout_ms = 500\ntransport = \"grpc\"\n";
    assert_ne!(manifest, changed);
    std::fs::write(folder.join("plugin.toml"), changed).unwrap();
    let error = host.reload("fixture").await.unwrap_err();
    assert!(error.message().contains("SERVING"), "{error}");
    let tag = json_call("fixture@1", "tag", json!(null));
    assert_eq!(&host.invoke(tag).await.unwrap().bytes[..], b"\"a\"", "the old version serves");
    assert!(info(&host, "fixture").reload_error.unwrap().message.contains("SERVING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_new_version_crashing_during_its_probation_is_rolled_back() {
    let dir = PluginsDir::new();
    let folder = dir.add_process_fixture("[health]\ninterval_ms = 0\n");
    std::fs::write(folder.join("tag"), "a").unwrap();
    let config = HostConfig::with_plugin_dir(dir.path()).with_reload_probation(Duration::from_secs(5));
    let host = Host::build(config).unwrap();
    host.load_all().await;
    let tag = json_call("fixture@1", "tag", json!(null));
    let old_pid = crate::process::fixture_pid(&host).await;
    let rolled_back = tokio::spawn(reload_event(host.subscribe(), "rolled_back"));
    std::fs::write(folder.join("tag"), "exit-soon").unwrap();
    host.reload("fixture").await.expect("the new version starts and takes calls");
    let event = rolled_back.await.unwrap();
    assert!(event.reason.contains("exit status: 4"), "{event:?}");
    assert_eq!(&host.invoke(tag).await.unwrap().bytes[..], b"\"a\"", "the old version serves again");
    assert_eq!(crate::process::fixture_pid(&host).await, old_pid);
    let listed = info(&host, "fixture");
    assert_eq!(listed.state, State::Running);
    assert!(listed.reload_error.unwrap().message.contains("probation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_plugin_gets_a_fresh_try_when_its_files_change() {
    let dir = PluginsDir::new();
    let folder = dir.add_process_fixture("[restart]\nmax_restarts = 0\n");
    std::fs::write(folder.join("tag"), "fail-init").unwrap();
    let host = watching_host_allowing_failures(&dir).await;
    let quarantined = |listed: &PluginInfo| listed.state == State::Quarantined;
    wait_for(PATIENCE, "fixture quarantined", async || info(&host, "fixture"), quarantined).await;
    replace_atomically(&folder.join("tag"), b"fixed");
    let tag = json_call("fixture@1", "tag", json!(null));
    wait_for_answer(&host, &tag, b"\"fixed\"").await;
    assert_eq!(info(&host, "fixture").state, State::Running);
}

async fn watching_host_allowing_failures(dir: &PluginsDir) -> Host {
    let config = HostConfig::with_plugin_dir(dir.path())
        .with_watch(true)
        .with_watch_debounce(Duration::from_millis(50));
    let host = Host::build(config).unwrap();
    host.load_all().await;
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f7_a_thousand_concurrent_first_calls_load_a_lazy_plugin_once() {
    let dir = PluginsDir::new();
    dir.add_fixture_with("[load]\nlazy = true\n");
    let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
    let report = host.load_all().await;
    assert!(report.loaded.is_empty() && report.failed.is_empty(), "{report:?}");
    let listed = info(&host, "fixture");
    assert_eq!((listed.state, listed.lazy), (State::Discovered, true), "{listed:?}");
    let mut events = host.subscribe();
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move { host.invoke(json_call("fixture@1", "echo", json!(i))).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("every first call is answered");
    }
    let mut loads = 0;
    while let Ok(event) = events.try_recv() {
        loads += usize::from(event.topic == LIFECYCLE_TOPIC && event.action == "loaded");
    }
    assert_eq!(loads, 1, "exactly one load");
    assert_eq!(info(&host, "fixture").state, State::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_lazy_plugin_is_unloaded_and_loaded_again_by_the_next_call() {
    let dir = PluginsDir::new();
    dir.add_fixture_with("[load]\nlazy = true\nidle_timeout_ms = 200\n");
    let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
    host.load_all().await;
    host.invoke(json_call("fixture@1", "echo", json!(1))).await.unwrap();
    assert_eq!(info(&host, "fixture").state, State::Running);
    let started = Instant::now();
    let unloaded = |listed: &PluginInfo| listed.state == State::Unloaded;
    wait_for(PATIENCE, "the idle fixture unloaded", async || info(&host, "fixture"), unloaded).await;
    assert!(started.elapsed() >= Duration::from_millis(150), "not before the idle timeout");
    host.invoke(json_call("fixture@1", "echo", json!(2))).await.unwrap();
    assert_eq!(info(&host, "fixture").state, State::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_f4_removing_a_plugin_folder_during_calls_unloads_it_cleanly() {
    let dir = PluginsDir::new();
    let folder = dir.add_c_fixture("cfix", &[]);
    dir.add_canary();
    let host = watching_host(&dir, Duration::from_millis(100)).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let echo = Call::new("cfix@1", "echo", Payload::bytes(&b"x"[..]));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (host, echo, failures) = (host.clone(), echo.clone(), failures.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                loop {
                    let call = tokio::time::timeout(Duration::from_secs(5), host.invoke(echo.clone())).await;
                    match call.expect("no call hangs") {
                        Ok(reply) => assert_eq!(&reply.bytes[..], b"x"),
                        // After the removal: refused at once, by name.
                        Err(error) => {
                            assert!(matches!(error.code(), Code::NotFound | Code::Unavailable), "{error}");
                            failures.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    assert!(started.elapsed() < Duration::from_secs(10), "the plugin was never unloaded");
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::remove_dir_all(&folder).unwrap();
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 8);
    assert_eq!(info(&host, "cfix").state, State::Unloaded);
    assert_canary_answers(&host).await;
    // Putting a plugin folder back loads it.
    dir.add_c_fixture("cfix", &[]);
    wait_for_answer(&host, &echo, b"x").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f7_two_edits_ten_ms_apart_and_an_unload_meanwhile_are_serialised() {
    let dir = PluginsDir::new();
    let folder = dir.add_c_fixture("cfix", &["-DECHO_TAG=\"a:\""]);
    let scratch = tempfile::tempdir().unwrap();
    let b = c_fixture_with_tag(scratch.path(), "b");
    let c = c_fixture_with_tag(scratch.path(), "c");
    let host = watching_host(&dir, Duration::from_millis(100)).await;
    let library = folder.join(platform_library("libcfix"));
    replace_atomically(&library, &b);
    tokio::time::sleep(Duration::from_millis(10)).await;
    replace_atomically(&library, &c);
    let echo = Call::new("cfix@1", "echo", Payload::bytes(&b"x"[..]));
    wait_for_answer(&host, &echo, b"c:x").await;
    // An unload and a reload by hand at the same time: one after the other, both legal.
    let (unloaded, reloaded) = tokio::join!(host.unload("cfix"), host.reload("cfix"));
    unloaded.unwrap();
    reloaded.unwrap();
    let state = info(&host, "cfix").state;
    assert!(matches!(state, State::Running | State::Unloaded), "{state}");
    // An illegal request is an error, never a silent no-op.
    if state == State::Unloaded {
        assert_eq!(host.unload("cfix").await.unwrap_err().code(), Code::FailedPrecondition);
    }
}
