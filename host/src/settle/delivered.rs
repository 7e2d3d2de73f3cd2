//! Settling what a transport delivered (no inbox rows): the answer the transport acts on.
//! Two consumers can hold the same message at once (the sender published it twice, or a
//! redelivery raced the original); whichever settles second finds the first one's ledger
//! rows and drops its own results for those plugins, so effects are written once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use uuid::Uuid;

use crate::store::{SettlePlan, SettleSummary, Settlement};

/// A delivered message that needs another attempt (see [`super::delivered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextAttempt {
    /// The message.
    pub id: Uuid,
    /// How long to wait: the longest delay any plugin asked for.
    pub delay: Duration,
    /// Whether the attempt counts (false when it only re-runs after a stale state read).
    pub counts: bool,
    /// An ordered plugin still owes it a verdict (a delivery of an ordered consumer): it
    /// goes into the inbox with its key's later messages, not back to the broker.
    pub to_inbox: bool,
}

/// What [`super::delivered`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Counts.
    pub summary: SettleSummary,
    /// Messages that need another attempt; every other one is finished.
    pub try_again: Vec<NextAttempt>,
    /// Messages recorded in the failed messages, each with its (first) error: the
    /// transport forwards them to its dead-letter queue.
    pub dead: Vec<(Uuid, String)>,
}

impl Delivered {
    /// What a settle that wrote `plan` tells the transport; `duplicates` messages lost
    /// results another consumer had settled first.
    pub(super) fn of(plan: &SettlePlan<'_>, duplicates: u64) -> Self {
        let try_again = plan
            .stay
            .iter()
            .map(|s| NextAttempt {
                id: s.message.id,
                delay: s.delay,
                counts: s.counts,
                to_inbox: s.holds.as_deref().is_some_and(|h| !h.is_empty()),
            })
            .collect();
        // One dead letter per message, with its first error.
        let mut seen = BTreeSet::new();
        let dead = plan
            .dead
            .iter()
            .filter(|d| seen.insert(std::ptr::from_ref(d.message)))
            .map(|d| (d.message.id, d.error.to_string()))
            .collect();
        Self {
            summary: SettleSummary {
                duplicates,
                ..plan.summary.clone()
            },
            try_again,
            dead,
        }
    }
}

/// Drop from `batch` the results of plugins that `settled` lists for their message (and
/// a refusal already recorded, plugin `""`). Counts the messages that lost something.
pub(super) fn drop_settled(
    batch: &mut [Settlement],
    settled: &BTreeMap<Uuid, BTreeSet<String>>,
    dropped: &mut u64,
) {
    for s in batch {
        let Some(plugins) = settled.get(&s.message.id) else {
            continue;
        };
        let before = (s.refused.is_some(), s.results.len());
        if plugins.contains("") {
            s.refused = None;
        }
        s.results.retain(|r| !plugins.contains(&r.plugin.name));
        *dropped += u64::from((s.refused.is_some(), s.results.len()) != before);
    }
}
