//! Typed configuration: one TOML file plus `WHARF_*` environment overrides, validated once
//! at start. With no file, the documented defaults below run an embedded SQLite host.
//!
//! An environment variable names a key by its section and field joined with `_`:
//! `WHARF_DATABASE_URL` sets `database.url`, `WHARF_RUNTIME_DEADLINE_MS` sets
//! `runtime.deadline_ms`. The checks a loaded configuration passes are in `validate`.

mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;
use crate::runtime::Requested;
use crate::transport::amqp::topology::{ExchangeSpec, QueueSpec};
use crate::transport::amqp::{ConsumeSpec, MissingMessageId};

/// Default database: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://wharf.db";
/// Default directory scanned for `.wasm` plugins.
pub const DEFAULT_PLUGINS_DIR: &str = "plugins.d";
/// Default directory for compiled plugins.
pub const DEFAULT_CACHE_DIR: &str = ".wharf/cache";
/// Default AMQP broker.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

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
    /// Per-plugin operator settings, keyed by the plugin's manifest name.
    pub plugin: BTreeMap<String, PluginConfig>,
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created if missing) or `postgres://user@host/db` (the schema is
    /// the connection's `search_path`, e.g. `?options=-csearch_path%3Dwharf`).
    pub url: String,
}

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
}

/// `[inbox]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboxConfig {
    /// Queues to consume; empty means all. When several are listed, each gets lanes of
    /// its own (see `batches_in_flight`), so slow handlers on one queue never hold up
    /// another queue's batches.
    pub queues: Vec<String>,
    /// Messages claimed and settled together.
    pub batch_size: u32,
    /// Batches a host works on at once: while one is being settled, the next one's
    /// handlers run. `runtime.concurrency` bounds the calls across all of them. With
    /// several `queues`, they are shared out among the queues, at least one per queue
    /// (each may hold a database connection: keep the lanes under ~6 per host).
    pub batches_in_flight: usize,
    /// Longest wait between polls when nothing is due, in milliseconds. PostgreSQL hosts
    /// wake earlier: on a new message (NOTIFY) or when a scheduled retry comes due.
    pub poll_interval_ms: u64,
    /// How long a claim lasts without renewal, in ms: the worker renews it every third of
    /// this while handlers run, so it bounds how long a crashed host's messages wait.
    pub lease_ms: u64,
    /// Largest accepted payload, for `publish` and for handlers' publishes.
    pub max_payload_bytes: usize,
    /// PostgreSQL: when `runtime.deadline_ms` is at most this, a batch is claimed inside a
    /// transaction held open while its handlers run and committed with its results (one
    /// commit per batch; a crashed host's messages return at once). Longer handlers get
    /// leases settled in a later transaction. 0 always leases. SQLite always leases.
    pub hold_claims_up_to_ms: u64,
}

/// `[amqp]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    /// Broker URL.
    pub url: String,
    /// Exchanges declared on start.
    pub exchanges: Vec<ExchangeSpec>,
    /// Queues (with their bindings) declared on start.
    pub queues: Vec<QueueSpec>,
    /// Queues this host consumes.
    pub consume: Vec<ConsumeSpec>,
    /// A delivery without a `message_id`: `fail` or `body-hash`.
    pub missing_message_id: MissingMessageId,
    /// Record handled messages in the dedup ledger and skip redeliveries found there. Off,
    /// a handler that publishes or writes state still commits through the ledger, but
    /// one with no effects touches no database (at-least-once).
    pub ledger: bool,
    /// Deliveries settled and acknowledged together (`multiple=true`); also the outbox
    /// relay's batch.
    pub batch_size: usize,
    /// Relay the outbox (what handlers published to exchanges, and AMQP messages `wharf
    /// failed retry` sends back) to the broker, with publisher confirms. Unset: on when
    /// this host consumes queues (`[[amqp.consume]]`).
    pub relay: Option<bool>,
}

impl AmqpConfig {
    /// Whether this host runs the outbox relay.
    pub fn relays(&self) -> bool {
        self.relay.unwrap_or(!self.consume.is_empty())
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
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_DATABASE_URL.to_owned(),
        }
    }
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
        }
    }
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            batch_size: 64,
            batches_in_flight: 2,
            poll_interval_ms: 200,
            lease_ms: 10_000,
            max_payload_bytes: 1 << 20,
            hold_claims_up_to_ms: 10_000,
        }
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_AMQP_URL.to_owned(),
            exchanges: Vec::new(),
            queues: Vec::new(),
            consume: Vec::new(),
            missing_message_id: MissingMessageId::default(),
            ledger: true,
            batch_size: 50,
            relay: None,
        }
    }
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
    /// A value is out of range.
    #[error("invalid configuration: {key} {problem}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
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
        let env = Env::prefixed("WHARF_")
            .ignore(&["log"])
            .map(|key| key.as_str().replacen('_', ".", 1).into());
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The handler deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.runtime.deadline_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
