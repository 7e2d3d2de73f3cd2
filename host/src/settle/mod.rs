//! The settle: the one place a batch's verdicts are written, for every transport and
//! every store, in one transaction and one sequence:
//!
//! 1. **begin**: the store opens the transaction ([`crate::store::Inbox::begin_settle`]: a claim's own,
//!    or a new one; [`crate::store::Ledger::begin_settle_delivered`] for what a transport delivered,
//!    once any concurrent settle of the same messages finished, dropping the results of
//!    plugins that settled them already);
//! 2. **fence**: keep the messages the claim still holds; the others lost their claim
//!    and nothing of theirs is written (`fenced_off`);
//! 3. **lock and load** the state keys the batch read or wrote, and **resolve**: run the
//!    stale and contended results again over the committed state and the batch's earlier
//!    writes, through the dispatcher (`resolve`, `reruns`);
//! 4. **plan**: what the batch writes ([`SettlePlan`]), within the plugins' state quotas
//!    (their usage locked; `plan`);
//! 5. **write** the plan, and **finish**: commit; roll back a batch that met the ledger's
//!    key and mark its messages seen ([`crate::store::Inbox::mark_seen`]); run it again whole where the
//!    store says the database broke a deadlock ([`crate::store::Inbox::settle_again`]).
//!
//! The store says how each step is done on its database ([`SettleTransaction`]); the
//! rules of the plan are `store::settle`'s.

mod delivered;
mod reruns;
mod resolve;

use std::collections::BTreeMap;

use uuid::Uuid;

use delivered::drop_settled;
pub use delivered::{Delivered, NextAttempt};
use reruns::Reruns;
use resolve::{Runner, resolve};

use crate::dispatch::{Delays, Dispatcher};
use crate::store::{
    Hold, PluginRuns, Quotas, Result, SettlePlan, SettleSummary, SettleTransaction, Settlement,
    StateLocks, StateView, Store, StoreError,
};

/// Settle a claimed `batch`, held as `hold` says: the inbox's settle. Results re-run
/// inside it take their old ones' place in `batch`.
pub async fn claimed(
    store: &dyn Store,
    hold: Hold,
    batch: &mut [Settlement],
    dispatcher: &Dispatcher,
    delays: Delays,
) -> Result<SettleSummary> {
    if batch.is_empty() {
        return Ok(SettleSummary::default());
    }
    let runner = Reruns { dispatcher, delays };
    // A claim's own transaction is gone once it failed: only a lease's settle runs again.
    let again = matches!(hold, Hold::Lease);
    let mut hold = Some(hold);
    let mut runs = 0;
    let settled = loop {
        runs += 1;
        let settled = async {
            let tx = store
                .begin_settle(hold.take().unwrap_or(Hold::Lease))
                .await?;
            settle_in(tx, batch, &runner, |plan| plan.summary.clone()).await
        }
        .await;
        match settled {
            Err(e) if again && store.settle_again(&e, runs) => {
                tracing::debug!(
                    "the settle was chosen as a deadlock victim; running it again: {e}"
                );
            }
            settled => break settled,
        }
    };
    if let (Err(StoreError::HandledBefore(_)), [first, ..]) = (&settled, &*batch) {
        // The batch's messages are seen, and free again where its claim (one token) still
        // holds them.
        let ids: Vec<Uuid> = batch.iter().map(|s| s.message.id).collect();
        store.mark_seen(&ids, first.message.lock_token).await?;
    }
    settled
}

/// Settle a `batch` a transport delivered (no inbox rows: the transport re-publishes the
/// messages in [`Delivered::try_again`], forwards [`Delivered::dead`] and acks the rest).
/// Results of plugins that settled a message meanwhile (another consumer had a
/// duplicate) are dropped.
pub async fn delivered(
    store: &dyn Store,
    batch: &mut [Settlement],
    dispatcher: &Dispatcher,
    delays: Delays,
) -> Result<Delivered> {
    if batch.is_empty() {
        return Ok(Delivered::default());
    }
    let runner = Reruns { dispatcher, delays };
    let ids: Vec<Uuid> = batch.iter().map(|s| s.message.id).collect();
    let mut runs = 0;
    loop {
        runs += 1;
        let settled = async {
            let (tx, already) = store.begin_settle_delivered(&ids).await?;
            let mut duplicates = 0;
            drop_settled(batch, &already, &mut duplicates);
            if duplicates > 0 {
                tracing::debug!(
                    duplicates,
                    "results of messages another consumer settled first were dropped"
                );
            }
            settle_in(tx, batch, &runner, |plan| Delivered::of(plan, duplicates)).await
        }
        .await;
        match settled {
            Err(e) if store.settle_again(&e, runs) => {
                tracing::debug!(
                    "the settle was chosen as a deadlock victim; running it again: {e}"
                );
            }
            settled => break settled,
        }
    }
}

