//! The transaction a batch settles in, as each store writes it. `crate::settle` drives it
//! through the one sequence (fence -> lock and load -> resolve -> plan -> write -> commit);
//! a store only says how each step is done on its database.

use std::collections::{BTreeMap, HashSet};

use uuid::Uuid;

use super::{SettlePlan, SharedView, StateUsage};
use crate::store::{Result, Settlement, StoreError};

/// Locks and loads state keys inside a settle's transaction.
#[async_trait::async_trait]
pub trait StateLocks: Send {
    /// Lock `keys` (in one order, waiting for each when `wait`; else without waiting,
    /// giving up when one is held elsewhere) and load their committed values into `view`.
    /// `false` when a key was held elsewhere and nothing was loaded.
    async fn lock(
        &mut self,
        keys: &[(String, String)],
        wait: bool,
        view: &SharedView,
    ) -> Result<bool>;

    /// The committed state usage of `plugins` (sorted), locked until the settle commits
    /// so no other settle adds to it meanwhile; a plugin without state has none.
    async fn usage(&mut self, plugins: &[&str]) -> Result<BTreeMap<String, StateUsage>>;
}

/// A settle's open transaction on one store (`Inbox::begin_settle`,
/// `Ledger::begin_settle_delivered`).
#[async_trait::async_trait]
pub trait SettleTransaction: StateLocks {
    /// Fence: the messages of `batch` its claim still holds, their claim now cleared (a
    /// lease whose lock token is still current); the others were taken over and nothing
    /// of theirs is written. `None` when the transaction holds them all (a claim's own
    /// transaction, a transport's deliveries).
    async fn fence(&mut self, batch: &[Settlement]) -> Result<Option<HashSet<Uuid>>>;

    /// Write `plan`: [`StoreError::HandledBefore`] when its ledger rows meet the ledger's
    /// key (the caller rolls back).
    async fn write(&mut self, plan: &SettlePlan<'_>) -> Result<()>;

    /// Commit.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Roll back.
    async fn rollback(self: Box<Self>) -> Result<()>;

    /// What an error of a statement in this transaction means: a claim's own transaction
    /// the server ended is the claim lost ([`StoreError::ClaimLost`]).
    fn failed(&self, e: StoreError) -> StoreError {
        e
    }
}
