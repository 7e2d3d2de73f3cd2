//! One Kafka record as an [`Envelope`]: its message id from a header (`id_header`; a
//! UUID, or any text hashed to one), else derived from its topic, partition and offset
//! (the same record always gets the same id, so a redelivery is found in the ledger);
//! its kind from a header (`kind_header`), else the topic; its key as the ordering key;
//! its headers as text, and its topic's dead-letter topic in the header the host keeps for
//! it ([`crate::dead_letter_topic`]). A record whose key, headers or value break the rules
//! of [`crate::names`] (or the topic's `require_key`) is refused with the rule.

use std::collections::{BTreeMap, BTreeSet};

use rdkafka::message::{Headers, Message, OwnedMessage};
use uuid::Uuid;

use super::TopicSpec;
use crate::dead_letter_topic;
use crate::envelope::{Envelope, Origin, hashed_uuid, message_uuid};
use crate::names;
use crate::transport::broker::breaks_the_rules;

/// The envelope of `record` (consumed as `spec`), and why it must go to the failed
/// messages unhandled, if it must.
pub fn envelope(
    record: &OwnedMessage,
    spec: &TopicSpec,
    max_payload_bytes: usize,
) -> (Envelope, Option<String>) {
    let (mut headers, mut refused) = text_headers(record);
    let id = match headers.get(&spec.id_header) {
        Some(id) => message_uuid(id),
        None => derived_id(record.topic(), record.partition(), record.offset()),
    };
    let payload = record.payload().unwrap_or_default();
    if refused.is_none() && payload.len() > max_payload_bytes {
        refused = Some(format!(
            "payload of {} bytes exceeds the limit of {max_payload_bytes} bytes; produce a smaller record (a reference to the data) or raise inbox.max_payload_bytes",
            payload.len()
        ));
    }
    let kind = headers
        .get(&spec.kind_header)
        .map_or(record.topic(), String::as_str);
    let key = match record.key() {
        None if spec.require_key => {
            refused = refused.or(Some(format!(
                "the record has no key, and topic {} is consumed with require_key = true; produce it with a key (the ordering key, e.g. the aggregate id)",
                spec.topic
            )));
            None
        }
        None => None,
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(key) => Some(key.to_owned()),
            Err(_) => {
                refused = refused.or(Some(format!(
                    "the record's key ({} bytes) is not UTF-8 text; wharf's ordering keys are text",
                    bytes.len()
                )));
                None
            }
        },
    };
    let refused = refused.or_else(|| breaks_the_rules(kind, &headers, key.as_deref(), "producer"));
    let kind = names::storable(kind);
    dead_letter_topic::name(&mut headers, &spec.dead_letter_topic());
    // A refused record keeps no key: an invalid one would not fit the failed messages.
    let key = key.filter(|_| refused.is_none());
    let envelope = Envelope {
        id,
        queue: spec.topic.clone(),
        kind,
        headers,
        payload: payload.to_vec(),
        attempts: 0,
        lock_token: Uuid::nil(),
        settled_plugins: BTreeSet::new(),
        origin: Origin::Kafka {
            partition: record.partition(),
            offset: record.offset(),
        },
        due_at: None,
        key,
        seq: None,
        turn: None,
    };
    (envelope, refused)
}

/// The id of a record without an id header: the same for every delivery of it.
pub fn derived_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    hashed_uuid(
        b"kafka:",
        format!("{topic}/{partition}/{offset}").as_bytes(),
    )
}

