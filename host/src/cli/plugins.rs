//! `wharf plugins`: what the running hosts serve, and the fleet registry (deploy,
//! rollback, history).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;

use super::failed::time;
use crate::config::Config;
use crate::store::now_ms;
use crate::store::registry::{Artifact, Deployed, Deployment, Rollback};

/// Subcommands of `wharf plugins`.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// What each running host serves: version, hash, source, circuit breaker; and the
    /// registry's active deployments. With no host running, the plugin directory.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a component and make it its plugin's active version on every host of
    /// this database (they swap within 2 s).
    Deploy {
        /// The `.wasm` component.
        file: PathBuf,
    },
    /// Withdraw a plugin's active deployment: the one before it is active again.
    Rollback {
        /// Plugin name.
        name: String,
    },
    /// Every deployment of a plugin, newest first.
    History {
        /// Plugin name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn plugins(config: Config, command: PluginsCommand) -> anyhow::Result<()> {
    match command {
        PluginsCommand::List { json } => list(config, json).await,
        PluginsCommand::Deploy { file } => deploy(config, file).await,
        PluginsCommand::Rollback { name } => rollback(config, &name).await,
        PluginsCommand::History { name, json } => history(config, &name, json).await,
    }
}

#[derive(Serialize)]
struct FileRow {
    name: String,
    version: String,
    subscriptions: Vec<String>,
    sha256: String,
    file: String,
}

async fn list(config: Config, json: bool) -> anyhow::Result<()> {
    let store = crate::server::open_store(&config).await?;
    let hosts = store.host_reports().await?;
    let registry = store.active_deployments().await?;
    let directory = if hosts.is_empty() {
        let (_runtime, catalog) = crate::server::load_plugins(&config).await?;
        let rows: Vec<FileRow> = catalog
            .current()
            .iter()
            .map(|p| FileRow {
                name: p.manifest.name.clone(),
                version: p.manifest.version.clone(),
                subscriptions: p.manifest.subscriptions.clone(),
                sha256: p.sha256.clone(),
                file: p.path.display().to_string(),
            })
            .collect();
        Some(rows)
    } else {
        None
    };
    if json {
        let all =
            serde_json::json!({ "hosts": hosts, "registry": registry, "directory": directory });
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if let Some(rows) = directory {
        println!(
            "No running host has reported (`wharf run` reports every few seconds). Plugins in {}:",
            config.plugins.dir.display()
        );
        println!(
            "{:<20} {:<10} {:<12} SUBSCRIPTIONS",
            "NAME", "VERSION", "SHA256"
        );
        for r in &rows {
            println!(
                "{:<20} {:<10} {:<12} {}",
                r.name,
                r.version,
                &r.sha256[..12],
                r.subscriptions.join(",")
            );
        }
    } else {
        println!(
            "{:<28} {:<20} {:<10} {:<12} {:<9} {:<9} SEEN",
            "HOST", "PLUGIN", "VERSION", "SHA256", "SOURCE", "BREAKER"
        );
        let now = now_ms();
        for h in &hosts {
            println!(
                "{:<28} {:<20} {:<10} {:<12} {:<9} {:<9} {:.1}s ago",
                h.host,
                h.plugin,
                h.version,
                &h.sha256[..12],
                h.source,
                h.breaker,
                (now - h.reported_at).max(0) as f64 / 1000.0
            );
        }
    }
    if !registry.is_empty() {
        println!(
            "\nRegistry (active deployments; they win over directory files of the same name):"
        );
        print_deployments(&registry);
    }
    Ok(())
}

fn print_deployments(deployments: &[Deployment]) {
    println!(
        "{:>5} {:<20} {:<10} {:<12} {:<23} {:<20} STATUS",
        "ID", "PLUGIN", "VERSION", "SHA256", "DEPLOYED", "BY"
    );
    let active = deployments
        .iter()
        .find(|d| d.rolled_back_at.is_none())
        .map(|d| d.id);
    for d in deployments {
        let status = match d.rolled_back_at {
            Some(at) => format!("rolled back {}", time(at)),
            None if Some(d.id) == active => "active".to_owned(),
            None => "standing (rollback returns here)".to_owned(),
        };
        println!(
            "{:>5} {:<20} {:<10} {:<12} {:<23} {:<20} {status}",
            d.id,
            d.plugin,
            d.version,
            &d.sha256[..12],
            time(d.deployed_at),
            d.deployed_by
        );
    }
}

async fn deploy(config: Config, file: PathBuf) -> anyhow::Result<()> {
    let runtime = config
        .sandbox()
        .context("cannot start the WebAssembly runtime")?;
    let wasm = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let plugin = runtime
        .load_bytes(&file, wasm.clone())
        .await
        .context("not deployed")?;
    let store = crate::server::open_store(&config).await?;
    let artifact = Artifact {
        sha256: plugin.sha256.clone(),
        name: plugin.manifest.name.clone(),
        version: plugin.manifest.version.clone(),
        wasm,
    };
    let by = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        gethostname::gethostname().to_string_lossy()
    );
    match store.deploy(&artifact, &by).await? {
        Deployed::New(d) => println!(
            "deployed {} {} (sha256 {}) as deployment {}; hosts on this database swap it in within 2 s",
            d.plugin,
            d.version,
            &d.sha256[..12],
            d.id
        ),
        Deployed::AlreadyActive(d) => println!(
            "{} {} (sha256 {}) is already the active deployment ({}, {}); nothing changed",
            d.plugin,
            d.version,
            &d.sha256[..12],
            d.id,
            time(d.deployed_at)
        ),
    }
    if !plugin.not_granted.is_empty() {
        println!(
            "note: its manifest asks to call {}, which this config's [plugin.{}] allowed_hosts does not grant; a host without that grant refuses its requests there",
            plugin.not_granted.join(", "),
            plugin.name()
        );
    }
    Ok(())
}

async fn rollback(config: Config, name: &str) -> anyhow::Result<()> {
    let store = crate::server::open_store(&config).await?;
    match store.rollback(name).await? {
        Rollback::Done { from, to } => {
            println!(
                "rolled back {name}: {} (deployment {}) -> {} (deployment {}, sha256 {}); hosts swap within 2 s",
                from.version,
                from.id,
                to.version,
                to.id,
                &to.sha256[..12]
            );
            Ok(())
        }
        Rollback::NotDeployed => anyhow::bail!(
            "{name} has no deployment in the registry; see `wharf plugins list` for what is deployed"
        ),
        Rollback::NothingEarlier { active } => anyhow::bail!(
            "nothing to roll back to: {name} {} (deployment {}) is its only standing deployment; deploy the version you want instead",
            active.version,
            active.id
        ),
    }
}

async fn history(config: Config, name: &str, json: bool) -> anyhow::Result<()> {
    let store = crate::server::open_store(&config).await?;
    let deployments = store.history(name).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&deployments)?);
    } else if deployments.is_empty() {
        println!("{name} was never deployed to the registry");
    } else {
        print_deployments(&deployments);
    }
    Ok(())
}
