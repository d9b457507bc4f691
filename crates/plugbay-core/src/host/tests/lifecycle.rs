//! The lifecycle and supervision with fake instances under tokio's paused clock: a stop
//! drains the calls in flight, a start makes a new instance, a replica that dies is
//! replaced after its backoff while the other serves, and one that keeps dying is
//! quarantined with an alert.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Fake, FakeLoaded, echo, manifest};
use crate::config::HostConfig;
use crate::error::Code;
use crate::host::Host;
use crate::host::registry::PluginEntry;
use crate::lifecycle::State;
use crate::supervisor::ALERT_TOPIC;

/// Plugin `fake` loaded from `loaded` with the manifest tables `extra`, brought up by the
/// lifecycle's own steps (Discovered -> Loaded -> Initialized -> Running).
async fn running(host: &Host, loaded: &Arc<FakeLoaded>, extra: &str) -> Arc<PluginEntry> {
    let entry = host.inner.entry_for(std::path::Path::new("/nonexistent/fake"), "fake");
    {
        let mut status = entry.status.lock();
        status.id = "fake".into();
        status.manifest = Some(manifest("fake", extra));
        status.loaded = Some(loaded.clone());
    }
    host.inner.transition(&entry, State::Loaded, "loaded by the test").unwrap();
    host.inner.instantiate(&entry).await.unwrap();
    assert_eq!(entry.state(), State::Running);
    entry
}

/// Lets the host's background tasks (supervision, restarts) run, without moving the clock
/// further than `by`.
async fn settle(by: Duration) {
    tokio::time::sleep(by).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_drains_the_call_in_flight_and_a_start_makes_a_new_instance() {
    let host = Host::build(HostConfig::with_plugin_dir("/nonexistent")).unwrap();
    let loaded = FakeLoaded::new(Duration::from_secs(1), false);
    let entry = running(&host, &loaded, "").await;
    let call = tokio::spawn({
        let host = host.clone();
        async move { host.invoke(echo()).await }
    });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    host.stop("fake").await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(1), "the stop waited for the call in flight");
    assert!(call.await.unwrap().is_ok(), "the call in flight completed");
    assert_eq!(entry.state(), State::Stopped);
    assert_eq!(host.invoke(echo()).await.unwrap_err().code(), Code::NotFound);
    host.start("fake").await.unwrap();
    assert_eq!(entry.state(), State::Running);
    assert_eq!(loaded.made().len(), 2, "a new instance from the loaded artifact");
    assert!(host.invoke(echo()).await.is_ok());
    assert_eq!(loaded.made()[0].calls.load(Ordering::SeqCst), 1, "the stopped one got no more calls");
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_outlasts_its_deadline_stops_anyway_and_says_so() {
    let host = Host::build(
        HostConfig::with_plugin_dir("/nonexistent").with_drain_timeout(Duration::from_millis(300)),
    )
    .unwrap();
    let loaded = FakeLoaded::new(Duration::from_secs(10), false);
    let entry = running(&host, &loaded, "[limits]\ntimeout_ms = 60000\n").await;
    let mut events = host.subscribe();
    let _call = tokio::spawn({
        let host = host.clone();
        async move { host.invoke(echo()).await }
    });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    host.stop("fake").await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    assert_eq!(entry.state(), State::Stopped);
    let stopped =
        std::iter::from_fn(|| events.try_recv().ok()).find(|event| event.action == "stopped").unwrap();
    let reason = String::from_utf8_lossy(&stopped.payload.bytes).into_owned();
    assert!(reason.contains("drain deadline of 300 ms passed with 1 calls in flight"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_dies_is_replaced_after_its_backoff_while_the_other_serves() {
    let host = Host::build(HostConfig::with_plugin_dir("/nonexistent")).unwrap();
    let loaded = FakeLoaded::new(Duration::ZERO, true);
    let entry = running(&host, &loaded, "[process]\nreplicas = 2\n[restart]\nbackoff_ms = 1000\n").await;
    let (dead, alive): (Arc<Fake>, Arc<Fake>) = (loaded.made()[0].clone(), loaded.made()[1].clone());
    dead.die();
    settle(Duration::from_millis(1)).await;
    // Out of routing at once: every call goes to the other replica.
    for _ in 0..4 {
        assert!(host.invoke(echo()).await.is_ok());
    }
    assert_eq!((dead.calls.load(Ordering::SeqCst), alive.calls.load(Ordering::SeqCst)), (0, 4));
    assert_eq!(entry.state(), State::Running);
    // The backoff is 1000 ms shortened by up to half at random: not before 500 ms ...
    settle(Duration::from_millis(498)).await;
    assert_eq!(loaded.made().len(), 2, "not replaced before half the backoff");
    // ... and by 1000 ms.
    settle(Duration::from_millis(502)).await;
    assert_eq!(loaded.made().len(), 3, "replaced within the backoff");
    let info = host.plugin("fake").unwrap();
    assert_eq!((info.state, info.instances, info.restarts), (State::Running, 2, 1));
    let crashes = host.crashes(Some("fake"));
    assert_eq!(crashes.len(), 1);
    assert!(crashes[0].action.starts_with("restart 1 of 5 in "), "{}", crashes[0].action);
    assert!(crashes[0].reason.contains("the fake died"), "{}", crashes[0].reason);
}

#[tokio::test(start_paused = true)]
async fn a_replica_dying_past_max_restarts_within_the_window_quarantines_the_plugin() {
    let host = Host::build(HostConfig::with_plugin_dir("/nonexistent")).unwrap();
    let loaded = FakeLoaded::new(Duration::ZERO, true);
    let extra = "[process]\nreplicas = 2\n[restart]\nmax_restarts = 1\nwindow_s = 60\nbackoff_ms = 100\n";
    let entry = running(&host, &loaded, extra).await;
    let mut events = host.subscribe();
    loaded.made()[0].die();
    settle(Duration::from_millis(100)).await;
    assert_eq!(loaded.made().len(), 3, "the first death is restarted");
    loaded.made()[2].die();
    settle(Duration::from_millis(1)).await;
    assert_eq!(entry.state(), State::Quarantined);
    assert_eq!(loaded.made().len(), 3, "no restart after the second death within the window");
    let alert =
        std::iter::from_fn(|| events.try_recv().ok()).find(|event| event.topic == ALERT_TOPIC).unwrap();
    assert_eq!(alert.action, "quarantined");
    let error = host.invoke(echo()).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error}");
    let crashes = host.crashes(Some("fake"));
    assert!(
        crashes[1].action.starts_with("quarantined after 2 failures within 60 s"),
        "{}",
        crashes[1].action
    );
}
