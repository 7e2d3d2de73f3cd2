//! What a settle does to ordering keys, for the plugins that keep their order.
//!
//! A keyed message claimed with keys kept in order ([`crate::store::KeyOrder::Keep`])
//! carries its [`KeyTurn`]. Its settle records which ordered plugins still owe it a
//! verdict (`holds`: a later message of the key waits for those); parks it when every
//! plugin it still owes waits for an earlier message ([`Verdict::Waits`]); holds the key
//! for a plugin that dead-lettered it (unless that plugin's policy skips); and when an
//! ordered plugin settled it, moves the key on: the key's `turn` grows and its first
//! parked later message is woken.
//!
//! A store writes these with the key rows (`ordering_keys`) locked, in one order, so a
//! settle parking a message and one moving its key on cannot miss each other: the parking
//! one sees the key's turn moved since its claim and leaves the message due instead.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use uuid::Uuid;

use crate::envelope::{DeadLetterKey, Envelope, KeyTurn};
use crate::outcome::Verdict;
use crate::store::PluginResult;

/// A parked message is due again after this even if no settle woke it (a plugin no
/// longer ordered, a host whose config differs): a wasted claim, never a stuck key.
pub(crate) const PARK_AT_MOST: Duration = Duration::from_secs(300);

/// A keyed message of a settled batch, claimed with keys kept in order.
#[derive(Debug, Clone)]
pub(crate) struct KeyStep<'a> {
    /// Its queue.
    pub queue: &'a str,
    /// Its key.
    pub key: &'a str,
    /// Its place in the key.
    pub seq: i64,
    /// The key's turn when it was claimed, where the store counts turns.
    pub turn: Option<i64>,
    /// The message.
    pub message: Uuid,
    /// This settle lets the key's later messages go on for a plugin: their turn moves.
    pub moves: bool,
    /// The message parks, waiting for these plugins (empty: it does not park).
    pub waits: Vec<&'a str>,
}

/// A key an ordered plugin's dead letter holds: its later messages wait for the plugin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHold<'a> {
    /// The dead-lettered message (its queue, key and seq).
    pub message: &'a Envelope,
    /// The plugin.
    pub plugin: &'a str,
}

/// What one message's results do to its key, gathered while its plan is built.
pub(super) struct Order<'a> {
    message: &'a Envelope,
    turn: Option<&'a KeyTurn>,
    /// Plugins that handled it or gave up on it in this settle.
    settled: BTreeSet<&'a str>,
    moves: bool,
    /// The plugins it parks waiting for.
    waits: Vec<&'a str>,
}

impl<'a> Order<'a> {
    /// A message that an ordered plugin settled before (a redelivery the ledger knows)
    /// moves its key on for that plugin as it leaves the inbox: a later message of the key
    /// may have parked behind it.
    pub(super) fn of(message: &'a Envelope) -> Self {
        let turn = message.turn.as_ref();
        let settled_before = turn
            .is_some_and(|t| (message.settled_plugins.iter()).any(|p| t.ordered.contains_key(p)));
        Self {
            message,
            turn,
            settled: BTreeSet::new(),
            moves: settled_before,
            waits: Vec::new(),
        }
    }

    fn policy(&self, plugin: &str) -> Option<DeadLetterKey> {
        self.turn?.ordered.get(plugin).copied()
    }

    /// Whether `plugin` not handling the message moves it into the inbox instead of
    /// retrying or dead-lettering it here: a delivery of an ordered consumer
    /// (`[[amqp.consume]] ordered`, or of a Kafka topic) to a plugin that keeps the order.
    /// The inbox runs it again in its key's order, and retries or holds the key there.
    pub(super) fn moves_to_inbox(&self, plugin: &str) -> bool {
        self.policy(plugin).is_some() && self.message.origin.is_delivery()
    }

    /// `plugin` handled the message.
    pub(super) fn handled(&mut self, plugin: &'a str) {
        self.settled.insert(plugin);
        self.moves |= self.policy(plugin).is_some();
    }

