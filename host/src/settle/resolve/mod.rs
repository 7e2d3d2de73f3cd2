//! Running handlers inside the settle, before the plan is built, so contention on state
//! keys does not cost a round.
//!
//! With the batch's state keys locked (in one order, waiting) and loaded into a
//! [`StateView`], the batch is walked in order. A handled result whose reads match the
//! view writes into it. One whose reads are stale (another host committed a key since
//! the handler read it, or an earlier message of the batch wrote it), and one that
//! dispatch left to run here ([`Verdict::RunAtSettle`]: a contended plugin), run right
//! here through a [`Runner`] (the dispatcher), reading the view: the committed state and the writes
//! of the batch's earlier messages. Their result takes the old one's place.
//!
//! Such a run may read a key nobody locked yet (the keys dispatch expected a contended
//! plugin to touch are locked up front): the sandbox asks for it ([`KeyRequest`]) and the
//! settle locks it without waiting (another settle waiting on a key this one holds would
//! deadlock with a wait) and loads it. When another settle holds it, the run reads it as
//! absent, its result is dropped and the message runs again in another round, as do the
//! plugin's results after it in the batch, unrun (they would need the same key). A key
//! the run wrote without reading is locked the same way after it.
//!
//! The work is bounded by [`SettleBudget`]: past it, the results left go back for another
//! round (without counting an attempt), as every stale result did before.
//!
//! Why this design. Before it, a batch's handlers all read the same committed version of
//! a hot key, only the first write per key won and the rest went back for another claim
//! round (and, on AMQP, through a delay queue): the `update-stock` example on 10,000
//! orders over 7 SKUs ran its handler 4.9 times per handled message at ~430 msgs/s on one
//! PostgreSQL host, 9.4 times at ~300 msgs/s on three. Re-running only the stale results
//! here bounds the cost at two runs per message (one ahead, one here); running a
//! contended plugin only here (chosen by `dispatch::contention` from what its batches
//! showed) brings it to one, and locking the keys its messages shared up front makes
//! hosts wait their turn on a hot key instead of all running over the same version.
//!
//! Measured (`cargo bench -p wharf-tests -- contention`, 20,000 orders, three runs on the
//! 2-core CI machine; the stateless noop plugin on the same hosts at 11-17k msgs/s on
//! PostgreSQL, 5-8k on SQLite): on 7 SKUs, 1.006 runs per handled message on one host and
//! 1.02 on three (the first two batches of each host run ahead before contention is
//! seen), 7-9.3k msgs/s on PostgreSQL (0.59-0.70x of stateless) and 5-5.5k on SQLite
//! (0.74-0.80x); 1 SKU alike. A batch holds its keys from lock to commit, ~5 ms per 64
//! messages (runs ~2.2 ms, writes ~1.2 ms in one statement, commit ~1.2 ms), which caps a
//! hot key set near 12k msgs/s for the whole fleet; one host gets close to it, and three
//! PostgreSQL hosts sharing two cores made 0.71-0.96x of one host's rate (stateless:
//! 0.88-1.1x), three SQLite hosts 0.77-1.23x. On 10,000 SKUs nothing contends (1.000 runs
//! per message); there the cost is the per-message state read (~3k msgs/s on
//! PostgreSQL), the uncontended path's own overhead.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::envelope::Envelope;
use crate::outcome::Verdict;
use crate::store::{
    InBatch, PluginResult, PluginRuns, Result, SettleBudget, Settlement, SharedView, StateLocks,
    StateQuota, StateView, state_keys,
};

/// A handler's request, while it runs inside the settle, for a state key not in the
/// view: the settle locks and loads it, and answers whether it could.
#[derive(Debug)]
pub struct KeyRequest {
    /// The plugin.
    pub plugin: String,
    /// The key.
    pub key: String,
    /// `true` once the key is in the view; `false` when another settle holds it.
    pub loaded: oneshot::Sender<bool>,
}

