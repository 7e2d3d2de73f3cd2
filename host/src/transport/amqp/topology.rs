//! The broker topology wharf declares on start (exchanges, durable queues, bindings, TTL,
//! max-length, dead-letter exchange) as the operator configured it, and the queues wharf
//! itself needs next to a consumed queue: per-delay retry queues that dead-letter back to
//! it, and its dead-letter queue. Declaring is idempotent; a declaration that conflicts
//! with what the broker already has fails with the broker's reason.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use serde::{Deserialize, Serialize};

/// `[[amqp.exchanges]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSpec {
    /// Exchange name.
    pub name: String,
    /// `direct` (default), `topic`, `fanout` or `headers`.
    #[serde(default)]
    pub kind: ExchangeType,
    /// Survives a broker restart (default true).
    #[serde(default = "yes")]
    pub durable: bool,
}

/// The routing of an exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    /// Exact routing key.
    #[default]
    Direct,
    /// Routing key patterns (`*`, `#`).
    Topic,
    /// Every bound queue.
    Fanout,
    /// Header values.
    Headers,
}

/// `[[amqp.queues]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// Queue name.
    pub name: String,
    /// Survives a broker restart (default true).
    #[serde(default = "yes")]
    pub durable: bool,
    /// `classic` (default) or `quorum`.
    #[serde(default)]
    pub queue_type: QueueType,
    /// Messages older than this are dropped or dead-lettered (`x-message-ttl`).
    #[serde(default)]
    pub message_ttl_ms: Option<u32>,
    /// Most messages the queue holds (`x-max-length`).
    #[serde(default)]
    pub max_length: Option<u32>,
    /// What a full queue does (`x-overflow`): `drop-head` (the broker's default),
    /// `reject-publish` or `reject-publish-dlx`.
    #[serde(default)]
    pub overflow: Option<Overflow>,
    /// Where the broker dead-letters expired, dropped or rejected messages
    /// (`x-dead-letter-exchange`).
    #[serde(default)]
    pub dead_letter_exchange: Option<String>,
    /// Routing key for those (`x-dead-letter-routing-key`).
    #[serde(default)]
    pub dead_letter_routing_key: Option<String>,
    /// One consumer at a time across the fleet (`x-single-active-consumer`): the broker
    /// delivers to one, and to the next once it is gone. What an ordered consumer needs.
    #[serde(default)]
    pub single_active_consumer: bool,
    /// Bindings of this queue to exchanges.
    #[serde(default)]
    pub bindings: Vec<BindingSpec>,
}

/// Classic or quorum queue (`x-queue-type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Classic queue.
    #[default]
    Classic,
    /// Replicated quorum queue.
    Quorum,
}

/// `x-overflow`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Drop the oldest message.
    DropHead,
    /// Refuse new messages (publishers with confirms get a nack).
    RejectPublish,
    /// Refuse new messages and dead-letter them.
    RejectPublishDlx,
}

/// One binding of a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingSpec {
    /// Source exchange.
    pub exchange: String,
    /// Binding key (a pattern for topic exchanges; ignored by fanout and headers).
    #[serde(default)]
    pub routing_key: String,
    /// Header values to match, for headers exchanges (with `x-match` = `all` or `any`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

/// A failed declaration, naming what was being declared.
#[derive(Debug, thiserror::Error)]
#[error("cannot declare {what}: {source}")]
pub struct DeclareError {
    what: String,
    source: lapin::Error,
}

impl DeclareError {
    /// Did the declaration fail because the broker or the connection went away (rather
    /// than because the broker refused it)?
    pub fn is_transient(&self) -> bool {
        super::is_transient(&self.source)
    }
}

