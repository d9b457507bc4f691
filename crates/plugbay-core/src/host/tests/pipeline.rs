//! The call pipeline with fake instances: timeouts, the concurrency queue, retries and
//! calls turned away by a closed instance.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Fake, echo, host_with, manifest};
use crate::error::Code;
use crate::metrics::PluginStats;
use crate::runtime::Instance;
use crate::scheduler::Slot;

#[tokio::test(start_paused = true)]
async fn a_call_past_its_timeout_is_cancelled_at_the_timeout_and_counted() {
    let fake = Fake::new(Duration::from_secs(10));
    let host = host_with("slow", "[limits]\ntimeout_ms = 2000\n", &[fake]);
    let started = tokio::time::Instant::now();
    let error = host.invoke(echo()).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    // The fake has no registry entry (no folder): its counters are read from its slot.
    let slot = host.inner.scheduler.route(&crate::call::Target::parse("fake@1"), "echo").unwrap();
    let echo = slot.stats.snapshot().into_iter().find(|m| m.method == "echo").unwrap();
    assert_eq!((echo.calls, echo.errors), (1, vec![(Code::DeadlineExceeded, 1)]));
}

#[tokio::test(start_paused = true)]
async fn max_concurrency_runs_one_queues_one_and_refuses_the_rest() {
    let fake = Fake::new(Duration::from_secs(1));
    let host = host_with("busy", "[limits]\nmax_concurrency = 1\n", std::slice::from_ref(&fake));
    let calls: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn({
                let host = host.clone();
                async move { host.invoke(echo()).await }
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    let refused: Vec<_> = results.iter().filter_map(|result| result.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{results:?}");
    assert_eq!(refused[0].code(), Code::ResourceExhausted);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2, "the queued call ran after the first");
}

#[tokio::test(start_paused = true)]
async fn a_dead_instance_retries_an_idempotent_method_once_elsewhere() {
    let (dead, alive) = (Fake::new(Duration::ZERO), Fake::new(Duration::ZERO));
    dead.alive.store(false, Ordering::SeqCst);
    let host = host_with("pair", "[retry]\nidempotent = [\"echo\"]\n", &[dead.clone(), alive.clone()]);
    for _ in 0..4 {
        assert_eq!(&host.invoke(echo()).await.unwrap().bytes[..], b"hi");
    }
    // Every call was answered by the live one; those routed to the dead one first ran
    // there once and once more on the live one.
    assert_eq!(alive.calls.load(Ordering::SeqCst), 4);
    assert!(dead.calls.load(Ordering::SeqCst) >= 1, "round-robin reaches the dead one too");
    // Without the retry listing, the caller gets the failure.
    let host = host_with("pair", "", std::slice::from_ref(&dead));
    assert_eq!(host.invoke(echo()).await.unwrap_err().code(), Code::Unavailable);
}

#[tokio::test(start_paused = true)]
async fn a_call_turned_away_by_a_closed_instance_goes_to_the_current_one() {
    let (old, new) = (Fake::new(Duration::ZERO), Fake::new(Duration::ZERO));
    let host = host_with("swap", "", std::slice::from_ref(&old));
    let old_slot = host.inner.scheduler.route(&crate::call::Target::parse("fake@1"), "echo").unwrap();
    // The old instance closes, but no new one is routed yet: the call is refused as
    // draining, and the closed instance never saw it.
    old_slot.close();
    let error = host.invoke(echo()).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(old.calls.load(Ordering::SeqCst), 0);
    // Once the new instance is routed (a reload switched), a call routed to the closed
    // one goes on to it.
    let manifest = manifest("swap", "");
    let stats = Arc::new(PluginStats::for_manifest(&manifest));
    let instance: Arc<dyn Instance> = new.clone();
    let fresh = Arc::new(Slot::new(instance, manifest, "plugin.toml".into(), 0, stats));
    host.inner.scheduler.insert("swap", vec![fresh]);
    let attempt =
        crate::host::dispatch::run_here(&host.inner.rules, &old_slot, "echo", None, 0, |_| Some(Ok(())));
    assert!(matches!(attempt, crate::host::dispatch::Attempt::TurnedAway));
    assert_eq!(&host.invoke(echo()).await.unwrap().bytes[..], b"hi");
    assert_eq!((old.calls.load(Ordering::SeqCst), new.calls.load(Ordering::SeqCst)), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_gives_up_at_its_deadline_and_frees_its_place() {
    let fake = Fake::new(Duration::from_secs(10));
    let host = host_with("busy", "[limits]\nmax_concurrency = 1\ntimeout_ms = 60000\n", &[fake]);
    let running = tokio::spawn({
        let host = host.clone();
        async move { host.invoke(echo()).await }
    });
    tokio::task::yield_now().await;
    // The queue's one place: taken by a call that may wait 50 ms.
    let started = tokio::time::Instant::now();
    let error = host.invoke(echo().with_timeout(Duration::from_millis(50))).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    assert!(error.to_string().contains("in the queue"), "{error}");
    // The deadline is read on the real clock, the wait runs on the paused one: a busy
    // machine may have spent a little real time before the wait began.
    let waited = started.elapsed();
    assert!(waited > Duration::from_millis(40) && waited <= Duration::from_millis(50), "{waited:?}");
    // Its place was given back: the next call queues again (and gives up the same way)
    // instead of being refused as if the queue were full.
    let error = host.invoke(echo().with_timeout(Duration::from_millis(50))).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    // A caller that stops waiting gives its place back too.
    let gave_up = tokio::time::timeout(Duration::from_millis(10), host.invoke(echo())).await;
    assert!(gave_up.is_err(), "still queued when the caller gave up");
    let error = host.invoke(echo().with_timeout(Duration::from_millis(50))).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error}");
    assert!(running.await.unwrap().is_ok());
}
