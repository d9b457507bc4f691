//! D4: the bytes judged are the bytes that run. A racer swaps a plugin's signed artifact
//! with an evil one (an atomic `renameat2(RENAME_EXCHANGE)`, thousands of times) while the
//! host loads and reloads the plugin under `trust.policy = "require"`. Whichever file a
//! load reads, it runs what it read: the good bytes, or nothing (refused). The evil
//! native library and program write a marker the moment they run; the evil component
//! describes other methods, so a load that ever compiled it fails on its description
//! instead of the signature. Markers: 0.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use plugbay_core::trust::{PrivateKey, TrustConfig, TrustPolicy, TrustedKey, sign_folder};
use plugbay_core::{Code, Host, HostConfig, SandboxMode, State};
use plugbay_testkit::wasm::{GUEST_METHODS, component_from_wat, guest_wat, write_guest};
use plugbay_testkit::{PluginsDir, compile_c, compile_c_program};

/// Loads and reloads per runtime, at least.
const ROUNDS: usize = 40;
/// Swaps the racer makes during them, at least (the fault catalogue's 10^4).
const SWAPS: u64 = 10_000;

/// What a racer did and what the loads saw.
struct Outcome {
    swaps: u64,
    rounds: usize,
    loaded: usize,
    refused: usize,
    other: Vec<String>,
}

/// Swaps `entry` and `evil` until `stop`, counting the swaps.
fn racer(
    entry: PathBuf,
    evil: PathBuf,
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &entry,
                rustix::fs::CWD,
                &evil,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .expect("swap the artifacts");
            swaps.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Signs `folder` (plugin `id`, artifact `entry`), puts `evil_bytes` beside the plugins
/// folder, and loads and reloads the plugin while a racer swaps the two.
async fn race(dir: &PluginsDir, id: &str, entry: &str, evil_bytes: &[u8], stage: &Path) -> Outcome {
    let key = PrivateKey::generate("release").unwrap();
    sign_folder(&dir.path().join(id), &key, None).unwrap();
    let evil = stage.join(format!("{id}-evil"));
    std::fs::write(&evil, evil_bytes).unwrap();
    let mode = std::fs::metadata(dir.path().join(id).join(entry)).unwrap().permissions();
    std::fs::set_permissions(&evil, mode).unwrap();
    let trust = TrustConfig::with_policy(TrustPolicy::Require).with_key(TrustedKey::new(key.public()));
    // Off: the evil program could write its marker from inside the sandbox's read-only
    // root only with a grant; the race is about which bytes run, not what they may do.
    let config = HostConfig::with_plugin_dir(dir.path()).with_trust(trust).with_sandbox(SandboxMode::Off);
    let host = Host::build(config).unwrap();
    let (stop, swaps) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let racing = racer(dir.path().join(id).join(entry), evil, stop.clone(), swaps.clone());
    let mut outcome = Outcome { swaps: 0, rounds: 0, loaded: 0, refused: 0, other: Vec::new() };
    host.load_all().await;
    let mut rounds = 0;
    while rounds < ROUNDS || swaps.load(Ordering::Relaxed) < SWAPS {
        rounds += 1;
        let result = match host.plugins().iter().find(|plugin| plugin.id == id).map(|plugin| plugin.state) {
            Some(State::Running) => host.reload(id).await,
            _ => host.load_by_name(id).await.map(drop),
        };
        match result {
            Ok(()) => outcome.loaded += 1,
            Err(error) if error.code() == Code::PermissionDenied => outcome.refused += 1,
            Err(error) => outcome.other.push(error.to_string()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    racing.join().unwrap();
    outcome.swaps = swaps.load(Ordering::Relaxed);
    outcome.rounds = rounds;
    host.stop_all().await;
    outcome
}

fn marker_lines(marker: &Path) -> String {
    std::fs::read_to_string(marker).unwrap_or_default()
}

fn check(runtime: &str, outcome: &Outcome, marker: &Path) {
    eprintln!(
        "{runtime}: {} swaps during {} loads: {} of the good bytes, {} refused",
        outcome.swaps, outcome.rounds, outcome.loaded, outcome.refused
    );
    assert_eq!(marker_lines(marker), "", "{runtime}: the evil artifact ran");
    assert!(outcome.other.is_empty(), "{runtime}: only good loads and refusals: {:?}", outcome.other);
    assert!(outcome.swaps >= SWAPS, "{runtime}: the racer kept swapping ({} swaps)", outcome.swaps);
    assert_eq!(outcome.loaded + outcome.refused, outcome.rounds, "{runtime}");
    assert!(outcome.loaded > 0 && outcome.refused > 0, "{runtime}: the race was real both ways");
}

const EVIL_C: &str = r#"
#include <fcntl.h>
#include <unistd.h>
static void mark(void) {
    int fd = open(MARKER, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) { write(fd, WHO "\n", sizeof(WHO)); close(fd); }
}
#ifdef PROGRAM
int main(void) { mark(); return 1; }
#else
__attribute__((constructor)) static void on_load(void) { mark(); }
#endif
"#;

fn evil(stage: &Path, who: &str, marker: &Path) -> Vec<u8> {
    let source = stage.join(format!("evil-{who}.c"));
    std::fs::write(&source, EVIL_C).unwrap();
    let out = stage.join(format!("evil-{who}.bin"));
    let marker_flag = format!("-DMARKER=\"{}\"", marker.display());
    let who_flag = format!("-DWHO=\"{who}\"");
    if who == "program" {
        compile_c_program(&source, &out, &[&marker_flag, &who_flag, "-DPROGRAM"]);
    } else {
        compile_c(&source, &out, &[&marker_flag, &who_flag]);
    }
    std::fs::read(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d4_a_native_library_swapped_during_loads_never_runs() {
    let (dir, stage) = (PluginsDir::new(), tempfile::tempdir().unwrap());
    let marker = stage.path().join("marker");
    dir.add_c_fixture("cfix", &[]);
    let evil = evil(stage.path(), "library", &marker);
    let outcome = race(&dir, "cfix", "libcfix.so", &evil, stage.path()).await;
    check("native", &outcome, &marker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d4_a_process_program_swapped_during_loads_never_runs() {
    let (dir, stage) = (PluginsDir::new(), tempfile::tempdir().unwrap());
    let marker = stage.path().join("marker");
    dir.add_process_fixture("");
    let evil = evil(stage.path(), "program", &marker);
    let outcome = race(&dir, "fixture", "process-fixture", &evil, stage.path()).await;
    check("process", &outcome, &marker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d4_a_component_swapped_during_loads_is_never_compiled() {
    let (dir, stage) = (PluginsDir::new(), tempfile::tempdir().unwrap());
    let provides: &[(&str, &[&str])] = &[("guest.test@1", GUEST_METHODS)];
    write_guest(&dir, "guest", provides, "");
    // Describes `into` where the manifest lists `echo`: compiled and asked, it fails the
    // load on its description, which `check` counts as the evil one having run.
    let evil_wat = guest_wat("guest", provides)
        .replace(r#"(data (i32.const 2064) "echo")"#, r#"(data (i32.const 2064) "into")"#);
    let evil = component_from_wat(&evil_wat);
    let marker = stage.path().join("marker");
    let outcome = race(&dir, "guest", "plugin.wasm", &evil, stage.path()).await;
    check("wasm", &outcome, &marker);
}