/// Declare the exchanges, then the queues with their bindings.
pub async fn declare(
    channel: &Channel,
    exchanges: &[ExchangeSpec],
    queues: &[QueueSpec],
) -> Result<(), DeclareError> {
    for e in exchanges {
        let kind = match e.kind {
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Headers => ExchangeKind::Headers,
        };
        let options = ExchangeDeclareOptions {
            durable: e.durable,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(e.name.as_str().into(), kind, options, FieldTable::default())
            .await
            .map_err(|source| DeclareError {
                what: format!("exchange {}", e.name),
                source,
            })?;
    }
    for q in queues {
        declare_queue(channel, &q.name, q.durable, queue_arguments(q)).await?;
        for b in &q.bindings {
            let mut arguments = FieldTable::default();
            for (k, v) in &b.headers {
                arguments.insert(k.as_str().into(), text(v));
            }
            channel
                .queue_bind(
                    q.name.as_str().into(),
                    b.exchange.as_str().into(),
                    b.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    arguments,
                )
                .await
                .map_err(|source| DeclareError {
                    what: format!(
                        "binding of queue {} to exchange {} ({:?})",
                        q.name, b.exchange, b.routing_key
                    ),
                    source,
                })?;
        }
    }
    Ok(())
}

fn queue_arguments(q: &QueueSpec) -> FieldTable {
    let mut a = FieldTable::default();
    if q.queue_type == QueueType::Quorum {
        a.insert("x-queue-type".into(), text("quorum"));
    }
    if q.single_active_consumer {
        a.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    if let Some(ttl) = q.message_ttl_ms {
        a.insert("x-message-ttl".into(), AMQPValue::LongUInt(ttl));
    }
    if let Some(max) = q.max_length {
        a.insert("x-max-length".into(), AMQPValue::LongUInt(max));
    }
    if let Some(overflow) = q.overflow {
        let value = match overflow {
            Overflow::DropHead => "drop-head",
            Overflow::RejectPublish => "reject-publish",
            Overflow::RejectPublishDlx => "reject-publish-dlx",
        };
        a.insert("x-overflow".into(), text(value));
    }
    if let Some(dlx) = &q.dead_letter_exchange {
        a.insert("x-dead-letter-exchange".into(), text(dlx));
    }
    if let Some(key) = &q.dead_letter_routing_key {
        a.insert("x-dead-letter-routing-key".into(), text(key));
    }
    a
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    durable: bool,
    arguments: FieldTable,
) -> Result<(), DeclareError> {
    let options = QueueDeclareOptions {
        durable,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), options, arguments)
        .await
        .map(drop)
        .map_err(|source| DeclareError {
            what: format!("queue {name}"),
            source,
        })
}

/// A string field value.
pub(crate) fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The delay a retry of a message from `queue` waits in its delay queue: `delay` rounded
/// up to two significant digits (in ms, at least 1), so the number of delay queues stays
/// small whatever delays handlers ask for.
pub fn retry_delay(delay: Duration) -> Duration {
    let ms = (delay.as_millis() as u64).max(1);
    let mut unit = 1;
    while ms / unit >= 100 {
        unit *= 10;
    }
    Duration::from_millis(ms.div_ceil(unit) * unit)
}

/// Name of the queue where retries of `queue` wait `delay` (see [`retry_delay`]).
pub fn retry_queue(queue: &str, delay: Duration) -> String {
    format!("{queue}.retry.{}", retry_delay(delay).as_millis())
}

/// Name of the dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// Declare the delay queue of `queue` for `delay`: durable, its messages expire after the
/// delay and are dead-lettered through the default exchange back to `queue`.
pub async fn declare_retry_queue(
    channel: &Channel,
    queue: &str,
    delay: Duration,
) -> Result<ShortString, DeclareError> {
    let name = retry_queue(queue, delay);
    let mut a = FieldTable::default();
    a.insert(
        "x-message-ttl".into(),
        AMQPValue::LongUInt(retry_delay(delay).as_millis().min(u32::MAX as u128) as u32),
    );
    a.insert("x-dead-letter-exchange".into(), text(""));
    a.insert("x-dead-letter-routing-key".into(), text(queue));
    declare_queue(channel, &name, true, a).await?;
    Ok(name.into())
}

/// Declare the durable dead-letter queue of `queue`.
pub async fn declare_dead_letter_queue(
    channel: &Channel,
    queue: &str,
) -> Result<ShortString, DeclareError> {
    let name = dead_letter_queue(queue);
    declare_queue(channel, &name, true, FieldTable::default()).await?;
    Ok(name.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_round_up_to_two_significant_digits() {
        let ms = |n| retry_delay(Duration::from_millis(n)).as_millis();
        assert_eq!(ms(0), 1);
        assert_eq!(ms(7), 7);
        assert_eq!(ms(99), 99);
        assert_eq!(ms(1_000), 1_000);
        assert_eq!(ms(1_001), 1_100);
        assert_eq!(ms(1_234), 1_300);
        assert_eq!(ms(64_000), 64_000);
        assert_eq!(ms(128_000), 130_000);
        assert_eq!(
            retry_queue("orders", Duration::from_millis(4_321)),
            "orders.retry.4400"
        );
    }
}
