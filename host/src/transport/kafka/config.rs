//! `[kafka]`: the brokers, the consumer group, the topics this host consumes and the
//! outbox relay's producer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names;
use crate::setting::InvalidSetting;

/// Default Kafka bootstrap servers.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// `[kafka]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The consumer group every host of the fleet joins: the topics' partitions are
    /// shared out among them.
    pub group: String,
    /// Topics this host consumes.
    pub consume: Vec<TopicSpec>,
    /// Records handled and settled together; their offsets are committed after the
    /// settle. Also the outbox relay's batch.
    pub batch_size: usize,
    /// Record handled records in the dedup ledger and skip redelivered ones found there.
    /// Off, a handler that publishes or writes state still commits through the ledger,
    /// but one with no effects touches no database (at-least-once).
    pub ledger: bool,
    /// Relay the outbox's records for Kafka topics (what handlers published with a
    /// `topic` destination) with an idempotent producer. Unset: on when this host
    /// consumes topics.
    pub relay: Option<bool>,
    /// More librdkafka properties for every client (`security.protocol`, `sasl.*`,
    /// `ssl.*`, ...), as librdkafka's CONFIGURATION.md names them; those wharf sets
    /// itself (group, offsets, idempotence) cannot be overridden.
    pub client: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Whether this host runs the Kafka outbox relay.
    pub fn relays(&self) -> bool {
        self.relay.unwrap_or(!self.consume.is_empty())
    }

    /// Whether this host talks to Kafka at all.
    pub fn used(&self) -> bool {
        !self.consume.is_empty() || self.relays()
    }

    /// Brokers, group, batch and topics are not empty; topic names follow Kafka's rules
    /// and can name an inbox queue; no property wharf sets is overridden.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |key: &str, problem: String| Err(InvalidSetting::new(key, problem));
        if self.brokers.trim().is_empty() {
            return invalid(
                "kafka.brokers",
                "is empty; expected host:port[,host:port...]".into(),
            );
        }
        if self.group.trim().is_empty() {
            return invalid(
                "kafka.group",
                "is empty; name the fleet's consumer group".into(),
            );
        }
        if self.batch_size == 0 {
            return invalid("kafka.batch_size", "must be greater than 0".into());
        }
        if let Some(key) = self
            .client
            .keys()
            .find(|k| OWN_PROPERTIES.contains(&k.as_str()))
        {
            return invalid(
                "kafka.client",
                format!(
                    "sets {key}, which wharf sets itself (it keeps its guarantees with it); remove it"
                ),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.consume {
            let topic = &names::storable(&t.topic);
            if !seen.insert(&t.topic) {
                return invalid(
                    "kafka.consume",
                    format!("lists topic {topic} twice; one entry per topic"),
                );
            }
            let dead_letters = t.dead_letter_topic();
            let checked = names::topic(&t.topic)
                .and_then(|()| names::topic(&dead_letters))
                .and_then(|()| names::header_key(&t.id_header))
                .and_then(|()| names::header_key(&t.kind_header));
            if let Err(problem) = checked {
                return invalid("kafka.consume", format!("(topic {topic}): {problem}"));
            }
            if dead_letters == t.topic {
                return invalid(
                    "kafka.consume",
                    format!(
                        "(topic {topic}): dead_letter_topic is the topic itself; dead letters would come back"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// The librdkafka properties wharf sets itself.
const OWN_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.idempotence",
    "acks",
    "isolation.level",
];

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: DEFAULT_BROKERS.to_owned(),
            group: "wharf".to_owned(),
            consume: Vec::new(),
            batch_size: 100,
            ledger: true,
            relay: None,
            client: BTreeMap::new(),
        }
    }
}

/// `[[kafka.consume]]`: a topic this host consumes, in the fleet's group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name. Records that need another attempt, and the later records of their
    /// keys, wait in the inbox queue of the same name.
    pub topic: String,
    /// Where dead letters go besides the failed messages; `<topic>.dlq` when unset.
    /// wharf creates it (with the topic's partitions) when it is missing.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// The header carrying a record's message id (a UUID, or any text, hashed to one);
    /// without it the id comes from the topic, partition and offset.
    #[serde(default = "default_id_header")]
    pub id_header: String,
    /// The header carrying a record's kind; without it the kind is the topic name.
    #[serde(default = "default_kind_header")]
    pub kind_header: String,
    /// Refuse records without a key (to the failed messages and the dead-letter topic):
    /// for topics whose handlers rely on each key's order.
    #[serde(default)]
    pub require_key: bool,
    /// Where a group that has committed no offset yet starts: `earliest` or `latest`.
    #[serde(default)]
    pub start: Start,
}

impl TopicSpec {
    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        (self.dead_letter_topic.clone()).unwrap_or_else(|| format!("{}.dlq", self.topic))
    }
}

