//! Per-call sandbox limits: linear-memory cap, wall-clock deadline, optional fuel, how
//! many calls of one plugin may run at once, and what one call's effects may be
//! ([`EffectLimits`]). The `[runtime]` settings are the host's defaults and the most a
//! plugin's manifest may ask for; a plugin's `[plugin.<name>]` settings win over its
//! manifest (effect limits are set by operators only).

use std::time::Duration;

use super::RuntimeConfig;
use super::effect_limits::{EffectLimits, EffectOverrides};

/// Limits applied to one plugin's instances and calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock budget of one `handle` call.
    pub deadline: Duration,
    /// Instruction budget of one call; `None` leaves calls unmetered.
    pub fuel: Option<u64>,
    /// Calls of the plugin running at once on this host.
    pub max_concurrency: usize,
    /// What one call may publish, write and log.
    pub effects: EffectLimits,
}

/// Limits a plugin's manifest or its operator config asks for; `None` keeps the value
/// it is applied to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requested {
    /// Linear-memory cap in MiB.
    pub memory_mib: Option<u64>,
    /// Deadline in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Fuel per call.
    pub fuel: Option<u64>,
    /// Concurrent calls.
    pub max_concurrency: Option<usize>,
    /// Effect limits (operator config only).
    pub effects: EffectOverrides,
}

impl Limits {
    /// The host's defaults, which are also the ceiling: `[runtime]`, and
    /// `inbox.max_payload_bytes` for published payloads. A plugin may use half of the
    /// host's call slots unless it asks for another share.
    pub fn from_config(config: &RuntimeConfig, max_payload_bytes: usize) -> Self {
        Self {
            memory_bytes: (config.memory_limit_mib as usize) << 20,
            deadline: Duration::from_millis(config.deadline_ms),
            fuel: config.fuel,
            max_concurrency: config.concurrency.div_ceil(2),
            effects: EffectLimits {
                max_publishes: config.max_publishes,
                max_payload_bytes,
                max_effect_bytes: config.max_effect_bytes,
                max_state_reads: config.max_state_reads,
                max_state_writes: config.max_state_writes,
                max_state_value_bytes: config.max_state_value_bytes,
                max_log_lines: config.max_log_lines,
                max_log_bytes: config.max_log_bytes,
                max_stdio_bytes: config.max_stdio_bytes,
                max_reason_bytes: config.max_reason_bytes,
                max_http_requests: config.max_http_requests,
                max_http_request_bytes: config.max_http_request_bytes,
                max_http_response_bytes: config.max_http_response_bytes,
                http_connect_timeout_ms: config.http_connect_timeout_ms,
                http_first_byte_timeout_ms: config.http_first_byte_timeout_ms,
                max_http_concurrency: config.max_http_concurrency,
            },
        }
    }

    /// These limits with a manifest's `requested` applied, each value kept within `self`
    /// taken as the ceiling (and fuel only where the engine meters it): a manifest may
    /// lower its share of the call slots, never raise it (the operator's
    /// `[plugin.<name>] max_concurrency` may). Returns what was clamped or ignored, to be
    /// logged.
    pub fn within(&self, requested: &Requested) -> (Self, Vec<String>) {
        let mut notes = Vec::new();
        let mut clamp = |what: &str, asked: u64, max: u64| {
            if asked > max {
                notes.push(format!(
                    "{what} {asked} is above the host's {max}; using {max}"
                ));
            }
            asked.clamp(1, max)
        };
        let memory_bytes = match requested.memory_mib {
            Some(mib) => {
                (clamp("memory_mib", mib, (self.memory_bytes >> 20) as u64) as usize) << 20
            }
            None => self.memory_bytes,
        };
        let deadline = match requested.deadline_ms {
            Some(ms) => {
                Duration::from_millis(clamp("deadline_ms", ms, self.deadline.as_millis() as u64))
            }
            None => self.deadline,
        };
        let max_concurrency = match requested.max_concurrency {
            Some(n) => clamp("max_concurrency", n as u64, self.max_concurrency as u64) as usize,
            None => self.max_concurrency,
        };
        let fuel = match (requested.fuel, self.fuel) {
            (Some(asked), Some(max)) => Some(clamp("fuel", asked, max)),
            (Some(_), None) => {
                notes.push(
                    "fuel is ignored: this host does not meter fuel (runtime.fuel is unset)".into(),
                );
                None
            }
            (None, fuel) => fuel,
        };
        let limits = Self {
            memory_bytes,
            deadline,
            fuel,
            max_concurrency,
            effects: self.effects,
        };
        (limits, notes)
    }

    /// These limits with the operator's `[plugin.<name>]` settings applied as they are
    /// (config validation keeps them within the host's).
    pub fn overridden_by(&self, config: &Requested) -> Self {
        Self {
            memory_bytes: config
                .memory_mib
                .map_or(self.memory_bytes, |mib| (mib as usize) << 20),
            deadline: config
                .deadline_ms
                .map_or(self.deadline, Duration::from_millis),
            fuel: config.fuel.or(self.fuel),
            max_concurrency: config.max_concurrency.unwrap_or(self.max_concurrency),
            effects: self.effects.overridden_by(&config.effects),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Limits {
        Limits::from_config(
            &RuntimeConfig {
                memory_limit_mib: 64,
                deadline_ms: 5_000,
                fuel: Some(1_000_000),
                concurrency: 16,
                ..RuntimeConfig::default()
            },
            1 << 20,
        )
    }

    #[test]
    fn requests_apply_within_the_host_ceiling() {
        let (limits, notes) = host().within(&Requested {
            memory_mib: Some(16),
            deadline_ms: Some(100_000),
            fuel: None,
            max_concurrency: Some(2),
            ..Requested::default()
        });
        assert_eq!(limits.memory_bytes, 16 << 20);
        assert_eq!(limits.deadline, Duration::from_millis(5_000));
        assert_eq!(limits.fuel, Some(1_000_000));
        assert_eq!(limits.max_concurrency, 2);
        assert_eq!(
            notes,
            ["deadline_ms 100000 is above the host's 5000; using 5000"]
        );
        assert_eq!(
            host().max_concurrency,
            8,
            "half the host's call slots by default"
        );
    }

    #[test]
    fn fuel_is_ignored_where_the_host_does_not_meter_it() {
        let unmetered = Limits {
            fuel: None,
            ..host()
        };
        let (limits, notes) = unmetered.within(&Requested {
            fuel: Some(10),
            ..Requested::default()
        });
        assert_eq!(limits.fuel, None);
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn a_manifest_may_lower_its_share_of_the_call_slots_but_not_raise_it() {
        let asking = |n| Requested {
            max_concurrency: Some(n),
            ..Requested::default()
        };
        let (limits, notes) = host().within(&asking(1000));
        assert_eq!(limits.max_concurrency, 8, "the default share, half of 16");
        assert_eq!(
            notes,
            ["max_concurrency 1000 is above the host's 8; using 8"]
        );
        assert_eq!(host().within(&asking(3)).0.max_concurrency, 3);
        let granted = limits.overridden_by(&asking(16));
        assert_eq!(granted.max_concurrency, 16, "the operator may grant more");
    }
}
