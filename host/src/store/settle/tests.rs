//! The settle rules, checked without a database.

use super::*;
use crate::effects::{Destination, Effects, Publish, Reply};
use crate::reply::{CORRELATION_HEADER, REPLY_TO_HEADER, STATUS_HEADER};
use crate::store::Route;

fn message(n: u8, attempts: u32) -> Envelope {
    Envelope {
        id: Uuid::from_bytes([n; 16]),
        queue: "q".into(),
        kind: "k".into(),
        headers: Default::default(),
        payload: vec![n],
        attempts,
        lock_token: Uuid::nil(),
        settled_plugins: Default::default(),
        origin: Default::default(),
        due_at: None,
        key: None,
        seq: None,
        turn: None,
    }
}

fn plugin(name: &str) -> PluginVersion {
    PluginVersion {
        name: name.into(),
        version: "1.0.0".into(),
        sha256: "ab".into(),
    }
}

fn result(name: &str, verdict: Verdict) -> PluginResult {
    PluginResult {
        plugin: plugin(name),
        attempt: 1,
        verdict,
    }
}

/// A handled result that read `key` at `seen` and wrote `value` to it.
fn read_modify_write(key: &str, seen: i64, value: Option<&[u8]>) -> Verdict {
    Verdict::Handled(Effects {
        reads: [(key.to_owned(), seen)].into(),
        writes: [(key.to_owned(), value.map(<[u8]>::to_vec))].into(),
        ..Effects::default()
    })
}

fn settlement(n: u8, results: Vec<PluginResult>) -> Settlement {
    Settlement {
        message: message(n, 0),
        results,
        refused: None,
    }
}

fn build<'a>(batch: &'a [Settlement], committed: &[(&'a str, &'a str, i64)]) -> SettlePlan<'a> {
    let held: Vec<&Settlement> = batch.iter().collect();
    let mut versions: Versions = state_keys(&held).into_iter().map(|k| (k, 0)).collect();
    for (plugin, key, version) in committed {
        versions.insert((plugin, key), *version);
    }
    SettlePlan::build(&held, versions, None)
}

#[test]
fn a_read_made_stale_by_an_earlier_message_of_the_batch_runs_again_uncounted() {
    let batch = [
        settlement(1, vec![result("p", read_modify_write("n", 3, Some(b"4")))]),
        settlement(2, vec![result("p", read_modify_write("n", 3, Some(b"4")))]),
    ];
    let plan = build(&batch, &[("p", "n", 3)]);
    assert_eq!(
        (plan.summary.handled, plan.summary.runs().rescheduled),
        (1, 1)
    );
    assert_eq!(plan.handled.len(), 1);
    assert_eq!(plan.handled[0].0, batch[0].message.id);
    assert_eq!(plan.done, [batch[0].message.id]);
    assert_eq!(plan.stay.len(), 1);
    let stay = &plan.stay[0];
    assert_eq!(stay.message.id, batch[1].message.id);
    assert!(!stay.counts);
    assert_eq!(stay.delay, Duration::ZERO);
    let write = &plan.state[&("p", "n")];
    assert_eq!((write.value, write.version), (Some(&b"4"[..]), 4));
}

#[test]
fn a_read_changed_by_another_host_is_stale_and_a_delete_leaves_version_zero() {
    let batch = [
        settlement(1, vec![result("p", read_modify_write("a", 1, None))]),
        settlement(2, vec![result("p", read_modify_write("b", 1, None))]),
    ];
    // "a" is as the handler read it, "b" moved on meanwhile.
    let plan = build(&batch, &[("p", "a", 1), ("p", "b", 2)]);
    assert_eq!(
        (plan.summary.handled, plan.summary.runs().rescheduled),
        (1, 1)
    );
    let write = &plan.state[&("p", "a")];
    assert_eq!((write.value, write.version), (None, 0));
    assert!(!plan.state.contains_key(&("p", "b")));
}

#[test]
fn a_message_stays_for_its_longest_delay_and_counts_if_any_plugin_retried() {
    let second = Duration::from_secs(1);
    let batch = [settlement(
        1,
        vec![
            result(
                "slow",
                Verdict::Retry {
                    error: "busy".into(),
                    delay: second,
                },
            ),
            result("open", Verdict::Deferred { delay: 5 * second }),
            result("fine", Verdict::Handled(Effects::default())),
        ],
    )];
    let plan = build(&batch, &[]);
    let summary = plan.summary.clone();
    assert_eq!(
        (summary.retried, summary.deferred, summary.handled),
        (1, 1, 1)
    );
    assert_eq!(plan.stay.len(), 1);
    assert!(plan.stay[0].counts);
    assert_eq!(plan.stay[0].delay, 5 * second);
    assert!(plan.done.is_empty());
    let errors: Vec<_> = plan
        .attempt_errors
        .iter()
        .map(|a| (a.plugin.name.as_str(), &*a.error, a.delay))
        .collect();
    assert_eq!(errors, [("slow", "busy", Some(second))]);
}