/// The state a handler running inside the settle reads.
#[derive(Debug, Clone)]
pub struct SettleState {
    /// The committed state of the locked keys with the batch's writes so far.
    pub view: SharedView,
    /// Where to ask for a key the view does not hold.
    pub requests: mpsc::UnboundedSender<KeyRequest>,
}

/// Runs handlers inside the settle: the dispatcher (`super::reruns`), or in tests a
/// handler written in Rust.
#[async_trait::async_trait]
pub trait Runner: Send + Sync {
    /// The settle's budget.
    fn budget(&self) -> SettleBudget;

    /// The keys `plugin`'s messages are expected to touch: those its recent batches'
    /// messages shared. They are locked with the batch's keys, before any run.
    fn expected_keys(&self, plugin: &str) -> Vec<String>;

    /// How many state keys and bytes `plugin` may hold in all.
    fn state_quota(&self, plugin: &str) -> StateQuota;

    /// Run `plugin` on `message` as attempt `attempt`, reading `state`. `None` when the
    /// plugin is no longer served.
    async fn run(
        &self,
        message: &Envelope,
        plugin: &str,
        attempt: u32,
        state: SettleState,
    ) -> Option<PluginResult>;
}

/// Lock the state keys of `batch` (and those its stateful plugins' recent batches
/// shared), load them, and run its stale and contended results within `runner`'s budget.
/// Returns the view (for the keys' committed versions) and, by plugin, the runs whose
/// result was not kept (the plan counts the others) and the stale results replaced.
pub(super) async fn resolve(
    batch: &mut [&mut Settlement],
    locks: &mut dyn StateLocks,
    runner: &dyn Runner,
) -> Result<(StateView, BTreeMap<String, PluginRuns>)> {
    let mut keys: Vec<(String, String)> = {
        let shared: Vec<&Settlement> = batch.iter().map(|s| &**s).collect();
        state_keys(&shared)
            .into_iter()
            .map(|(p, k)| (p.to_owned(), k.to_owned()))
            .collect()
    };
    let to_run = batch
        .iter()
        .flat_map(|s| &s.results)
        .any(|r| r.verdict == Verdict::RunAtSettle);
    // The keys recent batches of a plugin shared are locked up front too, for a plugin
    // that may run here: a run that asks for one of them later could only try it
    // without waiting, and another host's settle holding it while it waits for a key
    // this one holds refuses every such run (a counter whose runs alternate between two
    // keys had half of them sent back, settle after settle).
    let stateful: BTreeSet<&str> = batch
        .iter()
        .flat_map(|s| &s.results)
        .filter(|r| match &r.verdict {
            Verdict::RunAtSettle => true,
            Verdict::Handled(effects) => !effects.reads.is_empty() || !effects.writes.is_empty(),
            _ => false,
        })
        .map(|r| r.plugin.name.as_str())
        .collect();
    for plugin in stateful {
        keys.extend(
            runner
                .expected_keys(plugin)
                .into_iter()
                .map(|k| (plugin.to_owned(), k)),
        );
    }
    let mut runs = BTreeMap::<String, PluginRuns>::new();
    if keys.is_empty() && !to_run {
        // Nothing read or wrote state and nothing is left to run: nothing to resolve.
        return Ok((StateView::default(), runs));
    }
    let view = SharedView::default();
    if !keys.is_empty() {
        keys.sort_unstable();
        keys.dedup();
        locks.lock(&keys, true, &view).await?;
    }
    let budget = runner.budget();
    let (started, mut spent) = (Instant::now(), 0);
    // Plugins a run of which was refused a key: their later runs here would read the
    // same view and ask for the same key, refused again, so their results left go back
    // unrun (measured on MariaDB: a counter's settle ran 50 handlers to keep one).
    let mut refused = BTreeSet::new();
    // An ordered plugin's results on a key's later messages wait while an earlier message
    // of the key in the batch did not end handled for it.
    let mut order = InBatch::default();
    for s in batch.iter_mut() {
        let Settlement {
            message, results, ..
        } = &mut **s;
        for result in results.iter_mut() {
            let name = result.plugin.name.clone();
            if order.waits(message, &name) && result.verdict == Verdict::RunAtSettle {
                result.verdict = Verdict::Waits;
            }
            // `None`: nothing to run; `Some(stale)`: a stale result or one left to run here.
            let todo = match &result.verdict {
                Verdict::Handled(effects) if view_of(&view).stale(&name, effects).is_none() => {
                    view_of(&view).apply(&name, &effects.writes);
                    None
                }
                Verdict::Handled(_) => Some(true),
                Verdict::RunAtSettle => Some(false),
                _ => None,
            };
            let mut kept = todo.is_none() && matches!(result.verdict, Verdict::Handled(_));
            // Runs whose result is not kept count here; the plan counts the kept one.
            while let Some(stale) = todo
                && spent < budget.runs
                && started.elapsed() < budget.within
                && !refused.contains(&name)
            {
                spent += 1;
                let tally = runs.entry(name.clone()).or_default();
                let ran = match run(runner, locks, message, &name, result.attempt, &view).await? {
                    Ran::Result(ran) => ran,
                    Ran::Refused => {
                        tally.runs += 1;
                        refused.insert(name.clone());
                        break;
                    }
                    Ran::Gone => {
                        tally.runs += 1;
                        break;
                    }
                };
                if let Verdict::Handled(effects) = &ran.verdict {
                    if view_of(&view).stale(&name, effects).is_some() {
                        tally.runs += 1;
                        continue;
                    }
                    view_of(&view).apply(&name, &effects.writes);
                    kept = true;
                }
                if stale {
                    tally.runs += 1;
                    tally.resolved += 1;
                }
                *result = ran;
                break;
            }
            order.settled(message, &name, &result.verdict, kept);
        }
    }
    if spent > 0 {
        tracing::debug!(
            runs = spent,
            elapsed = ?started.elapsed(),
            "handlers ran inside the settle"
        );
    }
    let view = std::mem::take(&mut *view_of(&view));
    Ok((view, runs))
}