/// The record's headers as text (a header given twice keeps its last value; one without
/// a value is empty), and why the record is refused when a value is not UTF-8 text.
fn text_headers(record: &OwnedMessage) -> (BTreeMap<String, String>, Option<String>) {
    let mut headers = BTreeMap::new();
    let Some(given) = record.headers() else {
        return (headers, None);
    };
    for header in given.iter() {
        let value = match header.value.map(std::str::from_utf8) {
            None => String::new(),
            Some(Ok(value)) => value.to_owned(),
            Some(Err(_)) => {
                let shown = names::storable(header.key);
                return (
                    BTreeMap::new(),
                    Some(format!(
                        "header {shown:?} is not UTF-8 text; wharf hands handlers text headers (put binary data in the value)"
                    )),
                );
            }
        };
        headers.insert(header.key.to_owned(), value);
    }
    (headers, None)
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders};

    use super::*;

    fn read(text: &str) -> TopicSpec {
        Figment::from(Toml::string(text)).extract().unwrap()
    }

    fn spec() -> TopicSpec {
        read("topic = \"orders\"")
    }

    fn record(key: Option<&[u8]>, headers: &[(&str, Option<&[u8]>)], value: &[u8]) -> OwnedMessage {
        let mut owned = OwnedHeaders::new();
        for (key, value) in headers {
            owned = owned.insert(Header { key, value: *value });
        }
        OwnedMessage::new(
            Some(value.to_vec()),
            key.map(<[u8]>::to_vec),
            "orders".into(),
            Timestamp::NotAvailable,
            2,
            41,
            Some(owned),
        )
    }

    #[test]
    fn a_record_becomes_an_envelope_with_its_key_headers_and_a_stable_id() {
        let r = record(Some(b"order-7"), &[("kind", Some(b"order.created"))], b"{}");
        let (m, refused) = envelope(&r, &spec(), 1024);
        assert_eq!(refused, None);
        assert_eq!(m.key.as_deref(), Some("order-7"));
        assert_eq!(m.kind, "order.created");
        assert_eq!(m.source(), "kafka:orders");
        assert_eq!(m.id, derived_id("orders", 2, 41));
        assert_ne!(m.id, derived_id("orders", 2, 42));
        assert_ne!(m.id, derived_id("orders", 1, 41));
        assert_eq!(
            m.headers.get(dead_letter_topic::HEADER).map(String::as_str),
            Some("orders.dlq")
        );
        assert_eq!(
            m.origin,
            Origin::Kafka {
                partition: 2,
                offset: 41
            }
        );
        // No kind header: the topic; an id header: the producer's id.
        let id = Uuid::now_v7().to_string();
        let r = record(None, &[("message-id", Some(id.as_bytes()))], b"{}");
        let (m, refused) = envelope(&r, &spec(), 1024);
        assert_eq!((m.kind.as_str(), m.key, refused), ("orders", None, None));
        assert_eq!(m.id.to_string(), id);
        let r = record(None, &[("message-id", Some(b"order-1001"))], b"{}");
        assert_eq!(envelope(&r, &spec(), 1024).0.id, message_uuid("order-1001"));
    }

    #[test]
    fn poison_records_are_refused_with_the_rule_they_break() {
        let keyed = read("topic = \"orders\"\nrequire_key = true");
        for (r, spec, words) in [
            (record(None, &[], b"{}"), &keyed, "has no key"),
            (
                record(Some(&[0xff, 0xfe]), &[], b"{}"),
                &spec(),
                "key (2 bytes) is not UTF-8",
            ),
            (
                record(Some(b"a\x1b[2J"), &[], b"{}"),
                &spec(),
                "ordering key",
            ),
            (
                record(Some(b"k"), &[("x", Some(&[0xff]))], b"{}"),
                &spec(),
                "header \"x\" is not UTF-8",
            ),
            (
                record(Some(b"k"), &[("bad key", Some(b"v"))], b"{}"),
                &spec(),
                "header key",
            ),
            (
                record(Some(b"k"), &[("kind", Some(b"a b"))], b"{}"),
                &spec(),
                "message kind",
            ),
            (
                record(
                    Some(b"k"),
                    &[("x-wharf-dead-letter-topic", Some(b"payments"))],
                    b"{}",
                ),
                &spec(),
                "is reserved",
            ),
            (
                record(Some(b"k"), &[], &[b'x'; 2000]),
                &spec(),
                "payload of 2000 bytes exceeds the limit of 1024",
            ),
        ] {
            let (m, refused) = envelope(&r, spec, 1024);
            let refused = refused.expect("refused");
            assert!(refused.contains(words), "{words}: {refused}");
            assert!(!refused.contains('\u{1b}'), "{refused}");
            assert_eq!(m.key, None);
            // Refused records go to the topic's dead-letter topic, not one they name.
            assert_eq!(m.headers[dead_letter_topic::HEADER], "orders.dlq");
        }
    }
}
