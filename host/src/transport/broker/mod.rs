//! What the consumers of a broker (AMQP queues, Kafka topics) share between reading a
//! batch of deliveries and releasing it at the broker: sorting what was read into
//! messages to handle, refused ones and repeats ([`read`]), looking up in the dedup ledger
//! the messages it may have settled already and running the others' handlers
//! ([`handle`]), writing only what needs the database when the ledger is off
//! ([`needs_database`]), and keeping each key's order with the inbox queue of the
//! consumer's name ([`order`]).

pub mod order;

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::dispatch::{Delays, Dispatcher};
use crate::envelope::Envelope;
use crate::names;
use crate::outcome::Verdict;
use crate::settle::{self, Delivered};
use crate::store::{Settlement, Store, StoreError};

/// A batch of deliveries read into envelopes.
pub struct Read {
    /// The messages to handle.
    pub envelopes: Vec<Envelope>,
    /// Index in the batch of each message id's delivery, and its attempts so far.
    pub by_id: HashMap<Uuid, (usize, u32)>,
    /// Deliveries refused before any plugin ran (unreadable, oversize).
    pub refused: Vec<Settlement>,
    /// Deliveries of a message given earlier in the batch: the first one settles it.
    pub duplicates: u64,
}

/// Sort a batch's `deliveries` (each read as its envelope, and why it is refused) into
/// the messages to handle and those refused (logged as from `source`), counting a
/// message given twice once.
pub fn read(
    deliveries: impl ExactSizeIterator<Item = (Envelope, Option<String>)>,
    source: &str,
) -> Read {
    let mut read = Read {
        envelopes: Vec::with_capacity(deliveries.len()),
        by_id: HashMap::with_capacity(deliveries.len()),
        refused: Vec::new(),
        duplicates: 0,
    };
    for (i, (message, refusal)) in deliveries.enumerate() {
        if read
            .by_id
            .insert(message.id, (i, message.attempts))
            .is_some()
        {
            tracing::debug!(message_id = %message.id, source, "a message twice in one batch; released with it");
            read.duplicates += 1;
            continue;
        }
        match refusal {
            Some(reason) => {
                tracing::warn!(message_id = %message.id, source, "{reason}");
                read.refused.push(Settlement {
                    message,
                    results: Vec::new(),
                    refused: Some(reason),
                });
            }
            None => read.envelopes.push(message),
        }
    }
    read
}

/// Skip the plugins the ledger says already settled each message, run the others.
/// Returns the settlements and how many messages ran nothing (every plugin had settled
/// them already: a redelivery).
///
/// Only a batch that may have been `seen` (a redelivery by the broker, or a retry) is
/// looked up, and only with the `ledger` on: in a batch of first deliveries only a
/// publisher's duplicate of a settled message could be found, and the settle finds it
/// under its lock anyway and drops what its handlers did. Saved: a round trip per batch
/// (with the settle's locks taken in its `BEGIN`, the host's CPU per message with the
/// PostgreSQL ledger went from 28 to 25-26 us).
pub async fn handle(
    store: &dyn Store,
    ledger: bool,
    mut envelopes: Vec<Envelope>,
    seen: bool,
    dispatcher: &Dispatcher,
) -> Result<(Vec<Settlement>, u64), StoreError> {
    if ledger && seen && !envelopes.is_empty() {
        let ids: Vec<_> = envelopes.iter().map(|m| m.id).collect();
        let mut settled = store.settled_plugins(&ids).await?;
        for message in &mut envelopes {
            if let Some(plugins) = settled.remove(&message.id) {
                message.settled_plugins = plugins;
            }
        }
    }
    let settlements = dispatcher.handle_batch(envelopes, Delays::Exact).await;
    let ran_nothing = settlements
        .iter()
        .filter(|s| s.results.is_empty() && s.refused.is_none())
        .count() as u64;
    Ok((settlements, ran_nothing))
}

/// Settle a batch's `settlements` (none: nothing to write) and count the `duplicates`
/// its reading and handling found: what the consumer acts on before releasing the batch.
pub async fn settle(
    store: &dyn Store,
    settlements: &mut [Settlement],
    duplicates: u64,
    dispatcher: &Dispatcher,
) -> Result<Delivered, StoreError> {
    let mut delivered = if settlements.is_empty() {
        Delivered::default()
    } else {
        settle::delivered(store, settlements, dispatcher, Delays::Exact).await?
    };
    delivered.summary.duplicates += duplicates;
    Ok(delivered)
}

/// With the ledger off, only settlements that write something go to the database:
/// effects, retries' attempt history, dead letters.
pub fn needs_database(s: &Settlement) -> bool {
    s.refused.is_some()
        || s.results.iter().any(|r| match &r.verdict {
            Verdict::Handled(effects) => {
                !effects.publishes.is_empty() || !effects.writes.is_empty()
            }
            _ => true,
        })
}

/// Why a delivery whose kind, headers or ordering key break the rules of [`names`] is
/// refused, naming the rule; `sender` (the publisher, the producer) is who must fix it.
pub fn breaks_the_rules(
    kind: &str,
    headers: &BTreeMap<String, String>,
    key: Option<&str>,
    sender: &str,
) -> Option<String> {
    let checked = names::kind(kind)
        .and_then(|()| names::header_map(headers))
        .and_then(|()| key.map_or(Ok(()), names::ordering_key));
    let invalid = checked.err()?;
    Some(format!(
        "{invalid}; fix the {sender} (see \"Limits and quotas\" in wharf's README for the rules)"
    ))
}
