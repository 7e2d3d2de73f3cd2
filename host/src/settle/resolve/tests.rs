//! Running handlers inside the settle, checked without a database or a sandbox: the
//! handler is a counter in Rust, the locks a map of committed values.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::*;
use crate::effects::Effects;
use crate::settle::plan;
use crate::store::{PluginVersion, StateUsage};

/// Committed state, and keys another settle holds.
#[derive(Default)]
struct Committed {
    values: BTreeMap<String, (Vec<u8>, i64)>,
    held_elsewhere: BTreeSet<String>,
}

impl Committed {
    /// What the counter's committed keys hold.
    fn usage(&self) -> StateUsage {
        let mut usage = StateUsage::default();
        for (key, (value, _)) in &self.values {
            usage += StateUsage::of(key, Some(value.len()));
        }
        usage
    }
}

#[async_trait::async_trait]
impl StateLocks for Committed {
    async fn lock(
        &mut self,
        keys: &[(String, String)],
        wait: bool,
        view: &SharedView,
    ) -> Result<bool> {
        if !wait && keys.iter().any(|(_, k)| self.held_elsewhere.contains(k)) {
            return Ok(false);
        }
        let mut view = view.lock().unwrap();
        for (plugin, key) in keys {
            view.load(plugin, key, self.values.get(key).cloned());
        }
        Ok(true)
    }

    async fn usage(&mut self, plugins: &[&str]) -> Result<BTreeMap<String, StateUsage>> {
        assert_eq!(plugins, ["counter"]);
        Ok([("counter".to_owned(), Committed::usage(self))].into())
    }
}

/// The handler: adds one to `count`; on an odd count it also adds one to `odd`.
struct Counter {
    budget: SettleBudget,
    quota: StateQuota,
}

/// Read `key` as the sandbox's reader does: from the view, else asking the settle.
async fn read(state: &SettleState, effects: &mut Effects, key: &str) -> u64 {
    let known = state.view.lock().unwrap().get("counter", key);
    let (value, version) = match known {
        Some(found) => found,
        None => {
            let (loaded, answer) = oneshot::channel();
            let request = KeyRequest {
                plugin: "counter".into(),
                key: key.into(),
                loaded,
            };
            state.requests.send(request).unwrap();
            match answer.await.unwrap() {
                true => state.view.lock().unwrap().get("counter", key).unwrap(),
                false => (None, 0),
            }
        }
    };
    effects.reads.insert(key.into(), version);
    value.map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap())
}

fn counter_version() -> PluginVersion {
    PluginVersion {
        name: "counter".into(),
        version: "1".into(),
        sha256: "ab".into(),
    }
}

#[async_trait::async_trait]
impl Runner for Counter {
    fn budget(&self) -> SettleBudget {
        self.budget
    }

    fn expected_keys(&self, _: &str) -> Vec<String> {
        vec!["count".into()]
    }

    fn state_quota(&self, _: &str) -> StateQuota {
        self.quota
    }

    async fn run(
        &self,
        _: &Envelope,
        _: &str,
        attempt: u32,
        state: SettleState,
    ) -> Option<PluginResult> {
        let mut effects = Effects::default();
        let count = read(&state, &mut effects, "count").await;
        if count % 2 == 1 {
            let odd = read(&state, &mut effects, "odd").await;
            effects
                .writes
                .insert("odd".into(), Some((odd + 1).to_string().into_bytes()));
        }
        effects
            .writes
            .insert("count".into(), Some((count + 1).to_string().into_bytes()));
        Some(PluginResult {
            plugin: counter_version(),
            attempt,
            verdict: Verdict::Handled(effects),
        })
    }
}

fn settlement(n: u8, verdict: Verdict) -> Settlement {
    Settlement {
        message: Envelope {
            id: Uuid::from_bytes([n; 16]),
            queue: "q".into(),
            kind: "k".into(),
            headers: Default::default(),
            payload: vec![],
            attempts: 0,
            lock_token: Uuid::nil(),
            settled_plugins: Default::default(),
            origin: Default::default(),
            due_at: None,
            key: None,
            seq: None,
            turn: None,
        },
        results: vec![PluginResult {
            plugin: counter_version(),
            attempt: 1,
            verdict,
        }],
        refused: None,
    }
}

/// What a handler that ran ahead of the settle saw: `count` at 0, absent.
fn ran_ahead() -> Verdict {
    Verdict::Handled(Effects {
        reads: [("count".to_owned(), 0)].into(),
        writes: [("count".to_owned(), Some(b"1".to_vec()))].into(),
        ..Effects::default()
    })
}

fn budget(runs: u32) -> Counter {
    Counter {
        budget: SettleBudget {
            runs,
            within: Duration::from_secs(10),
        },
        quota: StateQuota {
            keys: 100,
            bytes: 1 << 20,
        },
    }
}

