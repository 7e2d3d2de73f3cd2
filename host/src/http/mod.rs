//! The admin HTTP API (axum), served by `wharf run` when `[http] listen` is set: health
//! probes (open), and the operations of the CLI behind bearer tokens (`auth`), every
//! answer JSON (`error`). It stops with the host: graceful shutdown on the same signal.
//!
//! | route | scope | what |
//! |---|---|---|
//! | `GET /api/health` | open | liveness |
//! | `GET /api/health/ready` | open | database, broker, plugins; 503 naming what fails |
//! | `GET /api/queues` | read | inbox queues: pending, in flight, scheduled, failed |
//! | `GET /api/messages/failed` | read | the failed messages |
//! | `GET /api/messages/failed/{id}` | read | one, with its attempt history |
//! | `POST /api/messages/retry/{id}` | operate | send one back to its queue or exchange |
//! | `DELETE /api/messages/failed/{id}` | operate | delete one |

mod auth;
pub mod config;
mod error;
mod health;
mod messages;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::plugins::Catalog;
use crate::store::Store;
use crate::transport::amqp::supervisor::BrokerLink;
use auth::Tokens;
use config::{HttpConfig, Token};
use error::ApiError;

pub use config::Scope;

/// What the API's handlers reach.
pub struct Api {
    /// This host's id, as `wharf plugins list` shows it.
    pub host: String,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The plugins served.
    pub plugins: Arc<Catalog>,
    /// The broker connection, when this host consumes from or relays to one.
    pub broker: Option<BrokerLink>,
    /// Who may call.
    tokens: Tokens,
}

impl Api {
    /// The API over these parts, accepting the tokens of `config` (and of its
    /// `tokens_file`, read now).
    pub fn new(
        config: &HttpConfig,
        host: String,
        store: Arc<dyn Store>,
        plugins: Arc<Catalog>,
        broker: Option<BrokerLink>,
    ) -> anyhow::Result<Self> {
        let mut tokens = config.tokens.clone();
        if let Some(file) = &config.tokens_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read http.tokens_file {}", file.display()))?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() || line.trim_start().starts_with('#') {
                    continue;
                }
                let token = Token::parse(line).map_err(|e| {
                    anyhow::anyhow!("http.tokens_file {} line {}: {e}", file.display(), i + 1)
                })?;
                tokens.push(token);
            }
        }
        Ok(Self {
            host,
            store,
            plugins,
            broker,
            tokens: Tokens::new(tokens),
        })
    }
}

/// The routes, over `api`, taking bodies up to `max_body_bytes`.
pub fn router(api: Arc<Api>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/health", get(health::live))
        .route("/api/health/ready", get(health::ready))
        .route("/api/queues", get(messages::queues))
        .route("/api/messages/failed", get(messages::failed_list))
        .route("/api/messages/failed/{id}", get(messages::failed_get))
        .route("/api/messages/failed/{id}", delete(messages::failed_delete))
        .route("/api/messages/retry/{id}", post(messages::failed_retry))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see the README's HTTP API section",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(api)
}

/// A listener on `address` (`http.listen`).
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address} (http.listen): is another process using it?")
    })
}

/// Serve `api` on `listener` until `shutdown` flips; requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    max_body_bytes: usize,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "HTTP API listening");
    axum::serve(listener, router(api, max_body_bytes))
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
        .context("the HTTP API stopped")
}
