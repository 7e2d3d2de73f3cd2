//! What one call may do through the imports: how many messages it publishes and how big,
//! how many state keys it reads and writes and how big the values are, how much its
//! effects weigh in all, how much it logs. [`EffectLimits`] are the numbers; a call's
//! [`Budget`] charges each import against them as the guest calls it, so the host never
//! buffers more than they allow, and names the limit a call went over
//! ([`LimitExceeded`]): the call ends there and is rejected, since it would go over again.

use std::fmt;
use std::sync::Arc;

/// What one call of a plugin may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectLimits {
    /// Messages published.
    pub max_publishes: u32,
    /// Bytes of one published payload.
    pub max_payload_bytes: usize,
    /// Bytes of everything buffered: published messages (kind, destination, headers,
    /// payload) and state writes (key, value).
    pub max_effect_bytes: usize,
    /// State keys read from the store.
    pub max_state_reads: u32,
    /// State writes and deletes.
    pub max_state_writes: u32,
    /// Bytes of one state value.
    pub max_state_value_bytes: usize,
    /// Log lines; the excess is dropped and counted.
    pub max_log_lines: u32,
    /// Bytes of log lines (message and fields); the excess is dropped and counted.
    pub max_log_bytes: usize,
    /// Bytes of stdout and of stderr kept; the excess is dropped and counted.
    pub max_stdio_bytes: usize,
    /// Bytes of the reason a call ends with; a longer one is cut with a marker.
    pub max_reason_bytes: usize,
}

/// A plugin's own values of some [`EffectLimits`] (its `[plugin.<name>]` section);
/// `None` keeps the host's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EffectOverrides {
    /// See [`EffectLimits::max_publishes`].
    pub max_publishes: Option<u32>,
    /// See [`EffectLimits::max_payload_bytes`].
    pub max_payload_bytes: Option<usize>,
    /// See [`EffectLimits::max_effect_bytes`].
    pub max_effect_bytes: Option<usize>,
    /// See [`EffectLimits::max_state_reads`].
    pub max_state_reads: Option<u32>,
    /// See [`EffectLimits::max_state_writes`].
    pub max_state_writes: Option<u32>,
    /// See [`EffectLimits::max_state_value_bytes`].
    pub max_state_value_bytes: Option<usize>,
    /// See [`EffectLimits::max_log_lines`].
    pub max_log_lines: Option<u32>,
    /// See [`EffectLimits::max_log_bytes`].
    pub max_log_bytes: Option<usize>,
    /// See [`EffectLimits::max_stdio_bytes`].
    pub max_stdio_bytes: Option<usize>,
    /// See [`EffectLimits::max_reason_bytes`].
    pub max_reason_bytes: Option<usize>,
}

impl EffectLimits {
    /// These limits with a plugin's own values applied (config validation keeps them
    /// within these).
    pub fn overridden_by(&self, o: &EffectOverrides) -> Self {
        Self {
            max_publishes: o.max_publishes.unwrap_or(self.max_publishes),
            max_payload_bytes: o.max_payload_bytes.unwrap_or(self.max_payload_bytes),
            max_effect_bytes: o.max_effect_bytes.unwrap_or(self.max_effect_bytes),
            max_state_reads: o.max_state_reads.unwrap_or(self.max_state_reads),
            max_state_writes: o.max_state_writes.unwrap_or(self.max_state_writes),
            max_state_value_bytes: o
                .max_state_value_bytes
                .unwrap_or(self.max_state_value_bytes),
            max_log_lines: o.max_log_lines.unwrap_or(self.max_log_lines),
            max_log_bytes: o.max_log_bytes.unwrap_or(self.max_log_bytes),
            max_stdio_bytes: o.max_stdio_bytes.unwrap_or(self.max_stdio_bytes),
            max_reason_bytes: o.max_reason_bytes.unwrap_or(self.max_reason_bytes),
        }
    }
}

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

    /// The section whose setting is the most a plugin may be given.
    fn ceiling(self) -> &'static str {
        match self {
            Self::PayloadBytes => "[inbox]",
            _ => "[runtime]",
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
            "{}; raise [plugin.{}] {setting} (at most {} {setting}) if this is legitimate",
            self.what,
            self.plugin,
            self.limit.ceiling()
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
