//! One AMQP delivery as an [`Envelope`]: its id from the `message_id` property, its kind
//! from `type` or the routing key, its text headers (and content type) as strings, and
//! the attempts already made from `x-retry-count`, its ordering key from a header
//! (`key_header`, `partition_key` by default); and the properties a re-publish
//! carries. Headers that are not text (tables, arrays, byte arrays, strings holding
//! control characters) stay on the AMQP message but are not handed to handlers. A
//! delivery whose body, kind or headers break the rules of [`crate::names`] is refused
//! with the rule.

use std::collections::{BTreeMap, BTreeSet};

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use uuid::Uuid;

use super::topology::text;
use super::{ConsumeSpec, KindFrom, MissingMessageId};
use crate::envelope::{EXPIRES_HEADER, Envelope, Origin, hashed_uuid, message_uuid};
use crate::names;
use crate::reply::{AMQP_PREFIX, CORRELATION_HEADER, REPLY_TO_HEADER};
use crate::transport::broker::breaks_the_rules;

/// Header carrying the attempts already made.
pub const RETRY_COUNT: &str = "x-retry-count";
/// Headers carrying where a message was first published, kept across the detour
/// through a delay queue (which dead-letters it back through the default exchange).
pub const ORIGINAL_EXCHANGE: &str = "x-original-exchange";
/// See [`ORIGINAL_EXCHANGE`].
pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";

/// The exchange and routing key `delivery` was first published with.
pub fn origin(delivery: &Delivery) -> (String, String) {
    let header = |name: &str| {
        delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(name))
            .and_then(as_text)
    };
    (
        header(ORIGINAL_EXCHANGE).unwrap_or_else(|| delivery.exchange.as_str().to_owned()),
        header(ORIGINAL_ROUTING_KEY).unwrap_or_else(|| delivery.routing_key.as_str().to_owned()),
    )
}

/// The envelope of `delivery` from `spec.queue`, and why it must go to the failed
/// messages unhandled, if it must (no `message_id` and `missing` is `Fail`; a body over
/// `max_payload_bytes`; a kind or headers that break the rules of [`names`]).
pub fn envelope(
    delivery: &Delivery,
    spec: &ConsumeSpec,
    missing: MissingMessageId,
    max_payload_bytes: usize,
) -> (Envelope, Option<String>) {
    let p = &delivery.properties;
    // A request of RabbitMQ's RPC pattern often has only a correlation id: it is unique
    // per request, so it serves as the message id.
    let id = p.message_id().as_ref().or(p.correlation_id().as_ref());
    let (id, refused) = match id {
        Some(id) => (message_uuid(id.as_str()), None),
        None => {
            let id = hashed_uuid(b"body:", &delivery.data);
            let refused = (missing == MissingMessageId::Fail).then(|| {
                "missing message_id: the AMQP message has no message_id property; set one when publishing, or set amqp.missing_message_id = \"body-hash\"".to_owned()
            });
            (id, refused)
        }
    };
    let refused = refused.or_else(|| {
        let size = delivery.data.len();
        (size > max_payload_bytes).then(|| {
            format!(
                "payload of {size} bytes exceeds the limit of {max_payload_bytes} bytes; publish a smaller message (a reference to the data) or raise inbox.max_payload_bytes"
            )
        })
    });
    let (exchange, routing_key) = origin(delivery);
    let kind = match (spec.kind_from, p.kind()) {
        (KindFrom::Type, Some(kind)) => kind.as_str(),
        _ => routing_key.as_str(),
    };
    let mut headers = BTreeMap::new();
    let mut attempts = 0;
    if let Some(table) = p.headers() {
        for (key, value) in table.inner() {
            if key.as_str() == RETRY_COUNT {
                attempts = as_u32(value).unwrap_or(0);
            } else if [ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY].contains(&key.as_str()) {
                continue;
            } else if let Some(value) = as_text(value) {
                headers.insert(key.as_str().to_owned(), value);
            }
        }
    }
    if let Some(content_type) = p.content_type() {
        headers.insert("content-type".to_owned(), content_type.as_str().to_owned());
    }
    request_headers(p, &mut headers);
    let key = headers.get(&spec.key_header).cloned();
    let refused = refused.or_else(|| breaks_the_rules(kind, &headers, key.as_deref(), "publisher"));
    // A refused message keeps no key: an invalid one would not fit the failed messages.
    let key = key.filter(|_| refused.is_none());
    let envelope = Envelope {
        id,
        queue: spec.queue.clone(),
        kind: names::storable(kind),
        headers,
        payload: delivery.data.clone(),
        attempts,
        lock_token: Uuid::nil(),
        settled_plugins: BTreeSet::new(),
        origin: Origin::Amqp {
            exchange,
            routing_key,
        },
        due_at: None,
        key,
        seq: None,
        turn: None,
    };
    (envelope, refused)
}

/// What makes a delivery a request, as the headers wharf reads it from: its `reply_to`
/// property as `reply-to: amqp:<queue>`, its `correlation_id` as `correlation-id`, and
/// its `expiration` (a TTL in ms) as the deadline `expires-at`, counted from now, unless
/// an earlier attempt set one.
fn request_headers(p: &BasicProperties, headers: &mut BTreeMap<String, String>) {
    if let Some(to) = p.reply_to() {
        let to = format!("{AMQP_PREFIX}{}", to.as_str());
        headers.insert(REPLY_TO_HEADER.to_owned(), to);
    }
    if let Some(correlation) = p.correlation_id() {
        let correlation = correlation.as_str().to_owned();
        headers.insert(CORRELATION_HEADER.to_owned(), correlation);
    }
    if let Some(at) = deadline(p)
        && !headers.contains_key(EXPIRES_HEADER)
    {
        headers.insert(EXPIRES_HEADER.to_owned(), at.to_string());
    }
}

