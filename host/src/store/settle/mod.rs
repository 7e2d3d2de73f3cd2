//! The settle plan: what a batch of settlements writes, decided once for every store, and
//! the transaction a store settles in ([`SettleTransaction`]). `crate::settle` runs the
//! sequence; this module holds its rules and what every store shares:
//!
//! - [`state_keys`]: the keys a batch read or wrote, in the order a store locks them; a
//!   [`StateView`] holds their committed values with the batch's writes applied in order.
//! - [`SettlePlan::resolved`] walks the batch in order, in memory, and decides per
//!   (message, plugin) result what rows to write. This module is the only place these
//!   rules live:
//!   - **handled**: a result whose state reads are still stale (the settle's budget was
//!     spent) runs again in another round without counting an attempt, as does a
//!     contended plugin's the settle did not run; otherwise a ledger row, its publishes
//!     (inbox messages and outbox rows), its state writes (each key's final value with its
//!     new version; a delete leaves the key absent, version 0), and the failed-message
//!     rows of an operator's retry marked resolved;
//!   - **retry**: an attempt error with the delay; the message stays and the attempt
//!     counts;
//!   - **dead** (and a message refused before any plugin ran): an attempt error (not for
//!     a refusal) and a failed-message row; a message that names a dead-letter topic
//!     (`crate::dead_letter_topic`) also goes to the outbox for it, once per settle;
//!   - **deferred** (breaker open): the message stays, the attempt does not count;
//!   - **waits** (an ordered plugin whose key an earlier message still holds): the same,
//!     parked until a settle moves the key on (`keys`: what a settle does to ordering keys).
//!     A delivery of an ordered consumer that an ordered plugin retries or dead-letters
//!     waits too: its transport moves it into the inbox, where it runs again in order.
//!
//!   A handled result whose writes would take its plugin over its state quota is dead
//!   instead ([`quota`]: the plan is built again that way only when the first plan shows
//!   a plugin going over).
//!
//!   A message that stays is due after the longest delay any of its plugins asked for;
//!   the others are done.
//! - A store writes the plan ([`SettleTransaction::write`]): SQLite row by row,
//!   PostgreSQL and MariaDB one bulk statement per table. A settle whose ledger insert
//!   meets the ledger's key (a message handled before reached the inbox without a dedup
//!   row) writes nothing: it is rolled back, and the store marks the batch seen so its
//!   next claim looks up what ran.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use uuid::Uuid;

mod keys;
mod quota;
mod rows;
mod sends;
pub(super) mod statements;
mod transaction;
mod usage;
mod view;

pub use keys::InBatch;
pub(crate) use keys::{KeyHold, KeyStep, PARK_AT_MOST, parked};
pub(crate) use quota::Quotas;
pub use quota::{SettleBudget, StateQuota};
pub(crate) use rows::{AttemptRow, DeadRow, OutboxRow, ReplyRow, StateWrite, Stay};
pub use transaction::{SettleTransaction, StateLocks};
pub use usage::StateUsage;
pub(crate) use view::next_version;
pub use view::{SharedView, StateView};

use super::{PluginResult, PluginRuns, PluginVersion, SettleSummary, Settlement};

use crate::dead_letter_topic;
use crate::envelope::{Envelope, NewMessage};
use crate::outcome::Verdict;
use crate::reply::Answering;

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

/// Rows to write for a batch, driver-neutral; built by `SettlePlan::resolved`.
#[derive(Default)]
pub struct SettlePlan<'a> {
    /// What the plan does, by (message, plugin) pair.
    pub(crate) summary: SettleSummary,
    /// Ledger rows: (message, plugin) pairs handled. Their failed-message rows that an
    /// operator's retry brought back (status `retrying`) are resolved.
    pub(crate) handled: Vec<(Uuid, &'a PluginVersion)>,
    /// Messages the handlers published to inbox queues, in order.
    pub(crate) publishes: Vec<NewMessage>,
    /// Outbox rows, in order: what the handlers published to AMQP exchanges and Kafka
    /// topics, and dead letters going to their dead-letter topics.
    pub(crate) outbox: Vec<OutboxRow<'a>>,
    /// Answers to requests whose callers wait on a host (answers to a queue are among
    /// `publishes` and `outbox`).
    pub(crate) replies: Vec<ReplyRow<'a>>,
    /// The final value and version of every written key.
    pub(crate) state: BTreeMap<StateKey<'a>, StateWrite<'a>>,
    /// Attempt errors, in order.
    pub(crate) attempt_errors: Vec<AttemptRow<'a>>,
    /// Failed-message rows, in order (a message's refusal before its plugins' results).
    pub(crate) dead: Vec<DeadRow<'a>>,
    /// Messages that stay for another attempt.
    pub(crate) stay: Vec<Stay<'a>>,
    /// Messages that are done (every plugin handled or gave up).
    pub(crate) done: Vec<Uuid>,
    /// Every keyed message claimed with keys kept in order, settled or staying: the keys
    /// a store locks, and those whose later messages it wakes.
    pub(crate) keys: Vec<KeyStep<'a>>,
    /// Keys an ordered plugin's dead letter holds.
    pub(crate) held: Vec<KeyHold<'a>>,
    /// By plugin, what its state gains or loses (plugins whose state changes); only
    /// known from a plan built over a view.
    pub(crate) usage: BTreeMap<&'a str, StateUsage>,
}

