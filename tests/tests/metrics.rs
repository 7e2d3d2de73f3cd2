//! `/metrics` after a known run, scraped like Prometheus does (no token): the handler
//! calls by plugin and outcome with their durations, the queue wait, the settles by
//! result, the inbox depth and oldest age, the failed messages by plugin, the plugins
//! served; a drained queue's and a plugin's deleted dead letters' gauges read 0; an
//! expired request's answer counted late. One test
//! in its own binary: the recorder is the process's.

use std::time::Duration;

use serde_json::json;
use wharf_host::effects::Destination;
use wharf_host::requester;
use wharf_host::store::Answer;
use wharf_tests::http::serve;
use wharf_tests::{Backend, Host};

/// The value of `series` (name and labels as rendered) in `text`; panics when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} is not in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

/// `/metrics` as text.
async fn scrape(base: &str) -> String {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_run() {
    let plugins = ["fixture-noop", "fixture-always-reject", "fixture-answer"];
    let host = Host::start(Backend::Sqlite, &plugins).await;
    let base = serve(&host).await;
    for _ in 0..10 {
        host.publish("test", "test.noop", json!({})).await;
    }
    for _ in 0..3 {
        host.publish("test", "test.reject", json!({})).await;
    }
    host.drain().await;
    for _ in 0..2 {
        host.publish("test", "test.noop", json!({})).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;

    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    let noop = host.catalog.current().get("noop").unwrap().clone();
    for (series, expected) in [
        (
            r#"wharf_handler_invocations_total{plugin="noop",outcome="handled"}"#,
            10.0,
        ),
        (
            r#"wharf_handler_invocations_total{plugin="always-reject",outcome="dead"}"#,
            3.0,
        ),
        (
            r#"wharf_handler_duration_seconds_count{plugin="noop"}"#,
            10.0,
        ),
        (
            r#"wharf_handler_slot_wait_seconds_count{plugin="noop"}"#,
            10.0,
        ),
        (r#"wharf_queue_wait_seconds_count{queue="test"}"#, 13.0),
        (
            r#"wharf_settled_total{source="inbox",result="handled"}"#,
            10.0,
        ),
        (r#"wharf_settled_total{source="inbox",result="dead"}"#, 3.0),
        (r#"wharf_failed_messages{plugin="always-reject"}"#, 3.0),
        (r#"wharf_inbox_messages{queue="test",state="ready"}"#, 2.0),
        (
            r#"wharf_inbox_messages{queue="test",state="in_flight"}"#,
            0.0,
        ),
        (r#"wharf_outbox_pending"#, 0.0),
        (r#"wharf_database_up"#, 1.0),
        (
            &format!(
                r#"wharf_plugin_info{{plugin="noop",version="1.0.0",sha256="{}"}}"#,
                noop.sha256
            ),
            1.0,
        ),
    ] {
        assert_eq!(value(&text, series), expected, "{series}");
    }
    let age = value(
        &text,
        r#"wharf_inbox_oldest_message_age_seconds{queue="test"}"#,
    );
    assert!((0.02..60.0).contains(&age), "oldest age {age}");
    let slowest = value(
        &text,
        r#"wharf_handler_duration_seconds_bucket{plugin="noop",le="+Inf"}"#,
    );
    assert_eq!(slowest, 10.0);
    assert!(
        !text.contains("message_id"),
        "no message ids among the labels"
    );

    // The queue drains and the dead letters are deleted: the gauges say so, not their
    // last values.
    host.drain().await;
    let filter = wharf_host::store::FailedFilter::default();
    assert_eq!(host.store.failed_delete(&filter, 100).await.unwrap(), 3);
    let text = scrape(&base).await;
    for series in [
        r#"wharf_inbox_messages{queue="test",state="ready"}"#,
        r#"wharf_inbox_oldest_message_age_seconds{queue="test"}"#,
        r#"wharf_failed_messages{plugin="always-reject"}"#,
    ] {
        assert_eq!(
            value(&text, series),
            0.0,
            "{series} after the drain and the delete"
        );
    }

    // A request taken after its caller stopped waiting: not handled, and its answer (why)
    // is counted late.
    let id = uuid::Uuid::now_v7();
    let to = (Destination::Queue("test".into()), "quote.ask".into());
    let body = json!({"qty": 1}).to_string().into_bytes();
    let request = requester::message(
        id,
        to,
        Default::default(),
        body,
        None,
        Duration::from_millis(1),
    );
    wharf_host::store::put(&*host.store, &request.unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    host.drain().await;
    let answer = host.store.answer(id).await.unwrap();
    assert!(
        matches!(answer, Some(Answer::Rejected { .. })),
        "{answer:?}"
    );
    let text = scrape(&base).await;
    assert_eq!(
        value(&text, r#"wharf_replies_late_total{why="expired"}"#),
        1.0
    );
}
