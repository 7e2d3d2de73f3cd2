//! Publishing wharf's own messages to the broker (the outbox relay, `wharf publish
//! --amqp`): persistent, with the message id, kind, headers and a `correlation-id`
//! header (an answer's) as AMQP properties, on a
//! channel in confirm mode, `mandatory` so a message no queue is bound for comes back
//! instead of vanishing (except an answer by Direct Reply-To).

use std::collections::BTreeMap;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use uuid::Uuid;

use super::topology::text;
use crate::reply::CORRELATION_HEADER;

/// The routing keys of Direct Reply-To's pseudo-queues.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to.";

/// One message to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// Becomes the `message_id` property, so consumers can deduplicate.
    pub id: Uuid,
    /// Target exchange (`""` is the default exchange: the routing key names a queue).
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Becomes the `type` property.
    pub kind: &'a str,
    /// Become AMQP headers (strings).
    pub headers: &'a BTreeMap<String, String>,
    /// The body (JSON).
    pub payload: &'a [u8],
}

/// What the broker said about one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Stored: routed to at least one queue.
    Stored,
    /// Accepted but routed to no queue (nothing bound matches), so dropped.
    Unroutable,
    /// Refused (`basic.nack`): the broker could not take it; publish it again later.
    Refused,
}

/// A channel in confirm mode for publishing.
pub async fn confirming_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Send `message`; await the returned confirm for the broker's answer. Several can be in
/// flight on one channel.
pub async fn send(
    channel: &Channel,
    message: Outgoing<'_>,
) -> Result<PublisherConfirm, lapin::Error> {
    let mut headers = FieldTable::default();
    for (k, v) in message.headers {
        headers.insert(k.as_str().into(), text(v));
    }
    let mut properties = BasicProperties::default();
    // An answer's correlation id goes where RPC clients look for it (a property holds
    // at most 255 bytes; a longer one stays a header only).
    if let Some(correlation) = message.headers.get(CORRELATION_HEADER)
        && correlation.len() <= 255
    {
        properties = properties.with_correlation_id(correlation.as_str().into());
    }
    let properties = properties
        .with_message_id(ShortString::from(message.id.to_string()))
        .with_type(message.kind.into())
        .with_content_type("application/json".into())
        .with_headers(headers)
        .with_delivery_mode(2);
    // RabbitMQ delivers an answer by Direct Reply-To past its queues, and returns it as
    // unroutable too when it is mandatory: it is not (one whose requester left is dropped).
    let direct_reply =
        message.exchange.is_empty() && message.routing_key.starts_with(DIRECT_REPLY_TO);
    channel
        .basic_publish(
            message.exchange.into(),
            message.routing_key.into(),
            BasicPublishOptions {
                mandatory: !direct_reply,
                ..BasicPublishOptions::default()
            },
            message.payload,
            properties,
        )
        .await
}

/// The broker's answer to a [`send`].
pub async fn answer(confirm: PublisherConfirm) -> Result<Published, lapin::Error> {
    Ok(match confirm.await? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Published::Stored,
        Confirmation::Ack(Some(_)) => Published::Unroutable,
        Confirmation::Nack(_) => Published::Refused,
    })
}
