//! The shutdown signal every part of the daemon watches: set once on SIGTERM or SIGINT;
//! from then on listeners stop accepting, new requests get `unavailable`, and streams end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// A cheap-to-clone handle on the daemon's one shutdown flag.
#[derive(Clone)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
    /// The flag again, read on every request without the channel's lock.
    draining: Arc<AtomicBool>,
}

impl Shutdown {
    /// A flag not yet set.
    pub fn new() -> Shutdown {
        Shutdown { sender: watch::Sender::new(false), draining: Arc::new(AtomicBool::new(false)) }
    }

    /// Sets the flag (once; later calls do nothing).
    pub fn trigger(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.sender.send_replace(true);
    }

    /// Whether the daemon is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once the flag is set (at once if it already is).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        let mut receiver = self.sender.subscribe();
        async move {
            // An error means the sender is gone, which also ends the daemon.
            let _ = receiver.wait_for(|draining| *draining).await;
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT, naming it.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_triggered_and_late_waiters_at_once() {
        let shutdown = Shutdown::new();
        let early = tokio::spawn(shutdown.wait());
        assert!(!shutdown.is_draining());
        shutdown.trigger();
        early.await.unwrap();
        assert!(shutdown.is_draining());
        shutdown.wait().await;
    }
}
