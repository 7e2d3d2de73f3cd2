//! Typed configuration: one TOML file plus `WHARF_*` environment overrides, validated once
//! at start. With no file, the defaults of each section run an embedded SQLite host.
//!
//! An environment variable names a key by its section and field joined with `_`:
//! `WHARF_DATABASE_URL` sets `database.url`, `WHARF_RUNTIME_DEADLINE_MS` sets
//! `runtime.deadline_ms`.
//!
//! Each section is defined and checked by the module it configures (`store::DatabaseConfig`,
//! `runtime::RuntimeConfig`, `transport::inbox::InboxConfig`, ...); this module only
//! assembles them, loads them and runs their checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::dispatch::DispatchConfig;
use crate::http::config::HttpConfig;
use crate::plugins::{PluginConfig, PluginsConfig};
use crate::retry::RetryPolicy;
use crate::runtime::outbound::grants::InvalidGrant;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::setting::InvalidSetting;
use crate::store::{DatabaseConfig, SettleBudget, StateQuota};
use crate::trace::config::TracingConfig;
use crate::transport::amqp::AmqpConfig;
use crate::transport::inbox::InboxConfig;
use crate::transport::kafka::KafkaConfig;

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where messages, ledger, outbox, state and failures live.
    pub database: DatabaseConfig,
    /// Where plugins come from.
    pub plugins: PluginsConfig,
    /// Sandbox limits and worker concurrency.
    pub runtime: RuntimeConfig,
    /// How the inbox is consumed.
    pub inbox: InboxConfig,
    /// Default retry policy, used when neither the plugin's manifest nor its
    /// `[plugin.<name>]` section sets one.
    pub retry: RetryPolicy,
    /// The AMQP broker (used by the AMQP transport).
    pub amqp: AmqpConfig,
    /// The Kafka brokers (used by the Kafka transport).
    pub kafka: KafkaConfig,
    /// The admin HTTP API.
    pub http: HttpConfig,
    /// Trace export.
    pub tracing: TracingConfig,
    /// Per-plugin operator settings, keyed by the plugin's manifest name.
    pub plugin: BTreeMap<String, PluginConfig>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file named on the command line does not exist.
    #[error("config file {0} not found")]
    Missing(PathBuf),
    /// A value has the wrong type or an unknown key was given.
    #[error("invalid configuration: {0}")]
    Parse(Box<figment::Error>),
    /// A value is out of range, or settings disagree. (Not a `source`: the message says
    /// it all, and an error chain would print it twice.)
    #[error("invalid configuration: {0}")]
    Invalid(InvalidSetting),
}

impl From<InvalidSetting> for ConfigError {
    fn from(e: InvalidSetting) -> Self {
        Self::Invalid(e)
    }
}

impl Config {
    /// Defaults, then the TOML file (if any), then `WHARF_*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Missing(file.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // WHARF_LOG and WHARF_LOG_FORMAT set up logging, not the config.
        let env = Env::prefixed("WHARF_")
            .ignore(&["log", "log_format"])
            .map(|key| key.as_str().replacen('_', ".", 1).into());
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Every section's checks, and the plugins' limits within the runtime's.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.database.validate()?;
        self.runtime.validate()?;
        self.inbox.validate()?;
        for (name, plugin) in &self.plugin {
            plugin.validate(name, &self.runtime, self.inbox.max_payload_bytes)?;
        }
        self.amqp.validate()?;
        let unserved = (self.amqp.consume.iter())
            .filter(|c| c.ordered && !self.inbox.queues.is_empty())
            .find(|c| !self.inbox.queues.contains(&c.queue));
        if let Some(c) = unserved {
            return Err(InvalidSetting::new(
                "inbox.queues",
                format!(
                    "does not list {0}, where the ordered consumer of AMQP queue {0} moves the keys it cannot handle at once; add it (or leave inbox.queues empty: every queue)",
                    c.queue
                ),
            ));
        }
        self.kafka.validate()?;
        let unserved = (self.kafka.consume.iter())
            .find(|t| !self.inbox.queues.is_empty() && !self.inbox.queues.contains(&t.topic));
        if let Some(t) = unserved {
            return Err(InvalidSetting::new(
                "inbox.queues",
                format!(
                    "does not list {0}, where the consumer of Kafka topic {0} moves the records that need another attempt; add it (or leave inbox.queues empty: every queue)",
                    t.topic
                ),
            ));
        }
        self.http.validate()?;
        self.tracing.validate()?;
        self.retry.validate("retry")
    }

    /// The handler deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.runtime.deadline_ms)
    }

    /// The sandbox of this configuration: `[runtime]` limits, compiled plugins cached in
    /// `plugins.cache_dir`, each `[plugin.<name>]`'s limits over its manifest's.
    pub fn sandbox(&self) -> anyhow::Result<Runtime> {
        let overrides = self
            .plugin
            .iter()
            .map(|(name, plugin)| (name.clone(), plugin.limits()))
            .collect();
        let grants = (self.plugin.iter())
            .map(|(name, plugin)| Ok((name.clone(), plugin.grants()?.into())))
            .collect::<Result<_, InvalidGrant>>()?;
        Runtime::new(
            &self.runtime,
            self.inbox.max_payload_bytes,
            self.plugins.cache_dir.clone(),
            overrides,
            grants,
        )
    }

    /// What dispatch needs: the call budget, breakers, the payload cap, retry policies
    /// and the plugins' own settings.
    pub fn dispatch(&self) -> DispatchConfig {
        DispatchConfig {
            concurrency: self.runtime.concurrency,
            breaker_failures: self.runtime.breaker_failures,
            breaker_cool_down: Duration::from_millis(self.runtime.breaker_cool_down_ms),
            settle_runs: SettleBudget {
                runs: self.runtime.settle_runs,
                within: Duration::from_millis(self.runtime.settle_runs_ms),
            },
            max_payload_bytes: self.inbox.max_payload_bytes,
            state_quota: StateQuota {
                keys: self.runtime.max_state_keys,
                bytes: self.runtime.max_state_bytes,
            },
            retry: self.retry.clone(),
            plugin: self.plugin.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordered_consumer_s_queue_must_be_an_inbox_queue_the_host_serves() {
        let mut config = Config::default();
        config.amqp.consume = vec![crate::transport::amqp::ConsumeSpec {
            queue: "orders".into(),
            prefetch: 10,
            consumers: 1,
            kind_from: Default::default(),
            to_inbox: None,
            key_header: "partition_key".into(),
            ordered: true,
        }];
        config.validate().unwrap();
        config.inbox.queues = vec!["payments".into()];
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("inbox.queues") && error.contains("does not list orders"),
            "{error}"
        );
        config.inbox.queues.push("orders".into());
        config.validate().unwrap();
    }

    #[test]
    fn the_rabbitmq_example_is_a_valid_config() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rabbitmq.toml");
        let config = Config::load(Some(&file)).unwrap();
        let amqp = &config.amqp;
        assert_eq!(amqp.consume[0].queue, "orders_queue");
        assert_eq!(amqp.consume[0].consumers, 2);
        assert!(amqp.relays());
        let orders = amqp
            .queues
            .iter()
            .find(|q| q.name == "orders_queue")
            .unwrap();
        assert_eq!(orders.bindings[0].exchange, "orders_exchange");
        assert_eq!(amqp.exchanges.len(), 3);
    }
}
