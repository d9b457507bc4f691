//! The HTTP API's open connections, each with one slot holding the waker of the task that
//! serves it: a coarse clock rings a slot when its header read timeout is due, shutdown
//! rings them all. Neither costs a lock or a clock read per request.
//!
//! hyper arms the header read timeout afresh for every request on a keep-alive connection
//! (a new sleep each time it starts reading a request head, dropped once the head is in).
//! With tokio's timer that was a clock read, a timer-wheel insertion under the driver's lock
//! and a removal per request, the largest single cost of the call route at 64 busy
//! connections. Here a sleep compares a shared coarse clock with its due time and, while
//! the connection waits, lowers its connection's alarm: atomics only. The guarantee is the
//! same, with the tick as tolerance: a connection waiting for a request head longer than the
//! timeout is closed, never before the timeout and at most two ticks after it.
//!
//! hyper-util's `GracefulShutdown` polls a shared watch channel on every poll of every
//! connection, which takes the channel's mutex each time; here a connection checks a flag
//! and keeps its waker in its slot, and shutdown wakes every slot once.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use hyper::rt::{Sleep, Timer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant as TokioInstant;

/// No alarm set.
const UNSET: u64 = u64::MAX;

/// The open connections of one listener, their coarse clock and their shutdown; the
/// clock ticks while a connection is open.
#[derive(Debug)]
pub struct Connections {
    shared: Arc<Shared>,
    ticker: AbortHandle,
}

#[derive(Debug)]
struct Shared {
    /// What the coarse times count from (tokio's clock, so that tests can pause it).
    base: TokioInstant,
    /// The tick, in milliseconds (at least 1).
    tick_ms: u64,
    /// Milliseconds since `base`, read from the real clock at the last tick (or connection).
    now_ms: AtomicU64,
    /// One slot per open connection; slots of closed connections are swept at each tick.
    slots: Mutex<Vec<Weak<Slot>>>,
    /// Wakes the ticker, parked while no connection is open.
    opened: Notify,
    /// [`Connection`]s not yet dropped.
    open: AtomicUsize,
    /// Set by [`Connections::shut_down`].
    shutting_down: AtomicBool,
    /// Notified when the last connection ends.
    all_closed: Notify,
}

/// One connection's slot: the earliest due time its sleeps wait for, and the waker of the
/// task that serves it.
#[derive(Debug)]
struct Slot {
    /// Milliseconds since the clock's base; [`UNSET`] when no sleep waits.
    due_ms: AtomicU64,
    waker: AtomicWaker,
}

impl Connections {
    /// Connections whose shortest timeout is `timeout`: the clock ticks every sixteenth
    /// of it (1 ms to 1 s), so a timeout fires at most 2/16 of itself late. Starts the
    /// ticker task on the current tokio runtime; it stops when this is dropped.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(timeout: Duration) -> Connections {
        let tick = (timeout / 16).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let shared = Arc::new(Shared {
            base: TokioInstant::now(),
            tick_ms: tick.as_millis() as u64,
            now_ms: AtomicU64::new(0),
            slots: Mutex::new(Vec::new()),
            opened: Notify::new(),
            open: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            all_closed: Notify::new(),
        });
        let ticker = tokio::spawn(tick_while_open(shared.clone(), tick)).abort_handle();
        Connections { shared, ticker }
    }

    /// A new connection: give its [`Connection::timer`] to its hyper builder, then run it
    /// with [`Connection::serve`].
    pub fn open(&self) -> Connection {
        let slot = Arc::new(Slot { due_ms: AtomicU64::new(UNSET), waker: AtomicWaker::new() });
        // The clock may have been parked: bring it up to date before hyper reads it.
        self.shared.refresh();
        self.shared.open.fetch_add(1, Ordering::SeqCst);
        let mut slots = self.shared.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.push(Arc::downgrade(&slot));
        let first = slots.len() == 1;
        drop(slots);
        if first {
            self.shared.opened.notify_one();
        }
        Connection { shared: self.shared.clone(), slot }
    }

    /// Starts a graceful shutdown of every connection (idle ones close, busy ones after
    /// their response), then resolves once all of them have ended.
    pub async fn shut_down(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let slots = self.shared.slots.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for slot in slots.iter().filter_map(Weak::upgrade) {
            slot.waker.wake();
        }
        loop {
            let closed = self.shared.all_closed.notified();
            let mut closed = pin!(closed);
            // Registered before the count is read, so the last close is not missed.
            closed.as_mut().enable();
            if self.shared.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            closed.await;
        }
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Acquire)
    }

    /// Reads the real clock into `now_ms`; returns it.
    fn refresh(&self) -> u64 {
        let now = self.base.elapsed().as_millis() as u64;
        self.now_ms.fetch_max(now, Ordering::AcqRel).max(now)
    }

    /// Milliseconds since `base` at `instant`, rounded up (never early).
    fn ms_at(&self, instant: Instant) -> u64 {
        let since = TokioInstant::from_std(instant).saturating_duration_since(self.base);
        since.as_millis() as u64 + u64::from(!since.subsec_nanos().is_multiple_of(1_000_000))
    }

    /// One tick: the clock advances, due alarms ring, slots of closed connections go;
    /// returns whether a connection is still open.
    fn tick(&self) -> bool {
        let now = self.refresh();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|slot| {
            let Some(slot) = slot.upgrade() else { return false };
            if slot.due_ms.load(Ordering::Acquire) <= now {
                // Taken, not only read: a sleep still waiting sets it again when polled.
                slot.due_ms.store(UNSET, Ordering::Release);
                slot.waker.wake();
            }
            true
        });
        !slots.is_empty()
    }
}