#[test]
fn dead_and_refused_messages_are_failed_rows_and_done() {
    let mut refused = settlement(1, Vec::new());
    refused.refused = Some("no handler for kind k".into());
    refused.message.attempts = 2;
    let dead = |error: &str| Verdict::Dead {
        error: error.into(),
    };
    let batch = [
        refused,
        settlement(
            2,
            vec![result("a", dead("first")), result("b", dead("second"))],
        ),
    ];
    let plan = build(&batch, &[]);
    assert_eq!(plan.summary.dead, 3);
    let rows: Vec<_> = plan
        .dead
        .iter()
        .map(|d| {
            (
                d.message.payload[0],
                d.plugin.name.as_str(),
                d.attempts,
                &*d.error,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, "", 3, "no handler for kind k"),
            (2, "a", 1, "first"),
            (2, "b", 1, "second")
        ]
    );
    // A refusal is the message's attempt: its history says when and why.
    let attempts: Vec<_> = plan
        .attempt_errors
        .iter()
        .map(|a| (a.plugin.name.as_str(), a.attempt, &*a.error))
        .collect();
    assert_eq!(
        attempts,
        [
            ("", 3, "no handler for kind k"),
            ("a", 1, "first"),
            ("b", 1, "second")
        ]
    );
    assert_eq!(plan.done.len(), 2);
}

#[test]
fn publishes_go_to_the_inbox_or_the_outbox_by_destination() {
    let publish = |destination| Publish {
        id: Uuid::now_v7(),
        destination,
        kind: "k".into(),
        headers: Default::default(),
        payload: b"x".to_vec(),
        key: None,
    };
    let effects = Effects {
        publishes: vec![
            publish(Destination::Queue("next".into())),
            publish(Destination::Exchange {
                exchange: "ex".into(),
                routing_key: "rk".into(),
            }),
            Publish {
                key: Some("order-7".into()),
                ..publish(Destination::Topic("orders".into()))
            },
        ],
        ..Effects::default()
    };
    let batch = [settlement(1, vec![result("p", Verdict::Handled(effects))])];
    let plan = build(&batch, &[]);
    assert_eq!(plan.publishes.len(), 1);
    assert_eq!(plan.publishes[0].queue, "next");
    let outbox: Vec<_> = (plan.outbox.iter())
        .map(|o| (o.source, o.plugin, o.route().columns()))
        .collect();
    let source = batch[0].message.id;
    assert_eq!(
        outbox,
        [
            (source, "p", ("amqp", "ex", "rk", None)),
            (source, "p", ("kafka", "orders", "", Some("order-7"))),
        ]
    );
}

/// Message `n` of key `k`, claimed with keys kept in order, `a` ordered with `policy`.
fn keyed(n: u8, policy: crate::envelope::DeadLetterKey) -> Envelope {
    let mut turn = crate::envelope::KeyTurn::default();
    turn.ordered.insert("a".into(), policy);
    Envelope {
        key: Some("k".into()),
        seq: Some(i64::from(n)),
        turn: Some(turn),
        ..message(n, 0)
    }
}

#[test]
fn in_a_batch_a_key_waits_for_what_an_earlier_message_left_unhandled() {
    use crate::envelope::DeadLetterKey::{Hold, Skip};
    let retry = Verdict::Retry {
        error: "e".into(),
        delay: Duration::ZERO,
    };
    let dead = Verdict::Dead { error: "e".into() };
    let handled = Verdict::Handled(Effects::default());
    for (verdict, kept, policy, waits) in [
        (&handled, true, Hold, false),
        (&handled, false, Hold, true),
        (&retry, false, Hold, true),
        (&Verdict::RunAtSettle, false, Hold, true),
        (&Verdict::Waits, false, Hold, true),
        (&dead, false, Hold, true),
        (&dead, false, Skip, false),
    ] {
        let mut order = InBatch::default();
        let (first, second) = (keyed(1, policy), keyed(2, policy));
        assert!(!order.waits(&first, "a"));
        order.settled(&first, "a", verdict, kept);
        assert_eq!(order.waits(&second, "a"), waits, "{verdict:?} kept {kept}");
        assert!(
            !order.waits(&second, "b"),
            "an unordered plugin never waits"
        );
    }
}

