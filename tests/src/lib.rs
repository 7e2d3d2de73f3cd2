//! Test harness for the end-to-end tests: fixture plugin paths (built by `build.rs`) and a
//! [`Host`] that runs a real wharf worker on a fresh database of any backend: an SQLite
//! file in a temp directory, a schema of its own in the real PostgreSQL or a database of
//! its own on the real MariaDB (so tests run in parallel). [`conformance!`] runs one test
//! body against each; [`python`] builds the Python plugins and serves one.

pub mod broker;
pub mod browser;
pub mod cli;
pub mod collector;
pub mod held;
pub mod http;
mod inspect;
pub mod kafka;
pub mod mail_api;
pub mod outbound;
pub mod proxy;
pub mod python;
pub mod running;
pub mod sequence;
pub mod served;
mod services;
pub mod transports;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use wharf_host::config::Config;
use wharf_host::dispatch::Dispatcher;
use wharf_host::envelope::{Envelope, NewMessage};
use wharf_host::outcome::Verdict;
use wharf_host::plugins::{Catalog, directory};
use wharf_host::runtime::Runtime;
use wharf_host::store::registry::Artifact;
use wharf_host::store::{self, PluginResult, PluginVersion, Settlement, Store};
use wharf_host::transport::inbox::Worker;
use wharf_host::transport::pump::{Report, StopWhen};

pub use running::wait_for;
pub use services::{
    amqp_connection, amqp_url, confirming_channel, fresh_mysql_database, fresh_postgres_schema,
    mysql_url, postgres_url, route_orders, unique_name,
};

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store, a file in the test's temp directory.
    Sqlite,
    /// The fleet store, a fresh schema in the PostgreSQL of `WHARF_TEST_POSTGRES_URL`,
    /// with the default claims: held in a transaction, as the test handlers are short.
    Postgres,
    /// The same with leased claims (`inbox.hold_claims_up_to_ms = 0`).
    PostgresLeased,
    /// The MariaDB/MySQL store, a fresh database on the server of `WHARF_TEST_MYSQL_URL`,
    /// with the default claims (held in a transaction on MariaDB).
    MySql,
    /// The same with leased claims.
    MySqlLeased,
}

/// Run a test body `async fn name(backend: Backend)` once per backend, as the tests
/// `sqlite::name`, `postgres::name`, `postgres_leased::name`, `mysql::name` and
/// `mysql_leased::name`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::Backend::Postgres).await
            })*
        }
        mod postgres_leased {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::Backend::PostgresLeased).await
            })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::Backend::MySql).await
            })*
        }
        mod mysql_leased {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::Backend::MySqlLeased).await
            })*
        }
    };
}

/// Path of a built plugin, by crate name (`fixture-flaky`, `send-email`).
pub fn plugin_wasm(crate_name: &str) -> PathBuf {
    PathBuf::from(env!("FIXTURE_PLUGINS_DIR"))
        .join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// A wharf host on a fresh database with a chosen set of plugins.
pub struct Host {
    /// The store.
    pub store: Arc<dyn Store>,
    /// A second connection pool to the same database, for inspecting the tables with
    /// portable SQL (cast uuid and jsonb columns to text).
    pub db: AnyPool,
    /// The worker.
    pub worker: Worker,
    /// The dispatcher the worker uses, for other sources (AMQP consumers).
    pub dispatcher: Arc<Dispatcher>,
    /// The plugins the dispatcher serves.
    pub catalog: Arc<Catalog>,
    /// The sandbox.
    pub runtime: Arc<Runtime>,
    /// Config in use.
    pub config: Config,
    /// The directory holding the database, plugins and cache.
    pub dir: tempfile::TempDir,
}

/// Settings suited to tests: short deadline, small memory cap, quick polling.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.join("wharf.db").display());
    config.plugins.dir = dir.join("plugins");
    config.plugins.cache_dir = dir.join("cache");
    config.runtime.deadline_ms = 300;
    config.runtime.memory_limit_mib = 32;
    config.runtime.instance_pool = 32;
    config.runtime.concurrency = 8;
    // Tests of failing plugins expect every attempt to run; the breaker's own tests
    // turn it on.
    config.runtime.breaker_failures = 0;
    config.inbox.queues = vec!["test".into()];
    config.inbox.poll_interval_ms = 5;
    config.inbox.lease_ms = 10_000;
    config.retry.base_delay_ms = 1;
    config.retry.max_delay_ms = 5;
    config.retry.jitter = 0.0;
    config
}

