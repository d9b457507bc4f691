//! The event bus: host -> plugin delivery by subscribed topic, plugin -> host subscribers.

use std::time::Duration;

use plugbay_core::{Code, Event, Host, HostConfig, Payload};
use plugbay_testkit::PluginsDir;
use serde_json::json;

use crate::support::json_call;
use crate::util::wait_for;

/// How long a test waits for an event to be delivered.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the fixture plugin has received so far, as `topic:action:source`.
fn received(host: &Host) -> impl AsyncFnMut() -> Vec<String> {
    async || {
        let reply = host.invoke(json_call("fixture@1", "events", json!(null))).await.unwrap();
        reply.to_json::<Vec<String>>().unwrap()
    }
}

#[tokio::test]
async fn published_events_reach_subscribed_plugins_only() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
    host.load_all().await;
    host.publish(Event::new("fixture.ping", "created", Payload::json(&json!({"n": 1})).unwrap(), "test"))
        .unwrap();
    host.publish(Event::new("other.topic", "created", Payload::default(), "test")).unwrap();
    let received =
        wait_for(PATIENCE, "the fixture to receive an event", received(&host), |got| !got.is_empty()).await;
    assert_eq!(received, ["fixture.ping:created:test"]);
}

#[tokio::test]
async fn plugins_publish_to_host_subscribers() {
    let dir = PluginsDir::new();
    dir.add_fixture();
    let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
    host.load_all().await;
    let mut events = host.subscribe();
    host.invoke(json_call("fixture@1", "publish", json!("fixture.out"))).await.unwrap();
    let event = loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
        if event.topic == "fixture.out" {
            break event;
        }
    };
    assert_eq!(event.source, "fixture");
    assert_eq!(event.action, "poked");
    let error = host.invoke(json_call("fixture@1", "publish", json!("Bad Topic"))).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error}");
}

/// Lifecycle events are queued for a plugin that subscribes to them (the bus skips the
/// plugin queue only for topics no running plugin wants).
#[tokio::test]
async fn lifecycle_events_reach_a_subscribed_plugin() {
    let dir = PluginsDir::new();
    let fixture = dir.add_fixture();
    let manifest = fixture.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("\"fixture.*\"", "\"plugbay.lifecycle\"");
    std::fs::write(&manifest, text).unwrap();
    let host = Host::build(HostConfig::with_plugin_dir(dir.path())).unwrap();
    host.load_folder(&fixture).await.unwrap();
    host.publish(Event::new("fixture.ping", "created", Payload::default(), "test")).unwrap();
    let canary = dir.add_canary();
    host.load_folder(&canary).await.unwrap();
    let running = |got: &Vec<String>| got.iter().any(|event| event == "plugbay.lifecycle:running:host");
    let received =
        wait_for(PATIENCE, "the canary's running event at the fixture", received(&host), running).await;
    assert!(received.contains(&"plugbay.lifecycle:loaded:host".to_owned()), "{received:?}");
    assert!(received.contains(&"plugbay.lifecycle:running:host".to_owned()), "{received:?}");
    assert!(!received.iter().any(|event| event.starts_with("fixture.ping")), "{received:?}");
}
