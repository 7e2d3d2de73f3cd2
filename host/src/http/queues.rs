//! Queues: what `wharf queues` shows (the inbox queues with messages or dead letters, and
//! the AMQP queues this host consumes), one queue's numbers, and purging one, which takes
//! `?confirm=<queue name>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Api;
use super::auth::{Operator, Reader};
use super::error::ApiError;
use crate::store::{QueueSource, QueueStats, now_ms};
use crate::transport::amqp::connection::display_url;
use crate::transport::amqp::depth::{self, QueueDepth};

/// How long the broker may take to answer for the AMQP queues.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// An inbox queue as the API shows it (the seed's `message_count`, and the parts), with
/// what the fleet handled of it in the last minute.
fn inbox(q: &QueueStats, now: i64, handled: u64) -> Value {
    json!({
        "name": q.queue,
        "source": "inbox",
        "message_count": q.pending + q.in_flight + q.scheduled,
        "ready": q.pending,
        "in_flight": q.in_flight,
        "scheduled": q.scheduled,
        "failed": q.failed,
        "oldest_age_seconds": q.oldest_at.map(|at| (now - at).max(0) as f64 / 1000.0),
        "handled_per_minute": handled,
    })
}

/// A consumed AMQP queue as the API shows it: the broker's numbers (`null`: the queue does
/// not exist), and its messages among the failed messages.
fn amqp(d: &QueueDepth, failed: u64, handled: u64) -> Value {
    json!({
        "name": d.queue,
        "source": "amqp",
        "message_count": d.ready,
        "consumer_count": d.consumers,
        "dead_letters": d.dead_letters,
        "failed": failed,
        "handled_per_minute": handled,
    })
}

/// Every queue: the inbox's (those with messages or dead letters, and those the fleet
/// handled messages of in the last minute), then the consumed AMQP queues (each with an
/// `error` when the broker cannot be reached).
async fn all(api: &Api) -> Result<Vec<Value>, ApiError> {
    let now = now_ms();
    let mut stats = api.store.queue_stats().await?;
    let rates: HashMap<String, u64> = api.store.handled_per_minute().await?.into_iter().collect();
    let handled = |source: QueueSource, queue: &str| {
        let prefix = match source {
            QueueSource::Inbox => "inbox",
            QueueSource::Amqp => "amqp",
        };
        rates
            .get(&format!("{prefix}:{queue}"))
            .copied()
            .unwrap_or(0)
    };
    for queue in rates.keys().filter_map(|s| s.strip_prefix("inbox:")) {
        let listed = stats
            .iter()
            .any(|q| q.source == QueueSource::Inbox && q.queue == queue);
        if !listed {
            stats.push(QueueStats {
                queue: queue.to_owned(),
                ..QueueStats::default()
            });
        }
    }
    stats.sort_by(|a, b| (a.source, &a.queue).cmp(&(b.source, &b.queue)));
    let mut queues: Vec<Value> = stats
        .iter()
        .filter(|q| q.source == QueueSource::Inbox)
        .map(|q| inbox(q, now, handled(q.source, &q.queue)))
        .collect();
    if api.amqp.consume.is_empty() {
        return Ok(queues);
    }
    let failed = |queue: &str| {
        stats
            .iter()
            .find(|q| q.source == QueueSource::Amqp && q.queue == queue)
            .map_or(0, |q| q.failed)
    };
    let unreachable = |why: String| {
        let error = format!(
            "AMQP broker {} unreachable: {why}",
            display_url(&api.amqp.url)
        );
        api.amqp.consume.iter().map(move |spec| {
            let failed = failed(&spec.queue);
            let handled = handled(QueueSource::Amqp, &spec.queue);
            json!({ "name": spec.queue, "source": "amqp", "failed": failed, "handled_per_minute": handled, "error": error })
        })
    };
    match tokio::time::timeout(BROKER_TIMEOUT, depth::depths(&api.amqp)).await {
        Ok(Ok(depths)) => queues.extend(
            depths
                .iter()
                .map(|d| amqp(d, failed(&d.queue), handled(QueueSource::Amqp, &d.queue))),
        ),
        Ok(Err(e)) => queues.extend(unreachable(e.to_string())),
        Err(_) => queues.extend(unreachable(format!("no answer within {BROKER_TIMEOUT:?}"))),
    }
    Ok(queues)
}

/// `GET /api/queues`
pub async fn list(_: Reader, State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Array(all(&api).await?)))
}

/// The queue named `name` (of `source`, `inbox` or `amqp`, when given).
async fn one(api: &Api, name: &str, source: Option<&str>) -> Result<Value, ApiError> {
    if let Some(source) = source.filter(|s| !matches!(*s, "inbox" | "amqp")) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("source {source:?} is neither inbox nor amqp"),
        ));
    }
    let mut found: Vec<Value> = all(api)
        .await?
        .into_iter()
        .filter(|q| q["name"] == name && source.is_none_or(|s| q["source"] == s))
        .collect();
    match found.len() {
        0 => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no queue {name:?}: an inbox queue is listed while it holds messages or dead letters, an AMQP queue while this host consumes it (GET /api/queues)"
            ),
        )),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{name:?} is both an inbox queue and a consumed AMQP queue; add ?source=inbox or ?source=amqp"
            ),
        )),
    }
}

/// `GET /api/queues/{queue}/stats[?source=inbox|amqp]`
pub async fn stats(
    _: Reader,
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let source = query.get("source").map(String::as_str);
    Ok(Json(one(&api, &name, source).await?))
}

/// `POST /api/queues/{queue}/purge?confirm={queue}[&source=inbox|amqp]`: delete the
/// queue's waiting messages (an inbox queue's unclaimed ones; an AMQP queue's ready
/// ones), not those being handled.
pub async fn purge(
    Operator(who): Operator,
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let outcome = async {
        let queue = one(&api, &name, query.get("source").map(String::as_str)).await?;
        if query.get("confirm") != Some(&name) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "purging deletes the {} messages waiting in {name:?} for good; repeat the call with ?confirm={name} to do it",
                    queue["message_count"]
                ),
            ));
        }
        let purged = match queue["source"].as_str() {
            Some("inbox") => api.store.purge_queue(&name).await?,
            _ => depth::purge(&api.amqp, &name)
                .await
                .map(u64::from)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the broker did not purge {name:?}: {e}; try again"),
                    )
                })?,
        };
        Ok(Json(json!({ "queue": name, "source": queue["source"], "purged": purged })))
    }
    .await;
    api.record(&who, "purge", format!("queue {name}"), &outcome)
        .await;
    outcome
}
