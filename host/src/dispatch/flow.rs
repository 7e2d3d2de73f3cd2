//! What this host settled and called per minute, counted in memory until its next report
//! adds the counts to the store's flow history ([`crate::store::flow`]): outcomes by
//! queue and plugin as batches settle, calls by plugin as they end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use crate::store::flow::{FLOW_KEPT, FlowCounts, FlowRow, minute_of};
use crate::store::{SettleSummary, now_ms};

/// Counts not reported yet.
#[derive(Debug, Default)]
struct Unreported {
    /// By (minute, source, plugin).
    outcomes: BTreeMap<(i64, String, String), FlowCounts>,
    /// By minute, then plugin.
    calls: BTreeMap<i64, HashMap<String, FlowCounts>>,
}

/// This host's counts since its last report.
#[derive(Debug, Default)]
pub struct Flow {
    unreported: Mutex<Unreported>,
}

impl Flow {
    /// Count what a settle brought to a verdict.
    pub fn settled(&self, summary: &SettleSummary) {
        let minute = minute_of(now_ms());
        let mut unreported = self.lock();
        for (source, plugin, counts) in summary.outcomes.iter() {
            *unreported
                .outcomes
                .entry((minute, source.clone(), plugin.clone()))
                .or_default() += *counts;
        }
    }

    /// Count a call of `plugin` that took `elapsed`.
    pub fn call(&self, plugin: &str, elapsed: Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let call = FlowCounts {
            calls: 1,
            call_us: us,
            call_us_max: us,
            ..FlowCounts::default()
        };
        let minute = minute_of(now_ms());
        let mut unreported = self.lock();
        let plugins = unreported.calls.entry(minute).or_default();
        match plugins.get_mut(plugin) {
            Some(counts) => *counts += call,
            None => {
                plugins.insert(plugin.to_owned(), call);
            }
        }
    }

    /// Everything counted since the last take, as rows (calls with source `""`).
    pub fn take(&self) -> Vec<FlowRow> {
        let Unreported { outcomes, calls } = std::mem::take(&mut *self.lock());
        let outcomes = outcomes
            .into_iter()
            .map(|((minute, source, plugin), counts)| FlowRow {
                minute,
                source,
                plugin,
                counts,
            });
        let calls = calls.into_iter().flat_map(|(minute, plugins)| {
            plugins.into_iter().map(move |(plugin, counts)| FlowRow {
                minute,
                source: String::new(),
                plugin,
                counts,
            })
        });
        outcomes.chain(calls).collect()
    }

    /// Put back `rows` a report could not write, to go with the next one; minutes older
    /// than the history keeps are dropped, so a long outage holds bounded memory.
    pub fn restore(&self, rows: Vec<FlowRow>) {
        let oldest = minute_of(now_ms() - FLOW_KEPT.as_millis() as i64);
        let mut unreported = self.lock();
        for row in rows.into_iter().filter(|r| r.minute >= oldest) {
            if row.source.is_empty() {
                *unreported
                    .calls
                    .entry(row.minute)
                    .or_default()
                    .entry(row.plugin)
                    .or_default() += row.counts;
            } else {
                *unreported
                    .outcomes
                    .entry((row.minute, row.source, row.plugin))
                    .or_default() += row.counts;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Unreported> {
        self.unreported
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_add_up_per_plugin_and_a_failed_report_goes_with_the_next() {
        let flow = Flow::default();
        flow.call("a", Duration::from_micros(300));
        flow.call("a", Duration::from_micros(100));
        flow.call("b", Duration::from_millis(2));
        let rows = flow.take();
        assert!(flow.take().is_empty(), "a take empties the counts");
        let a = rows.iter().find(|r| r.plugin == "a").unwrap();
        assert_eq!((a.source.as_str(), a.counts.calls), ("", 2));
        assert_eq!((a.counts.call_us, a.counts.call_us_max), (400, 300));

        flow.restore(rows.clone());
        flow.call("a", Duration::from_micros(50));
        let again = flow.take();
        let a = again.iter().find(|r| r.plugin == "a").unwrap();
        assert_eq!((a.counts.calls, a.counts.call_us), (3, 450));
        assert_eq!(again.len(), 2);

        let stale = FlowRow {
            minute: minute_of(now_ms()) - 3 * 60 * 60 * 1000,
            ..rows[0].clone()
        };
        flow.restore(vec![stale]);
        assert!(
            flow.take().is_empty(),
            "minutes past the history are dropped"
        );
    }
}
