//! A test's fleet: a second host on the same database, and running the transports of
//! several hosts (a broker's consumers and the inbox workers) until a condition holds, and
//! waiting for one.

use std::fmt::Debug;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use wharf_host::transport::pump::StopWhen;

use crate::Host;

impl Host {
    /// Another host on the same database and config, serving `plugins` from a directory
    /// of its own.
    pub async fn second(&self, plugins: &[&str]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let mut config = self.config.clone();
        config.plugins.dir = dir.path().join("plugins");
        config.plugins.cache_dir = dir.path().join("cache");
        Host::start_on(config, plugins, dir).await
    }
}

/// Run, on each of `hosts`, what `consume` spawns (a broker's consumers, stopping when its
/// receiver turns true) and the inbox worker, until `done` (failing after `limit`); then
/// stop them and check each ended without an error. A timeout shows what the inbox holds.
pub async fn run_until<T, E: Debug>(
    hosts: &[&Host],
    (what, limit): (&str, Duration),
    done: impl AsyncFn() -> bool,
    consume: impl Fn(&Host, watch::Receiver<bool>) -> JoinHandle<Result<T, E>>,
) {
    let (stop, stopped) = watch::channel(false);
    let mut consumers = Vec::new();
    let mut workers = Vec::new();
    for host in hosts {
        consumers.push(consume(host, stopped.clone()));
        let worker = host.worker.clone();
        let shutdown = stopped.clone();
        workers.push(tokio::spawn(async move {
            worker.run(StopWhen::default(), shutdown).await
        }));
    }
    let inbox = async || hosts[0].inbox_report().await;
    wait_for_or_show(what, limit, done, inbox).await;
    stop.send(true).unwrap();
    for consumer in consumers {
        consumer
            .await
            .unwrap()
            .expect("the consumers ran without errors");
    }
    for worker in workers {
        worker
            .await
            .unwrap()
            .expect("the inbox worker ran without errors");
    }
}

/// Wait until `done` holds, checking every 20 ms; panics naming `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, done: impl AsyncFn() -> bool) {
    wait_for_or_show(what, limit, done, async || String::new()).await
}

/// [`wait_for`], the panic adding what `show` tells.
async fn wait_for_or_show(
    what: &str,
    limit: Duration,
    done: impl AsyncFn() -> bool,
    show: impl AsyncFn() -> String,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done().await {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", show().await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
