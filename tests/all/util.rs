//! Waiting for what a test expects, and running a test alone in a process of its own.
//!
//! A test that reads a counter, a metric, a state, an event or a crash report that the host
//! produces in the background waits for it with [`wait_for`] (or [`eventually`] outside an
//! async runtime) instead of reading it right after the action or sleeping a guessed while:
//! the wait ends as soon as the value is there, and a value that never comes fails with what
//! was awaited and the last value seen.

use std::fmt::Debug;
use std::process::Command;
use std::time::{Duration, Instant};

/// How often the waits sample.
const POLL: Duration = Duration::from_millis(10);

/// Samples `sample` every 10 ms until `done` holds for the value, and returns that value.
///
/// # Panics
/// If `limit` passes first: the message names `what` was awaited and the last value seen.
pub async fn wait_for<V: Debug>(
    limit: Duration,
    what: &str,
    mut sample: impl AsyncFnMut() -> V,
    done: impl Fn(&V) -> bool,
) -> V {
    let started = Instant::now();
    loop {
        let value = sample().await;
        if done(&value) {
            return value;
        }
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}; last seen: {value:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_for`] for a test without an async runtime: blocks the thread between samples.
///
/// # Panics
/// If `limit` passes first: the message names `what` was awaited and the last value seen.
pub fn eventually<V: Debug>(
    limit: Duration,
    what: &str,
    mut sample: impl FnMut() -> V,
    done: impl Fn(&V) -> bool,
) -> V {
    let started = Instant::now();
    loop {
        let value = sample();
        if done(&value) {
            return value;
        }
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}; last seen: {value:?}");
        std::thread::sleep(POLL);
    }
}

/// Set in the child process [`in_own_process`] starts, to the name of the test it runs.
const CHILD_TEST: &str = "PLUGBAY_SUITE_CHILD_TEST";

/// Runs the test `name` (its path in this binary, `wasm::some_test`) alone in a child
/// process of the test binary, with `env` added to the child's environment, for a test that
/// measures the whole process (its memory, its open files) or needs variables in its
/// environment: other tests share the process under `cargo test`, and setting variables
/// while other threads read the environment is undefined behaviour.
///
/// Returns `true` in that child (the test goes on and does its work there) and `false` in
/// the test that started it, once the child passed (that test then returns).
///
/// # Panics
/// In the starting test, if the child failed or did not run exactly that test.
pub fn in_own_process(name: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var_os(CHILD_TEST).is_some_and(|running| running == name) {
        return true;
    }
    let binary = std::env::current_exe().expect("the test binary's path");
    let output = Command::new(&binary)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_TEST, name)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {} for {name}: {error}", binary.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in its own process: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    false
}