/// The deadline (Unix ms) an `expiration` property sets, counted from now.
fn deadline(p: &BasicProperties) -> Option<i64> {
    let ttl: i64 = p.expiration().as_ref()?.as_str().parse().ok()?;
    Some(crate::store::now_ms().saturating_add(ttl))
}

/// The properties of `delivery` for its next attempt: `x-retry-count` set to `attempts`,
/// and where it was first published. An `expiration` becomes the `expires-at` header:
/// left on, it would cut the wait in the delay queue short.
pub fn for_retry(delivery: &Delivery, attempts: u32) -> BasicProperties {
    let (exchange, routing_key) = origin(delivery);
    let mut added = vec![
        (RETRY_COUNT, AMQPValue::LongUInt(attempts)),
        (ORIGINAL_EXCHANGE, text(&exchange)),
        (ORIGINAL_ROUTING_KEY, text(&routing_key)),
    ];
    let has_deadline = (delivery.properties.headers().as_ref())
        .is_some_and(|h| h.inner().contains_key(EXPIRES_HEADER));
    if let (false, Some(at)) = (has_deadline, deadline(&delivery.properties)) {
        added.push((EXPIRES_HEADER, text(&at.to_string())));
    }
    without_expiration(with_headers(&delivery.properties, added))
}

/// `properties` without an `expiration` (lapin has no way to unset one property).
fn without_expiration(p: BasicProperties) -> BasicProperties {
    let mut kept = BasicProperties::default();
    macro_rules! keep {
        ($($get:ident => $set:ident),*) => {
            $(if let Some(value) = p.$get().clone() {
                kept = kept.$set(value);
            })*
        };
    }
    keep!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        headers => with_headers,
        delivery_mode => with_delivery_mode,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        user_id => with_user_id,
        app_id => with_app_id,
        cluster_id => with_cluster_id
    );
    kept
}

/// The properties with headers added or replaced.
fn with_headers<'a>(
    properties: &BasicProperties,
    added: impl IntoIterator<Item = (&'a str, AMQPValue)>,
) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    for (key, value) in added {
        headers.insert(key.into(), value);
    }
    properties.clone().with_headers(headers)
}

/// The properties of a dead-letter copy of `delivery`: the error (cut to a header
/// value's limit, so the copy's headers fit the broker's frame), and where it was first
/// published; no `expiration` (as RabbitMQ's own dead-lettering does), or the copy would
/// vanish from the dead-letter queue.
pub fn for_dead_letter(delivery: &Delivery, error: &str) -> BasicProperties {
    let (exchange, routing_key) = origin(delivery);
    let error = crate::text::bounded(error.to_owned(), names::MAX_HEADER_VALUE_BYTES);
    let properties = with_headers(
        &delivery.properties,
        [
            ("x-wharf-error", text(&error)),
            (ORIGINAL_EXCHANGE, text(&exchange)),
            (ORIGINAL_ROUTING_KEY, text(&routing_key)),
        ],
    );
    without_expiration(properties)
}

fn as_u32(value: &AMQPValue) -> Option<u32> {
    match value {
        AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::ShortShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        other => as_text(other)?.parse().ok(),
    }
}

/// A header value as text; `None` for one that is not (tables, arrays, byte arrays,
/// strings with control characters other than tab and line breaks).
fn as_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => {
            let text = String::from_utf8_lossy(s.as_bytes());
            if !names::is_text(&text) {
                return None;
            }
            text.into_owned()
        }
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_map_to_stable_uuids() {
        let uuid = Uuid::now_v7();
        assert_eq!(message_uuid(&uuid.to_string()), uuid);
        assert_eq!(message_uuid("order-1001"), message_uuid("order-1001"));
        assert_ne!(message_uuid("order-1001"), message_uuid("order-1002"));
    }

    #[test]
    fn a_retry_carries_the_deadline_as_a_header_not_as_an_expiration() {
        let properties = BasicProperties::default()
            .with_expiration("200".into())
            .with_reply_to("amq.rabbitmq.reply-to.x".into())
            .with_correlation_id("c-1".into())
            .with_message_id("m-1".into())
            .with_type("quote.ask".into())
            .with_priority(3);
        let kept = without_expiration(properties.clone());
        assert_eq!(kept.expiration(), &None);
        assert_eq!(kept.with_expiration("200".into()), properties);

        let mut headers = BTreeMap::new();
        let before = crate::store::now_ms();
        request_headers(&properties, &mut headers);
        assert_eq!(headers[REPLY_TO_HEADER], "amqp:amq.rabbitmq.reply-to.x");
        assert_eq!(headers[CORRELATION_HEADER], "c-1");
        let at: i64 = headers[EXPIRES_HEADER].parse().unwrap();
        assert!((before + 200..=crate::store::now_ms() + 200).contains(&at));
        // A deadline an earlier attempt set stays.
        headers.insert(EXPIRES_HEADER.into(), "7".into());
        request_headers(&properties, &mut headers);
        assert_eq!(headers[EXPIRES_HEADER], "7");
    }
}
