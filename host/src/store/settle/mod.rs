//! The settle plan: what a batch of settlements writes, decided once for every store.
//!
//! A store settles a batch in three steps (River's executor/completer split):
//!
//! 1. It keeps the messages it still holds (fencing; a transport's deliveries need none),
//!    locks the state keys the batch read or wrote ([`state_keys`]) and loads their
//!    committed versions (absent = 0).
//! 2. [`SettlePlan::build`] walks the batch in order, in memory, and decides per
//!    (message, plugin) result what rows to write. This module is the only place these
//!    rules live:
//!    - **handled**: a result whose state reads are stale (another host changed a key
//!      since the handler read it, or an earlier message of this batch did) re-runs
//!      without counting an attempt; otherwise a ledger row, its publishes (inbox
//!      messages and outbox rows), its state writes (each key's final value with its new
//!      version; a delete leaves the key absent, version 0), and the failed-message rows
//!      of an operator's retry marked resolved;
//!    - **retry**: an attempt error with the delay; the message stays and the attempt
//!      counts;
//!    - **dead** (and a message refused before any plugin ran): an attempt error (not
//!      for a refusal) and a failed-message row;
//!    - **deferred** (breaker open): the message stays, the attempt does not count.
//!
//!    A message that stays is due after the longest delay any of its plugins asked for;
//!    the others are done.
//! 3. The store writes the plan: SQLite row by row, PostgreSQL one bulk statement per
//!    table.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use uuid::Uuid;

use super::{NextAttempt, PluginResult, PluginVersion, SettleSummary, Settlement};
use crate::effects::{Destination, Publish};
use crate::envelope::{Envelope, NewMessage};
use crate::outcome::Verdict;

/// A state key of one plugin: (plugin, key).
pub(crate) type StateKey<'a> = (&'a str, &'a str);

/// The version of each state key a batch touches, as committed (absent = 0).
pub(crate) type Versions<'a> = BTreeMap<StateKey<'a>, i64>;

/// The plugin recorded with a message refused before any plugin ran.
static NO_PLUGIN: PluginVersion = PluginVersion {
    name: String::new(),
    version: String::new(),
    sha256: String::new(),
};

/// Every state key the handled results of `batch` read or wrote, in one order: the order
/// in which a store that locks them must take the locks.
pub(crate) fn state_keys<'a>(batch: &[&'a Settlement]) -> BTreeSet<StateKey<'a>> {
    let mut keys = BTreeSet::new();
    for s in batch {
        for r in &s.results {
            if let Verdict::Handled(effects) = &r.verdict {
                for key in effects.reads.keys().chain(effects.writes.keys()) {
                    keys.insert((r.plugin.name.as_str(), key.as_str()));
                }
            }
        }
    }
    keys
}

/// A message published to an AMQP exchange, for the outbox.
pub(crate) struct OutboxRow<'a> {
    /// The message whose handler published it.
    pub source: Uuid,
    /// That handler's plugin.
    pub plugin: &'a str,
    /// Target exchange.
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Id, kind, headers and payload.
    pub publish: &'a Publish,
}

/// The final value of a written state key.
pub(crate) struct StateWrite<'a> {
    /// `None` deletes the key.
    pub value: Option<&'a [u8]>,
    /// Its new version.
    pub version: i64,
}

/// One failed attempt, for the message's history.
pub(crate) struct AttemptRow<'a> {
    /// The message.
    pub message: Uuid,
    /// The plugin that failed it.
    pub plugin: &'a str,
    /// Which attempt (1-based).
    pub attempt: u32,
    /// Its error.
    pub error: &'a str,
    /// Wait before the next attempt; `None` for the final one.
    pub delay: Option<Duration>,
}

/// A (message, plugin) pair that gave up: a failed-message row. A message failed again by
/// the same plugin adds its attempts to the existing row.
pub(crate) struct DeadRow<'a> {
    /// The message as it was claimed or delivered.
    pub message: &'a Envelope,
    /// The plugin that gave up on it (empty when the message was refused).
    pub plugin: &'a PluginVersion,
    /// Attempts made.
    pub attempts: u32,
    /// The final error.
    pub error: &'a str,
}

/// A message that stays for another attempt.
pub(crate) struct Stay<'a> {
    /// The message.
    pub message: &'a Envelope,
    /// Whether the attempt counts (false for stale reads and deferred plugins).
    pub counts: bool,
    /// Wait before it is due: the longest delay any of its plugins asked for.
    pub delay: Duration,
}

