//! What this host serves, written to the database every few seconds and on every change,
//! for `wharf plugins list` and the dashboard: each plugin's version and hash, where it
//! comes from and its circuit breaker, and the messages it handled per queue in the last
//! minute; with it, what it settled and called since the last report, added to the flow
//! history. A host that stops deletes its report (its flow stays in the history).

use std::time::Duration;

use tokio::sync::watch;

use crate::dispatch::Dispatcher;
use crate::store::registry::HostPlugin;
use crate::store::{Store, StoreError};

/// How often a running host reports.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// This host's name in reports: `machine/pid`.
pub fn host_id() -> String {
    format!(
        "{}/{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    )
}

/// What `dispatcher` serves now.
pub fn serving(host: &str, dispatcher: &Dispatcher) -> Vec<HostPlugin> {
    let set = dispatcher.plugins().current();
    set.iter()
        .map(|p| HostPlugin {
            host: host.to_owned(),
            plugin: p.name().to_owned(),
            version: p.manifest.version.clone(),
            sha256: p.sha256.clone(),
            source: set.source(p.name()).as_str().to_owned(),
            breaker: dispatcher.breakers().state(p.name()).as_str().to_owned(),
            reported_at: crate::store::now_ms(),
        })
        .collect()
}

/// Add what `dispatcher` counted since the last call to the flow history, as `host`'s;
/// when the store cannot take it, it goes with the next call.
pub async fn report_flow(
    store: &dyn Store,
    dispatcher: &Dispatcher,
    host: &str,
) -> Result<(), StoreError> {
    let rows = dispatcher.flow().take();
    if rows.is_empty() {
        return Ok(());
    }
    let added = store.add_flow(host, &rows).await;
    if added.is_err() {
        dispatcher.flow().restore(rows);
    }
    added
}

/// Report every [`REPORT_EVERY`] (sooner when what is served changes) until `shutdown`,
/// then delete the report.
pub async fn run(
    store: &dyn Store,
    dispatcher: &Dispatcher,
    host: &str,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = Vec::new();
    let mut since = tokio::time::Instant::now();
    loop {
        let now = serving(host, dispatcher);
        let same = |a: &HostPlugin, b: &HostPlugin| {
            (&a.plugin, &a.sha256, &a.breaker) == (&b.plugin, &b.sha256, &b.breaker)
        };
        let changed = now.len() != last.len() || !now.iter().zip(&last).all(|(a, b)| same(a, b));
        if changed || since.elapsed() >= REPORT_EVERY {
            let handled = dispatcher.throughput().last_minute();
            match store.report_host(host, &now, &handled).await {
                Ok(()) => {
                    last = now;
                    since = tokio::time::Instant::now();
                }
                Err(e) => tracing::debug!("cannot report the plugins served: {e}"),
            }
            if let Err(e) = report_flow(store, dispatcher, host).await {
                tracing::debug!("cannot add to the flow history: {e}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => break,
        }
    }
    if let Err(e) = report_flow(store, dispatcher, host).await {
        tracing::debug!("cannot add to the flow history: {e}");
    }
    if let Err(e) = store.forget_host(host).await {
        tracing::debug!("cannot delete this host's plugin report: {e}");
    }
}
