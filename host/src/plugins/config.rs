//! `[plugins]` (where plugins come from) and `[plugin.<name>]` (an operator's settings for
//! one plugin: its config values, retry policy and limits within the runtime's).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;
use crate::runtime::{Requested, RuntimeConfig};
use crate::setting::InvalidSetting;

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
}

impl PluginConfig {
    /// The limits this section sets.
    pub fn limits(&self) -> Requested {
        Requested {
            memory_mib: self.memory_limit_mib,
            deadline_ms: self.deadline_ms,
            fuel: self.fuel,
            max_concurrency: self.max_concurrency,
        }
    }

    /// The section of plugin `name`: its limits within the runtime's `r`, its retry
    /// policy in range.
    pub fn validate(&self, name: &str, r: &RuntimeConfig) -> Result<(), InvalidSetting> {
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
