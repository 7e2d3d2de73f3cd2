//! `POST /api/messages/publish`: a message into an inbox queue, or to an exchange or a
//! Kafka topic through the outbox (so a relay publishes it with a confirm, and a broker
//! outage only delays it). Checked as `wharf publish` checks: the naming rules and the payload limit; the
//! id makes a repeat harmless. A `traceparent` HTTP header goes on the message, unless its
//! `headers` carry one.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Api;
use super::auth::Operator;
use super::error::ApiError;
use crate::effects::Destination;
use crate::names;
use crate::store;
use crate::trace;

/// The body: `queue` + `kind`, `exchange` + `routing_key` (`kind` defaults to it), or
/// `topic` + `kind`; `key` is the ordering key (to an exchange: the `partition_key`
/// header; to a topic: the record's key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    queue: Option<String>,
    exchange: Option<String>,
    routing_key: Option<String>,
    topic: Option<String>,
    kind: Option<String>,
    message: Value,
    id: Option<Uuid>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    key: Option<String>,
}

/// `POST /api/messages/publish`
pub async fn publish(
    Operator(who): Operator,
    State(api): State<Arc<Api>>,
    http_headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request = body_as::<PublishRequest>(
        body,
        "a publish request",
        r#"{"queue": "orders", "kind": "order.created", "message": {...}} or {"exchange": "orders", "routing_key": "order.created", "message": {...}} or {"topic": "orders", "key": "order-7", "kind": "order.created", "message": {...}}"#,
    );
    let target = match &request {
        Ok(r) => target(
            r.queue.as_deref(),
            r.exchange.as_deref(),
            r.topic.as_deref(),
        ),
        Err(_) => target(None, None, None),
    };
    let outcome = match request {
        Ok(mut request) => {
            trace_into(&mut request.headers, &http_headers);
            send(&api, request).await
        }
        Err(e) => Err(e),
    };
    api.record(&who, "publish", target, &outcome).await;
    outcome
}

/// `body` as the JSON of `T`, or a 400 saying it is not `what` and to send `example`.
pub(super) fn body_as<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    what: &str,
    example: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not {what} ({e}); send {example}")))
}

/// Where a message goes, as the audit log names it.
pub(super) fn target(queue: Option<&str>, exchange: Option<&str>, topic: Option<&str>) -> String {
    match (queue, exchange, topic) {
        (Some(queue), _, _) => format!("queue {queue}"),
        (None, Some(exchange), _) => format!("exchange {exchange}"),
        (None, None, Some(topic)) => format!("topic {topic}"),
        (None, None, None) => "(no destination)".to_owned(),
    }
}

/// `message` as the payload the API publishes, within `inbox.max_payload_bytes`.
pub(super) fn payload(api: &Api, message: &Value) -> Result<Vec<u8>, ApiError> {
    let payload = serde_json::to_vec(message).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if payload.len() > api.max_payload_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "payload of {} bytes exceeds inbox.max_payload_bytes ({}); publish a smaller message (a reference to the data)",
                payload.len(),
                api.max_payload_bytes
            ),
        ));
    }
    Ok(payload)
}

/// The caller's trace (a `traceparent` HTTP header) into `headers`, unless they carry one.
pub(super) fn trace_into(headers: &mut BTreeMap<String, String>, http_headers: &HeaderMap) {
    if let Some(traceparent) = http_headers
        .get(trace::HEADER)
        .and_then(|v| v.to_str().ok())
    {
        headers
            .entry(trace::HEADER.to_owned())
            .or_insert_with(|| traceparent.to_owned());
    }
}

async fn send(api: &Api, request: PublishRequest) -> Result<Json<Value>, ApiError> {
    let payload = payload(api, &request.message)?;
    let id = request.id.unwrap_or_else(Uuid::now_v7);
    let (destination, kind) = destination(
        (request.queue, request.exchange, request.topic),
        request.routing_key,
        request.kind,
    )?;
    let message =
        names::checked_publish(id, destination, kind, request.headers, payload, request.key)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let queued = store::put(&*api.store, &message).await?;
    Ok(Json(match message.destination {
        Destination::Queue(queue) => json!({ "id": id, "queue": queue, "queued": queued }),
        Destination::Exchange { exchange, .. } => {
            json!({ "id": id, "exchange": exchange, "queued": queued })
        }
        Destination::Topic(topic) => json!({ "id": id, "topic": topic, "queued": queued }),
    }))
}

/// Where a body's `queue`, `exchange` and `routing_key`, or `topic` send a message, and its
/// kind (to an exchange, the routing key when it gives none).
pub(super) fn destination(
    (queue, exchange, topic): (Option<String>, Option<String>, Option<String>),
    routing_key: Option<String>,
    kind: Option<String>,
) -> Result<(Destination, String), ApiError> {
    let kind_for = |what: &str| {
        kind.clone().ok_or_else(|| {
            ApiError::bad_request(format!("a message for a {what} needs a \"kind\""))
        })
    };
    match (queue, exchange, topic) {
        (Some(queue), None, None) => Ok((Destination::Queue(queue), kind_for("queue")?)),
        (None, None, Some(topic)) => Ok((Destination::Topic(topic), kind_for("topic")?)),
        (None, Some(exchange), None) => {
            let routing_key = routing_key.unwrap_or_default();
            let kind = kind.unwrap_or_else(|| routing_key.clone());
            let destination = Destination::Exchange {
                exchange,
                routing_key,
            };
            Ok((destination, kind))
        }
        _ => Err(ApiError::bad_request(
            "give \"queue\" (an inbox queue), \"exchange\" (with \"routing_key\") or \"topic\" (a Kafka topic), one of them",
        )),
    }
}
