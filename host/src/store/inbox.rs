//! The inbox as a transport sees it ([`Inbox`]): messages in, claimed in batches, held
//! while their handlers run, and the transaction a claimed batch settles in.

use std::time::Duration;

use uuid::Uuid;

use super::{Claim, ClaimMode, Hold, KeyOrder, Result, SettleTransaction, StoreError};
use crate::envelope::{Envelope, NewMessage};

/// The inbox role of a store, as the inbox source and the settle use it.
#[async_trait::async_trait]
pub trait Inbox: Send + Sync {
    /// Insert messages, skipping ids already received. Returns how many were new.
    async fn enqueue(&self, messages: &[NewMessage]) -> Result<u64>;

    /// Claim up to `limit` due messages of `queues` (all when empty), held as `mode` asks,
    /// keyed ones as `order` says. `lease` is how long the claim lasts without a
    /// [`Inbox::renew`]: the lease itself, or how long a held transaction may sit idle
    /// before the database ends it.
    async fn claim(
        &self,
        queues: &[String],
        limit: u32,
        mode: ClaimMode,
        order: KeyOrder,
        lease: Duration,
    ) -> Result<Claim>;

    /// Open the transaction a claimed batch settles in (`crate::settle::claimed` drives
    /// it): the claim's own when it holds one ([`StoreError::ClaimLost`] if that is gone),
    /// else a new one, fenced on the messages' lock tokens.
    async fn begin_settle(&self, hold: Hold) -> Result<Box<dyn SettleTransaction + '_>>;

    /// After a settle met the ledger's key ([`StoreError::HandledBefore`]) and rolled
    /// back: mark the messages `ids` seen, so their next claim looks up what ran, and free
    /// those the claim's lock `token` still holds.
    async fn mark_seen(&self, ids: &[Uuid], token: Uuid) -> Result<()>;

    /// Whether a settle that failed with `e` on its `runs`-th run is to run again: the
    /// database rolled it back whole to break a deadlock (MariaDB and PostgreSQL pick a
    /// victim), and running it again is the cure.
    fn settle_again(&self, e: &StoreError, runs: u32) -> bool {
        let _ = (e, runs);
        false
    }

    /// Heartbeat: keep the claimed messages (id, lock token) for another `lease` from
    /// now. Returns how many are still held.
    async fn renew(&self, hold: &mut Hold, claims: &[(Uuid, Uuid)], lease: Duration)
    -> Result<u64>;

    /// Hand a claim held in a transaction over to leases: its `messages` go back into the
    /// inbox leased for `lease` under a new token and the transaction commits, so a batch
    /// that runs long stops holding a transaction open. Returns the token, to become the
    /// messages' `lock_token`; `None` when the claim is a lease already.
    async fn lease_held(
        &self,
        hold: &mut Hold,
        messages: &[Envelope],
        lease: Duration,
    ) -> Result<Option<Uuid>> {
        let _ = (hold, messages, lease);
        Ok(None)
    }

    /// Return when work may be due in `queues`: a new message arrived, a scheduled retry
    /// came due, or `at_most` passed. The default just sleeps `at_most`.
    async fn wait_for_work(&self, queues: &[String], at_most: Duration) -> Result<()> {
        let _ = queues;
        tokio::time::sleep(at_most).await;
        Ok(())
    }
}