impl Host {
    /// A host on `backend` serving the given plugins (crate names) with the test config.
    pub async fn start(backend: Backend, plugins: &[&str]) -> Host {
        Self::start_with(backend, plugins, |_| {}).await
    }

    /// Like [`Host::start`], letting the test adjust the config first.
    pub async fn start_with(
        backend: Backend,
        plugins: &[&str],
        adjust: impl FnOnce(&mut Config),
    ) -> Host {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        match backend {
            Backend::Sqlite => {}
            Backend::Postgres => config.database.url = fresh_postgres_schema().await,
            Backend::PostgresLeased => {
                config.database.url = fresh_postgres_schema().await;
                config.inbox.hold_claims_up_to_ms = 0;
            }
            Backend::MySql => config.database.url = fresh_mysql_database().await,
            Backend::MySqlLeased => {
                config.database.url = fresh_mysql_database().await;
                config.inbox.hold_claims_up_to_ms = 0;
            }
        }
        adjust(&mut config);
        Self::start_on(config, plugins, dir).await
    }

    /// A host with exactly `config` (its database already chosen), keeping `dir` alive. Its
    /// warnings (or what `RUST_LOG` asks) go to the test's output, shown when it fails.
    pub async fn start_on(config: Config, plugins: &[&str], dir: tempfile::TempDir) -> Host {
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        std::fs::create_dir_all(&config.plugins.dir).unwrap();
        for name in plugins {
            let file = plugin_wasm(name);
            std::fs::copy(&file, config.plugins.dir.join(file.file_name().unwrap()))
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
        let store = store::open(&config.database.url).await.unwrap();
        sqlx::any::install_default_drivers();
        let ansi = config.database.url.starts_with("mysql:");
        let db = AnyPoolOptions::new()
            .max_connections(2)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if ansi {
                        sqlx::query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI')")
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&config.database.url)
            .await
            .unwrap();
        let runtime = Arc::new(config.sandbox().unwrap());
        let catalog = Arc::new(Catalog::new());
        let errors = directory::load(&catalog, &runtime, &config.plugins.dir)
            .await
            .unwrap();
        assert!(errors.is_empty(), "plugins refused: {errors:?}");
        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            runtime.clone(),
            catalog.clone(),
            config.dispatch(),
        ));
        let worker = Worker::new(
            store.clone(),
            dispatcher.clone(),
            config.inbox.clone(),
            config.deadline(),
        );
        Host {
            store,
            db,
            worker,
            dispatcher,
            catalog,
            runtime,
            config,
            dir,
        }
    }

    /// Enqueue a JSON message; returns it.
    pub async fn publish(&self, queue: &str, kind: &str, payload: serde_json::Value) -> NewMessage {
        let message = NewMessage::new(queue, kind, payload.to_string().into_bytes());
        self.store
            .enqueue(std::slice::from_ref(&message))
            .await
            .unwrap();
        message
    }

    /// One run of the worker until nothing is due (`wharf run --until-idle`).
    pub async fn run_until_idle(&self) -> Report {
        let (_, rx) = tokio::sync::watch::channel(false);
        let until_idle = StopWhen {
            until_idle: true,
            ..StopWhen::default()
        };
        self.worker.run(until_idle, rx).await.unwrap()
    }

    /// Run until the inbox is empty, waiting out retry delays (bounded: panics after 10 s).
    pub async fn drain(&self) -> Report {
        let mut total = Report::default();
        for _ in 0..2_000 {
            total += self.run_until_idle().await;
            let left: u64 = self
                .store
                .queue_stats()
                .await
                .unwrap()
                .iter()
                .filter(|q| {
                    self.config.inbox.queues.is_empty()
                        || self.config.inbox.queues.contains(&q.queue)
                })
                .map(|q| q.pending + q.in_flight + q.scheduled)
                .sum();
            if left == 0 {
                return total;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("inbox did not drain within 10 s");
    }
}

/// `message` settled by hand as if plugin `noop` 1.0.0's first attempt ended in
/// `verdict`.
pub fn noop_settlement(message: &Envelope, verdict: Verdict) -> Settlement {
    Settlement {
        message: message.clone(),
        results: vec![PluginResult {
            plugin: PluginVersion {
                name: "noop".into(),
                version: "1.0.0".into(),
                sha256: "0".repeat(64),
            },
            attempt: 1,
            verdict,
        }],
        refused: None,
    }
}

/// The command of a `wharf run` process (the binary at `exe`) on `url` serving `plugins`:
/// small batches, a 1.5 s lease and a 1 s deadline, so a kill lands in a batch and its
/// claims come back soon; claims held in a transaction up to `hold_claims_up_to_ms` ("0":
/// leased). A test may add to it (a `--config` file) before it spawns it.
pub fn victim_command(
    exe: &str,
    url: &str,
    plugins: &std::path::Path,
    cache: &std::path::Path,
    hold_claims_up_to_ms: &str,
) -> std::process::Command {
    let mut command = std::process::Command::new(exe);
    command
        .arg("run")
        .env("WHARF_DATABASE_URL", url)
        .env("WHARF_PLUGINS_DIR", plugins)
        .env("WHARF_PLUGINS_CACHE_DIR", cache)
        .env("WHARF_INBOX_BATCH_SIZE", "20")
        .env("WHARF_INBOX_LEASE_MS", "1500")
        .env("WHARF_RUNTIME_DEADLINE_MS", "1000")
        .env("WHARF_INBOX_HOLD_CLAIMS_UP_TO_MS", hold_claims_up_to_ms)
        .env("WHARF_LOG", "warn")
        .stdout(std::process::Stdio::null());
    command
}

/// The component of fixture `crate_name`, validated by `runtime`, ready to deploy.
pub async fn artifact(runtime: &Runtime, crate_name: &str) -> Artifact {
    let wasm = std::fs::read(plugin_wasm(crate_name)).unwrap();
    let plugin = runtime
        .load_bytes(std::path::Path::new(crate_name), wasm.clone())
        .await
        .unwrap();
    Artifact {
        sha256: plugin.sha256.clone(),
        name: plugin.manifest.name.clone(),
        version: plugin.manifest.version.clone(),
        wasm,
    }
}

/// Check that `total` messages went through the `versioned` fixture exactly once each, by
/// one of `versions` ((version, sha256) pairs): the version the handler wrote into its
/// state key is the one the ledger records, with that version's hash, written once; no
/// message failed. Returns how many each version handled, and the version of each
/// message id.
pub async fn handled_once_by_their_version(
    host: &Host,
    total: usize,
    versions: &[(&str, &str)],
) -> (Vec<usize>, std::collections::HashMap<String, String>) {
    assert_eq!(host.count("SELECT COUNT(*) FROM failed_messages").await, 0);
    let id = host.uuid_text("p.message_id");
    let rows = host
        .query_rows(format!(
            "SELECT {id}, p.plugin_version, p.plugin_sha256, s.value, s.version
             FROM processed p LEFT JOIN plugin_state s
               ON s.plugin = p.plugin AND s.key = 'seen:' || {id}"
        ))
        .await;
    assert_eq!(rows.len(), total);
    let mut counts = vec![0; versions.len()];
    let mut by_id = std::collections::HashMap::new();
    for row in &rows {
        let version: String = row.get(1);
        let sha: String = row.get(2);
        let written: Option<Vec<u8>> = row.get(3);
        assert_eq!(written.as_deref(), Some(version.as_bytes()), "{version}");
        assert_eq!(
            row.get::<Option<i64>, _>(4),
            Some(1),
            "effects committed more than once"
        );
        let slot = versions
            .iter()
            .position(|(v, _)| *v == version)
            .unwrap_or_else(|| panic!("unexpected version {version}"));
        assert_eq!(sha, versions[slot].1, "{version}");
        counts[slot] += 1;
        by_id.insert(row.get::<String, _>(0), version);
    }
    (counts, by_id)
}
