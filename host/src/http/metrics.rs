//! `GET /metrics`: Prometheus text, open like the health probes. The counters and
//! histograms are recorded as messages flow (`crate::metrics`); the gauges of what waits
//! (inbox depths and oldest age, failed messages, held keys, outbox, broker link, plugins
//! served)
//! are read from the store and the host when scraped, so they are exact at that moment.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::Api;
use crate::metrics;
use crate::store::StoreError;

/// How long the database may take to answer a scrape's queries.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /metrics`
pub async fn scrape(State(api): State<Arc<Api>>) -> impl IntoResponse {
    let read = async {
        let queues = api.store.queue_stats().await?;
        let backlog = api.store.backlog().await?;
        let held = api.store.held_by_plugin().await?;
        Ok::<_, StoreError>((queues, backlog, held))
    };
    match tokio::time::timeout(SCRAPE_TIMEOUT, read).await {
        Ok(Ok((queues, backlog, held))) => {
            metrics::queues(&queues, crate::store::now_ms());
            metrics::backlog(&backlog);
            metrics::held_keys(&held);
            metrics::database_up(true);
        }
        Ok(Err(e)) => {
            tracing::warn!("/metrics: the database failed: {e}");
            metrics::database_up(false);
        }
        Err(_) => {
            tracing::warn!("/metrics: the database did not answer within {SCRAPE_TIMEOUT:?}");
            metrics::database_up(false);
        }
    }
    if let Some(link) = &api.broker {
        metrics::amqp_connected(link.connected());
    }
    if let Some(kafka) = &api.kafka {
        metrics::kafka_connected(kafka.link.connected());
    }
    metrics::plugins(
        api.plugins
            .current()
            .iter()
            .map(|p| {
                let version = p.manifest.version.clone();
                (p.name().to_owned(), version, p.sha256.clone())
            })
            .collect(),
    );
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        metrics::prometheus().render(),
    )
}
