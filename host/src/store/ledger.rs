//! What was handled, and the plugins' state ([`Ledger`]): the ledger a redelivered message
//! is checked against, the transaction a transport's deliveries settle in, state reads.
//! Written once over every SQL store; a store writes only what its SQL does differently
//! ([`LedgerSql`]).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::QueryBuilder;
use uuid::Uuid;

use super::sql::{Column, Dialect, Run, SqlStore, Statement};
use super::{Result, SettleTransaction};

/// The ledger role of a store: what was handled and what state holds, read by dispatch
/// (state) and the AMQP consumer (redeliveries).
#[async_trait::async_trait]
pub trait Ledger: Send + Sync {
    /// Plugins that already settled each of `ids` (handled it, or dead-lettered it and no
    /// operator sent it back): a redelivered message skips them.
    async fn settled_plugins(&self, ids: &[Uuid]) -> Result<SettledPlugins>;

    /// Open the transaction a batch a transport delivered settles in (no inbox rows to
    /// fence, delete or reschedule), once any concurrent settle of the messages `ids` (a
    /// duplicate delivered to another consumer) has finished; with the plugins that
    /// settled each of them already, read inside it (as [`Ledger::settled_plugins`]).
    async fn begin_settle_delivered(&self, ids: &[Uuid]) -> Result<DeliveredSettle<'_>>;

    /// Committed value and version of a plugin's state key.
    async fn state_get(&self, plugin: &str, key: &str) -> Result<Option<(Vec<u8>, i64)>>;
}

/// Plugins that settled each of some messages: see [`Ledger::settled_plugins`].
pub type SettledPlugins = BTreeMap<Uuid, BTreeSet<String>>;

/// The transaction a delivered batch settles in, with the plugins that settled each of
/// its messages already: see [`Ledger::begin_settle_delivered`].
pub type DeliveredSettle<'s> = (Box<dyn SettleTransaction + 's>, SettledPlugins);

/// What each store writes of [`Ledger`] in its own SQL: the ledger lookup and how a
/// delivered batch's settle begins (the locks that make a concurrent settle wait).
#[async_trait::async_trait]
pub(super) trait LedgerSql {
    /// [`Ledger::settled_plugins`].
    async fn settled(&self, ids: &[Uuid]) -> Result<SettledPlugins>;

    /// [`Ledger::begin_settle_delivered`].
    async fn begin_delivered(&self, ids: &[Uuid]) -> Result<DeliveredSettle<'_>>;
}

#[async_trait::async_trait]
impl<S: SqlStore + LedgerSql> Ledger for S {
    async fn settled_plugins(&self, ids: &[Uuid]) -> Result<SettledPlugins> {
        self.settled(ids).await
    }

    async fn begin_settle_delivered(&self, ids: &[Uuid]) -> Result<DeliveredSettle<'_>> {
        self.begin_delivered(ids).await
    }

    async fn state_get(&self, plugin: &str, key: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let mut get =
            QueryBuilder::<S::DB>::new("SELECT value, version FROM plugin_state WHERE plugin = ");
        get.value(plugin)
            .push(format!(" AND {} = ", <S::DB as Dialect>::KEY))
            .value(key);
        let conn = &mut *self.pool().acquire().await?;
        let rows = S::DB::fetch_all(conn, &mut get).await?;
        Ok(rows
            .first()
            .map(|r| (S::DB::column(r, "value"), S::DB::column(r, "version"))))
    }
}
