//! `POST /api/messages/request`: a request into an inbox queue, or to an exchange through
//! the outbox (see `crate::requester`),
//! checked as `POST /api/messages/publish` checks a message, and its answer: a handler's
//! (200), the reason it was dead-lettered or refused (422, so the caller does not wait out
//! the timeout), handled without an answer (200, `"answer": null`), or none within
//! `timeout_ms` (504, naming the request). A request repeated with the same `id` is not
//! enqueued again and gets the first answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Api;
use super::auth::Operator;
use super::error::ApiError;
use super::publish::{body_as, destination, payload, target, trace_into};
use crate::requester;
use crate::store::{self, Answer};

/// How long a caller waits when it does not say.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// The body: a message for an inbox queue or an exchange (as `POST
/// /api/messages/publish` takes it), and how long to wait for its answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    queue: Option<String>,
    exchange: Option<String>,
    routing_key: Option<String>,
    kind: Option<String>,
    message: Value,
    id: Option<Uuid>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    key: Option<String>,
    timeout_ms: Option<u64>,
}

/// `POST /api/messages/request`
pub async fn request(
    Operator(who): Operator,
    State(api): State<Arc<Api>>,
    http_headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request = body_as::<RequestBody>(
        body,
        "a request",
        r#"{"queue": "quotes", "kind": "quote.requested", "message": {...}, "timeout_ms": 5000}"#,
    );
    let target = match &request {
        Ok(r) => target(r.queue.as_deref(), r.exchange.as_deref(), None),
        Err(_) => target(None, None, None),
    };
    let sent = match request {
        Ok(mut request) => {
            trace_into(&mut request.headers, &http_headers);
            enqueue(&api, request).await
        }
        Err(e) => Err(e),
    };
    let recorded = sent
        .as_ref()
        .map(|(id, queued, _)| Json(json!({ "id": id, "queued": queued })))
        .map_err(|e| ApiError::new(e.status, e.message.clone()));
    api.record(&who, "request", target, &recorded).await;
    let (id, _, timeout) = sent?;
    match requester::answer(&*api.store, id, timeout).await? {
        Some(answer) => Ok(answered(id, answer)),
        None => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no answer to request {id} within {} ms; it expires unhandled if no host takes it in time. Repeat the request with \"id\": \"{id}\" to get its answer if it comes, or raise timeout_ms (at most http.max_request_timeout_ms, {} ms)",
                timeout.as_millis(),
                api.max_request_timeout.as_millis()
            ),
        )),
    }
}

/// Check and enqueue `request`; its id, whether it was new, and how long to wait.
async fn enqueue(api: &Api, request: RequestBody) -> Result<(Uuid, bool, Duration), ApiError> {
    let most = api.max_request_timeout.as_millis() as u64;
    let timeout_ms = request.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS.min(most));
    if !(1..=most).contains(&timeout_ms) {
        return Err(ApiError::bad_request(format!(
            "timeout_ms {timeout_ms} is out of range: between 1 and {most} (http.max_request_timeout_ms)"
        )));
    }
    let timeout = Duration::from_millis(timeout_ms);
    let id = request.id.unwrap_or_else(Uuid::now_v7);
    let destination = destination(
        (request.queue, request.exchange, None),
        request.routing_key,
        request.kind,
    )?;
    let message = requester::message(
        id,
        destination,
        request.headers,
        payload(api, &request.message)?,
        request.key,
        timeout,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let queued = store::put(&*api.store, &message).await?;
    Ok((id, queued, timeout))
}

/// The HTTP answer for `answer`: the handler's body as JSON when it is JSON, else as text.
fn answered(id: Uuid, answer: Answer) -> (StatusCode, Json<Value>) {
    match answer {
        Answer::Answered { headers, payload } => {
            let body = serde_json::from_slice(&payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned()));
            let answer =
                json!({ "id": id, "status": "answered", "headers": headers, "answer": body });
            (StatusCode::OK, Json(answer))
        }
        Answer::Handled => (
            StatusCode::OK,
            Json(json!({ "id": id, "status": "handled", "answer": null })),
        ),
        Answer::Rejected { error } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "id": id,
                "status": "rejected",
                "error": format!("request {id} was not handled: {error}; it is in the failed messages"),
            })),
        ),
    }
}
