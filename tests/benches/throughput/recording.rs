//! (`metrics`) What recording metrics costs: the PostgreSQL inbox and the AMQP consumer
//! with the PostgreSQL ledger, recording on (as with the HTTP API) and off (without it),
//! alternating in the same run (the machine is noisy: compare the ratio, not the rates).

use wharf_host::metrics;
use wharf_tests::Backend;

use crate::amqp;

/// Rounds of (off, on), each order in turn.
const ROUNDS: usize = 4;

fn mean(rates: &[f64]) -> f64 {
    rates.iter().sum::<f64>() / rates.len() as f64
}

/// Print msgs/s with metrics off and on, and the ratio.
pub async fn on_off() {
    let handle = metrics::prometheus();
    let payload = vec![b' '; 256];

    let host = crate::postgres_host(Backend::Postgres).await;
    let mut inbox = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for on in [round % 2 == 1, round % 2 == 0] {
            metrics::set_recording(on);
            inbox[usize::from(on)].push(crate::wharf_drain(&host, &payload).await);
        }
    }
    let (_connection, channel) = wharf_tests::confirming_channel().await;
    let body = amqp::payload();
    let mut consumed = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for on in [round % 2 == 1, round % 2 == 0] {
            metrics::set_recording(on);
            let queue = amqp::fresh_queue(&channel, "bench_metrics").await;
            let host = amqp::amqp_host(&queue, true, false).await;
            amqp::fill(&channel, &queue, &body, None).await;
            let last = amqp::sentinel(&channel, &queue).await;
            consumed[usize::from(on)].push(amqp::consume_all(host, last).await);
        }
    }
    metrics::set_recording(false);
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
