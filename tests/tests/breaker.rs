//! The circuit breaker: a plugin that traps on every message stops being fed after N
//! failures in a row, its messages wait (no attempts used, nothing dead-lettered), trial
//! calls after each cool-down reopen it while the fault lasts, and the first trial that
//! succeeds closes it and lets the messages through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use wharf_host::dispatch::breaker::BreakerState;
use wharf_host::envelope::NewMessage;
use wharf_tests::{Backend, Host, conformance};

conformance!(the_breaker_opens_on_repeated_traps_and_closes_after_the_fault);

async fn the_breaker_opens_on_repeated_traps_and_closes_after_the_fault(backend: Backend) {
    const MESSAGES: usize = 30;
    const FAULT: Duration = Duration::from_millis(1_500);
    let host = Host::start_with(backend, &["fixture-versioned-v1"], |c| {
        c.runtime.breaker_failures = 3;
        c.runtime.breaker_cool_down_ms = 200;
    })
    .await;
    // The plugin traps until the fault is over; its retry policy retries every 20 ms,
    // so without a breaker it would trap ~75 times per message. The messages go in with
    // one insert, so the fault is still on when the first of them runs.
    let fault_ends = SystemTime::now() + FAULT;
    let until_ms = fault_ends.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let body = json!({ "trap_until_ms": until_ms })
        .to_string()
        .into_bytes();
    let messages: Vec<NewMessage> = (0..MESSAGES)
        .map(|_| NewMessage::new("test", "test.versioned", body.clone()))
        .collect();
    host.store.enqueue(&messages).await.unwrap();

    let breakers = host.dispatcher.breakers();
    let drained = AtomicBool::new(false);
    // Watch until the inbox is drained (and past the fault), however long the machine
    // takes to get there.
    let watch_breaker = async {
        let mut seen = Vec::new();
        while !drained.load(Ordering::SeqCst)
            || SystemTime::now() < fault_ends + Duration::from_millis(500)
        {
            let state = breakers.state("versioned");
            if seen.last() != Some(&state) {
                seen.push(state);
            }
            // Half-open lasts from the cool-down's end to the trial's answer: a few ms.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen
    };
    let drain = async {
        let report = host.drain().await;
        drained.store(true, Ordering::SeqCst);
        report
    };
    let (report, seen) = tokio::join!(drain, watch_breaker);

    assert!(
        seen.contains(&BreakerState::Open) && seen.contains(&BreakerState::HalfOpen),
        "{seen:?}"
    );
    assert_eq!(breakers.state("versioned"), BreakerState::Closed);
    assert_eq!(report.settled.handled, MESSAGES as u64);
    assert!(report.settled.deferred > 0, "{report:?}");
    assert_eq!(host.count("SELECT COUNT(*) FROM failed_messages").await, 0);
    assert_eq!(
        host.count("SELECT COUNT(*) FROM processed").await,
        MESSAGES as i64
    );
    // The calls in flight when it opened trap (up to runtime.concurrency of them), then
    // only trials run until the fault is over: ~1500 / 200 of them.
    let traps = host.count("SELECT COUNT(*) FROM attempt_errors").await;
    assert!((3..=40).contains(&traps), "{traps} trapped attempts");
}