impl<'a> SettlePlan<'a> {
    /// Decide the rows of `batch` (the settlements a store still holds, in order), given
    /// the committed `versions` of every key in [`state_keys`] of it.
    /// When `quotas` are given, a handled result that would take its plugin over its state
    /// quota is dead-lettered instead.
    fn build(
        batch: &[&'a Settlement],
        mut versions: Versions<'a>,
        mut quotas: Option<Quotas<'_>>,
    ) -> Self {
        let mut plan = Self::default();
        for s in batch {
            plan.add(s, &mut versions, &mut quotas);
        }
        plan.summary.outboxed = plan.outbox.len() as u64;
        plan
    }

    /// Decide the rows of `batch` after [`resolve`] re-ran its stale results over `view`
    /// (`runs`: by plugin, the runs whose result was not kept and the stale results
    /// replaced), within `quotas` if given; with what each plugin's state gains.
    pub(crate) fn resolved(
        batch: &[&'a Settlement],
        view: &StateView,
        runs: BTreeMap<String, PluginRuns>,
        quotas: Option<Quotas<'_>>,
    ) -> Self {
        let versions = state_keys(batch)
            .into_iter()
            .map(|(plugin, key)| {
                let version = view
                    .committed(plugin, key)
                    .expect("resolve loaded every key");
                ((plugin, key), version)
            })
            .collect();
        let mut plan = Self::build(batch, versions, quotas);
        super::add_runs(&mut plan.summary.plugins, runs);
        for ((plugin, key), write) in &plan.state {
            let change = StateUsage::of(key, write.value.map(<[u8]>::len))
                - view.committed_usage(plugin, key);
            *plan.usage.entry(plugin).or_default() += change;
        }
        plan.usage.retain(|_, change| !change.is_zero());
        plan
    }

    /// The plugins whose state this plan changes, sorted: whose usage to lock and check
    /// against their quotas.
    pub(crate) fn changing(&self) -> Vec<&'a str> {
        self.usage.keys().copied().collect()
    }

    fn add(
        &mut self,
        s: &'a Settlement,
        versions: &mut Versions<'a>,
        quotas: &mut Option<Quotas<'_>>,
    ) {
        let message = &s.message;
        let mut order = keys::Order::of(message);
        // A request's first answer: a handler's, or the reason it was given up on.
        let mut answer: Option<Answering<'a>> = None;
        // The next attempt: the longest delay any plugin asked for, and whether it counts.
        let mut stay: Option<(Duration, bool)> = None;
        let mut schedule = |delay: Duration, counts: bool| {
            let (d, c) = stay.get_or_insert((delay, counts));
            *d = (*d).max(delay);
            *c |= counts;
        };
        // A refused message's one attempt (the refusal) is in its history like any other.
        if let Some(error) = &s.refused {
            self.dead(
                message,
                &NO_PLUGIN,
                message.attempts + 1,
                Cow::Borrowed(error),
            );
            answer.get_or_insert(Answering::Rejected(Cow::Borrowed(error)));
        }
        for result in &s.results {
            let PluginResult {
                plugin,
                attempt,
                verdict,
            } = result;
            let runs = self.summary.plugins.entry(plugin.name.clone()).or_default();
            if !matches!(
                verdict,
                Verdict::Deferred { .. } | Verdict::RunAtSettle | Verdict::Waits
            ) {
                runs.runs += 1;
            }
            match verdict {
                Verdict::Handled(effects) => {
                    let name = plugin.name.as_str();
                    let stale = effects
                        .reads
                        .iter()
                        .find(|(key, seen)| versions[&(name, key.as_str())] != **seen);
                    if let Some((key, _)) = stale {
                        tracing::debug!(message_id = %message.id, plugin = name, key, "state changed while the handler ran; running it again");
                        runs.rescheduled += 1;
                        schedule(Duration::ZERO, false);
                        continue;
                    }
                    let charged = quotas
                        .as_mut()
                        .map_or(Ok(()), |q| q.charge(name, &effects.writes));
                    runs.settled += 1;
                    if let Err(error) = charged {
                        tracing::warn!(message_id = %message.id, plugin = name, "{error}");
                        order.dead(name, &mut self.held);
                        answer.get_or_insert(Answering::Rejected(Cow::Owned(error.clone())));
                        self.dead(message, plugin, *attempt, Cow::Owned(error));
                        continue;
                    }
                    runs.handled += 1;
                    order.handled(name);
                    if let Some(reply) = &effects.reply {
                        answer.get_or_insert(Answering::Given(reply));
                    }
                    self.record_handled(message, plugin, &effects.publishes);
                    for (key, value) in &effects.writes {
                        let key = (name, key.as_str());
                        let version = versions.get_mut(&key).expect("state_keys has it");
                        *version = next_version(*version, value.as_deref());
                        self.state.insert(
                            key,
                            StateWrite {
                                value: value.as_deref(),
                                version: *version,
                            },
                        );
                    }
                    self.summary.handled += 1;
                    self.summary.outcomes.of(message, name).handled += 1;
                }
                Verdict::Retry { .. } | Verdict::Dead { .. }
                    if order.moves_to_inbox(&plugin.name) =>
                {
                    tracing::debug!(message_id = %message.id, plugin = plugin.name, "an ordered plugin did not handle a delivery of an ordered consumer; it moves into the inbox with its key");
                    runs.rescheduled += 1;
                    schedule(Duration::ZERO, false);
                }
                Verdict::Retry { error, delay } => {
                    runs.settled += 1;
                    self.attempt_errors.push(AttemptRow {
                        message: message.id,
                        plugin,
                        attempt: *attempt,
                        error: Cow::Borrowed(error),
                        delay: Some(*delay),
                    });
                    self.summary.retried += 1;
                    self.summary.outcomes.of(message, &plugin.name).retried += 1;
                    schedule(*delay, true);
                }
                Verdict::Dead { error } => {
                    runs.settled += 1;
                    order.dead(&plugin.name, &mut self.held);
                    answer.get_or_insert(Answering::Rejected(Cow::Borrowed(error)));
                    self.dead(message, plugin, *attempt, Cow::Borrowed(error));
                }
                Verdict::Deferred { delay } => {
                    self.summary.deferred += 1;
                    schedule(*delay, false);
                }
                Verdict::RunAtSettle => {
                    runs.rescheduled += 1;
                    schedule(Duration::ZERO, false);
                }
                Verdict::Waits => {}
            }
        }
        let (holds, parks) = order.after(&s.results);
        self.keys.extend(order.step());
        let done = stay.is_none() && !parks;
        if message.reply_to().is_some()
            && let Some(answer) = answer.or(done.then_some(Answering::Handled))
        {
            self.answer(message, answer);
        }
        match stay {
            Some((delay, counts)) => self.stay.push(Stay {
                message,
                counts,
                delay,
                holds,
            }),
            None if parks => self.stay.push(Stay {
                message,
                counts: false,
                delay: Duration::ZERO,
                holds,
            }),
            None => self.done.push(message.id),
        }
    }

    /// A pair that gave up on attempt `attempt` with `error`: its last attempt error and
    /// its failed-message row; the message's first failed row of the batch also sends it
    /// to its dead-letter topic, if it names one.
    fn dead(
        &mut self,
        message: &'a Envelope,
        plugin: &'a PluginVersion,
        attempt: u32,
        error: Cow<'a, str>,
    ) {
        let first = !self.dead.iter().any(|d| d.message.id == message.id);
        if let Some(publish) = first
            .then(|| dead_letter_topic::publish(message, &error))
            .flatten()
        {
            self.outbox.push(OutboxRow {
                source: message.id,
                plugin: &plugin.name,
                publish: Cow::Owned(publish),
            });
        }
        self.attempt_errors.push(AttemptRow {
            message: message.id,
            plugin,
            attempt,
            error: error.clone(),
            delay: None,
        });
        self.dead.push(DeadRow {
            message,
            plugin,
            attempts: attempt,
            error,
        });
        self.summary.dead += 1;
        self.summary.outcomes.of(message, &plugin.name).dead += 1;
    }
}

#[cfg(test)]
mod tests;