/// Fence, resolve, plan and write `batch` in `tx`, and end it: commit, or roll back a
/// batch that met the ledger's key. `answer` says what the caller learns of the plan.
async fn settle_in<T>(
    mut tx: Box<dyn SettleTransaction + '_>,
    batch: &mut [Settlement],
    runner: &dyn Runner,
    answer: impl FnOnce(&SettlePlan<'_>) -> T,
) -> Result<T> {
    match plan_and_write(&mut *tx, batch, runner).await {
        Ok(plan) => {
            let answer = answer(&plan);
            tx.commit().await?;
            Ok(answer)
        }
        Err(e @ StoreError::HandledBefore(_)) => {
            tx.rollback().await?;
            Err(e)
        }
        Err(e) => Err(tx.failed(e)),
    }
}

/// Steps 2 to 5 (without the commit) in `tx`.
async fn plan_and_write<'a>(
    tx: &mut dyn SettleTransaction,
    batch: &'a mut [Settlement],
    runner: &dyn Runner,
) -> Result<SettlePlan<'a>> {
    let of = batch.len();
    let ours = tx.fence(batch).await?;
    let (mut held, lost): (Vec<&mut Settlement>, Vec<&mut Settlement>) =
        batch.iter_mut().partition(|s| {
            ours.as_ref()
                .is_none_or(|ours| ours.contains(&s.message.id))
        });
    let lost: Vec<Uuid> = lost.iter().map(|s| s.message.id).collect();
    fenced_off(&lost, of);
    let (view, runs) = resolve(&mut held, tx, runner).await?;
    let held: Vec<&Settlement> = held.into_iter().map(|s| &*s).collect();
    let mut plan = plan(&held, &view, runs, tx, runner).await?;
    plan.summary.fenced = lost.len() as u64;
    tx.write(&plan).await?;
    Ok(plan)
}

/// Plan `held` (resolved over `view`; `runs` by plugin, the runs whose result was not
/// kept) within the state quotas of its plugins: planned first as if there were none;
/// only the plugins whose state changes lock and read their usage, and only when one of
/// them would go over is the batch planned again within them (`store::settle::quota`).
async fn plan<'a>(
    held: &[&'a Settlement],
    view: &StateView,
    runs: BTreeMap<String, PluginRuns>,
    locks: &mut dyn StateLocks,
    runner: &dyn Runner,
) -> Result<SettlePlan<'a>> {
    let plan = SettlePlan::resolved(held, view, runs.clone(), None);
    let changing = plan.changing();
    if changing.is_empty() {
        return Ok(plan);
    }
    let used = locks.usage(&changing).await?;
    match Quotas::over(&plan, view, &used, |plugin| runner.state_quota(plugin)) {
        Some(quotas) => Ok(SettlePlan::resolved(held, view, runs, Some(quotas))),
        None => Ok(plan),
    }
}

/// Say once for a batch of `of` messages that the claims of `fenced` lapsed before its
/// settle: their results are discarded and they run again. The claim was taken by another
/// worker, or by this host itself (a settle that failed during a database outage leaves
/// its messages to the next claim); one line, not one per message.
fn fenced_off(fenced: &[Uuid], of: usize) {
    let Some(first) = fenced.first() else {
        return;
    };
    tracing::warn!(
        fenced = fenced.len(),
        batch = of,
        first_message_id = %first,
        "{} of {of} messages lost their claim before the settle (it lapsed and they were claimed again, by another worker or by this host after a database outage); their results are discarded and they run again",
        fenced.len()
    );
    for id in fenced {
        tracing::debug!(message_id = %id, "claim lapsed; this attempt's results discarded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_whose_claims_lapsed_is_one_warning_not_one_per_message() {
        use std::io::Write;
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let fenced: Vec<Uuid> = (0..128).map(|_| Uuid::now_v7()).collect();
        tracing::subscriber::with_default(subscriber, || {
            fenced_off(&fenced, 128);
            fenced_off(&[], 64);
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("128 of 128 messages lost their claim before the settle"),
            "{text}"
        );
    }
}
