//! The admin HTTP API (axum), served by `wharf run` when `[http] listen` is set: health
//! probes (open), and the operations of the CLI behind bearer tokens (`auth`), every
//! answer JSON (`error`, `guard`). It stops with the host: idle connections at once, the
//! requests in flight within a grace period (`server`).
//!
//! | route | scope | what |
//! |---|---|---|
//! | `GET /` | open | the dashboard (`dashboard`), a client of the routes below |
//! | `GET /api/whoami` | read | the token's name and scope |
//! | `GET /api/health` | open | liveness |
//! | `GET /api/health/ready` | open | database, broker, plugins; 503 naming what fails |
//! | `GET /metrics` | open | Prometheus text: handler calls, settles, depths, backlog |
//! | `GET /api/queues` | read | inbox and consumed AMQP queues: depths, consumers, age |
//! | `GET /api/queues/{queue}/stats` | read | one of them |
//! | `POST /api/queues/{queue}/purge?confirm={queue}` | operate | delete its waiting messages |
//! | `GET /api/messages/failed` | read | a page of failed messages a filter selects |
//! | `GET /api/messages/failed/{id}` | read | one, with its attempt history |
//! | `POST /api/messages/retry/{id}` | operate | send one back to its queue or exchange |
//! | `DELETE /api/messages/failed/{id}` | operate | delete one |
//! | `POST /api/messages/retry`, `/delete` | operate | in bulk: by ids, filter or all |
//! | `POST /api/messages/publish` | operate | into an inbox queue, or to an exchange via the outbox |
//! | `GET /api/keys/held[?limit=N]` | read | ordering keys a dead letter holds, oldest first |
//! | `POST /api/keys/held/skip` | operate | let a held key go on without its message |
//! | `GET /api/plugins` | read | this host's plugins, every host's, the registry's |
//! | `POST /api/plugins` | operate | deploy the `.wasm` in the body to the fleet |
//! | `POST /api/plugins/{name}/rollback` | operate | return to the previous deployment |
//! | `GET /api/plugins/{name}/history` | read | every deployment, newest first |
//! | `GET /api/audit[?limit=N]` | read | the calls that changed something, newest first |
//! | `GET /api/flow[?minutes=N]` | read | handled, retried, dead and call time per minute |
//!
//! Every call that changes something writes an audit row (who: the token's name, what, on
//! what, how it ended), whether it succeeded or not.

mod auth;
pub mod config;
mod dashboard;
mod error;
mod flow;
mod guard;
mod health;
mod keys;
mod messages;
mod metrics;
mod plugins;
mod publish;
mod queues;
mod request;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router, middleware};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::names;
use crate::plugins::Catalog;
use crate::runtime::Runtime;
use crate::store::{AuditEntry, Store};
use crate::transport::amqp::AmqpConfig;
use crate::transport::amqp::connection::BrokerLink;
use crate::transport::kafka::{KafkaConfig, KafkaView};
use error::ApiError;

pub use auth::Tokens;
pub use config::{HttpConfig, Scope};

/// What the API's handlers reach.
pub struct Api {
    /// This host's id, as `wharf plugins list` shows it.
    pub host: String,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The plugins served.
    pub plugins: Arc<Catalog>,
    /// The sandbox, to validate an uploaded plugin as `wharf plugins deploy` does.
    pub runtime: Arc<Runtime>,
    /// The broker connection, when this host consumes from or relays to one.
    pub broker: Option<BrokerLink>,
    /// The Kafka clients, when this host consumes topics or relays to them.
    pub kafka: Option<KafkaView>,
    /// The broker and the queues this host consumes (`[amqp]`), for their depths and purge.
    pub amqp: AmqpConfig,
    /// The brokers and the topics the fleet consumes (`[kafka]`), for their lag.
    pub kafka_config: KafkaConfig,
    /// `inbox.max_payload_bytes`: the largest message the API publishes.
    pub max_payload_bytes: usize,
    /// `http.max_request_timeout_ms`: the longest a request's caller waits.
    pub max_request_timeout: Duration,
    /// Who may call (`Tokens::from_config`).
    pub tokens: Tokens,
    /// Whether this host handles messages (`wharf run`), or only serves the API (`wharf
    /// serve`): readiness asks for loaded plugins only of the former.
    pub handles: bool,
}

