//! The naming rules, checked.

use super::*;

#[test]
fn names_follow_the_table() {
    kind("order.created").unwrap();
    kind("urn:acme/order_v2-created").unwrap();
    assert_eq!(
        kind("").unwrap_err(),
        InvalidName::Empty {
            what: "message kind"
        }
    );
    assert_eq!(
        kind("order created").unwrap_err().to_string(),
        "message kind \"order created\" contains ' '; allowed: ASCII letters, digits, '.', '_', '-', ':' and '/'"
    );
    let huge = "k".repeat(1 << 20);
    let error = kind(&huge).unwrap_err().to_string();
    assert!(
        error.contains("is 1048576 bytes long, over the limit of 255 bytes"),
        "{error}"
    );
    assert!(
        error.len() < 150,
        "the error does not repeat the name: {error}"
    );
    queue("orders").unwrap();
    assert!(queue("").is_err());
    exchange("").unwrap();
    exchange("amq.topic").unwrap();
    assert!(exchange("a b").is_err());
    routing_key("orders.*.eu#1").unwrap();
    routing_key("").unwrap();
    assert!(routing_key("a\u{0}b").is_err());
    state_key("count:sku-1 é").unwrap();
    assert!(state_key("").is_err());
    assert!(state_key(&"s".repeat(1025)).is_err());
    ordering_key("order 42 · eu").unwrap();
    assert!(ordering_key("").is_err());
    assert!(ordering_key("a\u{1b}[2J").is_err());
    assert!(ordering_key(&"k".repeat(256)).is_err());
}

#[test]
fn kafka_topics_follow_kafka_s_rules_and_name_inbox_queues() {
    for fine in ["orders", "orders.dlq", "a_b-C.9", &"t".repeat(249)] {
        topic(fine).unwrap();
        queue(fine).unwrap();
    }
    for (bad, words) in [
        ("", "is empty"),
        (".", "is reserved"),
        ("..", "is reserved"),
        ("a:b", "contains ':'"),
        ("a/b", "contains '/'"),
        ("a b", "contains ' '"),
        ("a\u{1b}[2J", "contains '\\u{1b}'"),
        (&"t".repeat(250), "over the limit of 249 bytes"),
    ] {
        let error = topic(bad).unwrap_err().to_string();
        assert!(error.contains(words), "{bad:?}: {error}");
        assert!(error.len() < 150, "{error}");
    }
}

#[test]
fn headers_are_checked_one_by_one_and_in_all() {
    headers([("content-type", "application/json"), ("trace", "a\tb\r\nc")]).unwrap();
    assert!(matches!(
        headers([("x", "nul\u{0}")]),
        Err(InvalidName::Character { found: '\u{0}', .. })
    ));
    assert!(headers([("", "v")]).is_err());
    assert!(headers([("has space", "v")]).is_err());
    let big = "v".repeat(MAX_HEADER_VALUE_BYTES + 1);
    assert!(headers([("k", big.as_str())]).is_err());
    let many: BTreeMap<String, String> = (0..=MAX_HEADERS)
        .map(|i| (format!("h{i}"), "v".into()))
        .collect();
    assert_eq!(
        header_map(&many).unwrap_err(),
        InvalidName::TooManyHeaders { count: 101 }
    );
    let value = "v".repeat(MAX_HEADER_VALUE_BYTES);
    let large: BTreeMap<String, String> =
        (0..9).map(|i| (format!("h{i}"), value.clone())).collect();
    assert!(matches!(
        header_map(&large),
        Err(InvalidName::HeadersTooLarge { .. })
    ));
}

#[test]
fn the_dead_letter_topic_header_is_the_hosts_in_any_case() {
    for key in ["x-wharf-dead-letter-topic", "X-Wharf-Dead-Letter-Topic"] {
        let refused = headers([(key, "payments")]).unwrap_err();
        assert!(
            matches!(refused, InvalidName::Reserved { .. }),
            "{refused:?}"
        );
        assert!(
            refused.to_string().contains("dead-letter topic"),
            "{refused}"
        );
    }
    headers([("x-wharf-dead-letter", "payments")]).unwrap();
}

#[test]
fn storable_text_has_no_control_characters_and_a_bounded_length() {
    assert_eq!(storable("a\u{0}b"), "a\u{fffd}b");
    let long = storable(&"é".repeat(300));
    assert!(
        long.len() <= MAX_NAME_BYTES && long.ends_with('…'),
        "{long}"
    );
}
