//! What one call may do through the imports: how many messages it publishes and how big,
//! how many state keys it reads and writes and how big the values are, how much its
//! effects weigh in all, how much it logs. [`EffectLimits`] are the numbers (`effect_limits`); a call's
//! [`Budget`] charges each import against them as the guest calls it, so the host never
//! buffers more than they allow, and names the limit a call went over
//! ([`LimitExceeded`]): the call ends there and is rejected, since it would go over again.

use std::fmt;
use std::sync::Arc;

use super::effect_limits::{EffectLimits, ceiling};

/// One of the limits a call can go over (the log and stdio limits drop instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`EffectLimits::max_publishes`].
    Publishes,
    /// [`EffectLimits::max_payload_bytes`].
    PayloadBytes,
    /// [`EffectLimits::max_effect_bytes`].
    EffectBytes,
    /// [`EffectLimits::max_state_reads`].
    StateReads,
    /// [`EffectLimits::max_state_writes`].
    StateWrites,
    /// [`EffectLimits::max_state_value_bytes`].
    StateValueBytes,
}

impl Limit {
    /// The setting of a `[plugin.<name>]` section and of `[runtime]`.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Publishes => "max_publishes",
            Self::PayloadBytes => "max_payload_bytes",
            Self::EffectBytes => "max_effect_bytes",
            Self::StateReads => "max_state_reads",
            Self::StateWrites => "max_state_writes",
            Self::StateValueBytes => "max_state_value_bytes",
        }
    }
}

/// A call went over one of its limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LimitExceeded {
    /// Which limit.
    pub limit: Limit,
    /// The plugin whose setting raises it.
    pub plugin: Arc<str>,
    /// What the call did, with the limit's value.
    pub what: String,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let setting = self.limit.setting();
        write!(
            f,
            "{}; raise [plugin.{}] {setting} (at most [{}] {setting}) if this is legitimate",
            self.what,
            self.plugin,
            ceiling(setting)
        )
    }
}

/// A call's use of its [`EffectLimits`] so far.
#[derive(Debug)]
pub(super) struct Budget {
    limits: EffectLimits,
    publishes: u32,
    effect_bytes: usize,
    state_reads: u32,
    state_writes: u32,
    log_lines: u32,
    log_bytes: usize,
    /// Log lines dropped, and their bytes.
    pub(super) dropped_logs: (u32, usize),
}

/// A charge the budget refused: the limit and what the call did.
pub(super) type Refused = (Limit, String);

impl Budget {
    pub(super) fn new(limits: EffectLimits) -> Self {
        Self {
            limits,
            publishes: 0,
            effect_bytes: 0,
            state_reads: 0,
            state_writes: 0,
            log_lines: 0,
            log_bytes: 0,
            dropped_logs: (0, 0),
        }
    }

    pub(super) fn limits(&self) -> &EffectLimits {
        &self.limits
    }

    /// One more published message of `bytes` in all, `payload` of them its body.
    pub(super) fn publish(&mut self, payload: usize, bytes: usize) -> Result<(), Refused> {
        let l = &self.limits;
        if self.publishes >= l.max_publishes {
            return Err((
                Limit::Publishes,
                format!(
                    "published more than {} messages in one call",
                    l.max_publishes
                ),
            ));
        }
        if payload > l.max_payload_bytes {
            return Err((
                Limit::PayloadBytes,
                format!(
                    "published a payload of {payload} bytes, over the limit of {} bytes",
                    l.max_payload_bytes
                ),
            ));
        }
        self.grow(bytes, 0)?;
        self.publishes += 1;
        Ok(())
    }

    /// One more state key read from the store.
    pub(super) fn state_read(&mut self) -> Result<(), Refused> {
        if self.state_reads >= self.limits.max_state_reads {
            return Err((
                Limit::StateReads,
                format!(
                    "read more than {} state keys in one call",
                    self.limits.max_state_reads
                ),
            ));
        }
        self.state_reads += 1;
        Ok(())
    }

