//! Per-call sandbox limits: linear-memory cap, wall-clock deadline, optional fuel.

use std::time::Duration;

use crate::config::RuntimeConfig;

/// Limits applied to every instance and call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock budget of one `handle` call.
    pub deadline: Duration,
    /// Instruction budget of one call; `None` leaves calls unmetered.
    pub fuel: Option<u64>,
}

impl Limits {
    /// The limits the operator configured.
    pub fn from_config(config: &RuntimeConfig) -> Self {
        Self {
            memory_bytes: (config.memory_limit_mib as usize) << 20,
            deadline: Duration::from_millis(config.deadline_ms),
            fuel: config.fuel,
        }
    }
}

/// Enforces [`Limits::memory_bytes`] and remembers that it did, so the trap that follows
/// can be reported as "memory limit exceeded" rather than an opaque abort.
#[derive(Debug)]
pub(super) struct MemoryLimiter {
    pub(super) max_bytes: usize,
    pub(super) exceeded: Option<usize>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = Some(desired);
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