#[test]
fn a_redelivery_an_ordered_plugin_settled_before_moves_its_key_on_as_it_leaves() {
    use crate::envelope::DeadLetterKey::Hold;
    for (settled_by, moves) in [("a", true), ("b", false)] {
        let mut message = keyed(1, Hold);
        message.settled_plugins.insert(settled_by.into());
        let batch = [Settlement {
            message,
            results: Vec::new(),
            refused: None,
        }];
        let plan = build(&batch, &[]);
        assert_eq!(plan.done, vec![batch[0].message.id], "it leaves the inbox");
        assert_eq!(plan.keys.len(), 1);
        assert_eq!(
            plan.keys[0].moves, moves,
            "settled before by {settled_by}: a message parked behind it is woken"
        );
    }
}

/// Message `n`, a request answered at `reply_to`.
fn request(n: u8, reply_to: &str, results: Vec<PluginResult>) -> Settlement {
    let mut s = settlement(n, results);
    (s.message.headers).insert(REPLY_TO_HEADER.into(), reply_to.into());
    s
}

#[test]
fn answers_go_where_the_request_says_with_its_correlation_id_and_one_id_per_request() {
    let reply = Reply {
        headers: [("h".to_owned(), "v".to_owned())].into(),
        payload: b"{\"price\":3}".to_vec(),
    };
    let answered = || {
        Verdict::Handled(Effects {
            reply: Some(reply.clone()),
            ..Effects::default()
        })
    };
    let dead = || Verdict::Dead {
        error: "out of stock".into(),
    };
    let mut amqp = request(
        2,
        "amqp:amq.rabbitmq.reply-to.abc",
        vec![result("p", dead())],
    );
    (amqp.message.headers).insert(CORRELATION_HEADER.into(), "c-7".into());
    let batch = [
        request(1, "wharf:caller", vec![result("p", answered())]),
        amqp,
        request(3, "inbox:gateway", vec![result("p", answered())]),
        request(
            4,
            "gateway",
            vec![result("p", Verdict::Handled(Effects::default()))],
        ),
        request(5, "amqp:", vec![result("p", answered())]),
    ];
    let plan = build(&batch, &[]);
    assert_eq!(plan.replies.len(), 1);
    assert_eq!(plan.replies[0].request, batch[0].message.id);
    assert_eq!(
        plan.outbox.len(),
        1,
        "an AMQP answer; none to an empty queue name"
    );
    let o = &plan.outbox[0];
    let route = Route::Exchange {
        exchange: "",
        routing_key: "amq.rabbitmq.reply-to.abc",
    };
    assert_eq!(o.route(), route);
    assert_eq!(o.publish.id, crate::reply::id(batch[1].message.id));
    assert_eq!(o.publish.headers[CORRELATION_HEADER], "c-7");
    assert_eq!(o.publish.headers[STATUS_HEADER], "rejected");
    assert_eq!(o.publish.payload, br#"{"error":"out of stock"}"#);
    assert_eq!(o.publish.kind, "k.reply");
    let [to_3, to_4] = &plan.publishes[..] else {
        panic!("two answers to inbox queues: {:?}", plan.publishes);
    };
    assert_eq!(
        (to_3.queue.as_str(), to_4.queue.as_str()),
        ("gateway", "gateway")
    );
    assert_eq!(to_3.payload, reply.payload);
    assert_eq!(to_3.headers["h"], "v");
    assert_eq!(to_3.headers[STATUS_HEADER], "answered");
    assert_eq!(
        to_3.headers[CORRELATION_HEADER],
        batch[2].message.id.to_string()
    );
    assert_eq!(to_4.headers[STATUS_HEADER], "handled");
    assert_eq!(to_4.payload, b"null");
    assert_eq!(plan.summary.outboxed, 1);
}

#[test]
fn a_request_that_stays_for_another_attempt_is_not_answered_yet() {
    let retry = Verdict::Retry {
        error: "busy".into(),
        delay: Duration::from_millis(5),
    };
    let batch = [request(1, "amqp:replies", vec![result("p", retry)])];
    let plan = build(&batch, &[]);
    assert!(plan.outbox.is_empty() && plan.replies.is_empty());
    assert!(plan.publishes.is_empty());
}
