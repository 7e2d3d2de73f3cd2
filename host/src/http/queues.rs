//! Queues: what `wharf queues` shows (the inbox queues with messages or dead letters, the
//! AMQP queues and the Kafka topics the fleet consumes, with the group's lag by
//! partition), one queue's numbers, and purging one, which takes `?confirm=<queue name>`.

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
use crate::names;
use crate::store::{QueueSource, QueueStats, now_ms};
use crate::transport::amqp::connection::display_url;
use crate::transport::amqp::depth::{self, QueueDepth};
use crate::transport::kafka::lag::{self, TopicLag};

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

/// A consumed Kafka topic as the API shows it: the group's lag (all of it, and by
/// partition), and its records among the failed messages.
fn kafka(lag: &TopicLag, failed: u64, handled: u64) -> Value {
    let partitions: Vec<Value> = (lag.partitions.iter())
        .map(|(p, l)| json!({ "partition": p, "high": l.high, "committed": l.committed, "lag": l.lag }))
        .collect();
    json!({
        "name": lag.topic,
        "source": "kafka",
        "message_count": lag.lag,
        "lag": lag.lag,
        "partitions": partitions,
        "dead_letter_topic": lag.dead_letter_topic,
        "failed": failed,
        "handled_per_minute": handled,
    })
}

/// Every queue: the inbox's (those with messages or dead letters, and those the fleet
/// handled messages of in the last minute), then the consumed AMQP queues and Kafka
/// topics (each with an `error` when the brokers cannot be reached).
async fn all(api: &Api) -> Result<Vec<Value>, ApiError> {
    let now = now_ms();
    let mut stats = api.store.queue_stats().await?;
    let rates: HashMap<String, u64> = api.store.handled_per_minute().await?.into_iter().collect();
    let handled = |source: QueueSource, queue: &str| {
        let source = format!("{}:{queue}", source.prefix());
        rates.get(&source).copied().unwrap_or(0)
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
    let failed = |source: QueueSource, queue: &str| {
        (stats.iter())
            .find(|q| q.source == source && q.queue == queue)
            .map_or(0, |q| q.failed)
    };
    let mut queues: Vec<Value> = stats
        .iter()
        .filter(|q| q.source == QueueSource::Inbox)
        .map(|q| inbox(q, now, handled(q.source, &q.queue)))
        .collect();
    let counts = |source: QueueSource, queue: &str| (failed(source, queue), handled(source, queue));
    queues.extend(amqp_queues(api, counts).await);
    queues.extend(kafka_topics(api, counts).await);
    Ok(queues)
}

/// The consumed AMQP queues, with (failed, handled per minute) from `counts`.
async fn amqp_queues(api: &Api, counts: impl Fn(QueueSource, &str) -> (u64, u64)) -> Vec<Value> {
    let counts = |queue: &str| counts(QueueSource::Amqp, queue);
    if api.amqp.consume.is_empty() {
        return Vec::new();
    }
    let unreachable = |why: String| {
        let error = format!(
            "AMQP broker {} unreachable: {why}",
            display_url(&api.amqp.url)
        );
        (api.amqp.consume.iter())
            .map(|spec| {
                let (failed, handled) = counts(&spec.queue);
                json!({ "name": spec.queue, "source": "amqp", "failed": failed, "handled_per_minute": handled, "error": error })
            })
            .collect()
    };
    match tokio::time::timeout(BROKER_TIMEOUT, depth::depths(&api.amqp)).await {
        Ok(Ok(depths)) => (depths.iter())
            .map(|d| {
                let (failed, handled) = counts(&d.queue);
                amqp(d, failed, handled)
            })
            .collect(),
        Ok(Err(e)) => unreachable(e.to_string()),
        Err(_) => unreachable(format!("no answer within {BROKER_TIMEOUT:?}")),
    }
}

/// The consumed Kafka topics, with (failed, handled per minute) from `counts`.
async fn kafka_topics(api: &Api, counts: impl Fn(QueueSource, &str) -> (u64, u64)) -> Vec<Value> {
    let counts = |topic: &str| counts(QueueSource::Kafka, topic);
    let config = &api.kafka_config;
    if config.consume.is_empty() {
        return Vec::new();
    }
    let lags: Vec<(String, Result<TopicLag, String>)> =
        match tokio::time::timeout(BROKER_TIMEOUT, lag::lags(config)).await {
            Ok(lags) => (lags.into_iter())
                .map(|(topic, lag)| (topic, lag.map_err(|e| e.to_string())))
                .collect(),
            Err(_) => (config.consume.iter())
                .map(|spec| {
                    let error = format!(
                        "Kafka brokers {} did not tell the lag within {BROKER_TIMEOUT:?}",
                        config.brokers
                    );
                    (spec.topic.clone(), Err(error))
                })
                .collect(),
        };
    (lags.into_iter())
        .map(|(topic, lag)| {
            let (failed, handled) = counts(&topic);
            match lag {
                Ok(lag) => kafka(&lag, failed, handled),
                Err(error) => {
                    json!({ "name": topic, "source": "kafka", "failed": failed, "handled_per_minute": handled, "error": error })
                }
            }
        })
        .collect()
}

/// `GET /api/queues`
pub async fn list(_: Reader, State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Array(all(&api).await?)))
}

/// The queue named `name` (of `source`, `inbox`, `amqp` or `kafka`, when given).
async fn one(api: &Api, name: &str, source: Option<&str>) -> Result<Value, ApiError> {
    if let Some(source) = source.filter(|s| !matches!(*s, "inbox" | "amqp" | "kafka")) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "source {:?} is none of inbox, amqp and kafka",
                names::storable(source)
            ),
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
                "no queue {:?}: an inbox queue is listed while it holds messages or dead letters, an AMQP queue or a Kafka topic while the fleet consumes it (GET /api/queues)",
                names::storable(name)
            ),
        )),
        1 => Ok(found.remove(0)),
        _ => {
            let sources: Vec<&str> = found.iter().filter_map(|q| q["source"].as_str()).collect();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "{:?} names queues of several sources ({}); add ?source= one of them",
                    names::storable(name),
                    sources.join(", ")
                ),
            ))
        }
    }
}

/// `GET /api/queues/{queue}/stats[?source=inbox|amqp|kafka]`
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
/// ones), not those being handled. A Kafka topic is not purged.
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
            Some("kafka") => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{name:?} is a Kafka topic: its records stay in the log, and wharf does not move the group's offsets past them; purge its inbox queue of the same name with ?source=inbox, or reset the group's offsets with kafka-consumer-groups.sh"
                    ),
                ));
            }
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
