//! The one wasmtime [`Engine`] a host shares across its wasm plugins, the epoch ticker that
//! drives call deadlines, and compilation off the async threads with bounded concurrency.

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

/// A host's wasm engine: shared by every wasm plugin, created on the first wasm load.
pub(crate) struct WasmEngine {
    engine: Engine,
    compiles: tokio::sync::Semaphore,
}

impl WasmEngine {
    /// Builds the engine (pooling allocator when the machine allows it) and starts its
    /// epoch ticker, which stops when the engine is dropped.
    ///
    /// # Errors
    /// `internal` when wasmtime cannot be configured on this machine.
    pub(crate) fn start() -> Result<Arc<WasmEngine>> {
        let (engine, pooling) = match Engine::new(&config(true)) {
            Ok(engine) => (engine, true),
            Err(pooled) => {
                tracing::warn!("wasm: pooling allocator unavailable ({pooled}); using on-demand allocation");
                let engine = Engine::new(&config(false))
                    .map_err(|error| Error::internal(format!("cannot configure wasmtime: {error}")))?;
                (engine, false)
            }
        };
        tracing::debug!(pooling, "wasm: engine started");
        let shared =
            Arc::new(WasmEngine { engine, compiles: tokio::sync::Semaphore::new(MAX_CONCURRENT_COMPILES) });
        start_ticker(Arc::downgrade(&shared));
        Ok(shared)
    }

    /// The wasmtime engine.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
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
        .async_stack_size(ASYNC_STACK);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOLED_INSTANCES)
            .total_core_instances(POOLED_INSTANCES * 2)
            .total_memories(POOLED_INSTANCES * 2)
            .total_tables(POOLED_INSTANCES * 2)
            .total_stacks(POOLED_INSTANCES)
            .max_memory_size(MAX_MEMORY_BYTES as usize);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// One thread per engine advances its epoch every [`EPOCH_TICK`]; it ends once the engine
/// is gone.
fn start_ticker(engine: Weak<WasmEngine>) {
    let spawned = std::thread::Builder::new().name("plugbay-wasm-epoch".into()).spawn(move || {
        loop {
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(engine) => engine.engine.increment_epoch(),
                None => return,
            }
        }
    });
    if let Err(error) = spawned {
        tracing::error!("wasm: cannot start the epoch ticker ({error}); calls cannot be interrupted");
    }
}

/// Epoch ticks from now until `deadline`, rounded so the trap comes at the deadline or
/// within one tick after it, never before.
pub(crate) fn ticks_until(deadline: Instant) -> u64 {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let tick = EPOCH_TICK.as_nanos();
    (remaining.as_nanos().div_ceil(tick) as u64).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_whole_ticks() {
        assert_eq!(ticks_until(Instant::now()), 1);
        let ticks = ticks_until(Instant::now() + EPOCH_TICK * 5);
        assert!((5..=6).contains(&ticks), "{ticks}");
    }
}
