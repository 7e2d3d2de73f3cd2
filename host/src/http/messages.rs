//! Failed messages: what `wharf failed` shows and does, one message at a time or in bulk
//! by ids or filter.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Api;
use super::auth::{Operator, Reader};
use super::error::ApiError;
use crate::store::{FailedFilter, FailedPage, FailedStatus, PageRequest, parse_time};

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

/// Why a retry or delete of the one failed message `id` took nothing: it is not there
/// (404), or its status does not allow it (409, saying what does).
async fn not_taken(api: &Api, id: i64, verb: &str) -> ApiError {
    let status = match api.store.failed_get(id).await {
        Ok(Some((message, _))) => message.status,
        Ok(None) => return no_such(id),
        Err(e) => return e.into(),
    };
    let why = match status {
        FailedStatus::Retrying => {
            "it is being retried (status retrying): its message is back in its queue; it can be retried or deleted again once it fails, or once its queue is purged"
        }
        FailedStatus::Resolved => "it was retried and handled (status resolved)",
        FailedStatus::Failed | FailedStatus::Pending => "it changed meanwhile; look again",
    };
    ApiError::new(
        StatusCode::CONFLICT,
        format!("failed message {id} cannot be {verb}: {why}"),
    )
}

/// Failed messages per page unless `limit` says.
const DEFAULT_PAGE: u32 = 50;
/// Most failed messages per page, and per bulk retry or delete.
const MAX_PAGE: u32 = 1000;

/// The filter and page of a list's query string.
fn list_query(pairs: Vec<(String, String)>) -> Result<(FailedFilter, PageRequest), ApiError> {
    let mut filter = FailedFilter::default();
    let mut page = PageRequest {
        before: None,
        limit: DEFAULT_PAGE,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "plugin" => filter.plugin = Some(value),
            "plugin_version" => filter.plugin_version = Some(value),
            "kind" => filter.kind = Some(value),
            "queue" => filter.queue = Some(value),
            "source" => filter.source = Some(value),
            "error" => filter.error = Some(value),
            "status" => {
                filter.status = Some(FailedStatus::parse(&value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "status {value:?} is not one of pending, failed, retrying, resolved"
                    ))
                })?)
            }
            "since" => filter.since = Some(parse_time(&value).map_err(ApiError::bad_request)?),
            "until" => filter.until = Some(parse_time(&value).map_err(ApiError::bad_request)?),
            "before" => page.before = Some(value.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "before {value:?} is not a failed message id (the `next` of the previous page)"
                ))
            })?),
            "limit" => {
                page.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit {value:?} must be a number from 1 to {MAX_PAGE}"
                        ))
                    })?
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: filter by plugin, plugin_version, kind, queue, source, error, status, since, until; page with before and limit"
                )));
            }
        }
    }
    Ok((filter, page))
}

/// `GET /api/messages/failed[?plugin=&kind=&error=&...&before=&limit=]`: a page, newest
/// first, with the total the filter selects and the `before` of the next page.
pub async fn failed_list(
    _: Reader,
    State(api): State<Arc<Api>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<FailedPage>, ApiError> {
    let Query(pairs) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let (filter, page) = list_query(pairs)?;
    filter.check().map_err(ApiError::bad_request)?;
    Ok(Json(api.store.failed_list(&filter, page).await?))
}

/// The body of a bulk retry or delete: `ids`, or a `filter` (the list's conditions, and
/// `ids`), or `all`; at most `limit` messages (default and most: 1,000) in one
/// transaction.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Bulk {
    #[serde(default)]
    ids: Vec<i64>,
    #[serde(default)]
    filter: FailedFilter,
    #[serde(default)]
    all: bool,
    limit: Option<u32>,
}

impl Bulk {
    /// The body's selection and limit, or why it is refused.
    fn parse(
        body: Result<Bytes, BytesRejection>,
        verb: &str,
    ) -> Result<(Self, FailedFilter, u64), ApiError> {
        let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
        let bulk: Bulk = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body does not select failed messages ({e}); send {{\"ids\": [1, 2]}}, {{\"filter\": {{\"plugin\": \"billing\", \"error\": \"timeout\"}}}} or {{\"all\": true}}"
            ))
        })?;
        let mut filter = bulk.filter.clone();
        filter.ids.extend(&bulk.ids);
        filter.check().map_err(ApiError::bad_request)?;
        if filter.is_everything() && !bulk.all {
            return Err(ApiError::bad_request(format!(
                "name the failed messages to {verb}: \"ids\", a \"filter\", or \"all\": true for every one"
            )));
        }
        let limit = bulk.limit.unwrap_or(MAX_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit {limit} must be from 1 to {MAX_PAGE}"
            )));
        }
        Ok((bulk, filter, u64::from(limit)))
    }
}

/// `POST /api/messages/retry`: send back the failed messages the body selects (failed or
/// pending ones; up to its limit, in one transaction). `more` says the limit was reached:
/// call again for the rest.
pub async fn bulk_retry(
    Operator(who): Operator,
    State(api): State<Arc<Api>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let parsed = Bulk::parse(body, "retry");
    let target = selection(&parsed);
    let outcome = async {
        let (_, filter, limit) = parsed?;
        let retried = api.store.failed_retry(&filter, limit).await?;
        Ok(Json(json!({
            "retried": retried.total(),
            "to_inbox": retried.inbox,
            "to_broker": retried.broker,
            "more": retried.total() == limit,
        })))
    }
    .await;
    api.record(&who, "retry", target, &outcome).await;
    outcome
}

/// `POST /api/messages/delete`: delete the failed messages the body selects and their
/// history (up to its limit, in one transaction); `more` as for a retry.
pub async fn bulk_delete(
    Operator(who): Operator,
    State(api): State<Arc<Api>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let parsed = Bulk::parse(body, "delete");
    let target = selection(&parsed);
    let outcome = async {
        let (_, filter, limit) = parsed?;
        let deleted = api.store.failed_delete(&filter, limit).await?;
        Ok(Json(
            json!({ "deleted": deleted, "more": deleted == limit }),
        ))
    }
    .await;
    api.record(&who, "delete", target, &outcome).await;
    outcome
}

/// The audit trail's target of a bulk call.
fn selection(parsed: &Result<(Bulk, FailedFilter, u64), ApiError>) -> String {
    match parsed {
        Ok((bulk, _, _)) => format!(
            "failed messages {}",
            serde_json::to_string(bulk).unwrap_or_default()
        ),
        Err(_) => "failed messages (unreadable selection)".to_owned(),
    }
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
        let retried = api.store.failed_retry(&FailedFilter::id(id), 1).await?;
        if retried.total() == 0 {
            return Err(not_taken(&api, id, "retried").await);
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
        if api.store.failed_delete(&FailedFilter::id(id), 1).await? == 0 {
            return Err(not_taken(&api, id, "deleted").await);
        }
        Ok(Json(json!({ "deleted": 1 })))
    }
    .await;
    api.record(&who, "delete", format!("failed message {id}"), &outcome)
        .await;
    outcome
}
