//! `contention`: stateful handlers on hot keys. 20,000 orders through the `update-stock`
//! example (a read-modify-write of `stock:<sku>`) on 1, 7 and 10,000 SKUs, on 1 host and
//! on 3 hosts (in this process, each with its own pool), on PostgreSQL and SQLite, beside
//! the same number of messages through the stateless noop plugin on the same hosts. Prints
//! msgs/s, handler runs per handled message, the ratio to the stateless plugin and 3
//! hosts against 1; checks every stock counter is exact.

use std::time::Instant;

use serde_json::json;
use wharf_host::envelope::NewMessage;
use wharf_host::store::PluginRuns;
use wharf_tests::{Backend, Host, test_config};

const ORDERS: usize = 20_000;
/// `update-stock`'s starting stock (its default `initial_stock`).
const INITIAL_STOCK: i64 = 100;

/// One order of one unit of `SKU-<n % skus>`.
fn orders(skus: usize) -> Vec<NewMessage> {
    (0..ORDERS)
        .map(|n| {
            let order = json!({
                "order_id": format!("o-{n}"),
                "customer_email": "a@example.com",
                "items": [{"sku": format!("SKU-{}", n % skus), "quantity": 1}],
            });
            NewMessage::new("bench", "order.created", order.to_string().into_bytes())
        })
        .collect()
}

fn noops() -> Vec<NewMessage> {
    (0..ORDERS)
        .map(|_| NewMessage::new("bench", "bench.noop", b"{}".to_vec()))
        .collect()
}

/// `hosts` hosts on one fresh database of `backend`, serving both plugins.
async fn hosts(backend: Backend, hosts: usize) -> Vec<Host> {
    let plugins = ["update-stock", "fixture-noop"];
    let tune = |c: &mut wharf_host::config::Config| {
        c.inbox.queues = vec!["bench".into()];
        c.inbox.poll_interval_ms = 1_000;
    };
    let first = Host::start_with(backend, &plugins, tune).await;
    let mut all = vec![];
    for _ in 1..hosts {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.database.url = first.config.database.url.clone();
        tune(&mut config);
        all.push(Host::start_on(config, &plugins, dir).await);
    }
    all.insert(0, first);
    all
}

/// What one drain of `messages` by every host measured.
struct Drained {
    rate: f64,
    runs: PluginRuns,
}

async fn drain(hosts: &[Host], messages: &[NewMessage]) -> Drained {
    for chunk in messages.chunks(1_000) {
        hosts[0].store.enqueue(chunk).await.unwrap();
    }
    let started = Instant::now();
    let reports = futures::future::join_all(hosts.iter().map(Host::drain)).await;
    let rate = messages.len() as f64 / started.elapsed().as_secs_f64();
    let runs = reports.iter().map(|r| r.settled.runs()).sum();
    Drained { rate, runs }
}

/// Every SKU's stock is down by its orders (checked for the few-SKU cases).
async fn assert_stock_exact(host: &Host, skus: usize) {
    if skus > 7 {
        return;
    }
    for n in 0..skus {
        let key = format!("stock:SKU-{n}");
        let (value, _) = host
            .store
            .state_get("update-stock", &key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} was never written"));
        let stock: i64 = serde_json::from_slice(&value).unwrap();
        let orders = (ORDERS / skus + usize::from(n < ORDERS % skus)) as i64;
        assert_eq!(stock, INITIAL_STOCK - orders, "{key}");
    }
}

/// The scenario on one backend.
async fn on(backend: Backend) {
    for skus in [1, 7, 10_000] {
        let mut one_host = 0.0;
        for count in [1, 3] {
            let hosts = hosts(backend, count).await;
            let stateless = drain(&hosts, &noops()).await;
            let stateful = drain(&hosts, &orders(skus)).await;
            assert_stock_exact(&hosts[0], skus).await;
            let runs = stateful.runs;
            assert_eq!(runs.handled, ORDERS as u64, "every order handled once");
            let versus_one = if count == 1 {
                one_host = stateful.rate;
                String::new()
            } else {
                format!("; {:.2}x of 1 host (target >= 1)", stateful.rate / one_host)
            };
            println!(
                "contention {backend:?}, {skus} SKU(s), {count} host(s): update-stock {:.0} msgs/s, {:.3} runs per handled message ({} run inside the settle for stale reads, {} rescheduled); stateless {:.0} msgs/s: {:.2}x of stateless{versus_one}",
                stateful.rate,
                runs.runs as f64 / runs.handled as f64,
                runs.resolved,
                runs.rescheduled,
                stateless.rate,
                stateful.rate / stateless.rate,
            );
        }
    }
    println!(
        "contention targets (7 SKUs): <= 1.2 runs per handled message, >= 0.5x of stateless, 3 hosts >= 1 host"
    );
}

/// Both backends.
pub async fn scenarios() {
    on(Backend::Postgres).await;
    on(Backend::Sqlite).await;
}
