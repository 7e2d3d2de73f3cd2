//! Queues and failed messages: what `wharf queues` and `wharf failed` show and do.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Api;
use super::auth::{Operator, Reader};
use super::error::ApiError;
use crate::store::RetrySelection;

/// A failed-message id from the path.
fn failed_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("failed message id {id:?} is not a number (the id column of GET /api/messages/failed)"),
        )
    })
}

fn no_such(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no failed message {id}; GET /api/messages/failed lists them"),
    )
}

/// `GET /api/queues`
pub async fn queues(_: Reader, State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    let stats = api.store.queue_stats().await?;
    let queues: Vec<Value> = stats
        .iter()
        .map(|q| {
            json!({
                "name": q.queue,
                "source": "inbox",
                "message_count": q.pending + q.in_flight + q.scheduled,
                "ready": q.pending,
                "in_flight": q.in_flight,
                "scheduled": q.scheduled,
                "failed": q.failed,
            })
        })
        .collect();
    Ok(Json(Value::Array(queues)))
}

/// `GET /api/messages/failed`
pub async fn failed_list(_: Reader, State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    let failed = api.store.failed_list().await?;
    Ok(Json(json!({ "total": failed.len(), "items": failed })))
}

/// `GET /api/messages/failed/{id}`
pub async fn failed_get(
    _: Reader,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = failed_id(&id)?;
    let (message, attempts) = api.store.failed_get(id).await?.ok_or_else(|| no_such(id))?;
    Ok(Json(json!({ "message": message, "attempts": attempts })))
}

/// `POST /api/messages/retry/{id}`
pub async fn failed_retry(
    Operator(who): Operator,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let outcome = async {
        let id = failed_id(&id)?;
        let retried = api.store.failed_retry(RetrySelection::One(id)).await?;
        if retried.total() == 0 {
            return Err(no_such(id));
        }
        Ok(Json(json!({
            "retried": retried.total(),
            "to_inbox": retried.inbox,
            "to_broker": retried.broker,
        })))
    }
    .await;
    api.record(&who, "retry", format!("failed message {id}"), &outcome)
        .await;
    outcome
}

/// `DELETE /api/messages/failed/{id}`
pub async fn failed_delete(
    Operator(who): Operator,
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let outcome = async {
        let id = failed_id(&id)?;
        if !api.store.failed_delete(id).await? {
            return Err(no_such(id));
        }
        Ok(Json(json!({ "deleted": 1 })))
    }
    .await;
    api.record(&who, "delete", format!("failed message {id}"), &outcome)
        .await;
    outcome
}
