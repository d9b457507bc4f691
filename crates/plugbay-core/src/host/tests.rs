//! Unit tests of the host's core with fake instances routed straight into a host, under
//! tokio's paused clock: [`pipeline`] (deadlines, queues, retries, turned-away calls) and
//! [`lifecycle`] (stop and start, restarts after a backoff, quarantine).

mod lifecycle;
mod pipeline;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::Host;
use crate::call::{Call, Payload};
use crate::config::HostConfig;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::metrics::PluginStats;
use crate::runtime::{
    BoxFuture, CallOutcome, Death, Description, Instance, InstanceContext, Invocation, Loaded,
};
use crate::scheduler::Slot;

/// An out-of-process-like instance: each call waits `delay` on tokio's clock, then echoes
/// its payload; it can be made to die. A mortal one is watched like a process: its
/// [`Instance::died`] resolves when it dies.
struct Fake {
    delay: Duration,
    calls: AtomicUsize,
    alive: AtomicBool,
    mortal: bool,
    death: tokio::sync::watch::Sender<bool>,
}

impl Fake {
    fn new(delay: Duration) -> Arc<Fake> {
        Fake::with(delay, false)
    }

    fn with(delay: Duration, mortal: bool) -> Arc<Fake> {
        let (death, _) = tokio::sync::watch::channel(false);
        Arc::new(Fake { delay, calls: AtomicUsize::new(0), alive: AtomicBool::new(true), mortal, death })
    }

    /// Dies, as a process that exits.
    fn die(&self) {
        self.alive.store(false, Ordering::SeqCst);
        self.death.send_replace(true);
    }
}

impl Instance for Fake {
    fn call(&self, invocation: Invocation<'_>) -> CallOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.alive.load(Ordering::SeqCst) {
            return CallOutcome::Done(Err(Error::unavailable("the fake died")));
        }
        let (delay, payload) = (self.delay, invocation.payload.clone());
        CallOutcome::Pending(Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(payload)
        }))
    }

    fn on_event(&self, _event: &crate::bus::Event) -> CallOutcome {
        CallOutcome::Done(Ok(Payload::default()))
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn died(&self) -> Option<BoxFuture<'static, Death>> {
        if !self.mortal {
            return None;
        }
        let mut death = self.death.subscribe();
        Some(Box::pin(async move {
            let _ = death.wait_for(|dead| *dead).await;
            Death::from_cause("the fake died")
        }))
    }

    fn kill(&self) {
        self.die();
    }
}

/// A loaded artifact whose instances are [`Fake`]s (each call waits `delay`), all kept so
/// a test can reach them.
struct FakeLoaded {
    description: Description,
    delay: Duration,
    mortal: bool,
    made: Mutex<Vec<Arc<Fake>>>,
}

impl FakeLoaded {
    fn new(delay: Duration, mortal: bool) -> Arc<FakeLoaded> {
        let provides = BTreeMap::from([("fake@1".to_owned(), vec!["echo".to_owned()])]);
        let description = Description { id: "fake".into(), version: "0.1.0".into(), provides };
        Arc::new(FakeLoaded { description, delay, mortal, made: Mutex::new(Vec::new()) })
    }

    /// Every instance made so far, oldest first.
    fn made(&self) -> Vec<Arc<Fake>> {
        self.made.lock().clone()
    }
}

impl Loaded for FakeLoaded {
    fn description(&self) -> &Description {
        &self.description
    }

    fn instantiate(&self, _context: InstanceContext) -> BoxFuture<'_, Result<Arc<dyn Instance>>> {
        let fake = Fake::with(self.delay, self.mortal);
        self.made.lock().push(fake.clone());
        Box::pin(async move { Ok(fake as Arc<dyn Instance>) })
    }
}

/// A manifest for plugin `id` (a process plugin, so calls are awaited) with `extra` tables.
fn manifest(id: &str, extra: &str) -> Arc<Manifest> {
    let text = format!(
        "[plugin]\nid = \"{id}\"\nversion = \"0.1.0\"\nruntime = \"process\"\nentry = \"prog\"\n\
         [provides]\n\"fake@1\" = [\"echo\"]\n{extra}"
    );
    Arc::new(Manifest::parse(text.as_bytes(), std::path::Path::new("plugin.toml"), None).expect("manifest"))
}

/// A host with `instances` of plugin `id` routed for `fake@1`.
fn host_with(id: &str, extra: &str, instances: &[Arc<Fake>]) -> Host {
    let host = Host::build(HostConfig::with_plugin_dir("/nonexistent")).unwrap();
    let manifest = manifest(id, extra);
    let stats = Arc::new(PluginStats::for_manifest(&manifest));
    let slots = instances
        .iter()
        .enumerate()
        .map(|(index, instance)| {
            let instance: Arc<dyn Instance> = instance.clone();
            Arc::new(Slot::new(instance, manifest.clone(), "plugin.toml".into(), index, stats.clone()))
        })
        .collect();
    host.inner.scheduler.insert(id, slots);
    host
}

fn echo() -> Call {
    Call::new("fake@1", "echo", Payload::bytes(&b"hi"[..]))
}
