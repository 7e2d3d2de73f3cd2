//! Probes for an orchestrator, open to everyone: liveness (`/api/health`: the process
//! answers) and readiness (`/api/health/ready`: the database answers, the AMQP broker
//! and a Kafka broker are reachable when this host uses them, plugins are loaded); 503 naming each check
//! that fails.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Api;
use crate::names;

/// How long the database may take to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /api/health`
pub async fn live(State(api): State<Arc<Api>>) -> Json<Value> {
    Json(json!({ "status": "healthy", "service": "wharf", "host": api.host }))
}

/// `GET /api/health/ready`
pub async fn ready(State(api): State<Arc<Api>>) -> (StatusCode, Json<Value>) {
    let database = match tokio::time::timeout(PROBE_TIMEOUT, api.store.ping()).await {
        Ok(Ok(())) => Ok("ok"),
        Ok(Err(e)) => Err(format!("the database failed: {e}")),
        Err(_) => Err(format!(
            "the database did not answer within {PROBE_TIMEOUT:?}"
        )),
    };
    // A host that neither consumes from nor relays to a broker does not use one.
    let broker = match &api.broker {
        Some(link) if !link.connected() => Err("not connected to the AMQP broker".to_owned()),
        Some(_) => Ok("ok"),
        None => Ok("not used"),
    };
    let kafka = match &api.kafka {
        Some(kafka) if !kafka.link.connected() => Err(format!(
            "no Kafka broker reachable at {} (kafka.brokers); start them or fix the setting",
            names::storable(&api.kafka_config.brokers)
        )),
        Some(_) => Ok("ok"),
        None => Ok("not used"),
    };
    let plugins = match api.plugins.current().len() {
        0 if api.handles => Err("no plugins loaded".to_owned()),
        _ => Ok("ok"),
    };
    let checks = [
        ("database", database),
        ("broker", broker),
        ("kafka", kafka),
        ("plugins", plugins),
    ];
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, c)| c.is_err())
        .map(|(name, _)| *name)
        .collect();
    let detail: serde_json::Map<String, Value> = checks
        .iter()
        .map(|(name, check)| {
            let value = match check {
                Ok(fine) => json!(fine),
                Err(e) => json!(e),
            };
            ((*name).to_owned(), value)
        })
        .collect();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if failing.is_empty() { "ready" } else { "not ready" },
        "failing": failing,
        "checks": detail,
    });
    (status, Json(body))
}
