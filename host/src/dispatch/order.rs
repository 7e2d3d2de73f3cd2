//! A batch's ordering keys: its messages of one key put in the order of their numbers (a
//! claim takes them in due order), and every ordered plugin of a key run by dispatch on
//! the first of them only: the later ones run inside the settle, after it
//! ([`crate::store::InBatch`] says which of them wait instead).

use std::collections::{HashMap, HashSet};

use super::Dispatcher;
use crate::envelope::Envelope;

/// Within a batch, a key's messages run in order for its ordered plugins: in the
/// order of their numbers (a claim takes them in due order), the first here, the later
/// ones inside the settle, after it ([`crate::store::InBatch`]).
pub(super) fn in_key_order(dispatcher: &Dispatcher, messages: &mut Vec<Envelope>) {
    let mut slots: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        if let (Some(key), Some(_)) = (&m.key, &m.turn) {
            slots.entry((&m.queue, key)).or_default().push(i);
        }
    }
    slots.retain(|_, positions| positions.len() > 1);
    if slots.is_empty() {
        return;
    }
    let shared: HashSet<(String, String)> = (slots.keys())
        .map(|(q, k)| ((*q).to_owned(), (*k).to_owned()))
        .collect();
    let mut order: Vec<usize> = (0..messages.len()).collect();
    for positions in slots.values() {
        let mut by_seq = positions.clone();
        by_seq.sort_by_key(|&i| messages[i].seq);
        for (&slot, from) in positions.iter().zip(by_seq) {
            order[slot] = from;
        }
    }
    if order.iter().enumerate().any(|(i, &from)| i != from) {
        let mut taken: Vec<Option<Envelope>> = messages.drain(..).map(Some).collect();
        *messages = (order.into_iter())
            .map(|from| taken[from].take().expect("a permutation"))
            .collect();
    }
    let mut first = HashSet::new();
    for m in messages.iter_mut() {
        let (Some(key), Some(turn)) = (&m.key, &mut m.turn) else {
            continue;
        };
        if !shared.contains(&(m.queue.clone(), key.clone())) {
            continue;
        }
        for p in dispatcher.plugins().route(&m.kind) {
            let name = p.name();
            let pending = !m.settled_plugins.contains(name) && !turn.waits_for.contains(name);
            if dispatcher.ordered(&p).is_some()
                && pending
                && !first.insert((m.queue.clone(), key.clone(), name.to_owned()))
            {
                turn.runs_after.insert(name.to_owned());
            }
        }
    }
}