impl Api {
    /// Record a call by `who` that changed, or tried to change, `target`.
    async fn record(
        &self,
        who: &str,
        action: &str,
        target: String,
        outcome: &Result<Json<Value>, ApiError>,
    ) {
        let result = match outcome {
            Ok(Json(answer)) => format!("ok: {answer}"),
            Err(e) => format!("{}: {}", e.status.as_u16(), e.message),
        };
        let entry = AuditEntry {
            id: 0,
            at: 0,
            who: who.to_owned(),
            action: action.to_owned(),
            target,
            result,
        };
        if let Err(e) = self.store.audit(&entry).await {
            tracing::error!(
                who,
                action,
                target = entry.target,
                "HTTP API: the audit row could not be written: {e}"
            );
        }
    }
}

/// A list's `?limit=N` in `query`: 1 to `most`, 100 when absent.
fn limit(query: Option<&str>, most: u32) -> Result<u32, ApiError> {
    match query.and_then(|q| q.strip_prefix("limit=")) {
        None => Ok(100),
        Some(n) => n
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=most).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "limit {:?} must be a number from 1 to {most}",
                        names::storable(n)
                    ),
                )
            }),
    }
}

/// Most audit entries one call returns.
const MAX_AUDIT_ENTRIES: u32 = 1_000;

/// `GET /api/audit[?limit=N]` (default 100).
async fn audit(
    _: auth::Reader,
    State(api): State<Arc<Api>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(query.as_deref(), MAX_AUDIT_ENTRIES)?;
    let entries = api.store.audit_list(limit).await?;
    Ok(Json(serde_json::json!({ "items": entries })))
}

/// The routes, over `api`, taking bodies within `limits`.
pub fn router(api: Arc<Api>, limits: guard::BodyLimits) -> Router {
    let routes = Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/flow.js", get(dashboard::flow_script))
        .route("/dashboard/app.css", get(dashboard::style))
        .route("/api/whoami", get(dashboard::whoami))
        .route("/api/health", get(health::live))
        .route("/api/health/ready", get(health::ready))
        .route("/metrics", get(metrics::scrape))
        .route("/api/flow", get(flow::history))
        .route("/api/queues", get(queues::list))
        .route("/api/queues/{queue}/stats", get(queues::stats))
        .route("/api/queues/{queue}/purge", post(queues::purge))
        .route("/api/messages/failed", get(messages::failed_list))
        .route("/api/messages/failed/{id}", get(messages::failed_get))
        .route("/api/messages/failed/{id}", delete(messages::failed_delete))
        .route("/api/messages/retry/{id}", post(messages::failed_retry))
        .route("/api/messages/retry", post(messages::bulk_retry))
        .route("/api/messages/delete", post(messages::bulk_delete))
        .route("/api/messages/publish", post(publish::publish))
        .route("/api/messages/request", post(request::request))
        .route("/api/keys/held", get(keys::held))
        .route("/api/keys/held/skip", post(keys::skip))
        .route("/api/plugins", get(plugins::list).post(plugins::deploy))
        .route("/api/plugins/{name}/rollback", post(plugins::rollback))
        .route("/api/plugins/{name}/history", get(plugins::history))
        .route("/api/audit", get(audit))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see the README's HTTP API section",
            )
        })
        .layer(DefaultBodyLimit::max(limits.max_bytes))
        .with_state(api);
    // Around the whole router, not each route: the guard sees axum's own answers as they
    // go out (a wrong method's with its `Allow` header).
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn_with_state(limits, guard::guard))
}

/// A listener on `address` (`http.listen`). From now on the host counts what `/metrics`
/// shows.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    crate::metrics::prometheus();
    TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address} (http.listen): is another process using it?")
    })
}

/// Serve `api` on `listener` with the limits of `config` until `shutdown` flips; requests
/// in flight get `http.shutdown_grace_ms` to finish.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    config: &HttpConfig,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "HTTP API listening");
    let limits = guard::BodyLimits {
        max_bytes: config.max_body_bytes,
        timeout: Duration::from_millis(config.body_timeout_ms),
    };
    let timeouts = server::Timeouts {
        header: Duration::from_millis(config.header_timeout_ms),
        shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
    };
    server::serve(listener, router(api, limits), timeouts, shutdown).await;
    Ok(())
}
