//! `wharf queues` and `wharf plugins list`.

use clap::Subcommand;
use serde::Serialize;

use crate::config::Config;
use crate::transport::amqp::depth::depths;
use crate::transport::amqp::supervisor::display_url;

/// Subcommands of `wharf plugins`.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Plugins in the plugin directory: name, version, subscriptions, sha256.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn queues(config: Config, json: bool) -> anyhow::Result<()> {
    let store = super::open_store(&config).await?;
    let inbox = store.queue_stats().await?;
    let amqp = if config.amqp.consume.is_empty() {
        None
    } else {
        Some(depths(&config.amqp).await.map_err(|e| {
            format!(
                "AMQP broker {} unreachable: {e}",
                display_url(&config.amqp.url)
            )
        }))
    };
    if json {
        let amqp = match &amqp {
            None => serde_json::Value::Array(Vec::new()),
            Some(Ok(depths)) => serde_json::to_value(depths)?,
            Some(Err(e)) => serde_json::json!({ "error": e }),
        };
        let all = serde_json::json!({ "inbox": inbox, "amqp": amqp });
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9}",
        "QUEUE", "PENDING", "IN-FLIGHT", "SCHEDULED", "FAILED"
    );
    for q in &inbox {
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>9}",
            q.queue, q.pending, q.in_flight, q.scheduled, q.failed
        );
    }
    match amqp {
        None => {}
        Some(Err(e)) => println!("\n{e}"),
        Some(Ok(depths)) => {
            let show = |n: Option<u32>| n.map_or_else(|| "missing".to_owned(), |n| n.to_string());
            println!(
                "\n{:<24} {:>9} {:>9} {:>9}",
                "AMQP QUEUE", "READY", "CONSUMERS", "DLQ"
            );
            for d in &depths {
                println!(
                    "{:<24} {:>9} {:>9} {:>9}",
                    d.queue,
                    show(d.ready),
                    show(d.consumers),
                    show(d.dead_letters)
                );
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct PluginRow {
    name: String,
    version: String,
    subscriptions: Vec<String>,
    sha256: String,
    file: String,
}

pub async fn plugins(config: Config, command: PluginsCommand) -> anyhow::Result<()> {
    let PluginsCommand::List { json } = command;
    let (_runtime, plugins) = super::load_plugins(&config).await?;
    let rows: Vec<PluginRow> = plugins
        .iter()
        .map(|p| PluginRow {
            name: p.manifest.name.clone(),
            version: p.manifest.version.clone(),
            subscriptions: p.manifest.subscriptions.clone(),
            sha256: p.sha256.clone(),
            file: p.path.display().to_string(),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<10} {:<30} SHA256",
        "NAME", "VERSION", "SUBSCRIPTIONS"
    );
    for r in &rows {
        println!(
            "{:<20} {:<10} {:<30} {}",
            r.name,
            r.version,
            r.subscriptions.join(","),
            &r.sha256[..16]
        );
    }
    Ok(())
}