    /// `plugin` gave up on the message: the key is held for it, or moves on.
    pub(super) fn dead(&mut self, plugin: &'a str, held: &mut Vec<KeyHold<'a>>) {
        self.settled.insert(plugin);
        match self.policy(plugin) {
            // An inbox message's: one of a transport has no place in the key to hold it at.
            Some(DeadLetterKey::Hold)
                if self.message.key.is_some() && self.message.seq.is_some() =>
            {
                held.push(KeyHold {
                    message: self.message,
                    plugin,
                })
            }
            Some(_) => self.moves = true,
            None => {}
        }
    }

    /// The message's `holds` and whether it parks, from all its `results`: it parks when
    /// every plugin it still owes waits.
    pub(super) fn after(&mut self, results: &'a [PluginResult]) -> (Option<String>, bool) {
        let Some(turn) = self.turn else {
            return (None, false);
        };
        let mut pending = results
            .iter()
            .filter(|r| !self.settled.contains(r.plugin.name.as_str()))
            .peekable();
        let parks = pending.peek().is_some()
            && pending.clone().all(|r| matches!(r.verdict, Verdict::Waits));
        if parks {
            self.waits = pending.clone().map(|r| r.plugin.name.as_str()).collect();
        }
        let holds: Vec<&str> = pending
            .map(|r| r.plugin.name.as_str())
            .filter(|p| turn.ordered.contains_key(*p))
            .collect();
        (Some(holds.join(" ")), parks)
    }

    /// The message's step, when it was claimed with keys kept in order.
    pub(super) fn step(&self) -> Option<KeyStep<'a>> {
        let turn = self.turn?;
        Some(KeyStep {
            queue: &self.message.queue,
            key: self.message.key.as_deref()?,
            seq: self.message.seq?,
            turn: turn.turn,
            message: self.message.id,
            moves: self.moves,
            waits: self.waits.clone(),
        })
    }
}

/// The messages of `steps` that park: those waiting ([`KeyStep::waits`]) whose key did not
/// move since they were claimed (`turns`: each key's turn, read with its row locked); the
/// others stay due, since the settle that moved their key could not see them parked.
pub(crate) fn parked(
    steps: &[KeyStep<'_>],
    turns: &HashMap<(String, String), i64>,
) -> HashSet<Uuid> {
    steps
        .iter()
        .filter(|s| !s.waits.is_empty())
        .filter(|s| turns.get(&(s.queue.to_owned(), s.key.to_owned())) == s.turn.as_ref())
        .map(|s| s.message)
        .collect()
}

/// A batch's keys as the settle walks its messages in order: which ordered plugins a key
/// is blocked for by an earlier message of the batch (one the plugin did not handle, or
/// dead-lettered with its key held), so the key's later messages wait for them
/// ([`Verdict::Waits`]) instead of running inside the settle.
#[derive(Debug, Default)]
pub struct InBatch {
    blocked: HashSet<(String, String, String)>,
}

impl InBatch {
    fn entry(message: &Envelope, plugin: &str) -> Option<(String, String, String)> {
        let turn = message.turn.as_ref()?;
        turn.ordered.contains_key(plugin).then_some(())?;
        let key = message.key.clone()?;
        Some((message.queue.clone(), key, plugin.to_owned()))
    }

    /// Whether `plugin` on `message` waits for an earlier message of the batch.
    pub fn waits(&self, message: &Envelope, plugin: &str) -> bool {
        Self::entry(message, plugin).is_some_and(|e| self.blocked.contains(&e))
    }

    /// `plugin`'s final result on `message`: `kept` when it is handled and its writes
    /// applied. Anything else but a dead letter its policy skips blocks the key.
    pub fn settled(&mut self, message: &Envelope, plugin: &str, verdict: &Verdict, kept: bool) {
        let Some(entry) = Self::entry(message, plugin) else {
            return;
        };
        let skips = matches!(verdict, Verdict::Dead { .. })
            && message.turn.as_ref().and_then(|t| t.ordered.get(plugin))
                == Some(&DeadLetterKey::Skip);
        if !(kept || skips) {
            self.blocked.insert(entry);
        }
    }
}
