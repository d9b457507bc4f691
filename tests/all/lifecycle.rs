//! Lifecycle through the host: every transition is published; stop, start and unload work;
//! illegal requests are errors; calls in flight finish when a plugin stops.

use std::time::Duration;

use plugbay_core::{Call, Code, Host, HostConfig, LifecycleChange, Payload, PluginInfo, State};
use plugbay_testkit::PluginsDir;
use serde_json::json;

use crate::support::{assert_error, info, json_call, method_metrics};
use crate::util::wait_for;

/// How long a test waits for what the host does in the background.
const PATIENCE: Duration = Duration::from_secs(10);

fn changes_for(
    events: &mut tokio::sync::broadcast::Receiver<plugbay_core::Event>,
    plugin: &str,
) -> Vec<LifecycleChange> {
    let mut changes = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Some(change) = event.lifecycle()
            && change.plugin == plugin
        {
            changes.push(change);
        }
    }
    changes
}

fn states(changes: &[LifecycleChange]) -> Vec<State> {
    changes.iter().map(|c| c.to).collect()
}

#[tokio::test]
async fn every_transition_is_published_with_old_and_new_state_and_reason() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
    let mut events = host.subscribe();
    host.load_all().await;
    let changes = changes_for(&mut events, "fixture");
    assert_eq!(states(&changes), [State::Discovered, State::Loaded, State::Initialized, State::Running]);
    assert_eq!(changes[0].from, None);
    for pair in changes.windows(2) {
        assert_eq!(pair[1].from, Some(pair[0].to), "each event's old state is the previous new state");
        assert!(!pair[1].reason.is_empty());
    }

    host.stop("fixture").await.unwrap();
    assert_eq!(states(&changes_for(&mut events, "fixture")), [State::Draining, State::Stopped]);
    let error = host.invoke(Call::new("plugin:fixture", "echo", Payload::default())).await.unwrap_err();
    assert_error(&error, Code::Unavailable, &["plugin fixture", "stopped"]);
    let error = host.invoke(Call::new("fixture@1", "echo", Payload::default())).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error}");

    host.start("fixture").await.unwrap();
    assert_eq!(states(&changes_for(&mut events, "fixture")), [State::Initialized, State::Running]);
    assert!(host.invoke(Call::new("fixture@1", "echo", Payload::default())).await.is_ok());

    host.unload("fixture").await.unwrap();
    assert_eq!(
        states(&changes_for(&mut events, "fixture")),
        [State::Draining, State::Stopped, State::Unloaded]
    );
    assert_eq!(info(&host, "fixture").state, State::Unloaded);

    host.load_folder(&dir.path().join("fixture")).await.unwrap();
    assert_eq!(info(&host, "fixture").state, State::Running);
}

#[tokio::test]
async fn illegal_requests_are_errors_not_no_ops() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
    host.load_all().await;
    let error = host.start("fixture").await.unwrap_err();
    assert_error(&error, Code::FailedPrecondition, &["running"]);
    host.stop("fixture").await.unwrap();
    let error = host.stop("fixture").await.unwrap_err();
    assert_error(
        &error,
        Code::FailedPrecondition,
        &["illegal lifecycle transition stopped -> draining", "plugin fixture"],
    );
    host.unload("fixture").await.unwrap();
    let error = host.unload("fixture").await.unwrap_err();
    assert_error(&error, Code::FailedPrecondition, &["unloaded -> unloaded"]);
    let error = host.stop("nobody").await.unwrap_err();
    assert_error(&error, Code::NotFound, &["nobody"]);
    let error = host.load_folder(&dir.path().join("fixture")).await;
    assert!(error.is_ok(), "an unloaded plugin loads again");
    let error = host.load_folder(&dir.path().join("fixture")).await.unwrap_err();
    assert_error(&error, Code::FailedPrecondition, &["already running"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_calls_in_flight_finish_and_refuses_new_ones() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
    host.load_all().await;
    let slow = {
        let host = host.clone();
        tokio::spawn(async move { host.invoke(json_call("fixture@1", "sleep", json!(1_000))).await })
    };
    let started = async || method_metrics(&host, "fixture", "sleep").calls;
    wait_for(PATIENCE, "the slow call to reach the plugin", started, |calls| *calls == 1).await;
    let stopping = {
        let host = host.clone();
        tokio::spawn(async move { host.stop("fixture").await })
    };
    let draining = |listed: &PluginInfo| listed.state == State::Draining;
    wait_for(PATIENCE, "stop to begin draining", async || info(&host, "fixture"), draining).await;
    // It stays draining while the call runs.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(info(&host, "fixture").state, State::Draining, "stop waits for the call in flight");
    let refused = host.invoke(Call::new("plugin:fixture", "echo", Payload::default())).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    let finished = slow.await.unwrap().expect("the call in flight finishes");
    assert_eq!(finished.to_json::<u64>().unwrap(), 1_000);
    stopping.await.unwrap().unwrap();
    assert_eq!(info(&host, "fixture").state, State::Stopped);
}
