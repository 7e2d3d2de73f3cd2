//! The composition root: builds a host from its config (store, plugin catalog, directory
//! watch and fleet registry follower, dispatcher, HTTP API, the transports' sources) and
//! runs it until a signal or a stop condition. `cli` parses and calls in here.

mod start;

pub use start::{Cleanup, load_plugins, open_store};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::dispatch::{Dispatcher, report};
use crate::http::{self, Api, Tokens};
use crate::plugins::fleet::Follower;
use crate::plugins::{Catalog, directory};
use crate::store::add_runs;
use crate::transport::amqp::supervisor::Supervisor;
use crate::transport::inbox::Worker;
use crate::transport::kafka;
use crate::transport::pump::{Report, StopWhen};

/// A transport running on this host; it ends with its name and totals.
type Running<'a> =
    Pin<Box<dyn Future<Output = anyhow::Result<(&'static str, Report)>> + Send + 'a>>;

/// `wharf run`: handle messages from every configured transport (and serve the HTTP API
/// when `[http] listen` is set) until a signal or `stop`; then log the totals.
pub async fn run(config: Config, stop: StopWhen, cleanup: Option<Cleanup>) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let cleaning = cleanup.map(|c| c.spawn(store.clone()));
    let (runtime, plugins) = load_plugins(&config).await?;
    let _watch = if config.plugins.watch {
        let dir = &config.plugins.dir;
        let watch = directory::watch(plugins.clone(), runtime.clone(), dir)
            .with_context(|| format!("cannot watch plugin directory {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), "watching the plugin directory: new and changed .wasm files are loaded, removed ones unloaded");
        Some(watch)
    } else {
        None
    };
    let mut follower = Follower::new(plugins.clone(), runtime.clone(), store.clone());
    follower
        .sync()
        .await
        .context("cannot read the plugin registry")?;
    // Bound before any work starts, so a port in use stops the host at once.
    let listener = match config.http.address()? {
        Some(address) => Some(http::bind(address).await?),
        None => None,
    };
    if plugins.current().is_empty() {
        tracing::warn!(dir = %config.plugins.dir.display(), "no plugins loaded yet: messages fail with \"no handler\" until a plugin subscribes to their kind");
    }
    tracing::info!(
        database = config.database.url,
        plugins = plugins.current().len(),
        amqp_queues = ?config.amqp.consume.iter().map(|c| &c.queue).collect::<Vec<_>>(),
        kafka_topics = ?config.kafka.consume.iter().map(|t| &t.topic).collect::<Vec<_>>(),
        "wharf running"
    );
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone(),
        runtime.clone(),
        plugins,
        config.dispatch(),
    ));
    let (stop_all, shutdown) = crate::shutdown::on_signal();
    let worker = Worker::new(
        store.clone(),
        dispatcher.clone(),
        config.inbox.clone(),
        config.deadline(),
    );
    let supervisor = (!config.amqp.consume.is_empty() || config.amqp.relays()).then(|| {
        Supervisor::new(
            config.amqp.clone(),
            Duration::from_millis(config.inbox.poll_interval_ms),
            store.clone(),
            dispatcher.clone(),
        )
    });
    let kafka = config.kafka.used().then(|| {
        kafka::supervisor::Supervisor::new(
            config.kafka.clone(),
            store.clone(),
            dispatcher.clone(),
            Duration::from_millis(config.inbox.poll_interval_ms),
        )
    });
    // The transports. The inbox's stop conditions (--limit, --until-idle, --time-limit)
    // apply to it; whichever transport ends first (those, or an error) stops the others.
    let mut transports: Vec<Running<'_>> = vec![Box::pin(async {
        Ok(("inbox", worker.run(stop, shutdown.clone()).await?))
    })];
    if let Some(supervisor) = &supervisor {
        transports.push(Box::pin(async {
            let amqp = supervisor.run(shutdown.clone()).await?;
            tracing::info!(
                relayed = amqp.relayed.sent,
                unroutable = amqp.relayed.unroutable,
                undeliverable = amqp.relayed.undeliverable,
                restarts = amqp.restarts,
                "AMQP outbox relay stopped"
            );
            Ok(("amqp", amqp.consumed))
        }));
    }
    if let Some(kafka) = &kafka {
        transports.push(Box::pin(async {
            let ran = kafka.run(shutdown.clone()).await?;
            tracing::info!(
                relayed = ran.relayed.sent,
                undeliverable = ran.relayed.undeliverable,
                "Kafka outbox relay stopped"
            );
            Ok(("kafka", ran.consumed))
        }));
    }
    let transports = futures::future::join_all(transports.into_iter().map(|running| async {
        let ended = running.await;
        let _ = stop_all.send(true);
        ended
    }));
    let host = report::host_id();
    let api = match listener {
        Some(listener) => {
            let api = Api {
                host: host.clone(),
                store: store.clone(),
                plugins: dispatcher.plugins().clone(),
                runtime: runtime.clone(),
                broker: supervisor.as_ref().map(Supervisor::link),
                kafka: kafka.as_ref().map(kafka::supervisor::Supervisor::view),
                amqp: config.amqp.clone(),
                kafka_config: config.kafka.clone(),
                max_payload_bytes: config.inbox.max_payload_bytes,
                max_request_timeout: std::time::Duration::from_millis(
                    config.http.max_request_timeout_ms,
                ),
                tokens: Tokens::from_config(&config.http)?,
                handles: true,
            };
            Some((listener, Arc::new(api)))
        }
        None => None,
    };
    let serving = async {
        let Some((listener, api)) = api else {
            return Ok(());
        };
        let served = http::serve(listener, api, &config.http, shutdown.clone()).await;
        if served.is_err() {
            let _ = stop_all.send(true);
        }
        served
    };
    let (ended, served, (), ()) = tokio::join!(
        transports,
        serving,
        follower.run(shutdown.clone()),
        report::run(&*store, &dispatcher, &host, shutdown.clone()),
    );
    served?;
    if let Some(task) = cleaning {
        task.abort();
    }
    let mut plugins = Default::default();
    for ended in ended {
        let (name, report) = ended?;
        report.log(name, "stopped");
        add_runs(&mut plugins, report.settled.plugins);
    }
    for (plugin, r) in &plugins {
        tracing::info!(
            plugin,
            runs = r.runs,
            settled = r.settled,
            handled = r.handled,
            runs_per_settled = format!("{:.2}", r.runs as f64 / r.settled.max(1) as f64),
            resolved_in_settle = r.resolved,
            rescheduled = r.rescheduled,
            "handler runs"
        );
    }
    tracing::info!("wharf stopped");
    Ok(())
}

/// `wharf serve`: the HTTP API without workers, for an admin-only node: it handles no
/// message, and validates uploaded plugins with its own sandbox.
pub async fn admin(config: Config) -> anyhow::Result<()> {
    let address = config.http.address()?.context(
        "wharf serve needs an address to listen on: set [http] listen or WHARF_HTTP_LISTEN (e.g. 127.0.0.1:8011)",
    )?;
    let store = open_store(&config).await?;
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
        kafka: None,
        amqp: config.amqp.clone(),
        kafka_config: config.kafka.clone(),
        max_payload_bytes: config.inbox.max_payload_bytes,
        max_request_timeout: std::time::Duration::from_millis(config.http.max_request_timeout_ms),
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
