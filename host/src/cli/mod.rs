//! The `wharf` command line: argument parsing and the shared start-up steps (config,
//! logging, store, runtime and plugins). One file per group of subcommands.

mod audit;
mod cleanup;
mod failed;
mod keys;
mod ndjson;
mod plugins;
mod publish;
mod queues;
mod request;
mod run;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// wharf: run message handlers shipped as WebAssembly components.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// TOML config file; `WHARF_*` environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume the inbox and run the plugins.
    Run(run::RunArgs),
    /// Serve the HTTP API only, no workers (an admin node); needs `[http] listen`.
    Serve,
    /// Publish sample orders and handle them with the example plugins, then exit.
    Demo,
    /// Put a message into an inbox queue.
    Publish(publish::PublishArgs),
    /// Send a request to an inbox queue and wait for a handler's answer.
    Request(request::RequestArgs),
    /// Inspect and recover failed messages (dead letters).
    #[command(subcommand)]
    Failed(failed::FailedCommand),
    /// Ordering keys held by an ordered plugin's dead letter: list them, skip one.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Depth of each queue: pending, in flight, scheduled for retry, failed.
    Queues {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Plugins: what the hosts serve; deploy, roll back and list versions fleet-wide.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Bring the database schema up to date (`run` does this on start too).
    Migrate,
    /// Retention: delete finished rows older than a duration.
    Cleanup(cleanup::CleanupArgs),
    /// What operators changed through the HTTP API, newest first.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Parse the command line and run the command.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run(args) => exporting(&config, run::run(config.clone(), args)).await,
        Command::Serve => crate::server::admin(config).await,
        Command::Demo => exporting(&config, run::demo(config.clone())).await,
        Command::Publish(args) => publish::publish(config, args).await,
        Command::Request(args) => request::request(config, args).await,
        Command::Failed(cmd) => failed::failed(config, cmd).await,
        Command::Keys(cmd) => keys::keys(config, cmd).await,
        Command::Queues { json } => queues::queues(config, json).await,
        Command::Plugins(cmd) => plugins::plugins(config, cmd).await,
        Command::Cleanup(args) => cleanup::cleanup(config, args).await,
        Command::Audit { limit, json } => audit::audit(config, limit, json).await,
        Command::Migrate => {
            crate::server::open_store(&config).await?;
            println!("database {} is up to date", config.database.url);
            Ok(())
        }
    }
}

/// The process exit code for `main`'s result, printing the error chain on failure.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Run `work` with the host's spans exported as `[tracing]` says, sending the last of
/// them before returning.
async fn exporting(
    config: &Config,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    #[cfg(feature = "otlp")]
    if let Some(endpoint) = &config.tracing.otlp_endpoint {
        crate::trace::export::install(endpoint, &config.tracing.service_name)?;
        let result = work.await;
        tokio::task::spawn_blocking(crate::trace::export::flush).await?;
        return result;
    }
    let _ = config;
    work.await
}

/// Log as `wharf` does: `WHARF_LOG` (default `info,sqlx=warn`) to stderr, as text or
/// (`WHARF_LOG_FORMAT=json`) one object per line.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // Colours only for a terminal: a file or a log collector gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match std::env::var("WHARF_LOG_FORMAT").as_deref() {
        // One object per line; the fields of the span a line was logged in (a handler
        // call's plugin, message id, trace_id and span_id) under "span".
        Ok("json") => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        Ok("text") | Err(_) => logs.init(),
        Ok(other) => {
            logs.init();
            tracing::warn!("WHARF_LOG_FORMAT={other:?} is neither text nor json; logging text");
        }
    }
}