    /// One more state write (`value` bytes; `None` for a delete) of a `key`-byte key,
    /// replacing a buffered write of `replaced` bytes (key and value).
    pub(super) fn state_write(
        &mut self,
        key: usize,
        value: Option<usize>,
        replaced: usize,
    ) -> Result<(), Refused> {
        let l = &self.limits;
        if self.state_writes >= l.max_state_writes {
            return Err((
                Limit::StateWrites,
                format!(
                    "wrote more than {} state keys in one call",
                    l.max_state_writes
                ),
            ));
        }
        let value = value.unwrap_or(0);
        if value > l.max_state_value_bytes {
            return Err((
                Limit::StateValueBytes,
                format!(
                    "set a state value of {value} bytes, over the limit of {} bytes",
                    l.max_state_value_bytes
                ),
            ));
        }
        self.grow(key + value, replaced)?;
        self.state_writes += 1;
        Ok(())
    }

    /// The call's buffered effects grow by `added` bytes, of which `replaced` replace
    /// bytes already buffered.
    fn grow(&mut self, added: usize, replaced: usize) -> Result<(), Refused> {
        let total = (self.effect_bytes + added).saturating_sub(replaced);
        if total > self.limits.max_effect_bytes {
            return Err((
                Limit::EffectBytes,
                format!(
                    "buffered more than {} bytes of publishes and state writes in one call",
                    self.limits.max_effect_bytes
                ),
            ));
        }
        self.effect_bytes = total;
        Ok(())
    }

    /// Whether a log line of `bytes` is within the call's log budget; one that is not is
    /// counted as dropped.
    pub(super) fn log(&mut self, bytes: usize) -> bool {
        let l = &self.limits;
        if self.log_lines >= l.max_log_lines || self.log_bytes + bytes > l.max_log_bytes {
            self.dropped_logs.0 += 1;
            self.dropped_logs.1 += bytes;
            return false;
        }
        self.log_lines += 1;
        self.log_bytes += bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> EffectLimits {
        EffectLimits {
            max_publishes: 2,
            max_payload_bytes: 100,
            max_effect_bytes: 300,
            max_state_reads: 1,
            max_state_writes: 3,
            max_state_value_bytes: 150,
            max_log_lines: 2,
            max_log_bytes: 10,
            max_stdio_bytes: 16,
            max_reason_bytes: 256,
            max_http_requests: 1,
            max_http_request_bytes: 10,
            max_http_response_bytes: 10,
            http_connect_timeout_ms: 10,
            http_first_byte_timeout_ms: 10,
            max_http_concurrency: 1,
        }
    }

    #[test]
    fn each_limit_is_charged_as_the_call_goes() {
        let mut b = Budget::new(limits());
        assert_eq!(b.publish(101, 110).unwrap_err().0, Limit::PayloadBytes);
        b.publish(100, 120).unwrap();
        b.publish(10, 20).unwrap();
        assert_eq!(b.publish(1, 1).unwrap_err().0, Limit::Publishes);

        assert_eq!(
            b.state_write(1, Some(151), 0).unwrap_err().0,
            Limit::StateValueBytes
        );
        b.state_write(10, Some(140), 0).unwrap();
        assert_eq!(
            b.state_write(10, Some(20), 0).unwrap_err().0,
            Limit::EffectBytes,
            "120 + 20 + 150 + 30 > 300"
        );
        b.state_write(10, Some(20), 150).unwrap();
        b.state_write(10, None, 30).unwrap();
        assert_eq!(b.state_write(1, None, 0).unwrap_err().0, Limit::StateWrites);

        b.state_read().unwrap();
        assert_eq!(b.state_read().unwrap_err().0, Limit::StateReads);
    }

    #[test]
    fn logs_over_the_budget_are_dropped_and_counted() {
        let mut b = Budget::new(limits());
        assert!(b.log(4));
        assert!(!b.log(7), "4 + 7 bytes > 10");
        assert!(b.log(6));
        assert!(!b.log(0), "a third line");
        assert_eq!(b.dropped_logs, (2, 7));
    }

    #[test]
    fn the_error_names_the_setting_and_its_ceiling() {
        let e = LimitExceeded {
            limit: Limit::Publishes,
            plugin: Arc::from("fanout"),
            what: "published more than 100 messages in one call".into(),
        };
        assert_eq!(
            e.to_string(),
            "published more than 100 messages in one call; raise [plugin.fanout] max_publishes (at most [runtime] max_publishes) if this is legitimate"
        );
    }
}
