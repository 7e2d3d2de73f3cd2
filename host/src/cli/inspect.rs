//! `wharf queues` and `wharf plugins list`.

use clap::Subcommand;
use serde::Serialize;

use crate::config::Config;

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
    let stats = store.queue_stats().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9}",
        "QUEUE", "PENDING", "IN-FLIGHT", "SCHEDULED", "FAILED"
    );
    for q in &stats {
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>9}",
            q.queue, q.pending, q.in_flight, q.scheduled, q.failed
        );
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