/// Rows to write for a batch, driver-neutral; built by [`SettlePlan::build`].
#[derive(Default)]
pub(crate) struct SettlePlan<'a> {
    /// What the plan does, by (message, plugin) pair.
    pub summary: SettleSummary,
    /// Ledger rows: (message, plugin) pairs handled. Their failed-message rows that an
    /// operator's retry brought back (status `retrying`) are resolved.
    pub handled: Vec<(Uuid, &'a PluginVersion)>,
    /// Messages the handlers published to inbox queues, in order.
    pub publishes: Vec<NewMessage>,
    /// Messages the handlers published to AMQP exchanges, in order.
    pub outbox: Vec<OutboxRow<'a>>,
    /// The final value and version of every written key.
    pub state: BTreeMap<StateKey<'a>, StateWrite<'a>>,
    /// Attempt errors, in order.
    pub attempt_errors: Vec<AttemptRow<'a>>,
    /// Failed-message rows, in order (a message's refusal before its plugins' results).
    pub dead: Vec<DeadRow<'a>>,
    /// Messages that stay for another attempt.
    pub stay: Vec<Stay<'a>>,
    /// Messages that are done (every plugin handled or gave up).
    pub done: Vec<Uuid>,
}

impl<'a> SettlePlan<'a> {
    /// Decide the rows of `batch` (the settlements a store still holds, in order), given
    /// the committed `versions` of every key in [`state_keys`] of it.
    pub fn build(batch: &[&'a Settlement], mut versions: Versions<'a>) -> Self {
        let mut plan = Self::default();
        for s in batch {
            plan.add(s, &mut versions);
        }
        plan
    }

    fn add(&mut self, s: &'a Settlement, versions: &mut Versions<'a>) {
        let message = &s.message;
        // The next attempt: the longest delay any plugin asked for, and whether it counts.
        let mut stay: Option<(Duration, bool)> = None;
        let mut schedule = |delay: Duration, counts: bool| {
            let (d, c) = stay.get_or_insert((delay, counts));
            *d = (*d).max(delay);
            *c |= counts;
        };
        if let Some(error) = &s.refused {
            self.dead.push(DeadRow {
                message,
                plugin: &NO_PLUGIN,
                attempts: message.attempts + 1,
                error,
            });
            self.summary.dead += 1;
        }
        for result in &s.results {
            let PluginResult {
                plugin,
                attempt,
                verdict,
            } = result;
            match verdict {
                Verdict::Handled(effects) => {
                    let name = plugin.name.as_str();
                    let stale = effects
                        .reads
                        .iter()
                        .find(|(key, seen)| versions[&(name, key.as_str())] != **seen);
                    if let Some((key, _)) = stale {
                        tracing::debug!(message_id = %message.id, plugin = name, key, "state changed while the handler ran; running it again");
                        self.summary.conflicts += 1;
                        schedule(Duration::ZERO, false);
                        continue;
                    }
                    self.record_handled(message, plugin, &effects.publishes);
                    for (key, value) in &effects.writes {
                        let key = (name, key.as_str());
                        let version = versions.get_mut(&key).expect("state_keys has it");
                        *version = if value.is_some() { *version + 1 } else { 0 };
                        self.state.insert(
                            key,
                            StateWrite {
                                value: value.as_deref(),
                                version: *version,
                            },
                        );
                    }
                    self.summary.handled += 1;
                }
                Verdict::Retry { error, delay } => {
                    self.attempt_errors.push(AttemptRow {
                        message: message.id,
                        plugin: &plugin.name,
                        attempt: *attempt,
                        error,
                        delay: Some(*delay),
                    });
                    self.summary.retried += 1;
                    schedule(*delay, true);
                }
                Verdict::Dead { error } => {
                    self.attempt_errors.push(AttemptRow {
                        message: message.id,
                        plugin: &plugin.name,
                        attempt: *attempt,
                        error,
                        delay: None,
                    });
                    self.dead.push(DeadRow {
                        message,
                        plugin,
                        attempts: *attempt,
                        error,
                    });
                    self.summary.dead += 1;
                }
                Verdict::Deferred { delay } => {
                    self.summary.deferred += 1;
                    schedule(*delay, false);
                }
            }
        }
        match stay {
            Some((delay, counts)) => self.stay.push(Stay {
                message,
                counts,
                delay,
            }),
            None => self.done.push(message.id),
        }
    }

    /// The ledger row of a handled pair and its publishes.
    fn record_handled(
        &mut self,
        message: &'a Envelope,
        plugin: &'a PluginVersion,
        publishes: &'a [Publish],
    ) {
        self.handled.push((message.id, plugin));
        for publish in publishes {
            match &publish.destination {
                Destination::Queue(queue) => self.publishes.push(NewMessage {
                    id: publish.id,
                    queue: queue.clone(),
                    kind: publish.kind.clone(),
                    headers: publish.headers.clone(),
                    payload: publish.payload.clone(),
                }),
                Destination::Exchange {
                    exchange,
                    routing_key,
                } => self.outbox.push(OutboxRow {
                    source: message.id,
                    plugin: &plugin.name,
                    exchange,
                    routing_key,
                    publish,
                }),
            }
        }
    }

    /// The messages to try again, as a transport re-publishes them.
    pub fn next_attempts(&self) -> Vec<NextAttempt> {
        self.stay
            .iter()
            .map(|s| NextAttempt {
                id: s.message.id,
                delay: s.delay,
                counts: s.counts,
            })
            .collect()
    }

    /// The dead letters, one per message with its first error, for a transport to forward.
    pub fn dead_letters(&self) -> Vec<(Uuid, String)> {
        let mut seen = BTreeSet::new();
        self.dead
            .iter()
            .filter(|d| seen.insert(std::ptr::from_ref(d.message)))
            .map(|d| (d.message.id, d.error.to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effects::Effects;

    fn message(n: u8, attempts: u32) -> Envelope {
        Envelope {
            id: Uuid::from_bytes([n; 16]),
            queue: "q".into(),
            kind: "k".into(),
            headers: Default::default(),
            payload: vec![n],
            attempts,
            lock_token: Uuid::nil(),
            settled_plugins: Default::default(),
            origin: Default::default(),
        }
    }

    fn plugin(name: &str) -> PluginVersion {
        PluginVersion {
            name: name.into(),
            version: "1.0.0".into(),
            sha256: "ab".into(),
        }
    }

    fn result(name: &str, verdict: Verdict) -> PluginResult {
        PluginResult {
            plugin: plugin(name),
            attempt: 1,
            verdict,
        }
    }

    /// A handled result that read `key` at `seen` and wrote `value` to it.
    fn read_modify_write(key: &str, seen: i64, value: Option<&[u8]>) -> Verdict {
        Verdict::Handled(Effects {
            reads: [(key.to_owned(), seen)].into(),
            writes: [(key.to_owned(), value.map(<[u8]>::to_vec))].into(),
            ..Effects::default()
        })
    }

    fn settlement(n: u8, results: Vec<PluginResult>) -> Settlement {
        Settlement {
            message: message(n, 0),
            results,
            refused: None,
        }
    }

    fn build<'a>(batch: &'a [Settlement], committed: &[(&'a str, &'a str, i64)]) -> SettlePlan<'a> {
        let held: Vec<&Settlement> = batch.iter().collect();
        let mut versions: Versions = state_keys(&held).into_iter().map(|k| (k, 0)).collect();
        for (plugin, key, version) in committed {
            versions.insert((plugin, key), *version);
        }
        SettlePlan::build(&held, versions)
    }

    #[test]
    fn a_read_made_stale_by_an_earlier_message_of_the_batch_runs_again_uncounted() {
        let batch = [
            settlement(1, vec![result("p", read_modify_write("n", 3, Some(b"4")))]),
            settlement(2, vec![result("p", read_modify_write("n", 3, Some(b"4")))]),
        ];
        let plan = build(&batch, &[("p", "n", 3)]);
        assert_eq!((plan.summary.handled, plan.summary.conflicts), (1, 1));
        assert_eq!(plan.handled.len(), 1);
        assert_eq!(plan.handled[0].0, batch[0].message.id);
        assert_eq!(plan.done, [batch[0].message.id]);
        assert_eq!(plan.stay.len(), 1);
        let stay = &plan.stay[0];
        assert_eq!(stay.message.id, batch[1].message.id);
        assert!(!stay.counts);
        assert_eq!(stay.delay, Duration::ZERO);
        let write = &plan.state[&("p", "n")];
        assert_eq!((write.value, write.version), (Some(&b"4"[..]), 4));
    }

    #[test]
    fn a_read_changed_by_another_host_is_stale_and_a_delete_leaves_version_zero() {
        let batch = [
            settlement(1, vec![result("p", read_modify_write("a", 1, None))]),
            settlement(2, vec![result("p", read_modify_write("b", 1, None))]),
        ];
        // "a" is as the handler read it, "b" moved on meanwhile.
        let plan = build(&batch, &[("p", "a", 1), ("p", "b", 2)]);
        assert_eq!((plan.summary.handled, plan.summary.conflicts), (1, 1));
        let write = &plan.state[&("p", "a")];
        assert_eq!((write.value, write.version), (None, 0));
        assert!(!plan.state.contains_key(&("p", "b")));
    }

    #[test]
    fn a_message_stays_for_its_longest_delay_and_counts_if_any_plugin_retried() {
        let second = Duration::from_secs(1);
        let batch = [settlement(
            1,
            vec![
                result(
                    "slow",
                    Verdict::Retry {
                        error: "busy".into(),
                        delay: second,
                    },
                ),
                result("open", Verdict::Deferred { delay: 5 * second }),
                result("fine", Verdict::Handled(Effects::default())),
            ],
        )];
        let plan = build(&batch, &[]);
        let summary = plan.summary;
        assert_eq!(
            (summary.retried, summary.deferred, summary.handled),
            (1, 1, 1)
        );
        assert_eq!(plan.stay.len(), 1);
        assert!(plan.stay[0].counts);
        assert_eq!(plan.stay[0].delay, 5 * second);
        assert!(plan.done.is_empty());
        let errors: Vec<_> = plan
            .attempt_errors
            .iter()
            .map(|a| (a.plugin, a.error, a.delay))
            .collect();
        assert_eq!(errors, [("slow", "busy", Some(second))]);
        assert_eq!(plan.next_attempts()[0].delay, 5 * second);
    }

    #[test]
    fn dead_and_refused_messages_are_failed_rows_and_done() {
        let mut refused = settlement(1, Vec::new());
        refused.refused = Some("no handler for kind k".into());
        refused.message.attempts = 2;
        let dead = |error: &str| Verdict::Dead {
            error: error.into(),
        };
        let batch = [
            refused,
            settlement(
                2,
                vec![result("a", dead("first")), result("b", dead("second"))],
            ),
        ];
        let plan = build(&batch, &[]);
        assert_eq!(plan.summary.dead, 3);
        let rows: Vec<_> = plan
            .dead
            .iter()
            .map(|d| {
                (
                    d.message.payload[0],
                    d.plugin.name.as_str(),
                    d.attempts,
                    d.error,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (1, "", 3, "no handler for kind k"),
                (2, "a", 1, "first"),
                (2, "b", 1, "second")
            ]
        );
        // A refusal has no attempt of a plugin to record.
        assert_eq!(plan.attempt_errors.len(), 2);
        assert_eq!(plan.done.len(), 2);
        let letters: Vec<_> = plan.dead_letters().into_iter().map(|(_, e)| e).collect();
        assert_eq!(letters, ["no handler for kind k", "first"]);
    }

    #[test]
    fn publishes_go_to_the_inbox_or_the_outbox_by_destination() {
        let publish = |destination| Publish {
            id: Uuid::now_v7(),
            destination,
            kind: "k".into(),
            headers: Default::default(),
            payload: b"x".to_vec(),
        };
        let effects = Effects {
            publishes: vec![
                publish(Destination::Queue("next".into())),
                publish(Destination::Exchange {
                    exchange: "ex".into(),
                    routing_key: "rk".into(),
                }),
            ],
            ..Effects::default()
        };
        let batch = [settlement(1, vec![result("p", Verdict::Handled(effects))])];
        let plan = build(&batch, &[]);
        assert_eq!(plan.publishes.len(), 1);
        assert_eq!(plan.publishes[0].queue, "next");
        assert_eq!(plan.outbox.len(), 1);
        let o = &plan.outbox[0];
        assert_eq!(
            (o.source, o.plugin, o.exchange, o.routing_key),
            (batch[0].message.id, "p", "ex", "rk")
        );
    }
}
