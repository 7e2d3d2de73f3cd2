//! `wharf serve`: the HTTP API without workers, for an admin-only node: it handles no
//! message, and validates uploaded plugins with its own sandbox.

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::dispatch::report;
use crate::http::{self, Api, Tokens};
use crate::plugins::Catalog;

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let address = config.http.address()?.context(
        "wharf serve needs an address to listen on: set [http] listen or WHARF_HTTP_LISTEN (e.g. 127.0.0.1:8011)",
    )?;
    let store = super::open_store(&config).await?;
    let runtime = config
        .sandbox()
        .context("cannot start the WebAssembly runtime")?;
    let listener = http::bind(address).await?;
    let api = Api {
        host: report::host_id(),
        store,
        plugins: Arc::new(Catalog::new()),
        runtime: Arc::new(runtime),
        broker: None,
        amqp: config.amqp.clone(),
        max_payload_bytes: config.inbox.max_payload_bytes,
        tokens: Tokens::from_config(&config.http)?,
        handles: false,
    };
    let (_stop, shutdown) = crate::shutdown::on_signal();
    tracing::info!(
        database = config.database.url,
        "wharf serving the HTTP API only (no workers)"
    );
    http::serve(listener, Arc::new(api), &config.http, shutdown).await
}