/// What running a handler inside the settle gave.
enum Ran {
    /// Its result.
    Result(PluginResult),
    /// Another settle held a key it needed (read or written): its result is not to be
    /// used.
    Refused,
    /// The plugin is no longer served.
    Gone,
}

/// Run `plugin` on `message` over `view`, locking and loading the keys it asks for.
async fn run(
    runner: &dyn Runner,
    locks: &mut dyn StateLocks,
    message: &Envelope,
    plugin: &str,
    attempt: u32,
    view: &SharedView,
) -> Result<Ran> {
    let (requests, mut asked) = mpsc::unbounded_channel();
    let state = SettleState {
        view: view.clone(),
        requests,
    };
    let mut refused = false;
    let running = runner.run(message, plugin, attempt, state);
    tokio::pin!(running);
    let ran = loop {
        tokio::select! {
            ran = &mut running => break ran,
            Some(request) = asked.recv() => {
                let key = [(request.plugin, request.key)];
                let loaded = locks.lock(&key, false, view).await?;
                refused |= !loaded;
                let _ = request.loaded.send(loaded);
            }
        }
    };
    let Some(ran) = ran else {
        return Ok(Ran::Gone);
    };
    if let Verdict::Handled(effects) = &ran.verdict {
        let written: Vec<(String, String)> = effects
            .writes
            .keys()
            .filter(|key| !view_of(view).contains(plugin, key))
            .map(|key| (plugin.to_owned(), key.clone()))
            .collect();
        if !written.is_empty() {
            refused |= !locks.lock(&written, false, view).await?;
        }
    }
    if refused {
        tracing::debug!(message_id = %message.id, plugin, "a key the handler needed is locked by another settle; the message runs again later");
        return Ok(Ran::Refused);
    }
    Ok(Ran::Result(ran))
}

fn view_of(view: &SharedView) -> std::sync::MutexGuard<'_, StateView> {
    view.lock().expect("no panic while the view is locked")
}

#[cfg(test)]
mod tests;
