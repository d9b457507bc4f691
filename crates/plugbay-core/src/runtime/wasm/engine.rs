//! The one wasmtime [`Engine`] a host shares across its wasm plugins, the epoch ticker that
//! drives call deadlines, and compilation off the async threads with bounded concurrency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::{Code, Error, Result};

/// How often the shared ticker advances the engine's epoch. A call past its deadline traps
/// within one tick of it.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Most wasm stack a call may use; deeper recursion traps (`resource_exhausted`).
pub(crate) const MAX_WASM_STACK: usize = 512 << 10;
/// The native stack each async call runs on (must exceed [`MAX_WASM_STACK`] with room for
/// the host functions the guest calls).
const ASYNC_STACK: usize = 2 << 20;
/// Compilations running at once; the rest wait their turn.
const MAX_CONCURRENT_COMPILES: usize = 1;
/// Instances the pooling allocator keeps slots for (across every wasm plugin of a host).
const POOLED_INSTANCES: u32 = 256;
/// Largest linear memory a pooled slot holds; `limits.memory_mb` lowers it per plugin.
pub(crate) const MAX_MEMORY_BYTES: u64 = 4 << 30;
/// Linear memory a freed pooled slot keeps mapped and zeroes with `memset`, instead of
/// returning it to the kernel (`madvise`, page faults on reuse, a TLB shootdown that
/// interrupts the other core): the start of memory, where a small plugin's stack, data and
/// heap are. Costs at most this much resident memory per slot ever used.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;
/// The same for tables.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// A host's wasm engine: shared by every wasm plugin, created on the first wasm load.
pub(crate) struct WasmEngine {
    engine: Engine,
    compiles: tokio::sync::Semaphore,
    /// When the ticker last advanced the epoch, in nanoseconds since `origin`, so a
    /// deadline is counted in the ticks that actually come (see [`WasmEngine::ticks_until`]).
    last_tick: AtomicU64,
    origin: Instant,
}

impl WasmEngine {
    /// Builds the engine (the pooling allocator when `pooling` and the machine allows it)
    /// and starts its epoch ticker, which stops when the engine is dropped.
    ///
    /// # Errors
    /// `internal` when wasmtime cannot be configured on this machine.
    pub(crate) fn start(pooling: bool) -> Result<Arc<WasmEngine>> {
        let pooled = match pooling {
            false => None,
            true => Engine::new(&config(true))
                .inspect_err(|refused| {
                    tracing::warn!(
                        "wasm: pooling allocator unavailable ({refused}); using on-demand allocation"
                    )
                })
                .ok(),
        };
        let (engine, pooling) = match pooled {
            Some(engine) => (engine, true),
            None => {
                let engine = Engine::new(&config(false))
                    .map_err(|error| Error::internal(format!("cannot configure wasmtime: {error}")))?;
                (engine, false)
            }
        };
        tracing::debug!(pooling, "wasm: engine started");
        let shared = Arc::new(WasmEngine {
            engine,
            compiles: tokio::sync::Semaphore::new(MAX_CONCURRENT_COMPILES),
            last_tick: AtomicU64::new(0),
            origin: Instant::now(),
        });
        start_ticker(Arc::downgrade(&shared));
        Ok(shared)
    }

    /// The wasmtime engine.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Advances the epoch once per whole [`EPOCH_TICK`] since the engine started (more than
    /// once when the ticker was held off the CPU, so deadlines catch up at once), then
    /// records when the last of those ticks was due. In that order: a reader that sees the
    /// new time also sees the new epoch, so its deadline can only come late, never early.
    fn tick(&self, ticks: &mut u64) {
        let due = (self.origin.elapsed().as_nanos() / EPOCH_TICK.as_nanos()) as u64;
        while *ticks < due {
            self.engine.increment_epoch();
            *ticks += 1;
        }
        self.last_tick.store(*ticks * EPOCH_TICK.as_nanos() as u64, Ordering::Release);
    }

    /// Epoch ticks from now until `deadline`: the first tick at or after the deadline, so
    /// the trap comes within one tick after it, never before.
    pub(crate) fn ticks_until(&self, deadline: Instant) -> u64 {
        let last_tick = self.origin + Duration::from_nanos(self.last_tick.load(Ordering::Acquire));
        ticks_after(last_tick, deadline)
    }

    /// Compiles a component on tokio's blocking pool, at most
    /// [`MAX_CONCURRENT_COMPILES`] at a time, so async threads keep serving calls.
    ///
    /// # Errors
    /// `failed_precondition` with wasmtime's reason (offset included) for bytes that are not
    /// a valid component.
    pub(crate) async fn compile(&self, bytes: Arc<Vec<u8>>) -> Result<Component> {
        let _permit =
            self.compiles.acquire().await.map_err(|_| Error::unavailable("the wasm engine is closing"))?;
        let engine = self.engine.clone();
        let started = Instant::now();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &*bytes))
            .await
            .map_err(|error| Error::internal(format!("the compile task failed: {error}")))?
            .map_err(|error| {
                Error::new(Code::FailedPrecondition, format!("not a valid WebAssembly component: {error:#}"))
            })?;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "wasm: component compiled");
        Ok(component)
    }
}

/// The engine settings every plugbay wasm engine uses. Cached compiled code records these
/// (through wasmtime's compatibility hash), so changing one invalidates the cache.
fn config(pooling: bool) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(ASYNC_STACK)
        // Copy-on-write memory images cost a memfd per module at load and an mmap per new
        // instance; plugbay's guests carry small data segments, which copying into each
        // new instance costs less (a cached load 20 us less, per-call unchanged).
        .memory_init_cow(false);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOLED_INSTANCES)
            .total_core_instances(POOLED_INSTANCES * 2)
            .total_memories(POOLED_INSTANCES * 2)
            .total_tables(POOLED_INSTANCES * 2)
            .total_stacks(POOLED_INSTANCES)
            .max_memory_size(MAX_MEMORY_BYTES as usize)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// One thread per engine advances its epoch every [`EPOCH_TICK`]; it ends once the engine
/// is gone.
fn start_ticker(engine: Weak<WasmEngine>) {
    let spawned = std::thread::Builder::new().name("plugbay-wasm-epoch".into()).spawn(move || {
        let mut ticks = 0;
        loop {
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(engine) => engine.tick(&mut ticks),
                None => return,
            }
        }
    });
    if let Err(error) = spawned {
        tracing::error!("wasm: cannot start the epoch ticker ({error}); calls cannot be interrupted");
    }
}

/// How many ticks after the one due at `last_tick` the first tick due at or after
/// `deadline` is (at least one). A tick comes when it is due or a little later (the ticker
/// sleeps), which only makes the trap later.
fn ticks_after(last_tick: Instant, deadline: Instant) -> u64 {
    let remaining = deadline.saturating_duration_since(last_tick);
    (remaining.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_count_the_ticks_from_the_last_one() {
        let tick = Instant::now();
        // A deadline already passed, or before the next tick: the next tick.
        assert_eq!(ticks_after(tick, tick), 1);
        assert_eq!(ticks_after(tick + EPOCH_TICK, tick), 1);
        assert_eq!(ticks_after(tick, tick + EPOCH_TICK / 2), 1);
        // Exactly on a tick: that tick; just after it: the one after.
        assert_eq!(ticks_after(tick, tick + EPOCH_TICK * 5), 5);
        assert_eq!(ticks_after(tick, tick + EPOCH_TICK * 5 + Duration::from_nanos(1)), 6);
    }
}
