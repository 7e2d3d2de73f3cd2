//! Requests in the inbox that name a reply queue (`reply-to: <queue>`), on every store:
//! the answer is inserted into that inbox queue in the settle's transaction, with the
//! request's correlation id and the answer's status; a rejection answers why; a request
//! repeated with its id is answered once; a reply address naming no queue is refused
//! before any handler runs. The `quote` fixture (`fixture-answer`) answers.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sqlx::Row;
use wharf_host::envelope::NewMessage;
use wharf_tests::{Backend, Host, conformance};

conformance!(an_inbox_request_s_answer_goes_into_its_reply_queue_once);

/// A request of `kind` for queue `test`, answered at `reply_to`.
fn request(kind: &str, reply_to: &str, qty: u64) -> NewMessage {
    let mut message = NewMessage::new("test", kind, json!({ "qty": qty }).to_string().into());
    message.headers.insert("reply-to".into(), reply_to.into());
    message
}

/// The answers in inbox queue `gateway`: kind, headers and body, by correlation id.
async fn answers(host: &Host) -> BTreeMap<String, (String, BTreeMap<String, String>, Value)> {
    let sql = format!(
        "SELECT kind, {} AS headers, payload FROM inbox WHERE queue = 'gateway'",
        host.json_text("headers")
    );
    let mut answers = BTreeMap::new();
    for row in host.query_rows(sql).await {
        let headers: BTreeMap<String, String> =
            serde_json::from_str(&row.get::<String, _>("headers")).unwrap();
        let body = serde_json::from_slice(&row.get::<Vec<u8>, _>("payload")).unwrap();
        let kind = row.get::<String, _>("kind");
        answers.insert(headers["correlation-id"].clone(), (kind, headers, body));
    }
    answers
}

async fn an_inbox_request_s_answer_goes_into_its_reply_queue_once(backend: Backend) {
    let host = Host::start(backend, &["fixture-answer"]).await;
    let mut asked = request("quote.ask", "gateway", 2);
    asked
        .headers
        .insert("correlation-id".into(), "c-ask".into());
    let refused = request("quote.refuse", "inbox:gateway", 1);
    let nowhere = request("quote.ask", "amqp:", 1);
    let too_long = request("quote.ask", &"q".repeat(300), 1);
    let sent = [
        asked.clone(),
        refused.clone(),
        nowhere.clone(),
        too_long.clone(),
    ];
    host.store.enqueue(&sent).await.unwrap();
    host.drain().await;

    let answers = answers(&host).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    let (kind, headers, body) = &answers["c-ask"];
    assert_eq!(kind, "quote.ask.reply");
    assert_eq!(headers["reply-status"], "answered");
    assert_eq!(body, &json!({ "price": 6 }));
    let (_, headers, body) = &answers[&refused.id.to_string()];
    assert_eq!(headers["reply-status"], "rejected");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("out of stock"), "{error}");

    let failed = host.failed().await;
    let error_of = |id| {
        let failed = failed.iter().find(|f| f.message_id == id).unwrap();
        failed.error.clone()
    };
    for id in [nowhere.id, too_long.id] {
        let error = error_of(id);
        assert!(error.contains("names nowhere an answer can go"), "{error}");
    }
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);

    // The request again, under its id: not handled again, no second answer.
    let mut again = request("quote.ask", "gateway", 9);
    again.id = asked.id;
    host.store.enqueue(&[again]).await.unwrap();
    host.drain().await;
    assert_eq!(
        host.count("SELECT COUNT(*) FROM inbox WHERE queue = 'gateway'")
            .await,
        2
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);
}
