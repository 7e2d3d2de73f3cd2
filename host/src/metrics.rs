//! What the host counts for Prometheus: every metric's name, labels and meaning in one
//! place, recorded by the message path through these functions and rendered by the HTTP
//! API's `/metrics`. Until the recorder is installed (no HTTP API) each call is a branch.
//!
//! Labels are low-cardinality: plugin names, queue names (`source`), outcomes; never a
//! message id or an error's text.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::envelope::Envelope;
use crate::outcome::Verdict;
use crate::store::{Backlog, QueueSource, QueueStats, SettleSummary};

/// Bucket bounds of the `_seconds` histograms: 1 ms to 60 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Whether the functions below record (see [`set_recording`]).
static RECORDING: AtomicBool = AtomicBool::new(false);

/// The process's Prometheus recorder, installed (and recording turned on) the first time
/// it is asked for.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .install_recorder()
            .expect("wharf installs the only metrics recorder of the process");
        set_recording(true);
        handle
    })
}

/// Turn recording on or off (the bench compares both in one process).
pub fn set_recording(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// A handler call of `plugin` ended in `verdict` after `elapsed`:
/// `wharf_handler_invocations_total{plugin,outcome}` and
/// `wharf_handler_duration_seconds{plugin}`.
pub fn handler_call(plugin: &str, verdict: &Verdict, elapsed: Duration) {
    if !recording() {
        return;
    }
    let outcome = match verdict {
        Verdict::Handled(_) => "handled",
        Verdict::Retry { .. } => "retry",
        Verdict::Dead { .. } => "dead",
        Verdict::Deferred { .. } => "deferred",
        Verdict::RunAtSettle => "at_settle",
        Verdict::Waits => "waits",
    };
    let plugin = plugin.to_owned();
    counter!("wharf_handler_invocations_total", "plugin" => plugin.clone(), "outcome" => outcome)
        .increment(1);
    histogram!("wharf_handler_duration_seconds", "plugin" => plugin).record(elapsed);
}

/// A call of `plugin` waited `waited` for its plugin's and the host's call slots before
/// it began: `wharf_handler_slot_wait_seconds{plugin}` (the call's own time is
/// `wharf_handler_duration_seconds`).
pub fn slot_wait(plugin: &str, waited: Duration) {
    if !recording() {
        return;
    }
    histogram!("wharf_handler_slot_wait_seconds", "plugin" => plugin.to_owned()).record(waited);
}

/// A batch was claimed from the inbox: `wharf_queue_wait_seconds{queue}`, how long each
/// message waited for a worker once it was due.
pub fn claimed(messages: &[Envelope]) {
    if !recording() {
        return;
    }
    let now = crate::store::now_ms();
    for message in messages {
        if let Some(due) = message.due_at {
            histogram!("wharf_queue_wait_seconds", "queue" => message.queue.clone())
                .record((now - due).max(0) as f64 / 1000.0);
        }
    }
}

/// A batch from `source` (`inbox`, `amqp:<queue>`) was settled:
/// `wharf_settled_total{source,result}` per (message, plugin) pair,
/// `wharf_dedup_skipped_total{source}` for duplicates settled elsewhere first,
/// `wharf_settle_reruns_total{plugin,why}` for handler runs the settle repeated.
pub fn settled(source: &str, summary: &SettleSummary) {
    if !recording() {
        return;
    }
    for (result, n) in [
        ("handled", summary.handled),
        ("retried", summary.retried),
        ("dead", summary.dead),
        ("deferred", summary.deferred),
        ("fenced", summary.fenced),
    ] {
        if n > 0 {
            counter!("wharf_settled_total", "source" => source.to_owned(), "result" => result)
                .increment(n);
        }
    }
    dedup_skipped(source, summary.duplicates);
    late_replies("expired", summary.late_replies);
    for (plugin, runs) in &summary.plugins {
        for (why, n) in [("stale", runs.resolved), ("rescheduled", runs.rescheduled)] {
            if n > 0 {
                counter!("wharf_settle_reruns_total", "plugin" => plugin.clone(), "why" => why)
                    .increment(n);
            }
        }
    }
}

/// `n` deliveries from `source` were duplicates of messages handled already, skipped
/// without running a handler: `wharf_dedup_skipped_total{source}`.
pub fn dedup_skipped(source: &str, n: u64) {
    if !recording() {
        return;
    }
    if n > 0 {
        counter!("wharf_dedup_skipped_total", "source" => source.to_owned()).increment(n);
    }
}

/// `n` answers came too late for their requesters: `wharf_replies_late_total{why}`, where
/// `why` is `expired` (committed after the request's deadline) or `unroutable` (the
/// reply queue was gone when the relay sent it).
pub fn late_replies(why: &'static str, n: u64) {
    if !recording() {
        return;
    }
    if n > 0 {
        counter!("wharf_replies_late_total", "why" => why).increment(n);
    }
}

/// The relay published `n` outbox messages, confirmed: `wharf_outbox_published_total`.
pub fn outbox_published(n: u64) {
    if !recording() {
        return;
    }
    counter!("wharf_outbox_published_total").increment(n);
}

/// An outgoing HTTP request of `plugin` to `host` (the host its grant names, or the
/// grant's pattern; `-` for one refused) ended with `status` (the response's code, or
/// `refused`, `timeout`, `too_large`, `error`) after `elapsed` (none if it never left):
/// `wharf_outbound_requests_total{plugin,host,status}` and
/// `wharf_outbound_request_duration_seconds{plugin,host}`.
pub fn outbound_request(plugin: &str, host: &str, status: &str, elapsed: Option<Duration>) {
    if !recording() {
        return;
    }
    let (plugin, host) = (plugin.to_owned(), host.to_owned());
    counter!("wharf_outbound_requests_total", "plugin" => plugin.clone(), "host" => host.clone(), "status" => status.to_owned())
        .increment(1);
    if let Some(elapsed) = elapsed {
        histogram!("wharf_outbound_request_duration_seconds", "plugin" => plugin, "host" => host)
            .record(elapsed);
    }
}

/// A plugin file or deployment was loaded and served (`outcome` `served`), or refused
/// (`refused`): `wharf_plugin_reloads_total{outcome}`.
pub fn plugin_reload(outcome: &'static str) {
    if !recording() {
        return;
    }
    counter!("wharf_plugin_reloads_total", "outcome" => outcome).increment(1);
}

/// `plugin`'s circuit breaker opened or closed: `wharf_breaker_open{plugin}` (1 open).
pub fn breaker(plugin: &str, open: bool) {
    if !recording() {
        return;
    }
    gauge!("wharf_breaker_open", "plugin" => plugin.to_owned()).set(f64::from(u8::from(open)));
}

/// The label values a gauge was set for by the last scrape that are not in `now`; `now`
/// is remembered for the next. A queue that drained or a plugin whose dead letters were
/// all deleted drops out of the store's answer, and its gauges must read 0, not their
/// last value.
fn gone(earlier: &Mutex<BTreeSet<String>>, now: BTreeSet<String>) -> Vec<String> {
    let mut earlier = earlier.lock().unwrap_or_else(|e| e.into_inner());
    let gone = earlier.difference(&now).cloned().collect();
    *earlier = now;
    gone
}

/// The inbox queues as the store counts them now: `wharf_inbox_messages{queue,state}`
/// (`ready`, `in_flight`, `scheduled`) and `wharf_inbox_oldest_message_age_seconds{queue}`;
/// a queue no longer counted reads 0.
pub fn queues(stats: &[QueueStats], now_ms: i64) {
    static EARLIER: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    if !recording() {
        return;
    }
    let inbox = stats.iter().filter(|q| q.source == QueueSource::Inbox);
    for queue in gone(&EARLIER, inbox.clone().map(|q| q.queue.clone()).collect()) {
        for state in ["ready", "in_flight", "scheduled"] {
            gauge!("wharf_inbox_messages", "queue" => queue.clone(), "state" => state).set(0.0);
        }
        gauge!("wharf_inbox_oldest_message_age_seconds", "queue" => queue).set(0.0);
    }
    for q in inbox {
        for (state, n) in [
            ("ready", q.pending),
            ("in_flight", q.in_flight),
            ("scheduled", q.scheduled),
        ] {
            gauge!("wharf_inbox_messages", "queue" => q.queue.clone(), "state" => state)
                .set(n as f64);
        }
        let age = q.oldest_at.map_or(0, |at| (now_ms - at).max(0));
        gauge!("wharf_inbox_oldest_message_age_seconds", "queue" => q.queue.clone())
            .set(age as f64 / 1000.0);
    }
}

/// What waits beyond the inbox: `wharf_failed_messages{plugin}` (`""`: no handler; a
/// plugin with none left reads 0) and `wharf_outbox_pending`.
pub fn backlog(backlog: &Backlog) {
    static EARLIER: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    if !recording() {
        return;
    }
    let now = backlog
        .failed_by_plugin
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    for plugin in gone(&EARLIER, now) {
        gauge!("wharf_failed_messages", "plugin" => plugin).set(0.0);
    }
    for (plugin, n) in &backlog.failed_by_plugin {
        gauge!("wharf_failed_messages", "plugin" => plugin.clone()).set(*n as f64);
    }
    gauge!("wharf_outbox_pending").set(backlog.outbox_pending as f64);
}

/// Ordering keys a dead letter holds: `wharf_held_keys{plugin}` (a plugin with none left
/// reads 0).
pub fn held_keys(by_plugin: &[(String, u64)]) {
    static EARLIER: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    if !recording() {
        return;
    }
    for plugin in gone(&EARLIER, by_plugin.iter().map(|(p, _)| p.clone()).collect()) {
        gauge!("wharf_held_keys", "plugin" => plugin).set(0.0);
    }
    for (plugin, n) in by_plugin {
        gauge!("wharf_held_keys", "plugin" => plugin.clone()).set(*n as f64);
    }
}

/// Whether the database answered the scrape's queries: `wharf_database_up`.
pub fn database_up(up: bool) {
    if !recording() {
        return;
    }
    gauge!("wharf_database_up").set(f64::from(u8::from(up)));
}

/// Whether this host is connected to the broker it uses: `wharf_amqp_connected`.
pub fn amqp_connected(connected: bool) {
    if !recording() {
        return;
    }
    gauge!("wharf_amqp_connected").set(f64::from(u8::from(connected)));
}

/// Whether a Kafka broker is reachable: `wharf_kafka_connected`.
pub fn kafka_connected(connected: bool) {
    if !recording() {
        return;
    }
    gauge!("wharf_kafka_connected").set(f64::from(u8::from(connected)));
}

/// Records of `topic`'s `partition` (one this host owns; 0 once it does not) not
/// committed yet by the group: `wharf_kafka_lag{topic,partition}`.
pub fn kafka_lag(topic: &str, partition: i32, lag: i64) {
    if !recording() {
        return;
    }
    let labels = [
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ];
    gauge!("wharf_kafka_lag", &labels).set(lag as f64);
}

/// The plugins served now, as (name, version, sha256): `wharf_plugin_info{plugin,version,
/// sha256}` is 1 for each, and 0 for a version served earlier and replaced.
pub fn plugins(served: BTreeSet<(String, String, String)>) {
    static EARLIER: Mutex<BTreeSet<(String, String, String)>> = Mutex::new(BTreeSet::new());
    let mut earlier = EARLIER.lock().unwrap_or_else(|e| e.into_inner());
    for (plugin, version, sha256) in earlier.difference(&served) {
        gauge!("wharf_plugin_info", "plugin" => plugin.clone(), "version" => version.clone(), "sha256" => sha256.clone())
            .set(0.0);
    }
    for (plugin, version, sha256) in &served {
        gauge!("wharf_plugin_info", "plugin" => plugin.clone(), "version" => version.clone(), "sha256" => sha256.clone())
            .set(1.0);
    }
    *earlier = served;
}
