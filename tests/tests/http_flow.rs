//! The flow history over HTTP (`GET /api/flow`), on each store: two hosts on one database
//! settle the same queue at once and report what they counted; the answer adds both up,
//! per minute, by queue and by plugin, with the plugins' call times; a second report adds
//! to the first. Bad parameters are a 400 naming the problem, quoting the value bounded
//! and escaped.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_host::dispatch::report::report_flow;
use wharf_tests::http::{READ, call, get, serve};
use wharf_tests::{Backend, Host, conformance, test_config};

conformance!(two_hosts_flow_is_added_up_per_minute_by_queue_and_plugin,);

const PLUGINS: [&str; 2] = ["fixture-noop", "fixture-always-reject"];

/// The sum of a series of numbers (`null` counts 0).
fn sum(series: &Value) -> u64 {
    series
        .as_array()
        .unwrap_or_else(|| panic!("{series} is a series"))
        .iter()
        .map(|v| v.as_u64().unwrap_or(0))
        .sum()
}

/// The series named `name` (and of `source`, for a queue) of `list`.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

async fn two_hosts_flow_is_added_up_per_minute_by_queue_and_plugin(backend: Backend) {
    let first = Host::start(backend, &PLUGINS).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.database.url = first.config.database.url.clone();
    let second = Host::start_on(config, &PLUGINS, dir).await;
    for i in 0..6 {
        first.publish("test", "test.noop", json!({ "n": i })).await;
    }
    for i in 0..2 {
        first
            .publish("test", "test.reject", json!({ "n": i }))
            .await;
    }
    let (a, b) = tokio::join!(first.drain(), second.drain());
    assert_eq!(a.settled.handled + b.settled.handled, 6, "{a:?} {b:?}");
    assert_eq!(a.settled.dead + b.settled.dead, 2, "{a:?} {b:?}");
    let (a, b) = tokio::join!(
        report_flow(&*first.store, &first.dispatcher, "host-a/1"),
        report_flow(&*second.store, &second.dispatcher, "host-b/1"),
    );
    a.unwrap();
    b.unwrap();

    let base = serve(&first).await;
    let (status, flow) = get(&base, "/api/flow?minutes=5", READ).await;
    assert_eq!(status, StatusCode::OK, "{flow}");
    assert_eq!(flow["minutes"], 5);
    assert_eq!(flow["minute_ms"], 60_000);
    let queue = named(&flow["queues"], "test");
    assert_eq!(queue["source"], "inbox");
    assert_eq!(queue["handled"].as_array().unwrap().len(), 5);
    assert_eq!(
        (sum(&queue["handled"]), sum(&queue["dead"])),
        (6, 2),
        "{queue}"
    );
    let noop = named(&flow["plugins"], "noop");
    assert_eq!((sum(&noop["handled"]), sum(&noop["calls"])), (6, 6));
    let mean = noop["mean_ms"].as_array().unwrap();
    assert!(
        mean.iter().any(|v| v.as_f64().is_some_and(|ms| ms > 0.0)),
        "a minute with calls has their mean time: {noop}"
    );
    assert!(
        noop["max_ms"].as_array().unwrap().iter().any(Value::is_f64),
        "{noop}"
    );
    let reject = named(&flow["plugins"], "always-reject");
    assert_eq!((sum(&reject["dead"]), sum(&reject["calls"])), (2, 2));

    // A second report adds onto the first.
    for i in 0..3 {
        first.publish("test", "test.noop", json!({ "m": i })).await;
    }
    first.drain().await;
    report_flow(&*first.store, &first.dispatcher, "host-a/1")
        .await
        .unwrap();
    let (_, flow) = get(&base, "/api/flow", READ).await;
    assert_eq!(flow["minutes"], 60, "an hour unless asked");
    assert_eq!(sum(&named(&flow["queues"], "test")["handled"]), 9);
    assert_eq!(sum(&named(&flow["plugins"], "noop")["calls"]), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_a_400_naming_the_problem() {
    let host = Host::start(Backend::Sqlite, &["fixture-noop"]).await;
    let base = serve(&host).await;
    let long = "9".repeat(5_000);
    let cases = [
        ("minutes=abc", "must be a number from 1 to 120"),
        ("minutes=0", "must be a number from 1 to 120"),
        ("minutes=121", "must be a number from 1 to 120"),
        ("minutes=-1", "must be a number from 1 to 120"),
        ("minutes=", "must be a number from 1 to 120"),
        (
            "minutes=99999999999999999999",
            "must be a number from 1 to 120",
        ),
        (&format!("minutes={long}"), "[cut: "),
        ("minutes=%1b%5b31m", "\\\\u{1b}[31m"),
        (
            "hours=1",
            "unknown parameter \"hours\": the only one is minutes",
        ),
        (&format!("{long}=1"), "unknown parameter"),
        ("minutes=%zz%", "minutes"),
    ];
    for (query, says) in cases {
        let (status, body) = get(&base, &format!("/api/flow?{query}"), READ).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(
            error.contains(says) || format!("{error:?}").contains(says),
            "{query}: {error}"
        );
        assert!(
            error.len() < 300,
            "the error quotes a bounded value: {error}"
        );
        assert!(
            !error.contains('\u{1b}'),
            "control characters are escaped: {error:?}"
        );
    }
    let (status, _) = call(&base, Method::GET, "/api/flow", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, flow) = get(&base, "/api/flow?minutes=1", READ).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        flow["queues"],
        json!([]),
        "nothing settled, nothing reported"
    );
}
