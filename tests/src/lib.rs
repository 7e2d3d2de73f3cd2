//! Test harness for the end-to-end tests: fixture plugin paths (built by `build.rs`) and a
//! [`Host`] that runs a real wharf worker on a fresh SQLite database in a temp directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use wharf_host::config::Config;
use wharf_host::envelope::NewMessage;
use wharf_host::plugins::PluginSet;
use wharf_host::runtime::Runtime;
use wharf_host::store::{SqliteStore, Store};
use wharf_host::worker::{RunReport, StopWhen, Worker};

/// Path of a built plugin, by crate name (`fixture-flaky`, `send-email`).
pub fn plugin_wasm(crate_name: &str) -> PathBuf {
    PathBuf::from(env!("WHARF_PLUGINS_OUT")).join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// A wharf host on a temporary SQLite database with a chosen set of plugins.
pub struct Host {
    /// The store, with its pool for direct inspection.
    pub store: Arc<SqliteStore>,
    /// The worker.
    pub worker: Worker,
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
    config.inbox.queues = vec!["test".into()];
    config.inbox.poll_interval_ms = 5;
    config.inbox.lease_ms = 10_000;
    config.retry.base_delay_ms = 1;
    config.retry.max_delay_ms = 5;
    config.retry.jitter = 0.0;
    config
}

impl Host {
    /// A host serving the given plugins (crate names) with the test config.
    pub async fn start(plugins: &[&str]) -> Host {
        Self::start_with(plugins, |_| {}).await
    }

    /// Like [`Host::start`], letting the test adjust the config first.
    pub async fn start_with(plugins: &[&str], adjust: impl FnOnce(&mut Config)) -> Host {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        adjust(&mut config);
        std::fs::create_dir_all(&config.plugins.dir).unwrap();
        for name in plugins {
            let file = plugin_wasm(name);
            std::fs::copy(&file, config.plugins.dir.join(file.file_name().unwrap()))
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
        let store = Arc::new(SqliteStore::open(&config.database.url).await.unwrap());
        let runtime = Runtime::new(&config.runtime, config.plugins.cache_dir.clone()).unwrap();
        let (set, errors) = PluginSet::load_dir(&runtime, &config.plugins.dir)
            .await
            .unwrap();
        assert!(errors.is_empty(), "plugins refused: {errors:?}");
        let worker = Worker::new(
            store.clone(),
            Arc::new(runtime),
            Arc::new(set),
            Arc::new(config.clone()),
        );
        Host {
            store,
            worker,
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

    /// Run until the inbox is empty, waiting out retry delays (bounded: panics after 10 s).
    pub async fn drain(&self) -> RunReport {
        let mut total = RunReport::default();
        for _ in 0..2_000 {
            let (_, rx) = tokio::sync::watch::channel(false);
            let report = self
                .worker
                .run(
                    StopWhen {
                        until_idle: true,
                        ..StopWhen::default()
                    },
                    rx,
                )
                .await
                .unwrap();
            total.add(report.messages, report.settled);
            let consumed = serde_json::to_string(&self.config.inbox.queues).unwrap();
            let left: i64 = sqlx::query(
                "SELECT COUNT(*) FROM inbox WHERE ?1 = '[]' OR queue IN (SELECT value FROM json_each(?1))",
            )
            .bind(consumed)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
            .get(0);
            if left == 0 {
                return total;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("inbox did not drain within 10 s");
    }

    /// Run a scalar COUNT query.
    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query(sql)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
            .get(0)
    }
}
