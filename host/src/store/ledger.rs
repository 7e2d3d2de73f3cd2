//! What was handled, and the plugins' state ([`Ledger`]): the ledger a redelivered message
//! is checked against, the transaction a transport's deliveries settle in, state reads.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::{Result, SettleTransaction};

/// The ledger role of a store: what was handled and what state holds, read by dispatch
/// (state) and the AMQP consumer (redeliveries).
#[async_trait::async_trait]
pub trait Ledger: Send + Sync {
    /// Plugins that already settled each of `ids` (handled it, or dead-lettered it and no
    /// operator sent it back): a redelivered message skips them.
    async fn settled_plugins(&self, ids: &[Uuid]) -> Result<BTreeMap<Uuid, BTreeSet<String>>>;

    /// Open the transaction a batch a transport delivered settles in (no inbox rows to
    /// fence, delete or reschedule), once any concurrent settle of the messages `ids` (a
    /// duplicate delivered to another consumer) has finished; with the plugins that
    /// settled each of them already, read inside it (as [`Ledger::settled_plugins`]).
    async fn begin_settle_delivered(
        &self,
        ids: &[Uuid],
    ) -> Result<(
        Box<dyn SettleTransaction + '_>,
        BTreeMap<Uuid, BTreeSet<String>>,
    )>;

    /// Committed value and version of a plugin's state key.
    async fn state_get(&self, plugin: &str, key: &str) -> Result<Option<(Vec<u8>, i64)>>;
}