/// Where a new group starts reading a topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// The oldest record kept.
    #[default]
    Earliest,
    /// Records produced from now on.
    Latest,
}

/// The header a record's message id travels in, unless `id_header` says otherwise: the
/// relay writes it, consumers read it.
pub const ID_HEADER: &str = "message-id";

/// The header a record's kind travels in, unless `kind_header` says otherwise.
pub const KIND_HEADER: &str = "kind";

fn default_id_header() -> String {
    ID_HEADER.to_owned()
}

fn default_kind_header() -> String {
    KIND_HEADER.to_owned()
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};

    use super::*;

    fn read(text: &str) -> Result<KafkaConfig, String> {
        Figment::from(Serialized::defaults(KafkaConfig::default()))
            .merge(Toml::string(text))
            .extract::<KafkaConfig>()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_topic_gets_defaults_and_its_dead_letter_topic() {
        let config = read("[[consume]]\ntopic = \"orders\"\n").unwrap();
        config.validate().unwrap();
        let t = &config.consume[0];
        assert_eq!(t.dead_letter_topic(), "orders.dlq");
        assert_eq!(
            (t.id_header.as_str(), t.kind_header.as_str()),
            ("message-id", "kind")
        );
        assert_eq!((t.require_key, t.start), (false, Start::Earliest));
        assert!(config.relays() && config.used());
        assert!(!KafkaConfig::default().used());
    }

    #[test]
    fn bad_settings_name_the_key_and_the_rule() {
        let topic = "[[consume]]\ntopic = \"orders\"\n";
        for (text, words) in [
            ("brokers = \" \"\n".to_owned(), "kafka.brokers"),
            ("group = \"\"\n".to_owned(), "kafka.group"),
            ("batch_size = 0\n".to_owned(), "kafka.batch_size"),
            (
                format!("[client]\n\"enable.auto.commit\" = \"true\"\n{topic}"),
                "sets enable.auto.commit, which wharf sets itself",
            ),
            (format!("{topic}{topic}"), "lists topic orders twice"),
            (
                "[[consume]]\ntopic = \"a:b\"\n".to_owned(),
                "Kafka topic \"a:b\" contains ':'",
            ),
            ("[[consume]]\ntopic = \"..\"\n".to_owned(), "is reserved"),
            (
                "[[consume]]\ntopic = \"o\\u001b[2J\"\n".to_owned(),
                "contains '\\u{1b}'",
            ),
            (
                format!("{topic}dead_letter_topic = \"orders\"\n"),
                "is the topic itself",
            ),
            (
                format!("{topic}dead_letter_topic = \"a b\"\n"),
                "contains ' '",
            ),
            (format!("{topic}id_header = \"has space\"\n"), "header key"),
        ] {
            let error = read(&text).unwrap().validate().unwrap_err().to_string();
            assert!(error.contains(words), "{text}: {error}");
            assert!(!error.contains('\u{1b}'), "{error}");
        }
        for (text, words) in [
            (format!("{topic}require_key = \"yes\"\n"), "require_key"),
            (format!("{topic}start = \"middle\"\n"), "start"),
            (format!("{topic}partitions = 3\n"), "partitions"),
            ("brokers = 9092\n".to_owned(), "brokers"),
        ] {
            let error = read(&text).unwrap_err();
            assert!(error.contains(words), "{text}: {error}");
        }
    }
}