/// Resolve `batch` and build its plan; the final values of `count` and `odd` and the
/// plan's counts.
async fn settle(
    batch: &mut [Settlement],
    locks: &mut Committed,
    runner: &Counter,
) -> (Option<String>, Option<String>, PluginRuns, usize) {
    let mut held: Vec<&mut Settlement> = batch.iter_mut().collect();
    let (view, runs) = resolve(&mut held, locks, runner).await.unwrap();
    let held: Vec<&Settlement> = held.into_iter().map(|s| &*s).collect();
    let plan = plan(&held, &view, runs, locks, runner).await.unwrap();
    let value = |key: &str| {
        plan.state
            .get(&("counter", key))
            .and_then(|w| w.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    (
        value("count"),
        value("odd"),
        plan.summary.runs(),
        plan.stay.len(),
    )
}

#[tokio::test]
async fn stale_results_run_again_in_order_over_the_batchs_writes() {
    let mut batch: Vec<Settlement> = (1..=4).map(|n| settlement(n, ran_ahead())).collect();
    let (count, odd, runs, stay) = settle(&mut batch, &mut Committed::default(), &budget(10)).await;
    assert_eq!((count.as_deref(), odd.as_deref()), (Some("4"), Some("2")));
    assert_eq!(stay, 0, "the batch settles in one round");
    // The first result was fresh; three ran again, each replacing one run ahead.
    assert_eq!((runs.runs, runs.handled, runs.resolved), (7, 4, 3));
    assert_eq!(runs.rescheduled, 0);
}

#[tokio::test]
async fn a_contended_plugin_runs_once_per_message_inside_the_settle() {
    let mut batch: Vec<Settlement> = (1..=5)
        .map(|n| settlement(n, Verdict::RunAtSettle))
        .collect();
    let mut committed = Committed::default();
    committed
        .values
        .insert("count".into(), (b"10".to_vec(), 10));
    let (count, odd, runs, stay) = settle(&mut batch, &mut committed, &budget(10)).await;
    // 10 -> 15; the counts read were 10..=14, odd at 11 and 13 (odd read from absent).
    assert_eq!((count.as_deref(), odd.as_deref()), (Some("15"), Some("2")));
    assert_eq!(stay, 0);
    assert_eq!((runs.runs, runs.handled, runs.resolved), (5, 5, 0));
}

#[tokio::test]
async fn a_new_key_held_by_another_settle_sends_the_message_to_the_next_round() {
    let mut batch: Vec<Settlement> = (1..=3).map(|n| settlement(n, ran_ahead())).collect();
    let mut committed = Committed::default();
    committed.held_elsewhere.insert("odd".into());
    let (count, odd, runs, stay) = settle(&mut batch, &mut committed, &budget(10)).await;
    // Message 2 reads count 1 (odd) and so needs `odd`, which it cannot lock: it stays,
    // and message 3, which would read count 1 as well, goes back unrun.
    assert_eq!((count.as_deref(), odd), (Some("1"), None));
    assert_eq!(stay, 2);
    assert_eq!(runs.rescheduled, 2);
    assert_eq!(runs.handled, 1);
    // Three ran ahead, message 2 once more.
    assert_eq!(runs.runs, 4);
}

#[tokio::test]
async fn past_the_budget_the_stale_results_go_to_the_next_round() {
    let mut batch: Vec<Settlement> = (1..=4).map(|n| settlement(n, ran_ahead())).collect();
    let (count, _, runs, stay) = settle(&mut batch, &mut Committed::default(), &budget(1)).await;
    assert_eq!(count.as_deref(), Some("2"));
    assert_eq!(stay, 2);
    assert_eq!((runs.handled, runs.resolved, runs.rescheduled), (2, 1, 2));
}

#[tokio::test]
async fn a_result_over_the_state_quota_is_dead_and_the_ones_before_it_keep_their_writes() {
    let mut batch: Vec<Settlement> = (1..=3)
        .map(|n| settlement(n, Verdict::RunAtSettle))
        .collect();
    let runner = Counter {
        quota: StateQuota {
            keys: 1,
            bytes: 1 << 20,
        },
        ..budget(10)
    };
    let mut locks = Committed::default();
    let mut held: Vec<&mut Settlement> = batch.iter_mut().collect();
    let (view, runs) = resolve(&mut held, &mut locks, &runner).await.unwrap();
    let held: Vec<&Settlement> = held.into_iter().map(|s| &*s).collect();
    let plan = plan(&held, &view, runs, &mut locks, &runner).await.unwrap();
    // 1: count 0 -> 1, one key. 2: count 1 is odd, so it would add `odd`: a second key.
    // 3: ran over 2's writes, which are not committed: stale, it runs again next round.
    let count = plan.state.get(&("counter", "count")).and_then(|w| w.value);
    assert_eq!(count, Some(&b"1"[..]));
    assert!(!plan.state.contains_key(&("counter", "odd")));
    assert_eq!(plan.dead.len(), 1);
    assert_eq!(plan.dead[0].message.id, Uuid::from_bytes([2; 16]));
    assert_eq!(
        plan.dead[0].error,
        "state quota exceeded: plugin counter would hold 2 keys of state, over its max_state_keys of 1; delete state it no longer needs, or raise [plugin.counter] max_state_keys (at most [runtime] max_state_keys)"
    );
    assert_eq!(plan.stay.len(), 1);
    assert_eq!(
        plan.usage[&"counter"],
        StateUsage { keys: 1, bytes: 6 },
        "\"count\" holding \"1\""
    );
}
