//! Held keys: `GET /api/keys/held` lists the ordering keys a dead letter of an ordered
//! plugin holds (the message holding each, how many wait behind it); `POST
//! /api/keys/held/skip` lets one go on without its message. Retrying the failed message
//! (`/api/messages/retry/{id}`) releases its key instead, once the message is handled.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Api;
use super::auth::{Operator, Reader};
use super::error::ApiError;
use crate::names;

/// Most held keys one call lists.
pub const MAX_HELD_KEYS: u32 = 1_000;

/// `GET /api/keys/held[?limit=N]` (default 100), oldest first.
pub async fn held(
    _: Reader,
    State(api): State<Arc<Api>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let limit = super::limit(query.as_deref(), MAX_HELD_KEYS)?;
    let items = api.store.held_keys(limit).await?;
    Ok(Json(json!({ "items": items })))
}

/// The body of a skip: which key of which queue, for which plugin.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Skip {
    queue: String,
    key: String,
    plugin: String,
}

/// `POST /api/keys/held/skip` with `{"queue", "key", "plugin"}`.
pub async fn skip(
    Operator(who): Operator,
    State(api): State<Arc<Api>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request = body
        .map_err(|r| ApiError::new(r.status(), r.body_text()))
        .and_then(|body| {
            serde_json::from_slice::<Skip>(&body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body is not a skip ({e}); send {{\"queue\": \"orders\", \"key\": \"order-42\", \"plugin\": \"audit-log\"}} (GET /api/keys/held lists them)"
                ))
            })
        })
        .and_then(|s| {
            names::queue(&s.queue)
                .and_then(|()| names::ordering_key(&s.key))
                .and_then(|()| names::plugin(&s.plugin))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            Ok(s)
        });
    let target = match &request {
        Ok(s) => format!(
            "key {} of queue {} for plugin {}",
            s.key,
            s.queue,
            names::storable(&s.plugin)
        ),
        Err(_) => "(no key)".to_owned(),
    };
    let outcome = async {
        let Skip { queue, key, plugin } = request?;
        if !api.store.skip_held_key(&queue, &key, &plugin).await? {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "key {key:?} of queue {queue:?} is not held for plugin {:?}; GET /api/keys/held lists the held keys",
                    names::storable(&plugin)
                ),
            ));
        }
        Ok(Json(
            json!({ "queue": queue, "key": key, "plugin": plugin, "skipped": true }),
        ))
    }
    .await;
    api.record(&who, "skip key", target, &outcome).await;
    outcome
}
