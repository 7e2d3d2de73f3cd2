//! `[runtime]`: the sandbox's limits and the host's call budget.

use serde::{Deserialize, Serialize};

use crate::setting::InvalidSetting;

/// The least `max_reason_bytes` may be: room for a reason and the marker of a cut one.
pub const MIN_REASON_BYTES: usize = 256;
/// The most `max_reason_bytes` may be: a reason travels in a dead-letter copy's AMQP
/// header, which must fit the broker's frame with the message's other headers.
pub const MAX_REASON_BYTES: usize = 64 << 10;

/// `[runtime]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Linear-memory cap of one plugin instance, in MiB.
    pub memory_limit_mib: u64,
    /// Wall-clock deadline of one `handle` call, in milliseconds.
    pub deadline_ms: u64,
    /// Optional fuel (instruction budget) per call; unset means unmetered.
    pub fuel: Option<u64>,
    /// Handler calls running at once on this host. One plugin uses at most half of them
    /// unless its manifest or `[plugin.<name>] max_concurrency` sets its share.
    pub concurrency: usize,
    /// Instance slots the pooling allocator reserves (>= concurrency).
    pub instance_pool: u32,
    /// Circuit breaker: a plugin whose calls trap or ask for a retry this many times in a
    /// row is not fed for `breaker_cool_down_ms` (its messages wait, attempts are not
    /// used up). 0 turns breakers off.
    pub breaker_failures: u32,
    /// How long an open breaker waits before a trial call, in milliseconds.
    pub breaker_cool_down_ms: u64,
    /// Handlers whose state reads went stale by the time their batch settles, and
    /// plugins whose messages contend for state keys, run inside the settle with the
    /// batch's state keys locked: at most this many runs per batch (0: none; stale
    /// results wait for another round)...
    pub settle_runs: u32,
    /// ...and none starts once the settle has run handlers for this many milliseconds
    /// (other hosts' settles wait for the keys meanwhile).
    pub settle_runs_ms: u64,
    /// Messages one call may publish.
    pub max_publishes: u32,
    /// Bytes one call may buffer in all: published messages (kind, destination, headers,
    /// payload; each payload at most `inbox.max_payload_bytes`) and state writes.
    pub max_effect_bytes: usize,
    /// State keys one call may read from the store.
    pub max_state_reads: u32,
    /// State writes and deletes of one call.
    pub max_state_writes: u32,
    /// Bytes of one state value.
    pub max_state_value_bytes: usize,
    /// Log lines one call may write; the rest are dropped and counted in one line.
    pub max_log_lines: u32,
    /// Bytes of log lines (message and fields) of one call; beyond them lines are dropped.
    pub max_log_bytes: usize,
    /// Bytes of one call's stdout, and of its stderr, kept and logged; the rest is dropped.
    pub max_stdio_bytes: usize,
    /// Bytes of the reason a call ends with (a retry's or a reject's, a trap's text), as
    /// kept with the message's attempts and failed message and logged; longer ones are cut
    /// with a marker.
    pub max_reason_bytes: usize,
    /// Outgoing HTTP requests of one call (only to the hosts a plugin is granted).
    pub max_http_requests: u32,
    /// Bytes of one outgoing request's body.
    pub max_http_request_bytes: usize,
    /// Bytes of one response's body a call may read.
    pub max_http_response_bytes: usize,
    /// Milliseconds to connect to a host (TCP and TLS), within the call's deadline.
    pub http_connect_timeout_ms: u64,
    /// Milliseconds from a request sent to its response's first byte, and between two of
    /// its bytes, within the call's deadline.
    pub http_first_byte_timeout_ms: u64,
    /// Requests of one plugin in flight at once on this host.
    pub max_http_concurrency: u32,
    /// State keys one plugin may hold in all (a quota checked at settle).
    pub max_state_keys: u64,
    /// Bytes (keys and values) one plugin's state may hold in all (checked at settle).
    pub max_state_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            memory_limit_mib: 64,
            deadline_ms: 5_000,
            fuel: None,
            concurrency: 16,
            instance_pool: 128,
            breaker_failures: 20,
            breaker_cool_down_ms: 10_000,
            settle_runs: 256,
            settle_runs_ms: 200,
            max_publishes: 100,
            max_effect_bytes: 4 << 20,
            max_state_reads: 1_000,
            max_state_writes: 1_000,
            max_state_value_bytes: 256 << 10,
            max_log_lines: 100,
            max_log_bytes: 64 << 10,
            max_stdio_bytes: 16 << 10,
            max_reason_bytes: 4 << 10,
            max_http_requests: 10,
            max_http_request_bytes: 1 << 20,
            max_http_response_bytes: 4 << 20,
            http_connect_timeout_ms: 2_000,
            http_first_byte_timeout_ms: 5_000,
            max_http_concurrency: 16,
            max_state_keys: 1_000_000,
            max_state_bytes: 1 << 30,
        }
    }
}

impl RuntimeConfig {
    /// Ranges that types cannot express.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |key: &str, problem: &str| Err(InvalidSetting::new(key, problem));
        if self.memory_limit_mib == 0 || self.memory_limit_mib > 4096 {
            return invalid("runtime.memory_limit_mib", "must be between 1 and 4096");
        }
        if self.deadline_ms == 0 {
            return invalid("runtime.deadline_ms", "must be greater than 0");
        }
        if self.concurrency == 0 {
            return invalid("runtime.concurrency", "must be greater than 0");
        }
        if (self.instance_pool as usize) < self.concurrency {
            return invalid(
                "runtime.instance_pool",
                "must be at least runtime.concurrency",
            );
        }
        let zero = [
            ("runtime.max_publishes", self.max_publishes as usize),
            ("runtime.max_effect_bytes", self.max_effect_bytes),
            ("runtime.max_state_reads", self.max_state_reads as usize),
            ("runtime.max_state_writes", self.max_state_writes as usize),
            ("runtime.max_state_value_bytes", self.max_state_value_bytes),
            ("runtime.max_state_keys", self.max_state_keys as usize),
            ("runtime.max_state_bytes", self.max_state_bytes as usize),
            (
                "runtime.http_connect_timeout_ms",
                self.http_connect_timeout_ms as usize,
            ),
            (
                "runtime.http_first_byte_timeout_ms",
                self.http_first_byte_timeout_ms as usize,
            ),
            (
                "runtime.max_http_concurrency",
                self.max_http_concurrency as usize,
            ),
        ]
        .into_iter()
        .find(|(_, value)| *value == 0);
        if let Some((key, _)) = zero {
            return invalid(key, "must be greater than 0");
        }
        if !(MIN_REASON_BYTES..=MAX_REASON_BYTES).contains(&self.max_reason_bytes) {
            return invalid(
                "runtime.max_reason_bytes",
                &format!("must be between {MIN_REASON_BYTES} and {MAX_REASON_BYTES}"),
            );
        }
        Ok(())
    }
}
