//! `[amqp]`: the broker, the topology declared on it, the queues this host consumes and
//! the outbox relay.

use serde::{Deserialize, Serialize};

use super::topology::{ExchangeSpec, QueueSpec};
use crate::envelope::KEY_HEADER;
use crate::names;
use crate::setting::InvalidSetting;

/// Default AMQP broker.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

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

    /// The URL parses, batches and consumers are not empty.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if let Err(e) = self.url.parse::<lapin::uri::AMQPUri>() {
            return Err(InvalidSetting::new(
                "amqp.url",
                format!("is not an AMQP URL ({e}); expected amqp://user:password@host:5672/vhost"),
            ));
        }
        if self.batch_size == 0 {
            return Err(InvalidSetting::new(
                "amqp.batch_size",
                "must be greater than 0",
            ));
        }
        for c in &self.consume {
            if c.consumers == 0 || c.prefetch == 0 {
                return Err(InvalidSetting::new(
                    "amqp.consume",
                    format!(
                        "(queue {}): consumers and prefetch must be greater than 0",
                        names::storable(&c.queue)
                    ),
                ));
            }
            if let Err(invalid) = names::header_key(&c.key_header) {
                return Err(InvalidSetting::new(
                    "amqp.consume",
                    format!(
                        "(queue {}): key_header: {invalid}",
                        names::storable(&c.queue)
                    ),
                ));
            }
            self.check_ordered(c)?;
        }
        Ok(())
    }
}

impl AmqpConfig {
    /// An ordered consumer needs one consumer at a time on its queue, and an inbox queue
    /// of its name for the keys it moves there.
    fn check_ordered(&self, c: &ConsumeSpec) -> Result<(), InvalidSetting> {
        if !c.ordered {
            return Ok(());
        }
        let queue = &names::storable(&c.queue);
        let refused = |why: String| Err(InvalidSetting::new("amqp.consume", why));
        if c.to_inbox.is_some() {
            return refused(format!(
                "(queue {queue}): ordered and to_inbox exclude each other; a bridge hands the order to the inbox (declare the queue with single_active_consumer = true to keep the delivery order into it)"
            ));
        }
        if let Err(invalid) = names::queue(&c.queue) {
            return refused(format!(
                "(queue {queue}): ordered moves failing keys into the inbox queue of the same name, which is not a valid inbox queue name: {invalid}"
            ));
        }
        let declared = self.queues.iter().find(|q| q.name == c.queue);
        if declared.is_some_and(|q| !q.single_active_consumer) {
            return refused(format!(
                "(queue {queue}): ordered needs one consumer at a time across the fleet; set single_active_consumer = true on [[amqp.queues]] {queue}"
            ));
        }
        Ok(())
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

/// `[[amqp.consume]]`: a queue this host consumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumeSpec {
    /// Queue name.
    pub queue: String,
    /// Unacknowledged deliveries the broker sends ahead per consumer (`basic.qos`).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Consumers (each on its own channel) this host runs on the queue.
    #[serde(default = "one")]
    pub consumers: usize,
    /// Where a message's kind comes from: `type` (the `type` property, else the routing
    /// key) or `routing-key`.
    #[serde(default)]
    pub kind_from: KindFrom,
    /// Bridge: instead of handling the deliveries here, move them into this inbox queue
    /// (deduplicated on message id, acked once the insert committed); the inbox worker of
    /// any host handles them from there.
    #[serde(default)]
    pub to_inbox: Option<String>,
    /// The header that carries a delivery's ordering key.
    #[serde(default = "default_key_header")]
    pub key_header: String,
    /// Keep the order of keys for the ordered plugins (see "Ordering" in the README): the
    /// queue has one active consumer in the fleet (`single_active_consumer`), a batch runs
    /// a key's messages in delivery order, and a key whose message an ordered plugin does
    /// not handle at once moves, with its later messages, into the inbox queue of the
    /// same name, where they run in order.
    #[serde(default)]
    pub ordered: bool,
}

/// Source of a delivery's kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KindFrom {
    /// The `type` property; the routing key when it is absent.
    #[default]
    Type,
    /// The routing key.
    RoutingKey,
}

/// What to do with a delivery that has no `message_id` property.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingMessageId {
    /// Move it to the failed messages with the reason "missing message_id".
    #[default]
    Fail,
    /// Derive a deterministic id from the body's sha256 (equal bodies are duplicates).
    BodyHash,
}

fn default_prefetch() -> u16 {
    256
}

fn default_key_header() -> String {
    KEY_HEADER.to_owned()
}

fn one() -> usize {
    1
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};

    use super::*;

    #[test]
    fn a_bad_amqp_url_names_the_key() {
        let config = AmqpConfig {
            url: "http://broker".into(),
            ..AmqpConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("amqp.url"), "{error}");
    }

    #[test]
    fn an_ordered_consumer_needs_one_consumer_at_a_time_and_an_inbox_queue_name() {
        let read = |text: &str| -> Result<AmqpConfig, String> {
            Figment::from(Serialized::defaults(AmqpConfig::default()))
                .merge(Toml::string(text))
                .extract::<AmqpConfig>()
                .map_err(|e| e.to_string())
        };
        let queue =
            |sac: bool| format!("[[queues]]\nname = \"orders\"\nsingle_active_consumer = {sac}\n");
        let consume = "[[consume]]\nqueue = \"orders\"\nordered = true\n";
        let fine = read(&format!("{}{consume}", queue(true))).unwrap();
        assert!(fine.consume[0].ordered);
        fine.validate().unwrap();
        // A queue wharf does not declare: the operator's to declare with one consumer.
        read(consume).unwrap().validate().unwrap();
        for (text, words) in [
            (
                format!("{}{consume}", queue(false)),
                "set single_active_consumer = true on [[amqp.queues]] orders",
            ),
            (
                format!("{consume}to_inbox = \"elsewhere\"\n"),
                "ordered and to_inbox exclude each other",
            ),
            (
                "[[consume]]\nqueue = \"or ders\\u001b\"\nordered = true\n".to_owned(),
                "not a valid inbox queue name",
            ),
        ] {
            let error = read(&text).unwrap().validate().unwrap_err().to_string();
            assert!(
                error.contains("amqp.consume") && error.contains(words),
                "{text}: {error}"
            );
            assert!(!error.contains('\u{1b}'), "{error}");
        }
        let error = read("[[consume]]\nqueue = \"orders\"\nordered = \"yes\"\n").unwrap_err();
        assert!(
            error.contains("ordered") && error.contains("bool"),
            "{error}"
        );
        let error = read(&queue(true).replace("true", "1")).unwrap_err();
        assert!(error.contains("single_active_consumer"), "{error}");
    }

    #[test]
    fn a_key_header_defaults_to_partition_key_and_must_be_a_header_name() {
        let read = |text: &str| -> AmqpConfig {
            Figment::from(Serialized::defaults(AmqpConfig::default()))
                .merge(Toml::string(text))
                .extract()
                .unwrap()
        };
        let config = read("[[consume]]\nqueue = \"orders\"\n");
        assert_eq!(config.consume[0].key_header, "partition_key");
        for bad in ["", "has space", "nul\\u0000"] {
            let toml = format!("[[consume]]\nqueue = \"orders\"\nkey_header = \"{bad}\"\n");
            let config = read(&toml);
            let error = config.validate().unwrap_err().to_string();
            assert!(
                error.contains("amqp.consume") && error.contains("key_header"),
                "{bad:?}: {error}"
            );
        }
    }
}
