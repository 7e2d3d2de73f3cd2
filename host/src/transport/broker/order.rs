//! What an ordered consumer of a broker (`[[amqp.consume]] ordered`, on a queue with one
//! active consumer in the fleet; every Kafka consumer, on the partitions it owns) adds to
//! its batches, so each key's messages are handled in delivery order by the ordered
//! plugins:
//!
//! - its keyed messages carry a turn: dispatch runs a key's messages of one batch in
//!   delivery order, the later ones inside the settle (as the inbox does);
//! - a batch holding a key of the batch before it waits for that one's finish, so a key's
//!   next message never runs before the one before it settled;
//! - a key with messages in the inbox queue of the consumer's name (its queue's or
//!   topic's; or held there by a dead letter) sends its deliveries there, behind them;
//! - a delivery an ordered plugin did not handle at once (a retry, a dead letter, a
//!   deferral) goes there too, with the key's later messages of the batch (the settle
//!   made them wait): the inbox runs them again in order, with its retries and holds; a
//!   retried one keeps its attempts and waits out its delay there.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use crate::dead_letter_topic;
use crate::dispatch::Dispatcher;
use crate::envelope::{Envelope, KeyTurn, NewMessage};
use crate::settle::NextAttempt;
use crate::store::{Settlement, Store, StoreError};

/// An ordered consumer's memory of its batches.
pub struct Keys {
    /// The number and keys of the batch handled last.
    last: Mutex<(u64, BTreeSet<String>)>,
    /// The highest number of a batch finished (or dropped).
    finished: watch::Sender<u64>,
    /// The number of the next batch, from 1.
    next: AtomicU64,
}

/// A batch's place among its consumer's batches; finishing or dropping it lets the batch
/// after it that shares a key run.
pub struct Turn {
    number: u64,
    finished: watch::Sender<u64>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let number = self.number;
        self.finished.send_modify(|n| *n = (*n).max(number));
    }
}

impl Default for Keys {
    /// No batch taken yet.
    fn default() -> Self {
        Self {
            last: Mutex::new((0, BTreeSet::new())),
            finished: watch::Sender::new(0),
            next: AtomicU64::new(1),
        }
    }
}

impl Keys {
    /// Give the keyed messages of a batch a turn; the batch's own.
    pub fn take(&self, messages: &mut [Envelope]) -> Turn {
        for m in messages.iter_mut().filter(|m| m.key.is_some()) {
            m.turn = Some(KeyTurn::default());
        }
        Turn {
            number: self.next.fetch_add(1, Ordering::Relaxed),
            finished: self.finished.clone(),
        }
    }

    /// Before the batch `turn` of `messages` runs: wait for the batch before it to finish
    /// when it holds one of the same keys and the batch is `ordered` (an unordered one
    /// runs at once, and the next ordered batch waits for it). Returns the batch's keys.
    pub async fn wait_turn(
        &self,
        turn: &Turn,
        messages: &[Envelope],
        ordered: bool,
    ) -> BTreeSet<String> {
        let keys: BTreeSet<String> = messages.iter().filter_map(|m| m.key.clone()).collect();
        let mut last = self.last.lock().await;
        if ordered && !last.1.is_disjoint(&keys) {
            let before = last.0;
            // The sender lives in `self`: waiting ends once that batch is finished.
            let _ = self.finished.subscribe().wait_for(|n| *n >= before).await;
        }
        *last = (turn.number, keys.clone());
        keys
    }
}

/// The inbox queue where a broker consumer's keys wait: of the name of the queue or topic
/// it consumes.
pub struct Parking<'a> {
    /// The shared store.
    pub store: &'a dyn Store,
    /// The inbox queue.
    pub queue: &'a str,
}

impl Parking<'_> {
    /// Once the batch before it that shares a key finished (`turn`), split a batch's
    /// `messages`: those whose key has messages in the inbox (or is held there) join them
    /// ([`Moved::early`], with their place in the batch, from `by_id`); the others run.
    /// A batch no ordered plugin of the `dispatcher` is routed runs at once, whole: it
    /// neither waits nor reads the inbox (a round trip per batch saved).
    pub async fn behind_the_inbox(
        &self,
        (keys, turn): (&Keys, &Turn),
        messages: Vec<Envelope>,
        by_id: &HashMap<Uuid, (usize, u32)>,
        moved: &mut Moved,
        dispatcher: &Dispatcher,
    ) -> Result<Vec<Envelope>, StoreError> {
        let ordered = dispatcher.orders_any(&messages);
        let batch_keys = keys.wait_turn(turn, &messages, ordered).await;
        if !ordered {
            return Ok(messages);
        }
        let batch_keys: Vec<&str> = batch_keys.iter().map(String::as_str).collect();
        let waiting = self.store.keys_in_inbox(self.queue, &batch_keys).await?;
        if waiting.is_empty() {
            return Ok(messages);
        }
        let (behind, run): (Vec<Envelope>, Vec<Envelope>) = messages
            .into_iter()
            .partition(|m| m.key.as_ref().is_some_and(|k| waiting.contains(k)));
        moved
            .early
            .extend(behind.into_iter().map(|m| (by_id[&m.id].0, m)));
        Ok(run)
    }

    /// Enqueue into the inbox queue, in delivery order, what the batch moves there:
    /// `moved` and the messages of `settlements` that go `later` (those an ordered plugin
    /// still owes a verdict; from Kafka, every one that needs another attempt), each with
    /// its attempts (from `by_id`, and the one just made if it counts) and its retry
    /// delay still to wait. Returns the ids moved.
    pub async fn move_to_inbox(
        &self,
        moved: Moved,
        later: &[&NextAttempt],
        settlements: &[Settlement],
        by_id: &HashMap<Uuid, (usize, u32)>,
    ) -> Result<HashSet<Uuid>, StoreError> {
        let later: HashMap<Uuid, &NextAttempt> = later.iter().map(|a| (a.id, *a)).collect();
        let mut going: Vec<(usize, Envelope, Option<&NextAttempt>)> = (moved.early.into_iter())
            .map(|(i, m)| (i, m, None))
            .collect();
        going.extend(settlements.iter().filter_map(|s| {
            let next = later.get(&s.message.id)?;
            Some((by_id[&s.message.id].0, s.message.clone(), Some(*next)))
        }));
        let ids = going.iter().map(|(_, m, _)| m.id).collect();
        if going.is_empty() {
            return Ok(ids);
        }
        going.sort_by_key(|(i, _, _)| *i);
        let messages: Vec<NewMessage> = (going.into_iter())
            .map(|(_, mut m, next)| {
                dead_letter_topic::keep_origin(&mut m);
                let attempts = by_id[&m.id].1;
                let message = m.into_inbox(self.queue);
                match next {
                    Some(next) => {
                        message.after_attempt(attempts + u32::from(next.counts), next.delay)
                    }
                    None => message,
                }
            })
            .collect();
        tracing::debug!(
            moved = messages.len(),
            queue = self.queue,
            "messages not handled at once move into the inbox, with their keys' later ones"
        );
        self.store.enqueue(&messages).await?;
        Ok(ids)
    }
}

/// Deliveries of a batch that go into the inbox without running: their key waits there.
#[derive(Default)]
pub struct Moved {
    /// Each with its place in the batch.
    early: Vec<(usize, Envelope)>,
}
