//! The host's librdkafka clients and what they report: a consumer in the fleet's group
//! per topic (offsets stored and committed by wharf only, after the settle), an
//! idempotent producer (`acks=all`) for dead letters and the outbox relay. Their
//! [`Context`] forwards librdkafka's logs to tracing (bounded and escaped), tells
//! readiness whether a broker is reachable ([`KafkaLink`]), keeps each owned partition's
//! lag from the client's statistics ([`Lags`]) and logs rebalances.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;

use super::config::{KafkaConfig, Start, TopicSpec};
use crate::names;

/// How often the clients report their statistics (lag, brokers' state).
const STATISTICS_MS: &str = "5000";

/// Whether a Kafka broker is reachable, for readiness: up once a client reported a
/// broker up, down when librdkafka says all brokers are down.
#[derive(Debug, Clone, Default)]
pub struct KafkaLink(Arc<AtomicBool>);

impl KafkaLink {
    /// Whether a broker was reachable when last heard.
    pub fn connected(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        if self.0.swap(up, Ordering::Relaxed) != up {
            crate::metrics::kafka_connected(up);
        }
    }
}

/// What the rest of the host sees of its Kafka clients: the link and the lags.
#[derive(Debug, Clone, Default)]
pub struct KafkaView {
    /// Whether a broker is reachable.
    pub link: KafkaLink,
    /// The lag of the partitions this host owns.
    pub lags: Lags,
}

/// How far behind one partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    /// The partition's high watermark: the offset its next record will get.
    pub high: i64,
    /// The group's committed offset (-1: none yet).
    pub committed: i64,
    /// Records behind: from the committed offset (or the oldest kept) to the high
    /// watermark.
    pub lag: i64,
}

/// The lag of every partition this host owns, by topic and partition.
#[derive(Debug, Clone, Default)]
pub struct Lags(Arc<Mutex<BTreeMap<(String, i32), PartitionLag>>>);

impl Lags {
    /// The partitions owned when the clients last reported, with their lag.
    pub fn now(&self) -> BTreeMap<(String, i32), PartitionLag> {
        self.0.lock().expect("no panic holds the lags").clone()
    }

    /// Take the consumer's statistics of `topic`: partitions it fetches now are owned,
    /// the others not (their gauge goes to 0: the host owning them reports them).
    fn update(&self, topic: &str, statistics: &Statistics) {
        let mut lags = self.0.lock().expect("no panic holds the lags");
        let mut owned = BTreeSet::new();
        let partitions = statistics.topics.get(topic).map(|t| &t.partitions);
        for p in partitions.into_iter().flat_map(|p| p.values()) {
            if p.partition < 0 || p.fetch_state == "none" || p.hi_offset < 0 {
                continue;
            }
            let from = if p.committed_offset >= 0 {
                p.committed_offset
            } else {
                p.lo_offset.max(0)
            };
            let lag = PartitionLag {
                high: p.hi_offset,
                committed: p.committed_offset,
                lag: (p.hi_offset - from).max(0),
            };
            crate::metrics::kafka_lag(topic, p.partition, lag.lag);
            lags.insert((topic.to_owned(), p.partition), lag);
            owned.insert(p.partition);
        }
        lags.retain(|(t, p), _| {
            let keep = t != topic || owned.contains(p);
            if !keep {
                crate::metrics::kafka_lag(t, *p, 0);
            }
            keep
        });
    }
}

/// What a client reports to: the host's link and lags, and the topic it consumes.
pub struct Context {
    link: KafkaLink,
    lags: Lags,
    /// The consumed topic (`None`: a producer).
    topic: Option<String>,
}

impl Context {
    /// A consumer's context (with `topic`) or a producer's.
    pub fn new(link: &KafkaLink, lags: &Lags, topic: Option<&str>) -> Self {
        Self {
            link: link.clone(),
            lags: lags.clone(),
            topic: topic.map(str::to_owned),
        }
    }
}

/// The longest librdkafka log line or error reason passed on, in characters.
const MAX_LOG_CHARS: usize = 500;

fn bounded(text: &str) -> String {
    names::storable(&text.chars().take(MAX_LOG_CHARS).collect::<String>())
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        let (facility, line) = (bounded(facility), bounded(line));
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility, "librdkafka: {line}"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility, "librdkafka: {line}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility, "librdkafka: {line}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {line}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        self.link.set(up);
        if let Some(topic) = &self.topic {
            self.lags.update(topic, &statistics);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.link.set(false);
        }
        tracing::warn!(
            "Kafka: {}: {}; librdkafka keeps reconnecting",
            bounded(&error.to_string()),
            bounded(reason)
        );
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| {
            list.elements()
                .iter()
                .map(|e| e.partition())
                .collect::<Vec<_>>()
        };
        match rebalance {
            Rebalance::Assign(list) => {
                self.link.set(true);
                tracing::info!(topic = self.topic, partitions = ?partitions(list), "Kafka partitions assigned to this host")
            }
            Rebalance::Revoke(list) => tracing::info!(
                topic = self.topic,
                partitions = ?partitions(list),
                "Kafka partitions revoked: what this host has not settled is read again by their next owner, and the ledger skips what it settled"
            ),
            Rebalance::Error(e) => {
                tracing::warn!(topic = self.topic, "Kafka rebalance failed: {e}")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!(
                topic = self.topic,
                partitions = offsets.count(),
                "Kafka offset commit failed ({e}): those records are read again and the ledger skips what was settled"
            );
        }
    }
}

/// The librdkafka properties every client of `config` starts from.
fn base(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in &config.client {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", &config.brokers)
        .set("statistics.interval.ms", STATISTICS_MS)
        .set("client.id", client_id());
    client
}

/// `wharf-<host>-<pid>`, in the characters every broker accepts in a client id.
fn client_id() -> String {
    let host = crate::dispatch::report::host_id();
    let safe = host
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || c == '.' {
            true => c,
            false => '-',
        });
    format!("wharf-{}", safe.collect::<String>())
}

/// A consumer of `spec.topic` in the fleet's group: wharf stores and commits its offsets
/// itself, after each settle (not subscribed yet).
pub fn consumer(
    config: &KafkaConfig,
    spec: &TopicSpec,
    link: &KafkaLink,
    lags: &Lags,
) -> KafkaResult<StreamConsumer<Context>> {
    let start = match spec.start {
        Start::Earliest => "earliest",
        Start::Latest => "latest",
    };
    base(config)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", start)
        .set("enable.partition.eof", "false")
        .create_with_context(Context::new(link, lags, Some(&spec.topic)))
}

/// A client of the fleet's group that only asks the brokers for its committed offsets
/// and the partitions' watermarks: it never joins the group.
pub fn lag_reader(config: &KafkaConfig) -> KafkaResult<BaseConsumer> {
    base(config)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .create()
}

/// An idempotent producer (`acks=all`): a record sent again after a lost answer is
/// written once per partition, in order.
pub fn producer(
    config: &KafkaConfig,
    link: &KafkaLink,
    lags: &Lags,
) -> KafkaResult<FutureProducer<Context>> {
    base(config)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create_with_context(Context::new(link, lags, None))
}
