//! `wharf run` and `wharf demo`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::dispatch::report;
use crate::envelope::NewMessage;
use crate::http::{self, Api, Tokens};
use crate::plugins::directory;
use crate::plugins::fleet::Follower;
use crate::store::{PluginRuns, add_runs};
use crate::transport::amqp::supervisor::Supervisor;
use crate::transport::inbox::{StopWhen, Worker};

/// Options of `wharf run` (Messenger-style stop options).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Exit after N messages.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Exit after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<u64>,
    /// Exit once no message is due.
    #[arg(long)]
    until_idle: bool,
    /// Retention: while running, delete finished rows older than this (`7d`), as `wharf
    /// cleanup --older-than` does; at start and then every `--cleanup-every`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    cleanup_older_than: Option<Duration>,
    /// How often the cleanup runs.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1h", requires = "cleanup_older_than")]
    cleanup_every: Duration,
}

pub async fn run(config: Config, args: RunArgs) -> anyhow::Result<()> {
    let stop = StopWhen {
        limit: args.limit,
        time_limit: args.time_limit.map(Duration::from_secs),
        until_idle: args.until_idle,
    };
    let cleanup = args
        .cleanup_older_than
        .map(|older_than| (older_than, args.cleanup_every));
    serve(config, stop, cleanup).await
}

async fn serve(
    config: Config,
    stop: StopWhen,
    cleanup: Option<(Duration, Duration)>,
) -> anyhow::Result<()> {
    let store = super::open_store(&config).await?;
    let cleaning = cleanup
        .map(|(older_than, every)| super::cleanup::periodic(store.clone(), older_than, every));
    let (runtime, plugins) = super::load_plugins(&config).await?;
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
    let inbox = async {
        let report = worker.run(stop, shutdown.clone()).await;
        // The inbox's stop conditions (--limit, --until-idle, --time-limit) stop the
        // consumers too; so does an error.
        let _ = stop_all.send(true);
        report
    };
    let supervisor = (!config.amqp.consume.is_empty() || config.amqp.relays()).then(|| {
        Supervisor::new(
            config.amqp.clone(),
            Duration::from_millis(config.inbox.poll_interval_ms),
            store.clone(),
            dispatcher.clone(),
        )
    });
    let host = report::host_id();
    let api = match listener {
        Some(listener) => {
            let api = Api {
                host: host.clone(),
                store: store.clone(),
                plugins: dispatcher.plugins().clone(),
                runtime: runtime.clone(),
                broker: supervisor.as_ref().map(Supervisor::link),
                amqp: config.amqp.clone(),
                max_payload_bytes: config.inbox.max_payload_bytes,
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
    let amqp = async {
        let Some(supervisor) = &supervisor else {
            return Ok(None);
        };
        let report = supervisor.run(shutdown.clone()).await;
        if report.is_err() {
            let _ = stop_all.send(true);
        }
        report.map(Some)
    };
    let (report, consumed, served, (), ()) = tokio::join!(
        inbox,
        amqp,
        serving,
        follower.run(shutdown.clone()),
        report::run(&*store, &dispatcher, &host, shutdown.clone()),
    );
    served?;
    if let Some(task) = cleaning {
        task.abort();
    }
    let consumed = consumed?;
    let report = report?;
    let s = &report.settled;
    let runs = s.runs();
    tracing::info!(
        messages = report.messages,
        handled = s.handled,
        retried = s.retried,
        dead = s.dead,
        runs = runs.runs,
        resolved = runs.resolved,
        rescheduled = runs.rescheduled,
        "inbox stopped"
    );
    let mut plugins = report.settled.plugins;
    if let Some(amqp) = consumed {
        let c = amqp.consumed;
        let runs: PluginRuns = c.plugins.values().copied().sum();
        tracing::info!(
            acked = c.acked,
            retried = c.retried,
            dead = c.dead,
            duplicates = c.duplicates,
            runs = runs.runs,
            resolved = runs.resolved,
            rescheduled = runs.rescheduled,
            relayed = amqp.relayed.sent,
            unroutable = amqp.relayed.unroutable,
            undeliverable = amqp.relayed.undeliverable,
            restarts = amqp.restarts,
            "AMQP stopped"
        );
        add_runs(&mut plugins, c.plugins);
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

pub async fn demo(config: Config) -> anyhow::Result<()> {
    let store = super::open_store(&config).await?;
    let orders = [
        json!({"order_id": "1001", "customer_email": "ada@example.com",
               "items": [{"sku": "KEYBOARD", "quantity": 2}, {"sku": "MOUSE", "quantity": 1}]}),
        json!({"order_id": "1002", "customer_email": "grace@example.com",
               "items": [{"sku": "KEYBOARD", "quantity": 95}]}),
        json!({"order_id": "1003", "customer_email": "linus@example.com",
               "items": [{"sku": "MONITOR", "quantity": 1}]}),
    ];
    let messages: Vec<NewMessage> = orders
        .iter()
        .map(|o| NewMessage::new("orders", "order.created", o.to_string().into_bytes()))
        .collect();
    store.enqueue(&messages).await?;
    tracing::info!(
        "published {} order.created messages to queue orders",
        messages.len()
    );
    serve(
        config,
        StopWhen {
            until_idle: true,
            ..StopWhen::default()
        },
        None,
    )
    .await?;
    println!("\nDone. Try: wharf queues, wharf failed list, wharf plugins list");
    Ok(())
}
