//! `[plugins]` (where plugins come from) and `[plugin.<name>]` (an operator's settings for
//! one plugin: its config values, retry policy and limits within the runtime's).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::envelope::DeadLetterKey;
use crate::retry::RetryPolicy;
use crate::runtime::outbound::MAX_GRANTS;
use crate::runtime::outbound::grants::{Grant, InvalidGrant};
use crate::runtime::{
    EffectOverrides, Limits, MIN_REASON_BYTES, Requested, RuntimeConfig, ceiling,
};
use crate::setting::InvalidSetting;
use crate::store::StateQuota;

/// Default directory scanned for `.wasm` plugins.
pub const DEFAULT_PLUGINS_DIR: &str = "plugins.d";
/// Default directory for compiled plugins.
pub const DEFAULT_CACHE_DIR: &str = ".wharf/cache";

/// `[plugins]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directory whose `*.wasm` files are loaded at start.
    pub dir: PathBuf,
    /// Directory for compiled components, so a restart does not recompile.
    pub cache_dir: PathBuf,
    /// While running, load new and changed files of `dir` and unload removed ones.
    pub watch: bool,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: DEFAULT_PLUGINS_DIR.into(),
            cache_dir: DEFAULT_CACHE_DIR.into(),
            watch: true,
        }
    }
}

/// `[plugin.<name>]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// Values the plugin reads through the `config` import.
    pub config: BTreeMap<String, String>,
    /// Retry policy that overrides the plugin's manifest.
    pub retry: Option<RetryPolicy>,
    /// Linear-memory cap, in MiB (at most `runtime.memory_limit_mib`); overrides the
    /// manifest.
    pub memory_limit_mib: Option<u64>,
    /// Deadline of one call, in ms (at most `runtime.deadline_ms`); overrides the manifest.
    pub deadline_ms: Option<u64>,
    /// Fuel per call (needs `runtime.fuel`, at most it); overrides the manifest.
    pub fuel: Option<u64>,
    /// Calls of this plugin at once on a host (at most `runtime.concurrency`; default
    /// half of it); overrides the manifest.
    pub max_concurrency: Option<usize>,
    /// Messages one call may publish (at most `runtime.max_publishes`).
    pub max_publishes: Option<u32>,
    /// Bytes of one published payload (at most `inbox.max_payload_bytes`).
    pub max_payload_bytes: Option<usize>,
    /// Bytes one call may buffer in publishes and state writes (at most
    /// `runtime.max_effect_bytes`).
    pub max_effect_bytes: Option<usize>,
    /// State keys one call may read (at most `runtime.max_state_reads`).
    pub max_state_reads: Option<u32>,
    /// State writes of one call (at most `runtime.max_state_writes`).
    pub max_state_writes: Option<u32>,
    /// Bytes of one state value (at most `runtime.max_state_value_bytes`).
    pub max_state_value_bytes: Option<usize>,
    /// Log lines of one call (at most `runtime.max_log_lines`).
    pub max_log_lines: Option<u32>,
    /// Bytes of log lines of one call (at most `runtime.max_log_bytes`).
    pub max_log_bytes: Option<usize>,
    /// Bytes of stdout and of stderr kept per call (at most `runtime.max_stdio_bytes`).
    pub max_stdio_bytes: Option<usize>,
    /// Bytes of a call's retry, reject or trap reason kept (at most
    /// `runtime.max_reason_bytes`).
    pub max_reason_bytes: Option<usize>,
    /// Outgoing HTTP requests of one call (at most `runtime.max_http_requests`).
    pub max_http_requests: Option<u32>,
    /// Bytes of one request's body (at most `runtime.max_http_request_bytes`).
    pub max_http_request_bytes: Option<usize>,
    /// Bytes of one response's body (at most `runtime.max_http_response_bytes`).
    pub max_http_response_bytes: Option<usize>,
    /// Milliseconds to connect (at most `runtime.http_connect_timeout_ms`).
    pub http_connect_timeout_ms: Option<u64>,
    /// Milliseconds to a response's first byte (at most
    /// `runtime.http_first_byte_timeout_ms`).
    pub http_first_byte_timeout_ms: Option<u64>,
    /// Requests in flight at once on a host (at most `runtime.max_http_concurrency`).
    pub max_http_concurrency: Option<u32>,
    /// The hosts this plugin may call over HTTP, as `scheme://host[:port]` patterns
    /// (see [`crate::runtime::outbound::grants`]); none by default.
    pub allowed_hosts: Vec<String>,
    /// Handle the messages of one ordering key one at a time, in the order they were
    /// published (overrides the manifest).
    pub ordered: Option<bool>,
    /// What a dead letter of this plugin does to an ordered key: `hold` its later
    /// messages until an operator retries or skips it (default), or `skip` to go on.
    pub dead_letter_key: DeadLetterKey,
    /// State keys the plugin may hold in all (at most `runtime.max_state_keys`).
    pub max_state_keys: Option<u64>,
    /// Bytes of keys and values the plugin's state may hold in all (at most
    /// `runtime.max_state_bytes`).
    pub max_state_bytes: Option<u64>,
}

impl PluginConfig {
    /// This plugin's state quota: its own values, else the host's.
    pub fn state_quota(&self, host: StateQuota) -> StateQuota {
        StateQuota {
            keys: self.max_state_keys.unwrap_or(host.keys),
            bytes: self.max_state_bytes.unwrap_or(host.bytes),
        }
    }

