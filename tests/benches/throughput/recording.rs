//! (`metrics`) What recording metrics costs: the PostgreSQL inbox and the AMQP consumer
//! with the PostgreSQL ledger, with the Prometheus recorder on and off, alternating in
//! the same run (the machine is noisy: compare the ratio, not the rates).

use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use wharf_tests::Backend;

use crate::amqp;

/// Rounds of (off, on), each order in turn.
const ROUNDS: usize = 4;

/// Whether the [`Switch`] records.
static RECORDING: AtomicBool = AtomicBool::new(false);

/// wharf's Prometheus recorder while [`RECORDING`], no recorder otherwise.
struct Switch(PrometheusRecorder);

impl Recorder for Switch {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        match RECORDING.load(Ordering::Relaxed) {
            true => self.0.register_counter(key, metadata),
            false => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        match RECORDING.load(Ordering::Relaxed) {
            true => self.0.register_gauge(key, metadata),
            false => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        match RECORDING.load(Ordering::Relaxed) {
            true => self.0.register_histogram(key, metadata),
            false => Histogram::noop(),
        }
    }
}

fn mean(rates: &[f64]) -> f64 {
    rates.iter().sum::<f64>() / rates.len() as f64
}

/// Print msgs/s with metrics off and on, and the ratio.
pub async fn on_off() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(Switch(recorder)).expect("the bench installs the only recorder");
    let payload = vec![b' '; 256];

    let host = crate::postgres_host(Backend::Postgres).await;
    let mut inbox = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for on in [round % 2 == 1, round % 2 == 0] {
            RECORDING.store(on, Ordering::Relaxed);
            inbox[usize::from(on)].push(crate::wharf_drain(&host, &payload).await);
        }
    }
    let connection = wharf_tests::amqp_connection().await;
    let channel = connection.create_channel().await.unwrap();
    let body = amqp::payload();
    let mut consumed = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for on in [round % 2 == 1, round % 2 == 0] {
            RECORDING.store(on, Ordering::Relaxed);
            let queue = amqp::fresh_queue(&channel, "bench_metrics").await;
            let host = amqp::amqp_host(&queue, true).await;
            amqp::fill(&channel, &queue, &body).await;
            let last = amqp::sentinel(&channel, &queue).await;
            consumed[usize::from(on)].push(amqp::consume_all(host, last).await);
        }
    }
    RECORDING.store(false, Ordering::Relaxed);
    let scrape = handle.render();
    assert!(
        scrape.contains("wharf_handler_invocations_total"),
        "the recorder recorded while on"
    );
    for (what, [off, on]) in [
        ("postgres inbox", &inbox),
        ("amqp + PostgreSQL ledger", &consumed),
    ] {
        println!(
            "metrics cost, {what}: off {:.0} msgs/s, on {:.0} msgs/s = {:.3}x ({ROUNDS} rounds each, alternating; target >= 0.97x); rounds off {off:.0?}, on {on:.0?}",
            mean(off),
            mean(on),
            mean(on) / mean(off)
        );
    }
    println!(
        "metrics scrape: {} series, {} bytes",
        scrape.lines().filter(|l| !l.starts_with('#')).count(),
        scrape.len()
    );
}
