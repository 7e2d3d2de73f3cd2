//! A message's dead-letter topic: a record consumed from a Kafka topic carries the name of
//! its topic's dead-letter topic in a header only the host sets ([`HEADER`]; refused from
//! publishers by [`crate::names`]). When a plugin gives up on such a message (or it is
//! refused before any plugin ran), wherever that happens (in its consumer's batch, or in
//! the inbox queue it was moved to for another attempt), the settle that records its
//! failed message also writes it to the outbox for that topic, in the same transaction:
//! the Kafka relay produces it with its key, value and headers, where it came from
//! ([`ORIGINAL_TOPIC`], ...) and why ([`ERROR_HEADER`]). A failed message an operator
//! retries keeps the header, so dying again sends it again.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::effects::{Destination, Publish};
use crate::envelope::{Envelope, Origin};
use crate::names;

pub use crate::names::DEAD_LETTER_TOPIC_HEADER as HEADER;
/// Headers a dead letter carries besides the record's own: the topic, partition and
/// offset it was consumed from, and its message id.
pub const ORIGINAL_TOPIC: &str = "x-original-topic";
/// See [`ORIGINAL_TOPIC`].
pub const ORIGINAL_PARTITION: &str = "x-original-partition";
/// See [`ORIGINAL_TOPIC`].
pub const ORIGINAL_OFFSET: &str = "x-original-offset";
/// See [`ORIGINAL_TOPIC`].
pub const ORIGINAL_ID: &str = "x-original-message-id";
/// Why the record is a dead letter (the error that gave up on it, bounded and escaped).
pub const ERROR_HEADER: &str = "x-wharf-error";

/// Note in `headers` (a consumed record's) that it dies into the topic `dead_letters`.
pub fn name(headers: &mut BTreeMap<String, String>, dead_letters: &str) {
    headers.insert(HEADER.to_owned(), dead_letters.to_owned());
}

/// Keep where `message` was consumed from in its headers, before it leaves its
/// consumer's batch for the inbox (whose rows do not keep it); a message without a
/// dead-letter topic keeps its headers as they are.
pub fn keep_origin(message: &mut Envelope) {
    if message.headers.contains_key(HEADER) {
        let mut headers = std::mem::take(&mut message.headers);
        add_origin(&mut headers, message);
        message.headers = headers;
    }
}

/// Where a record of `message` was consumed from, into `headers`; nothing for a message
/// the inbox delivered (a moved record keeps it in its own headers).
fn add_origin(headers: &mut BTreeMap<String, String>, message: &Envelope) {
    if let Origin::Kafka { partition, offset } = message.origin {
        for (key, value) in [
            (ORIGINAL_TOPIC, message.queue.clone()),
            (ORIGINAL_PARTITION, partition.to_string()),
            (ORIGINAL_OFFSET, offset.to_string()),
        ] {
            headers.insert(key.to_owned(), value);
        }
    }
}

/// The dead letter of `message`, given up on with `error`, for the outbox: `None` when it
/// names no dead-letter topic. A new message id each time (a message may die again after
/// an operator's retry); its own in [`ORIGINAL_ID`].
pub fn publish(message: &Envelope, error: &str) -> Option<Publish> {
    let topic = message.headers.get(HEADER)?;
    let mut headers = message.headers.clone();
    headers.remove(HEADER);
    add_origin(&mut headers, message);
    headers.insert(ORIGINAL_ID.to_owned(), message.id.to_string());
    headers.insert(ERROR_HEADER.to_owned(), names::storable(error));
    Some(Publish {
        id: Uuid::now_v7(),
        destination: Destination::Topic(topic.clone()),
        kind: message.kind.clone(),
        headers,
        payload: message.payload.clone(),
        key: message.key.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumed(headers: &[(&str, &str)]) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            queue: "orders".into(),
            kind: "order.placed".into(),
            headers: (headers.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            payload: b"{}".to_vec(),
            attempts: 0,
            lock_token: Uuid::nil(),
            settled_plugins: Default::default(),
            origin: Origin::Kafka {
                partition: 2,
                offset: 41,
            },
            due_at: None,
            key: Some("o-1".into()),
            seq: None,
            turn: None,
        }
    }

    #[test]
    fn a_message_without_the_header_has_no_dead_letter_topic() {
        let mut message = consumed(&[("trace", "t")]);
        assert!(publish(&message, "boom").is_none());
        keep_origin(&mut message);
        assert_eq!(message.headers.len(), 1, "headers unchanged");
    }

    #[test]
    fn a_dead_letter_keeps_the_record_and_says_where_it_came_from_and_why() {
        let message = consumed(&[(HEADER, "orders.dlq"), ("trace", "t")]);
        let dead = publish(&message, "bad\nthing").expect("a dead-letter topic");
        assert_eq!(dead.destination, Destination::Topic("orders.dlq".into()));
        assert_eq!(
            (dead.key.as_deref(), dead.kind.as_str()),
            (Some("o-1"), "order.placed")
        );
        assert_eq!(dead.payload, b"{}");
        let h = |k: &str| dead.headers.get(k).map(String::as_str);
        assert_eq!(h(HEADER), None, "the host's header stays with the host");
        assert_eq!(h("trace"), Some("t"));
        assert_eq!(h(ORIGINAL_TOPIC), Some("orders"));
        assert_eq!(h(ORIGINAL_PARTITION), Some("2"));
        assert_eq!(h(ORIGINAL_OFFSET), Some("41"));
        assert_eq!(h(ORIGINAL_ID), Some(message.id.to_string().as_str()));
        assert!(h(ERROR_HEADER).is_some_and(|e| e.starts_with("bad") && !e.contains('\n')));
        let again = publish(&message, "bad").expect("a dead-letter topic");
        assert_ne!(again.id, dead.id, "each dead letter is a new record");
    }

    #[test]
    fn a_moved_record_keeps_its_origin_and_a_long_error_is_cut() {
        let mut message = consumed(&[(HEADER, "orders.dlq")]);
        keep_origin(&mut message);
        message.origin = Origin::Inbox;
        let dead = publish(&message, &"x".repeat(5000)).expect("a dead-letter topic");
        assert_eq!(dead.headers[ORIGINAL_OFFSET], "41");
        assert_eq!(dead.headers[ORIGINAL_TOPIC], "orders");
        let error = &dead.headers[ERROR_HEADER];
        assert!(
            error.len() <= names::MAX_NAME_BYTES && error.ends_with('…'),
            "{error}"
        );
    }
}
