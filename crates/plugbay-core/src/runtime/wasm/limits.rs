//! Limits of a wasm plugin: its memory (`limits.memory_mb`), and how traps and limit hits
//! become plugbay errors a caller can act on.

use wasmtime::{ResourceLimiter, Trap};

use crate::error::{Code, Error};
use crate::manifest::Limits;
use crate::runtime::wasm::engine::MAX_MEMORY_BYTES;

/// Memory a wasm plugin gets when its manifest sets no `limits.memory_mb`.
pub(crate) const DEFAULT_MEMORY_MB: u64 = 256;
/// Largest artifact the wasm runtime compiles; checked before compiling.
pub(crate) const MAX_ARTIFACT_BYTES: usize = 64 << 20;
/// Tables may hold this many elements (function pointers of the guest).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The memory budget of one store; a refused grow traps with [`MemoryLimitHit`].
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
}

impl MemoryLimiter {
    /// The limiter for a plugin's `[limits]`.
    pub(crate) fn new(limits: &Limits) -> MemoryLimiter {
        let mb = limits.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
        let bytes = mb.saturating_mul(1 << 20).min(MAX_MEMORY_BYTES);
        MemoryLimiter { max_bytes: usize::try_from(bytes).unwrap_or(usize::MAX) }
    }
}

/// The error a refused memory grow traps with; found again in the call's error chain.
#[derive(Debug)]
pub(crate) struct MemoryLimitHit {
    desired: usize,
    max_bytes: usize,
}

impl std::fmt::Display for MemoryLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory grow to {} bytes refused: the limit is {} MiB (limits.memory_mb)",
            self.desired,
            self.max_bytes >> 20
        )
    }
}

impl std::error::Error for MemoryLimitHit {}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            return Err(wasmtime::Error::new(MemoryLimitHit { desired, max_bytes: self.max_bytes }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Turns a wasmtime error from running guest code (`doing`: "call upper", "init") into a
/// plugbay error: the deadline (`deadline_exceeded`), memory or stack exhaustion
/// (`resource_exhausted`), any other trap (`internal`, with the trap code).
pub(crate) fn guest_failure(error: &wasmtime::Error, doing: &str) -> Error {
    if let Some(hit) = error.downcast_ref::<MemoryLimitHit>() {
        return Error::new(Code::ResourceExhausted, format!("{doing}: {hit}"));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Error::new(
            Code::DeadlineExceeded,
            format!("{doing}: interrupted at its deadline (the guest was still running)"),
        ),
        Some(Trap::StackOverflow) => Error::new(
            Code::ResourceExhausted,
            format!("{doing}: wasm stack overflow (deep recursion; the stack is bounded)"),
        ),
        Some(trap) => Error::internal(format!("{doing}: {trap}")),
        None => Error::internal(format!("{doing}: {error:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_comes_from_the_manifest_or_the_default() {
        let unset = MemoryLimiter::new(&Limits::default());
        assert_eq!(unset.max_bytes, (DEFAULT_MEMORY_MB << 20) as usize);
        let mut set = MemoryLimiter::new(&Limits { memory_mb: Some(2), ..Limits::default() });
        assert!(set.memory_growing(0, 2 << 20, None).unwrap());
        let refused = set.memory_growing(0, (2 << 20) + 65536, None).unwrap_err();
        assert_eq!(guest_failure(&refused, "call x").code(), Code::ResourceExhausted);
    }

    #[test]
    fn traps_map_to_codes() {
        let code = |trap: Trap| guest_failure(&wasmtime::Error::new(trap), "call x").code();
        assert_eq!(code(Trap::Interrupt), Code::DeadlineExceeded);
        assert_eq!(code(Trap::StackOverflow), Code::ResourceExhausted);
        assert_eq!(code(Trap::UnreachableCodeReached), Code::Internal);
    }
}