/// Advances the clock every `tick` while a connection is open; parked otherwise.
async fn tick_while_open(shared: Arc<Shared>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !shared.tick() {
            let opened = shared.opened.notified();
            let mut opened = pin!(opened);
            // Registered before the re-check, so a connection opened in between is seen.
            opened.as_mut().enable();
            if !shared.tick() {
                opened.await;
            }
            interval.reset();
        }
    }
}

/// One open connection of [`Connections`].
#[derive(Debug)]
pub struct Connection {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
}

impl Connection {
    /// The timer for this connection's header read timeout (hyper's HTTP/1 `timer`).
    pub fn timer(&self) -> ConnectionTimer {
        ConnectionTimer { shared: self.shared.clone(), slot: self.slot.clone() }
    }

    /// Runs `connection` to its end, starting its graceful shutdown when
    /// [`Connections::shut_down`] is called.
    pub async fn serve<C: GracefulConnection>(self, connection: C) -> Result<(), C::Error> {
        let mut connection = pin!(connection);
        let mut shutting_down = false;
        std::future::poll_fn(|cx| {
            if !shutting_down {
                // Kept before the flag is read, so a shutdown after this read wakes us.
                self.slot.waker.register(cx.waker());
                if self.shared.shutting_down.load(Ordering::SeqCst) {
                    connection.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
            }
            connection.as_mut().poll(cx)
        })
        .await
    }
}

/// Counted as open from [`Connections::open`] until dropped (when [`Connection::serve`]
/// ends).
impl Drop for Connection {
    fn drop(&mut self) {
        if self.shared.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.all_closed.notify_waiters();
        }
    }
}

/// The [`Timer`] of one connection: its sleeps share the connection's slot, so they must
/// be polled by the task that serves the connection (as hyper polls them).
#[derive(Debug, Clone)]
pub struct ConnectionTimer {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
}

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(CoarseSleep { timer: self.clone(), due_ms: self.shared.ms_at(deadline) })
    }

    /// The end of the current tick: never before the real time, so a deadline counted from
    /// it is never early.
    fn now(&self) -> Instant {
        let now = self.shared.base + Duration::from_millis(self.shared.now_ms() + self.shared.tick_ms);
        now.into_std()
    }
}

/// A sleep of a [`ConnectionTimer`]: ready once the coarse clock reaches its due time.
#[derive(Debug)]
struct CoarseSleep {
    timer: ConnectionTimer,
    due_ms: u64,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let ConnectionTimer { shared, slot } = &self.timer;
        if shared.now_ms() >= self.due_ms {
            return Poll::Ready(());
        }
        slot.waker.register(cx.waker());
        // The earliest of the connection's sleeps; a later one is set again when the
        // alarm rings and wakes the task.
        if slot.due_ms.load(Ordering::Acquire) > self.due_ms {
            slot.due_ms.fetch_min(self.due_ms, Ordering::AcqRel);
        }
        Poll::Pending
    }
}

impl Sleep for CoarseSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct WakeCount(AtomicU64);

    impl std::task::Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl WakeCount {
        fn get(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }

        /// Polls `sleep` once with a waker that counts its wakes here.
        fn poll(self: &Arc<Self>, sleep: &mut Pin<Box<dyn Sleep>>) -> Poll<()> {
            let waker = std::task::Waker::from(self.clone());
            sleep.as_mut().poll(&mut Context::from_waker(&waker))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_rings_at_its_deadline_and_not_before() {
        let connections = Connections::new(Duration::from_millis(1600));
        let timer = connections.open().timer();
        let wakes = Arc::new(WakeCount::default());
        let started = timer.now();
        let mut sleep = timer.sleep(Duration::from_millis(1600));
        assert!(wakes.poll(&mut sleep).is_pending());
        // The tick is 100 ms: not rung a tick before the timeout.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(wakes.get(), 0);
        assert!(wakes.poll(&mut sleep).is_pending());
        // Rung within two ticks after it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(wakes.get(), 1);
        assert!(wakes.poll(&mut sleep).is_ready());
        assert!(timer.now() >= started + Duration::from_millis(1600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_sleep_costs_one_early_wake_and_the_live_one_still_rings() {
        let connections = Connections::new(Duration::from_millis(1600));
        let timer = connections.open().timer();
        let wakes = Arc::new(WakeCount::default());
        let mut first = timer.sleep(Duration::from_millis(1600));
        assert!(wakes.poll(&mut first).is_pending());
        drop(first);
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut second = timer.sleep(Duration::from_millis(1600));
        assert!(wakes.poll(&mut second).is_pending());
        // The first one's due time rings once; polled again, the second one waits on.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(wakes.get(), 1);
        assert!(wakes.poll(&mut second).is_pending());
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(wakes.get(), 2);
        assert!(wakes.poll(&mut second).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn closed_connections_are_swept_and_the_ticker_parks() {
        let connections = Connections::new(Duration::from_millis(160));
        drop(connections.open());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(connections.shared.slots.lock().unwrap().is_empty());
        // A connection opened after the ticker parked gets a clock that is up to date.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let timer = connections.open().timer();
        assert!(timer.now() >= (connections.shared.base + Duration::from_secs(60)).into_std());
    }
}