    /// The hosts this plugin may call.
    pub fn grants(&self) -> Result<Vec<Grant>, InvalidGrant> {
        self.allowed_hosts.iter().map(|g| Grant::parse(g)).collect()
    }

    /// The limits this section sets.
    pub fn limits(&self) -> Requested {
        Requested {
            memory_mib: self.memory_limit_mib,
            deadline_ms: self.deadline_ms,
            fuel: self.fuel,
            max_concurrency: self.max_concurrency,
            effects: EffectOverrides {
                max_publishes: self.max_publishes,
                max_payload_bytes: self.max_payload_bytes,
                max_effect_bytes: self.max_effect_bytes,
                max_state_reads: self.max_state_reads,
                max_state_writes: self.max_state_writes,
                max_state_value_bytes: self.max_state_value_bytes,
                max_log_lines: self.max_log_lines,
                max_log_bytes: self.max_log_bytes,
                max_stdio_bytes: self.max_stdio_bytes,
                max_reason_bytes: self.max_reason_bytes,
                max_http_requests: self.max_http_requests,
                max_http_request_bytes: self.max_http_request_bytes,
                max_http_response_bytes: self.max_http_response_bytes,
                http_connect_timeout_ms: self.http_connect_timeout_ms,
                http_first_byte_timeout_ms: self.http_first_byte_timeout_ms,
                max_http_concurrency: self.max_http_concurrency,
            },
        }
    }

    /// The first effect limit or state quota set above its ceiling: the setting, its
    /// value, the ceiling's setting and value.
    fn limit_above(
        &self,
        r: &RuntimeConfig,
        max_payload_bytes: usize,
    ) -> Option<(&'static str, u64, String, u64)> {
        let ceilings = Limits::from_config(r, max_payload_bytes).effects.settings();
        let quotas = [
            ("max_state_keys", self.max_state_keys, r.max_state_keys),
            ("max_state_bytes", self.max_state_bytes, r.max_state_bytes),
        ];
        (self.limits().effects.settings().into_iter())
            .zip(ceilings)
            .map(|((key, value), (_, max))| (key, value, max))
            .chain(quotas)
            .find_map(|(key, value, max)| {
                let ceiling = format!("{}.{key}", ceiling(key));
                value.filter(|v| *v > max).map(|v| (key, v, ceiling, max))
            })
    }

    /// The section of plugin `name`: its limits within the runtime's `r` (published
    /// payloads within `max_payload_bytes`), its retry policy in range.
    pub fn validate(
        &self,
        name: &str,
        r: &RuntimeConfig,
        max_payload_bytes: usize,
    ) -> Result<(), InvalidSetting> {
        let outside =
            |value: Option<u64>, min: u64, max: u64| value.is_some_and(|v| v < min || v > max);
        let problem = if outside(self.memory_limit_mib, 1, r.memory_limit_mib) {
            format!(
                "memory_limit_mib must be between 1 and runtime.memory_limit_mib ({}); raise the runtime's to give this plugin more",
                r.memory_limit_mib
            )
        } else if outside(self.deadline_ms, 1, r.deadline_ms) {
            format!(
                "deadline_ms must be between 1 and runtime.deadline_ms ({}); raise the runtime's to give this plugin longer",
                r.deadline_ms
            )
        } else if self.fuel.is_some() && r.fuel.is_none() {
            "fuel needs fuel metering: set runtime.fuel too".to_owned()
        } else if outside(self.fuel, 1, r.fuel.unwrap_or(u64::MAX)) {
            "fuel must be between 1 and runtime.fuel".to_owned()
        } else if outside(
            self.max_concurrency.map(|n| n as u64),
            1,
            r.concurrency as u64,
        ) {
            format!(
                "max_concurrency must be between 1 and runtime.concurrency ({})",
                r.concurrency
            )
        } else if outside(
            self.max_reason_bytes.map(|n| n as u64),
            MIN_REASON_BYTES as u64,
            u64::MAX,
        ) {
            format!("max_reason_bytes must be at least {MIN_REASON_BYTES}")
        } else if let Some((key, _)) = [
            ("http_connect_timeout_ms", self.http_connect_timeout_ms),
            (
                "http_first_byte_timeout_ms",
                self.http_first_byte_timeout_ms,
            ),
            (
                "max_http_concurrency",
                self.max_http_concurrency.map(u64::from),
            ),
        ]
        .into_iter()
        .find(|(_, v)| *v == Some(0))
        {
            format!("{key} must be greater than 0")
        } else if self.allowed_hosts.len() > MAX_GRANTS {
            format!(
                "allowed_hosts has {} entries, more than {MAX_GRANTS}; use patterns (https://*.example.com)",
                self.allowed_hosts.len()
            )
        } else if let Err(e) = self.grants() {
            e.to_string()
        } else if let Some((key, value, ceiling, max)) = self.limit_above(r, max_payload_bytes) {
            format!(
                "{key} {value} is above {ceiling} ({max}); raise {ceiling} to give this plugin more"
            )
        } else if let Some(Err(e)) = self.retry.as_ref().map(|p| p.validate("retry")) {
            e.to_string()
        } else {
            return Ok(());
        };
        Err(InvalidSetting::new(
            "plugin",
            format!("(plugin.{name}): {problem}"),
        ))
    }
}
