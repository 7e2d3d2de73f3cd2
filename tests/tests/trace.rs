//! W3C trace context end to end, in `wharf` processes logging JSON: an order published
//! with a `traceparent` goes through `send-confirmation`, which publishes
//! `email.requested`, handled by `send-email`; both handlers' spans carry the order's trace
//! id, each with a span of its own, and the email request carries the trace on. An order
//! without one starts a trace of its own, shared by both hops. The same run exports its
//! spans over OTLP to a collector of the test's: the handler calls in the orders' traces
//! (each hop the child of the one before), the claim and settle linked to them. The HTTP
//! publish puts a request's `traceparent` header on the message.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wharf_tests::collector::{Collector, Span};
use wharf_tests::http::{OPERATE, serve};
use wharf_tests::{Backend, Host, plugin_wasm};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `wharf <args>` on the database and plugins of `dir`, logging JSON at debug, exporting
/// spans to `collector`; its stderr.
fn wharf(dir: &Path, collector: &Collector, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf-under-test"))
        .args(args)
        .env("WHARF_TRACING_OTLP_ENDPOINT", &collector.url)
        .env(
            "WHARF_DATABASE_URL",
            format!("sqlite://{}", dir.join("w.db").display()),
        )
        .env("WHARF_PLUGINS_DIR", dir.join("plugins"))
        .env("WHARF_PLUGINS_CACHE_DIR", dir.join("cache"))
        .env("WHARF_LOG", "info,wharf_host::dispatch=debug")
        .env("WHARF_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "wharf {args:?}: {stderr}");
    stderr
}

fn order(id: &str) -> String {
    json!({ "order_id": id, "customer_email": "a@example.com", "items": [{ "quantity": 1 }] })
        .to_string()
}

#[test]
fn a_traceparent_follows_an_order_through_both_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for plugin in ["send-confirmation", "send-email"] {
        std::fs::copy(plugin_wasm(plugin), plugins.join(format!("{plugin}.wasm"))).unwrap();
    }
    // One order with a traceparent, one without.
    let traceparent = format!("traceparent={PARENT}");
    for (id, headers) in [("o-1", vec!["--header", &traceparent]), ("o-2", vec![])] {
        let order = order(id);
        let publish = [
            "publish",
            "--queue",
            "orders",
            "--kind",
            "order.created",
            "--json",
            &order,
        ];
        wharf(dir.path(), &collector, &[&publish[..], &headers].concat());
    }
    let logs = wharf(dir.path(), &collector, &["run", "--until-idle"]);

    // Each handler call's (trace id, span id), from the lines logged in its span.
    let mut calls: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    for line in logs.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            panic!("not a JSON log line: {line}");
        };
        let span = &entry["span"];
        let (Some(plugin), Some(trace), Some(span_id)) = (
            span["plugin"].as_str(),
            span["trace_id"].as_str(),
            span["span_id"].as_str(),
        ) else {
            continue;
        };
        let message = span["message_id"].as_str().unwrap().to_owned();
        calls.insert(
            (plugin.to_owned(), message),
            (trace.to_owned(), span_id.to_owned()),
        );
    }
    let of = |plugin: &str| -> Vec<(String, String)> {
        calls
            .iter()
            .filter(|((p, _), _)| p == plugin)
            .map(|(_, ids)| ids.clone())
            .collect()
    };
    let (confirmations, emails) = (of("send-confirmation"), of("send-email"));
    assert_eq!(
        (confirmations.len(), emails.len()),
        (2, 2),
        "{calls:?}\n{logs}"
    );
    let traced: Vec<_> = confirmations
        .iter()
        .chain(&emails)
        .filter(|(t, _)| t == TRACE)
        .collect();
    assert_eq!(traced.len(), 2, "the order's trace on both hops: {calls:?}");
    assert_ne!(traced[0].1, traced[1].1, "each hop a span of its own");
    assert!(traced.iter().all(|(_, span)| span != "00f067aa0ba902b7"));
    let other: Vec<&String> = confirmations
        .iter()
        .chain(&emails)
        .map(|(t, _)| t)
        .filter(|t| *t != TRACE)
        .collect();
    assert_eq!(other.len(), 2);
    assert_eq!(
        other[0], other[1],
        "an order without a trace starts one, shared by both hops"
    );
    assert_eq!(other[0].len(), 32);

    // The exported spans: each handler call as in the logs, a child of the span that
    // published its message; the trace the host started has its root.
    let spans = collector.spans();
    let handle = |plugin: &str, trace: &str| {
        let found: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == "wharf.handle" && s.trace_id == trace)
            .filter(|s| s.attribute("wharf.plugin") == Some(plugin))
            .collect();
        assert_eq!(found.len(), 1, "one {plugin} call in {trace}: {spans:#?}");
        found[0].clone()
    };
    for trace in [TRACE, other[0].as_str()] {
        let confirmation = handle("send-confirmation", trace);
        let email = handle("send-email", trace);
        assert!(
            calls
                .values()
                .any(|ids| *ids == (trace.to_owned(), confirmation.span_id.clone()))
        );
        assert_eq!(
            email.parent_span_id, confirmation.span_id,
            "email.requested was published in the confirmation's span"
        );
        assert_eq!(email.attribute("wharf.outcome"), Some("handled"));
        let root = match trace {
            TRACE => "00f067aa0ba902b7".to_owned(),
            _ => {
                let receive = spans
                    .iter()
                    .find(|s| s.name == "wharf.receive" && s.trace_id == trace)
                    .expect("the trace the host started has its root");
                assert_eq!(receive.parent_span_id, "");
                receive.span_id.clone()
            }
        };
        assert_eq!(confirmation.parent_span_id, root);
        for batch in ["wharf.claim", "wharf.settle"] {
            let linked = spans
                .iter()
                .filter(|s| s.name == batch)
                .flat_map(|s| &s.links)
                .filter(|(t, _)| t == trace)
                .count();
            assert_eq!(linked, 2, "a {batch} span linked to each hop of {trace}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_publish_puts_the_callers_traceparent_on_the_message() {
    let host = Host::start(Backend::Sqlite, &["fixture-noop"]).await;
    let base = serve(&host).await;
    let publish = async |body: Value| {
        let response = reqwest::Client::new()
            .post(format!("{base}/api/messages/publish"))
            .bearer_auth(OPERATE)
            .header("traceparent", PARENT)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    };
    publish(json!({ "queue": "a", "kind": "test.noop", "message": {} })).await;
    let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let headers = json!({ "traceparent": own });
    publish(json!({ "queue": "b", "kind": "test.noop", "message": {}, "headers": headers })).await;
    let rows = host
        .rows("SELECT queue, headers FROM inbox ORDER BY queue")
        .await;
    let header = |i: usize| -> String {
        let headers: String = sqlx::Row::get(&rows[i], 1);
        serde_json::from_str::<Value>(&headers).unwrap()["traceparent"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header(0), PARENT);
    assert_eq!(header(1), own, "the message's own traceparent wins");
}
